"""The Ledger, where every loop counts its cost, and the SampleResult built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..utils.checks import check_rewards
from .backend import Backend, Prediction

__all__ = ["Ledger", "SampleResult"]


@dataclass
class Ledger:
    """The one place where denoiser evaluations, reward calls and reward gradients are counted."""

    nfe: int = 0
    reward_calls: int = 0
    reward_grads: int = 0  # reward gradients
    backprops: int = 0  # backward passes through the denoiser

    def predict(
        self, backend: Backend, x: torch.Tensor, i: int, generator: torch.Generator | None = None
    ) -> Prediction:
        pred = backend.predict(x, i, generator)
        rows = x.shape[0]
        self.nfe += rows * pred.nfe
        self.reward_grads += rows * pred.reward_grads
        self.backprops += rows * pred.backprops
        return pred

    def reward(self, reward: Callable, decoded) -> torch.Tensor:
        n = len(decoded)
        self.reward_calls += n
        who = f"reward {getattr(reward, '__name__', reward)!r}"
        return check_rewards(reward(decoded), n, who=who)


@dataclass
class SampleResult:
    """Samples with their rewards and what they cost (totals over all n samples).

    Loops build it with :meth:`from_ledger`, so the costs are the Ledger's and nothing else's."""

    samples: Any
    rewards: torch.Tensor
    nfe: int
    reward_calls: int
    reward_grads: int = 0
    backprops: int = 0
    ess: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (blocks, populations)
    settings: dict = field(default_factory=dict)

    @classmethod
    def from_ledger(
        cls,
        samples,
        rewards: torch.Tensor,
        ledger: Ledger,
        *,
        settings: dict,
        ess: torch.Tensor | None = None,
        populations: int | None = None,
    ) -> "SampleResult":
        """The result of a run that counted its cost in ``ledger``; ``ess`` (blocks,
        populations), or an empty table of ``populations`` (default: one per sample)."""
        if ess is None:
            ess = torch.ones(
                0, len(rewards) if populations is None else populations, dtype=torch.float64
            )
        return cls(
            samples,
            rewards,
            ledger.nfe,
            ledger.reward_calls,
            ledger.reward_grads,
            ledger.backprops,
            ess,
            settings,
        )

    @property
    def n(self) -> int:
        return len(self.rewards)

    @property
    def nfe_per_sample(self) -> float:
        return self.nfe / self.n
