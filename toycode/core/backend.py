"""The backend contract: the only thing a sampler knows about a model.

    process                    the :class:`~toycode.core.diffusion.Process`: the descending grid
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

from typing import Any, NamedTuple, Protocol

import torch

from .diffusion import Process


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
    """What a sampler may ask of a model: these five members, nothing else (module docstring)."""

    process: Process

    def prior_sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor: ...
    def predict(
        self, x: torch.Tensor, i: int, generator: torch.Generator | None = None
    ) -> Prediction: ...
    def decode(self, x0: torch.Tensor) -> Any: ...  # a tensor, or what the rewards read
    def noise_to(
        self, x0: torch.Tensor, i: int, generator: torch.Generator | None
    ) -> torch.Tensor: ...
