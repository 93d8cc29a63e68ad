"""Exact best-of-N results, checked by Monte Carlo and used to calibrate the k-NN KL estimator."""

import math

import pytest
import torch

from toycode.exact.metrics import mean_se
from toycode.exact.theory import (
    blockwise_kl_bound,
    bon_kl,
    bon_win_probability,
    exact_best_of_n,
    knn_kl_bias,
)
from toycode.experiments import api


def test_closed_forms():
    assert bon_kl(1) == 0 and bon_kl(4) == pytest.approx(math.log(4) - 0.75)
    assert bon_win_probability(1) == 0.5 and bon_win_probability(9) == 0.9
    assert blockwise_kl_bound(4, 3) == pytest.approx(3 * bon_kl(4))
    with pytest.raises(ValueError, match="num_candidates"):
        bon_kl(0)


@pytest.mark.parametrize("N", [2, 8])
def test_kl_formula_by_monte_carlo_on_the_reward_cdf(between, N):
    """log(q_N/p)(x) = log N + (N − 1) log F(r(x)); its mean under exact best-of-N samples,
    with F the empirical CDF of 200k base rewards, matches log N − (N − 1)/N within 4 s.e."""
    gen = torch.Generator().manual_seed(0)
    base = torch.sort(between.reward(between.prior.sample(200_000, gen))).values
    x = exact_best_of_n(between.prior, between.reward, 20_000, N, gen)
    cdf = (torch.searchsorted(base, between.reward(x)).double() + 0.5) / (len(base) + 1)
    mean, se = mean_se(math.log(N) + (N - 1) * cdf.log())
    assert abs(mean - bon_kl(N)) < 4 * se + 2e-3  # + the empirical CDF's O(1/√200k) error
    # a wrong selection rule (the second best) is far from the formula
    wrong = torch.stack([between.prior.sample(N, gen) for _ in range(2000)])
    r = between.reward(wrong.view(-1, 2)).view(2000, N)
    second = wrong[torch.arange(2000), r.argsort(1)[:, -2]]
    c2 = (torch.searchsorted(base, between.reward(second)).double() + 0.5) / (len(base) + 1)
    assert abs(float((math.log(N) + (N - 1) * c2.log()).mean()) - bon_kl(N)) > 0.3


@pytest.mark.parametrize("N", [4, 16])
def test_the_samplers_best_of_n_wins_against_a_base_sample_n_over_n_plus_one(between, N):
    """toycode's bon method (exact denoiser, T = 50) against independent base samples of the
    same model: the win rate is N/(N + 1) within 4 binomial standard errors."""
    n = 2000
    bon = api.sample(between, method="bon", num_candidates=N, n=n, steps=50, seed=1)
    base = api.sample(between, method="base", n=n, steps=50, seed=2)
    wins = (bon.rewards > base.rewards).double().mean()
    p = bon_win_probability(N)
    assert abs(float(wins) - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_knn_kl_bias_is_measured_against_the_exact_value(between):
    rows = knn_kl_bias(
        between.prior,
        between.reward,
        512,
        (1, 4),
        replicates=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert [r["N"] for r in rows] == [1, 4]
    assert rows[0]["exact"] == 0 and rows[1]["exact"] == pytest.approx(bon_kl(4))
    for r in rows:
        assert r["bias"] == pytest.approx(r["estimate"] - r["exact"])
        assert r["se"] > 0 and abs(r["bias"]) < 0.5  # a usable estimator in 2-D at n = 512
