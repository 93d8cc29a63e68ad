"""The graded notebooks: nbgrader-style stripping, the exercise/check convention, and the
student versions running end to end with every check failing cleanly.

(a) :func:`toycode.course.student.strip_solutions` on small hand-made notebooks.
(b) In every notebook with a cell tagged ``exercise``: each exercise cell defines one function,
    the next cell (tagged ``check``) grades it under the same name, the name is a registered
    exercise of that lesson, every exercise of the lesson is checked, and the committed
    (solution) outputs all pass. Notebooks without exercises are not graded lessons: skipped.
(c) The student version of each graded notebook, executed fresh with TOYCODE_FAST=1, has no
    error output and every check prints one line "✗ <name> … Hint: …". (The solution
    notebooks' fresh run is tests/test_notebooks.py's, which also requires every ✓.)
"""

import ast
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from notebook_helpers import NOTEBOOKS, errors, execute_fresh, printed_lines, tagged

from toycode.course import EXERCISES
from toycode.course.student import main, strip_solutions, write_student_versions

# -- (a) stripping ------------------------------------------------------------------------------

SOLVED = '''def tweedie(x, eps, alpha, sigma):
    """x̂0 = (x − σ ε̂)/α."""
    scale = 1 / alpha
    ### BEGIN SOLUTION
    out = scale * (x - sigma * eps)
    return out
    ### END SOLUTION
'''
STUDENT = '''def tweedie(x, eps, alpha, sigma):
    """x̂0 = (x − σ ε̂)/α."""
    scale = 1 / alpha
    # YOUR CODE HERE
    raise NotImplementedError()
'''


def _notebook(*sources, outputs=True):
    cells = [new_markdown_cell("# Lesson 0 — a test\n### BEGIN SOLUTION is prose here")]
    for k, source in enumerate(sources):
        cell = new_code_cell(source, execution_count=k + 1 if outputs else None)
        if outputs:
            cell.outputs = [new_output("stream", name="stdout", text="an old output\n")]
        cells.append(cell)
    return new_notebook(cells=cells)


def test_a_solution_block_becomes_the_stub_at_its_indentation():
    nb = _notebook(SOLVED, "x = 1")
    student = strip_solutions(nb)
    assert student.cells[1].source == STUDENT
    assert student.cells[2].source == "x = 1"
    assert nb.cells[1].source == SOLVED, "the input notebook must not be modified"


def test_nested_indentation_and_several_blocks_in_one_cell():
    source = (
        "def f(x):\n    if x:\n        ### BEGIN SOLUTION\n        return 1\n"
        "        ### END SOLUTION\n    ### BEGIN SOLUTION\n    return 2\n"
        "    ### END SOLUTION"
    )
    assert strip_solutions(_notebook(source)).cells[1].source == (
        "def f(x):\n    if x:\n        # YOUR CODE HERE\n        raise NotImplementedError()\n"
        "    # YOUR CODE HERE\n    raise NotImplementedError()"
    )


def test_outputs_and_execution_counts_are_cleared():
    student = strip_solutions(_notebook(SOLVED, "print(2)"))
    for cell in student.cells[1:]:
        assert cell.outputs == [] and cell.execution_count is None
    assert student.cells[0].source.startswith("# Lesson 0"), "markdown is left alone"


def test_a_notebook_without_markers_is_unchanged():
    nb = _notebook("import math", "print(math.pi)", outputs=False)
    assert strip_solutions(nb) == nb


@pytest.mark.parametrize(
    "source, says",
    [
        ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "line 2 has no matching"),
        ("def f():\n    return 1\n    ### END SOLUTION\n", "line 3 has no '### BEGIN SOLUTION'"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside the one opened"),
    ],
)
def test_an_unmatched_marker_names_the_notebook_and_cell(source, says):
    with pytest.raises(ValueError, match=f"lesson.ipynb cell 2: .*{says}"):
        strip_solutions(_notebook("x = 1", source), "lesson.ipynb")


