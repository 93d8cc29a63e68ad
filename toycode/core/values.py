"""Value estimators: what the blockwise sampler scores a candidate x_t with at a block end.

The target of every estimator is the soft value V_t(x) = (1/λ) log E[e^{λ r(x0)} | x_t = x]
(design notes §7); with it, softmax selection at λ is exact importance sampling of the tilted
process. A value is an object with ``needs_x0`` (does it read the candidate's x̂0, so the sampler
must evaluate the denoiser at every candidate?) called as
``value(ledger, backend, x, x0, i, generator)`` → (n,) float64. Denoiser and reward calls go
through the ``ledger``, so their cost lands in the one place NFE are counted.

    value        estimate                                      extra cost per candidate
    -----        --------                                      ------------------------
    tweedie      r(x̂0(x_t)) — CoDe's; biased by Jensen's gap   none (x̂0 is shared with the step)
    exact        V_t from a toy problem's exact target          none
    lookahead    (1/λ) log mean_m e^{λ r(x0_m)}, x0_m from M    M·(k − 1) NFE, M reward calls
                 stochastic k-step rollouts of the model
    posterior    the same with exact draws x0_m ~ p(x0 | x_t)   M reward calls (toys only)
    learned      b(x_t) + (1/λ) log v_θ(x_t, α, σ), v_θ ≈       one small-network call
                 E[e^{λ(r(x0) − b(x_t))} | x_t], b a Gaussian
                 baseline  (toycode.training.learned_value)

Look-ahead's first coarse step reuses the candidate's own ε̂ (the one its x̂0 came from), so k = 1
costs nothing and equals Tweedie; it is consistent as M grows and the rollouts approach the
model's own sampler. The posterior value separates Monte-Carlo error (M) from rollout error.
Both are biased downward by O(1/M) (Jensen's inequality on the log).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Literal, Protocol, Union, runtime_checkable

import torch

from ..utils.checks import check_range
from .backend import Backend

if TYPE_CHECKING:  # the Ledger's module imports nothing of ours at run time either way
    from .ledger import Ledger

__all__ = ["Value", "ValueSpec", "TweedieValue", "LookaheadValue", "log_mean_exp", "make_value_fn"]


@runtime_checkable
class Value(Protocol):
    """What a sampler scores block-end candidates with (module docstring).

    ``needs_x0``: whether the value reads the candidate's x̂0 (then the sampler evaluates the
    denoiser at every candidate and reuses that ε̂ for the kept one's next step); otherwise it
    is passed ``x0=None``. Returns (n,) float64; denoiser and reward calls go through ``ledger``.
    """

    needs_x0: bool

    def __call__(
        self,
        ledger: "Ledger",
        backend: Backend,
        x: torch.Tensor,
        x0: torch.Tensor | None,
        i: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


ValueSpec = Union[Literal["tweedie"], Value]
"""What a sampler's ``value`` argument takes: "tweedie" or a :class:`Value` object."""


def log_mean_exp(rewards: torch.Tensor, lam: float) -> torch.Tensor:
    """(1/λ) log mean_m e^{λ r_m} over the last axis (its λ → 0 limit, the mean, at λ = 0)."""
    rewards = rewards.double()
    if lam == 0:
        return rewards.mean(-1)
    m = rewards.shape[-1]
    return (torch.logsumexp(lam * rewards, -1) - math.log(m)) / lam


class TweedieValue:
    """V(x_t) ≈ r(decode(x̂0(x_t))): the reward of the Tweedie estimate (CoDe's default)."""

    needs_x0 = True

    def __init__(self, reward: Callable):
        self.reward = reward

    def __call__(
        self,
        ledger: "Ledger",
        backend: Backend,
        x: torch.Tensor,
        x0: torch.Tensor | None,
        i: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        assert x0 is not None, "a Tweedie value reads x̂0 (needs_x0)"
        return ledger.reward(self.reward, backend.decode(x0)).double()


def make_value_fn(value: ValueSpec, reward: Callable) -> Value:
    """The value object a loop scores block ends with: ``"tweedie"`` (:class:`TweedieValue` of
    ``reward``) or a :class:`Value` itself, else a one-line error."""
    if isinstance(value, str) and value == "tweedie":
        return TweedieValue(reward)
    if not isinstance(value, Value):
        raise ValueError(
            f"value must be 'tweedie' or a value object (see toycode.core.values), got {value!r}"
        )
    return value


def coarse_grid(start: int, stop: int, steps: int) -> list[int]:
    """At most ``steps`` + 1 evenly spaced grid indices from start to stop (both included)."""
    check_range("steps", steps, 1, None)
    return sorted({round(start + (stop - start) * s / steps) for s in range(steps + 1)})


class LookaheadValue:
    """M stochastic rollouts of k coarse model steps from each candidate to the clean end.

    Works on every backend (SD included: the backend chunks its UNet and VAE calls). The
    rollouts use the backend's process with its η; with η = 0 all M rollouts coincide.
    """

    needs_x0 = True

    def __init__(self, reward: Callable, lam: float, samples: int = 4, steps: int = 4):
        check_range("lam", lam, 0.0, None)
        check_range("lookahead samples", samples, 1, None)
        check_range("lookahead steps", steps, 1, None)
        self.reward, self.lam, self.samples, self.steps = reward, lam, samples, steps

    def __call__(
        self,
        ledger: "Ledger",
        backend: Backend,
        x: torch.Tensor,
        x0: torch.Tensor | None,
        i: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        assert x0 is not None, "look-ahead rollouts start from x̂0 (needs_x0)"
        process, m = backend.process, self.samples
        grid = coarse_grid(i, process.num_steps, self.steps)
        lv = process.level(i)
        eps = (x - lv.alpha * x0) / lv.sigma  # the candidate's own ε̂ (x̂0 is Tweedie's)
        xs = x.repeat_interleave(m, 0)
        xs = process.step(
            xs, i, eps.repeat_interleave(m, 0), generator, to=grid[1], x0=x0.repeat_interleave(m, 0)
        )
        for here, there in zip(grid[1:-1], grid[2:]):
            pred = ledger.predict(backend, xs, here, generator)
            xs = xs if pred.x is None else pred.x
            xs = process.step(xs, here, pred.eps, generator, to=there, x0=pred.x0)
        rewards = ledger.reward(self.reward, backend.decode(xs)).view(len(x), m)
        return log_mean_exp(rewards, self.lam)
