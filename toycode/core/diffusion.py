"""Noise levels, sampling grids and the reverse transitions of one process over (α_t, σ_t).

Every forward process here is x_t = α_t x0 + σ_t ε on a descending grid, with (α, σ) = (1, 0) at
the clean end (docs/design.md §6). Two families fill the grid:

    variance-preserving (DDPM, SD 1.x/2.x)   α = √ᾱ_t,  σ = √(1 − ᾱ_t)
    rectified flow (SD3, FLUX)               α = 1 − t,  σ = t   (diffusers' FlowMatchEuler grid)

Everything is a pure function of immutable float64 buffers (nothing changes after creation,
unlike diffusers' ``set_timesteps``). Coefficients are formed in float64; only the final one is
cast to the state's dtype, so fp16 latents never see 1 − ᾱ rounded. Notation (Ho et al. 2020;
Song et al. 2021, "DDIM"; Liu et al. 2023, "rectified flow"):

    code name        paper symbol
    ---------        ------------
    alphas_cumprod   ᾱ_t = Π_{s≤t} (1 − β_s),  t = 0 … num_train_steps − 1
    timesteps[i]     the model's time input at grid point i = 0 … T − 1 (training step for VP,
                     1000·t for flow)
    alphas[i]        α at grid point i;  alphas[T] the clean end (1, or √ᾱ_final for SD's DDIM)
    sigmas[i]        σ at grid point i;  sigmas[T] the clean end
    eta              DDIM η: 0 the ODE, 1 the posterior q(x_{t'} | x_t, x0) of this process

Model outputs and (ε̂, x̂0) convert into each other in one place, :func:`to_eps_x0` and
:func:`from_eps_x0`:

    "epsilon"        ε̂                         x̂0 = (x − σ ε̂)/α
    "sample"         x̂0                        ε̂ = (x − α x̂0)/σ
    "v_prediction"   v̂ = α ε̂ − σ x̂0            x̂0 = (α x − σ v̂)/(α² + σ²), ε̂ = (σ x + α v̂)/(α² + σ²)
    "flow"           v̂ = dx/dt = ε̂ − x̂0        x̂0 = x − σ v̂,  ε̂ = x + α v̂   (α + σ = 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..utils.checks import check_choice, check_range

__all__ = [
    "linear_schedule",
    "cosine_schedule",
    "NoiseLevel",
    "Process",
    "PREDICTIONS",
    "to_eps_x0",
    "from_eps_x0",
    "flow_sigmas",
]

PREDICTIONS = ("epsilon", "sample", "v_prediction", "flow")
"""What a denoiser may output (diffusers' ``prediction_type`` names, plus "flow" velocity)."""


def linear_schedule(
    num_train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """ᾱ_t for linearly spaced β (Ho et al. 2020), float64."""
    check_range("num_train_steps", num_train_steps, 1, None)
    betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def cosine_schedule(
    num_train_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999
) -> torch.Tensor:
    """ᾱ_t for the cosine schedule (Nichol & Dhariwal 2021, eq. 17), float64."""
    check_range("num_train_steps", num_train_steps, 1, None)
    u = torch.arange(num_train_steps + 1, dtype=torch.float64) / num_train_steps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1.0 - betas, dim=0)


def strided_timesteps(num_train_steps: int, steps: int) -> torch.Tensor:
    """T evenly spaced training timesteps from num_train_steps − 1 down to 0."""
    check_range("steps", steps, 1, num_train_steps)
    return torch.linspace(num_train_steps - 1, 0, steps, dtype=torch.float64).round().long()


def _shifted(sigma, shift: float):
    """SD3's timestep shift σ ↦ sσ / (1 + (s − 1)σ) (Esser et al. 2024, eq. 23)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def flow_sigmas(steps: int, shift: float = 1.0, num_train_steps: int = 1000) -> torch.Tensor:
    """The T noise levels t_i of diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps``.

    Its training grid is t = k/num_train_steps, k = num_train_steps … 1, shifted; inference takes
    ``steps`` points evenly spaced from the largest (1) to the smallest of those, and shifts them
    again (diffusers' order of operations, kept so the grids agree), float64.
    """
    check_range("steps", steps, 1, num_train_steps)
    check_range("shift", shift, 0.0, None, low_open=True)
    t_min = _shifted(1.0 / num_train_steps, shift)
    return _shifted(torch.linspace(1.0, t_min, steps, dtype=torch.float64), shift)


@dataclass(frozen=True)
class NoiseLevel:
    """One noise level (α, σ) of x_t = α x0 + σ ε; hashable, so exact code can memoise on it.

    A plain float where a level is expected means a variance-preserving ᾱ (``NoiseLevel.vp``).
    """

    alpha: float
    sigma: float

    def __post_init__(self):
        a, s = float(self.alpha), float(self.sigma)
        check_range("alpha", a, 0.0, None)
        check_range("sigma", s, 0.0, None)
        if a == 0 and s == 0:
            raise ValueError("alpha and sigma cannot both be 0")
        object.__setattr__(self, "alpha", a)
        object.__setattr__(self, "sigma", s)

    @classmethod
    def vp(cls, abar: float) -> "NoiseLevel":
        """α = √ᾱ, σ = √(1 − ᾱ)."""
        check_range("abar", float(abar), 0.0, 1.0)
        return cls(math.sqrt(float(abar)), math.sqrt(1.0 - float(abar)))

    @classmethod
    def flow(cls, t: float) -> "NoiseLevel":
        """Rectified flow: α = 1 − t, σ = t."""
        check_range("t", float(t), 0.0, 1.0)
        return cls(1.0 - float(t), float(t))

    @classmethod
    def of(cls, level: "NoiseLevel | float") -> "NoiseLevel":
        """``level`` itself, or the VP level of a float ᾱ."""
        return level if isinstance(level, NoiseLevel) else cls.vp(level)

    @property
    def clean(self) -> bool:
        """σ = 0: x_t is x0 itself (scaled by α)."""
        return self.sigma == 0


def to_eps_x0(
    output: torch.Tensor, kind: str, x: torch.Tensor, alpha: float, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε̂, x̂0) from a model ``output`` of ``kind`` at state x and level (α, σ).

    Coefficients are formed in float64 and cast to x's dtype. "epsilon" needs α > 0 (at α = 0 the
    state says nothing about x0 and neither does ε̂); "sample" needs σ > 0; "flow" needs α + σ = 1.
    """
    check_choice("kind", kind, PREDICTIONS)
    a, s = float(alpha), float(sigma)
    if kind == "epsilon":
        if a == 0:
            raise ValueError("x̂0 from an epsilon prediction needs alpha > 0, got alpha=0")
        return output, _lincomb((1 / a, x), (-s / a, output))
    if kind == "sample":
        if s == 0:
            raise ValueError("ε̂ from a sample prediction needs sigma > 0, got sigma=0")
        return _lincomb((1 / s, x), (-a / s, output)), output
    if kind == "v_prediction":
        n = a * a + s * s
        return (_lincomb((s / n, x), (a / n, output)), _lincomb((a / n, x), (-s / n, output)))
    _check_flow(a, s)
    return _lincomb((1.0, x), (a, output)), _lincomb((1.0, x), (-s, output))


def from_eps_x0(
    eps: torch.Tensor, x0: torch.Tensor, kind: str, alpha: float, sigma: float
) -> torch.Tensor:
    """The model output of ``kind`` that :func:`to_eps_x0` maps to (ε̂, x̂0) (its inverse)."""
    check_choice("kind", kind, PREDICTIONS)
    a, s = float(alpha), float(sigma)
    if kind == "epsilon":
        return eps
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return _lincomb((a, eps), (-s, x0))
    _check_flow(a, s)
    return _lincomb((1.0, eps), (-1.0, x0))


_HALF = (torch.float16, torch.bfloat16)


def _lincomb(*terms: tuple[float, torch.Tensor]) -> torch.Tensor:
    """Σ c_k t_k for float64 coefficients c_k, each cast once to the arithmetic dtype: the
    tensors' own, or float32 for half precision (x − σ ε̂ cancels at low signal-to-noise, where
    fp16 keeps three digits; diffusers' flow step upcasts likewise). Returned in the first
    tensor's dtype."""
    dtype = terms[0][1].dtype
    work = torch.float32 if dtype in _HALF else dtype

    def term(c: float, t: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(c, dtype=torch.float64).to(work) * t.to(work)

    out = term(*terms[0])
    for c, t in terms[1:]:
        out = out + term(c, t)
    return out.to(dtype)


def _check_flow(a: float, s: float) -> None:
    if abs(a + s - 1) > 1e-9:
        raise ValueError(
            f"a flow velocity needs alpha + sigma = 1 (rectified flow), got alpha={a}, sigma={s}"
        )


@dataclass(frozen=True)
class Process:
    """A reverse process over a fixed descending grid of (α, σ): DDIM(η) steps in (α, σ) form.

    ``Process.make(steps=100)`` gives the 1000-step linear VP schedule strided to 100 steps;
    ``Process.make(steps, "flow")`` or ``Process.flow(steps, shift)`` rectified flow on diffusers'
    FlowMatchEuler grid. The grid index ``i`` is the only notion of time samplers use; ``i = T``
    is the clean end. ``kind`` ("vp" | "flow") names the family the grid came from.
    """

    alphas: torch.Tensor
    sigmas: torch.Tensor
    timesteps: torch.Tensor
    eta: float = 1.0
    kind: str = "vp"
    abar: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        a = torch.as_tensor(self.alphas, dtype=torch.float64)
        s = torch.as_tensor(self.sigmas, dtype=torch.float64)
        ts = torch.as_tensor(self.timesteps)
        if ts.ndim != 1 or len(ts) < 1:
            raise ValueError(f"timesteps must be a non-empty 1-D grid, got shape {tuple(ts.shape)}")
        if a.shape != (len(ts) + 1,) or s.shape != a.shape:
            raise ValueError(
                f"alphas and sigmas must hold T + 1 = {len(ts) + 1} levels, got "
                f"{tuple(a.shape)} and {tuple(s.shape)}"
            )
        if (
            (a < 0).any()
            or (s < 0).any()
            or not (torch.isfinite(a).all() and torch.isfinite(s).all())
        ):
            raise ValueError("alphas and sigmas must be finite and non-negative")
        if (s[:-1] <= 0).any() or (a[1:] <= 0).any():
            raise ValueError(
                "sigma must be > 0 before the clean end and alpha > 0 after the first grid point"
            )
        snr = a / s
        if (snr[1:] <= snr[:-1]).any():
            raise ValueError(
                "the grid must run from noisy to clean: alpha/sigma strictly increasing"
            )
        check_range("eta", self.eta, 0.0, 1.0)
        check_choice("kind", self.kind, ("vp", "flow"))
        object.__setattr__(self, "alphas", a)
        object.__setattr__(self, "sigmas", s)
        object.__setattr__(self, "timesteps", ts)
        # the variance-preserving ᾱ with the same signal-to-noise ratio (ᾱ itself for VP)
        object.__setattr__(self, "abar", a**2 / (a**2 + s**2))

    @classmethod
    def vp(
        cls,
        alphas_cumprod: torch.Tensor,
        timesteps: torch.Tensor,
        eta: float = 1.0,
        final_abar: float = 1.0,
    ) -> "Process":
        """A variance-preserving process: ᾱ at the grid's training ``timesteps``, then
        ``final_abar`` at the clean end (1.0; SD's DDIM with set_alpha_to_one=False uses ᾱ_0)."""
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        ts = torch.as_tensor(timesteps, dtype=torch.long)
        if ts.ndim != 1 or len(ts) < 1:
            raise ValueError(f"timesteps must be a non-empty 1-D grid, got shape {tuple(ts.shape)}")
        if (ts[1:] >= ts[:-1]).any():
            raise ValueError("timesteps must be strictly descending")
        if ts[0] >= len(ac) or ts[-1] < 0:
            raise ValueError(f"timesteps must lie in [0, {len(ac) - 1}], got {ts[0]}..{ts[-1]}")
        check_range("final_abar", final_abar, 0.0, 1.0, low_open=True)
        abar = torch.cat([ac[ts], ac.new_tensor([final_abar])])
        return cls(abar.sqrt(), (1 - abar).sqrt(), ts, eta, "vp")

    @classmethod
    def flow(
        cls, steps: int = 100, shift: float = 1.0, num_train_steps: int = 1000, eta: float = 1.0
    ) -> "Process":
        """Rectified flow (α = 1 − t, σ = t) on the grid of diffusers'
        ``FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(steps)``, then t = 0;
        the model's time input is 1000·t, as there."""
        t = flow_sigmas(steps, shift, num_train_steps)
        t_all = torch.cat([t, t.new_zeros(1)])
        return cls(1 - t_all, t_all, t * num_train_steps, eta, "flow")

    @classmethod
    def make(
        cls,
        steps: int = 100,
        schedule: str = "linear",
        num_train_steps: int = 1000,
        eta: float = 1.0,
        *,
        shift: float = 1.0,
    ) -> "Process":
        """The ``schedule`` ("linear" | "cosine": VP; "flow": rectified flow with ``shift``)
        on ``steps`` grid points."""
        makers = {"linear": linear_schedule, "cosine": cosine_schedule, "flow": None}
        check_choice("schedule", schedule, makers)
        check_range("steps", steps, 1, num_train_steps)
        if schedule == "flow":
            return cls.flow(steps, shift, num_train_steps, eta)
        return cls.vp(
            makers[schedule](num_train_steps), strided_timesteps(num_train_steps, steps), eta
        )

    @property
    def num_steps(self) -> int:
        """T, the number of reverse steps (grid points)."""
        return len(self.timesteps)

    @property
    def deterministic(self) -> bool:
        """True when ``step`` draws no noise (DDIM η = 0): selection then has nothing to pick."""
        return self.eta == 0

    def level(self, i: int) -> NoiseLevel:
        """(α, σ) at grid index i (i = T: the clean end)."""
        return NoiseLevel(float(self.alphas[i]), float(self.sigmas[i]))

    def _index(self, name: str, i: int, low: int = 0) -> int:
        check_range(name, i, low, self.num_steps)
        return int(i)

    def tweedie(self, x: torch.Tensor, i: int, eps: torch.Tensor) -> torch.Tensor:
        """x̂0 = (x − σ ε̂)/α (Tweedie's formula for ε-prediction); needs α > 0."""
        lv = self.level(self._index("i", i))
        return to_eps_x0(eps, "epsilon", x, lv.alpha, lv.sigma)[1]

    def step(
        self,
        x: torch.Tensor,
        i: int,
        eps: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        to: int | None = None,
        x0: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The DDIM(η) step from grid index i to ``to`` (default i + 1) given ε̂ (design §6):

            s  = η σ' √(1 − (α σ')² / (α' σ)²)
            x' = α' x̂0 + √(σ'² − s²) ε̂ + s z

        η = 1 is the posterior q(x_{t'} | x_t, x0 = x̂0) of this process (DDPM for VP), η = 0 the
        ODE (for rectified flow the Euler step x + (t' − t) v̂). ``x0`` is the model's x̂0: by
        default Tweedie's (x − σ ε̂)/α, which a grid point with α = 0 (flow's t = 1) cannot form.
        """
        terms, noise = self._step_terms(x, i, eps, to=to, x0=x0)
        if noise > 0:
            terms.append((noise, randn_like(x, generator)))
        return _lincomb(*terms).to(x.dtype)

    def step_moments(
        self,
        x: torch.Tensor,
        i: int,
        eps: torch.Tensor,
        *,
        to: int | None = None,
        x0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, float]:
        """The mean (float64) and standard deviation s of :meth:`step`'s Gaussian transition
        (``step`` returns mean + s z); for importance ratios of two steps (twisted SMC)."""
        terms, noise = self._step_terms(x, i, eps, to=to, x0=x0)
        return _lincomb(*((c, t.double()) for c, t in terms)), noise

    def _step_terms(self, x, i, eps, *, to, x0) -> tuple[list, float]:
        """(coefficient, tensor) terms of the step's mean, and its noise scale s (float64)."""
        check_range("i", i, 0, self.num_steps - 1)
        i = int(i)
        j = i + 1 if to is None else self._index("to", to, i + 1)
        a, s = float(self.alphas[i]), float(self.sigmas[i])
        a2, s2 = float(self.alphas[j]), float(self.sigmas[j])
        # (1) the noise scale; 1 − (α σ')²/(α' σ)² ∈ [0, 1] because α/σ increases along the grid
        ratio = (a * s2) / (a2 * s)
        noise = self.eta * s2 * math.sqrt(max(1.0 - ratio * ratio, 0.0))
        keep = math.sqrt(max(s2 * s2 - noise * noise, 0.0))
        # (2) α' x̂0 + √(σ'² − s²) ε̂ + s z; folded into x and ε̂ when x̂0 is Tweedie's
        if x0 is not None:
            return [(a2, x0), (keep, eps)], noise
        if a == 0:
            raise ValueError(f"grid index {i} has alpha = 0: pass the model's x0 to step")
        return [(a2 / a, x), (keep - a2 * s / a, eps)], noise

    def noise_to(
        self, x0: torch.Tensor, i: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample the forward process q(x_{t_i} | x0): α_i x0 + σ_i z."""
        lv = self.level(self._index("i", i))
        return _lincomb((lv.alpha, x0), (lv.sigma, randn_like(x0, generator)))

    def forward(
        self, x: torch.Tensor, frm: int, to: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample the forward transition q(x_{t_to} | x_{t_frm}) to a noisier index to ≤ frm:
        (α/α') x + √(σ² − (α/α')² σ'²) z, with (α', σ') at ``frm`` and (α, σ) at ``to``."""
        frm = self._index("frm", frm)
        to = self._index("to", to)
        if to > frm:
            raise ValueError(f"to must be at most frm={frm} (noisier), got {to}")
        if to == frm:
            return x
        a, s = float(self.alphas[to]), float(self.sigmas[to])
        a2, s2 = float(self.alphas[frm]), float(self.sigmas[frm])
        r = a / a2
        return _lincomb(
            (r, x), (math.sqrt(max(s * s - r * r * s2 * s2, 0.0)), randn_like(x, generator))
        )


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn on the generator's device then moved to x's."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
