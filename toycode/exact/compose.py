"""Compositions of exact priors: annealed p^β and products p_1·p_2, as reward tilts.

A geometric composition q ∝ Π_k p_k^{c_k} of Gaussian mixtures (the first, p_0, is "the model")
is the tilt q ∝ p_0·e^{r} with r = Σ_k c_k log p_k − log p_0 and λ = 1: annealing p^β is
r = (β − 1) log p, a product of experts p_0·p_1 is r = log p_1. So every exact tool of
toycode applies: the target by 2-D quadrature (:class:`~toycode.exact.targets.GridTarget`), the
samplers, the metrics. Feynman–Kac correctors (Skreta et al. 2025, arXiv 2503.02819) walk the
intermediate marginals q_t ∝ Π_k p_{k,t}^{c_k} (the composition of the *noised* densities,
which at t = 0 is q); :class:`CompositionValue` is the soft value that makes the blockwise
sampler's SMC target exactly that sequence, λV_t = log q_t − log p_{0,t} = Σ c_k log p_{k,t} −
log p_{0,t}, computable here because every noised mixture density is exact.
"""

from __future__ import annotations

import torch

from ..utils.checks import check_range
from .gmm import GaussianMixture
from .problems import Problem
from .rewards import Reward

__all__ = ["Composition", "CompositionReward", "CompositionValue", "annealed", "product"]

_F64 = torch.float64


def _log_ratio(mixtures, weights, x: torch.Tensor) -> torch.Tensor:
    """Σ_k c_k log p_k(x) − log p_0(x) (float64)."""
    x = x.to(_F64)
    out = (weights[0] - 1.0) * mixtures[0].log_prob(x)
    for m, c in zip(mixtures[1:], weights[1:]):
        out = out + c * m.log_prob(x)
    return out


class CompositionReward(Reward):
    """r(x) = Σ_k c_k log p_k(x) − log p_0(x): the composition as a tilt of p_0 at λ = 1."""

    differentiable = True

    def __init__(self, mixtures, weights):
        self.mixtures, self.weights = tuple(mixtures), tuple(float(c) for c in weights)
        self.dim = self.mixtures[0].dim

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _log_ratio(self.mixtures, self.weights, x.reshape(len(x), -1))

    def to_dict(self) -> dict:
        return {
            "type": "composition",
            "weights": list(self.weights),
            "mixtures": [
                {"weights": m.weights.tolist(), "means": m.means.tolist(), "covs": m.covs.tolist()}
                for m in self.mixtures
            ],
        }


class CompositionValue:
    """λV_t(x) = Σ_k c_k log p_{k,t}(x) − log p_{0,t}(x) at λ = 1, exact (no denoiser call); at
    the clean end the reward itself. With it the sampler's SMC intermediate targets
    p_{0,t} e^{V_t} are the composition of the noised densities, FKC's q_t."""

    needs_x0 = False

    def __init__(self, mixtures, weights):
        self.mixtures, self.weights = tuple(mixtures), tuple(float(c) for c in weights)

    def __call__(self, ledger, backend, x, x0, i: int, generator=None) -> torch.Tensor:
        lv = backend.process.level(i)
        flat = x.reshape(len(x), -1)
        if lv.sigma == 0:
            return _log_ratio(self.mixtures, self.weights, flat / lv.alpha)
        return _log_ratio([m.noised(lv) for m in self.mixtures], self.weights, flat)


class Composition:
    """q ∝ Π_k p_k^{c_k} over Gaussian mixtures of one dimension: its ``problem`` (p_0 tilted by
    :class:`CompositionReward` at λ = 1, exact target by quadrature in 2-D), its
    ``reward`` and the exact ``value`` of its noised sequence."""

    def __init__(self, mixtures, weights, name: str = "composition"):
        mixtures = tuple(mixtures)
        if not mixtures or not all(isinstance(m, GaussianMixture) for m in mixtures):
            raise ValueError("a composition needs one or more Gaussian mixtures")
        if len(weights) != len(mixtures):
            raise ValueError(
                f"a composition needs one weight per mixture: {len(mixtures)} mixtures, "
                f"{len(weights)} weights"
            )
        if len({m.dim for m in mixtures}) > 1:
            raise ValueError("the mixtures of a composition must share one dimension")
        for c in weights:
            check_range("composition weight", c, 0.0, None, low_open=True)
        self.mixtures, self.weights, self.name = mixtures, tuple(map(float, weights)), name
        self.reward = CompositionReward(mixtures, weights)
        self.problem = Problem(mixtures[0], self.reward, 1.0, name)

    def value(self) -> CompositionValue:
        return CompositionValue(self.mixtures, self.weights)

    def log_prob_unnormalised(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_k c_k log p_k(x): the composition's log-density up to its normaliser."""
        x = x.to(_F64)
        return sum(c * m.log_prob(x) for m, c in zip(self.mixtures, self.weights))


def annealed(prior: GaussianMixture, beta: float) -> Composition:
    """p^β (β > 0; β > 1 sharpens the modes and reweights them by w_k^β|Σ_k|^{(1−β)/2})."""
    check_range("beta", beta, 0.0, None, low_open=True)
    return Composition([prior], [beta], name=f"annealed-{beta:g}")


def product(first: GaussianMixture, second: GaussianMixture) -> Composition:
    """The product of experts p_1·p_2 (normalised)."""
    return Composition([first, second], [1.0, 1.0], name="product")
