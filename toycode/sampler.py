"""The blockwise sampler — CoDe (Singh et al. 2025, arXiv 2502.00968, Alg. 1) and its edge cases.

Every B reverse steps, each of the n current states spawns N candidate continuations; a value
estimate scores them at the block end and a selection rule keeps one. N = 1 is the base model,
B ≥ T is best-of-N, B = 1 is SVDD-PM (Li et al. 2024). With ``selection="softmax"`` at the
target's λ and exact soft values, each block is self-normalised importance sampling of the
optimal policy, so the output converges to p* ∝ p e^{λr} as N grows, for any B.

Cost (NFE = denoiser evaluations, counted only in :class:`Ledger`). The N candidates of a block
share their parent's ε̂, and the ε̂ that gives a candidate its Tweedie x̂0 at the block end is the
one its next step uses, so nothing is evaluated twice. Per output sample, with T steps and
n_b = ⌈T/B⌉ blocks:

    value = "tweedie" (needs x̂0 of every candidate)   NFE = 1 + (T − 1)·N
    value = exact V_t (scored without the denoiser)    NFE = (T − n_b)·N + n_b
    N = 1 (base)                                       NFE = T

(the official CoDe code spends N·T·(1 + 1/B): an extra UNet pass to score each block and N
identical passes on the selected state). Starting from a reference at strength η replaces T by
round(η·T). Reward calls per sample: N per block scored by Tweedie, 1 at the end otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .backends.base import Backend, Prediction
from .checks import check_choice, check_range, check_rewards

__all__ = ["Ledger", "TweedieValue", "ExactValue", "SELECTIONS", "SampleResult",
           "sample_blockwise"]


@dataclass
class Ledger:
    """The one place where denoiser evaluations, reward calls and gradient evaluations are counted."""

    nfe: int = 0
    reward_calls: int = 0
    grad_evals: int = 0

    def predict(self, backend: Backend, x: torch.Tensor, i: int) -> Prediction:
        self.nfe += x.shape[0]
        return backend.predict(x, i)

    def reward(self, reward: Callable, decoded) -> torch.Tensor:
        n = len(decoded)
        self.reward_calls += n
        return check_rewards(reward(decoded), n, who=f"reward {getattr(reward, '__name__', reward)!r}")


class TweedieValue:
    """V(x_t) ≈ r(decode(x̂0(x_t))): the reward of the Tweedie estimate (CoDe's default)."""

    needs_x0 = True

    def __init__(self, reward: Callable):
        self.reward = reward

    def __call__(self, ledger: Ledger, backend: Backend, x, x0, i: int) -> torch.Tensor:
        return ledger.reward(self.reward, backend.decode(x0)).double()


class ExactValue:
    """The exact soft value V_t of a :class:`toycode.targets.Target` (no denoiser call)."""

    needs_x0 = False

    def __init__(self, target):
        self.target = target

    def __call__(self, ledger: Ledger, backend: Backend, x, x0, i: int) -> torch.Tensor:
        return self.target.soft_value(x, backend.abar(i))


def _argmax(values: torch.Tensor, lam: float, generator) -> tuple[torch.Tensor, torch.Tensor]:
    idx = values.argmax(1)
    return idx, torch.nn.functional.one_hot(idx, values.shape[1]).double()


def _softmax(values: torch.Tensor, lam: float, generator) -> tuple[torch.Tensor, torch.Tensor]:
    weights = torch.softmax(lam * values, dim=1)        # λ = 0: a uniform choice
    return torch.multinomial(weights, 1, generator=generator).squeeze(1), weights


SELECTIONS: dict[str, Callable] = {"argmax": _argmax, "softmax": _softmax}
"""Selection rules: (values (n, N), λ, generator) → (kept index (n,), weights (n, N))."""


@dataclass
class SampleResult:
    """Samples with their rewards and what they cost (totals over all n samples)."""

    samples: Any
    rewards: torch.Tensor
    nfe: int
    reward_calls: int
    grad_evals: int = 0
    ess: torch.Tensor = field(default_factory=lambda: torch.empty(0))   # (blocks, n)
    settings: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.rewards)

    @property
    def nfe_per_sample(self) -> float:
        return self.nfe / self.n


def _blocks(start: int, stop: int, size: int):
    return [(i, min(i + size, stop)) for i in range(start, stop, size)]


