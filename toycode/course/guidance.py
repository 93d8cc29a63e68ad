"""Lesson 7's exercises: gradient guidance, graded where everything is closed form.

dps_gradient          ∇_x r(x̂0(x)) by autograd through a denoiser: against the closed form
                      Jᵀ ∇r(x̂0) with Tweedie's Jacobian J = α Σ (α² Σ + σ² I)⁻¹ of a
                      Gaussian base, and against the library's own gradient on a mixture
exact_guided_score    ∇ log p*_t of N(μ, v) tilted by r = −p/2 (x − c)²: p*_t is the noised
                      tilted Gaussian N(α μ*, α² v* + σ²), from the exact mixture code
guided_step           one DDPM step of the guided process, ε̂ − σ g, against the sampler's own
                      step; a step that adds σ g (the wrong sign) moves against the tilt
"""

from __future__ import annotations

import torch

from ..core.diffusion import NoiseLevel, Process
from ..exact.gmm import GaussianMixture, tilt_quadratic
from ..exact.problems import load_problem
from ..exact.rewards import Quadratic
from .closed_forms import compare, ddim_step
from .grading import Exercise, register

_F64 = torch.float64


# -- dps_gradient ---------------------------------------------------------------------------------


def dps_gradient(x: torch.Tensor, denoise, reward) -> torch.Tensor:
    """DPS's direction ∇_x r(x̂0(x)) for each row of x (n, d), differentiating through
    ``denoise`` (x ↦ x̂0) by autograd."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        return torch.autograd.grad(reward(denoise(xg)).sum(), xg)[0]


def _gaussian_case(mean, cov, level: NoiseLevel):
    """A Gaussian base's exact denoiser x ↦ E[x0 | x_t = x] and its Jacobian α Σ S⁻¹."""
    prior = GaussianMixture([1.0], [mean], [cov])
    cov = prior.covs[0]
    s = level.alpha**2 * cov + level.sigma**2 * torch.eye(len(cov), dtype=_F64)
    jac = level.alpha * cov @ torch.linalg.inv(s)
    return (lambda x: prior.posterior_mean(x, level)), jac


def _check_dps_gradient(fn) -> str | None:
    g = torch.Generator().manual_seed(9)
    reward = Quadratic([0.5, 1.0], [[1.0, 0.3], [0.3, 2.0]])
    for abar in (0.9, 0.5, 0.1):
        level = NoiseLevel.vp(abar)
        denoise, jac = _gaussian_case([1.0, -0.5], [[0.6, 0.2], [0.2, 0.3]], level)
        x = torch.randn(6, 2, generator=g, dtype=_F64)
        m = denoise(x)
        want = (-(m - reward.center) @ reward.precision) @ jac  # (∇r(x̂0))ᵀ J, row by row
        reason = compare(
            fn(x.clone(), denoise, reward),
            want,
            f"dps_gradient on a Gaussian base at alpha={level.alpha:.3f}",
        )
        if reason:
            return reason
    problem = load_problem("between")  # a nonlinear denoiser: the mixture's
    level = NoiseLevel.vp(0.4)
    x = torch.randn(6, 2, generator=g, dtype=_F64)
    denoise = lambda z: problem.prior.posterior_mean(z, level)  # noqa: E731
    return compare(
        fn(x.clone(), denoise, problem.reward),
        dps_gradient(x, denoise, problem.reward),
        "dps_gradient on the mixture of 'between'",
    )


# -- exact_guided_score ---------------------------------------------------------------------------


def exact_guided_score(
    x: torch.Tensor,
    mu: float,
    var: float,
    c: float,
    p: float,
    lam: float,
    alpha: float,
    sigma: float,
) -> torch.Tensor:
    """∇ log p*_t(x) for p = N(mu, var), r(x) = −p/2 (x − c)², x_t = α x0 + σ ε; x of shape (n,)."""
    precision = 1.0 / var + lam * p
    mean_star, var_star = (mu / var + lam * p * c) / precision, 1.0 / precision
    return -(x - alpha * mean_star) / (alpha**2 * var_star + sigma**2)


