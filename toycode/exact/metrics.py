"""Sample-quality metrics against an exact target, each with its estimator's noise floor.

- reward mean ± standard error;
- MMD² (RBF kernel, bandwidth = median pairwise distance of the *target* sample, so every sampler
  is measured with the same kernel), as a V-statistic: its value for two independent exact
  samples of the same size is positive — the noise floor;
- KL(q‖p*) ≈ −Ĥ(q) − mean log p*(x), Ĥ the Kozachenko–Leonenko k-NN entropy estimate, and the
  same against the base p (divergence from the pretrained model). A sample with repeated points
  (SMC's resampling copies particles) is an atomic distribution: its entropy is −∞ and both KLs
  are reported as +∞ rather than as a finite number the estimator cannot support; the share of
  distinct samples is reported beside it;
- mode masses: the mean prior responsibility of each component, whose exact value under p* is
  the target's mode weight w*_k, and the total-variation distance between the two.

The distances published toy tables report, so that they can be set beside toycode's:

- ``sw2``: the sliced Wasserstein distance SW₂² = E_θ W₂²(θᵀx, θᵀy), *squared* (like ``mmd2``),
  over a fixed, seeded set of :data:`PROJECTIONS` directions (stacked random orthonormal frames,
  so that in 2-D the directions' mean of cos²(θ, δ) is exactly 1/d for every δ: a mean shift δ
  adds exactly ‖δ‖²/d). Each 1-D W₂² is exact between the two empirical laws (sorted samples;
  merged quantile functions when the sizes differ);
- ``w2``: the exact W₂² between the two empirical samples (an optimal assignment,
  ``scipy.optimize.linear_sum_assignment``, on squared Euclidean costs), again squared;
- ``emd``: the exact W₁ ("earth mover's distance") between the same two samples, Euclidean
  costs. This is the number the DAS paper's toy tables call EMD (Kim et al. 2025, "Test-time
  alignment of diffusion models without reward over-optimization", arXiv 2501.05803; their
  notebooks compute ``scipy.stats.wasserstein_distance_nd``, W₁ with Euclidean ground cost,
  between 500 points drawn with replacement from each sample — toycode uses every point, up
  to :data:`MAX_ASSIGNMENT` of each, so its floor is lower than theirs at equal n);
- ``cov_trace``: the trace of the sample covariance (unbiased), a diversity number; beside it
  ``cov_trace_exact``, the target's own (closed form for a mixture target, quadrature on the
  grid target's cells), and ``cov_trace_err`` = |cov_trace − cov_trace_exact|.

The assignments cost O(n³); above :data:`MAX_ASSIGNMENT` points (or when the two sizes differ)
both samples are cut to a common size by a fixed seeded subsample, and the floor, measured at
the same sizes, carries the same cut. Every distance is ≥ 0 and, for two independent exact
samples, about its floor, not 0.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

__all__ = [
    "mean_se",
    "mmd2",
    "knn_entropy",
    "evaluate",
    "noise_floor",
    "median_bandwidth",
    "projections",
    "sliced_w2",
    "assignment_distances",
    "cov_trace",
    "target_cov_trace",
    "PROJECTIONS",
    "MAX_ASSIGNMENT",
    "FLOORED",
]

PROJECTIONS = 256
"""Directions of the sliced Wasserstein distance (fixed: seed 0)."""

MAX_ASSIGNMENT = 1024
"""The most points of each sample that the exact assignments (W₂², W₁) use."""

FLOORED = ("mmd2", "sw2", "w2", "emd", "cov_trace_err")
"""The metrics of :func:`evaluate` that are distances to p*, each with a positive noise floor."""


def mean_se(values) -> tuple[float, float]:
    """Sample mean and its standard error."""
    v = torch.as_tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def _pairwise(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x.double(), y.double())


def median_bandwidth(y: torch.Tensor, max_points: int = 2000) -> float:
    """Median pairwise distance (the median heuristic), from at most max_points points."""
    y = y[:max_points].double()
    d = _pairwise(y, y)
    return float(d[torch.triu(torch.ones_like(d, dtype=torch.bool), 1)].median())


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> float:
    """Biased (V-statistic) MMD² with kernel exp(−‖a − b‖² / (2 bandwidth²))."""

    def k(a, b):
        return torch.exp(-(_pairwise(a, b) ** 2) / (2 * bandwidth**2)).mean()

    return float(k(x, x) + k(y, y) - 2 * k(x, y))


@functools.lru_cache(maxsize=16)
def _frames(d: int, count: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    rows, have = [], 0
    while have < count:
        g = torch.randn(d, min(d, count - have), generator=gen, dtype=torch.float64)
        q, r = torch.linalg.qr(g)
        rows.append((q * torch.sign(torch.diagonal(r))).T)  # the sign fix makes q Haar
        have += rows[-1].shape[0]
    return torch.cat(rows)


def projections(d: int, count: int = PROJECTIONS, seed: int = 0) -> torch.Tensor:
    """``count`` unit directions in R^d, shape (count, d), float64, the same for every call:
    consecutive blocks of min(d, count) are orthonormal frames with a uniformly random (Haar)
    orientation, so each direction is uniform on the sphere and, where d divides ``count``,
    Σ_θ (θᵀδ)² = (count/d) ‖δ‖² for every δ."""
    if d < 1 or count < 1:
        raise ValueError(f"projections need d ≥ 1 and count ≥ 1, got d={d}, count={count}")
    return _frames(int(d), int(count), int(seed)).clone()


def _w2_1d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact W₂² between the uniform empirical laws of each row of a (P, n) and b (P, m):
    ∫₀¹ (F⁻¹(u) − G⁻¹(u))² du with both quantile functions steps, integrated piece by piece
    over the merged breakpoints {i/n} ∪ {j/m}. (NumPy: its sort is ~10× torch's here.)"""
    a, b = np.sort(a, -1), np.sort(b, -1)
    n, m = a.shape[-1], b.shape[-1]
    if n == m:
        return ((a - b) ** 2).mean(-1)
    # k/n is correctly rounded, so equal fractions give one breakpoint
    ends = np.unique(np.concatenate([np.arange(1, n + 1) / n, np.arange(1, m + 1) / m]))
    widths = np.diff(ends, prepend=0.0)
    mids = ends - widths / 2
    i = np.minimum((mids * n).astype(np.int64), n - 1)
    j = np.minimum((mids * m).astype(np.int64), m - 1)
    return (((a[:, i] - b[:, j]) ** 2) * widths).sum(-1)


