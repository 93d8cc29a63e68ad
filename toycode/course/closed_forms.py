"""Exercises with closed-form answers (lessons 1–3): the tilt and its frontier, Tweedie, the
DDIM(η) step, the mixture score and best-of-N. Each checker compares the learner's value with
the library's own exact code (float64) on a few fixed cases, at a tolerance far below any
conceptual error."""

from __future__ import annotations

import math

import torch

from ..core.diffusion import NoiseLevel, Process, to_eps_x0
from ..exact.gmm import GaussianMixture, tilt_linear, tilt_quadratic
from ..exact.problems import load_problem
from ..exact.rewards import Linear
from ..exact.targets import MixtureTarget
from ..exact.theory import bon_kl, bon_win_probability
from .grading import Exercise, register

_F64 = torch.float64
RTOL, ATOL = 1e-6, 1e-9  # float64 answers: any formula error is many orders larger


def _as_parts(value, parts: int, what: str):
    """The answer as ``parts`` float64 tensors, or the reason it cannot be read as such."""
    if value is None:
        return None, f"{what} returned None: return the value instead of printing it"
    items = value if parts > 1 else (value,)
    if parts > 1 and (not isinstance(value, (tuple, list)) or len(value) != parts):
        return None, f"{what} must return {parts} values (a tuple), got {type(value).__name__}"
    try:
        return [torch.as_tensor(v, dtype=_F64) for v in items], None
    except (TypeError, ValueError, RuntimeError):
        return None, f"{what} returned {type(value).__name__}, which is not a number or tensor"


def compare(got, want, what: str, names: tuple[str, ...] = ("value",)) -> str | None:
    """None if ``got`` matches ``want`` (a tensor, or a tuple of them), else the first mismatch."""
    want_parts = list(want) if isinstance(want, tuple) else [want]
    got_parts, reason = _as_parts(got, len(want_parts), what)
    if reason:
        return reason
    for name, g, w in zip(names, got_parts, want_parts):
        w = torch.as_tensor(w, dtype=_F64)
        if g.shape != w.shape:
            return f"{what}: {name} has shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        if not torch.isfinite(g).all():
            return f"{what}: {name} is not finite"
        if not torch.allclose(g, w, rtol=RTOL, atol=ATOL):
            k = int(((g - w).abs() / (ATOL + RTOL * w.abs())).flatten().argmax())
            return (
                f"{what}: {name} is {g.flatten()[k].item():.6g} where the exact value is "
                f"{w.flatten()[k].item():.6g}"
            )
    return None


# -- lesson 1: the tilted target ------------------------------------------------------------------


def tilted_gaussian(mu: float, var: float, c: float, p: float, lam: float):
    """N(mu, var) tilted by e^{λ r}, r(x) = −p/2 (x − c)²: (mean, variance, log Z_λ)."""
    precision = 1.0 / var + lam * p  # precisions add
    mean = (mu / var + lam * p * c) / precision  # precision-weighted mean
    s = 1.0 + lam * p * var
    log_z = -0.5 * math.log(s) - 0.5 * lam * p * (mu - c) ** 2 / s  # E_p[e^{λr}], Gaussian
    return mean, 1.0 / precision, log_z


def _check_tilted_gaussian(fn) -> str | None:
    for mu, var, c, p, lam in (
        (0.0, 1.0, 1.0, 1.0, 1.0),
        (-2.0, 0.3, 0.5, 1.0, 2.0),
        (1.5, 2.0, -1.0, 0.5, 0.1),
        (0.0, 1.0, 3.0, 2.0, 0.0),
    ):
        prior = GaussianMixture([1.0], [[mu]], [[[var]]])
        tilted, log_z = tilt_quadratic(prior, torch.tensor([c]), torch.tensor([[p]]), lam)
        want = (tilted.means[0, 0], tilted.covs[0, 0, 0], torch.tensor(log_z))
        reason = compare(
            fn(mu, var, c, p, lam),
            want,
            f"tilted_gaussian({mu}, {var}, {c}, {p}, {lam})",
            ("the mean", "the variance", "log Z"),
        )
        if reason:
            return reason
    return None


def tilted_weights(
    weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor, a: torch.Tensor, lam: float
) -> torch.Tensor:
    """The mixture weights w*_k of p* ∝ p e^{λ aᵀx}: w*_k ∝ w_k exp(λ aᵀμ_k + ½ λ² aᵀΣ_k a)."""
    log_w = weights.log() + lam * means @ a + 0.5 * lam**2 * ((covs @ a) @ a)
    return torch.softmax(log_w, 0)


