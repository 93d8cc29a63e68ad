"""Lesson 5's exercises: values. The learner computes Tweedie's value r(E[x0 | x_t]) of an exact
mixture, the closed-form gap between it and the soft value for a Gaussian posterior and a
quadratic reward, and a Monte-Carlo soft value from exact posterior draws.

Truth comes from :mod:`toycode.exact`: the mixture's posterior mean
(:meth:`~toycode.exact.gmm.GaussianMixture.posterior_mean`), the tilted-Gaussian normaliser
(:func:`~toycode.exact.gmm.tilt_quadratic`: log E[e^{λr}] under N(m, C) is its log Z) and the
exact soft value of a target (:meth:`~toycode.exact.targets.Target.soft_value`).

The Monte-Carlo check is statistical with an exact yardstick. With w = e^{λ r(x0)} and M draws,
V̂ = (1/λ) log mean w has, to first order, standard error s = ρ/(λ√M) and bias −ρ²/(2λM), where
ρ² = Var(w | x_t)/E[w | x_t]² = E[e^{2λr} | x_t]/E[e^{λr} | x_t]² − 1 comes exactly from the
targets at λ and 2λ. Every state's V̂ must lie within :data:`Z_MAX` of those standard errors of
V + bias; w ∈ (0, 1] is bounded, so the normal approximation is sound at M = :data:`DRAWS`, and
with a fixed seed a given answer always gets the same verdict.
"""

from __future__ import annotations

import math

import torch

from ..core.diffusion import NoiseLevel
from ..exact.gmm import GaussianMixture, tilt_quadratic
from ..exact.problems import load_problem
from ..exact.targets import exact_target
from .closed_forms import _as_parts, compare
from .grading import Exercise, register

_F64 = torch.float64
DRAWS, Z_MAX = 4000, 5.0
LEVELS = (0.9, 0.5, 0.1, 0.02)  # ᾱ of the states the checks use, clean to noisy


def _noised_parts(prior: GaussianMixture, x: torch.Tensor, alpha: float, sigma: float):
    """S_k = α²Σ_k + σ²I, S_k⁻¹(x − αμ_k) (n, K, d) and the responsibilities ρ_k(x) (n, K)."""
    cov_t = alpha**2 * prior.covs + sigma**2 * torch.eye(prior.dim, dtype=_F64)
    diff = x[:, None, :] - alpha * prior.means[None]  # (n, K, d)
    solved = torch.linalg.solve(cov_t[None], diff.unsqueeze(-1)).squeeze(-1)
    log_resp = prior.weights.log() - 0.5 * torch.logdet(cov_t) - 0.5 * (diff * solved).sum(-1)
    return cov_t, solved, torch.softmax(log_resp, 1)


def tweedie_value(
    prior: GaussianMixture, reward, x: torch.Tensor, alpha: float, sigma: float
) -> torch.Tensor:
    """Tweedie's value r(x̂0), x̂0 = E[x0 | x_t = x] for x_t = α x0 + σ ε and x0 ~ the mixture:
    x̂0 = Σ_k ρ_k(x) (μ_k + α Σ_k S_k⁻¹ (x − α μ_k)), S_k = α² Σ_k + σ² I. Shape (n,)."""
    _, solved, resp = _noised_parts(prior, x, alpha, sigma)
    per_k = prior.means + alpha * (prior.covs @ solved.unsqueeze(-1)).squeeze(-1)  # (n, K, d)
    return reward((resp.unsqueeze(-1) * per_k).sum(1))


def jensen_gap(
    m: torch.Tensor, cov: torch.Tensor, c: torch.Tensor, p: torch.Tensor, lam: float
) -> torch.Tensor:
    """V − r(m) for x0 ~ N(m, C) and r(x) = −½ (x − c)ᵀ P (x − c), where
    V = (1/λ) log E[e^{λ r(x0)}] = −(1/2λ) log|I + λCP| − ½ (m − c)ᵀ P (I + λCP)⁻¹ (m − c)."""
    eye = torch.eye(len(m), dtype=_F64)
    a = eye + lam * cov @ p
    dm = m - c
    soft = -0.5 * torch.logdet(a) / lam - 0.5 * dm @ p @ torch.linalg.solve(a, dm)
    return soft + 0.5 * dm @ p @ dm


def soft_value_mc(
    prior: GaussianMixture,
    reward,
    x: torch.Tensor,
    alpha: float,
    sigma: float,
    lam: float,
    samples: int,
    generator: torch.Generator | None = None,
):
    """V̂(x) = (1/λ) log (1/M) Σ_m e^{λ r(x0_m)} over M = ``samples`` exact posterior draws
    x0_m ~ p(x0 | x_t = x) of the mixture (component k with probability ρ_k(x), then the
    Gaussian conditional with mean μ_k + α Σ_k S_k⁻¹ (x − α μ_k) and covariance
    Σ_k − α² Σ_k S_k⁻¹ Σ_k). Shape (n,)."""
    cov_t, solved, resp = _noised_parts(prior, x, alpha, sigma)
    n, d = x.shape
    comp = torch.multinomial(resp, samples, replacement=True, generator=generator)  # (n, M)
    mean = prior.means + alpha * (prior.covs @ solved.unsqueeze(-1)).squeeze(-1)  # (n, K, d)
    cond = prior.covs - alpha**2 * prior.covs @ torch.linalg.solve(cov_t, prior.covs)
    root = torch.linalg.cholesky(0.5 * (cond + cond.transpose(1, 2)))  # (K, d, d)
    z = torch.randn(n, samples, d, generator=generator, dtype=_F64)
    rows = torch.arange(n)[:, None]
    draws = mean[rows, comp] + (root[comp] @ z.unsqueeze(-1)).squeeze(-1)  # (n, M, d)
    r = reward(draws.reshape(-1, d)).view(n, samples)
    return (torch.logsumexp(lam * r, 1) - math.log(samples)) / lam


