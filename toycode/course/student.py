"""Student versions of the course notebooks, in nbgrader's convention.

The committed notebooks carry their solutions between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` lines in exercise cells. :func:`strip_solutions` replaces each such block
by nbgrader's own stub, at the marker's indentation::

        # YOUR CODE HERE
        raise NotImplementedError()

and clears every output, so the learner starts from a blank notebook that still runs end to end
(each check then prints its ✗ and a hint). From the command line (``make course``)::

    python -m toycode.course.student --src notebooks --out build/course

Needs ``nbformat`` (the ``notebooks`` or ``dev`` extra).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

__all__ = ["BEGIN", "END", "strip_solutions", "write_student_versions", "main"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")


def _strip_source(source: str, where: str) -> str:
    """``source`` with every BEGIN … END block replaced by the stub; ``where`` names the cell."""
    out: list[str] = []
    begin: int | None = None  # the line number of the open BEGIN marker
    for number, line in enumerate(source.splitlines(), 1):
        marker = line.strip()
        if marker == BEGIN:
            if begin is not None:
                raise ValueError(
                    f"{where}: {BEGIN!r} on line {number} opens a block inside the "
                    f"one opened on line {begin}"
                )
            begin = number
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + stub for stub in STUB)
        elif marker == END:
            if begin is None:
                raise ValueError(f"{where}: {END!r} on line {number} has no {BEGIN!r} before it")
            begin = None
        elif begin is None:
            out.append(line)
    if begin is not None:
        raise ValueError(f"{where}: {BEGIN!r} on line {begin} has no matching {END!r}")
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


def strip_solutions(nb, name: str = "notebook"):
    """The student version of notebook ``nb`` (an nbformat ``NotebookNode``; not modified).

    In every code cell, each block from a ``### BEGIN SOLUTION`` line to its
    ``### END SOLUTION`` line (inclusive) becomes ``# YOUR CODE HERE`` and
    ``raise NotImplementedError()`` at the BEGIN marker's indentation; every code cell's outputs
    and execution count are cleared. A marker without its partner (or a nested BEGIN) raises
    ValueError naming ``name`` and the cell index. A notebook without markers comes back with
    only its outputs cleared.
    """
    student = copy.deepcopy(nb)
    student.metadata.pop("widgets", None)
    for index, cell in enumerate(student.cells):
        if cell.cell_type != "code":
            continue
        if BEGIN in cell.source or END in cell.source:
            cell.source = _strip_source(cell.source, f"{name} cell {index}")
        cell.outputs, cell.execution_count = [], None
    return student


def write_student_versions(src_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the student version of every ``*.ipynb`` in ``src_dir`` to ``out_dir`` (created if
    needed) under the same file name; returns the written paths, sorted. Every notebook is
    stripped before any is written, so a marker error leaves ``out_dir`` untouched."""
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise ValueError(f"no notebook folder {str(src)!r}")
    paths = sorted(src.glob("*.ipynb"))
    if not paths:
        raise ValueError(f"no notebooks (*.ipynb) in {str(src)!r}")
    if out.resolve() == src.resolve():
        raise ValueError(
            f"the output folder {str(out)!r} is the source folder: the solutions "
            "would be overwritten"
        )
    students = []
    for path in paths:
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as err:  # nbformat raises several kinds for a malformed file
            raise ValueError(
                f"{path} is not a readable notebook: "
                f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
            ) from None
        students.append(strip_solutions(nb, path.name))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, nb in zip(paths, students):
        nbformat.write(nb, out / path.name)
        written.append(out / path.name)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m toycode.course.student``: write the student versions; one-line errors."""
    parser = argparse.ArgumentParser(
        prog="python -m toycode.course.student",
        description="Write student versions of the course notebooks: solutions between "
        f"'{BEGIN}' and '{END}' replaced by a stub, outputs cleared.",
    )
    parser.add_argument(
        "--src", default="notebooks", help="folder of solution notebooks (default: notebooks)"
    )
    parser.add_argument(
        "--out",
        default="course/student",
        help="folder the student versions are written to (default: course/student)",
    )
    args = parser.parse_args(argv)
    try:
        written = write_student_versions(args.src, args.out)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} student notebooks to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
