"""A small ε-prediction UNet for 28×28 MNIST (DDPM-style: residual blocks with a time embedding)."""

from __future__ import annotations

import torch
from torch import nn

from .mlp import timestep_embedding


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int, groups: int = 8):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, t):
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.time(t)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return h + self.skip(x)


class UNetDenoiser(nn.Module):
    """28 → 14 → 7 and back, one residual block per level, skip connections by concatenation.

    ``channels`` (c1, c2, c3) per resolution: narrow at 28×28, where convolutions cost most.
    """

    def __init__(self, channels=(16, 32, 64), time_dim: int = 128):
        super().__init__()
        c1, c2, c3 = channels
        self.config = {"channels": list(channels), "time_dim": time_dim}
        self.time = nn.Sequential(
            nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.inp = nn.Conv2d(1, c1, 3, padding=1)
        self.d1 = ResBlock(c1, c1, time_dim)
        self.d2 = ResBlock(c1, c2, time_dim)
        self.d3 = ResBlock(c2, c3, time_dim)
        self.mid = ResBlock(c3, c3, time_dim)
        self.u3 = ResBlock(2 * c3, c2, time_dim)
        self.u2 = ResBlock(2 * c2, c1, time_dim)
        self.u1 = ResBlock(2 * c1, c1, time_dim)
        self.out = nn.Sequential(nn.GroupNorm(8, c1), nn.SiLU(), nn.Conv2d(c1, 1, 3, padding=1))
        self.pool = nn.AvgPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x, t):
        e = self.time(timestep_embedding(t, self.config["time_dim"]))
        h1 = self.d1(self.inp(x), e)  # 28×28, c1
        h2 = self.d2(self.pool(h1), e)  # 14×14, c2
        h3 = self.d3(self.pool(h2), e)  # 7×7, c3
        m = self.mid(h3, e)
        u = self.u3(torch.cat([m, h3], 1), e)  # 7×7
        u = self.u2(torch.cat([self.up(u), h2], 1), e)  # 14×14
        u = self.u1(torch.cat([self.up(u), h1], 1), e)  # 28×28
        return self.out(u)
