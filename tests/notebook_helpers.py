"""What the notebook tests share: the tagged cells, their outputs and a fresh execution.

``tests/test_notebooks.py`` runs the solution notebooks and ``tests/test_course_notebooks.py``
the student versions through the same :func:`execute_fresh`, with the same environment.
"""

import copy
import os
from pathlib import Path

from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def tagged(nb, tag: str) -> list[int]:
    """Indices of the code cells tagged ``tag``."""
    return [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and tag in c.metadata.get("tags", [])
    ]


def images(cell) -> int:
    """How many image/png outputs a cell holds."""
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def printed_lines(cell) -> list[str]:
    """The non-empty lines a cell printed (its stream outputs)."""
    text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")
    return [line for line in text.splitlines() if line.strip()]


def errors(nb) -> list[str]:
    """'cell i: ename: evalue' for every error output in the notebook."""
    return [
        f"cell {i}: {o.ename}: {o.evalue}"
        for i, c in enumerate(nb.cells)
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]


def execute_fresh(nb, folder: Path, monkeypatch, *, allow_errors: bool = False):
    """A copy of ``nb`` with its outputs cleared, executed top to bottom in ``folder`` with
    TOYCODE_FAST=1 (small sizes), offline, on TOYCODE_TEST_THREADS threads (2)."""
    monkeypatch.setenv("TOYCODE_FAST", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("TOYCODE_TEST_THREADS", "2"))
    # an inherited MPLBACKEND would decide the kernel's backend for it
    monkeypatch.delenv("MPLBACKEND", raising=False)
    fresh = copy.deepcopy(nb)
    for cell in fresh.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    fresh.metadata.pop("widgets", None)
    NotebookClient(
        fresh,
        timeout=600,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(folder)}},
    ).execute()
    return fresh
