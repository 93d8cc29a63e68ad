"""Lesson 9's graders (toycode/course/text_to_image.py): every reference passes; every checker
rejects the wrong answers of tests/test_course.py and the slips learners make (the unnormalised
tilt π e^λ, the tilt of the odds, the λ → ∞ limit; the guidance direction reversed, Imagen's
"w + 1" convention ε_c + w(ε_c − ε_u), guidance without the unconditional anchor)."""

import math

import pytest
import torch

from toycode.course import EXERCISES, check
from toycode.course import text_to_image as lesson9

LESSON9 = [name for name, ex in EXERCISES.items() if ex.lesson == 9]


def test_lesson_9_has_its_exercises():
    assert set(LESSON9) == {"class_tilt", "cfg_eps"}


@pytest.mark.parametrize(
    "name, answer",
    [
        ("class_tilt", lambda pi, lam: pi * math.exp(lam)),  # not normalised
        ("class_tilt", lambda pi, lam: pi * math.exp(lam) / (1 + pi * math.exp(lam))),  # odds
        ("class_tilt", lambda pi, lam: 1.0 if pi > 0 else 0.0),  # argmax's limit
        ("cfg_eps", lambda u, c, w: c + w * (u - c)),  # reversed
        ("cfg_eps", lambda u, c, w: c + w * (c - u)),  # Imagen's w + 1
        ("cfg_eps", lambda u, c, w: w * c),  # no anchor
    ],
)
def test_a_tilt_or_guidance_slip_fails_with_a_message(name, answer):
    result = check(name, answer, quiet=True)
    assert not result.passed and (
        "exact value" in result.message or "diffusers has" in result.message
    ), result.message


def test_the_exact_check_catches_an_answer_right_only_on_the_formulas_cases():
    """An answer that agrees with the closed form at the five (π, λ) of the first part and is
    wrong elsewhere is caught by the quadrature target of the box problem."""
    cases = {case: lesson9.class_tilt(*case) for case in lesson9._CASES}
    result = check("class_tilt", lambda pi, lam: cases.get((pi, lam), pi), quiet=True)
    assert not result.passed and "quadrature" in result.message, result.message


def test_diffusers_guides_as_the_reference_says():
    for u, c, out in lesson9.diffusers_cfg(4.0):
        assert torch.allclose(out, u + 4.0 * (c - u), atol=1e-5)
