"""The blockwise sampler: CoDe (Singh et al. 2025, arXiv 2502.00968, Alg. 1), its edge cases, SMC.

Every B reverse steps, each of the n current states spawns N candidate continuations; a value
estimate scores them at the block end and a selection rule keeps one. N = 1 is the base model,
B ≥ T is best-of-N, B = 1 is SVDD-PM (Li et al. 2024). With ``selection="softmax"`` at the
target's λ and exact soft values, each block is self-normalised importance sampling of the
optimal policy, so the output converges to p* ∝ p e^{λr} as N grows, for any B.

The same loop runs sequential Monte Carlo (Feynman–Kac steering / TDS style): the n states form
populations of K ``particles``; each particle carries a log-weight, and at a block end the
children's weights grow by the potential λ(V_new − V_parent). A population is resampled (K draws
from its K·N children) when its ESS falls below ``ess_threshold``·K, always when N > 1, and always
at the clean end; otherwise the weights are carried. The initial V is 0, so the weights telescope
to e^{λ r(x0)}: the intermediate targets are exactly p*_t when V is exact.

    code name     paper symbol
    ---------     ------------
    N             candidates per state (CoDe's N, BoN's N)
    B             block size (CoDe's B); resampling interval for SMC
    K             particles per SMC population (1 for CoDe)
    values        V(x_t): r(x̂0(x_t)) ("tweedie") or the exact soft value; r at the clean end
    logw          SMC log-weights log w_t (0 after every resampling)

Cost (NFE = denoiser evaluations, counted only in :class:`Ledger`). The N candidates of a block
share their parent's ε̂, and the ε̂ that gives a candidate its Tweedie x̂0 at the block end is the
one its next step uses, so nothing is evaluated twice. Per output sample, with T steps and
n_b = ⌈T/B⌉ blocks:

    value = "tweedie" (needs x̂0 of every candidate)   NFE = 1 + (T − 1)·N
    value = exact V_t (scored without the denoiser)    NFE = (T − n_b)·N + n_b
    value = look-ahead, M rollouts of k steps          NFE = 1 + (T − 1)·N + (n_b − 1)·N·M·(k − 1)
    value = posterior or learned (toys)                NFE = (T − n_b)·N + n_b
    N = 1 (base, SMC)                                  NFE = T

(the official CoDe code spends N·T·(1 + 1/B): an extra UNet pass to score each block and N
identical passes on the selected state). Starting from a reference at ``strength`` (CoDe(η)'s
η) replaces T by round(strength·T). Reward calls per sample: N per block scored by Tweedie, N
at the end otherwise, plus M per candidate and interior block end for look-ahead and posterior
values (:mod:`toycode.values`; their calls go through the same Ledger). Look-ahead's formula
assumes at least k grid steps remain after every block end (fewer steps: fewer calls).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .backends.base import Backend, Prediction
from .checks import check_choice, check_range, check_rewards
from .values import ExactValue, TweedieValue

__all__ = ["Ledger", "TweedieValue", "ExactValue", "SELECTIONS", "SampleResult",
           "sample_blockwise"]   # the two values are re-exported from toycode.values


@dataclass
class Ledger:
    """The one place where denoiser evaluations, reward calls and reward gradients are counted."""

    nfe: int = 0
    reward_calls: int = 0
    reward_grads: int = 0    # reward gradients
    backprops: int = 0       # backward passes through the denoiser

    def predict(self, backend: Backend, x: torch.Tensor, i: int,
                generator: torch.Generator | None = None) -> Prediction:
        pred = backend.predict(x, i, generator)
        rows = x.shape[0]
        self.nfe += rows * pred.nfe
        self.reward_grads += rows * pred.reward_grads
        self.backprops += rows * pred.backprops
        return pred

    def reward(self, reward: Callable, decoded) -> torch.Tensor:
        n = len(decoded)
        self.reward_calls += n
        who = f"reward {getattr(reward, '__name__', reward)!r}"
        return check_rewards(reward(decoded), n, who=who)


def _argmax(values, logits, k, generator):
    return values.topk(k, dim=1).indices


def _multinomial(values, logits, k, generator):
    return torch.multinomial(torch.softmax(logits, 1), k, replacement=True, generator=generator)


def _systematic(values, logits, k, generator):
    """Systematic resampling: one uniform per population, K evenly spaced points on the CDF."""
    cdf = torch.softmax(logits, 1).cumsum(1)
    u = (torch.rand(len(cdf), 1, generator=generator, dtype=cdf.dtype)
         + torch.arange(k, dtype=cdf.dtype)) / k
    idx = torch.searchsorted(cdf, u.clamp(max=cdf[:, -1:] * (1 - 1e-12)))
    return idx.clamp(max=cdf.shape[1] - 1)


SELECTIONS: dict[str, Callable] = {"argmax": _argmax, "softmax": _multinomial,
                                   "systematic": _systematic}
"""Selection rules: (values, logits, K, generator) → K kept indices per population, each row
of values/logits holding a population's K·N children; logits = log w + λ(V_child − V_parent).
argmax keeps the best K by value (λ-free); softmax draws K with replacement ∝ e^{logits};
systematic does so with one uniform per population (lower variance)."""


@dataclass
class SampleResult:
    """Samples with their rewards and what they cost (totals over all n samples)."""

    samples: Any
    rewards: torch.Tensor
    nfe: int
    reward_calls: int
    reward_grads: int = 0
    backprops: int = 0
    ess: torch.Tensor = field(default_factory=lambda: torch.empty(0))   # (blocks, populations)
    settings: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.rewards)

    @property
    def nfe_per_sample(self) -> float:
        return self.nfe / self.n


def _ess(weights: torch.Tensor) -> torch.Tensor:
    return 1.0 / (weights ** 2).sum(1)


def _blocks(start: int, stop: int, size: int):
    return [(i, min(i + size, stop)) for i in range(start, stop, size)]


def _check_arguments(backend, n, num_candidates, block_size, particles, lam, ess_threshold,
                     selection, value, reward, reference, strength):
    """Refuse bad settings with one-line errors; return the value object."""
    for name, v, lo in (("n", n, 1), ("num_candidates", num_candidates, 1),
                        ("block_size", block_size, 1), ("particles", particles, 1)):
        check_range(name, v, lo, None)
    check_range("lam", lam, 0.0, None)
    check_range("ess_threshold", ess_threshold, 0.0, 1.0)
    check_choice("selection", selection, SELECTIONS)
    value_fn = TweedieValue(reward) if value == "tweedie" else value
    if not hasattr(value_fn, "needs_x0"):
        raise ValueError(f"value must be 'tweedie' or a value object (see toycode.values), "
                         f"got {value!r}")
    if n % particles:
        raise ValueError(f"n={n} must be a multiple of particles={particles}")
    if particles > 1 and num_candidates > 1:
        raise ValueError(f"use either num_candidates={num_candidates} > 1 (CoDe) or "
                         f"particles={particles} > 1 (SMC), not both")
    if particles > 1 and selection == "argmax":   # argmax is the λ → ∞ limit: nothing to resample
        raise ValueError("SMC (particles > 1) resamples: use selection='softmax' or "
                         "'systematic', not 'argmax'")
    if num_candidates * particles > 1 and backend.process.deterministic:
        raise ValueError("selection needs a stochastic step: with DDIM eta = 0 every candidate "
                         "of a shared state is identical and resampled particles never diverge")
    if reference is not None:
        check_range("strength", strength, 0.0, 1.0, low_open=True)
        if len(reference) != n:
            raise ValueError(f"reference must hold n={n} samples, got {len(reference)}")
    return value_fn


def _select(values, v_parent, logw, lam, big_n, k, selection, ess_threshold, clean, generator):
    """Weight the children of each population and keep K of its K·N (CoDe: K = 1).

    Returns (kept child indices into the flat children, new log-weights, weights, ESS, the
    chosen indices within each population). A population resamples when N > 1, at the clean
    end, or when its ESS < threshold·K; otherwise it carries its weights.
    """
    pops = len(values) // (k * big_n)
    # the incremental potential λ(V_child − V_parent) on top of the carried log-weight
    logits = (logw.repeat_interleave(big_n)
              + lam * (values - v_parent.repeat_interleave(big_n))).view(pops, k * big_n)
    weights = torch.softmax(logits, 1)
    resample = (_ess(weights) < ess_threshold * k) | (big_n > 1) | clean
    chosen = SELECTIONS[selection](values.view(pops, -1), logits, k, generator)
    chosen = torch.where(resample[:, None], chosen, torch.arange(k))
    keep = (torch.arange(pops)[:, None] * (k * big_n) + chosen).view(-1)
    normalised = logits - logits.logsumexp(1, keepdim=True)
    logw = torch.where(resample[:, None], 0.0, normalised).gather(1, chosen).view(-1)
    if selection == "argmax":   # the weights it used are those of its choice
        weights = torch.zeros_like(weights).scatter_(1, chosen, 1.0)
    return keep, logw, weights, _ess(weights), chosen


def sample_blockwise(backend: Backend, reward: Callable, n: int, *, num_candidates: int = 1,
                     block_size: int = 1, selection: str = "argmax", lam: float = 1.0,
                     value: str | Any = "tweedie", particles: int = 1,
                     ess_threshold: float = 1.0, reference: torch.Tensor | None = None,
                     strength: float = 1.0, generator: torch.Generator | None = None,
                     callback: Callable[[dict], None] | None = None,
                     progress: bool = False) -> SampleResult:
    """Blockwise controlled denoising (CoDe, arXiv 2502.00968 Alg. 1) and SMC, in one loop.

    N = ``num_candidates``, B = ``block_size``; N = 1 is the base model, B ≥ T best-of-N, B = 1
    SVDD. ``particles`` K > 1 groups the n states into n/K SMC populations. ``value`` is
    "tweedie" or an object like :class:`ExactValue`; ``reference`` (n samples) with
    ``strength`` ∈ (0, 1] starts from the reference noised to that strength (CoDe(η)).
    ``callback`` receives a dict per block: block, i, j, candidates, x0, values, weights,
    selected (K kept child indices per population; identity where weights were carried), ess, x.
    """
    value_fn = _check_arguments(backend, n, num_candidates, block_size, particles, lam,
                                ess_threshold, selection, value, reward, reference, strength)
    big_n, k, process = num_candidates, particles, backend.process
    steps, pops = process.num_steps, n // k
    start = 0 if reference is None else steps - round(strength * steps)
    ledger = Ledger()
    weighted = big_n * k > 1
    score_all = weighted and value_fn.needs_x0   # every block-end candidate needs its x̂0

    def predict(x, i):   # a guided predict may move the state (self-recurrence)
        pred = ledger.predict(backend, x, i, generator)
        return (x if pred.x is None else pred.x), pred.eps, pred.x0

    with torch.no_grad():
        if reference is None:
            x = backend.prior_sample(n, generator)
        else:   # at strength → 0 no step runs and the reference is returned untouched
            x = reference if start == steps else backend.noise_to(reference, start, generator)
        if start < steps:
            x, eps, x0 = predict(x, start)
        v, logw = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        ess, keep, decoded = [], torch.arange(n), None
        bar = tqdm(total=steps - start, disable=not progress, desc="sampling", leave=False)
        for b, (i, j) in enumerate(_blocks(start, steps, block_size)):
            # (1) N candidates per state, sharing the parent's ε̂ for their first step
            candidates = x.repeat_interleave(big_n, 0)
            candidate_eps, candidate_x0 = eps.repeat_interleave(big_n, 0), None
            step_x0 = x0.repeat_interleave(big_n, 0)   # x̂0 with ε̂: a flow grid starts at α = 0
            for t in range(i, j):
                candidates = process.step(candidates, t, candidate_eps, generator, x0=step_x0)
                if t + 1 < steps and (t + 1 < j or score_all):
                    candidates, candidate_eps, candidate_x0 = predict(candidates, t + 1)
                    step_x0 = candidate_x0
                bar.update(1)
            # (2) value the children (r itself at the clean end), (3) keep K per population
            if weighted:
                if j == steps:   # decoded once: scored here, and the kept ones are the output
                    decoded = backend.decode(candidates)
                    values = ledger.reward(reward, decoded).double()
                else:
                    values = value_fn(ledger, backend, candidates, candidate_x0, j, generator)
                keep, logw, weights, block_ess, chosen = _select(
                    values, v, logw, lam, big_n, k, selection, ess_threshold, j == steps,
                    generator)
                ess.append(block_ess)
                v = values[keep]
                if callback is not None:
                    callback({"block": b, "i": i, "j": j, "candidates": candidates,
                              "x0": candidate_x0 if score_all else None,
                              "values": values.view(pops, -1),
                              "weights": weights, "selected": chosen, "ess": block_ess,
                              "x": candidates[keep]})
            x = candidates[keep]
            # (4) the kept state's ε̂ for the next block: reused if scored, else one call
            if j < steps:
                if score_all:
                    eps, x0 = candidate_eps[keep], candidate_x0[keep]
                else:
                    x, eps, x0 = predict(x, j)
        bar.close()
        if decoded is not None:
            out, rewards = decoded[keep], v
        else:
            out = backend.decode(x)
            rewards = ledger.reward(reward, out).double()

    settings = {"num_candidates": big_n, "block_size": block_size, "selection": selection,
                "lam": lam, "value": value if isinstance(value, str) else type(value).__name__,
                "particles": k, "ess_threshold": ess_threshold, "steps": steps,
                "start_index": start}
    return SampleResult(out, rewards, ledger.nfe, ledger.reward_calls, ledger.reward_grads,
                        ledger.backprops,
                        torch.stack(ess) if ess else torch.ones(0, pops, dtype=torch.float64),
                        settings)