def sample_blockwise(backend: Backend, reward: Callable, n: int, *, num_candidates: int = 1,
                     block_size: int = 1, selection: str = "argmax", lam: float = 1.0,
                     value: str | Any = "tweedie", reference: torch.Tensor | None = None,
                     eta_start: float = 1.0, generator: torch.Generator | None = None,
                     callback: Callable[[dict], None] | None = None,
                     progress: bool = False) -> SampleResult:
    """Blockwise controlled denoising (CoDe, arXiv 2502.00968 Alg. 1); N=1 base, B≥T BoN, B=1 SVDD.

    ``value`` is "tweedie" or an object like :class:`ExactValue`; ``reference`` (n samples) with
    ``eta_start`` ∈ (0, 1] starts from the reference noised to that strength (CoDe(η)).
    ``callback`` receives a dict per block: block, i, j, candidates, x0, values, weights,
    selected, ess, x.
    """
    check_range("n", n, 1, None)
    check_range("num_candidates", num_candidates, 1, None)
    check_range("block_size", block_size, 1, None)
    check_range("lam", lam, 0.0, None)
    check_choice("selection", selection, SELECTIONS)
    value_fn = TweedieValue(reward) if value == "tweedie" else value
    if not hasattr(value_fn, "needs_x0"):
        raise ValueError(f"value must be 'tweedie' or a value object (ExactValue), got {value!r}")
    if num_candidates > 1 and backend.deterministic:
        raise ValueError("num_candidates > 1 needs a stochastic step: with DDIM eta = 0 every "
                         "candidate of a shared state is identical")
    steps, big_n = backend.num_steps, num_candidates
    start = 0
    if reference is not None:
        check_range("eta_start", eta_start, 0.0, 1.0, low_open=True)
        if len(reference) != n:
            raise ValueError(f"reference must hold n={n} samples, got {len(reference)}")
        start = steps - round(eta_start * steps)
    ledger = Ledger()
    score_all = big_n > 1 and value_fn.needs_x0   # every block-end candidate needs its x̂0

    with torch.no_grad():
        x = (backend.prior_sample(n, generator) if reference is None
             else backend.noise_to(reference, start, generator))
        eps = ledger.predict(backend, x, start).eps if start < steps else None
        ess, values, keep = [], None, torch.arange(n)
        blocks = _blocks(start, steps, block_size)
        bar = tqdm(total=steps - start, disable=not progress, desc="sampling", leave=False)
        for b, (i, j) in enumerate(blocks):
            # (1) N candidates per state, sharing the parent's ε̂ for their first step
            xc, ec, x0c = x.repeat_interleave(big_n, 0), eps.repeat_interleave(big_n, 0), None
            for k in range(i, j):
                xc = backend.step(xc, k, ec, generator)
                if k + 1 < steps and (k + 1 < j or score_all):
                    ec, x0c = ledger.predict(backend, xc, k + 1)
                bar.update(1)
            # (2) score the candidates at the block end and keep one per state
            if big_n > 1:   # at the clean end every value is the reward itself
                values = (ledger.reward(reward, backend.decode(xc)).double() if j == steps
                          else value_fn(ledger, backend, xc, x0c, j)).view(n, big_n)
                idx, weights = SELECTIONS[selection](values, lam, generator)
                keep = torch.arange(n) * big_n + idx
                ess.append(1.0 / (weights ** 2).sum(1))
                if callback is not None:
                    callback({"block": b, "i": i, "j": j, "candidates": xc, "x0": x0c,
                              "values": values, "weights": weights, "selected": idx,
                              "ess": ess[-1], "x": xc[keep]})
            x = xc[keep]
            # (3) the kept state's ε̂ for the next block: reused if scored, else one call
            if j < steps:
                eps = ec[keep] if score_all else ledger.predict(backend, x, j).eps
        bar.close()
        out = backend.decode(x)
        if big_n > 1 and blocks:   # the last block's values are the rewards of its candidates
            rewards = values.gather(1, idx[:, None]).squeeze(1)
        else:
            rewards = ledger.reward(reward, out).double()

    settings = {"num_candidates": big_n, "block_size": block_size, "selection": selection,
                "lam": lam, "value": value if isinstance(value, str) else type(value).__name__,
                "steps": steps, "start_index": start}
    return SampleResult(out, rewards, ledger.nfe, ledger.reward_calls, 0,
                        torch.stack(ess) if ess else torch.ones(0, n, dtype=torch.float64),
                        settings)
