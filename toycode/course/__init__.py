"""The course's exercises and their graders: a learner's function checked against exact truth.

    from toycode.course import check, solution, EXERCISES
    check("bon_kl", my_bon_kl)        # prints ✓ or ✗ with a one-line hint; returns a CheckResult

Each exercise names the lesson it belongs to (:data:`EXERCISES`). A checker compares the answer
with a closed form, with the library's own reference, or with the exact target within the
estimator's standard error; a blank, wrong or crashing answer gives ``passed=False`` and a
message, never a traceback. :func:`solution` returns the reference answer, so instructors and
tests can check the checkers.
"""

# the lesson modules register their exercises on import
from . import closed_forms, flow, guidance, research, samplers, smc, text_to_image, values  # noqa: F401
from .grading import EXERCISES, CheckResult, Exercise, check, solution

__all__ = ["EXERCISES", "CheckResult", "Exercise", "check", "solution"]
