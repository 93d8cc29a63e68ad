"""`toycode leaderboard`: every method of :data:`toycode.core.methods.METHODS`, at equal compute,
against exact targets.

Each *bench* is a model, a reward, λ and an exact referee:

    bench           model                        distance to p* (≈ 1 for an exact sampler)
    between, box,   analytic 2-D mixture         MMD² to an exact sample / its noise floor
    ring
    mnist-class     the committed MNIST UNet     |class-c fraction − P*(c)| / its s.e. (P*(c) from
                                                 the base rate π_c, itself measured, see
                                                 :mod:`toycode.mnist.eval`)
    mnist-gmm       the MNIST mixture in d = 784 mode-weight TV / its noise floor
                    (analytic denoiser, low rank
                    + diagonal: Woodbury)

A toy bench's row also carries the distances published toy tables report, each beside its
floor (sliced W₂², exact W₂², W₁ = EMD, the covariance trace against the target's:
:meth:`toycode.exact.reference.ExactReference.paper_metrics`); rows written before them lack
those keys, and :func:`summary` and :func:`table` read neither.

Each method runs at budgets m ∈ ``budgets``: its record's ``budget(m)`` says which knobs spend
about m·T denoiser calls per output sample (a method without one runs at m = 1 only).
Blockwise methods whose block size is the caller's act every B = T/5 steps, five times per
trajectory: CoDe and DSearch select there, FK steering weighs there and resamples where the ESS
is below K/2; SMC, DAS and TDS keep B = 1 (weigh every step, resample below K/2). A
particle method (SMC family) runs n populations of K particles and keeps one particle per
population, so its cost per output is K·T like best-of-N's N·T. Methods that need a reward
gradient are skipped (a row that says so) where the reward has none; those that need an exact
target where there is none. Every value is Tweedie's r(x̂0) — what the methods' papers use.

Rows go to ``results.jsonl`` one at a time (the :mod:`toycode.experiments.tradeoff` format: strict
JSON,
resumable, a torn last line dropped); :func:`table` summarises them, :func:`plot_leaderboard`
draws distance against NFE per output.
"""

from __future__ import annotations

import math
import time
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backends import analytic_backend, load_trained_backend
from ..core.backend import Backend
from ..core.diffusion import Process
from ..core.methods import KNOBS, METHODS, GuidanceInputs, Method
from ..exact.problems import load_problem
from ..exact.reference import ExactReference
from ..experiments.results import ResultsTable
from ..experiments.shards import Shard, process_shard
from ..experiments.tradeoff import read_results

__all__ = [
    "Bench",
    "Size",
    "SIZES",
    "BENCHES",
    "VARIANTS",
    "make_bench",
    "entries",
    "one_per_population",
    "run_row",
    "run_leaderboard",
    "summary",
    "table",
    "plot_leaderboard",
]

_SAMPLER_KEYS = ("num_candidates", "block_size", "particles", "ess_threshold", "selection")


@dataclass
class Bench:
    """A model, a reward and its exact referee: ``score(samples, rewards)`` → metrics with a
    ``distance`` that is about 1 for an exact sampler of p*."""

    name: str
    backend: Backend
    reward: Callable
    lam: float
    score: Callable[[torch.Tensor, torch.Tensor], dict]
    distance: str
    target: object = None  # exact target (exact guidance); None where there is none
    info: dict = field(default_factory=dict)

    @property
    def differentiable(self) -> bool:
        return bool(getattr(self.reward, "differentiable", False))


@dataclass(frozen=True)
class Size:
    """How big each bench's runs are: steps T, outputs n per row, budgets m, seeds."""

    steps: int
    n: int
    budgets: tuple[int, ...]
    seeds: int


SIZES = {
    "default": {
        "toy": Size(50, 512, (1, 4, 16, 32), 3),
        "mnist-class": Size(10, 256, (1, 4, 16), 1),
        "mnist-gmm": Size(10, 512, (1, 4, 16), 1),
    },
    "fast": {
        "toy": Size(6, 64, (1, 4), 1),
        "mnist-class": Size(4, 16, (1, 2), 1),
        "mnist-gmm": Size(4, 16, (1, 2), 1),
    },
}
"""Run sizes: ``default`` (``make leaderboard``; the 784-D mixture at n = 512 by the Woodbury
denoiser, the MNIST UNet's class tilt at n = 256 in one seed: its distance is already in units
of its own binomial standard error) and ``fast`` (the tests; the MNIST mixture is projected to
d = 16 there)."""

