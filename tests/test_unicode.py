"""UniCoDe (Goyal, Singh & Jamali-Rad 2025, arXiv 2512.12339): CoDe whose steps move the clean
estimate along the reward gradient, with no backprop through the denoiser."""

import math

import pytest
import torch

from toycode import GaussianMixture, Process, Quadratic
from toycode.backends import analytic_backend
from toycode.core.guidance import GuidedBackend, ManifoldStep, posterior_variance
from toycode.experiments import api

_F64 = torch.float64
MU, S2 = torch.tensor([0.5, -1.0], dtype=_F64), 0.7
C, P = torch.tensor([2.0, 1.0], dtype=_F64), 1.5


def _gaussian():
    prior = GaussianMixture([1.0], MU[None], S2 * torch.eye(2, dtype=_F64)[None])
    return prior, Quadratic(C, P * torch.eye(2, dtype=_F64))


def test_the_step_moves_only_the_clean_estimate_and_costs_no_backprop():
    """ε̂ is the model's, x̂0' = x̂0 + s σ²_{0|t} ∇r(x̂0) to float64 precision; one reward
    gradient per row and no backprop; nothing moves at the clean end (σ²_{0|t} = 0)."""
    prior, reward = _gaussian()
    be = analytic_backend(prior, Process.make(20))
    rule = ManifoldStep(reward, 2.0, data_var=S2)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=_F64)
    for i in (2, 10, 19):
        base, guided = be.predict(x, i), GuidedBackend(be, rule).predict(x, i)
        v = posterior_variance(be.process.level(i), S2)
        expected = base.x0 + 2.0 * v * P * (C - base.x0)  # ∇r = p (c − x0)
        assert torch.equal(guided.eps, base.eps)
        assert torch.allclose(guided.x0, expected, rtol=0, atol=1e-12)
        assert (guided.reward_grads, guided.backprops, guided.nfe) == (1, 0, 1)


@pytest.mark.parametrize("i", [3, 10, 16])
def test_the_step_is_the_tilted_posterior_mean_to_first_order(i):
    """On a Gaussian base x0 | x_t is N(x̂0, σ²_{0|t} I), so under the tilt e^{λr} its mean is
    x̂0 + λpv(c − x̂0)/(1 + λpv): the step misses it by O(λ²) — halving λ quarters the gap."""
    prior, reward = _gaussian()
    be = analytic_backend(prior, Process.make(20))
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=_F64)
    v = posterior_variance(be.process.level(i), S2)
    gaps = []
    for lam in (0.2, 0.1):
        x0 = be.predict(x, i).x0
        exact = x0 + lam * P * v * (C - x0) / (1 + lam * P * v)
        step = GuidedBackend(be, ManifoldStep(reward, lam, data_var=S2)).predict(x, i).x0
        gaps.append(float((step - exact).norm()))
    assert gaps[0] / gaps[1] == pytest.approx(4.0, rel=0.1), gaps


def test_it_buys_reward_cheaper_than_code(between):
    """`between`, T = 50, B = 10: UniCoDe with N = 4 reaches a higher mean reward than CoDe
    with N = 16 at a quarter of the denoiser calls (by > 4 s.e.; measured −0.03 vs −0.12),
    without a backprop through the denoiser — where CoDe on DPS proposals (code-gradient)
    pays one backprop per call."""
    kw = dict(n=512, steps=50, block_size=10, seed=0)
    uni = api.sample(between, method="unicode", num_candidates=4, **kw)
    code = api.sample(between, method="code", num_candidates=16, **kw)
    grad = api.sample(between, method="code-gradient", num_candidates=4, n=16, steps=50)
    diff = float(uni.rewards.mean() - code.rewards.mean())
    se = math.sqrt((uni.rewards.var() + code.rewards.var()) / 512)
    assert diff > 4 * se, (diff, se)
    assert uni.nfe < code.nfe / 3 and uni.backprops == 0 and grad.backprops == grad.nfe


def test_it_refuses_a_reward_without_a_gradient(box):
    with pytest.raises(ValueError, match="differentiable"):
        api.sample(box, method="unicode", n=4, steps=5)