def sliced_w2(x: torch.Tensor, y: torch.Tensor, count: int = PROJECTIONS, seed: int = 0) -> float:
    """Sliced Wasserstein SW₂² = mean over :func:`projections` θ of W₂²(θᵀx, θᵀy), squared
    (Rabin et al. 2011; Bonneel et al. 2015), each 1-D term exact between the empirical laws."""
    x, y = x.double().reshape(len(x), -1), y.double().reshape(len(y), -1)
    theta = projections(x.shape[1], count, seed)
    return float(_w2_1d((theta @ x.T).numpy(), (theta @ y.T).numpy()).mean())


def _common_size(x: torch.Tensor, y: torch.Tensor, max_points: int):
    """Both samples cut to one size k = min(n, m, max_points) by a fixed seeded subsample
    (none where a sample already has k points)."""
    k = min(len(x), len(y), max_points)
    gen = torch.Generator().manual_seed(0)
    if len(x) > k:
        x = x[torch.randperm(len(x), generator=gen)[:k]]
    if len(y) > k:
        y = y[torch.randperm(len(y), generator=gen)[:k]]
    return x, y


def assignment_distances(
    x: torch.Tensor, y: torch.Tensor, max_points: int = MAX_ASSIGNMENT
) -> tuple[float, float]:
    """(W₂², W₁) between the empirical laws of x and y, exact: with equal sizes n the optimal
    transport plan is a permutation (Birkhoff), found by ``linear_sum_assignment`` on the
    squared and on the plain Euclidean costs. Samples are first cut to a common size of at most
    ``max_points`` (see the module's note)."""
    x, y = _common_size(x.double().reshape(len(x), -1), y.double().reshape(len(y), -1), max_points)
    cost = _pairwise(x, y).numpy()
    sq = cost**2
    rows, cols = linear_sum_assignment(sq)
    w2 = float(sq[rows, cols].mean())
    rows, cols = linear_sum_assignment(cost)
    return w2, float(cost[rows, cols].mean())


def cov_trace(x: torch.Tensor) -> float:
    """tr Ĉov(x): the sum of the coordinates' unbiased sample variances."""
    x = x.double().reshape(len(x), -1)
    return float(x.var(0).sum()) if len(x) > 1 else float("nan")


