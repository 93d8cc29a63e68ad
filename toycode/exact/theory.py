"""Exact results for best-of-N and blockwise argmax selection (design notes §8).

For N i.i.d. base samples and a reward whose distribution under p has no atoms, the argmax
best-of-N output has density q_N(x) = N F(r(x))^{N−1} p(x), F the reward's CDF under p. So

    KL(q_N‖p) = log N − (N − 1)/N            (F(r(X)) ~ Beta(N, 1) under q_N)
    P(r(X_bon) > r(X_base)) = N/(N + 1)      (X_base an independent base sample)

and blockwise argmax with K selections of N candidates obeys KL(q‖p) ≤ K·(log N − (N − 1)/N)
(chain rule plus data processing). Beirami et al. (2024) state the first as a bound; it is
attained without ties. These give the k-NN KL estimator of :mod:`toycode.exact.metrics` an
exact reference: :func:`knn_kl_bias` measures its bias on exact best-of-N samples.
"""

from __future__ import annotations

import math

import torch

from ..utils.checks import check_range
from .metrics import knn_entropy, mean_se

__all__ = ["bon_kl", "bon_win_probability", "blockwise_kl_bound", "exact_best_of_n", "knn_kl_bias"]


def bon_kl(num_candidates: int) -> float:
    """KL(q_N‖p) = log N − (N − 1)/N of argmax best-of-N (continuous reward)."""
    check_range("num_candidates", num_candidates, 1, None)
    return math.log(num_candidates) - (num_candidates - 1) / num_candidates


def bon_win_probability(num_candidates: int) -> float:
    """P(a best-of-N sample's reward exceeds an independent base sample's) = N/(N + 1)."""
    check_range("num_candidates", num_candidates, 1, None)
    return num_candidates / (num_candidates + 1)


def blockwise_kl_bound(num_candidates: int, selections: int) -> float:
    """K·(log N − (N − 1)/N): the KL bound of blockwise argmax with K selections."""
    check_range("selections", selections, 1, None)
    return selections * bon_kl(num_candidates)


def exact_best_of_n(
    prior, reward, n: int, num_candidates: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """n exact argmax best-of-N samples: N exact prior draws per output, the best kept."""
    check_range("n", n, 1, None)
    check_range("num_candidates", num_candidates, 1, None)
    x = prior.sample(n * num_candidates, generator).view(n, num_candidates, -1)
    best = reward(x.reshape(n * num_candidates, -1)).view(n, num_candidates).argmax(1)
    return x[torch.arange(n), best]


def knn_kl_bias(
    prior,
    reward,
    n: int,
    num_candidates=(1, 2, 4, 16),
    replicates: int = 5,
    generator: torch.Generator | None = None,
) -> list[dict]:
    """The k-NN estimate of KL(q_N‖p) on exact best-of-N samples of size n, against the exact
    log N − (N − 1)/N: mean and standard error over ``replicates`` samples, and the bias."""
    check_range("replicates", replicates, 2, None)
    rows = []
    for big_n in num_candidates:
        estimates = []
        for _ in range(replicates):
            x = exact_best_of_n(prior, reward, n, big_n, generator)
            estimates.append(-knn_entropy(x) - float(prior.log_prob(x).mean()))
        mean, se = mean_se(estimates)
        exact = bon_kl(big_n)
        rows.append(
            {"N": big_n, "n": n, "exact": exact, "estimate": mean, "se": se, "bias": mean - exact}
        )
    return rows
