"""Search loops beside the blockwise sampler: noises, trees and shrinking beams.

Each loop has :func:`~toycode.core.sampler.sample_blockwise`'s call signature, counts every denoiser
and reward call in a :class:`~toycode.core.sampler.Ledger` and returns a
:class:`~toycode.core.sampler.SampleResult` (cost totals over the n outputs). The n searches are
independent and run batched in one tensor; nothing loops over samples in Python.

    loop                        paper                                       NFE per output
    ----                        -----                                       --------------
    noise_random_search         Ma et al. 2025 (arXiv 2501.09732), random   N·T
    noise_zero_order_search     Ma et al. 2025, zero-order (pivot + nbrs)   N·T
    tree_sample                 Jain et al. 2025 (arXiv 2506.20701), DTS    ≤ N·T
                                (softmax) and DTS* (argmax)
    beam_search                 Li et al. 2025 (arXiv 2503.02039), DSearch  W_0 + N Σ_b W_b B_b
                                (beam W_b shrinking per block)               − N W_last (Tweedie)

    code name     paper symbol
    ---------     ------------
    N             noises tried (noise search); rollout budget in full trajectories (DTS);
                  children per beam member (beam)
    children      DTS's maximum number of children per node
    W, W_b        the beam's initial width W_0 (``beam_width``) and its width in block b
    V̂            DTS's soft value of a node, backed up from the rewards below it
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
from tqdm.auto import tqdm

from ..utils.checks import check_choice, check_range
from .backend import Backend
from .sampler import Ledger, SampleResult, _blocks
from .values import Value, ValueSpec, make_value_fn

__all__ = [
    "noise_random_search",
    "noise_zero_order_search",
    "tree_sample",
    "Forest",
    "beam_search",
    "beam_widths",
    "beam_nfe",
    "BEAM_SCHEDULES",
]


def _check_common(backend, n, num_candidates, lam):
    check_range("n", n, 1, None)
    check_range("num_candidates", num_candidates, 1, None)
    check_range("lam", lam, 0.0, None)
    return backend.process.num_steps


def _check_argmax(selection: str, why: str) -> None:
    """The searches that keep only the best refuse any other selection rule, saying why."""
    if selection != "argmax":
        raise ValueError(f"{why}: selection must be 'argmax', got {selection!r}")


def _check_branching(backend: Backend, children: int, search: str, parent: str) -> None:
    """A search that branches needs a stochastic step: under η = 0 a parent's children coincide."""
    if children > 1 and backend.process.deterministic:
        raise ValueError(
            f"{search} needs a stochastic step: with DDIM eta = 0 every child of {parent} is "
            "identical"
        )


class _Calls(NamedTuple):
    """Where one search's counted calls go: the backend and reward it calls, the ledger that
    counts them, the generator of its draws and its progress bar (one argument, not five)."""

    backend: Backend
    reward: Callable
    ledger: Ledger
    generator: torch.Generator | None
    bar: Any


def _run_base(ledger: Ledger, backend: Backend, x: torch.Tensor, generator, *, bar=None):
    """The backend's own sampler from x at index 0 to the clean end (the base model's loop,
    in the same order of random draws as :func:`sample_blockwise` with N = 1)."""
    process = backend.process
    for i in range(process.num_steps):
        pred = ledger.predict(backend, x, i, generator)
        x = x if pred.x is None else pred.x
        x = process.step(x, i, pred.eps, generator, x0=pred.x0)
        if bar is not None:
            bar.update(1)
    return x


def _pick(rewards: torch.Tensor, selection: str, lam: float, generator) -> torch.Tensor:
    """One column per row: the best (argmax) or a draw ∝ e^{λ r} (softmax)."""
    if selection == "argmax":
        return rewards.argmax(1)
    return torch.multinomial(torch.softmax(lam * rewards, 1), 1, generator=generator)[:, 0]


def _result(out, rewards, ledger: Ledger, *, settings: dict, pops: int) -> SampleResult:
    return SampleResult.from_ledger(out, rewards, ledger, settings=settings, populations=pops)


def _search_settings(num_candidates: int, selection: str, lam: float, steps: int, **own) -> dict:
    """The settings a search records: the four every loop has, then its own."""
    return {
        "num_candidates": num_candidates,
        "selection": selection,
        "lam": lam,
        "steps": steps,
        **own,
    }


