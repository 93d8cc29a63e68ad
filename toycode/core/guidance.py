"""Gradient guidance as backend wrappers: the sampler loop is unchanged, only ε̂ is.

``GuidedBackend(backend, rule)`` answers ``predict`` with a guided ε̂ (k-diffusion's
wrap-the-model pattern); the rest of the contract is the wrapped backend's. Gradients are enabled
only inside the rules, so gradient-free samplers never build a graph. The guided ε̂ is the base
one shifted along a score correction g ≈ ∇_{x_t} log E[e^{λ r(x0)} | x_t]:

    ε̂_guided = ε̂ − σ_t · g,  x̂0_guided = x̂0 + (σ_t²/α_t) · g
    (x_t = α_t x0 + σ_t ε and ε̂ = −σ_t ∇ log p_t, so this adds g to the score; VP: α = √ᾱ,
    σ = √(1 − ᾱ); rectified flow: α = 1 − t, σ = t)

    rule            g                                                         cost per row
    DPS             s ∇_{x_t} r(x̂0(x_t)), through the denoiser (Chung et al.)  1 NFE, 1 backprop
    DPS-detached    s ∇_{x_t} r(x̂0) with ε̂ held fixed: s ∇r(x̂0) / α_t         1 NFE
    DampedDPS       DPS with s_t = λ/(1 + λ p σ²_{0|t}) (Dandapanthula & Boffi)  1 NFE, 1 backprop
    Universal       DPS forward guidance; then m ascent steps on x̂0 + Δ       r NFE, r backprops
                    (backward guidance, ε̂ −= (α/σ) Δ); repeated r times with
                    re-noising by the process's forward transition
                    (self-recurrence; Bansal et al. 2023)
    Exact           λ ∇V_t = ∇ log_tilt(x_t) of the exact target               1 NFE
    Manifold        x̂0 += s σ²_{0|t} ∇r(x̂0), ε̂ kept (MPGD-style; UniCoDe)      1 NFE
    ScoreSum        Σ_k c_k ε̂_k: the score of Π_k p_k,t^{c_k} (annealing, products)  K NFE

Where α_t = 0 (a flow grid's first point) x_t carries nothing of x0, so the correction
∇ log E[e^{λr(x0)} | x_t] vanishes and no rule moves ε̂ or x̂0. With the exact denoiser and the
exact rule, the guided ε̂ is exactly −σ ∇ log p*_t: the tilted reverse process, up to time
discretisation. DPS and exact guidance also return the unguided (ε̂, x̂0) in the prediction's
``unguided``, so twisted SMC (TDS) can read off g and weigh its proposals against the model.
"""

from __future__ import annotations

import torch

from ..utils.checks import check_range
from .backend import Backend, Prediction

__all__ = [
    "GuidedBackend",
    "DPS",
    "DampedDPS",
    "Universal",
    "ExactGuidance",
    "ManifoldStep",
    "ScoreSum",
    "posterior_variance",
    "require_differentiable",
]


def require_differentiable(reward, method: str) -> None:
    """Refuse gradient guidance with a reward that has no gradient."""
    if not getattr(reward, "differentiable", False):
        name = reward.to_dict()["type"] if hasattr(reward, "to_dict") else repr(reward)
        raise ValueError(
            f"method {method!r} needs a differentiable reward, but reward {name!r} "
            f"is not; use a gradient-free method (code, bon, svdd, smc)"
        )


class GuidedBackend:
    """A backend whose ``predict`` returns the guided ε̂ of ``rule``; the rest is the inner one's."""

    def __init__(self, inner: Backend, rule):
        self.inner, self.rule = inner, rule
        self.process = inner.process
        self.name = f"{getattr(inner, 'name', 'backend')}+{type(rule).__name__}"

    def prior_sample(self, n, generator=None):
        return self.inner.prior_sample(n, generator)

    def predict(self, x, i, generator=None):
        return self.rule(self.inner, x, i, generator)

    def decode(self, x0):
        return self.inner.decode(x0)

    def noise_to(self, x0, i, generator=None):
        return self.inner.noise_to(x0, i, generator)

    def __repr__(self):
        return f"GuidedBackend({self.inner!r}, {type(self.rule).__name__})"


