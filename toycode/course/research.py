"""Lesson 10's exercises: measuring a sampler in noise floors, and a selection rule of one's own.

``mmd_in_floors`` is graded against :class:`toycode.exact.reference.ExactReference` (the referee
of the leaderboard, ``tradeoff`` and the demo): the learner's V-statistic MMD² with the RBF
kernel, divided by the floor, must equal ``ExactReference.mmd2_over_floor`` on exact, base and
shifted samples of the ``between`` problem.

``my_selection`` is a rule that keeps one of N valued candidates: ``rule(values, lam,
generator)`` → one index per row of the (n, N) ``values``. It is graded for *consistency*, on two
toys where p* is exact and the candidates are i.i.d. base draws (best-of-N at a fixed N, so a
fixed NFE): a Gaussian reward v ~ N(0, 1), whose tilt p* ∝ e^{λv} N(v; 0, 1) is N(λ, 1), and a
class indicator v ~ Bernoulli(π), whose tilt is P*(c) = π e^λ / (π e^λ + 1 − π). The kept
values' mean and variance (Gaussian) and share (class) must lie within :data:`Z_MAX` standard
errors of p*'s. Any rule whose choice is drawn ∝ e^{λv} (softmax, the Gumbel-max trick,
resampling by hand) is self-normalised importance sampling and passes; at N = 512 its known
O(1/N) bias is below a third of a standard error. Argmax (the λ → ∞ limit), a tempered or a
top-k softmax target another law and fail by many standard errors.

:func:`code_with_rule` runs CoDe with such a rule on any backend, so lesson 10 can place it on
the leaderboard at the leaderboard's own NFE.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from ..core.backend import Backend
from ..core.ledger import Ledger, SampleResult
from ..exact.problems import load_problem
from ..exact.reference import ExactReference
from .closed_forms import compare
from .grading import Exercise, register

_F64 = torch.float64
ROWS, CANDIDATES, LAM, PI = 4000, 512, 1.0, 0.2
Z_MAX = 4.0

Rule = Callable[[torch.Tensor, float, "torch.Generator | None"], torch.Tensor]


def mmd_in_floors(x: torch.Tensor, y: torch.Tensor, bandwidth: float, floor: float) -> float:
    """MMD²(x, y) / floor: the biased (V-statistic) MMD² with the kernel
    k(a, b) = exp(−‖a − b‖² / (2 h²)), h = ``bandwidth``, in units of the noise ``floor``."""

    def k(a, b):
        return torch.exp(-(torch.cdist(a, b) ** 2) / (2 * bandwidth**2)).mean()

    return float(k(x, x) + k(y, y) - 2 * k(x, y)) / floor


@functools.lru_cache(maxsize=1)
def _referee() -> ExactReference:
    """400 exact samples of the ``between`` target, their bandwidth and MMD² floor."""
    target = load_problem("between").target
    return ExactReference.of_sampler(
        target.sample, 400, torch.Generator().manual_seed(0), replicates=4
    )


def _check_mmd_in_floors(fn) -> str | None:
    problem = load_problem("between")
    target, exact = problem.target, _referee()
    g = torch.Generator().manual_seed(1)
    samples = {
        "exact samples of p*": target.sample(300, g),
        "samples of the base p": problem.prior.sample(300, g),
        "p* samples shifted by (0.3, 0)": target.sample(300, g) + torch.tensor([0.3, 0.0]),
    }
    for what, x in samples.items():
        want = torch.tensor(exact.mmd2_over_floor(x), dtype=_F64)
        got = fn(x.clone(), exact.sample.clone(), exact.bandwidth, exact.floor)
        reason = compare(got, want, f"mmd_in_floors on {what}")
        if reason:
            return reason
    return None


def my_selection(
    values: torch.Tensor, lam: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One kept index per row of the (n, N) ``values``, drawn with probability ∝ e^{λ v}: here by
    the Gumbel-max trick, argmax_j (λ v_j + G_j) with G_j i.i.d. standard Gumbel, whose law is
    exactly softmax(λ v) (so CoDe with it is self-normalised importance sampling)."""
    u = torch.rand(values.shape, generator=generator, dtype=_F64).clamp_min(1e-300)
    return (lam * values.double() - torch.log(-torch.log(u))).argmax(1)


def _picked(fn, values: torch.Tensor, lam: float, seed: int):
    """The values the rule keeps, or the reason its answer is not one index per row."""
    out = fn(values.clone(), lam, torch.Generator().manual_seed(seed))
    if out is None:
        return None, "the rule returned None: return one index per row"
    try:
        idx = torch.as_tensor(out)
    except (TypeError, ValueError, RuntimeError):
        return None, f"the rule returned {type(out).__name__}, not a tensor of indices"
    n, big_n = values.shape
    if idx.numel() != n:
        return None, f"the rule returned {idx.numel()} indices for {n} rows (one per row)"
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        return None, f"the rule returned {idx.dtype} values, not integer indices"
    idx = idx.reshape(n).long()
    if (idx < 0).any() or (idx >= big_n).any():
        return None, f"the rule returned indices outside 0..{big_n - 1}"
    return values.gather(1, idx[:, None]).squeeze(1), None


