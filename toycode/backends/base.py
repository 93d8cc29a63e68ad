"""The backend contract: the only thing a sampler knows about a model.

    process                    the :class:`~toycode.diffusion.Process`: the descending grid
                               (index i = 0 … T − 1; T clean) of (α, σ), ``step``, ``tweedie``
    prior_sample(n, g)         x at index 0
    predict(x, i, g)           ONE batched denoiser call → Prediction(eps, x0); the only call that
                               costs an NFE (counted by the sampler's Ledger, nowhere else). ``g``
                               is the sampler's generator, for predictions that draw noise
                               (universal guidance's self-recurrence); plain models ignore it
    decode(x0)                 what rewards see (identity for toys, VAE decode for SD)
    noise_to(x0, i, g)         the forward process, for CoDe(η) starts from a reference

Time, steps and x̂0 come from ``backend.process``: a backend only adds the model.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import torch

from ..checks import check_choice
from ..diffusion import PREDICTIONS, NoiseLevel, Process, to_eps_x0


class Prediction(NamedTuple):
    """ε̂ and x̂0 at a state, and what producing them cost per row.

    A guided predict may also *move* the state it was given (universal guidance's
    self-recurrence); it then returns the new state as ``x``. Costs are per row and are added up
    by the sampler's Ledger only: ``nfe`` denoiser forward passes, ``reward_grads`` reward
    gradients, ``backprops`` backward passes through the denoiser. A guidance rule that shifts
    the model's (ε̂, x̂0) at the same state may return the unshifted pair as ``unguided``
    (twisted SMC weighs its guided proposals against the model's own transitions).
    """

    eps: torch.Tensor
    x0: torch.Tensor
    x: torch.Tensor | None = None
    nfe: int = 1
    reward_grads: int = 0
    backprops: int = 0
    unguided: tuple[torch.Tensor, torch.Tensor] | None = None


class Backend(Protocol):
    process: Process

    def prior_sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor: ...
    def predict(self, x: torch.Tensor, i: int,
                generator: torch.Generator | None = None) -> Prediction: ...
    def decode(self, x0: torch.Tensor): ...
    def noise_to(self, x0: torch.Tensor, i: int,
                 generator: torch.Generator | None) -> torch.Tensor: ...


EpsModel = Callable[[torch.Tensor, int | float, NoiseLevel], torch.Tensor]
"""output = model(x, t, level) for a batch x, the model's time input t (a training step for VP,
1000·t for flow) and the noise level (α, σ); what the output is, the backend's ``prediction``
says ("epsilon", "sample", "v_prediction" or "flow", see :func:`toycode.diffusion.to_eps_x0`)."""


class ToyBackend:
    """A diffusion or flow model on tensors of a fixed ``shape``: a denoiser (exact or trained)
    whose ``prediction`` kind is converted to (ε̂, x̂0) on a Process grid."""

    def __init__(self, eps_model: EpsModel, process: Process, shape: int | tuple,
                 dtype: torch.dtype = torch.float64, name: str = "toy",
                 prediction: str = "epsilon"):
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
        return (f"ToyBackend({self.name}, {self.process.kind}, T={self.process.num_steps}, "
                f"eta={self.process.eta})")


class ModuleEps:
    """A trained network ``module(x, t)`` as an EpsModel: float32 in, the state's dtype out."""

    def __init__(self, module: torch.nn.Module):
        self.module = module.eval()

    def __call__(self, x, t, level):
        tt = torch.full((x.shape[0],), t)   # long for VP training steps, float for flow's 1000·t
        return self.module(x.float(), tt).to(x.dtype)
