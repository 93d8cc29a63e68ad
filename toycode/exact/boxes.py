"""Mixtures of uniform boxes in any dimension, float64: the checkerboard prior and its noising.

p(x) = Σ_k w_k U(x; [l_k, u_k]), each box a product of intervals of centre c_kd and width
ω_kd. Under x_t = α x0 + σ ε every coordinate of every box noises independently, so with

    m_kd = (x_d − α c_kd) / σ,     h_kd = α ω_kd / (2σ)

(the standardised distance to the noised box's centre and its half-width) the closed forms are

    noised density    p_t(x) = Σ_k w_k Π_d M(m_kd, h_kd) / σ,
                      M(m, h) = (Φ(m + h) − Φ(m − h)) / (2h)     (the mean of φ over [m − h, m + h];
                      M(m, 0) = φ(m): at α = 0 the marginal is N(0, σ² I))
    score             ∂_d log p_t,k = −m Q / σ,   Q(m, h) = sinh(mh)/(mh) · e^{−h²/2} φ(m) / M(m, h)
                      (from φ(m + h) − φ(m − h) = −2 φ(m) e^{−h²/2} sinh(mh), exactly)
    exact denoiser    E[x0_d | x_t, k] = c_kd + (σ m_kd / α)(1 − Q_kd)
                      — the mean of the normal N(x_d/α, σ²/α²) truncated to [l_kd, u_kd], and
                      Tweedie's (x + σ² ∇ log p_t,k)/α; it tends to c_kd as α → 0
    E[x0 | x_t]       Σ_k ρ_k(x_t) E[x0 | x_t, k],  ρ_k the noised responsibilities
    x0 | x_t          box k ~ ρ(x_t), then each coordinate N(x_d/α, σ²/α²) truncated to the box
                      (:func:`truncated_normal`: exact draws in the body and in both far tails).

Everything is evaluated in log space: log M by log Φ differences (:func:`log_ndtr_diff`) away
from h = 0 and by its Taylor series in h near it, so densities, scores and denoisers stay finite
and accurate from α = 0 to σ = 0 and far into the Gaussian tails.

Used for the checkerboard of Dandapanthula & Boffi 2026 (arXiv 2606.02884); see
``toycode/exact/builtin/checkerboard.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.diffusion import NoiseLevel

__all__ = ["BoxMixture", "NoisedBoxMixture", "log_ndtr_diff", "truncated_normal"]

_F64 = torch.float64
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_SERIES = 3e-3  # below this h(1 + |m|), the Taylor series of log M (truncation < 1e-17)


def log_ndtr_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Φ(a) − Φ(b)) for a > b, accurate in both tails (arguments reflected to ≤ ~0)."""
    flip = b > 0  # Φ(a) − Φ(b) = Φ(−b) − Φ(−a)
    hi = torch.where(flip, -b, a)
    lo = torch.where(flip, -a, b)
    la, lb = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return la + torch.log(-torch.expm1((lb - la).clamp(max=0)))


def _log_phi(m: torch.Tensor) -> torch.Tensor:
    return -0.5 * m * m - _LOG_SQRT_2PI


