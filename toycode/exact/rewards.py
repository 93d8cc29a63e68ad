"""Rewards on decoded samples: plain callables returning one float per sample.

Each reward says whether it is differentiable (gradient guidance may use it) and describes itself
as a JSON-able dict (the ``reward`` field of a problem file). Quadratic and linear rewards have
closed-form tilts of a Gaussian mixture in any dimension; the others get an exact target in 2-D
by quadrature (see :mod:`toycode.exact.targets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Reward", "Quadratic", "Linear", "Box", "Ring", "Bump", "reward_from_dict"]

_F64 = torch.float64


class Reward:
    """Base class: ``reward(x)`` maps (n, d) samples to (n,) rewards."""

    differentiable: bool = False
    dim: int | None = None  # None: any dimension

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError


def _vector(name: str, value, dim: int | None = None) -> torch.Tensor:
    v = torch.as_tensor(value, dtype=_F64)
    if v.ndim != 1 or (dim is not None and len(v) != dim) or not torch.isfinite(v).all():
        want = f"{dim} finite numbers" if dim else "a list of finite numbers"
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return v


@dataclass(frozen=True, eq=False)
class Quadratic(Reward):
    """r(x) = −½ (x − c)ᵀ P (x − c), P symmetric positive semi-definite."""

    center: torch.Tensor
    precision: torch.Tensor
    differentiable = True

    def __post_init__(self):
        c = _vector("reward.center", self.center)
        p = torch.as_tensor(self.precision, dtype=_F64)
        if p.shape != (len(c), len(c)):
            raise ValueError(
                f"reward.precision must be {len(c)}x{len(c)} to match reward.center, "
                f"got shape {tuple(p.shape)}"
            )
        if not torch.allclose(p, p.T, atol=1e-10) or torch.linalg.eigvalsh(p).min() < -1e-10:
            raise ValueError("reward.precision must be symmetric positive semi-definite")
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "precision", p)

    @property
    def dim(self) -> int:
        return len(self.center)

    def __call__(self, x):
        d = x - self.center.to(x)
        return -0.5 * ((d @ self.precision.to(x)) * d).sum(-1)

    def to_dict(self):
        return {
            "type": "quadratic",
            "center": self.center.tolist(),
            "precision": self.precision.tolist(),
        }


@dataclass(frozen=True, eq=False)
class Linear(Reward):
    """r(x) = aᵀx."""

    direction: torch.Tensor
    differentiable = True

    def __post_init__(self):
        object.__setattr__(self, "direction", _vector("reward.direction", self.direction))

    @property
    def dim(self) -> int:
        return len(self.direction)

    def __call__(self, x):
        return x @ self.direction.to(x)

    def to_dict(self):
        return {"type": "linear", "direction": self.direction.tolist()}


@dataclass(frozen=True, eq=False)
class Box(Reward):
    """r(x) = 1 if low ≤ x ≤ high elementwise, else 0. Not differentiable."""

    low: torch.Tensor
    high: torch.Tensor
    dim = 2

    def __post_init__(self):
        low, high = _vector("reward.low", self.low, 2), _vector("reward.high", self.high, 2)
        if (low >= high).any():
            raise ValueError(
                f"reward.low must be below reward.high, got {low.tolist()} and {high.tolist()}"
            )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def __call__(self, x):
        inside = (x >= self.low.to(x)) & (x <= self.high.to(x))
        return inside.all(-1).to(x.dtype)

    def to_dict(self):
        return {"type": "box", "low": self.low.tolist(), "high": self.high.tolist()}


@dataclass(frozen=True, eq=False)
class Ring(Reward):
    """r(x) = −(‖x‖ − radius)² / (2 width²): a smooth ring with no closed-form tilt."""

    radius: float
    width: float = 0.5
    differentiable = True
    dim = 2

    def __post_init__(self):
        for name in ("radius", "width"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"reward.{name} must be a positive number, got {v!r}")

    def __call__(self, x):
        return -0.5 * ((x.norm(dim=-1) - self.radius) / self.width) ** 2

    def to_dict(self):
        return {"type": "ring", "radius": self.radius, "width": self.width}


@dataclass(frozen=True, eq=False)
class Bump(Reward):
    """r(x) = exp(−‖x − c‖² / (2 width²)): a Gaussian bump of height 1, no closed-form tilt.

    The reward of the checkerboard experiment of Dandapanthula & Boffi 2026 (arXiv 2606.02884).
    """

    center: torch.Tensor
    width: float
    differentiable = True

    def __post_init__(self):
        object.__setattr__(self, "center", _vector("reward.center", self.center))
        w = self.width
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < float("inf"):
            raise ValueError(f"reward.width must be a positive number, got {w!r}")
        object.__setattr__(self, "width", float(w))

    @property
    def dim(self) -> int:
        return len(self.center)

    def __call__(self, x):
        d = x - self.center.to(x)
        return torch.exp(-(d * d).sum(-1) / (2 * self.width**2))

    def to_dict(self):
        return {"type": "bump", "center": self.center.tolist(), "width": self.width}


_TYPES = {
    "quadratic": (Quadratic, ("center", "precision")),
    "linear": (Linear, ("direction",)),
    "box": (Box, ("low", "high")),
    "ring": (Ring, ("radius", "width")),
    "bump": (Bump, ("center", "width")),
}


def reward_from_dict(spec: dict) -> Reward:
    """Build a reward from its problem-file description, naming any bad field."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"reward must be an object with a 'type' field, got {spec!r}")
    if spec["type"] not in _TYPES:
        raise ValueError(f"reward.type must be one of {sorted(_TYPES)}, got {spec['type']!r}")
    cls, fields = _TYPES[spec["type"]]
    unknown = set(spec) - set(fields) - {"type"}
    if unknown:
        raise ValueError(f"reward has unknown field(s) {sorted(unknown)} for type {spec['type']!r}")
    required = [f for f in fields if f not in spec and not (cls is Ring and f == "width")]
    if required:
        raise ValueError(f"reward.{required[0]} is missing (type {spec['type']!r})")
    return cls(**{f: spec[f] for f in fields if f in spec})