# -- noise search (Ma et al. 2025) ---------------------------------------------------------------


def noise_random_search(
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
) -> SampleResult:
    """Random search over initial noises (Ma et al. 2025, arXiv 2501.09732, §3.2).

    Draw N = ``num_candidates`` noises x_T per output, run the backend's own sampler from each,
    keep the trajectory with the best final reward (``selection="softmax"``: draw one ∝ e^{λr}).
    Each kept trajectory is exactly the base sampler's output from its noise; with a stochastic
    step (η > 0) this is best-of-N. ``block_size`` and ``value`` are not read (scored by r only).
    ``callback`` receives one dict: noise (n, N, …), rewards (n, N), selected (n,).
    NFE = N·T per output, N reward calls.
    """
    steps = _check_common(backend, n, num_candidates, lam)
    check_choice("selection", selection, ("argmax", "softmax"))
    big_n, ledger = num_candidates, Ledger()
    with torch.no_grad():
        noise = backend.prior_sample(n * big_n, generator)  # row b·N + c: output b, noise c
        bar = tqdm(total=steps, disable=not progress, desc="noise search", leave=False)
        x = _run_base(ledger, backend, noise, generator, bar=bar)
        bar.close()
        decoded = backend.decode(x)
        rewards = ledger.reward(reward, decoded).double().view(n, big_n)
        chosen = _pick(rewards, selection, lam, generator)
        keep = torch.arange(n) * big_n + chosen
        if callback is not None:
            callback(
                {
                    "round": 0,
                    "noise": noise.view(n, big_n, *noise.shape[1:]),
                    "rewards": rewards,
                    "selected": chosen,
                }
            )
    settings = {"num_candidates": big_n, "selection": selection, "lam": lam, "steps": steps}
    return _result(decoded[keep], rewards.view(-1)[keep], ledger, settings=settings, pops=n)