# -- the checkers ---------------------------------------------------------------------------------


def _states(prior: GaussianMixture, abar: float, seed: int, n: int = 6):
    """n states at noise level ᾱ: half from the noised prior, half on a fixed line."""
    lv = NoiseLevel.vp(abar)
    drawn = prior.noised(lv).sample(n - n // 2, torch.Generator().manual_seed(seed))
    line = torch.linspace(-2.5, 2.5, n // 2, dtype=_F64)[:, None] * torch.tensor(
        [[1.0, 0.6]], dtype=_F64
    )
    return lv, torch.cat([drawn, lv.alpha * line])


def _check_tweedie_value(fn) -> str | None:
    for name in ("between", "ring"):
        problem = load_problem(name)
        for seed, abar in enumerate(LEVELS):
            lv, x = _states(problem.prior, abar, seed)
            want = problem.reward(problem.prior.posterior_mean(x, lv))
            reason = compare(
                fn(problem.prior, problem.reward, x.clone(), lv.alpha, lv.sigma),
                want,
                f"tweedie_value on {name!r} at alpha={lv.alpha:.3f}",
            )
            if reason:
                return reason
    return None


JENSEN_CASES = (  # (m, C, c, P, λ): at the peak, far from it, nearly λ → 0, large λ, 1-D
    ([0.5, 1.0], [[0.3, 0.1], [0.1, 0.2]], [0.5, 1.0], [[1.0, 0.0], [0.0, 1.0]], 2.0),
    ([-2.0, 0.0], [[0.3, 0.1], [0.1, 0.3]], [0.5, 1.0], [[1.0, 0.0], [0.0, 1.0]], 2.0),
    ([1.0, -1.0], [[0.5, 0.0], [0.0, 0.1]], [0.0, 0.0], [[2.0, 0.5], [0.5, 1.0]], 0.01),
    ([0.0, 2.0], [[1.0, -0.2], [-0.2, 0.4]], [1.0, 0.0], [[1.0, 0.0], [0.0, 3.0]], 20.0),
    ([1.5], [[0.7]], [0.0], [[0.5]], 1.0),
)


def _check_jensen_gap(fn) -> str | None:
    for m, cov, c, p, lam in JENSEN_CASES:
        m, cov, c, p = (torch.tensor(v, dtype=_F64) for v in (m, cov, c, p))
        _, log_z = tilt_quadratic(GaussianMixture([1.0], m[None], cov[None]), c, p, lam)
        want = torch.tensor(log_z / lam + 0.5 * float((m - c) @ p @ (m - c)), dtype=_F64)
        reason = compare(
            fn(m.clone(), cov.clone(), c.clone(), p.clone(), lam),
            want,
            f"jensen_gap(m={m.tolist()}, lam={lam})",
            ("V − r(m)",),
        )
        if reason:
            return reason
    return None


def _check_soft_value_mc(fn) -> str | None:
    problem = load_problem("between")
    prior, lam = problem.prior, problem.lam
    target, doubled = problem.target, exact_target(prior, problem.reward, 2 * lam)
    for seed, abar in enumerate(LEVELS):
        lv, x = _states(prior, abar, seed)
        got = fn(
            prior,
            problem.reward,
            x.clone(),
            lv.alpha,
            lv.sigma,
            lam,
            DRAWS,
            torch.Generator().manual_seed(100 + seed),
        )
        parts, reason = _as_parts(got, 1, "soft_value_mc")
        if reason:
            return reason
        got = parts[0]
        if got.shape != (len(x),):
            return f"soft_value_mc returned shape {tuple(got.shape)}, expected ({len(x)},)"
        if not torch.isfinite(got).all():
            return "soft_value_mc returned values that are not finite (use log-sum-exp)"
        exact = target.soft_value(x, lv)
        rho2 = (doubled.log_tilt(x, lv) - 2 * target.log_tilt(x, lv)).exp() - 1
        se, bias = (rho2 / DRAWS).sqrt() / lam, -rho2 / (2 * lam * DRAWS)
        z = (got - exact - bias) / se
        k = int(z.abs().argmax())
        if z[k].abs() > Z_MAX:
            return (
                f"at alpha={lv.alpha:.3f} state {k} gets {got[k].item():.4f} where the exact "
                f"soft value is {exact[k].item():.4f} (s.e. of {DRAWS} draws "
                f"{se[k].item():.4f}): {z[k].item():+.1f} standard errors off"
            )
    return None


register(
    Exercise(
        "tweedie_value",
        5,
        "Tweedie's value r(E[x0 | x_t]) of an exact mixture",
        "per component, Gaussian conditioning gives μ_k + α Σ_k S_k⁻¹ (x − α μ_k) with "
        "S_k = α² Σ_k + σ² I; weight by the responsibilities ρ_k(x) ∝ w_k N(x; α μ_k, "
        "S_k), then apply the reward to the mean",
        _check_tweedie_value,
        tweedie_value,
    )
)
register(
    Exercise(
        "jensen_gap",
        5,
        "the gap between the soft value and Tweedie's value",
        "E[e^{λr}] under N(m, C) is a Gaussian integral (lesson 1's log Z): complete "
        "the square in the exponent, take (1/λ) log of it and subtract r(m)",
        _check_jensen_gap,
        jensen_gap,
    )
)
register(
    Exercise(
        "soft_value_mc",
        5,
        "a Monte-Carlo soft value from exact posterior draws",
        "draw a component per sample from ρ_k(x), then x0 from that component's "
        "Gaussian conditional; return (logsumexp(λ r) − log M)/λ per state",
        _check_soft_value_mc,
        soft_value_mc,
    )
)
