import math

import pytest
import torch

from toycode import Box, Problem, Quadratic, Ring, exact_target
from toycode.exact.targets import GridTarget, MixtureTarget


def test_grid_quadrature_agrees_with_closed_form(between):
    """The same quadratic problem through both constructions: log Z, E[r], w*, log-tilt."""
    closed = between.target
    grid = GridTarget(between.prior, between.reward, between.lam)
    assert isinstance(closed, MixtureTarget)
    assert grid.log_z == pytest.approx(closed.log_z, abs=1e-4)
    assert grid.reward_mean == pytest.approx(closed.reward_mean, abs=1e-4)
    assert torch.allclose(grid.mode_weights, closed.mode_weights, atol=1e-4)
    # log-tilt: the default grids (0.02 cells, 0.04 query spacing) are documented to ~3e-3;
    # a wrong kernel (scale, variance or a missing √ᾱ) misses by orders of magnitude more
    gen = torch.Generator().manual_seed(0)
    for abar in (0.02, 0.3, 0.8, 0.95):
        xt = closed.prior.noised(abar).sample(500, gen)
        err = (grid.log_tilt(xt, abar) - closed.log_tilt(xt, abar)).abs().max()
        assert err < 3e-3


def test_box_target_matches_importance_sampling(box, gen):
    t = box.target
    x = box.prior.sample(1_000_000, gen)
    inside = box.reward(x)
    p = float(inside.mean())
    # Z = 1 + (e^λ − 1) P(box) for an indicator; its log has s.e. (e^λ − 1) se(p) / Z
    z = 1 + (math.exp(box.lam) - 1) * p
    se = (math.exp(box.lam) - 1) * math.sqrt(p * (1 - p) / len(x)) / z
    assert t.log_z == pytest.approx(math.log(z), abs=5 * se)
    assert t.reward_mean == pytest.approx(math.exp(box.lam) * p / z, abs=5 * se)


@pytest.mark.parametrize("name", ["box", "ring"])
def test_grid_samples_are_exact(name, request, gen):
    problem = (
        request.getfixturevalue(name)
        if name == "box"
        else Problem(request.getfixturevalue("between").prior, Ring(1.5, 0.4), 1.0)
    )
    t = problem.target
    x = t.sample(100_000, gen)
    r = problem.reward(x)
    assert float(r.mean()) == pytest.approx(t.reward_mean, abs=5 * float(r.std()) / 316)
    masses = t.prior.responsibilities(x).mean(0)
    assert torch.allclose(masses, t.mode_weights, atol=5 * 0.5 / 316)


@pytest.mark.slow
def test_grid_log_tilt_matches_direct_quadrature(box):
    """E[e^{λr(x0)} | x_t] by brute-force quadrature of the posterior at a few points."""
    t = box.target
    for abar, xt in [(0.5, [0.3, 0.4]), (0.5, [1.0, -0.2]), (0.9, [2.0, 0.0]), (0.9, [0.0, 2.0])]:
        xt = torch.tensor([xt], dtype=torch.float64)
        u = torch.linspace(-6, 6, 1201, dtype=torch.float64)
        gx, gy = torch.meshgrid(u, u, indexing="ij")
        pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
        lw = box.prior.log_prob(pts) - ((xt - math.sqrt(abar) * pts) ** 2).sum(1) / (2 * (1 - abar))
        ref = torch.logsumexp(lw + box.lam * box.reward(pts), 0) - torch.logsumexp(lw, 0)
        assert float(t.log_tilt(xt, abar)) == pytest.approx(float(ref), abs=0.02)


def test_soft_value_is_the_reward_at_the_clean_end(between, box, gen):
    for problem in (between, box):
        x = problem.prior.sample(100, gen)
        assert torch.allclose(problem.target.soft_value(x, 1.0), problem.reward(x))


def test_closed_form_soft_value_tends_to_reward(between, gen):
    """V_t → r as ᾱ → 1 (continuity of the exact value at the clean end)."""
    x = between.prior.sample(100, gen)
    v = between.target.soft_value(x, 1 - 1e-7)
    assert torch.allclose(v, between.reward(x), atol=1e-4)


def test_grid_reward_needs_two_dimensions(quad3d):
    with pytest.raises(ValueError, match="does not match"):
        exact_target(quad3d.prior, Ring(1.0), 1.0)
    with pytest.raises(ValueError, match="dimension"):
        Problem(quad3d.prior, Box([0, 0], [1, 1]), 1.0)


def test_negative_lam_is_rejected(between):
    with pytest.raises(ValueError, match="lam"):
        Problem(between.prior, between.reward, -1.0)


def test_exact_value_needs_positive_lam(between, gen):
    t = between.with_lam(0.0).target
    with pytest.raises(ValueError, match="lam > 0"):
        t.soft_value(between.prior.sample(3, gen), 0.5)


def test_quadratic_rejects_bad_precision():
    with pytest.raises(ValueError, match="precision"):
        Quadratic([0.0, 0.0], [[1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match="precision"):
        Quadratic([0.0, 0.0], [[1.0, 0.0, 0.0]])