def noise_zero_order_search(
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
    neighbours: int = 4,
    radius: float = 0.5,
) -> SampleResult:
    """Zero-order search over initial noises (Ma et al. 2025, arXiv 2501.09732, §3.2).

    Start from a random pivot noise; each round draws ``neighbours`` noises uniformly on the
    sphere of radius ``radius``·√d around the pivot (d the noise's size, so ``radius`` is
    relative to a standard normal's typical norm), runs the backend's sampler from each and
    makes the best of pivot and neighbours the new pivot (hill climbing: the kept reward never
    falls). N = ``num_candidates`` is the number of trajectories run per output (the pivot and
    N − 1 neighbours; the last round takes what is left), so NFE = N·T and N = 1 is the base
    model. The output is the final pivot's trajectory, exactly the base sampler's output from
    that noise. ``callback`` receives a dict per round: round, centre (the pivot the
    neighbours surround), noise (n, m, …), rewards (n, m), selected (n,; index into the old
    pivot + m neighbours, 0 = the old pivot), pivot (the new one).
    """
    steps = _check_common(backend, n, num_candidates, lam)
    check_range("neighbours", neighbours, 1, None)
    check_range("radius", radius, 0.0, None, low_open=True)
    _check_argmax(selection, "zero-order search keeps the best noise")
    ledger = Ledger()
    rounds = [neighbours] * ((num_candidates - 1) // neighbours)
    if (num_candidates - 1) % neighbours:
        rounds.append((num_candidates - 1) % neighbours)
    with torch.no_grad():
        bar = tqdm(
            total=steps * (1 + len(rounds)), disable=not progress, desc="zero-order", leave=False
        )
        pivot = backend.prior_sample(n, generator)
        decoded = backend.decode(_run_base(ledger, backend, pivot, generator, bar=bar))
        best = ledger.reward(reward, decoded).double()
        for r, m in enumerate(rounds):
            # (1) m neighbours on the sphere of radius ρ = radius·√d around each pivot
            noise = _sphere_neighbours(pivot, m, radius, generator)
            # (2) their trajectories and rewards, (3) the best of pivot + neighbours
            dec = backend.decode(_run_base(ledger, backend, noise, generator, bar=bar))
            rewards = ledger.reward(reward, dec).double().view(n, m)
            scores = torch.cat([best[:, None], rewards], 1)
            chosen = scores.argmax(1)
            moved = chosen > 0
            rows = torch.arange(n)[moved] * m + chosen[moved] - 1
            centre, pivot = pivot, pivot.clone()
            best = scores.gather(1, chosen[:, None])[:, 0]
            pivot[moved] = noise[rows]
            decoded = _replace(decoded, moved, dec, rows)
            if callback is not None:
                callback(
                    {
                        "round": r,
                        "centre": centre,
                        "noise": noise.view(n, m, *noise.shape[1:]),
                        "rewards": rewards,
                        "selected": chosen,
                        "pivot": pivot,
                    }
                )
        bar.close()
    settings = _search_settings(
        num_candidates, "argmax", lam, steps, neighbours=neighbours, radius=radius
    )
    return _result(decoded, best, ledger, settings=settings, pops=n)


def _sphere_neighbours(pivot: torch.Tensor, m: int, radius: float, generator) -> torch.Tensor:
    """m noises per pivot row, uniform on the sphere of radius ρ = radius·√d around it
    (d the noise's size), rows ordered pivot by pivot; drawn in float64."""
    n = len(pivot)
    z = torch.randn((n * m, *pivot.shape[1:]), generator=generator, dtype=torch.float64).to(
        pivot.device
    )
    flat = z.view(n * m, -1)
    rho = radius * math.sqrt(flat.shape[1])
    step = (rho * flat / flat.norm(dim=1, keepdim=True)).view(z.shape).to(pivot.dtype)
    return pivot.repeat_interleave(m, 0) + step


def _replace(decoded, mask, new, rows):
    """decoded with its rows under ``mask`` replaced by ``new[rows]`` (tensors or lists)."""
    if isinstance(decoded, torch.Tensor):
        decoded = decoded.clone()
        decoded[mask] = new[rows]
        return decoded
    out = list(decoded)
    for i, r in zip(mask.nonzero()[:, 0].tolist(), rows.tolist()):
        out[i] = new[r]
    return out


# -- Diffusion Tree Sampling (Jain et al. 2025) -------------------------------------------------


class Forest:
    """n independent search trees over one reverse process, as padded node tensors.

    Node 0 of every tree is a dummy root (depth −1) whose children are prior draws x_T (depth
    0); a node at depth i < T holds the state at grid index i, its ε̂ and x̂0 (once predicted),
    its parent, up to ``children`` child ids, its soft value V̂ and whether its subtree is
    saturated (every node full, down to the leaves at depth T). Row b of every tensor is tree
    b; the node capacity grows as rollouts add nodes.
    """

    def __init__(self, n: int, steps: int, children: int, like: torch.Tensor, capacity: int = 64):
        self.n, self.steps, self.k = n, steps, children
        self.shape, self.dtype, self.device = tuple(like.shape[1:]), like.dtype, like.device
        self.count = torch.ones(n, dtype=torch.long)
        self.capacity = 0
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        if extra <= 0:
            return
        n, k = self.n, self.k

        def pad(t, shape, fill, dtype, *, device=None):
            new = torch.full((n, extra, *shape), fill, dtype=dtype, device=device)
            return new if t is None else torch.cat([t, new], 1)

        first = self.capacity == 0
        self.x = pad(None if first else self.x, self.shape, 0, self.dtype, device=self.device)
        self.eps = pad(None if first else self.eps, self.shape, 0, self.dtype, device=self.device)
        self.x0 = pad(None if first else self.x0, self.shape, 0, self.dtype, device=self.device)
        self.depth = pad(None if first else self.depth, (), -1, torch.long)
        self.parent = pad(None if first else self.parent, (), -1, torch.long)
        self.kids = pad(None if first else self.kids, (k,), -1, torch.long)
        self.nkids = pad(None if first else self.nkids, (), 0, torch.long)
        self.value = pad(None if first else self.value, (), 0.0, torch.float64)
        self.sat = pad(None if first else self.sat, (), False, torch.bool)
        self.capacity = capacity

    def reserve(self, nodes: int) -> None:
        """Room for ``nodes`` more nodes in every tree."""
        need = int(self.count.max()) + nodes
        if need > self.capacity:
            self._grow(max(need, 2 * self.capacity))

    def add(
        self, rows: torch.Tensor, parent: torch.Tensor, x: torch.Tensor, depth: int
    ) -> torch.Tensor:
        """Append one node per tree in ``rows`` (state x at ``depth``) under ``parent``."""
        ids = self.count[rows]
        self.x[rows, ids] = x
        self.depth[rows, ids] = depth
        self.parent[rows, ids] = parent
        self.kids[rows, parent, self.nkids[rows, parent]] = ids
        self.nkids[rows, parent] += 1
        self.count[rows] += 1
        return ids

    def choose(
        self,
        rows: torch.Tensor,
        node: torch.Tensor,
        lam: float,
        greedy: bool,
        generator,
        open_only: bool = False,
    ) -> torch.Tensor:
        """A child of each ``node``: ∝ e^{λ V̂(child)} (Boltzmann) or the argmax of V̂, among
        the existing children (``open_only``: among those whose subtree is not saturated)."""
        kids = self.kids[rows, node]
        ok = kids >= 0
        safe = kids.clamp(min=0)
        if open_only:
            ok &= ~self.sat[rows[:, None], safe]
        v = self.value[rows[:, None], safe]
        logits = torch.where(ok, lam * v if not greedy else v, -math.inf)
        if greedy:
            pick = logits.argmax(1)
        else:
            pick = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator)[:, 0]
        return kids.gather(1, pick[:, None])[:, 0]

    def draw(self, lam: float, greedy: bool, generator) -> torch.Tensor:
        """One leaf per tree, chosen from the root down by :meth:`choose`'s rule."""
        rows = torch.arange(self.n)
        node = torch.zeros(self.n, dtype=torch.long)
        for _ in range(self.steps + 1):
            node = self.choose(rows, node, lam, greedy, generator)
        return node

    def settle(
        self, rows: torch.Tensor, leaf: torch.Tensor, rewards: torch.Tensor, lam: float
    ) -> None:
        """A rollout's end: each new ``leaf`` takes its reward as V̂ (a leaf is saturated), and
        the values are backed up to the root."""
        self.value[rows, leaf] = rewards
        self.sat[rows, leaf] = True
        self.backup(rows, leaf, lam)

    def backup(self, rows: torch.Tensor, leaf: torch.Tensor, lam: float) -> None:
        """Soft Bellman backup from each new ``leaf`` to the root:
        V̂(node) = (1/λ) log mean_{c ∈ children} e^{λ V̂(c)} (the mean at λ = 0), and a node is
        saturated when it is full and all its children are."""
        node = self.parent[rows, leaf]
        for _ in range(self.steps + 1):
            live = node >= 0
            if not live.any():
                break
            r, v_node = rows[live], node[live]
            kids = self.kids[r, v_node]
            ok = kids >= 0
            safe = kids.clamp(min=0)
            v = self.value[r[:, None], safe]
            count = ok.sum(1)
            if lam == 0:
                new = torch.where(ok, v, 0.0).sum(1) / count
            else:
                new = (
                    torch.logsumexp(torch.where(ok, lam * v, -math.inf), 1) - count.double().log()
                ) / lam
            self.value[r, v_node] = new
            self.sat[r, v_node] = (count >= self.k) & (self.sat[r[:, None], safe] | ~ok).all(1)
            node = node.clone()
            node[live] = self.parent[r, v_node]


