"""Lesson 10's graders (toycode/course/research.py): every reference passes; every checker
rejects the wrong answers of tests/test_course.py and the slips learners make (the unbiased
U-statistic or a kernel without the factor 2 where the referee's V-statistic is asked; argmax,
a tempered softmax or a top-k softmax where a consistent rule is asked; a rule that ignores
the values), and CoDe with a consistent rule sits on the leaderboard where code-softmax does."""

import math

import pytest
import torch

from toycode import load_problem, sample_blockwise
from toycode.backends import analytic_backend
from toycode.core.diffusion import Process
from toycode.course import EXERCISES, check, solution
from toycode.course import research as lesson10

LESSON10 = [name for name, ex in EXERCISES.items() if ex.lesson == 10]


def test_lesson_10_has_its_exercises():
    assert set(LESSON10) == {"mmd_in_floors", "my_selection"}


def _u_statistic(x, y, h, floor):
    def k(a, b, drop_diagonal):
        m = torch.exp(-(torch.cdist(a, b) ** 2) / (2 * h**2))
        if drop_diagonal:
            return (m.sum() - m.diagonal().sum()) / (len(a) * (len(a) - 1))
        return m.mean()

    return float(k(x, x, True) + k(y, y, True) - 2 * k(x, y, False)) / floor


def _no_two(x, y, h, floor):
    def k(a, b):
        return torch.exp(-(torch.cdist(a, b) ** 2) / h**2).mean()

    return float(k(x, x) + k(y, y) - 2 * k(x, y)) / floor


def _softmax(values, lam, g):
    return torch.multinomial(torch.softmax(lam * values, 1), 1, generator=g).squeeze(1)


def _top_k(values, lam, g, k=8):
    top = values.topk(k, 1)
    pick = torch.multinomial(torch.softmax(lam * top.values, 1), 1, generator=g)
    return top.indices.gather(1, pick).squeeze(1)


@pytest.mark.parametrize(
    "name, answer, says",
    [
        ("mmd_in_floors", _u_statistic, "exact value"),
        ("mmd_in_floors", _no_two, "exact value"),
        ("mmd_in_floors", lambda x, y, h, f: lesson10.mmd_in_floors(x, y, h, 1.0), "exact value"),
        ("my_selection", lambda v, lam, g: v.argmax(1), "standard errors"),  # argmax
        ("my_selection", lambda v, lam, g: _softmax(v, 2 * lam, g), "standard errors"),  # tempered
        ("my_selection", lambda v, lam, g: _softmax(v, 0.8 * lam, g), "standard errors"),
        ("my_selection", _top_k, "standard errors"),
        (
            "my_selection",
            lambda v, lam, g: torch.randint(v.shape[1], (len(v),), generator=g),
            "standard errors",
        ),  # the base
        ("my_selection", lambda v, lam, g: _softmax(v, lam, g).float(), "integer"),
        ("my_selection", lambda v, lam, g: _softmax(v, lam, g)[:10], "indices for"),
    ],
)
def test_a_research_slip_fails_with_a_message(name, answer, says):
    result = check(name, answer, quiet=True)
    assert not result.passed and says in result.message, result.message


def test_plain_softmax_is_also_consistent():
    assert check("my_selection", _softmax, quiet=True).passed


def test_code_with_a_softmax_rule_is_the_engines_code_softmax():
    """code_with_rule at the leaderboard's cost: 1 + (T − 1)·N NFE, and the law of the engine's
    softmax CoDe (mean reward and coordinates within 4 s.e. of their difference)."""
    problem = load_problem("between")
    backend = analytic_backend(problem.prior, Process.make(20))
    n, big_n, block = 2048, 4, 5
    mine = lesson10.code_with_rule(
        backend,
        problem.reward,
        n,
        num_candidates=big_n,
        block_size=block,
        rule=solution("my_selection"),
        lam=problem.lam,
        generator=torch.Generator().manual_seed(0),
    )
    assert mine.nfe_per_sample == 1 + 19 * big_n
    ref = sample_blockwise(
        backend,
        problem.reward,
        n,
        num_candidates=big_n,
        block_size=block,
        selection="softmax",
        lam=problem.lam,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.allclose(mine.rewards, problem.reward(mine.samples))
    for a, b in (
        (mine.rewards, ref.rewards),
        (mine.samples[:, 0], ref.samples[:, 0]),
        (mine.samples[:, 1], ref.samples[:, 1]),
    ):
        se = math.sqrt(a.var() / n + b.var() / n)
        assert abs(float(a.mean() - b.mean())) < 4 * se
