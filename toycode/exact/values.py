"""Values known exactly or by exact posterior draws, for the toy problems (no denoiser call).

ExactValue(target)        the exact soft value V_t of the tilted mixture
PosteriorValue(target, M) (1/λ) log mean e^{λ r(x0_m)} over M exact draws x0_m ~ p(x0 | x_t)
"""

from __future__ import annotations

import torch

from ..core.values import log_mean_exp
from ..utils.checks import check_range
from .posterior import posterior_sample

__all__ = ["ExactValue", "PosteriorValue"]


class ExactValue:
    """The exact soft value V_t of a :class:`toycode.exact.targets.Target` (no denoiser call)."""

    needs_x0 = False

    def __init__(self, target):
        self.target = target

    def __call__(self, ledger, backend, x, x0, i: int, generator=None) -> torch.Tensor:
        return self.target.soft_value(x, backend.process.level(i))


class PosteriorValue:
    """The look-ahead estimator with exact posterior draws x0 ~ p(x0 | x_t) of a toy problem's
    mixture prior: no denoiser call, only the Monte-Carlo error of M draws."""

    needs_x0 = False

    def __init__(self, target, samples: int = 4):
        check_range("posterior samples", samples, 1, None)
        if not target.lam > 0:
            raise ValueError(f"the posterior value needs lam > 0, got lam={target.lam}")
        self.target, self.samples = target, samples

    def __call__(self, ledger, backend, x, x0, i: int, generator=None) -> torch.Tensor:
        draws = posterior_sample(
            self.target.prior, x, backend.process.level(i), self.samples, generator
        )
        rewards = ledger.reward(self.target.reward, draws.view(-1, draws.shape[-1]))
        return log_mean_exp(rewards.view(len(x), self.samples), self.target.lam)