def test_write_student_versions_and_the_command_line(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(_notebook(SOLVED), src / "01_a.ipynb")
    nbformat.write(_notebook("x = 1"), src / "02_b.ipynb")
    written = write_student_versions(src, tmp_path / "out")
    assert [p.name for p in written] == ["01_a.ipynb", "02_b.ipynb"]
    assert nbformat.read(written[0], as_version=4).cells[1].source == STUDENT
    assert main(["--src", str(src), "--out", str(tmp_path / "cli")]) == 0
    assert "wrote 2 student notebooks" in capsys.readouterr().out
    nbformat.write(_notebook("### END SOLUTION"), src / "03_bad.ipynb")
    assert main(["--src", str(src), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "03_bad.ipynb cell 1" in err
    assert not (tmp_path / "bad").exists(), "nothing is written when one notebook is malformed"
    assert main(["--src", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "no notebook folder" in capsys.readouterr().err


# -- (b) the convention in the committed notebooks ----------------------------------------------

GRADED = [p for p in NOTEBOOKS if tagged(nbformat.read(p, as_version=4), "exercise")]
graded = pytest.mark.parametrize("path", GRADED, ids=lambda p: p.name)


def _function_name(source: str, where: str) -> str:
    """The one function an exercise cell defines (with a docstring)."""
    defs = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]
    assert len(defs) == 1, f"{where} must define exactly one function, found {len(defs)}"
    assert ast.get_docstring(defs[0]), f"{where}: {defs[0].name} needs a docstring"
    return defs[0].name


def _checked_name(source: str) -> tuple[str, str] | None:
    """(exercise name, function name) of a cell that is one ``check("name", fn)`` call."""
    body = ast.parse(source).body
    if len(body) != 1 or not isinstance(body[0], ast.Expr):
        return None
    call = body[0].value
    if not (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "check"
        and len(call.args) == 2
    ):
        return None
    name, fn = call.args
    if not (isinstance(name, ast.Constant) and isinstance(fn, ast.Name)):
        return None
    return name.value, fn.id


def _exercises(nb, name: str) -> list[tuple[int, str]]:
    """(check cell index, exercise name) of every exercise cell, the convention asserted."""
    found = []
    for i in tagged(nb, "exercise"):
        where = f"{name} cell {i}"
        source = nb.cells[i].source
        fn = _function_name(source, where)
        assert re.search(r"^\s*### BEGIN SOLUTION$", source, re.M) and re.search(
            r"^\s*### END SOLUTION$", source, re.M
        ), f"{where} has no solution markers"
        nxt = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
        assert (
            nxt is not None and nxt.cell_type == "code" and "check" in nxt.metadata.get("tags", [])
        ), f"{where}: the next cell must be a code cell tagged check"
        assert _checked_name(nxt.source) == (fn, fn), (
            f"{name} cell {i + 1} must be check({fn!r}, {fn}), found {nxt.source!r}"
        )
        assert fn in EXERCISES, f"{where}: {fn!r} is not registered in toycode.course.EXERCISES"
        found.append((i + 1, fn))
    return found


def _lesson(path) -> int:
    return int(path.name.split("_")[0])


@graded
def test_every_exercise_is_followed_by_its_check_and_passes_in_the_saved_copy(path):
    nb = nbformat.read(path, as_version=4)
    found = _exercises(nb, path.name)
    for i, name in found:
        assert EXERCISES[name].lesson == _lesson(path), (
            f"{name} is registered for lesson {EXERCISES[name].lesson}, taught in {path.name}"
        )
        lines = printed_lines(nb.cells[i])
        assert lines and all(line.startswith("✓") for line in lines), (
            f"{path.name} cell {i} is saved without its ✓: {lines}"
        )
    mine = {n for n, ex in EXERCISES.items() if ex.lesson == _lesson(path)}
    assert mine <= {n for _, n in found}, (
        f"{path.name} never checks the lesson's exercises {sorted(mine - {n for _, n in found})}"
    )
    first = min(tagged(nb, "check"))
    assert any(
        "from toycode.course import" in c.source and "check" in c.source for c in nb.cells[:first]
    ), f"{path.name} checks before importing check"


# -- (c) the student versions run end to end and fail cleanly -------------------------------------


@graded
def test_a_lesson_has_one_install_cell_before_it_imports_toycode(path):
    """A lesson opens in a fresh kernel outside the repository: its one install cell (a no-op
    where toycode imports) comes before the first cell that imports toycode."""
    cells = nbformat.read(path, as_version=4).cells
    installs = [i for i, c in enumerate(cells) if "install" in c.metadata.get("tags", [])]
    imports = [
        i
        for i, c in enumerate(cells)
        if c.cell_type == "code" and re.search(r"^\s*(from|import) toycode", c.source, re.M)
    ]
    assert len(installs) == 1 and imports and installs[0] < imports[0], (installs, imports[:1])
    assert 'find_spec("toycode") is None' in cells[installs[0]].source


@pytest.mark.slow
@graded
def test_the_student_version_runs_and_every_check_fails_with_its_hint(path, monkeypatch, tmp_path):
    """As a student meets it: the stripped notebook alone in a folder outside the repository."""
    nb = nbformat.read(path, as_version=4)
    found = _exercises(nb, path.name)
    student = execute_fresh(
        strip_solutions(nb, path.name), tmp_path, monkeypatch, allow_errors=True
    )
    assert not errors(student), f"student {path.name}: {errors(student)}"
    for i, name in found:
        lines = printed_lines(student.cells[i])
        assert len(lines) == 1 and lines[0].startswith(f"✗ {name}") and "Hint:" in lines[0], (
            f"student {path.name} cell {i}: {lines}"
        )
