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
to e^{λ r(x0)}: the intermediate targets are exactly p*_t when V is exact. FK steering's other
potentials and weight bookkeeping, twisted SMC (TDS) and tempered SMC (DAS) run in the same loop:
all of that bookkeeping sits behind one :class:`~toycode.core.steering.Steering` object. The
loop itself is :func:`toycode.code_sample` (:mod:`toycode.core.code`, CoDe's Algorithm 1 in one
screen) plus that one steering call; a test keeps the two equal bit for bit.

    code name     paper symbol
    ---------     ------------
    N             candidates per state (CoDe's N, BoN's N)
    B             block size (CoDe's B); resampling interval for SMC
    K             particles per SMC population (1 for CoDe)
    values        V(x_t): r(x̂0(x_t)) ("tweedie") or the exact soft value; r at the clean end

Cost (NFE = denoiser evaluations, counted only in :class:`Ledger`). The N candidates of a block
share their parent's ε̂, and the ε̂ that gives a candidate its Tweedie x̂0 at the block end is the
one its next step uses, so nothing is evaluated twice. Per output sample, with T steps and
n_b = ⌈T/B⌉ blocks:

    value = "tweedie" (needs x̂0 of every candidate)   NFE = 1 + (T − 1)·N
    value = exact V_t (scored without the denoiser)    NFE = (T − n_b)·N + n_b
    value = look-ahead, M rollouts of k steps          NFE = 1 + (T − 1)·N + (n_b − 1)·N·M·(k − 1)
    value = posterior or learned (toys)                NFE = (T − n_b)·N + n_b
    N = 1 (base, SMC, FK, TDS, DAS)                    NFE = T

(the official CoDe code spends N·T·(1 + 1/B): an extra UNet pass to score each block and N
identical passes on the selected state). Starting from a reference at ``strength`` (CoDe(η)'s
η) replaces T by round(strength·T). Reward calls per sample: N per block scored by Tweedie, N
at the end otherwise, plus M per candidate and interior block end for look-ahead and posterior
values (:mod:`toycode.core.values`; their calls go through the same Ledger). TDS's guided
backend adds one reward gradient and one backward pass per particle and step. Look-ahead's formula
assumes at least k grid steps remain after every block end (fewer steps: fewer calls).
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from ..utils.checks import check_choice, check_range
from .backend import Backend
from .ledger import Ledger, SampleResult
from .steering import (
    POTENTIALS,
    SELECTIONS,
    WEIGHT_MODES,
    Potential,
    Selection,
    Steering,
    WeightMode,
)
from .values import Value, ValueSpec, make_value_fn

__all__ = ["Ledger", "SELECTIONS", "POTENTIALS", "WEIGHT_MODES", "SampleResult", "sample_blockwise"]


def _blocks(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """The blocks [i, j) of ``size`` grid steps from start to stop (the last may be shorter)."""
    return [(i, min(i + size, stop)) for i in range(start, stop, size)]


def _check_arguments(
    backend: Backend,
    n: int,
    *,
    num_candidates: int,
    block_size: int,
    particles: int,
    lam: float,
    ess_threshold: float,
    selection: str,
    value: ValueSpec,
    reward: Callable,
    reference: torch.Tensor | None,
    strength: float,
) -> Value:
    """Refuse bad settings with one-line errors; return the value object."""
    for name, v, lo in (
        ("n", n, 1),
        ("num_candidates", num_candidates, 1),
        ("block_size", block_size, 1),
        ("particles", particles, 1),
    ):
        check_range(name, v, lo, None)
    check_range("lam", lam, 0.0, None)
    check_range("ess_threshold", ess_threshold, 0.0, 1.0)
    check_choice("selection", selection, SELECTIONS)
    value_fn = make_value_fn(value, reward)
    if n % particles:
        raise ValueError(f"n={n} must be a multiple of particles={particles}")
    if particles > 1 and num_candidates > 1:
        raise ValueError(
            f"use either num_candidates={num_candidates} > 1 (CoDe) or "
            f"particles={particles} > 1 (SMC), not both"
        )
    if particles > 1 and selection == "argmax":  # argmax is the λ → ∞ limit: nothing to resample
        raise ValueError(
            "SMC (particles > 1) resamples: use selection='softmax' or 'systematic', not 'argmax'"
        )
    if num_candidates * particles > 1 and backend.process.deterministic:
        raise ValueError(
            "selection needs a stochastic step: with DDIM eta = 0 every candidate "
            "of a shared state is identical and resampled particles never diverge"
        )
    if reference is not None:
        check_range("strength", strength, 0.0, 1.0, low_open=True)
        if len(reference) != n:
            raise ValueError(f"reference must hold n={n} samples, got {len(reference)}")
    return value_fn


def run_settings(
    *,
    num_candidates: int,
    block_size: int,
    selection: str,
    lam: float,
    value: ValueSpec,
    steps: int,
    particles: int = 1,
    ess_threshold: float = 1.0,
    start_index: int = 0,
) -> dict:
    """The settings a blockwise run records (``value`` by name: "tweedie" or its class)."""
    return {
        "num_candidates": num_candidates,
        "block_size": block_size,
        "selection": selection,
        "lam": lam,
        "value": value if isinstance(value, str) else type(value).__name__,
        "particles": particles,
        "ess_threshold": ess_threshold,
        "steps": steps,
        "start_index": start_index,
    }


def _rows(pair, idx=None, repeat=1):
    """The rows ``idx`` (or each row ``repeat`` times) of an optional (ε̂, x̂0) pair."""
    if pair is None:
        return None
    return tuple(p[idx] if idx is not None else p.repeat_interleave(repeat, 0) for p in pair)


def _child_values(
    ledger: Ledger,
    backend: Backend,
    xs: torch.Tensor,
    x0: torch.Tensor | None,
    *,
    reward: Callable,
    value_fn: Value,
    j: int,
    steps: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The children's values at a block end ``j``, and their decoded images at the clean end,
    where the value is r itself and the images are the run's output (decoded once)."""
    if j == steps:
        decoded = backend.decode(xs)
        return ledger.reward(reward, decoded).double(), decoded
    return value_fn(ledger, backend, xs, x0, j, generator), None


def _start(backend: Backend, n: int, *, reference, start: int, generator):
    """x at the start index: the prior, or the reference noised to it (CoDe(η)); at strength
    → 0 no step runs and the reference is returned untouched."""
    if reference is None:
        return backend.prior_sample(n, generator)
    steps = backend.process.num_steps
    return reference if start == steps else backend.noise_to(reference, start, generator)


# Laid out line for line beside toycode.code_sample (its reading edition), so the formatter
# leaves it as written; everything else in toycode is `ruff format`ted.
# fmt: off
def sample_blockwise(backend: Backend, reward: Callable, n: int, *, num_candidates: int = 1,
                     block_size: int = 1, selection: Selection = "argmax", lam: float = 1.0,
                     value: ValueSpec = "tweedie", particles: int = 1,
                     ess_threshold: float = 1.0, reference: torch.Tensor | None = None,
                     strength: float = 1.0, generator: torch.Generator | None = None,
                     callback: Callable[[dict], None] | None = None,
                     progress: bool = False, potential: Potential = "diff",
                     weight_mode: WeightMode = "incremental", twisted: bool = False,
                     tempering: float | None = None) -> SampleResult:
    """Blockwise controlled denoising (CoDe, arXiv 2502.00968 Alg. 1) and SMC, in one loop.

    N = ``num_candidates``, B = ``block_size``: N = 1 is the base model, B ≥ T best-of-N, B = 1
    SVDD. ``value`` is "tweedie" or a :class:`~toycode.core.values.Value` (e.g. ExactValue).
    ``reference`` (n samples) and ``strength`` ∈ (0, 1] start from the reference noised to that
    strength (CoDe(η)). ``particles`` (SMC), ``ess_threshold``, ``potential``, ``weight_mode``,
    ``twisted`` (TDS) and ``tempering`` (DAS) are :class:`~toycode.core.steering.Steering`'s.
    ``callback`` gets :meth:`~toycode.core.steering.BlockEnd.record`'s dict at each block end.
    """
    value_fn = _check_arguments(
        backend, n, num_candidates=num_candidates, block_size=block_size, particles=particles,
        lam=lam, ess_threshold=ess_threshold, selection=selection, value=value, reward=reward,
        reference=reference, strength=strength)
    process, big_n, ledger = backend.process, num_candidates, Ledger()
    steps = process.num_steps
    start = 0 if reference is None else steps - round(strength * steps)
    steer = Steering(n=n, num_candidates=big_n, particles=particles, selection=selection,
                     lam=lam, ess_threshold=ess_threshold, potential=potential,
                     weight_mode=weight_mode, twisted=twisted, tempering=tempering, start=start)
    reuse = steer.weighted and value_fn.needs_x0   # every block-end candidate needs its x̂0

    def predict(x, i):   # a guided predict may move the state (self-recurrence)
        pred = steer.checked(ledger.predict(backend, x, i, generator))
        return (x if pred.x is None else pred.x), pred.eps, pred.x0, pred.unguided

    bar = tqdm(total=steps - start, disable=not progress, desc="sampling", leave=False)
    with torch.no_grad(), bar:
        # 1. the starting states and their ε̂, one denoiser call each
        x = _start(backend, n, reference=reference, start=start, generator=generator)
        x, eps, x0, base = predict(x, start) if start < steps else (x, None, None, None)
        keep, decoded = torch.arange(n), None
        for b, (i, j) in enumerate(_blocks(start, steps, block_size)):
            assert eps is not None and x0 is not None
            # 2. N candidates per state, sharing the parent's ε̂ (and x̂0) for their first step
            xs, eps_s, x0_s = (t.repeat_interleave(big_n, 0) for t in (x, eps, x0))
            base_s, log_pq, scored_x0 = _rows(base, repeat=big_n), 0.0, None
            # 3. B reverse steps each; the block-end ε̂ only where the values read x̂0
            for t in range(i, j):
                xs, log_ratio = steer.propose(process, xs, t, eps_s, x0=x0_s, base=base_s,
                                              generator=generator)
                log_pq = log_pq + log_ratio
                if t + 1 < steps and (t + 1 < j or reuse):
                    xs, eps_s, x0_s, base_s = predict(xs, t + 1)
                    scored_x0 = x0_s
                bar.update(1)
            if steer.weighted:
                # 4. value the children: r itself at the clean end (decoded once: the output)
                x0_v = steer.value_x0(x0_s, base_s) if reuse and j < steps else None
                values, decoded = _child_values(ledger, backend, xs, x0_v, reward=reward,
                                                value_fn=value_fn, j=j, steps=steps,
                                                generator=generator)
                # 5. the one steering call: weigh the children, keep K per population
                end = steer.block_end(values, i=i, j=j, clean=j == steps, log_pq=log_pq,
                                      generator=generator)
                keep = end.keep
                if callback is not None:
                    callback(end.record(block=b, i=i, j=j, candidates=xs, values=values,
                                        x0=scored_x0 if reuse else None))
            x = xs[keep]
            # 6. the kept state's ε̂ for the next block: reused if scored, else one call
            if j < steps and reuse:
                eps, x0, base = eps_s[keep], x0_s[keep], _rows(base_s, keep)
            elif j < steps:
                x, eps, x0, base = predict(x, j)
        out = backend.decode(x) if decoded is None else decoded[keep]   # N·K = 1: unscored
        rewards = ledger.reward(reward, out).double() if decoded is None else steer.values
    settings = run_settings(num_candidates=big_n, block_size=block_size, selection=selection,
                            lam=lam, value=value, particles=particles,
                            ess_threshold=ess_threshold, steps=steps, start_index=start)
    return SampleResult.from_ledger(out, rewards, ledger, ess=steer.ess_table(),
                                    settings={**settings, **steer.settings()})
# fmt: on
