"""Exact posterior draws x0 ~ p(x0 | x_t = x) for a Gaussian-mixture prior (design notes §7), or a
mixture of uniform boxes (:meth:`~toycode.exact.boxes.BoxMixture.posterior_sample`).

Under x_t = α x0 + σ ε the posterior is again a mixture, whatever the reward: component k has
responsibility ρ_k(x) ∝ w_k N(x; α μ_k, S_k), S_k = α² Σ_k + σ² I, and, given k, the Gaussian
conditional

    m_k(x) = μ_k + α Σ_k S_k⁻¹ (x − α μ_k),     C_k = Σ_k − α² Σ_k S_k⁻¹ Σ_k

(the same as (Σ_k⁻¹ + α²/σ² I)⁻¹ but defined for singular Σ_k and well conditioned as σ → 0).
"""

from __future__ import annotations

import torch

from ..core.diffusion import NoiseLevel
from ..utils.checks import check_range
from .boxes import BoxMixture
from .gmm import GaussianMixture

__all__ = ["posterior_sample"]

_F64 = torch.float64


def posterior_sample(
    prior: GaussianMixture | BoxMixture,
    x: torch.Tensor,
    level: NoiseLevel | float,
    samples: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``samples`` exact draws of x0 | x_t = x for each row of x: shape (n, samples, d).

    A :class:`~toycode.exact.boxes.BoxMixture` prior draws its own (truncated normals)."""
    check_range("samples", samples, 1, None)
    if isinstance(prior, BoxMixture):
        return prior.posterior_sample(x.reshape(len(x), -1), level, samples, generator)
    lv = NoiseLevel.of(level)
    x = x.to(_F64).reshape(len(x), -1)
    n, d = x.shape
    a, s = lv.alpha, lv.sigma
    covs, means = prior.covs.to(_F64), prior.means.to(_F64)
    eye = torch.eye(d, dtype=_F64)
    noised_cov = a * a * covs + s * s * eye  # S_k (K, d, d)
    gain = a * torch.linalg.solve(noised_cov, covs).transpose(1, 2)  # α Σ_k S_k⁻¹
    cond_cov = covs - a * gain @ covs  # C_k
    evals, evecs = torch.linalg.eigh(0.5 * (cond_cov + cond_cov.transpose(1, 2)))
    root = evecs * evals.clamp(min=0).sqrt()[:, None, :]  # C_k = root rootᵀ
    resp = prior.noised(lv).responsibilities(x)  # (n, K)
    comp = torch.multinomial(resp, samples, replacement=True, generator=generator)  # (n, M)
    z = torch.randn(n, samples, d, generator=generator, dtype=_F64)
    out = torch.empty(n, samples, d, dtype=_F64)
    for k in range(prior.num_components):  # K is small; rows are vectorised within a component
        rows, draws = (comp == k).nonzero(as_tuple=True)
        if len(rows):
            mean = means[k] + (x[rows] - a * means[k]) @ gain[k].T
            out[rows, draws] = mean + z[rows, draws] @ root[k].T
    return out
