"""Toy backends' shared parts: a denoiser module as ε̂(x, t, level), and the toy backend
that wraps one (the contract itself is :mod:`toycode.core.backend`)."""

from __future__ import annotations

from typing import Callable

import torch

from ..core.backend import Prediction
from ..core.diffusion import PREDICTIONS, NoiseLevel, Process, to_eps_x0
from ..utils.checks import check_choice

EpsModel = Callable[[torch.Tensor, int | float, NoiseLevel], torch.Tensor]
"""output = model(x, t, level) for a batch x, the model's time input t (a training step for VP,
1000·t for flow) and the noise level (α, σ); what the output is, the backend's ``prediction``
says ("epsilon", "sample", "v_prediction" or "flow", see
:func:`toycode.core.diffusion.to_eps_x0`)."""


class ToyBackend:
    """A diffusion or flow model on tensors of a fixed ``shape``: a denoiser (exact or trained)
    whose ``prediction`` kind is converted to (ε̂, x̂0) on a Process grid."""

    def __init__(
        self,
        eps_model: EpsModel,
        process: Process,
        shape: int | tuple,
        dtype: torch.dtype = torch.float64,
        name: str = "toy",
        prediction: str = "epsilon",
    ):
        self.eps_model, self.process, self.dtype, self.name = eps_model, process, dtype, name
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        check_choice("prediction", prediction, PREDICTIONS)
        self.prediction = prediction

    def prior_sample(self, n, generator=None):
        return torch.randn(n, *self.shape, generator=generator, dtype=self.dtype)

    def predict(self, x, i, generator=None):
        p = self.process
        lv = p.level(i)
        out = self.eps_model(x, p.timesteps[i].item(), lv)
        return Prediction(*to_eps_x0(out, self.prediction, x, lv.alpha, lv.sigma))

    def decode(self, x0):
        return x0

    def noise_to(self, x0, i, generator=None):
        return self.process.noise_to(x0.to(self.dtype), i, generator)

    def __repr__(self):
        return (
            f"ToyBackend({self.name}, {self.process.kind}, T={self.process.num_steps}, "
            f"eta={self.process.eta})"
        )


class ModuleEps:
    """A trained network ``module(x, t)`` as an EpsModel: float32 in, the state's dtype out.

    A batch is run ``max_batch`` rows at a time: a small convolutional network on a CPU is
    memory-bound, and N candidates × n outputs in one call is 2–2.5 times slower per image than
    the same rows in chunks that stay in cache (measured on the MNIST UNet:
    ``benchmarks/bench_chunks.py``). Rows are independent, so chunking changes no result
    beyond float32 rounding."""

    def __init__(self, module: torch.nn.Module, max_batch: int = 128):
        self.module, self.max_batch = module.eval(), max_batch

    def __call__(self, x, t, level):
        tt = torch.full((min(len(x), self.max_batch),), t)  # long for VP, float for flow's 1000·t
        out = [self.module(c, tt[: len(c)]) for c in x.float().split(self.max_batch)]
        return torch.cat(out).to(x.dtype)
