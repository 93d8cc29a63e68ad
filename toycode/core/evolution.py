"""Evolutionary search over initial noises (EvoSearch; He et al. 2025, arXiv 2505.17618).

A loop beside the blockwise sampler with its call signature: a population of P initial noises per
output is run through the base sampler and scored; each generation keeps the E best noises (the
elites) and breeds P − E children from parents won by tournaments, mutated so that a child of a
standard-normal parent is standard normal again:

    child = √(1 − β²)·parent + β·ε,   ε ~ N(0, I)       (β the mutation rate, 0.2 in the paper)

The elites' rollouts are not repeated, so every generation after the first costs P − E
trajectories; N (``num_candidates``) is the budget in trajectories, P + (G − 1)(P − E) = N with
the last generation taking what is left. The output is the best sample seen (an optimiser, like
random search; λ plays no part). The official code also evolves intermediate states along an
``evolution_schedule``; toycode keeps the noise-space search the issue compares with random and
zero-order search.

    code name       paper symbol
    ---------       ------------
    population      population size (constant here; the paper's schedule may shrink it)
    elites          elite_size
    mutation_rate   β, the mutation rate
    tournament      share of the population drawn into each tournament (0.9 in the code)
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
from tqdm.auto import tqdm

from ..utils.checks import check_range
from .backend import Backend
from .ledger import Ledger, SampleResult
from .search import _replace, _run_base, _search_settings
from .values import ValueSpec

__all__ = ["evolutionary_search", "mutate", "tournament", "generation_sizes"]


def mutate(parents: torch.Tensor, rate: float, generator: torch.Generator | None) -> torch.Tensor:
    """EvoSearch's noise mutation √(1 − β²)·x + β·ε: it keeps N(0, I) (a rotation of the pair
    (x, ε)), so a child of a Gaussian parent is as likely a starting noise as the parent."""
    eps = torch.randn(parents.shape, generator=generator, dtype=parents.dtype)
    return math.sqrt(1.0 - rate * rate) * parents + rate * eps.to(parents.device)


def tournament(
    scores: torch.Tensor, picks: int, share: float, generator: torch.Generator | None
) -> torch.Tensor:
    """``picks`` tournament winners per row of ``scores`` (rows: outputs, columns: the
    population): each tournament draws ⌈share·P⌉ members without replacement and the best wins."""
    rows, size = scores.shape
    entrants = max(1, math.ceil(share * size))
    draw = torch.rand(rows, picks, size, generator=generator).argsort(2)[..., :entrants]
    entrant_scores = scores[:, None, :].expand(rows, picks, size).gather(2, draw)
    return draw.gather(2, entrant_scores.argmax(2, keepdim=True))[..., 0]


def generation_sizes(budget: int, population: int, elites: int) -> list[int]:
    """Trajectories run in each generation: P first, then P − E children until the budget N
    is spent (the last generation takes what is left); N ≤ P is one generation of N."""
    sizes = [min(budget, population)]
    left = budget - sizes[0]
    while left > 0:
        sizes.append(min(left, population - elites))
        left -= sizes[-1]
    return sizes


class _Run(NamedTuple):
    """Where the search's counted calls go and its progress bar (one argument, not five)."""

    backend: Backend
    reward: Callable
    ledger: Ledger
    generator: torch.Generator | None
    bar: Any

    def rollout(self, noise: torch.Tensor):
        """The base sampler from each noise to the clean end (the draws of the base model's
        loop), decoded and scored."""
        x = _run_base(self.ledger, self.backend, noise, self.generator, bar=self.bar)
        decoded = self.backend.decode(x)
        return decoded, self.ledger.reward(self.reward, decoded).double()


def _check(n, num_candidates, population, elites, *, selection, rates):
    mutation_rate, tournament_share = rates
    if selection != "argmax":
        raise ValueError(
            f"EvoSearch keeps the best sample: selection must be 'argmax', got {selection!r}"
        )
    check_range("n", n, 1, None)
    check_range("num_candidates", num_candidates, 1, None)
    check_range("population", population, 2, None)
    check_range("elites", elites, 0, population - 1)
    check_range("mutation_rate", mutation_rate, 0.0, 1.0, low_open=True)
    check_range("tournament", tournament_share, 0.0, 1.0, low_open=True)


