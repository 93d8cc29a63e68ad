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
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

__all__ = ["mean_se", "mmd2", "knn_entropy", "evaluate", "noise_floor", "median_bandwidth"]


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
) -> dict:
    """All metrics of samples x (with their rewards) against the target and an exact sample."""
    x = x.detach().double().reshape(len(x), -1)
    bandwidth = bandwidth or median_bandwidth(reference)
    entropy = knn_entropy(x)
    r_mean, r_se = mean_se(rewards)
    masses = target.prior.responsibilities(x).mean(0)
    return {
        "distinct": len(torch.unique(x, dim=0)) / len(x),
        "reward_mean": r_mean,
        "reward_se": r_se,
        "mmd2": mmd2(x, reference, bandwidth),
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
    is the estimator's expected value under a perfect sampler rather than one noisy draw.
    """
    reference = target.sample(n, generator) if reference is None else reference
    bandwidth = median_bandwidth(reference)
    runs = []
    for _ in range(replicates):
        exact = target.sample(n, generator)
        runs.append(evaluate(exact, target.reward(exact), target, reference, bandwidth))
    return {
        key: (
            sum(r[key] for r in runs) / replicates
            if isinstance(runs[0][key], float)
            else runs[0][key]
        )
        for key in runs[0]
    }
