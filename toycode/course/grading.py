"""The grading harness: exercise records, :func:`check` and :func:`solution`.

A checker is ``checker(fn) -> str | None``: None when the answer is right, else the reason it is
not (one line). The harness turns a missing answer, an exception or a wrong value into a
:class:`CheckResult` with that reason and the exercise's hint, so a learner never meets a
traceback from a check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["EXERCISES", "CheckResult", "Exercise", "check", "solution"]


@dataclass(frozen=True)
class Exercise:
    """One exercise: where it is taught, what a right answer does, and how it is graded."""

    name: str
    lesson: int
    title: str
    hint: str  # shown beside every failure
    checker: Callable[[Callable], str | None]  # None = passed, else the reason
    reference: Callable  # the reference answer


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` found: ``passed`` and the one-line ``message`` that says the same."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed


EXERCISES: dict[str, Exercise] = {}
"""Every exercise by name (its ``lesson`` says where it is taught), filled by the lesson modules."""


def register(exercise: Exercise) -> Exercise:
    if exercise.name in EXERCISES:
        raise ValueError(f"exercise {exercise.name!r} is defined twice")
    EXERCISES[exercise.name] = exercise
    return exercise


def _exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ValueError(f"no exercise {name!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def solution(name: str) -> Callable:
    """The reference answer of exercise ``name`` (a function with the exercise's signature)."""
    return _exercise(name).reference


def check(name: str, fn: Callable, *, quiet: bool = False) -> CheckResult:
    """Grade ``fn`` as the answer to exercise ``name``; print the verdict unless ``quiet``.

    Never raises for a bad answer: None, a non-function, an exception inside ``fn`` or a wrong
    value all give ``passed=False`` with the reason and the exercise's hint.
    """
    ex = _exercise(name)
    if fn is None or not callable(fn):
        reason = f"expected a function, got {type(fn).__name__}: define it in the cell above"
    else:
        try:
            reason = ex.checker(fn)
        except NotImplementedError:
            reason = "the function is not written yet (it raises NotImplementedError)"
        except Exception as err:  # a learner's bug must not become a traceback here
            reason = f"your function raised {type(err).__name__}: {str(err).splitlines()[0]}"
    if reason is None:
        result = CheckResult(name, True, f"✓ {name} (lesson {ex.lesson}): passed — {ex.title}")
    else:
        result = CheckResult(
            name, False, f"✗ {name} (lesson {ex.lesson}): {reason}. Hint: {ex.hint}"
        )
    if not quiet:
        print(result.message)
    return result
