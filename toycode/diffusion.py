"""Noise schedules, sampling grids and the reverse transitions of a DDPM/DDIM process.

Everything here is a pure function of immutable float64 buffers (nothing changes after creation,
unlike diffusers' ``set_timesteps``). Notation (Ho et al. 2020; Song et al. 2021, "DDIM"):

    code name        paper symbol
    ---------        ------------
    alphas_cumprod   ᾱ_t = Π_{s≤t} (1 − β_s),  t = 0 … num_train_steps − 1
    timesteps[i]     t_i, the descending sampling grid, i = 0 … T − 1
    abar[i]          ᾱ_{t_i};  abar[T] = final_abar (1.0: the clean end)
    eta              DDIM η: 0 deterministic, 1 the DDPM ancestral posterior

Forward process: x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .checks import check_range

__all__ = ["linear_schedule", "cosine_schedule", "Process"]


def linear_schedule(num_train_steps: int = 1000, beta_start: float = 1e-4,
                    beta_end: float = 0.02) -> torch.Tensor:
    """ᾱ_t for linearly spaced β (Ho et al. 2020), float64."""
    check_range("num_train_steps", num_train_steps, 1, None)
    betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def cosine_schedule(num_train_steps: int = 1000, s: float = 0.008,
                    max_beta: float = 0.999) -> torch.Tensor:
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


@dataclass(frozen=True)
class Process:
    """A reverse process over a fixed descending grid: DDIM(η) steps, η = 1 being DDPM.

    ``Process.make(steps=100)`` gives the 1000-step linear schedule strided to 100 steps. The grid
    index ``i`` is the only notion of time samplers use; ``i = T`` is the clean end.
    """

    alphas_cumprod: torch.Tensor
    timesteps: torch.Tensor
    eta: float = 1.0
    final_abar: float = 1.0
    abar: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        ac = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64)
        ts = torch.as_tensor(self.timesteps, dtype=torch.long)
        if ts.ndim != 1 or len(ts) < 1:
            raise ValueError(f"timesteps must be a non-empty 1-D grid, got shape {tuple(ts.shape)}")
        if (ts[1:] >= ts[:-1]).any():
            raise ValueError("timesteps must be strictly descending")
        if ts[0] >= len(ac) or ts[-1] < 0:
            raise ValueError(f"timesteps must lie in [0, {len(ac) - 1}], got {ts[0]}..{ts[-1]}")
        check_range("eta", self.eta, 0.0, 1.0)
        object.__setattr__(self, "alphas_cumprod", ac)
        object.__setattr__(self, "timesteps", ts)
        object.__setattr__(self, "abar", torch.cat([ac[ts], ac.new_tensor([self.final_abar])]))

    @classmethod
    def make(cls, steps: int = 100, schedule: str = "linear", num_train_steps: int = 1000,
             eta: float = 1.0) -> "Process":
        """The ``schedule`` ("linear" | "cosine") strided to ``steps`` grid points."""
        makers = {"linear": linear_schedule, "cosine": cosine_schedule}
        if schedule not in makers:
            raise ValueError(f"schedule must be one of {sorted(makers)}, got {schedule!r}")
        check_range("steps", steps, 1, num_train_steps)
        return cls(makers[schedule](num_train_steps), strided_timesteps(num_train_steps, steps), eta)

    @property
    def num_steps(self) -> int:
        """T, the number of reverse steps (grid points)."""
        return len(self.timesteps)

    @property
    def deterministic(self) -> bool:
        """True when ``step`` draws no noise (DDIM η = 0): selection then has nothing to pick."""
        return self.eta == 0

    def _coef(self, i: int, like: torch.Tensor) -> torch.Tensor:
        return self.abar[i].to(like.dtype)

    def tweedie(self, x: torch.Tensor, i: int, eps: torch.Tensor) -> torch.Tensor:
        """x̂0 = (x − √(1 − ᾱ) ε̂) / √ᾱ (Tweedie's formula for ε-prediction)."""
        a = self._coef(i, x)
        return (x - (1 - a).sqrt() * eps) / a.sqrt()

    def step(self, x: torch.Tensor, i: int, eps: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One reverse step x_{t_i} → x_{t_{i+1}} given ε̂ (DDIM eq. 12; η = 1 is DDPM)."""
        a, a_next = self._coef(i, x), self._coef(i + 1, x)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        # (1) DDIM eq. 16: σ² = η² (1 − ᾱ_next)/(1 − ᾱ) (1 − ᾱ/ᾱ_next), the DDPM posterior at η = 1
        var = self.eta ** 2 * (1 - a_next) / (1 - a) * (1 - a / a_next)
        # (2) direction pointing to x_t, then fresh noise
        mean = a_next.sqrt() * x0 + (1 - a_next - var).clamp(min=0).sqrt() * eps
        if self.eta == 0:
            return mean
        return mean + var.sqrt() * randn_like(x, generator)

    def noise_to(self, x0: torch.Tensor, i: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample the forward process q(x_{t_i} | x0)."""
        a = self._coef(i, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * randn_like(x0, generator)


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn on the generator's device then moved to x's."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
