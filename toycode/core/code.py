"""CoDe in one screen: the reading edition of the blockwise sampler.

:func:`code_sample` is Algorithm 1 of Singh et al. 2025 (arXiv 2502.00968), blockwise controlled
denoising, with nothing else in it: no SMC weights, no reference start, no callback. It is what
:func:`~toycode.core.sampler.sample_blockwise` (the engine every experiment runs) does for CoDe,
written to be read; ``tests/test_reading_edition.py`` keeps the two bit-identical (samples,
rewards, denoiser and reward calls) under one generator, as EDM keeps its ``edm_sampler`` beside
``ablation_sampler``.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch

from ..utils.checks import check_choice, check_range
from .backend import Backend
from .ledger import Ledger, SampleResult
from .sampler import _blocks, _check_arguments, run_settings
from .values import Value, ValueSpec

__all__ = ["code_sample"]


def _checked_value(
    backend: Backend,
    reward: Callable,
    n: int,
    *,
    num_candidates: int,
    block_size: int,
    selection: str,
    lam: float,
    value: ValueSpec,
) -> Value:
    """The engine's one-line errors for these settings, and the value object."""
    check_range("num_candidates", num_candidates, 2, None)  # N = 1 would select nothing
    check_choice("selection", selection, ("argmax", "softmax"))
    return _check_arguments(
        backend,
        n,
        num_candidates=num_candidates,
        block_size=block_size,
        particles=1,
        lam=lam,
        ess_threshold=1.0,
        selection=selection,
        value=value,
        reward=reward,
        reference=None,
        strength=1.0,
    )


# The reading edition's layout is its purpose (one screen, steps numbered as in Alg. 1), so
# the formatter leaves it as written; everything else in toycode is `ruff format`ted.
# fmt: off
def code_sample(backend: Backend, reward: Callable, n: int, *, num_candidates: int,
                block_size: int, selection: Literal["argmax", "softmax"] = "argmax",
                lam: float = 1.0, value: ValueSpec = "tweedie",
                generator: torch.Generator | None = None) -> SampleResult:
    """CoDe (arXiv 2502.00968, Alg. 1): every B = ``block_size`` steps, N = ``num_candidates``
    continuations of each of the n states, valued at the block end by ``value`` (the reward of
    Tweedie's x̂0, or e.g. :class:`ExactValue`), one kept: the best (argmax) or one drawn
    ∝ e^{λV} (softmax; written λ(V − V_parent), a constant shift per state, as the engine's SMC
    log-weights are, so that the draws agree bit for bit). Cost per sample (Ledger), T steps,
    n_b = ⌈T/B⌉ blocks: NFE = 1 + (T − 1)·N with Tweedie values, (T − n_b)·N + n_b with values
    that read no x̂0. N ≥ 2 (N = 1, the base model, selects nothing: use sample_blockwise)."""
    value_fn = _checked_value(backend, reward, n, num_candidates=num_candidates,
                              block_size=block_size, selection=selection, lam=lam, value=value)
    big_n, process, ledger = num_candidates, backend.process, Ledger()
    steps, reuse = process.num_steps, value_fn.needs_x0   # Tweedie values read every x̂0

    def predict(x, i):   # one batched denoiser call → (state, ε̂, x̂0); guidance may move x
        pred = ledger.predict(backend, x, i, generator)
        return (x if pred.x is None else pred.x), pred.eps, pred.x0
    with torch.no_grad():
        x, eps, x0 = predict(backend.prior_sample(n, generator), 0)   # 1. x_T ~ N(0, I), its ε̂
        v_parent, keep = torch.zeros(n, dtype=torch.float64), torch.arange(n)
        images: Any = None   # the clean end's decoded candidates
        for i, j in _blocks(0, steps, block_size):   # blocks [i, j) of B steps
            # 2. N candidates per state (line 3), all sharing its ε̂ for their first step
            xs, eps_s, x0_s = (t.repeat_interleave(big_n, 0) for t in (x, eps, x0))
            # 3. B reverse steps each (lines 4-6); ε̂ at the block end only if the value reads x̂0
            for t in range(i, j):
                xs = process.step(xs, t, eps_s, generator, x0=x0_s)
                if t + 1 < steps and (t + 1 < j or reuse):
                    xs, eps_s, x0_s = predict(xs, t + 1)
            # 4. value each candidate (line 7): V(x_j), or r itself at the clean end
            if j == steps:
                images = backend.decode(xs)
                values = ledger.reward(reward, images).double()
            else:
                values = value_fn(ledger, backend, xs, x0_s if reuse else None, j, generator)
            # 5. keep one per state (line 8): the best, or one drawn ∝ e^{λ(V − V_parent)}
            if selection == "argmax":
                pick = values.view(n, big_n).topk(1, dim=1).indices
            else:
                logits = (lam * (values - v_parent.repeat_interleave(big_n))).view(n, big_n)
                pick = torch.multinomial(torch.softmax(logits, 1), 1, True, generator=generator)
            keep = (torch.arange(n)[:, None] * big_n + pick).view(-1)
            x, v_parent = xs[keep], values[keep]
            # 6. the kept state's next ε̂: the block-end prediction that scored it, else one call
            if j < steps:
                x, eps, x0 = (x, eps_s[keep], x0_s[keep]) if reuse else predict(x, j)
    settings = run_settings(num_candidates=big_n, block_size=block_size, selection=selection,
                            lam=lam, value=value, steps=steps)
    return SampleResult.from_ledger(images[keep], v_parent, ledger, settings=settings)
# fmt: on