def _coef(value: float, like: torch.Tensor) -> torch.Tensor:
    """A float64 coefficient cast to the state's dtype only at the end."""
    return torch.as_tensor(value, dtype=torch.float64).to(like.dtype)


def _shift(backend: Backend, i: int, eps, x0, *, g) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε̂ − σ g, x̂0 + (σ²/α) g): the score moved by g; unmoved where α = 0 (see above)."""
    lv = backend.process.level(i)
    if lv.alpha == 0:
        return eps, x0
    return eps - _coef(lv.sigma, g) * g, x0 + _coef(lv.sigma**2 / lv.alpha, g) * g


def _reward_grad(reward, backend: Backend, x_in, x0):
    with torch.enable_grad():
        r = reward(backend.decode(x0))
        return torch.autograd.grad(r.sum(), x_in)[0]


class DPS:
    """Diffusion posterior sampling (Chung et al. 2023): g = s ∇_{x_t} r(x̂0(x_t)).

    ``detach=True`` holds ε̂ fixed, so ∇_{x_t} x̂0 = I/α_t and no gradient passes through the
    denoiser (the official CoDe code's gradient baseline).
    """

    def __init__(self, reward, scale: float, detach: bool = False):
        require_differentiable(reward, "dps-detached" if detach else "dps")
        check_range("scale", scale, 0.0, None)
        self.reward, self.scale, self.detach = reward, scale, detach

    def __call__(self, backend: Backend, x, i: int, generator=None) -> Prediction:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            if self.detach:
                with torch.no_grad():
                    pred = backend.predict(x, i, generator)
                alpha = backend.process.level(i).alpha
                # at α = 0 x̂0 does not depend on x_t: ∇ = 0 (the zero-scaled path keeps a graph)
                x0 = pred.x0 + (xg - x) * (1 / alpha if alpha > 0 else 0.0)
            else:
                pred = backend.predict(xg, i, generator)
                x0 = pred.x0
            g = _reward_grad(self.reward, backend, xg, x0)
        base = pred.eps.detach(), pred.x0.detach()
        eps, x0 = _shift(backend, i, *base, g=self.scale_at(backend, i) * g)
        return Prediction(eps, x0, reward_grads=1, backprops=0 if self.detach else 1, unguided=base)

    def scale_at(self, backend: Backend, i: int) -> float:
        """The reward scale at grid index i: s itself (a damped rule makes it time-dependent)."""
        return self.scale


def posterior_variance(level, data_var: float) -> float:
    """σ²_{0|t} = Var[x0 | x_t] per coordinate for a Gaussian base of variance ``data_var``
    (x_t = α x0 + σ ε): s²σ² / (α²s² + σ²); s² where α = 0, 0 at σ = 0."""
    a2, s2 = level.alpha**2, level.sigma**2
    return data_var * s2 / (a2 * data_var + s2) if a2 * data_var + s2 > 0 else 0.0


def reward_curvature(reward) -> float:
    """p for a reward that is −(p/2)‖x − c‖² (a toycode Quadratic with precision p·I); 2 for
    any other, the damped-guidance paper's r = −‖x − c‖²."""
    prec = getattr(reward, "precision", None)
    if isinstance(prec, torch.Tensor) and prec.ndim == 2:
        p = float(prec[0, 0])
        if torch.allclose(prec, p * torch.eye(len(prec), dtype=prec.dtype), atol=1e-12):
            return p
    return 2.0


class DampedDPS(DPS):
    """Damped guidance (Dandapanthula & Boffi 2026, arXiv 2606.02884): DPS on Tweedie's mean
    with the time-dependent scale λ_t = λ / (1 + λ p σ²_{0|t}).

    For r = −(p/2)‖x − c‖² (the paper's −‖x − c‖² is p = 2, where λ_t = λ/(1 + 2λσ²_{0|t})) and
    x0 | x_t Gaussian with mean x̂0 and variance v = σ²_{0|t},
    log E[e^{λ r(x0)} | x_t] = λ r(x̂0) / (1 + λ p v) + const, whose x_t-gradient is
    λ_t ∇_{x_t} r(x̂0(x_t)): on a Gaussian base N(μ, s²I) damped DPS is the exact twisted score.
    σ²_{0|t} is :func:`posterior_variance` with ``data_var`` s² (1 for data scaled to unit
    variance); ``curvature`` p defaults to :func:`reward_curvature`. Elsewhere it is DPS with a
    scale that shrinks where x0 | x_t is wide (early) and tends to λ at the clean end.
    """

    def __init__(self, reward, scale: float, *, data_var: float = 1.0, curvature=None):
        super().__init__(reward, scale)
        check_range("data_var", data_var, 0.0, None)
        self.data_var = data_var
        self.curvature = reward_curvature(reward) if curvature is None else curvature
        check_range("curvature", self.curvature, 0.0, None)

    def scale_at(self, backend: Backend, i: int) -> float:
        """λ_t = λ / (1 + λ p σ²_{0|t}) at grid index i."""
        v = posterior_variance(backend.process.level(i), self.data_var)
        return self.scale / (1.0 + self.scale * self.curvature * v)


class Universal:
    """Universal guidance (Bansal et al. 2023, Alg. 1): forward + backward guidance, recurrence.

    ``backward_steps`` m ascent steps of size ``backward_lr`` on r(x̂0 + Δ); ``recurrence`` r
    repeats of (guided step, re-noise back to t) per step, drawing noise from the sampler's
    generator; the re-noised state is returned as the prediction's ``x``.
    """

    def __init__(
        self,
        reward,
        scale: float,
        backward_steps: int = 0,
        backward_lr: float = 0.1,
        recurrence: int = 1,
    ):
        require_differentiable(reward, "universal")
        check_range("scale", scale, 0.0, None)
        check_range("backward_steps", backward_steps, 0, None)
        check_range("backward_lr", backward_lr, 0.0, None)
        check_range("recurrence", recurrence, 1, None)
        self.forward = DPS(reward, scale)
        self.reward, self.m, self.lr, self.r = reward, backward_steps, backward_lr, recurrence

    def _guided(self, backend: Backend, x, i: int, generator):
        pred = self.forward(backend, x, i, generator)
        eps, x0 = pred.eps, pred.x0
        lv = backend.process.level(i)
        if self.m and lv.alpha > 0:
            delta = torch.zeros_like(x0)
            for _ in range(self.m):
                with torch.enable_grad():
                    d = delta.requires_grad_(True)
                    delta = (d + self.lr * _reward_grad(self.reward, backend, d, x0 + d)).detach()
            # x̂0 + Δ at fixed x_t means ε̂ = (x_t − α (x̂0 + Δ))/σ = ε̂ − (α/σ) Δ
            eps, x0 = eps - _coef(lv.alpha / lv.sigma, delta) * delta, x0 + delta
        return eps, x0

    def __call__(self, backend: Backend, x, i: int, generator=None) -> Prediction:
        process = backend.process
        for _ in range(self.r - 1):  # self-recurrence: step, then re-noise to the same level
            eps, x0 = self._guided(backend, x, i, generator)
            x = process.forward(process.step(x, i, eps, generator, x0=x0), i + 1, i, generator)
        eps, x0 = self._guided(backend, x, i, generator)
        return Prediction(
            eps,
            x0,
            x=x if self.r > 1 else None,
            nfe=self.r,
            reward_grads=self.r * (1 + self.m),
            backprops=self.r,
        )


class ExactGuidance:
    """The twisted score ∇ log p_t + λ∇V_t from an exact target (the gold standard)."""

    def __init__(self, target):
        self.target = target

    def __call__(self, backend: Backend, x, i: int, generator=None) -> Prediction:
        pred = backend.predict(x, i, generator)
        with torch.enable_grad():
            xg = x.detach().double().requires_grad_(True)
            level = backend.process.level(i)
            g = torch.autograd.grad(self.target.log_tilt(xg, level).sum(), xg)[0]
        eps, x0 = _shift(backend, i, pred.eps, pred.x0, g=g.to(x.dtype))
        return Prediction(eps, x0, reward_grads=1, unguided=(pred.eps, pred.x0))


class ManifoldStep:
    """A gradient step on the clean estimate alone, as UniCoDe's code takes it (Goyal, Singh &
    Jamali-Rad 2025, arXiv 2512.12339, after MPGD, He et al. 2023, arXiv 2311.16424):
    x̂0' = x̂0 + s σ²_{0|t} ∇r(x̂0) with ε̂ kept, so the step x' = α' x̂0' + √(σ'² − η²) ε̂ + η z
    moves only its clean part. The gradient is r's at x̂0, not through the denoiser (no
    backprop). The step size σ²_{0|t} s (``posterior_variance`` with ``data_var``) is the
    first-order shift of E[x0 | x_t] under the tilt e^{s r} — toycode's choice where the paper's
    code uses a constant — so it vanishes at the clean end instead of pushing every late step.
    """

    def __init__(self, reward, scale: float, *, data_var: float = 1.0):
        require_differentiable(reward, "unicode")
        check_range("scale", scale, 0.0, None)
        check_range("data_var", data_var, 0.0, None)
        self.reward, self.scale, self.data_var = reward, scale, data_var

    def __call__(self, backend: Backend, x, i: int, generator=None) -> Prediction:
        pred = backend.predict(x, i, generator)
        v = posterior_variance(backend.process.level(i), self.data_var)
        if v == 0 or self.scale == 0:
            return Prediction(pred.eps, pred.x0, reward_grads=1)
        with torch.enable_grad():
            x0 = pred.x0.detach().requires_grad_(True)
            g = torch.autograd.grad(self.reward(backend.decode(x0)).sum(), x0)[0]
        return Prediction(pred.eps, pred.x0 + _coef(self.scale * v, g) * g, reward_grads=1)


class ScoreSum:
    """The score of a geometric composition Π_k p_{k,t}^{c_k}: ε̂ = c_0 ε̂_0 + Σ_k c_k ε̂_k, the
    wrapped backend's ε̂_0 and those of ``others`` (one per extra model) — annealing p^β
    (no others, c_0 = β) or a product of experts p_1·p_2 (c = (1, 1)), as Feynman–Kac
    correctors propose (Skreta et al. 2025, arXiv 2503.02819). x̂0 is Tweedie's of the composed
    ε̂. Sampling with it alone does not reach the composition (the noised composition is not
    the composition of noised densities); twisted SMC weighs it against the wrapped model's own
    (ε̂_0, x̂0_0), returned as ``unguided``.
    """

    def __init__(self, others=(), weights=(1.0,)):
        if len(weights) != 1 + len(others):
            raise ValueError(
                f"a score sum needs one weight per model: {1 + len(others)} models, "
                f"{len(weights)} weights"
            )
        for c in weights:
            check_range("composition weight", c, 0.0, None, low_open=True)
        self.others, self.weights = tuple(others), tuple(float(c) for c in weights)

    def __call__(self, backend: Backend, x, i: int, generator=None) -> Prediction:
        lv = backend.process.level(i)
        if lv.alpha == 0:
            raise ValueError(
                "a score sum forms x̂0 by Tweedie's formula, which needs alpha > 0: "
                "use a grid whose first point is not pure noise (a VP process)"
            )
        pred = backend.predict(x, i, generator)
        eps = _coef(self.weights[0], pred.eps) * pred.eps
        for other, c in zip(self.others, self.weights[1:]):
            eps = eps + _coef(c, pred.eps) * other.predict(x, i, generator).eps
        x0 = (x - _coef(lv.sigma, x) * eps) / _coef(lv.alpha, x)
        return Prediction(eps, x0, nfe=1 + len(self.others), unguided=(pred.eps, pred.x0))
