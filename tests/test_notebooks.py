"""Every notebook runs top to bottom and shows its figures; the committed copies are readable.

A fresh copy of each notebook, its outputs stripped, is executed with TOYCODE_FAST=1 (small
sizes); every cell tagged ``figure`` must yield an image/png output. A library module that
switches matplotlib's backend at import (``matplotlib.use("Agg")``) makes figures vanish from
notebooks without any error, which is what this catches. The committed files are executed at
full size by ``make notebooks`` and must already hold those images, so that a reader sees them
without running anything. In a graded lesson every cell tagged ``check`` must print ✓ in the
fresh run too (the student versions are run by tests/test_course_notebooks.py).
"""

import re

import nbformat
import pytest
from notebook_helpers import NOTEBOOKS, execute_fresh, images, printed_lines, tagged

# a call that draws: pyplot, the package's plot_* helpers, the MNIST image grid, imshow
DRAWS = re.compile(r"\bplt\.\w+\(|\bplot_\w+\(|\bimage_grid\(|\.imshow\(")
MAX_BYTES = 1_000_000


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_drawing_cells_are_tagged(path):
    """The tags the figure test relies on cannot go stale: every cell that draws carries one."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and DRAWS.search(cell.source):
            assert i in tagged(nb, "figure"), f"{path.name} cell {i} draws but is not tagged figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_executed_and_small(path):
    nb = nbformat.read(path, as_version=4)
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    for i in tagged(nb, "figure"):
        assert images(nb.cells[i]) >= 1, (
            f"{path.name} cell {i} is saved without its figure; run `make notebooks`"
        )
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path.name} is saved with an error output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_shows_its_figures(path, monkeypatch):
    committed = path.read_bytes()
    fresh = execute_fresh(nbformat.read(path, as_version=4), path.parent, monkeypatch)
    figures = tagged(fresh, "figure")
    assert figures, f"{path.name} has no cell tagged figure"
    shown = {i: images(fresh.cells[i]) for i in figures}
    assert all(shown.values()), (
        f"{path.name}: figure cells without an image/png output: "
        f"{[i for i, k in shown.items() if not k]} of {figures}"
    )
    # a graded lesson's solutions pass every check when run fresh, not only in the saved copy
    for i in tagged(fresh, "check"):
        lines = printed_lines(fresh.cells[i])
        assert lines and all(line.startswith("✓") for line in lines), (
            f"{path.name} cell {i}: a check does not pass when run fresh: {lines}"
        )
    assert path.read_bytes() == committed, f"running the test rewrote {path.name}"
