"""One exact reference: an exact sample, its kernel bandwidth, and the noise floor of MMD² against
it — what demo, tradeoff, the leaderboard, the explorer and the tests score samples with.

The floor is the MMD² that fresh exact samples reach against the reference, averaged over
replicates: a perfect sampler's expected value at that sample size, so a distance of
``mmd2 / floor`` is about 1 for an exact sampler. Built from a target, the reference also holds
the floors of the distances published toy tables report (sliced and exact Wasserstein, EMD, the
covariance-trace error; :mod:`toycode.exact.metrics`) and the target's exact covariance trace;
:meth:`ExactReference.paper_metrics` puts each beside its floor for a result row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .metrics import (
    FLOORED,
    assignment_distances,
    evaluate,
    median_bandwidth,
    mmd2,
    noise_floor,
    sliced_w2,
    target_cov_trace,
)

__all__ = ["ExactReference", "PAPER_METRICS"]

PAPER_METRICS = ("sw2", "w2", "emd", "cov_trace", "cov_trace_exact", "cov_trace_err")
"""The metrics of :func:`~toycode.exact.metrics.evaluate` that result rows carry beside MMD²
(each of them in :data:`~toycode.exact.metrics.FLOORED` with its ``<name>_floor``)."""


@dataclass(frozen=True)
class ExactReference:
    """An exact sample (``sample``), its median-heuristic kernel bandwidth and the MMD² noise
    floor; ``floor_metrics`` holds the floor of every metric of :func:`evaluate` when built from
    a target (:meth:`of_target`), empty otherwise, and ``cov_trace_exact`` the target's exact
    covariance trace (NaN without a target)."""

    sample: torch.Tensor
    bandwidth: float
    floor: float
    floor_metrics: dict = field(default_factory=dict)
    cov_trace_exact: float = math.nan

    @classmethod
    def of_target(
        cls, target, n: int, generator: torch.Generator, replicates: int = 5
    ) -> ExactReference:
        """n exact samples of ``target`` as the reference, then the floor of every metric over
        ``replicates`` fresh samples of n (:func:`~toycode.exact.metrics.noise_floor`), all drawn
        from ``generator`` in that order."""
        reference = target.sample(n, generator)
        floor = noise_floor(target, n, generator, reference, replicates)
        return cls(
            reference, median_bandwidth(reference), floor["mmd2"], floor, target_cov_trace(target)
        )

    @classmethod
    def of_sampler(
        cls,
        sampler: Callable[[int, torch.Generator], torch.Tensor],
        n_ref: int,
        generator: torch.Generator,
        n: int | None = None,
        replicates: int = 10,
    ) -> ExactReference:
        """``sampler(n_ref, generator)`` as the reference (any exact sampler: a target's or a
        prior's), and the MMD² floor of ``replicates`` fresh samples of ``n`` (default n_ref)."""
        reference = sampler(n_ref, generator)
        bandwidth = median_bandwidth(reference)
        floor = (
            sum(
                mmd2(sampler(n or n_ref, generator), reference, bandwidth)
                for _ in range(replicates)
            )
            / replicates
        )
        return cls(reference, bandwidth, floor)

    def mmd2(self, x: torch.Tensor) -> float:
        """MMD² of samples x against the reference."""
        return mmd2(x, self.sample, self.bandwidth)

    def mmd2_over_floor(self, x: torch.Tensor) -> float:
        """MMD² of x against the reference, in units of the floor (≈ 1: an exact sampler)."""
        return self.mmd2(x) / self.floor

    def sw2(self, x: torch.Tensor) -> float:
        """Sliced SW₂² of x against the reference (:func:`~toycode.exact.metrics.sliced_w2`)."""
        return sliced_w2(x, self.sample)

    def wasserstein(self, x: torch.Tensor) -> tuple[float, float]:
        """(W₂², W₁ = EMD) of x against the reference, exact between the empirical samples
        (:func:`~toycode.exact.metrics.assignment_distances`)."""
        return assignment_distances(x, self.sample)

    def evaluate(self, x: torch.Tensor, rewards: torch.Tensor, target) -> dict:
        """Every metric of :func:`~toycode.exact.metrics.evaluate` against this reference."""
        exact_trace = None if math.isnan(self.cov_trace_exact) else self.cov_trace_exact
        return evaluate(
            x, rewards, target, self.sample, self.bandwidth, cov_trace_exact=exact_trace
        )

    def paper_metrics(self, metrics: dict) -> dict:
        """The :data:`PAPER_METRICS` of an :meth:`evaluate` result, each distance followed by
        its floor (``sw2``, ``sw2_floor``, …, ``cov_trace_err``, ``cov_trace_err_floor``; the
        floors are NaN for a reference built without a target)."""
        out = {}
        for key in PAPER_METRICS:
            out[key] = metrics[key]
            if key in FLOORED:
                out[f"{key}_floor"] = self.floor_metrics.get(key, math.nan)
        return out
