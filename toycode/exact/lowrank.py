"""Gaussian mixtures whose covariances are low rank plus diagonal, Σ_k = U_k U_kᵀ + D_k, exact
in float64 with r×r solves only: no d×d matrix is ever formed, so the 784-D MNIST mixture
(:func:`toycode.mnist.gmm.fit_mnist_mixture`, r = 16) denoises thousands of points a second.

:class:`LowRankMixture` offers what :class:`~toycode.exact.gmm.GaussianMixture` offers the
analytic backend, the exact targets and the metrics (log_prob, responsibilities, score, sample,
noised, posterior_mean), and :func:`low_rank_tilt` the closed-form tilts of
:class:`~toycode.exact.targets.MixtureTarget`. The closed forms (U: d×r, D diagonal,
x_t = α x0 + σ ε):

    capacitance       M = I_r + Uᵀ D⁻¹ U = L Lᵀ,      log|Σ| = Σ_i log D_i + 2 Σ_j log L_jj
    Woodbury          Σ⁻¹ v = D⁻¹ v − D⁻¹ U s,        s = M⁻¹ Uᵀ D⁻¹ v
                      vᵀ Σ⁻¹ v = Σ_i v_i² / D_i − ‖L⁻¹ Uᵀ D⁻¹ v‖²
    noised            α² Σ + σ² I = (αU)(αU)ᵀ + (α² D + σ² I)  =:  U' U'ᵀ + D'
    posterior mean    E[x0 | x_t, k] = μ + α Σ S⁻¹ (x_t − α μ)      (S = U' U'ᵀ + D')
                                     = μ + (α D / D') ⊙ (x_t − α μ) + (σ² / D') ⊙ U s'
                      with s' = M'⁻¹ U'ᵀ D'⁻¹ (x_t − α μ), the noised mixture's own s, because
                      U'ᵀ S⁻¹ = M'⁻¹ U'ᵀ D'⁻¹ and 1 − α² D / D' = σ² / D': each pixel's scalar
                      Wiener gain plus a rank-r correction, finite at α = 0 (μ) and σ = 0 (x_t).
    quadratic tilt    r(x) = −½ (x − c)ᵀ P (x − c), P = diag(p) ⪰ 0, q = λ p:
                      (Σ⁻¹ + Q)⁻¹ = D̃ + Ũ Ũᵀ,  D̃ = D / (1 + D q),  Ũ = (U / (1 + D q)) G^{−ᵀ/2},
                      G = I_r + Uᵀ diag(q / (1 + D q)) U    (Woodbury twice; G ⪰ I since q ≥ 0)
                      m = μ − C Q (μ − c),   log|I + Σ Q| = Σ_i log(1 + D_i q_i) + log|G|
    linear tilt       r(x) = aᵀx: m = μ + λ Σ a, the covariance unchanged.

A dense reward precision P is not low rank plus diagonal after the tilt, so the quadratic tilt
asks for a diagonal P (:class:`DiagonalQuadratic` evaluates it in O(d); a plain
:class:`~toycode.exact.rewards.Quadratic` whose matrix is diagonal also works). Woodbury's
identity: Woodbury (1950); Hager, SIAM Review 31 (1989), "Updating the inverse of a matrix".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..core.diffusion import NoiseLevel
from .gmm import GaussianMixture, _normalise
from .rewards import Linear, Quadratic, _vector

__all__ = ["LowRankMixture", "DiagonalQuadratic", "low_rank_tilt"]

_F64 = torch.float64


@dataclass(frozen=True)
class LowRankMixture:
    """p(x) = Σ_k w_k N(x; μ_k, U_k U_kᵀ + diag(D_k)): weights (K,), means (K, d), factors U
    (K, d, r), diag D (K, d) > 0, float64. Quacks like :class:`GaussianMixture` but has no
    ``covs``; :meth:`to_dense` builds that (d×d per component) where d is small."""

    weights: torch.Tensor
    means: torch.Tensor
    factors: torch.Tensor
    diag: torch.Tensor
    _chol: torch.Tensor = field(init=False, repr=False, compare=False)  # of M, (K, r, r)
    _scaled: torch.Tensor = field(init=False, repr=False, compare=False)  # D⁻¹U, (K, d, r)

    def __post_init__(self):
        w = torch.as_tensor(self.weights, dtype=_F64)
        mu = torch.as_tensor(self.means, dtype=_F64)
        u = torch.as_tensor(self.factors, dtype=_F64)
        dg = torch.as_tensor(self.diag, dtype=_F64)
        if w.ndim != 1 or mu.ndim != 2 or u.ndim != 3 or dg.ndim != 2:
            raise ValueError(
                f"weights, means, factors, diag must be (K,), (K, d), (K, d, r), (K, d); got "
                f"{tuple(w.shape)}, {tuple(mu.shape)}, {tuple(u.shape)}, {tuple(dg.shape)}"
            )
        k, d = mu.shape
        if len(w) != k or u.shape[:2] != (k, d) or dg.shape != (k, d):
            raise ValueError(
                f"dimension mismatch: {len(w)} weights, means {tuple(mu.shape)}, "
                f"factors {tuple(u.shape)}, diag {tuple(dg.shape)}"
            )
        if (w < 0).any() or not torch.isfinite(w).all():
            raise ValueError(f"weights must be non-negative, got {w.tolist()}")
        if abs(float(w.sum()) - 1.0) > 1e-4:
            raise ValueError(f"weights must sum to 1 (within 1e-4), got sum {float(w.sum()):.8g}")
        if not (torch.isfinite(mu).all() and torch.isfinite(u).all()):
            raise ValueError("means and factors must be finite")
        if not (torch.isfinite(dg).all() and (dg > 0).all()):
            raise ValueError("diag must be positive and finite")
        scaled = u / dg[..., None]
        cap = torch.eye(u.shape[2], dtype=_F64) + u.mT @ scaled
        chol = torch.linalg.cholesky(0.5 * (cap + cap.mT))
        for name, value in (
            ("weights", w / w.sum()),
            ("means", mu),
            ("factors", u),
            ("diag", dg),
            ("_chol", chol),
            ("_scaled", scaled),
        ):
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def rank(self) -> int:
        return self.factors.shape[2]

    def to_dense(self) -> GaussianMixture:
        """The same mixture with dense covariances U Uᵀ + diag(D) (K d² numbers)."""
        covs = self.factors @ self.factors.mT + torch.diag_embed(self.diag)
        return GaussianMixture(self.weights, self.means, 0.5 * (covs + covs.mT))

    def covariance_diagonal(self) -> torch.Tensor:
        """diag(Σ_k) = D_k + Σ_j U_kij², shape (K, d)."""
        return self.diag + (self.factors**2).sum(-1)

    def cov_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Σ_k v_k for one vector per component, v (K, d) → (K, d)."""
        return self.diag * v + (self.factors @ (self.factors.mT @ v[..., None]))[..., 0]

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        return x.to(_F64)

    def _flat(self, per_k: torch.Tensor) -> torch.Tensor:
        """(K, d, r) → (d, K·r), so that one matrix product serves every component."""
        return per_k.permute(1, 0, 2).reshape(self.dim, -1)

    def _solve(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log w_k + log N_k(x) of shape (n, K), s = M⁻¹ Uᵀ D⁻¹ (x − μ_k) of shape (n, K, r)).

        Σ_i (x_i − μ_i)² / D_i is expanded into three (n, d) × (d, K) products, so no (n, K, d)
        difference is formed (in float64 the cancellation costs ~1e-14 of the terms)."""
        x = self._check_x(x)
        n, (k, r) = len(x), (self.num_components, self.rank)
        inv = 1.0 / self.diag
        quad = (x * x) @ inv.T - 2 * x @ (self.means * inv).T + (self.means**2 * inv).sum(1)
        proj = (x @ self._flat(self._scaled)).view(n, k, r)
        proj = proj - torch.einsum("kd,kdr->kr", self.means, self._scaled)  # Uᵀ D⁻¹ (x − μ)
        z = torch.linalg.solve_triangular(self._chol, proj.permute(1, 2, 0), upper=False)
        s = torch.linalg.solve_triangular(self._chol.mT, z, upper=True)  # (K, r, n)
        half_logdet = 0.5 * self.diag.log().sum(1) + self._chol.diagonal(0, -2, -1).log().sum(1)
        maha = quad - (z**2).sum(1).T
        log_n = -0.5 * maha - half_logdet - 0.5 * self.dim * math.log(2 * math.pi)
        return log_n + self.weights.log(), s.permute(2, 0, 1)

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; μ_k, Σ_k), shape (n, K)."""
        return self._solve(x)[0]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), shape (n,)."""
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities w_k N_k(x) / p(x), shape (n, K)."""
        return torch.softmax(self.component_log_prob(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """∇_x log p(x) = −Σ_k ρ_k(x) Σ_k⁻¹ (x − μ_k), Woodbury per component, shape (n, d)."""
        log_comp, s = self._solve(x)
        resp = torch.softmax(log_comp, dim=1)  # (n, K)
        inv = 1.0 / self.diag
        diag_part = x.to(_F64) * (resp @ inv) - resp @ (self.means * inv)
        low_rank = (resp[..., None] * s).flatten(1) @ self._flat(self._scaled).T
        return low_rank - diag_part

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples μ_k + U_k z + √D_k ⊙ z', shape (n, d)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.rank, generator=generator, dtype=_F64)
        x = self.means[k] + self.diag[k].sqrt() * torch.randn(
            n, self.dim, generator=generator, dtype=_F64
        )
        for j in range(self.num_components):  # K products (n_j, r) × (r, d), no (n, d, r) gather
            rows = k == j
            x[rows] += z[rows] @ self.factors[j].T
        return x

    def noised(self, level: NoiseLevel | float) -> "LowRankMixture":
        """The law of α x0 + σ ε: factors αU, diagonal α² D + σ² (a float is a VP ᾱ)."""
        lv = NoiseLevel.of(level)
        return LowRankMixture(
            self.weights,
            lv.alpha * self.means,
            lv.alpha * self.factors,
            lv.alpha**2 * self.diag + lv.sigma**2,
        )

    def posterior_mean(
        self, x: torch.Tensor, level: NoiseLevel | float, noised: "LowRankMixture | None" = None
    ) -> torch.Tensor:
        """E[x0 | α x0 + σ ε = x]: per component μ + (αD/D') ⊙ (x − αμ) + (σ²/D') ⊙ U s' (the
        module docstring derives it), weighted by the noised responsibilities. ``noised`` may
        pass ``self.noised(level)`` when the caller already holds it."""
        lv = NoiseLevel.of(level)
        noised = self.noised(lv) if noised is None else noised
        log_comp, s = noised._solve(x)
        resp = torch.softmax(log_comp, dim=1)  # (n, K)
        gain = lv.alpha * self.diag / noised.diag  # (K, d), each pixel's scalar Wiener gain
        shrunk = (lv.sigma**2 / noised.diag)[..., None] * self.factors  # (K, d, r)
        out = resp @ (self.means - lv.alpha * gain * self.means) + x.to(_F64) * (resp @ gain)
        return out + (resp[..., None] * s).flatten(1) @ self._flat(shrunk).T


@dataclass(frozen=True, eq=False, init=False)
class DiagonalQuadratic(Quadratic):
    """r(x) = −½ Σ_i p_i (x_i − c_i)², a :class:`Quadratic` with P = diag(p) evaluated in O(d)
    per sample (the dense P stays as ``precision`` for serialisation and dense tilts)."""

    precision_diagonal: torch.Tensor

    def __init__(self, center, precision_diagonal):
        c = _vector("reward.center", center)
        p = _vector("reward.precision_diagonal", precision_diagonal, len(c))
        if (p < 0).any():
            raise ValueError("reward.precision_diagonal must be non-negative")
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "precision_diagonal", p)
        object.__setattr__(self, "precision", torch.diag(p))

    def __call__(self, x):
        d = x - self.center.to(x)
        return -0.5 * (d * d) @ self.precision_diagonal.to(x)


def _precision_diagonal(reward: Quadratic) -> torch.Tensor:
    """p of a diagonal P = diag(p), read without forming another d×d tensor."""
    p = getattr(reward, "precision_diagonal", None)
    if p is not None:
        return p
    mat = reward.precision
    if int(torch.count_nonzero(mat)) != int(torch.count_nonzero(mat.diagonal())):
        raise ValueError(
            "the low-rank tilt needs a diagonal reward precision; for a general P use "
            "LowRankMixture.to_dense() (d×d per component)"
        )
    return mat.diagonal().clone()


def _tilt_quadratic(prior: LowRankMixture, center, p, lam: float):
    """(tilted mixture, log ŵ_k, E_{tilted k}[r]) for r = −½ (x − c)ᵀ diag(p) (x − c)."""
    q = lam * p
    u, dg = prior.factors, prior.diag
    a = 1.0 + dg * q  # (K, d)
    g = torch.eye(prior.rank, dtype=_F64) + u.mT @ ((q / a)[..., None] * u)
    chol_g = torch.linalg.cholesky(0.5 * (g + g.mT))
    factors = torch.linalg.solve_triangular(chol_g, (u / a[..., None]).mT, upper=False).mT
    tilted_diag = dg / a
    delta = prior.means - center  # (K, d)
    qd = q * delta
    c_qd = tilted_diag * qd + (factors @ (factors.mT @ qd[..., None]))[..., 0]  # C Q (μ − c)
    means = prior.means - c_qd
    quad = (qd * delta).sum(1) - (qd * c_qd).sum(1)
    logdet = a.log().sum(1) + 2 * chol_g.diagonal(0, -2, -1).log().sum(1)
    log_w_hat = prior.weights.log() - 0.5 * logdet - 0.5 * quad
    w, _ = _normalise(log_w_hat)
    tilted = LowRankMixture(w, means, factors, tilted_diag)
    per_k = -0.5 * (tilted.covariance_diagonal() @ p + ((means - center) ** 2) @ p)
    return tilted, log_w_hat, per_k


def low_rank_tilt(
    prior: LowRankMixture, reward: Quadratic | Linear, lam: float
) -> tuple[LowRankMixture, float, torch.Tensor]:
    """p* ∝ p e^{λr} for a quadratic (diagonal P) or linear reward: (p* as a low-rank mixture,
    log Z_λ, E_{N(m_k, C_k)}[r] per component) — what :class:`MixtureTarget` needs."""
    if isinstance(reward, Quadratic):
        center = reward.center.to(_F64)
        tilted, log_w_hat, per_k = _tilt_quadratic(
            prior, center, _precision_diagonal(reward).to(_F64), lam
        )
    elif isinstance(reward, Linear):
        a = reward.direction.to(_F64)
        cov_a = prior.cov_matvec(a.expand(prior.num_components, -1))  # Σ_k a, (K, d)
        log_w_hat = prior.weights.log() + lam * prior.means @ a + 0.5 * lam**2 * (cov_a @ a)
        w, _ = _normalise(log_w_hat)
        tilted = LowRankMixture(w, prior.means + lam * cov_a, prior.factors, prior.diag)
        per_k = tilted.means @ a
    else:
        raise ValueError(f"no closed-form low-rank tilt for reward {type(reward).__name__}")
    return tilted, float(torch.logsumexp(log_w_hat, 0)), per_k
