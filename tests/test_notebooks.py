"""Every notebook runs top to bottom and shows its figures; the committed copies are readable.

A fresh copy of each notebook, its outputs stripped, is executed with TOYCODE_FAST=1 (small
sizes); every cell tagged ``figure`` must yield an image/png output. A library module that
switches matplotlib's backend at import (``matplotlib.use("Agg")``) makes figures vanish from
notebooks without any error, which is what this catches. The committed files are executed at
full size by ``make notebooks`` and must already hold those images, so that a reader sees them
without running anything.
"""

import copy
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# a call that draws: pyplot, the package's plot_* helpers, the MNIST image grid, imshow
DRAWS = re.compile(r"\bplt\.\w+\(|\bplot_\w+\(|\bimage_grid\(|\.imshow\(")
MAX_BYTES = 1_000_000


def _figure_cells(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and "figure" in c.metadata.get("tags", [])]


def _images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_drawing_cells_are_tagged(path):
    """The tags the figure test relies on cannot go stale: every cell that draws carries one."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and DRAWS.search(cell.source):
            assert i in _figure_cells(nb), f"{path.name} cell {i} draws but is not tagged figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_executed_and_small(path):
    nb = nbformat.read(path, as_version=4)
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    for i in _figure_cells(nb):
        assert _images(nb.cells[i]) >= 1, \
            f"{path.name} cell {i} is saved without its figure; run `make notebooks`"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path.name} is saved with an error output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_shows_its_figures(path, monkeypatch):
    monkeypatch.setenv("TOYCODE_FAST", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("TOYCODE_TEST_THREADS", "2"))
    # an inherited MPLBACKEND would decide the kernel's backend for it
    monkeypatch.delenv("MPLBACKEND", raising=False)
    committed = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    fresh = copy.deepcopy(nb)
    for cell in fresh.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    fresh.metadata.pop("widgets", None)
    NotebookClient(fresh, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    figures = _figure_cells(fresh)
    assert figures, f"{path.name} has no cell tagged figure"
    shown = {i: _images(fresh.cells[i]) for i in figures}
    assert all(shown.values()), f"{path.name}: figure cells without an image/png output: " \
        f"{[i for i, k in shown.items() if not k]} of {figures}"
    assert path.read_bytes() == committed, f"running the test rewrote {path.name}"
