"""Lesson 7's graders (toycode/course/guidance.py): every reference passes; every checker rejects
the wrong answers of tests/test_course.py and the guidance slips learners make (a gradient that
skips the denoiser's Jacobian, the base score where the tilted one is asked, DPS's score in place
of the exact one, and a guided step of the wrong sign)."""

import pytest
import torch

from toycode.course import EXERCISES, check, solution
from toycode.course import guidance as lesson7

LESSON7 = [name for name, ex in EXERCISES.items() if ex.lesson == 7]


def test_lesson_7_has_its_exercises():
    assert set(LESSON7) == {"dps_gradient", "exact_guided_score", "guided_step"}


def _no_jacobian(x, denoise, reward):  # ∇r at x̂0, as if x̂0 were x itself
    x0 = denoise(x).detach().requires_grad_(True)
    return torch.autograd.grad(reward(x0).sum(), x0)[0]


def _base_score(x, mu, var, c, p, lam, alpha, sigma):
    return -(x - alpha * mu) / (alpha**2 * var + sigma**2)


def _dps_score(x, mu, var, c, p, lam, alpha, sigma):
    """The base score plus λ ∇ r(x̂0(x)): DPS on a Gaussian, biased by the posterior spread."""
    s2 = alpha**2 * var + sigma**2
    m = mu + alpha * var / s2 * (x - alpha * mu)
    return _base_score(x, mu, var, c, p, lam, alpha, sigma) - lam * p * (m - c) * alpha * var / s2


def _wrong_sign(x, eps, g, a, s, a2, s2, z):
    return lesson7.guided_step(x, eps, -g, a, s, a2, s2, z)


def _unguided(x, eps, g, a, s, a2, s2, z):
    return lesson7.guided_step(x, eps, 0 * g, a, s, a2, s2, z)


def _g_without_sigma(x, eps, g, a, s, a2, s2, z):  # ε̂ − g: forgets that ε̂ = −σ ∇log p_t
    return lesson7.guided_step(x, eps, g / s, a, s, a2, s2, z)


@pytest.mark.parametrize(
    "name, answer",
    [
        ("dps_gradient", _no_jacobian),
        ("dps_gradient", lambda x, d, r: -_no_jacobian(x, d, r)),
        ("exact_guided_score", _base_score),
        ("exact_guided_score", _dps_score),
        ("guided_step", _wrong_sign),
        ("guided_step", _unguided),
        ("guided_step", _g_without_sigma),
    ],
)
def test_a_guidance_slip_fails_with_a_message(name, answer):
    result = check(name, answer, quiet=True)
    assert not result.passed and "exact value" in result.message, result.message


def test_a_correct_step_with_the_guidance_sign_flipped_fails():
    assert check("guided_step", solution("guided_step"), quiet=True).passed
    assert not check("guided_step", _wrong_sign, quiet=True).passed


def test_the_exact_guided_score_is_the_base_score_plus_the_exact_value_gradient():
    """λ∇V_t = ∇ log h_t, h_t = E[e^{λr(x0)} | x_t] for x0 | x_t ~ N(m, v): the lesson's
    derivation, −λp (m − c) J / (1 + λ p v), is what separates the two scores."""
    mu, var, c, p, lam, alpha, sigma = -1.0, 0.5, 1.0, 2.0, 3.0, 0.7, 0.714
    x = torch.linspace(-2, 2, 5, dtype=torch.float64)
    s2 = alpha**2 * var + sigma**2
    jac, v = alpha * var / s2, var * sigma**2 / s2
    m = mu + jac * (x - alpha * mu)
    guide = -lam * p * (m - c) * jac / (1 + lam * p * v)
    torch.testing.assert_close(
        lesson7.exact_guided_score(x, mu, var, c, p, lam, alpha, sigma),
        _base_score(x, mu, var, c, p, lam, alpha, sigma) + guide,
    )