BENCHES = ("between", "box", "ring", "mnist-class", "mnist-gmm")


def _toy_bench(name: str, size: Size) -> Bench:
    problem = load_problem(name)
    target = problem.target
    exact = ExactReference.of_target(target, size.n, torch.Generator().manual_seed(12345))
    floor = exact.floor

    def score(x, rewards):
        m = exact.evaluate(x, rewards, target)
        return {
            "distance": m["mmd2"] / floor,
            "mmd2": m["mmd2"],
            "mmd2_floor": floor,
            "reward_mean": m["reward_mean"],
            "reward_se": m["reward_se"],
            "kl_to_base": m["kl_to_base"],
            "mode_tv": m["mode_tv"],
            **exact.paper_metrics(m),  # sw2, w2, emd, cov_trace…, with their floors
            "exact_reward": target.reward_mean,
        }

    backend = analytic_backend(problem.prior, Process.make(size.steps))
    return Bench(name, backend, problem.reward, problem.lam, score, "MMD² / floor", target)


def _mnist_class_bench(size: Size, digit: int = 3, lam: float = 2.0) -> Bench:
    from ..core.sampler import sample_blockwise
    from ..mnist.eval import class_rates, tilted_fraction
    from ..mnist.models import UNET_PATH, ClassIndicator, load_classifier

    classifier = load_classifier()
    backend = load_trained_backend(UNET_PATH, steps=size.steps)
    reward = ClassIndicator(digit, classifier)
    n_base = 8 * size.n  # π's s.e. enters P*'s, so it is measured on more images than a row's
    base = sample_blockwise(backend, reward, n_base, generator=torch.Generator().manual_seed(999))
    rates, se = class_rates(classifier, base.samples)
    pi, pi_se = float(rates[digit]), float(se[digit])
    exact = tilted_fraction(pi, lam)
    exact_se = pi_se * math.exp(lam) / (pi * math.exp(lam) + 1 - pi) ** 2

    def score(x, rewards):
        frac = float(rewards.mean())
        se = math.sqrt(max(frac * (1 - frac), 1.0 / len(rewards)) / len(rewards))
        return {
            "distance": abs(frac - exact) / math.hypot(se, exact_se),
            "reward_mean": frac,
            "reward_se": se,
            "exact_reward": exact,
        }

    return Bench(
        "mnist-class",
        backend,
        reward,
        lam,
        score,
        "|fraction − P*| / s.e.",
        info={"digit": digit, "pi": pi, "pi_se": pi_se, "n_base": n_base},
    )


def _mnist_gmm_bench(size: Size, dim: int = 784, digit: int = 3) -> Bench:
    from ..mnist.gmm import digit_problem, fit_mnist_mixture, mixture_in_dim

    mixture, axes, _ = fit_mnist_mixture()  # low rank + diagonal; dense once projected below 784
    problem = digit_problem(mixture_in_dim(mixture, axes, dim), digit)
    target = problem.target
    gen = torch.Generator().manual_seed(12345)
    floors = [
        0.5
        * float(
            (
                problem.prior.responsibilities(target.sample(size.n, gen)).mean(0)
                - target.mode_weights
            )
            .abs()
            .sum()
        )
        for _ in range(5)
    ]
    floor = sum(floors) / len(floors)

    def score(x, rewards):
        masses = problem.prior.responsibilities(x.double().reshape(len(x), -1)).mean(0)
        tv = 0.5 * float((masses - target.mode_weights).abs().sum())
        r_mean = float(rewards.mean())
        return {
            "distance": tv / floor,
            "mode_tv": tv,
            "mode_tv_floor": floor,
            "reward_mean": r_mean,
            "reward_se": float(rewards.std()) / math.sqrt(len(x)),
            "exact_reward": target.reward_mean,
        }

    backend = analytic_backend(problem.prior, Process.make(size.steps))
    return Bench(
        "mnist-gmm",
        backend,
        problem.reward,
        problem.lam,
        score,
        "mode TV / floor",
        target,
        info={"dim": dim, "digit": digit},
    )


