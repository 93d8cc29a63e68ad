import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from toycode import GaussianMixture, Linear, Problem, Quadratic
from toycode.exact.gmm import tilt_linear, tilt_quadratic


def test_log_prob_matches_scipy(mixture3d, gen):
    x = mixture3d.sample(50, gen)
    want = np.log(
        sum(
            float(w) * multivariate_normal(m.numpy(), c.numpy()).pdf(x.numpy())
            for w, m, c in zip(mixture3d.weights, mixture3d.means, mixture3d.covs)
        )
    )
    assert np.allclose(mixture3d.log_prob(x).numpy(), want, rtol=1e-10)


@pytest.mark.parametrize("abar", [0.001, 0.3, 0.97])
def test_exact_score_is_the_gradient_of_log_pt(mixture3d, gen, abar):
    noised = mixture3d.noised(abar)
    x = noised.sample(64, gen).requires_grad_(True)
    (grad,) = torch.autograd.grad(noised.log_prob(x).sum(), x)
    assert torch.allclose(noised.score(x.detach()), grad, rtol=1e-9, atol=1e-12)


def test_noised_mixture_matches_forward_process_moments(mixture3d, gen):
    abar = 0.4
    x0 = mixture3d.sample(200_000, gen)
    xt = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * torch.randn(
        x0.shape, generator=gen, dtype=torch.float64
    )
    noised = mixture3d.noised(abar)
    mean = noised.weights @ noised.means
    assert torch.allclose(xt.mean(0), mean, atol=0.01)


def _importance(prior, reward, lam, gen, n=400_000):
    """Monte-Carlo importance sampling of the tilt with its standard errors."""
    x = prior.sample(n, gen)
    r = reward(x)
    w = torch.exp(lam * r - (lam * r).max())
    z_hat = w.mean() * torch.exp((lam * r).max())
    wn = w / w.sum()
    er = float(wn @ r)
    ess = float(1 / (wn**2).sum())
    se_r = float(((wn * (r - er) ** 2).sum() / ess).sqrt())
    se_logz = float(w.std() / w.mean() / math.sqrt(n))
    return float(z_hat.log()), se_logz, er, se_r


@pytest.mark.parametrize("kind", ["quadratic", "quadratic-singular", "linear"])
def test_closed_form_tilt_matches_importance_sampling(mixture3d, gen, kind):
    if kind == "quadratic":
        reward = Quadratic([0.5, 0.5, -0.5], [[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.5]])
    elif kind == "quadratic-singular":  # P of rank 1: only the first coordinate is rewarded
        reward = Quadratic([1.0, 0.0, 0.0], [[1.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    else:
        reward = Linear([0.5, -0.3, 0.2])
    lam = 1.3
    target = Problem(mixture3d, reward, lam).target
    log_z, se_logz, er, se_r = _importance(mixture3d, reward, lam, gen)
    assert target.log_z == pytest.approx(log_z, abs=5 * se_logz + 1e-12)
    assert target.reward_mean == pytest.approx(er, abs=5 * se_r)
    # the tilted mixture's mean agrees with the self-normalised importance estimate
    x = target.sample(200_000, gen)
    assert float(reward(x).mean()) == pytest.approx(
        target.reward_mean, abs=5 * float(reward(x).std()) / 450
    )


def test_quadratic_formula_equals_design_note_form(mixture3d):
    """log ŵ_k = log w_k + log N(μ_k; c, Σ_k + Q⁻¹) + (d/2) log 2π − ½ log|Q| for invertible Q."""
    c = torch.tensor([0.5, 0.5, -0.5], dtype=torch.float64)
    p = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.5]], dtype=torch.float64)
    lam = 0.7
    _, log_z = tilt_quadratic(mixture3d, c, p, lam)
    q = lam * p
    terms = [
        math.log(float(w))
        + multivariate_normal(c.numpy(), (s + torch.linalg.inv(q)).numpy()).logpdf(m.numpy())
        + 1.5 * math.log(2 * math.pi)
        - 0.5 * math.log(float(torch.det(q)))
        for w, m, s in zip(mixture3d.weights, mixture3d.means, mixture3d.covs)
    ]
    assert log_z == pytest.approx(float(torch.logsumexp(torch.tensor(terms), 0)), abs=1e-10)


@pytest.mark.parametrize(
    "reward", [Quadratic([1.0, 0.0, -1.0], torch.eye(3)), Linear([0.2, 0.4, -0.1])]
)
def test_reward_mean_is_dlogz_dlam_and_kl_identity(mixture3d, reward):
    lam, h = 0.9, 1e-5
    t = Problem(mixture3d, reward, lam).target
    dlogz = (
        Problem(mixture3d, reward, lam + h).target.log_z
        - Problem(mixture3d, reward, lam - h).target.log_z
    ) / (2 * h)
    assert t.reward_mean == pytest.approx(dlogz, rel=1e-6)
    # KL(p*‖p) = E_{p*}[log p* − log p] by Monte Carlo on exact samples
    x = t.sample(100_000, torch.Generator().manual_seed(3))
    diff = t.log_prob(x) - mixture3d.log_prob(x)
    assert t.kl_to_base == pytest.approx(float(diff.mean()), abs=5 * float(diff.std()) / 316)


def test_lam_zero_is_the_prior(mixture3d):
    t, log_z = tilt_linear(mixture3d, torch.tensor([1.0, 2.0, 3.0]), 0.0)
    assert log_z == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(t.means, mixture3d.means) and torch.allclose(t.weights, mixture3d.weights)


@pytest.mark.parametrize(
    "weights, means, covs, match",
    [
        ([0.5, -0.5, 1.0], [[0.0], [1.0], [2.0]], [[[1.0]]] * 3, "non-negative"),
        ([0.5, 0.4], [[0.0], [1.0]], [[[1.0]]] * 2, "sum to 1"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.4, 1.0]]], "symmetric"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], "positive definite"),
        ([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [[[1.0]]] * 2, "mismatch"),
    ],
)
def test_bad_mixtures_are_rejected(weights, means, covs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(weights, means, covs)
