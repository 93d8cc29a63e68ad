"""One exact reference: an exact sample, its kernel bandwidth, and the noise floor of MMD² against
it — what demo, tradeoff, the leaderboard, the explorer and the tests score samples with.

The floor is the MMD² that fresh exact samples reach against the reference, averaged over
replicates: a perfect sampler's expected value at that sample size, so a distance of
``mmd2 / floor`` is about 1 for an exact sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .metrics import evaluate, median_bandwidth, mmd2, noise_floor

__all__ = ["ExactReference"]


@dataclass(frozen=True)
class ExactReference:
    """An exact sample (``sample``), its median-heuristic kernel bandwidth and the MMD² noise
    floor; ``floor_metrics`` holds the floor of every metric of :func:`evaluate` when built from
    a target (:meth:`of_target`), empty otherwise."""

    sample: torch.Tensor
    bandwidth: float
    floor: float
    floor_metrics: dict = field(default_factory=dict)

    @classmethod
    def of_target(
        cls, target, n: int, generator: torch.Generator, replicates: int = 5
    ) -> ExactReference:
        """n exact samples of ``target`` as the reference, then the floor of every metric over
        ``replicates`` fresh samples of n (:func:`~toycode.exact.metrics.noise_floor`), all drawn
        from ``generator`` in that order."""
        reference = target.sample(n, generator)
        floor = noise_floor(target, n, generator, reference, replicates)
        return cls(reference, median_bandwidth(reference), floor["mmd2"], floor)

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

    def evaluate(self, x: torch.Tensor, rewards: torch.Tensor, target) -> dict:
        """Every metric of :func:`~toycode.exact.metrics.evaluate` against this reference."""
        return evaluate(x, rewards, target, self.sample, self.bandwidth)
