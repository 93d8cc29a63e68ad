"""Argument checks shared by every public entry: one-line errors naming the argument and value."""

from __future__ import annotations

import math

import torch


def check_range(name: str, value, low=None, high=None, *, low_open: bool = False,
                high_open: bool = False) -> None:
    """Raise ValueError unless low ≤ value ≤ high (bounds optional, open where asked)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        interval = f"{left}{lo}, {hi}{right}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def check_choice(name: str, value, choices) -> None:
    """Raise ValueError unless value is one of choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def check_rewards(values: torch.Tensor, n: int, who: str = "reward") -> torch.Tensor:
    """A reward's output must be n finite numbers."""
    if not isinstance(values, torch.Tensor) or values.shape != (n,):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"{who} must return a tensor of shape ({n},), got {shape}")
    if not torch.isfinite(values).all():
        raise ValueError(f"{who} returned {int((~torch.isfinite(values)).sum())} non-finite values")
    return values
