"""A small trainable ε-prediction MLP for 2-D (or any low-dimensional) data, tiny-diffusion style."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..diffusion import Process
from .base import ToyBackend


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017; DDPM's time input)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm, self.lin = nn.LayerNorm(width), nn.Linear(width, width)

    def forward(self, h):
        return h + self.lin(nn.functional.gelu(self.norm(h)))


class MLPDenoiser(nn.Module):
    """ε̂(x_t, t): input and time embeddings summed, residual GELU blocks, linear read-out."""

    def __init__(self, dim: int = 2, width: int = 128, depth: int = 4, time_dim: int = 64):
        super().__init__()
        self.config = {"dim": dim, "width": width, "depth": depth, "time_dim": time_dim}
        self.inp = nn.Linear(dim, width)
        self.time = nn.Sequential(nn.Linear(time_dim, width), nn.GELU(), nn.Linear(width, width))
        self.blocks = nn.Sequential(*[_Block(width) for _ in range(depth)])
        self.out = nn.Sequential(nn.LayerNorm(width), nn.GELU(), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.config["time_dim"])
        return self.out(self.blocks(self.inp(x) + self.time(emb)))


class _EpsAdapter:
    """Backend-side view of a trained MLP: float32 in, the sampler's dtype preserved."""

    def __init__(self, model: MLPDenoiser):
        self.model = model.eval()

    def __call__(self, x, t, abar):
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        return self.model(x.float(), tt).to(x.dtype)


def load_mlp_backend(path: str | Path, steps: int = 100, eta: float = 1.0) -> ToyBackend:
    """A backend driving a trained MLP checkpoint (written by ``toycode train``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("kind") != "mlp":
        raise ValueError(f"{path} is not an MLP checkpoint (kind={ckpt.get('kind')!r})")
    model = MLPDenoiser(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    sched = ckpt["schedule"]
    process = Process.make(steps, sched["name"], sched["num_train_steps"], eta)
    return ToyBackend(_EpsAdapter(model), process, model.config["dim"], torch.float32,
                      name=f"mlp:{Path(path).name}")