def evolutionary_search(
    backend: Backend,
    reward: Callable,
    n: int,
    *,
    num_candidates: int = 1,
    block_size: int | None = None,
    selection: str = "argmax",
    lam: float = 1.0,
    value: ValueSpec = "tweedie",
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    population: int | None = None,
    elites: int | None = None,
    mutation_rate: float = 0.2,
    tournament_share: float = 0.9,
) -> SampleResult:
    """EvoSearch over initial noises (He et al. 2025, arXiv 2505.17618), N = ``num_candidates``
    trajectories per output in all (NFE = N·T, N reward calls).

    ``population`` P defaults to ⌈N/2⌉ (at least 2: two generations when N ≥ 4), ``elites`` E to
    ⌈P/8⌉; N = 1 runs the base model's draws exactly. ``block_size``, ``value`` and ``lam`` are
    not read: finished samples are scored by r alone and the best one is kept (``selection``
    must be argmax). ``callback`` receives a dict per generation: generation, noise (n, m, …),
    rewards (n, m), parents (n, m; indices into the previous population, None at first), best
    (n,) the best reward so far.
    """
    pop = population or max(2, math.ceil(num_candidates / 2))
    keep = elites if elites is not None else math.ceil(pop / 8)
    _check(
        n, num_candidates, pop, keep, selection=selection, rates=(mutation_rate, tournament_share)
    )
    steps, ledger = backend.process.num_steps, Ledger()
    sizes = generation_sizes(num_candidates, pop, keep)
    bar = tqdm(total=steps * len(sizes), disable=not progress, desc="EvoSearch", leave=False)
    run = _Run(backend, reward, ledger, generator, bar)
    with torch.no_grad():
        noise = backend.prior_sample(n * sizes[0], generator)  # row b·m + c: output b, member c
        decoded, rewards = run.rollout(noise)
        state = _Population(
            noise.view(n, sizes[0], *noise.shape[1:]),
            rewards.view(n, sizes[0]),
            _rows(decoded, _flat(rewards.view(n, -1).argmax(1), sizes[0])),
            rewards.view(n, -1).max(1).values,
        )
        for g, m in enumerate(sizes):
            parents = None
            if g > 0:
                parents = tournament(state.rewards, m, tournament_share, generator)
                state = _breed(run, state, parents, keep=keep, rate=mutation_rate)
            if callback is not None:
                callback(
                    {
                        "generation": g,
                        "noise": state.noise[:, -m:],
                        "rewards": state.rewards[:, -m:],
                        "parents": parents,
                        "best": state.best_reward,
                    }
                )
        bar.close()
    settings = _search_settings(
        num_candidates,
        "argmax",
        lam,
        steps,
        population=pop,
        elites=keep,
        mutation_rate=mutation_rate,
        tournament_share=tournament_share,
    )
    return SampleResult.from_ledger(
        state.best, state.best_reward, ledger, settings=settings, populations=n
    )


class _Population(NamedTuple):
    """One generation per output: its noises (n, P, …) and rewards (n, P), and the best sample
    seen so far with its reward."""

    noise: torch.Tensor
    rewards: torch.Tensor
    best: Any
    best_reward: torch.Tensor


def _breed(run: _Run, state: _Population, parents: torch.Tensor, *, keep: int, rate: float):
    """The next generation: the E elites of ``state`` and the mutated children of ``parents``
    (n, m), whose rollouts are run and scored; the best sample seen is updated."""
    n, m = parents.shape
    shape = state.noise.shape[2:]
    children = mutate(_members(state.noise, parents), rate, run.generator)
    decoded, r = run.rollout(children)
    r = r.view(n, m)
    better = r.max(1).values > state.best_reward
    best = _replace(state.best, better, decoded, _flat(r.argmax(1), m)[better])
    elite = state.rewards.argsort(1, descending=True)[:, :keep]
    return _Population(
        torch.cat(
            [_members(state.noise, elite).view(n, keep, *shape), children.view(n, m, *shape)], 1
        ),
        torch.cat([state.rewards.gather(1, elite), r], 1),
        best,
        torch.maximum(state.best_reward, r.max(1).values),
    )


def _flat(col: torch.Tensor, m: int) -> torch.Tensor:
    """Row b's column col[b] as an index into the flat (n·m) batch."""
    return torch.arange(len(col)) * m + col


def _rows(decoded, idx: torch.Tensor):
    """The rows idx of a decoded batch (a tensor, or a list of images)."""
    return decoded[idx] if isinstance(decoded, torch.Tensor) else [decoded[i] for i in idx.tolist()]


def _members(noise: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """noise[b, idx[b, j]] for every output b, flattened to (n·j, …) rows."""
    return noise[torch.arange(len(noise))[:, None], idx].flatten(0, 1)