def _log_mean_phi(m: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """log M(m, h) = log((Φ(m + h) − Φ(m − h)) / 2h), finite at h = 0 (log φ(m)).

    Both branches are evaluated on safe inputs, so autograd through the unused one sees no
    0/0 (the two-``where`` idiom)."""
    small = h * (1 + m.abs()) < _SERIES
    m2, h2 = m * m, h * h
    series = _log_phi(m) + torch.log1p((m2 - 1) * h2 / 6 + (m2 * m2 - 6 * m2 + 3) * h2 * h2 / 120)
    h_safe = torch.where(small, torch.ones_like(h), h)
    direct = log_ndtr_diff(m + h_safe, m - h_safe) - torch.log(2 * h_safe)
    return torch.where(small, series, direct)


def _log_sinhc(y: torch.Tensor) -> torch.Tensor:
    """log(sinh(y) / y), even in y, overflow-free."""
    a = y.abs()
    small = a < 1e-3
    a_safe = torch.where(small, torch.ones_like(a), a)
    big = a_safe - torch.log(2 * a_safe) + torch.log(-torch.expm1(-2 * a_safe))
    return torch.where(small, a * a / 6 - a**4 / 180, big)


_TAIL = 5.0  # beyond this standardised end, truncated normals are drawn by exponential rejection


def _right_tail(a: torch.Tensor, b: torch.Tensor, generator) -> torch.Tensor:
    """z ~ N(0, 1) restricted to [a, b], a ≥ _TAIL: z = a + y, y from the exponential
    Exp(a) truncated to [0, b − a] (exact inverse CDF), kept with probability e^{−y²/2}
    (acceptance > 0.96 for a ≥ 5; Robert 1995)."""
    out = torch.empty_like(a)
    todo = torch.arange(len(a))
    while len(todo):
        at, length = a[todo], b[todo] - a[todo]
        u = torch.rand(len(todo), generator=generator, dtype=_F64)
        y = -torch.log1p(u * torch.expm1(-at * length)) / at
        keep = torch.rand(len(todo), generator=generator, dtype=_F64).log() < -0.5 * y * y
        out[todo[keep]] = torch.minimum(at[keep] + y[keep], b[todo][keep])  # rounding
        todo = todo[~keep]
    return out


def truncated_normal(
    a: torch.Tensor, b: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Exact draws of N(0, 1) restricted to [a, b], elementwise (float64, a < b): the inverse
    CDF on the side of 0 where Φ keeps its digits, exponential rejection in the far tails."""
    a, b = torch.broadcast_tensors(a.to(_F64), b.to(_F64))
    shape, a, b = a.shape, a.reshape(-1), b.reshape(-1)
    flip = a > 0  # reflect so the interval's lower end is ≤ 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    tail = hi < -_TAIL  # the whole interval far in the left tail
    z = torch.empty_like(lo)
    if tail.any():
        z[tail] = -_right_tail(-hi[tail], -lo[tail], generator)
    body = ~tail
    if body.any():
        p_lo, p_hi = torch.special.ndtr(lo[body]), torch.special.ndtr(hi[body])
        u = torch.rand(int(body.sum()), generator=generator, dtype=_F64)
        z[body] = torch.special.ndtri(p_lo + u * (p_hi - p_lo)).clamp(lo[body], hi[body])
    return torch.where(flip, -z, z).reshape(shape)


@dataclass(frozen=True)
class BoxMixture:
    """p(x) = Σ_k w_k U(x; [low_k, high_k]); weights (K,), low and high (K, d), float64.

    The boxes may touch or overlap; each is a product of intervals low_kd < high_kd.
    """

    weights: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    def __post_init__(self):
        w = torch.as_tensor(self.weights, dtype=_F64)
        lo = torch.as_tensor(self.low, dtype=_F64)
        hi = torch.as_tensor(self.high, dtype=_F64)
        if w.ndim != 1 or lo.ndim != 2 or hi.shape != lo.shape or len(w) != len(lo):
            raise ValueError(
                f"weights, low, high must be (K,), (K, d), (K, d); got "
                f"{tuple(w.shape)}, {tuple(lo.shape)}, {tuple(hi.shape)}"
            )
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            raise ValueError("low and high must be finite")
        if (lo >= hi).any():
            k = int(torch.nonzero((lo >= hi).any(1))[0])
            raise ValueError(
                f"box {k} needs low < high in every coordinate, got "
                f"low={lo[k].tolist()}, high={hi[k].tolist()}"
            )
        if (w < 0).any() or not torch.isfinite(w).all():
            raise ValueError(f"weights must be non-negative, got {w.tolist()}")
        if abs(float(w.sum()) - 1.0) > 1e-4:
            raise ValueError(f"weights must sum to 1 (within 1e-4), got sum {float(w.sum()):.8g}")
        for name, value in (("weights", w / w.sum()), ("low", lo), ("high", hi)):
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        return self.low.shape[1]

    @property
    def num_components(self) -> int:
        return self.low.shape[0]

    @property
    def centers(self) -> torch.Tensor:
        """Box centres c_k, (K, d)."""
        return 0.5 * (self.low + self.high)

    @property
    def widths(self) -> torch.Tensor:
        """Box side lengths ω_k, (K, d)."""
        return self.high - self.low

    @property
    def mean(self) -> torch.Tensor:
        """E_p[x], (d,)."""
        return self.weights @ self.centers

    @property
    def covariance(self) -> torch.Tensor:
        """Cov_p[x] = Σ_k w_k (diag(ω_k²/12) + (c_k − μ)(c_k − μ)ᵀ), (d, d)."""
        diff = self.centers - self.mean
        spread = torch.diag_embed(self.widths**2 / 12) + diff[:, :, None] * diff[:, None, :]
        return (self.weights[:, None, None] * spread).sum(0)

    def to_dict(self) -> dict:
        """The ``prior`` field of a problem file."""
        return {
            "type": "uniform_boxes",
            "weights": self.weights.tolist(),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
        }

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        return x.to(_F64)

    def _box_log_density(self) -> torch.Tensor:
        """log w_k − log vol_k, (K,)."""
        return self.weights.log() - self.widths.log().sum(1)

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log U_k(x): log w_k − log vol_k inside box k, −∞ outside; (n, K)."""
        x = self._check_x(x)[:, None, :]
        inside = ((x >= self.low) & (x <= self.high)).all(-1)
        return torch.where(inside, self._box_log_density(), -math.inf)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), −∞ off the support, shape (n,)."""
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Which box x belongs to, (n, K): inside the support the posterior w_k U_k(x) / p(x);
        off it, the nearest box (Euclidean distance; ties shared in proportion to w_k / vol_k),
        which is the σ → 0 limit of the noised responsibilities. So the mean responsibility of
        any sample is a per-box mass, and mode masses stay defined for a sample that strays off
        the support."""
        x = self._check_x(x)
        dist2 = 0
        for d in range(self.dim):  # (n, K) per coordinate: the memory of one, not of d
            gap = (self.low[:, d] - x[:, d, None]).clamp(min=0)
            gap = gap + (x[:, d, None] - self.high[:, d]).clamp(min=0)
            dist2 = dist2 + gap * gap  # 0 inside box k
        nearest = dist2 == dist2.min(1, keepdim=True).values
        return torch.softmax(torch.where(nearest, self._box_log_density(), -math.inf), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """∇ log p: 0 inside the support, NaN off it (log p = −∞ there); shape (n, d)."""
        inside = torch.isfinite(self.log_prob(x))
        return torch.where(inside[:, None], 0.0, math.nan).to(_F64).expand(len(x), self.dim)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples, shape (n, d): a box by weight, then a uniform point in it."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        u = torch.rand(n, self.dim, generator=generator, dtype=_F64)
        return self.low[k] + u * self.widths[k]

    def noised(self, level: NoiseLevel | float) -> "BoxMixture | NoisedBoxMixture":
        """The law of α x0 + σ ε for x0 ~ self (a float is a variance-preserving ᾱ): the boxes
        scaled by α when σ = 0, else a :class:`NoisedBoxMixture`."""
        lv = NoiseLevel.of(level)
        if lv.clean:
            return BoxMixture(self.weights, lv.alpha * self.low, lv.alpha * self.high)
        return NoisedBoxMixture(self, lv)

    def posterior_mean(
        self,
        x: torch.Tensor,
        level: NoiseLevel | float,
        noised: "BoxMixture | NoisedBoxMixture | None" = None,
    ) -> torch.Tensor:
        """E[x0 | α x0 + σ ε = x] for x0 ~ self: Σ_k ρ_k(x) E[x0 | x, k], each a product of
        truncated-normal means; x/α at σ = 0 and the prior mean at α = 0. ``noised`` may pass
        ``self.noised(level)`` when the caller already holds it."""
        lv = NoiseLevel.of(level)
        x = self._check_x(x)
        if lv.clean:
            return x / lv.alpha
        if lv.alpha == 0:  # x_t says nothing about x0; 0·x keeps autograd's graph
            return self.mean + 0 * x
        noised = self.noised(lv) if noised is None else noised
        return noised.posterior_mean(x)

    def posterior_sample(
        self,
        x: torch.Tensor,
        level: NoiseLevel | float,
        samples: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``samples`` exact draws of x0 | α x0 + σ ε = x per row of x, (n, samples, d): a box
        k ~ ρ(x), then each coordinate from N(x_d/α, σ²/α²) truncated to box k's interval
        (the prior itself at α = 0, the point x/α at σ = 0)."""
        lv = NoiseLevel.of(level)
        x = self._check_x(x)
        n, d = x.shape
        if lv.clean:
            return (x / lv.alpha)[:, None, :].expand(n, samples, d).clone()
        resp = self.weights.expand(n, -1) if lv.alpha == 0 else self.noised(lv).responsibilities(x)
        k = torch.multinomial(resp, samples, replacement=True, generator=generator)  # (n, M)
        low, width = self.low[k], self.widths[k]  # (n, M, d)
        if lv.alpha == 0:
            u = torch.rand(n, samples, d, generator=generator, dtype=_F64)
            return low + u * width
        mu, s = (x / lv.alpha)[:, None, :], lv.sigma / lv.alpha
        z = truncated_normal((low - mu) / s, (low + width - mu) / s, generator)
        return (mu + s * z).clamp(low, low + width)  # rounding may step a hair outside

    def cell_masses(self, edges: torch.Tensor) -> torch.Tensor:
        """Exact prior mass of every cell of the 2-D grid with these edges along both axes:
        (G, G) for G + 1 edges, Σ_k w_k Π_d |cell_d ∩ box_kd| / ω_kd."""
        if self.dim != 2:
            raise ValueError(f"cell masses need a 2-D prior, got dimension {self.dim}")
        e = torch.as_tensor(edges, dtype=_F64)
        lo, hi = e[:-1], e[1:]

        def overlap(d: int) -> torch.Tensor:  # (K, G)
            a = torch.maximum(lo[None], self.low[:, d, None])
            b = torch.minimum(hi[None], self.high[:, d, None])
            return (b - a).clamp(min=0) / self.widths[:, d, None]

        return torch.einsum("k,ki,kj->ij", self.weights, overlap(0), overlap(1))


class NoisedBoxMixture:
    """The law of α x0 + σ ε, x0 ~ a :class:`BoxMixture`, σ > 0: density, responsibilities,
    score and denoiser in closed form (module docstring).

    Coordinates factorise, so each is evaluated once per distinct interval of that coordinate
    and gathered to the boxes (the checkerboard's 18 squares have 6 distinct intervals per axis).
    """

    def __init__(self, prior: BoxMixture, level: NoiseLevel):
        if level.clean:
            raise ValueError("a noised box mixture needs sigma > 0")
        self.prior, self.level = prior, level
        self.weights = prior.weights
        a, s = level.alpha, level.sigma
        self._axes = []  # per coordinate: interval centres c_u, α c_u, h_u, box → interval
        for d in range(prior.dim):
            ends = torch.stack([prior.low[:, d], prior.high[:, d]], 1)
            pairs, box_to_interval = torch.unique(ends, dim=0, return_inverse=True)
            centre, width = pairs.mean(1), pairs[:, 1] - pairs[:, 0]
            self._axes.append((centre, a * centre, a * width / (2 * s), box_to_interval))

    @property
    def dim(self) -> int:
        return self.prior.dim

    @property
    def num_components(self) -> int:
        return self.prior.num_components

    def _parts(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per coordinate, (m, log M(m, h)) on its distinct intervals, each (n, U_d)."""
        x = self.prior._check_x(x)
        out = []
        for d, (_, a_centre, half, _) in enumerate(self._axes):
            m = (x[:, d, None] - a_centre) / self.level.sigma
            out.append((m, _log_mean_phi(m, half)))
        return out

    def _log_joint(self, parts) -> torch.Tensor:
        """log w_k + log p_t(x | k), (n, K)."""
        total = sum(log_m[:, axis[3]] for (_, log_m), axis in zip(parts, self._axes))
        return self.weights.log() + total - self.dim * math.log(self.level.sigma)

    def _interval_resp(self, resp: torch.Tensor, d: int) -> torch.Tensor:
        """Σ of ρ_k over the boxes on each distinct interval of coordinate d, (n, U_d)."""
        index = self._axes[d][3]
        out = resp.new_zeros(len(resp), int(index.max()) + 1)
        return out.index_add(1, index, resp)

    def _log_q(self, parts, d: int) -> torch.Tensor:
        """log Q(m, h) on coordinate d's intervals, (n, U_d)."""
        m, log_m = parts[d]
        h = self._axes[d][2]
        return _log_sinhc(m * h) - 0.5 * h * h + _log_phi(m) - log_m

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log p_t(x | k), (n, K)."""
        return self._log_joint(self._parts(x))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p_t(x), shape (n,)."""
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """ρ_k(x) = w_k p_t(x | k) / p_t(x), (n, K)."""
        return torch.softmax(self.component_log_prob(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """∇ log p_t(x) = Σ_k ρ_k ∇ log p_t(x | k), ∂_d log p_t(x | k) = −m_kd Q_kd / σ; (n, d)."""
        parts = self._parts(x)
        resp = torch.softmax(self._log_joint(parts), dim=1)
        cols = []
        for d, (m, _) in enumerate(parts):
            per_interval = -m * self._log_q(parts, d).exp() / self.level.sigma
            cols.append((self._interval_resp(resp, d) * per_interval).sum(1))
        return torch.stack(cols, 1)

    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_t = x] = Σ_k ρ_k (c_k + (σ m_k / α)(1 − Q_k)), (n, d); needs α > 0."""
        lv = self.level
        if lv.alpha == 0:
            raise ValueError("the noised posterior mean needs alpha > 0 (at alpha = 0 it is E[x0])")
        parts = self._parts(x)
        resp = torch.softmax(self._log_joint(parts), dim=1)
        cols = []
        for d, (m, _) in enumerate(parts):
            one_minus_q = -torch.expm1(self._log_q(parts, d))
            per_interval = self._axes[d][0] + (lv.sigma / lv.alpha) * m * one_minus_q
            cols.append((self._interval_resp(resp, d) * per_interval).sum(1))
        return torch.stack(cols, 1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples α x0 + σ ε, shape (n, d)."""
        x0 = self.prior.sample(n, generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=_F64)
        return self.level.alpha * x0 + self.level.sigma * eps
