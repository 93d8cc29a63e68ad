"""Damped guidance (Dandapanthula & Boffi 2026, arXiv 2606.02884): on a Gaussian base with a
quadratic reward, DPS at the scale λ_t = λ/(1 + λ p σ²_{0|t}) is the exact twisted score."""

import pytest
import torch

from toycode import GaussianMixture, Process, Quadratic
from toycode.backends import analytic_backend
from toycode.core.guidance import DPS, DampedDPS, GuidedBackend, posterior_variance
from toycode.experiments import api

_F64 = torch.float64


def _tilted_score(x, level, *, mu, s2, c, lam, p):
    """∇ log p*_t for p*_0 ∝ N(μ, s²I) e^{−(λp/2)‖x − c‖²} = N(μ*, s*²I), noised to
    x_t = α x0 + σ ε: −(x − α μ*) / (α² s*² + σ²)."""
    s2_star = 1.0 / (1.0 / s2 + lam * p)
    mu_star = s2_star * (mu / s2 + lam * p * c)
    return -(x - level.alpha * mu_star) / (level.alpha**2 * s2_star + level.sigma**2)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "flow"])
def test_damped_dps_is_the_exact_twisted_score_on_a_gaussian_base(schedule):
    """At several t and x (float64) the damped DPS score −ε̂_guided/σ equals ∇ log p*_t to
    ~1e-10; plain DPS at s = λ misses it at every t, by O(1) early on."""
    mu, s2 = torch.tensor([0.5, -1.0], dtype=_F64), 0.7
    c, p, lam = torch.tensor([2.0, 1.0], dtype=_F64), 1.5, 2.0
    prior = GaussianMixture([1.0], mu[None], s2 * torch.eye(2, dtype=_F64)[None])
    reward = Quadratic(c, p * torch.eye(2, dtype=_F64))
    be = analytic_backend(prior, Process.make(20, schedule))
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=_F64) * 2
    damped = GuidedBackend(be, DampedDPS(reward, lam, data_var=s2))
    plain = GuidedBackend(be, DPS(reward, lam))
    errs, plain_errs = [], []
    for i in (1, 5, 10, 15, 19):
        level = be.process.level(i)
        exact = _tilted_score(x, level, mu=mu, s2=s2, c=c, lam=lam, p=p)
        for guided, out in ((damped, errs), (plain, plain_errs)):
            score = -guided.predict(x, i).eps / level.sigma
            out.append(float((score - exact).abs().max()))
    assert max(errs) < 1e-10, errs
    # DPS's scale is off by the factor 1 + λpσ²_{0|t}: most early, where x0 | x_t is wide,
    # least at the last step before the clean end (σ²_{0|t} → 0)
    assert min(plain_errs[:-1]) > 1e-2 and max(plain_errs) > 0.5, plain_errs


def test_damped_scale_follows_the_posterior_variance():
    """λ_t = λ/(1 + λpσ²_{0|t}) with σ²_{0|t} = s²σ²/(α²s² + σ²): λ/(1 + λps²) at pure noise,
    λ at the clean end; p is read off an isotropic Quadratic (2 for r = −‖x − c‖²)."""
    be = analytic_backend(
        GaussianMixture([1.0], [[0.0, 0.0]], torch.eye(2, dtype=_F64)[None]), Process.make(10)
    )
    rule = DampedDPS(Quadratic([0.0, 0.0], 2.0 * torch.eye(2, dtype=_F64)), 3.0, data_var=0.5)
    assert rule.curvature == 2.0
    lv = be.process.level(4)
    v = 0.5 * lv.sigma**2 / (lv.alpha**2 * 0.5 + lv.sigma**2)
    assert posterior_variance(lv, 0.5) == pytest.approx(v, rel=1e-14)
    assert rule.scale_at(be, 4) == pytest.approx(3.0 / (1 + 3.0 * 2.0 * v), rel=1e-14)
    assert rule.scale_at(be, 10) == pytest.approx(3.0)  # σ = 0: the clean end


def test_dps_damped_record_runs_and_costs_what_dps_costs(between):
    damped = api.sample(between, method="dps-damped", n=16, steps=10, seed=0)
    dps = api.sample(between, method="dps", n=16, steps=10, seed=0)
    assert damped.nfe_per_sample == dps.nfe_per_sample == 10
    assert damped.reward_grads == dps.reward_grads and damped.backprops == dps.backprops
    assert not torch.equal(damped.samples, dps.samples)