def _mixture_cov_trace(weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> float:
    """tr Cov of Σ_k w_k N(μ_k, Σ_k) = Σ_k w_k (tr Σ_k + ‖μ_k‖²) − ‖Σ_k w_k μ_k‖²."""
    second = weights @ (torch.diagonal(covs, dim1=-2, dim2=-1).sum(-1) + (means**2).sum(-1))
    return float(second - ((weights @ means) ** 2).sum())


def target_cov_trace(target) -> float:
    """tr Cov_{p*}(x), exact: in closed form for a target that is a Gaussian mixture itself
    (``target.mixture``: quadratic and linear rewards) or at λ = 0 (the prior), by quadrature
    over the grid target's cells (``target.mass`` on ``target.centers``², the same cells its
    log Z and E[r] come from); a target that brings its own ``cov_trace`` is asked for it. NaN
    where none of these applies."""
    own = getattr(target, "cov_trace", None)
    if own is not None:
        return float(own() if callable(own) else own)
    mixture = getattr(target, "mixture", None)
    if mixture is None and getattr(target, "lam", None) == 0:
        mixture = getattr(target, "prior", None)
    if mixture is not None and hasattr(mixture, "covs"):
        return _mixture_cov_trace(mixture.weights, mixture.means, mixture.covs)
    mass, centers = getattr(target, "mass", None), getattr(target, "centers", None)
    if mass is not None and centers is not None:
        gx, gy = torch.meshgrid(centers, centers, indexing="ij")
        pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
        mean = mass @ pts
        return float(mass @ (pts**2).sum(1) - (mean**2).sum())
    return float("nan")


def knn_entropy(x: torch.Tensor, k: int = 3) -> float:
    """Kozachenko–Leonenko entropy estimate ψ(n) − ψ(k) + log V_d + (d/n) Σ log ε_k."""
    pts = x.detach().double().reshape(len(x), -1).numpy()
    n, d = pts.shape
    if len(np.unique(pts, axis=0)) < n:  # atoms: the differential entropy is −∞
        return float("-inf")
    dist, _ = cKDTree(pts).query(pts, k=k + 1)
    eps = np.maximum(dist[:, -1], 1e-300)
    log_vd = (d / 2) * math.log(math.pi) - gammaln(d / 2 + 1)
    return float(digamma(n) - digamma(k) + log_vd + d * np.log(eps).mean())


def evaluate(
    x: torch.Tensor,
    rewards: torch.Tensor,
    target,
    reference: torch.Tensor,
    bandwidth: float | None = None,
    *,
    cov_trace_exact: float | None = None,
) -> dict:
    """All metrics of samples x (with their rewards) against the target and an exact sample.

    ``cov_trace_exact`` passes :func:`target_cov_trace` when the caller holds it (a grid
    target's quadrature is not redone for every row)."""
    x = x.detach().double().reshape(len(x), -1)
    reference = reference.detach().double().reshape(len(reference), -1)
    bandwidth = bandwidth or median_bandwidth(reference)
    entropy = knn_entropy(x)
    r_mean, r_se = mean_se(rewards)
    masses = target.prior.responsibilities(x).mean(0)
    w2, emd = assignment_distances(x, reference)
    trace = cov_trace(x)
    exact_trace = target_cov_trace(target) if cov_trace_exact is None else cov_trace_exact
    return {
        "distinct": len(torch.unique(x, dim=0)) / len(x),
        "reward_mean": r_mean,
        "reward_se": r_se,
        "mmd2": mmd2(x, reference, bandwidth),
        "sw2": sliced_w2(x, reference),
        "w2": w2,
        "emd": emd,
        "cov_trace": trace,
        "cov_trace_exact": exact_trace,
        "cov_trace_err": abs(trace - exact_trace),
        "kl_to_target": -entropy - float(target.log_prob(x).mean()),
        "kl_to_base": -entropy - float(target.prior.log_prob(x).mean()),
        "mode_masses": masses.tolist(),
        "mode_tv": 0.5 * float((masses - target.mode_weights).abs().sum()),
    }


def noise_floor(
    target,
    n: int,
    generator: torch.Generator | None = None,
    reference: torch.Tensor | None = None,
    replicates: int = 5,
) -> dict:
    """The metrics of exact samples of size n against an independent exact reference.

    Numeric metrics are averaged over ``replicates`` independent exact samples, so the floor
    is the estimator's expected value under a perfect sampler rather than one noisy draw (for
    the distances of :data:`FLOORED`, the value an exact sampler is measured against).
    """
    reference = target.sample(n, generator) if reference is None else reference
    bandwidth = median_bandwidth(reference)
    exact_trace = target_cov_trace(target)
    runs = []
    for _ in range(replicates):
        exact = target.sample(n, generator)
        runs.append(
            evaluate(
                exact,
                target.reward(exact),
                target,
                reference,
                bandwidth,
                cov_trace_exact=exact_trace,
            )
        )
    return {
        key: (
            sum(r[key] for r in runs) / replicates
            if isinstance(runs[0][key], float)
            else runs[0][key]
        )
        for key in runs[0]
    }
