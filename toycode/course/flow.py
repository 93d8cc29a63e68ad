"""Lesson 8's exercises: flow matching on the rectified-flow path α = 1 − t, σ = t.

Three closed forms, each graded against the library's own float64 code on a few fixed cases:
the velocity v = ε − x0 from an ε-prediction (:func:`toycode.core.diffusion.from_eps_x0`), the
exact velocity E[ε − x0 | x_t] of a Gaussian mixture (the analytic backend's flow denoiser,
:class:`toycode.backends.AnalyticDenoiser`), and the Euler step of the probability-flow ODE
(:meth:`toycode.core.diffusion.Process.step` at η = 0 on diffusers' FlowMatchEuler grid). A step
of the wrong sign, or a velocity of the other convention (x0 − ε), is far outside the tolerance.
"""

from __future__ import annotations

import torch

from ..backends.analytic import AnalyticDenoiser
from ..core.diffusion import NoiseLevel, Process, from_eps_x0, to_eps_x0
from ..exact.problems import load_problem
from .closed_forms import compare, mixture_score
from .grading import Exercise, register

_F64 = torch.float64
_TIMES = (0.95, 0.6, 0.25, 0.02)  # flow times inside (0, 1): x̂0 from ε̂ needs 1 − t > 0


def _states(seed: int, n: int = 6, d: int = 2):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g, dtype=_F64) * 1.5,
        torch.randn(n, d, generator=g, dtype=_F64),
    )


def velocity_from_eps(x: torch.Tensor, eps: torch.Tensor, t: float) -> torch.Tensor:
    """The flow velocity v̂ = ε̂ − x̂0 at x_t = (1 − t) x0 + t ε, given the ε-prediction ε̂:
    x̂0 = (x − t ε̂)/(1 − t), so v̂ = (ε̂ − x)/(1 − t)."""
    return (eps - x) / (1 - t)


def _check_velocity_from_eps(fn) -> str | None:
    for k, t in enumerate(_TIMES):
        x, eps = _states(k)
        lv = NoiseLevel.flow(t)
        x0 = to_eps_x0(eps, "epsilon", x, lv.alpha, lv.sigma)[1]
        want = from_eps_x0(eps, x0, "flow", lv.alpha, lv.sigma)
        reason = compare(fn(x.clone(), eps.clone(), t), want, f"velocity_from_eps at t={t}")
        if reason:
            return reason
    return None


def exact_velocity(
    weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor, x: torch.Tensor, t: float
) -> torch.Tensor:
    """E[ε − x0 | x_t = x] for x0 ~ Σ_k w_k N(μ_k, Σ_k) on the path x_t = (1 − t) x0 + t ε:
    ε̂ = −t ∇log p_t(x) (the noised mixture's score), x̂0 = (x − t ε̂)/(1 − t), v̂ = ε̂ − x̂0."""
    eps = -t * mixture_score(weights, means, covs, x, 1 - t, t)
    return eps - (x - t * eps) / (1 - t)


def _check_exact_velocity(fn) -> str | None:
    prior = load_problem("between").prior
    exact = AnalyticDenoiser(prior, "flow")
    for k, t in enumerate(_TIMES):
        x = _states(10 + k)[0]
        want = exact(x, 1000 * t, NoiseLevel.flow(t))
        got = fn(prior.weights.clone(), prior.means.clone(), prior.covs.clone(), x.clone(), t)
        reason = compare(got, want, f"exact_velocity at t={t}")
        if reason:
            return reason
    return None


def euler_flow_step(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """One Euler step of the probability-flow ODE dx/dt = v from t to t_next < t:
    x' = x + (t_next − t) v̂ (t falls, so the state moves against v̂)."""
    return x + (t_next - t) * v


def _check_euler_flow_step(fn) -> str | None:
    process = Process.make(12, "flow", eta=0.0)
    for k, i in enumerate((0, 3, 7, 11)):  # i = 0 is t = 1 (pure noise), 11 the last step
        x, v = _states(20 + k)
        a, b = process.level(i), process.level(i + 1)
        eps, x0 = to_eps_x0(v, "flow", x, a.alpha, a.sigma)
        want = process.step(x, i, eps, x0=x0)  # DDIM(η = 0) on the flow grid
        got = fn(x.clone(), v.clone(), a.sigma, b.sigma)
        reason = compare(got, want, f"euler_flow_step from t={a.sigma:.3f} to t={b.sigma:.3f}")
        if reason:
            return reason
    return None


register(
    Exercise(
        "velocity_from_eps",
        8,
        "the flow velocity from an ε-prediction",
        "x_t = (1 − t) x0 + t ε: solve for x̂0 with ε̂ in place of ε, then v̂ = ε̂ − x̂0",
        _check_velocity_from_eps,
        velocity_from_eps,
    )
)
register(
    Exercise(
        "exact_velocity",
        8,
        "the exact velocity of a Gaussian mixture",
        "the noised mixture at level (α, σ) = (1 − t, t) has the score of lesson 2 "
        "(mixture_score); ε̂ = −t·score, x̂0 from Tweedie, v̂ = ε̂ − x̂0",
        _check_exact_velocity,
        exact_velocity,
    )
)
register(
    Exercise(
        "euler_flow_step",
        8,
        "the Euler step of the probability-flow ODE",
        "dx/dt = v, and sampling runs t downwards: x' = x + (t' − t) v̂ with t' < t",
        _check_euler_flow_step,
        euler_flow_step,
    )
)
