"""The exact denoiser of a toy prior: ε̂(x_t) = −σ_t ∇ log p_t(x_t), x̂0 = E[x0 | x_t].

The prior is a Gaussian mixture (:mod:`toycode.exact.gmm`) or a mixture of uniform boxes
(:mod:`toycode.exact.boxes`); both give ``noised(level)`` with a closed-form ``score`` and
``posterior_mean(x, level, noised)``, which is all this module asks of them.

On a variance-preserving process it outputs ε̂ ("epsilon"); on rectified flow the exact velocity
v̂ = E[ε − x0 | x_t] = ε̂ − x̂0 ("flow"), which, unlike ε̂, still determines x̂0 at t = 1.
"""

from __future__ import annotations

import torch

from ..core.diffusion import NoiseLevel, Process
from ..exact.boxes import BoxMixture
from ..exact.gmm import GaussianMixture
from .base import ToyBackend


class AnalyticDenoiser:
    """Closed-form ε- or velocity-prediction for a mixture prior (float64, differentiable in x)."""

    def __init__(self, prior: GaussianMixture | BoxMixture, prediction: str = "epsilon"):
        if prediction not in ("epsilon", "flow"):
            raise ValueError(f"prediction must be 'epsilon' or 'flow', got {prediction!r}")
        self.prior, self.prediction = prior, prediction
        self._noised: dict = {}

    def __call__(self, x: torch.Tensor, t, level: NoiseLevel) -> torch.Tensor:
        if level not in self._noised:  # memo of immutable values: one Cholesky per noise level
            self._noised[level] = self.prior.noised(level)
        noised = self._noised[level]
        eps = -level.sigma * noised.score(x)
        if self.prediction == "epsilon":
            return eps
        return eps - self.prior.posterior_mean(x, level, noised)


def analytic_backend(
    prior: GaussianMixture | BoxMixture, process: Process | None = None
) -> ToyBackend:
    """A backend whose denoiser is exact: only the time discretisation separates it from p."""
    process = process or Process.make()
    prediction = "flow" if process.kind == "flow" else "epsilon"
    return ToyBackend(
        AnalyticDenoiser(prior, prediction),
        process,
        prior.dim,
        torch.float64,
        name="analytic",
        prediction=prediction,
    )
