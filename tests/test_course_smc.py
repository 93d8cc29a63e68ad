"""Lesson 6's graders (toycode/course/smc.py): every reference passes; every checker rejects the
wrong answers of tests/test_course.py (nothing, the input back, 10 % off, a crash, blank) and the
SMC slips learners make (naive exponentials, multinomial draws where systematic is asked, argmax
where a weighted draw is asked, a lost clean-end correction)."""

import pytest
import torch

from toycode.course import EXERCISES, check, solution
from toycode.course import smc as lesson6

LESSON6 = [name for name, ex in EXERCISES.items() if ex.lesson == 6]


def test_lesson_6_has_its_exercises():
    assert set(LESSON6) == {"ess", "systematic_resample", "fk_potential"}


def _multinomial(w, g):
    return torch.multinomial(w, len(w), replacement=True, generator=g)


def _argmax(w, g):
    return torch.full((len(w),), int(w.argmax()))


def _off_by_one_u(w, g):  # U + j + 1 over K: the last point falls off the CDF
    k = len(w)
    u = (torch.rand(1, generator=g, dtype=torch.float64) + torch.arange(k) + 1) / k
    return torch.searchsorted(w.cumsum(0), u).clamp(max=k - 1)


def _stratified(w, g):  # one uniform per stratum: unbiased, but not ⌊Kw⌋/⌈Kw⌉ everywhere
    k = len(w)
    u = (torch.rand(k, generator=g, dtype=torch.float64) + torch.arange(k)) / k
    return torch.searchsorted(w.cumsum(0), u).clamp(max=k - 1)


@pytest.mark.parametrize(
    "name, answer, says",
    [
        ("ess", lambda lw: 1 / (torch.softmax(lw, 0) ** 2).sum() / len(lw), "exact value"),
        ("ess", lambda lw: lw.exp().sum() ** 2 / (lw.exp() ** 2).sum(), "not finite"),  # naive e^l
        ("ess", lambda lw: (lw.exp() / lw.exp().sum()).pow(2).sum(), "exact value"),  # Σ w², no 1/
        ("systematic_resample", _multinomial, "offspring"),
        ("systematic_resample", _argmax, "offspring counts"),
        ("systematic_resample", _off_by_one_u, "offspring"),
        ("systematic_resample", _stratified, "offspring"),
        ("systematic_resample", lambda w, g: w, "non-integer"),
        (
            "fk_potential",
            lambda kind, v, s, lp, lam, clean: lesson6.fk_potential(kind, v, s, lp, lam, False),
            "log G",
        ),  # no clean-end correction
        (
            "fk_potential",
            lambda kind, v, s, lp, lam, clean: (v, lam * (v - s)),
            "statistic",
        ),  # diff for every kind
        (
            "fk_potential",
            lambda kind, v, s, lp, lam, clean: lesson6.fk_potential(kind, v, s, lp, 1.0, clean),
            "log G",
        ),  # λ forgotten
    ],
)
def test_an_smc_slip_fails_with_a_message(name, answer, says):
    result = check(name, answer, quiet=True)
    assert not result.passed and says in result.message, result.message


def test_systematic_resampling_matches_the_sampler_and_leaves_the_global_generator_alone():
    from toycode.core.steering import SELECTIONS

    w = torch.softmax(torch.randn(12, dtype=torch.float64), 0)
    ours = lesson6.systematic_resample(w, torch.Generator().manual_seed(3))
    theirs = SELECTIONS["systematic"](None, w.log()[None], 12, torch.Generator().manual_seed(3))
    assert torch.equal(ours, theirs[0])
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    check("systematic_resample", solution("systematic_resample"), quiet=True)
    assert torch.equal(torch.rand(1), before)
