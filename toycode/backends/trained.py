"""Backends for the networks toycode trains (checkpoints written by `toycode train*`).

A checkpoint records its process ("vp", ε-prediction; or "flow", rectified-flow velocity) and
prediction type; checkpoints from before that record are VP ε-models."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.diffusion import Process
from .base import ModuleEps, ToyBackend
from .mlp import MLPDenoiser
from .unet import UNetDenoiser

__all__ = ["load_trained_backend"]

# checkpoint kind → (network class, the shape of one sample given the network's config)
KINDS = {
    "mlp": (MLPDenoiser, lambda config: (config["dim"],)),
    "unet": (UNetDenoiser, lambda config: (1, 28, 28)),
}


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def load_trained_backend(
    path: str | Path, steps: int = 100, eta: float = 1.0, process: str | None = None
) -> ToyBackend:
    """A backend driving a trained checkpoint on ``steps`` steps of its own process.

    ``process`` ("vp" | "flow"), when given, must be the one the checkpoint was trained on.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise ValueError(f"{path} could not be read as a checkpoint: {_first_line(err)}") from None
    kind = ckpt.get("kind") if isinstance(ckpt, dict) else None
    if kind not in KINDS:
        raise ValueError(f"{path} is not a toycode denoiser checkpoint (kind={kind!r})")
    cls, shape = KINDS[kind]
    try:
        model = cls(**ckpt["config"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(
            f"{path} holds a {kind} checkpoint that does not load: {_first_line(err)}"
        ) from None
    trained_on = ckpt.get("process", "vp")
    if process is not None and process != trained_on:
        raise ValueError(
            f"{path} holds a {trained_on!r} model; it cannot sample with process={process!r}"
        )
    sched = ckpt["schedule"]
    grid = Process.make(steps, sched["name"], sched["num_train_steps"], eta)
    return ToyBackend(
        ModuleEps(model),
        grid,
        shape(ckpt["config"]),
        torch.float32,
        name=f"{ckpt['kind']}:{Path(path).name}",
        prediction=ckpt.get("prediction", "epsilon"),
    )
