"""Lesson 6's exercises: the pieces of SMC / Feynman–Kac steering, each graded against exact truth.

ess                    the effective sample size of log-weights, (Σ w)² / Σ w² — closed form,
                       on weights whose exponentials overflow float64
systematic_resample    K offspring indices from one uniform — graded by the laws of systematic
                       resampling: every particle gets ⌊K w_i⌋ or ⌈K w_i⌉ offspring (so their
                       variance is at most multinomial's), their mean is K w_i (checked within
                       Z_MAX standard errors over R_RUNS runs), integer K w_i are hit exactly
fk_potential           one block end of FK steering: the path statistic and log G_t of the
                       diff / max / add potentials (Singhal et al. 2025, arXiv 2501.06848,
                       §3), against the sampler's own :func:`toycode.core.steering._potential`
"""

from __future__ import annotations

import math

import torch

from ..core.steering import _ess, _potential
from .closed_forms import compare
from .grading import Exercise, register

_F64 = torch.float64
R_RUNS, Z_MAX = 4000, 5.0


# -- ess ------------------------------------------------------------------------------------------


def ess(log_weights: torch.Tensor) -> torch.Tensor:
    """ESS = (Σ_i w_i)² / Σ_i w_i² of unnormalised log-weights, via log-sum-exp (shift-free)."""
    log_weights = torch.as_tensor(log_weights, dtype=_F64)
    return torch.exp(2 * torch.logsumexp(log_weights, 0) - torch.logsumexp(2 * log_weights, 0))


def _ess_cases():
    g = torch.Generator().manual_seed(6)
    yield "equal weights", torch.zeros(8, dtype=_F64)
    yield "one dominant weight", torch.tensor([0.0, -60.0, -70.0, -80.0], dtype=_F64)
    yield "random log-weights", 2.0 * torch.randn(32, generator=g, dtype=_F64)
    yield "log-weights near 800 (e^800 overflows)", 800.0 + torch.randn(16, generator=g, dtype=_F64)
    yield (
        "log-weights near −800 (e^−800 underflows)",
        -800.0 + 3 * torch.randn(16, generator=g, dtype=_F64),
    )


def _check_ess(fn) -> str | None:
    for what, logw in _ess_cases():
        want = _ess(torch.softmax(logw, 0)[None])[0]
        reason = compare(fn(logw.clone()), want, f"ess for {what}")
        if reason:
            return reason
    return None


# -- systematic resampling ------------------------------------------------------------------------