def _check_tilted_weights(fn) -> str | None:
    prior = load_problem("between").prior
    for a, lam in (([1.0, 0.5], 0.5), ([1.0, 0.5], 2.0), ([-0.3, 1.0], 1.0)):
        a = torch.tensor(a, dtype=_F64)
        want = tilt_linear(prior, a, lam)[0].weights
        got = fn(prior.weights.clone(), prior.means.clone(), prior.covs.clone(), a, lam)
        reason = compare(got, want, f"tilted_weights(..., a={a.tolist()}, lam={lam})")
        if reason:
            return reason
    return None


def tilt_frontier(
    weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor, a: torch.Tensor, lam: float
):
    """(log Z_λ, E_{p*}[r], KL(p*‖p)) of a mixture under the linear reward r(x) = aᵀx: log Z is
    the log-sum-exp of the unnormalised weights, E_{p*}[r] = Σ_k w*_k aᵀ(μ_k + λΣ_k a), and
    KL = λ E_{p*}[r] − log Z."""
    cov_a = covs @ a
    log_w = weights.log() + lam * means @ a + 0.5 * lam**2 * (cov_a @ a)
    log_z = torch.logsumexp(log_w, 0)
    reward_mean = torch.softmax(log_w, 0) @ ((means + lam * cov_a) @ a)
    return log_z, reward_mean, lam * reward_mean - log_z


def _check_tilt_frontier(fn) -> str | None:
    prior = load_problem("between").prior
    for a, lam in (([1.0, 0.5], 0.5), ([1.0, 0.5], 2.0), ([-0.3, 1.0], 1.0), ([0.0, 1.0], 0.0)):
        a = torch.tensor(a, dtype=_F64)
        target = MixtureTarget(prior, Linear(a), lam)
        want = tuple(
            torch.tensor(v, dtype=_F64)
            for v in (target.log_z, target.reward_mean, target.kl_to_base)
        )
        got = fn(prior.weights.clone(), prior.means.clone(), prior.covs.clone(), a, lam)
        reason = compare(
            got,
            want,
            f"tilt_frontier(..., a={a.tolist()}, lam={lam})",
            ("log Z", "E_p*[r]", "KL(p*‖p)"),
        )
        if reason:
            return reason
    return None


# -- lesson 2: diffusion in one lesson -------------------------------------------------------------


def tweedie(x: torch.Tensor, eps: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """x̂0 = E[x0 | x_t] = (x − σ ε̂)/α for x_t = α x0 + σ ε."""
    return (x - sigma * eps) / alpha


def _cases(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(5, 2, generator=g, dtype=_F64),
            torch.randn(5, 2, generator=g, dtype=_F64),
            abar,
        )
        for abar in (0.9, 0.5, 0.05)
    ]


def _check_tweedie(fn) -> str | None:
    for x, eps, abar in _cases():
        lv = NoiseLevel.vp(abar)
        want = to_eps_x0(eps, "epsilon", x, lv.alpha, lv.sigma)[1]
        reason = compare(
            fn(x.clone(), eps.clone(), lv.alpha, lv.sigma), want, f"tweedie at alpha={lv.alpha:.3f}"
        )
        if reason:
            return reason
    return None


def ddim_step(
    x: torch.Tensor,
    eps: torch.Tensor,
    alpha: float,
    sigma: float,
    alpha_next: float,
    sigma_next: float,
    eta: float,
    z: torch.Tensor,
) -> torch.Tensor:
    """The DDIM(η) step (design note §6) with Tweedie's x̂0 and the noise draw z given."""
    x0 = (x - sigma * eps) / alpha
    s = eta * sigma_next * math.sqrt(max(1 - (alpha * sigma_next / (alpha_next * sigma)) ** 2, 0))
    return alpha_next * x0 + math.sqrt(sigma_next**2 - s**2) * eps + s * z


def _check_ddim_step(fn) -> str | None:
    for eta in (0.0, 0.5, 1.0):
        process = Process.make(10, eta=eta)
        for (x, eps, _), i in zip(_cases(1), (0, 4, 8)):
            mean, s = process.step_moments(x, i, eps)
            z = torch.randn(x.shape, generator=torch.Generator().manual_seed(i), dtype=_F64)
            a, b = process.level(i), process.level(i + 1)
            got = fn(x.clone(), eps.clone(), a.alpha, a.sigma, b.alpha, b.sigma, eta, z.clone())
            reason = compare(got, mean + s * z, f"ddim_step from grid index {i} at eta={eta}")
            if reason:
                return reason
    return None


