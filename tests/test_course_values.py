"""Lesson 5's graders (toycode.course.values): every reference passes, every checker rejects the
wrong answers of tests/test_course.py and the conceptual slips a learner makes with values
(Tweedie's value for the soft value, the mean reward, prior draws for posterior draws, a wrong
M, the λ → 0 gap, a sign), each with a one-line message."""

import pytest
import torch

from toycode.core.diffusion import NoiseLevel
from toycode.core.values import log_mean_exp
from toycode.course import EXERCISES, check
from toycode.course import values as lesson5
from toycode.exact.posterior import posterior_sample

VALUES = [name for name, ex in EXERCISES.items() if ex.lesson == 5]


def test_lesson_5_has_its_exercises():
    assert {"tweedie_value", "jensen_gap", "soft_value_mc"} <= set(VALUES)
    assert 2 <= len(VALUES) <= 4


def test_the_library_posterior_value_passes_the_monte_carlo_check():
    """An independent answer (toycode.exact's posterior draws) passes: the check is the law."""

    def library(prior, reward, x, alpha, sigma, lam, samples, generator):
        draws = posterior_sample(prior, x, NoiseLevel(alpha, sigma), samples, generator)
        return log_mean_exp(reward(draws.view(-1, x.shape[1])).view(len(x), samples), lam)

    assert check("soft_value_mc", library, quiet=True).passed


def _mc(**change):
    def answer(prior, reward, x, alpha, sigma, lam, samples, generator):
        args = dict(alpha=alpha, sigma=sigma, lam=lam, samples=samples) | change
        return lesson5.soft_value_mc(
            prior, reward, x, args["alpha"], args["sigma"], args["lam"], args["samples"], generator
        )

    return answer


@pytest.mark.parametrize(
    "name, answer",
    [
        ("soft_value_mc", lambda p, r, x, a, s, lam, m, g: lesson5.tweedie_value(p, r, x, a, s)),
        ("soft_value_mc", _mc(lam=1e-6)),  # the posterior mean reward (λ → 0)
        ("soft_value_mc", _mc(lam=1.0)),  # the wrong temperature
        ("soft_value_mc", _mc(samples=4)),  # ignores M: its O(1/M) bias shows
        ("soft_value_mc", _mc(alpha=1e-9, sigma=1.0)),  # prior draws, not posterior draws
        (
            "soft_value_mc",
            lambda p, r, x, a, s, lam, m, g: lesson5.soft_value_mc(p, r, x, a, s, lam, m, g)[
                :, None
            ],
        ),  # shape (n, 1)
        ("tweedie_value", lambda p, r, x, a, s: r(x / a)),  # rescaled x_t, no denoising
        (
            "tweedie_value",
            lambda p, r, x, a, s: lesson5.soft_value_mc(
                p, r, x, a, s, 1e-4, 20000, torch.Generator().manual_seed(0)
            ),
        ),  # E[r | x_t]
        ("jensen_gap", lambda m, C, c, P, lam: -0.5 * torch.trace(P @ C)),  # the λ → 0 gap
        ("jensen_gap", lambda m, C, c, P, lam: -lesson5.jensen_gap(m, C, c, P, lam)),
    ],
)
def test_a_conceptual_slip_fails(name, answer):
    result = check(name, answer, quiet=True)
    assert not result.passed and "Hint:" in result.message, result.message


def test_the_monte_carlo_yardstick_is_calibrated():
    """z-scores of the reference over fresh seeds are standard normal (mean 0, sd 1 ± 0.2)."""
    problem = lesson5.load_problem("between")
    target = problem.target
    doubled = lesson5.exact_target(problem.prior, problem.reward, 2 * problem.lam)
    lv, x = lesson5._states(problem.prior, 0.5, 1)
    rho2 = (doubled.log_tilt(x, lv) - 2 * target.log_tilt(x, lv)).exp() - 1
    se, bias = (rho2 / 1000).sqrt() / problem.lam, -rho2 / (2 * problem.lam * 1000)
    z = torch.stack(
        [
            (
                lesson5.soft_value_mc(
                    problem.prior,
                    problem.reward,
                    x,
                    lv.alpha,
                    lv.sigma,
                    problem.lam,
                    1000,
                    torch.Generator().manual_seed(s),
                )
                - target.soft_value(x, lv)
                - bias
            )
            / se
            for s in range(40)
        ]
    )
    assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.2