def _z(stat: torch.Tensor, exact: float) -> float:
    return (float(stat.mean()) - exact) / (float(stat.std()) / math.sqrt(len(stat)) + 1e-12)


def _check_my_selection(fn) -> str | None:
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(ROWS, CANDIDATES, generator=g, dtype=_F64)
    kept, reason = _picked(fn, gauss, LAM, 1)
    if reason:
        return reason
    for what, stat, exact in (("mean", kept, LAM), ("variance", (kept - LAM) ** 2, 1.0)):
        z = _z(stat, exact)
        if abs(z) > Z_MAX:
            return (
                f"on the Gaussian toy (v ~ N(0, 1), λ = {LAM}, N = {CANDIDATES}) the kept "
                f"values' {what} is {float(stat.mean()):.3f} where p* = N(λ, 1) has "
                f"{exact:.3f}: {z:+.1f} standard errors"
            )
    classes = (torch.rand(ROWS, CANDIDATES, generator=g, dtype=_F64) < PI).double()
    lam = 1.5
    kept, reason = _picked(fn, classes, lam, 2)
    if reason:
        return reason
    exact = PI * math.exp(lam) / (PI * math.exp(lam) + 1 - PI)
    share = float(kept.mean())
    z = (share - exact) / math.sqrt(exact * (1 - exact) / ROWS)
    if abs(z) > Z_MAX:
        return (
            f"on the class toy (v ~ Bernoulli({PI}), λ = {lam}, N = {CANDIDATES}) the kept "
            f"share of class c is {share:.3f} where P*(c) = {exact:.3f}: {z:+.1f} "
            f"standard errors"
        )
    return None


def code_with_rule(
    backend: Backend,
    reward: Callable,
    n: int,
    *,
    num_candidates: int,
    block_size: int,
    rule: Rule,
    lam: float,
    generator: torch.Generator | None = None,
) -> SampleResult:
    """CoDe (arXiv 2502.00968, Alg. 1) with Tweedie values and the selection ``rule(values, lam,
    generator)`` → one index per row of the (n, N) values; costs 1 + (T − 1)·N NFE per sample,
    counted in a :class:`~toycode.core.ledger.Ledger` as :func:`toycode.code_sample` does."""
    ledger, process, big_n = Ledger(), backend.process, num_candidates
    steps = process.num_steps
    with torch.no_grad():
        x = backend.prior_sample(n, generator)
        pred = ledger.predict(backend, x, 0, generator)
        eps, x0, kept = pred.eps, pred.x0, None
        for i in range(0, steps, block_size):
            j = min(i + block_size, steps)
            xs, eps_s, x0_s = (t.repeat_interleave(big_n, 0) for t in (x, eps, x0))
            for t in range(i, j):
                xs = process.step(xs, t, eps_s, generator, x0=x0_s)
                if t + 1 < steps:  # scores this block's end and drives the next step
                    pred = ledger.predict(backend, xs, t + 1, generator)
                    eps_s, x0_s = pred.eps, pred.x0
            decoded = backend.decode(xs if j == steps else x0_s)
            values = ledger.reward(reward, decoded).double().view(n, big_n)
            pick = torch.as_tensor(rule(values, lam, generator)).reshape(n).long()
            keep = torch.arange(n) * big_n + pick
            x, eps, x0, kept = xs[keep], eps_s[keep], x0_s[keep], values.view(-1)[keep]
    return SampleResult.from_ledger(
        backend.decode(x),
        kept,
        ledger,
        settings={
            "num_candidates": big_n,
            "block_size": block_size,
            "lam": lam,
            "rule": getattr(rule, "__name__", ""),
        },
    )


register(
    Exercise(
        "mmd_in_floors",
        10,
        "a sample's distance to p* in noise floors",
        "k(a, b) = exp(−|a − b|²/(2h²)); the V-statistic averages k over all pairs, "
        "diagonal included: mean k(x, x) + mean k(y, y) − 2 mean k(x, y); then divide "
        "by the floor",
        _check_mmd_in_floors,
        mmd_in_floors,
    )
)
register(
    Exercise(
        "my_selection",
        10,
        "a consistent selection rule of your own",
        "keep candidate j with probability ∝ e^{λ v_j} (any way of drawing it: "
        "torch.multinomial on softmax(λ·values), or argmax of λ·values plus Gumbel "
        "noise); argmax, or any other temperature, targets another law",
        _check_my_selection,
        my_selection,
    )
)