def systematic_resample(
    weights: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """K indices from normalised weights (K,): one uniform U, points (U + j)/K, j = 0 … K − 1,
    each mapped to the particle whose CDF interval holds it (Kitagawa 1996)."""
    k = len(weights)
    cdf = torch.cumsum(torch.as_tensor(weights, dtype=_F64), 0)
    u = (torch.rand(1, generator=generator, dtype=_F64) + torch.arange(k, dtype=_F64)) / k
    return torch.searchsorted(cdf, u.clamp(max=float(cdf[-1]) * (1 - 1e-12))).clamp(max=k - 1)


def _indices(out, k: int, what: str):
    """The answer as K integer indices in [0, K), or the reason it is not."""
    if out is None:
        return None, f"{what} returned None: return the K chosen indices"
    try:
        idx = torch.as_tensor(out)
    except (TypeError, ValueError, RuntimeError):
        return None, f"{what} returned {type(out).__name__}, not a tensor of indices"
    if idx.shape != (k,):
        return None, f"{what} returned shape {tuple(idx.shape)}, expected ({k},): K indices"
    if idx.is_floating_point():
        if not torch.equal(idx, idx.round()):
            return (
                None,
                f"{what} returned non-integer values {idx[:3].tolist()}…: indices, not weights",
            )
        idx = idx.long()
    if idx.dtype == torch.bool or idx.min() < 0 or idx.max() >= k:
        return None, f"{what} returned indices outside 0 … {k - 1}"
    return idx.long(), None


def _check_systematic(fn) -> str | None:
    # exact cases: K w_i integers fix the offspring counts whatever U is; a zero weight has none
    for w, counts in (
        ([0.5, 0.25, 0.25, 0.0], [2, 1, 1, 0]),
        ([0.0, 1.0, 0.0], [0, 3, 0]),
        ([0.125] * 8, [1] * 8),
    ):
        w = torch.tensor(w, dtype=_F64)
        for seed in range(5):
            idx, reason = _indices(
                fn(w.clone(), torch.Generator().manual_seed(seed)),
                len(w),
                f"systematic_resample({w.tolist()})",
            )
            if reason:
                return reason
            got = torch.bincount(idx, minlength=len(w)).tolist()
            if got != counts:
                return (
                    f"systematic_resample({w.tolist()}) gave offspring counts {got}; with "
                    f"K·w = {counts} integer, systematic resampling gives exactly those"
                )
    # statistical case: counts in {⌊Kw⌋, ⌈Kw⌉} every run, and their mean K·w within Z_MAX s.e.
    g = torch.Generator().manual_seed(7)
    w = torch.softmax(1.5 * torch.randn(10, generator=g, dtype=_F64), 0)
    k = len(w)
    counts = torch.empty(R_RUNS, k, dtype=_F64)
    for run in range(R_RUNS):
        idx, reason = _indices(fn(w.clone(), g), k, "systematic_resample")
        if reason:
            return reason
        counts[run] = torch.bincount(idx, minlength=k).double()
    kw = k * w
    outside = (counts < kw.floor() - 1e-9) | (counts > kw.ceil() + 1e-9)
    if outside.any():
        run, i = (int(v) for v in outside.nonzero()[0])
        return (
            f"particle {i} with K·w = {kw[i]:.3f} got {int(counts[run, i])} offspring; "
            f"systematic resampling gives ⌊K·w⌋ or ⌈K·w⌉ (multinomial draws scatter more)"
        )
    mean, se = counts.mean(0), counts.std(0) / math.sqrt(R_RUNS)
    z = (mean - kw) / se.clamp(min=1e-12)
    i = int(z.abs().argmax())
    if z.abs()[i] > Z_MAX:
        return (
            f"particle {i}'s mean offspring count is {mean[i]:.4f} over {R_RUNS} runs where "
            f"it must be K·w = {kw[i]:.4f} ({z[i]:+.1f} standard errors)"
        )
    multinomial = kw * (1 - w)
    if (counts.var(0) > multinomial + 1e-9).any():  # implied by the ⌊⌋/⌈⌉ check; kept explicit
        return "the offspring counts vary more than multinomial resampling's K w (1 − w)"
    return None


# -- FK potentials --------------------------------------------------------------------------------


def fk_potential(
    kind: str,
    values: torch.Tensor,
    stat: torch.Tensor,
    logprod: torch.Tensor,
    lam: float,
    clean: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the children's path statistic, their log G) at a block end: diff λ(V − V_parent); max
    λ·max(stat, V); add λ·(stat + V); at the clean end max/add take λ r − log Π G (``logprod``)."""
    if kind == "diff":
        return values, lam * (values - stat)
    new = torch.maximum(stat, values) if kind == "max" else stat + values
    return new, (lam * values - logprod if clean else lam * new)


def _check_fk_potential(fn) -> str | None:
    g = torch.Generator().manual_seed(8)
    values = torch.randn(6, generator=g, dtype=_F64)
    parents = {
        "diff": torch.randn(6, generator=g, dtype=_F64),
        "max": torch.randn(6, generator=g, dtype=_F64),
        "add": torch.randn(6, generator=g, dtype=_F64),
    }
    logprod = torch.randn(6, generator=g, dtype=_F64)
    for kind in ("diff", "max", "add"):
        for lam, clean in ((2.0, False), (0.5, False), (2.0, True)):
            stat = parents[kind]
            want = _potential(kind, values, stat, logprod, lam=lam, lam_prev=lam, clean=clean)
            got = fn(kind, values.clone(), stat.clone(), logprod.clone(), lam, clean)
            reason = compare(
                got,
                tuple(want),
                f"fk_potential({kind!r}, lam={lam}, clean={clean})",
                ("the statistic", "log G"),
            )
            if reason:
                return reason
    return None


register(
    Exercise(
        "ess",
        6,
        "the effective sample size of log-weights",
        "ESS = (Σ w)² / Σ w² = exp(2·logsumexp(l) − logsumexp(2l)): work with the "
        "log-weights l, never with e^l itself",
        _check_ess,
        ess,
    )
)
register(
    Exercise(
        "systematic_resample",
        6,
        "systematic resampling",
        "one uniform U; the K points (U + j)/K on [0, 1); torch.searchsorted(cumsum(w), "
        "points) gives the particle whose CDF interval holds each point",
        _check_systematic,
        systematic_resample,
    )
)
register(
    Exercise(
        "fk_potential",
        6,
        "FK steering's diff / max / add potentials",
        "diff: stat = V, log G = λ(V − stat); max: stat = max(stat, V); add: stat + V; "
        "log G = λ·stat, except at the clean end, where it is λ r − logprod",
        _check_fk_potential,
        fk_potential,
    )
)