def make_bench(name: str, size: Size, *, dim: int = 784) -> Bench:
    """The bench of a name in :data:`BENCHES` at a run size."""
    if name not in BENCHES:
        raise ValueError(f"bench must be one of {list(BENCHES)}, got {name!r}")
    if name == "mnist-class":
        return _mnist_class_bench(size)
    if name == "mnist-gmm":
        return _mnist_gmm_bench(size, dim)
    return _toy_bench(name, size)


VARIANTS = {
    "bon-softmax": ("bon", {"selection": "softmax"}),
    "svdd-softmax": ("svdd", {"selection": "softmax"}),
    "code-softmax": ("code", {"selection": "softmax"}),
    "smc-multinomial": ("smc", {"selection": "softmax"}),
    "smc-ssp": ("smc", {"selection": "ssp"}),
}
"""Entries that are a record with another selection rule: softmax at λ makes each block
self-normalised importance sampling of the optimal policy (see :mod:`toycode.core.sampler`), the
consistent counterpart of the papers' argmax; SMC with multinomial or SSP resampling instead of
systematic measures what the resampling rule costs (docs/methods/resampling.md)."""


def entries(methods=None) -> list[str]:
    """Entry names to rank: every record (in table order), each followed by its variants
    (:data:`VARIANTS`), unless named."""
    if methods is None:
        names = []
        for m in METHODS:
            names += [m] + [v for v, (parent, _) in VARIANTS.items() if parent == m]
        return names
    names = list(methods)
    unknown = [m for m in names if m not in METHODS and m not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {list(METHODS) + list(VARIANTS)}")
    return names


def _record(entry: str) -> tuple[Method, dict]:
    """The record an entry runs and the sampler settings it overrides."""
    parent, overrides = VARIANTS.get(entry, (entry, {}))
    return METHODS[parent], overrides


def _skip_reason(record: Method, bench: Bench) -> str | None:
    if record.needs_gradient and not bench.differentiable:
        return "needs a differentiable reward"
    if record.needs_target and bench.target is None:
        return "needs an exact target"
    return None


def _split_knobs(record: Method, steps: int, knobs: dict) -> tuple[dict, dict]:
    """(sampler settings, method options) for a record's knob values."""
    kw = {KNOBS[k]: v for k, v in knobs.items()}
    base = {k: kw.pop(k) for k in _SAMPLER_KEYS if k in kw}
    lam = kw.pop("lam", None)
    options = {k: kw.pop(k) for k in list(kw) if k in record.options}
    if kw:
        raise ValueError(f"method {record.name!r}: budget knobs {sorted(kw)} set nothing")
    settings = record.sampler_settings(steps, **base)
    if lam is not None:
        settings["lam"] = lam
    return settings, options


def one_per_population(samples, rewards, k: int, generator: torch.Generator):
    """One uniformly chosen particle of each population of k (consecutive rows): an equal-weight
    draw from it, at K·T per output. Not the first: systematic resampling lays a population's
    copies out along its weights' CDF, so the first copy leans towards the low-weight end."""
    n = len(rewards) // k
    pick = torch.arange(n) * k + torch.randint(k, (n,), generator=generator)
    return samples[pick], rewards[pick]


def run_row(
    bench: Bench,
    method: str,
    budget: int,
    seed: int,
    n: int,
    *,
    value="tweedie",
    knobs: dict | None = None,
) -> dict:
    """One (bench, method, budget, seed) row: the method's n outputs scored by the referee.

    ``knobs`` (as in :data:`~toycode.core.methods.KNOBS`) replace the record's default
    allocation of the budget; ``value`` is the block-end value ("tweedie" or a value object,
    whose own denoiser and reward calls the Ledger counts into the row's cost)."""
    record, overrides = _record(method)
    steps = bench.backend.process.num_steps
    if knobs is None:
        knobs = record.budget(budget, steps) if record.budget is not None else {}
        if record.block == "given" and record.default_block_size > 1 and "B" not in knobs:
            knobs = {**knobs, "B": max(1, steps // 5)}  # five selections per trajectory
    settings, options = _split_knobs(record, steps, knobs)
    settings.update(overrides)
    k = settings.get("particles", 1)
    backend = record.wrap(bench.backend, GuidanceInputs(bench.reward, bench.lam, bench.target))
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    res = record.run(
        backend,
        bench.reward,
        n * k,
        generator=gen,
        lam=settings.pop("lam", bench.lam),
        value=value,
        options=options,
        **settings,
    )
    wall = time.perf_counter() - start
    samples, rewards = one_per_population(res.samples, res.rewards, k, gen)
    metrics = bench.score(samples, rewards)
    return {
        "bench": bench.name,
        "method": method,
        "budget": budget,
        "settings": knobs,
        "seed": seed,
        "n": n,
        "nfe": res.nfe / n,
        "reward_calls": res.reward_calls / n,
        "reward_grads": res.reward_grads / n,
        "backprops": res.backprops / n,
        "needs_gradient": record.needs_gradient,
        "distance_kind": bench.distance,
        **metrics,
        "wall_s": wall,
    }


def _key(row: dict) -> tuple:
    return row["bench"], row["method"], row["budget"], row["seed"]


def run_leaderboard(
    out: str | Path = "leaderboard",
    *,
    benches=BENCHES,
    methods=None,
    size: str = "default",
    progress: bool = True,
    dim: int | None = None,
    shard: Shard | None = None,
) -> list[dict]:
    """Run every (bench, method, budget, seed) not yet in ``out/results.jsonl``; return all
    rows once every process is done. ``size`` is a key of :data:`SIZES`; ``dim`` the MNIST
    mixture's dimension (784, 16 at the fast size); ``shard`` this process's share of the
    rows (default :func:`~toycode.experiments.shards.process_shard`'s: under ``accelerate
    launch`` every ``count``-th job of each bench; alone, all). Every row's draws come from
    its own seed, so the table does not depend on how many processes wrote it."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    for b in benches:
        if b not in BENCHES:
            raise ValueError(f"bench must be one of {list(BENCHES)}, got {b!r}")
    names = entries(methods)
    dim = dim or (16 if size == "fast" else 784)
    shard = shard or process_shard()
    out = Path(out)
    table = ResultsTable(out, key=_key)
    table.claim(
        {"size": size, "dim": dim, "sizes": {k: list(astuple(v)) for k, v in SIZES[size].items()}},
        name="leaderboard.json",
        what="leaderboard",
    )
    done = table.done()
    for bench_name in benches:
        sz = SIZES[size]["toy" if bench_name in ("between", "box", "ring") else bench_name]
        every = [
            (m, b, s)
            for m in names
            for b in (sz.budgets if _record(m)[0].budget is not None else (1,))
            for s in range(sz.seeds)
        ]  # sharded before the done rows are dropped, so every process cuts the same list
        jobs = [j for j in every[shard.index :: shard.count] if (bench_name, *j) not in done]
        if not jobs:
            continue
        bench = make_bench(bench_name, sz, dim=dim)
        claimed = table.claimed(jobs, lambda j, b=bench_name: (b, *j))
        desc = f"leaderboard {bench_name}" + (
            f" {shard.index + 1}/{shard.count}" if shard.count > 1 else ""
        )
        for method, budget, seed in tqdm(
            claimed, total=len(jobs), desc=desc, disable=not progress, position=shard.index
        ):
            record = _record(method)[0]
            reason = _skip_reason(record, bench)
            if reason is None:
                row = run_row(bench, method, budget, seed, sz.n)
            else:
                row = {
                    "bench": bench_name,
                    "method": method,
                    "budget": budget,
                    "seed": seed,
                    "skipped": reason,
                    "needs_gradient": record.needs_gradient,
                }
            table.append(row)
    shard.wait()
    return read_results(out)


def summary(rows: list[dict]) -> dict:
    """(bench, method) → {budget: {"nfe", "distance", "se", "reward"}} with means over seeds and
    the distance's s.e. over seeds (nan for one seed), or the reason the method was skipped."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["bench"], r["method"]), {}).setdefault(r["budget"], []).append(r)
    out = {}
    for key, by_budget in groups.items():
        cells = {}
        for budget, rs in sorted(by_budget.items()):
            if "skipped" in rs[0]:
                cells[budget] = rs[0]["skipped"]
                continue
            d = np.array([r["distance"] for r in rs], dtype=float)
            cells[budget] = {
                "nfe": float(np.mean([r["nfe"] for r in rs])),
                "distance": float(d.mean()),
                "se": d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan"),
                "reward": float(np.mean([r["reward_mean"] for r in rs])),
            }
        out[key] = cells
    return out


def table(rows: list[dict]) -> str:
    """A markdown table: per method, each bench's distance to p* at the method's largest budget
    (with its NFE per output); "—" where the method was skipped."""
    cells_of = summary(rows)
    benches = [b for b in BENCHES if any(k[0] == b for k in cells_of)]
    methods = [m for m in entries() if any(k[1] == m for k in cells_of)]
    methods += sorted({k[1] for k in cells_of} - set(methods))
    lines = ["| method | " + " | ".join(benches) + " |", "|---|" + "---|" * len(benches)]
    for m in methods:
        cells = []
        for b in benches:
            got = cells_of.get((b, m))
            if not got:
                cells.append("")
                continue
            cell = got[max(got)]
            cells.append(
                "—" if isinstance(cell, str) else f"{cell['distance']:.2g} @ {cell['nfe']:.0f}"
            )
        grad = " (∇r)" if any(r.get("needs_gradient") for r in rows if r["method"] == m) else ""
        lines.append(f"| {m}{grad} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _family(entry: str) -> str:
    record = _record(entry)[0]
    if record.needs_gradient:
        return "gradient"
    if record.uses_particles:
        return "smc"
    return "search" if record.loop is not None else "blockwise"


# (marker, line style) per family: blockwise selection, particles, searches, gradients
_STYLE = {
    "blockwise": ("o", "-"),
    "smc": ("s", "-"),
    "search": ("^", "-."),
    "gradient": ("D", "--"),
}


def plot_leaderboard(rows: list[dict]):
    """Distance to p* (≈ 1: an exact sampler) against NFE per output, one panel per bench,
    ±2 s.e. over seeds; markers tell the families apart (circles: blockwise selection,
    squares: particles, triangles: searches, dashed diamonds: reward gradients)."""
    import matplotlib.pyplot as plt

    cells_of = summary(rows)
    benches = [b for b in BENCHES if any(k[0] == b for k in cells_of)]
    methods = [m for m in entries() if any(k[1] == m for k in cells_of)]
    methods += sorted({k[1] for k in cells_of} - set(methods))
    kinds = {r["bench"]: r["distance_kind"] for r in rows if "distance_kind" in r}
    cols = min(3, len(benches))
    nrows = -(-(len(benches) + 1) // cols)  # one more panel holds the legend
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.3 * nrows), squeeze=False)
    axes = axes.reshape(-1)
    cmap = plt.get_cmap("tab20")
    handles = {}
    for ax, b in zip(axes, benches):
        for i, m in enumerate(methods):
            pts = [c for c in cells_of.get((b, m), {}).values() if not isinstance(c, str)]
            if not pts:
                continue
            xs, ys, se = (
                np.array([c[k] for c in pts], dtype=float) for k in ("nfe", "distance", "se")
            )
            marker, ls = _STYLE[_family(m)] if m in entries() else ("o", "-")
            line = ax.errorbar(
                xs,
                ys,
                yerr=2 * np.nan_to_num(se),
                marker=marker,
                ms=4,
                capsize=1.5,
                lw=1.2,
                elinewidth=0.7,
                alpha=0.85,
                ls=ls,
                color=cmap(i % 20),
                label=m,
            )
            handles.setdefault(m, line)
        ax.axhline(1.0, color="k", lw=1, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(b, fontsize=10)
        ax.set_xlabel("NFE per output sample")
        ax.set_ylabel(kinds.get(b, "distance to p*"))
        ax.grid(alpha=0.3)
    for ax in axes[len(benches) :]:
        ax.axis("off")
    axes[len(benches)].legend(
        list(handles.values()), list(handles), loc="center", ncol=2, fontsize=8, frameon=False
    )
    fig.suptitle(
        "distance to the exact target p* at equal compute (dotted: 1, an exact "
        "sampler; ±2 s.e. over seeds)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig
