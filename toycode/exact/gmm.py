"""Gaussian mixtures in any dimension, float64: density, score, sampling, noising, exact tilts.

The closed forms behind the exact ground truth (docs/design.md §3):

    noised marginal   p_t = Σ_k w_k N(α μ_k, α² Σ_k + σ² I)      (x_t = α x0 + σ ε; VP: α = √ᾱ)
    exact ε̂           ε̂(x_t) = −σ ∇ log p_t(x_t)
    posterior mean    E[x0 | x_t] = Σ_k ρ_k (μ_k + α Σ_k S_k⁻¹ (x_t − α μ_k)),  S_k = α² Σ_k + σ² I
    quadratic tilt    r(x) = −½ (x − c)ᵀ P (x − c),  Q = λP:
                      C_k = (Σ_k⁻¹ + Q)⁻¹,  m_k = C_k (Σ_k⁻¹ μ_k + Q c),
                      log ŵ_k = log w_k − ½ log|I + Σ_k Q| − ½ (μ_k − c)ᵀ Q (I + Σ_k Q)⁻¹ (μ_k − c)
                      (equal to docs/design.md's N(μ_k; c, Σ_k + Q⁻¹)(2π)^{d/2}|Q|^{−1/2}
                      when Q is invertible, and still valid for a singular P ⪰ 0)
    linear tilt       r(x) = aᵀx:  m_k = μ_k + λ Σ_k a,  C_k = Σ_k,
                      log ŵ_k = log w_k + λ aᵀμ_k + ½ λ² aᵀ Σ_k a
    normaliser        log Z_λ = logsumexp_k log ŵ_k,   w*_k = ŵ_k / Z_λ
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..core.diffusion import NoiseLevel

__all__ = ["GaussianMixture", "tilt_quadratic", "tilt_linear"]

_F64 = torch.float64


@dataclass(frozen=True)
class GaussianMixture:
    """p(x) = Σ_k w_k N(x; μ_k, Σ_k); weights (K,), means (K, d), covs (K, d, d), float64."""

    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor
    _chol: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        w = torch.as_tensor(self.weights, dtype=_F64)
        mu = torch.as_tensor(self.means, dtype=_F64)
        cov = torch.as_tensor(self.covs, dtype=_F64)
        if w.ndim != 1 or mu.ndim != 2 or cov.ndim != 3:
            raise ValueError(
                f"weights, means, covs must be (K,), (K, d), (K, d, d); got "
                f"{tuple(w.shape)}, {tuple(mu.shape)}, {tuple(cov.shape)}"
            )
        k, d = mu.shape
        if len(w) != k or cov.shape != (k, d, d):
            raise ValueError(
                f"dimension mismatch: {len(w)} weights, means {tuple(mu.shape)}, "
                f"covs {tuple(cov.shape)}"
            )
        if (w < 0).any() or not torch.isfinite(w).all():
            raise ValueError(f"weights must be non-negative, got {w.tolist()}")
        if abs(float(w.sum()) - 1.0) > 1e-4:
            raise ValueError(f"weights must sum to 1 (within 1e-4), got sum {float(w.sum()):.8g}")
        w = w / w.sum()
        if not torch.allclose(cov, cov.transpose(-1, -2), atol=1e-10, rtol=1e-8):
            raise ValueError("covs must be symmetric")
        chol, info = torch.linalg.cholesky_ex(cov)
        if (info != 0).any():
            bad = int(torch.nonzero(info)[0])
            raise ValueError(f"covs[{bad}] is not positive definite")
        for name, value in (("weights", w), ("means", mu), ("covs", cov), ("_chol", chol)):
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        """E_p[x], (d,)."""
        return self.weights @ self.means

    @property
    def covariance(self) -> torch.Tensor:
        """Cov_p[x] = Σ_k w_k (Σ_k + (μ_k − μ)(μ_k − μ)ᵀ), (d, d)."""
        diff = self.means - self.mean
        spread = self.covs + diff[:, :, None] * diff[:, None, :]
        return (self.weights[:, None, None] * spread).sum(0)

    def to_dict(self) -> dict:
        """The ``prior`` field of a problem file (the default type: no ``type`` key)."""
        return {
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "covs": self.covs.tolist(),
        }

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        return x.to(_F64)

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; μ_k, Σ_k), shape (n, K)."""
        z = torch.linalg.solve_triangular(self._chol, self._diff(x), upper=False)  # (K, d, n)
        half_logdet = self._chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        log_2pi = 0.5 * self.dim * math.log(2 * math.pi)
        log_n = -0.5 * (z**2).sum(1) - half_logdet[:, None] - log_2pi
        return (log_n + self.weights.log()[:, None]).T

    def _diff(self, x: torch.Tensor) -> torch.Tensor:
        """x − μ_k laid out (K, d, n): one triangular solve per component, not per point."""
        x = self._check_x(x)
        return x.T[None] - self.means[:, :, None]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), shape (n,)."""
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities w_k N_k(x) / p(x), shape (n, K)."""
        return torch.softmax(self.component_log_prob(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """∇_x log p(x) in closed form: Σ_k resp_k(x) · (−Σ_k⁻¹ (x − μ_k)), shape (n, d)."""
        resp = self.responsibilities(x)  # (n, K)
        prec_diff = torch.cholesky_solve(self._diff(x), self._chol)  # (K, d, n)
        return -torch.einsum("nk,kdn->nd", resp, prec_diff)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples, shape (n, d)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=_F64)
        x = torch.empty_like(z)
        for j in range(self.num_components):  # K matrix products, never an (n, d, d) gather
            rows = k == j
            x[rows] = self.means[j] + z[rows] @ self._chol[j].T
        return x

    def noised(self, level: NoiseLevel | float) -> "GaussianMixture":
        """The law of α x0 + σ ε for x0 ~ self, at a :class:`~toycode.core.diffusion.NoiseLevel`
        (a float is a variance-preserving ᾱ: α = √ᾱ, σ = √(1 − ᾱ))."""
        lv = NoiseLevel.of(level)
        eye = torch.eye(self.dim, dtype=_F64)
        return GaussianMixture(
            self.weights, lv.alpha * self.means, lv.alpha**2 * self.covs + lv.sigma**2 * eye
        )

    def posterior_mean(
        self, x: torch.Tensor, level: NoiseLevel | float, noised: "GaussianMixture | None" = None
    ) -> torch.Tensor:
        """E[x0 | α x0 + σ ε = x] for x0 ~ self, exact and finite at α = 0 (the prior mean).

        Per component, Gaussian conditioning gives μ_k + α Σ_k S_k⁻¹ (x − α μ_k); the components
        are weighted by the noised responsibilities ρ_k(x). ``noised`` may pass
        ``self.noised(level)`` when the caller already holds it.
        """
        lv = NoiseLevel.of(level)
        noised = self.noised(lv) if noised is None else noised
        resp = noised.responsibilities(x)  # (n, K)
        solved = torch.cholesky_solve(noised._diff(x), noised._chol)  # (K, d, n)
        per_k = self.means[:, :, None] + lv.alpha * self.covs @ solved  # (K, d, n)
        return torch.einsum("nk,kdn->nd", resp, per_k)


def _normalise(log_w_hat: torch.Tensor) -> tuple[torch.Tensor, float]:
    log_z = torch.logsumexp(log_w_hat, 0)
    return (log_w_hat - log_z).exp(), float(log_z)


def tilt_quadratic(
    prior: GaussianMixture, center: torch.Tensor, precision: torch.Tensor, lam: float
) -> tuple[GaussianMixture, float]:
    """p*(x) ∝ p(x) exp(−λ/2 (x − c)ᵀ P (x − c)) as a mixture, and log Z_λ = log E_p[e^{λr}]."""
    c = torch.as_tensor(center, dtype=_F64)
    q = lam * torch.as_tensor(precision, dtype=_F64)
    # Cholesky factorisations only (the batched LU of MKL has failed at d = 784 on 2 threads):
    # C_k = (Σ_k⁻¹ + Q)⁻¹;  log|I + Σ_k Q| = log|Σ_k| + log|Σ_k⁻¹ + Q|;
    # Q (I + Σ_k Q)⁻¹ = Q − Q C_k Q (Woodbury), so the quadratic form needs no other solve.
    prec = torch.cholesky_inverse(prior._chol)  # Σ_k⁻¹, (K, d, d)
    a = prec + q
    chol_a = torch.linalg.cholesky(0.5 * (a + a.transpose(-1, -2)))
    cov = torch.cholesky_inverse(chol_a)
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    mean = (cov @ ((prec @ prior.means.unsqueeze(-1)) + (q @ c).unsqueeze(-1))).squeeze(-1)
    dm = prior.means - c  # (K, d)
    qdm = dm @ q  # (K, d), Q symmetric
    quad = (qdm * dm).sum(-1) - (qdm.unsqueeze(1) @ cov @ qdm.unsqueeze(-1)).squeeze((-1, -2))
    logdet = 2 * (
        prior._chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        + chol_a.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    )
    log_w_hat = prior.weights.log() - 0.5 * logdet - 0.5 * quad
    w, log_z = _normalise(log_w_hat)
    return GaussianMixture(w, mean, cov), log_z


def tilt_linear(
    prior: GaussianMixture, direction: torch.Tensor, lam: float
) -> tuple[GaussianMixture, float]:
    """p*(x) ∝ p(x) exp(λ aᵀx) as a mixture, and log Z_λ."""
    a = torch.as_tensor(direction, dtype=_F64)
    cov_a = prior.covs @ a  # Σ_k a, (K, d)
    log_w_hat = prior.weights.log() + lam * prior.means @ a + 0.5 * lam**2 * (cov_a @ a)
    w, log_z = _normalise(log_w_hat)
    return GaussianMixture(w, prior.means + lam * cov_a, prior.covs), log_z
