"""Argument checks shared by every public entry: one-line errors naming the argument and value."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch


def check_range(
    name: str, value, low=None, high=None, *, low_open: bool = False, high_open: bool = False
) -> None:
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


def check_count(name: str, value, low: int = 1, high: int | None = None) -> None:
    """Raise ValueError unless value is an integer in [low, high] (a size, a count, a step)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be at most {high}, got {value}")
    check_range(name, value, low, high)


SEED_MAX = 2**63 - 1
"""The largest seed a torch.Generator takes from every entry point (its own bound is 2^64 − 1,
but negative and huge seeds round-trip differently through numpy and JSON)."""


def check_seed(name: str, value) -> None:
    """Raise ValueError unless value is an integer seed in [0, SEED_MAX]."""
    check_count(name, value, 0, SEED_MAX)


def available_devices() -> list[str]:
    """The torch devices this machine has: cpu, then cuda:i per GPU, then mps where built."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(name: str | None, default: str | None = None) -> str | None:
    """A device name checked against :func:`available_devices` ("cuda" means cuda:0 and is
    accepted as written); None gives ``default``. A name this machine lacks is a one-line error
    listing what exists."""
    if name is None:
        return default
    devices = available_devices()
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    ok = dev is not None and (
        dev.type == "cpu"
        and dev.index in (None, 0)
        or f"{dev.type}:{dev.index or 0}" in devices
        or dev.type == "mps"
        and "mps" in devices
    )
    if not ok:
        raise ValueError(
            f"device must be one of {', '.join(devices)} on this machine, got {name!r}"
        )
    return name


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (the folder that would hold new ones)."""
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def _check_creatable(name: str, path: Path) -> None:
    """Everything above ``path`` that exists must be a writable folder."""
    base = _nearest_existing(path.parent if path.parent != path else path)
    if not base.is_dir():
        raise ValueError(
            f"{name} {str(path)!r} lies under {str(base)!r}, which is a file, not a folder"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {str(path)!r}: folder {str(base)!r} is not writable")


def check_out_dir(name: str, path) -> Path:
    """An output folder: refused if it exists as something other than a folder, or could not
    be created; nothing is created here."""
    path = Path(path)
    if str(path) == "":
        raise ValueError(f"{name} must name a folder, got ''")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is an existing file, not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{name} {str(path)!r} is not a writable folder")
    else:
        _check_creatable(name, path)
    return path


def check_out_file(name: str, path) -> Path:
    """An output file (overwritten if it exists): refused if it names a folder or lies under a
    file; nothing is created here."""
    path = Path(path)
    if str(path) in ("", ".") or str(path).endswith(("/", os.sep)):
        raise ValueError(f"{name} must name a file, got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is an existing folder, not a file")
    _check_creatable(name, path)
    return path


def check_in_file(name: str, path) -> Path:
    """An input file that must exist and be a file."""
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "not found"
        raise ValueError(f"{name} {str(path)!r}: {what}")
    return path


MAX_BATCH_NUMBERS = 2**31
"""The most numbers (tensor elements) one setting may hold at once: 8 GiB in float32. A setting
past it is refused before any work, with its estimate, rather than failing deep in torch."""


def check_batch(
    what: str, samples: int, numbers_per_sample: int, limit: int = MAX_BATCH_NUMBERS
) -> None:
    """Refuse a setting whose largest batch (``samples`` × ``numbers_per_sample``) exceeds
    ``limit`` numbers, naming the estimate."""
    total = samples * numbers_per_sample
    if total > limit:
        raise ValueError(
            f"{what} holds about {samples:.3g} samples × {numbers_per_sample} "
            f"numbers = {total:.3g} numbers ({4 * total / 2**30:.3g} GiB in "
            f"float32) at once; the limit is {limit:.3g} numbers "
            f"({4 * limit / 2**30:.3g} GiB)"
        )