def _check_exact_guided_score(fn) -> str | None:
    x = torch.linspace(-3.0, 3.0, 7, dtype=_F64)
    for mu, var, c, p, lam in (
        (0.0, 1.0, 2.0, 1.0, 1.0),
        (-1.0, 0.5, 1.0, 2.0, 3.0),
        (1.0, 2.0, -1.0, 0.5, 0.5),
    ):
        prior = GaussianMixture([1.0], [[mu]], [[[var]]])
        tilted, _ = tilt_quadratic(prior, torch.tensor([c]), torch.tensor([[p]]), lam)
        for abar in (0.95, 0.5, 0.05):
            level = NoiseLevel.vp(abar)
            want = tilted.noised(level).score(x[:, None])[:, 0]
            reason = compare(
                fn(x.clone(), mu, var, c, p, lam, level.alpha, level.sigma),
                want,
                f"exact_guided_score(mu={mu}, var={var}, c={c}, p={p}, lam={lam}) "
                f"at alpha={level.alpha:.3f}",
            )
            if reason:
                return reason
    return None


# -- guided_step ----------------------------------------------------------------------------------


def guided_step(
    x: torch.Tensor,
    eps: torch.Tensor,
    g: torch.Tensor,
    alpha: float,
    sigma: float,
    alpha_next: float,
    sigma_next: float,
    z: torch.Tensor,
) -> torch.Tensor:
    """One DDPM (η = 1) step of the guided process: the score moved by g, so ε̂ − σ g, then
    Tweedie's x̂0 and the DDIM(η = 1) step with noise z (lesson 2's ``ddim_step``)."""
    return ddim_step(x, eps - sigma * g, alpha, sigma, alpha_next, sigma_next, 1.0, z)


def _check_guided_step(fn) -> str | None:
    process = Process.make(10, eta=1.0)
    gen = torch.Generator().manual_seed(10)
    for i in (0, 4, 8):
        x, eps, g, z = (torch.randn(5, 2, generator=gen, dtype=_F64) for _ in range(4))
        a, b = process.level(i), process.level(i + 1)
        # the sampler's guided prediction (toycode.core.guidance._shift), then its own step
        eps_g, x0_g = eps - a.sigma * g, (x - a.sigma * eps) / a.alpha + a.sigma**2 / a.alpha * g
        mean, s = process.step_moments(x, i, eps_g, x0=x0_g)
        got = fn(x.clone(), eps.clone(), g.clone(), a.alpha, a.sigma, b.alpha, b.sigma, z.clone())
        reason = compare(got, mean + s * z, f"guided_step from grid index {i}")
        if reason:
            return reason
    return None


register(
    Exercise(
        "dps_gradient",
        7,
        "DPS's gradient through the denoiser",
        "make a leaf x.detach().requires_grad_(True), evaluate reward(denoise(x)).sum() "
        "and take torch.autograd.grad with respect to that leaf (under "
        "torch.enable_grad())",
        _check_dps_gradient,
        dps_gradient,
    )
)
register(
    Exercise(
        "exact_guided_score",
        7,
        "the exact guided score of a tilted Gaussian",
        "tilt first (precisions add: 1/v* = 1/var + λp, μ* = v*(mu/var + λpc)), then "
        "noise: p*_t = N(α μ*, α² v* + σ²); the score of N(m, s²) is −(x − m)/s²",
        _check_exact_guided_score,
        exact_guided_score,
    )
)
register(
    Exercise(
        "guided_step",
        7,
        "one step of the guided reverse process",
        "ε̂ = −σ ∇log p_t, so adding g to the score is ε̂ − σ g; then x̂0 by Tweedie and "
        "lesson 2's DDIM step with η = 1",
        _check_guided_step,
        guided_step,
    )
)