def mixture_score(
    weights: torch.Tensor,
    means: torch.Tensor,
    covs: torch.Tensor,
    x: torch.Tensor,
    alpha: float,
    sigma: float,
) -> torch.Tensor:
    """∇ log p_t(x) of the noised mixture p_t = Σ_k w_k N(α μ_k, α² Σ_k + σ² I), shape (n, d)."""
    cov_t = alpha**2 * covs + sigma**2 * torch.eye(means.shape[1], dtype=covs.dtype)
    diff = x[:, None, :] - alpha * means[None]  # (n, K, d)
    prec_diff = torch.linalg.solve(cov_t[None], diff.unsqueeze(-1)).squeeze(-1)
    log_comp = (
        weights.log() - 0.5 * torch.logdet(cov_t) - 0.5 * (diff * prec_diff).sum(-1)
    )  # (n, K), up to a const
    resp = torch.softmax(log_comp, 1)
    return -(resp.unsqueeze(-1) * prec_diff).sum(1)


def _check_mixture_score(fn) -> str | None:
    prior = load_problem("between").prior
    for x, _, abar in _cases(2):
        lv = NoiseLevel.vp(abar)
        want = prior.noised(lv).score(x)
        got = fn(
            prior.weights.clone(),
            prior.means.clone(),
            prior.covs.clone(),
            x.clone(),
            lv.alpha,
            lv.sigma,
        )
        reason = compare(got, want, f"mixture_score at alpha={lv.alpha:.3f}")
        if reason:
            return reason
    return None


# -- lesson 3: best-of-N --------------------------------------------------------------------------


def bon_kl_answer(n: int) -> float:
    """KL(q_N ‖ p) = log N − (N − 1)/N for argmax best-of-N with a continuous reward."""
    return math.log(n) - (n - 1) / n


def bon_win_rate(n: int) -> float:
    """P(best of N beats one independent base sample) = N/(N + 1)."""
    return n / (n + 1)


def _closed_form_checker(name: str, exact):
    def checker(fn) -> str | None:
        for n in (1, 2, 3, 8, 64):
            reason = compare(fn(n), torch.tensor(exact(n), dtype=_F64), f"{name}({n})")
            if reason:
                return reason
        return None

    return checker


register(
    Exercise(
        "tilted_gaussian",
        1,
        "a Gaussian tilted by a quadratic reward",
        "precisions add (1/var + λp); the mean is the precision-weighted average of "
        "mu and c; log Z = log E_p[e^{λ r}] is a Gaussian integral",
        _check_tilted_gaussian,
        tilted_gaussian,
    )
)
register(
    Exercise(
        "tilted_weights",
        1,
        "a mixture's weights under a linear tilt",
        "each component's weight grows by its own log Z_k = λ aᵀμ_k + ½λ² aᵀΣ_k a; "
        "normalise the weights to sum to one",
        _check_tilted_weights,
        tilted_weights,
    )
)
register(
    Exercise(
        "tilt_frontier",
        1,
        "log Z, E_p*[r] and KL(p*‖p) of a tilted mixture",
        "log Z = logsumexp_k (log w_k + λ aᵀμ_k + ½λ² aᵀΣ_k a); E_p*[r] weighs each "
        "tilted mean μ_k + λΣ_k a by w*_k; KL(p*‖p) = λ E_p*[r] − log Z",
        _check_tilt_frontier,
        tilt_frontier,
    )
)
register(
    Exercise(
        "tweedie",
        2,
        "Tweedie's formula for ε-prediction",
        "solve x_t = α x0 + σ ε for x0 with ε replaced by its estimate",
        _check_tweedie,
        tweedie,
    )
)
register(
    Exercise(
        "ddim_step",
        2,
        "the DDIM(η) step",
        "s = η σ' √(1 − (α σ')²/(α' σ)²); x' = α' x̂0 + √(σ'² − s²) ε̂ + s z with x̂0 from Tweedie",
        _check_ddim_step,
        ddim_step,
    )
)
register(
    Exercise(
        "mixture_score",
        2,
        "the exact score of a noised Gaussian mixture",
        "noise each component (α μ_k, α² Σ_k + σ² I); the score is the "
        "responsibility-weighted sum of −Σ_{k,t}⁻¹ (x − α μ_k)",
        _check_mixture_score,
        mixture_score,
    )
)
register(
    Exercise(
        "bon_kl",
        3,
        "the exact KL of best-of-N",
        "the output density is "
        "N F(r)^{N−1} p; integrate log(N F^{N−1}) against it (u = F(r) is uniform)",
        _closed_form_checker("bon_kl", bon_kl),
        bon_kl_answer,
    )
)
register(
    Exercise(
        "bon_win_rate",
        3,
        "best-of-N's win rate",
        "the best of N and one fresh sample are N + 1 exchangeable draws; which one is largest?",
        _closed_form_checker("bon_win_rate", bon_win_probability),
        bon_win_rate,
    )
)
