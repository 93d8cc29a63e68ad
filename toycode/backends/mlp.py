"""A small trainable ε-prediction MLP for 2-D (or other low-dimensional) data, as tiny-diffusion."""

from __future__ import annotations

import math

import torch
from torch import nn


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
