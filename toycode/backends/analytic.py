"""The exact denoiser of a Gaussian-mixture prior: ε̂(x_t) = −√(1 − ᾱ_t) ∇ log p_t(x_t)."""

from __future__ import annotations

import torch

from ..diffusion import Process
from ..exact.gmm import GaussianMixture
from .base import ToyBackend


class AnalyticDenoiser:
    """Closed-form ε-prediction for a mixture prior (float64, differentiable in x)."""

    def __init__(self, prior: GaussianMixture):
        self.prior = prior
        self._noised: dict[float, GaussianMixture] = {}

    def __call__(self, x: torch.Tensor, t: int, abar: float) -> torch.Tensor:
        if abar not in self._noised:     # memo of immutable values: one Cholesky per noise level
            self._noised[abar] = self.prior.noised(abar)
        return -((1 - abar) ** 0.5) * self._noised[abar].score(x)


def analytic_backend(prior: GaussianMixture, process: Process | None = None) -> ToyBackend:
    """A backend whose denoiser is exact: only the time discretisation separates it from p."""
    return ToyBackend(AnalyticDenoiser(prior), process or Process.make(), prior.dim,
                      torch.float64, name="analytic")