def tree_sample(
    backend: Backend,
    reward: Callable,
    n: int,
    *,
    num_candidates: int = 1,
    block_size: int | None = None,
    selection: str = "softmax",
    lam: float = 1.0,
    value: ValueSpec = "tweedie",
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    children: int = 4,
    descent: str = "boltzmann",
) -> SampleResult:
    """Diffusion Tree Sampling (DTS) and Search (DTS*) (Jain, Sareen, Pedramfar, Ravanbakhsh
    2025, arXiv 2506.20701).

    One tree per output over the denoising chain. Each iteration (1) descends from the root,
    choosing among a full node's children ∝ e^{λ V̂(child)} (``selection="softmax"``, DTS) or by
    the largest V̂ (``"argmax"``, DTS*), until a node with fewer than ``children`` children;
    (2) draws a new child there (x_T from the prior at the root, else one reverse step from the
    node's stored ε̂) and rolls it out to the clean end with the model, adding every state to
    the tree; (3) scores r(x_0) and (4) backs up soft values
    V̂(node) = (1/λ) log mean_children e^{λ V̂(child)} along the path (a leaf's V̂ is r). The
    output is drawn by the same rule from the root to a leaf, without further calls.

    Budget: each tree runs iterations while it has spent at most (N − 1)·T denoiser calls, N =
    ``num_candidates``, so it spends at most N·T (a rollout from depth i costs T − i; N = 1 is
    one base trajectory). Descents skip saturated subtrees, so a tree stops early only when it
    is complete. ``block_size`` and ``value`` are not read: values come from the rollouts'
    rewards. ``descent="uniform"`` (a diagnostic, not DTS) picks the child to descend into
    uniformly during the search, so the tree's shape does not depend on the values; the final
    draw is unchanged. ``callback`` receives a dict per iteration: iteration, active (n,),
    depth (n; the new child's depth), rewards (n; NaN where inactive), root_value (n), nodes.
    """
    steps = _check_common(backend, n, num_candidates, lam)
    _check_tree(backend, selection, children, descent)
    greedy, ledger = selection == "argmax", Ledger()
    descend = _descent_rule(descent, lam, greedy)
    budget = num_candidates * steps
    rows_all = torch.arange(n)
    spent = torch.zeros(n, dtype=torch.long)
    forest: Forest | None = None
    iteration = 0
    bar = tqdm(total=budget, disable=not progress, desc="tree search", leave=False)
    calls = _Calls(backend, reward, ledger, generator, bar)
    with torch.no_grad():
        while True:
            active = _open_trees(forest, spent, steps, budget)
            if not active.any():
                break
            rows = rows_all[active]
            # (1) selection: descend through full nodes to the first one with room
            parent, pdepth = _descend_to_open(forest, rows, **descend, generator=generator)
            # (2) expansion and rollout, all trees in lockstep over the grid
            forest, x, leaf = _expand_and_roll_out(
                forest, rows, parent, pdepth, calls=calls, n=n, children=children
            )
            # (3) the leaves' rewards, (4) soft Bellman backup to the root
            r = ledger.reward(reward, backend.decode(x)).double()
            forest.settle(rows, leaf, r, lam)
            spent[active] += steps - (pdepth + 1)
            if callback is not None:
                callback(_tree_report(forest, active, pdepth + 1, r, iteration=iteration))
            iteration += 1
        bar.close()
        assert forest is not None  # the first iteration always runs (N ≥ 1)
        # the output: one draw from the root to a leaf by the same rule
        node = forest.draw(lam, greedy, generator)
        out = backend.decode(forest.x[rows_all, node])
        rewards = forest.value[rows_all, node].clone()
    stats = {"iterations": iteration, "nodes_mean": float(forest.count.double().mean())}
    settings = _search_settings(
        num_candidates, selection, lam, steps, children=children, descent=descent, **stats
    )
    return _result(out, rewards, ledger, settings=settings, pops=n)


def _check_tree(backend: Backend, selection: str, children: int, descent: str) -> None:
    """DTS's own arguments, checked after the common ones (the first bad one is reported)."""
    check_choice("selection", selection, ("softmax", "argmax"))
    check_range("children", children, 1, None)
    check_choice("descent", descent, ("boltzmann", "uniform"))
    _check_branching(backend, children, "tree sampling", "a node")


def _descent_rule(descent: str, lam: float, greedy: bool) -> dict:
    """The search's descent rule as :meth:`Forest.choose`'s (λ, greedy): the output's own rule,
    or for the uniform descent (a diagnostic) the Boltzmann rule at λ = 0."""
    boltzmann = descent == "boltzmann"
    return {"lam": lam if boltzmann else 0.0, "greedy": greedy and boltzmann}


def _open_trees(
    forest: Forest | None, spent: torch.Tensor, steps: int, budget: int
) -> torch.Tensor:
    """The trees still searching: those that can afford a full rollout (T more calls) and are
    not yet complete (a saturated root)."""
    active = spent + steps <= budget
    if forest is not None:
        active &= ~forest.sat[:, 0]
    return active


def _descend_to_open(
    forest: Forest | None, rows: torch.Tensor, *, lam: float, greedy: bool, generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """From each root, choose children through full nodes (skipping saturated subtrees) to the
    first node with fewer than ``children`` children, for every tree in ``rows``; returns those
    nodes and their depths (the dummy root, depth −1, before the forest exists)."""
    if forest is None:
        node = torch.zeros(len(rows), dtype=torch.long)
        return node, torch.full_like(node, -1)
    forest.reserve(forest.steps + 1)
    node = torch.zeros(len(rows), dtype=torch.long)
    going = forest.nkids[rows, node] >= forest.k
    for _ in range(forest.steps + 1):
        if not going.any():
            break
        node = node.clone()
        node[going] = forest.choose(
            rows[going], node[going], lam, greedy, generator, open_only=True
        )
        going = forest.nkids[rows, node] >= forest.k
    return node, forest.depth[rows, node]


def _expand_and_roll_out(
    forest: Forest | None,
    rows: torch.Tensor,
    parent: torch.Tensor,
    pdepth: torch.Tensor,
    *,
    calls: _Calls,
    n: int,
    children: int,
) -> tuple[Forest, torch.Tensor, torch.Tensor]:
    """A new child under each ``parent`` (at depth ``pdepth``) of the trees in ``rows``, rolled
    out to the clean end with every state added to the forest; returns the forest (built from
    the first prior draws), the clean states and the leaves' node ids.

    A child of the root is a prior draw x_T; any other child is one reverse step from its
    parent's stored ε̂ and x̂0. All paths advance in lockstep over the grid: at depth d the
    paths already born are predicted and stepped, the ones expanding from depth d step."""
    backend, ledger, generator = calls.backend, calls.ledger, calls.generator
    process, steps = backend.process, backend.process.num_steps
    start = int(pdepth.min().clamp(min=0))
    born = pdepth + 1  # the new child's depth
    roots = born == 0
    # the prior draws come first, before any prediction (as at d = 0 of the grid)
    fresh = backend.prior_sample(int(roots.sum()), generator) if roots.any() else None
    if forest is None:  # the first iteration: every tree is at its root
        assert fresh is not None
        forest = Forest(n, steps, children, fresh, capacity=2 * (steps + 1))
    x = forest.x.new_zeros((len(rows), *forest.shape))
    if fresh is not None:
        x[roots] = fresh
    here = parent.clone()  # the last node added on each path
    for d in range(start, steps + 1):
        alive = born <= d
        if alive.any():
            here[alive] = forest.add(rows[alive], here[alive], x[alive], d)
        if d == steps:
            break
        # the alive states are predicted here; the expanders step from their parent
        if alive.any():
            pred = ledger.predict(backend, x[alive], d, generator)
            if pred.x is not None:
                x[alive] = pred.x
                forest.x[rows[alive], here[alive]] = pred.x
            forest.eps[rows[alive], here[alive]] = pred.eps
            forest.x0[rows[alive], here[alive]] = pred.x0
            calls.bar.update(int(alive.sum()) / n)
        moving = alive | (pdepth == d)
        src = torch.where(alive, here, parent)
        xs = forest.x[rows[moving], src[moving]]
        x[moving] = process.step(
            xs,
            d,
            forest.eps[rows[moving], src[moving]],
            generator,
            x0=forest.x0[rows[moving], src[moving]],
        )
    return forest, x, here


def _tree_report(
    forest: Forest, active: torch.Tensor, born: torch.Tensor, r: torch.Tensor, *, iteration: int
) -> dict:
    """The callback's dict for one iteration, over all n trees (NaN and −1 where inactive)."""
    n = len(active)
    rewards = torch.full((n,), math.nan, dtype=torch.float64)
    rewards[active] = r
    depth = torch.full((n,), -1, dtype=torch.long)
    depth[active] = born
    return {
        "iteration": iteration,
        "active": active,
        "depth": depth,
        "rewards": rewards,
        "root_value": forest.value[:, 0].clone(),
        "nodes": forest.count.clone(),
    }


# -- beam search with a shrinking beam (DSearch, Li et al. 2025) --------------------------------

BEAM_SCHEDULES = ("geometric", "linear", "constant")


def beam_widths(
    width: int, blocks: int, schedule: str = "geometric", final_width: int = 1
) -> list[int]:
    """The beam width W_b entering each of the ``blocks`` blocks, then 1 (the output).

    "geometric": W_b = round(W_0 (W_f/W_0)^{b/(n_b−1)}), from W_0 = ``width`` in the first block
    to W_f = ``final_width`` in the last; "linear" interpolates linearly; "constant" keeps W_0.
    Widths never grow."""
    check_range("width", width, 1, None)
    check_range("final_width", final_width, 1, width)
    check_choice("schedule", schedule, BEAM_SCHEDULES)
    out = []
    for b in range(blocks):
        s = b / (blocks - 1) if blocks > 1 else 1.0
        if schedule == "geometric":
            w = width * (final_width / width) ** s
        elif schedule == "linear":
            w = width + (final_width - width) * s
        else:
            w = width
        out.append(max(1, min(out[-1] if out else width, round(w))))
    return out + [1]


def beam_nfe(
    steps: int, block_size: int, num_candidates: int, widths: list[int], needs_x0: bool = True
) -> int:
    """Denoiser calls per output of :func:`beam_search` (widths as from :func:`beam_widths`).

    Tweedie values (every child predicted at its block end, the kept ones reuse it):
    W_0 + N Σ_b W_b·B_b − N·W_last. Values without x̂0 (exact): W_0 + N Σ_b W_b (B_b − 1) +
    Σ_{b<last} W_{b+1}. A block whose W_b·N children are all kept is not scored."""
    blocks = _blocks(0, steps, block_size)
    total = widths[0]
    for b, (i, j) in enumerate(blocks):
        w, w_next = widths[b], widths[b + 1]
        score = needs_x0 and w * num_candidates > w_next
        inner = (j - i) if score else (j - i - 1)
        if j == steps and score:
            inner -= 1
        total += w * num_candidates * inner
        if j < steps and not score:
            total += w_next
    return total


def beam_search(
    backend: Backend,
    reward: Callable,
    n: int,
    *,
    num_candidates: int = 1,
    block_size: int = 1,
    selection: str = "argmax",
    lam: float = 1.0,
    value: ValueSpec = "tweedie",
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    beam_width: int = 4,
    schedule: str = "geometric",
    final_width: int = 1,
) -> SampleResult:
    """Beam search with a shrinking beam, after DSearch (Li, Uehara, Su, Scalia, Biancalani,
    Regev, Levine, Ji 2025, "Dynamic Search for Inference-Time Alignment in Diffusion Models",
    arXiv 2503.02039).

    Each output keeps a beam of W_b states; every B = ``block_size`` steps each member spawns
    N = ``num_candidates`` children (sharing its ε̂ for their first step), the children are
    scored by ``value`` at the block end (r itself at the clean end) and the best W_{b+1} are
    kept (:func:`beam_widths`: W_0 = ``beam_width`` shrinking to ``final_width`` on
    ``schedule``); the output is the best child at the clean end. W_0 = 1 is CoDe/SVDD with
    argmax selection, step for step. NFE: :func:`beam_nfe`.
    ``callback`` receives a dict per block: block, i, j, width, kept_width, values (n, W_b·N),
    selected (n, W_{b+1}).
    """
    steps = _check_common(backend, n, num_candidates, lam)
    check_range("block_size", block_size, 1, None)
    check_range("beam_width", beam_width, 1, None)
    _check_argmax(selection, "beam search keeps the best W children")
    _check_branching(backend, num_candidates, "beam search", "a beam member")
    value_fn = make_value_fn(value, reward)
    big_n, ledger = num_candidates, Ledger()
    blocks = _blocks(0, steps, block_size)
    widths = beam_widths(beam_width, len(blocks), schedule, min(final_width, beam_width))
    bar = tqdm(total=steps, disable=not progress, desc="beam search", leave=False)
    calls = _Calls(backend, reward, ledger, generator, bar)
    with torch.no_grad():
        beam = _predict(calls, backend.prior_sample(n * widths[0], generator), 0)
        decoded = values = keep = None
        for b, (i, j) in enumerate(blocks):
            w, w_next = widths[b], widths[b + 1]
            select = w * big_n > w_next
            score = select and value_fn.needs_x0
            # (1) N children per member, sharing the member's ε̂ for their first step
            kids = _children(calls, beam, (i, j), copies=big_n, predict_end=score)
            # (2) score the children (r at the clean end), (3) keep the best W_{b+1} per beam
            values, decoded = _block_values(calls, value_fn, kids, j, select=select)
            top, keep = _best(values if select else None, n, w * big_n, w_next)
            if callback is not None:
                callback(_beam_report(values, top, block=b, ends=(i, j), widths=(w, w_next)))
            # (4) the kept states' ε̂ for the next block: reused if scored, else one call
            if j < steps:
                beam = _survivors(calls, kids, keep, j, reuse=score)
        bar.close()
        # the last block ends at T: its children were decoded and scored by r itself
        assert decoded is not None and values is not None and keep is not None
        out, rewards = decoded[keep], values[keep]
    settings = {
        "num_candidates": big_n,
        "block_size": block_size,
        "selection": "argmax",
        "beam_width": beam_width,
        "schedule": schedule,
        "final_width": widths[-2],
        "lam": lam,
        "steps": steps,
        "value": value if isinstance(value, str) else type(value).__name__,
    }
    return _result(out, rewards, ledger, settings=settings, pops=n)


def _predict(calls: _Calls, x: torch.Tensor, i: int):
    """(state, ε̂, x̂0) at index i: one counted denoiser call (a guided predict may move x)."""
    pred = calls.ledger.predict(calls.backend, x, i, calls.generator)
    return (x if pred.x is None else pred.x), pred.eps, pred.x0


def _children(
    calls: _Calls, parents: tuple, block: tuple[int, int], *, copies: int, predict_end: bool
):
    """``copies`` children of each parent (x, ε̂, x̂0) at index i, stepped to j = ``block``'s
    end; the first step shares the parent's ε̂, the later ones predict, and the block end is
    predicted only when ``predict_end`` (its x̂0 is scored, its ε̂ reused) and j < T."""
    process, steps = calls.backend.process, calls.backend.process.num_steps
    x, eps, x0 = (t.repeat_interleave(copies, 0) for t in parents)
    i, j = block
    for t in range(i, j):
        x = process.step(x, t, eps, calls.generator, x0=x0)
        if t + 1 < steps and (t + 1 < j or predict_end):
            x, eps, x0 = _predict(calls, x, t + 1)
        calls.bar.update(1)
    return x, eps, x0


def _block_values(calls: _Calls, value_fn: Value, children: tuple, j: int, *, select: bool):
    """The children's values at block end j: r itself at the clean end (returned with the
    decoded children, the output), the value where a selection reads them, else None."""
    backend, (x, _, x0) = calls.backend, children
    if j == backend.process.num_steps:
        decoded = backend.decode(x)
        return calls.ledger.reward(calls.reward, decoded).double(), decoded
    if not select:
        return None, None
    x0 = x0 if value_fn.needs_x0 else None
    return value_fn(calls.ledger, backend, x, x0, j, calls.generator), None


def _beam_report(
    values: torch.Tensor | None,
    top: torch.Tensor,
    *,
    block: int,
    ends: tuple[int, int],
    widths: tuple[int, int],
) -> dict:
    """The callback's dict for one block (values None where a block short of the clean end
    keeps all its children, so nothing was scored)."""
    (i, j), (width, kept) = ends, widths
    flat = None if values is None else values.view(len(top), -1)
    return {
        "block": block,
        "i": i,
        "j": j,
        "width": width,
        "kept_width": kept,
        "values": flat,
        "selected": top,
    }


def _survivors(calls: _Calls, children: tuple, keep: torch.Tensor, j: int, *, reuse: bool):
    """The kept children as the next block's parents (x, ε̂, x̂0): their block-end prediction
    reused where scoring made one, else one call each."""
    x, eps, x0 = children
    if reuse:
        return x[keep], eps[keep], x0[keep]
    return _predict(calls, x[keep], j)


def _best(
    values: torch.Tensor | None, n: int, width: int, kept: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``kept`` best of each beam's ``width`` children by value (the first ``kept`` when
    ``values`` is None: no selection), as (n, kept) indices and flat row ids."""
    if values is None:
        top = torch.arange(kept).expand(n, kept)
    else:
        top = values.view(n, width).topk(kept, dim=1).indices
    return top, (torch.arange(n)[:, None] * width + top).view(-1)
