"""The curse of dimension, measured: one exact problem family in d = 2 … 784, every family of
sampler at fixed budgets, distance to p* against d.

The family is the MNIST mixture (:mod:`toycode.mnist.gmm`) projected exactly onto its top-d
principal axes, with the leaderboard's `mnist-gmm` reward (a quadratic pull to one digit's mean)
and referee (mode-weight TV / its noise floor, which reads the same in every dimension). Each
row is a leaderboard row of that bench (:func:`~toycode.leaderboard.board.run_row`) with its
dimension; rows go to ``out/results.jsonl`` (resumable, file-locked, shardable like the
leaderboard's).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..experiments.results import ResultsTable
from ..experiments.shards import Shard, process_shard
from ..experiments.tradeoff import read_results
from .board import Size, _record, make_bench, run_row

__all__ = [
    "DIMENSIONS",
    "FAMILIES",
    "DEFAULT_SIZE",
    "run_dimensions",
    "dimension_table",
    "plot_dimensions",
]

DIMENSIONS = (2, 8, 32, 128, 784)

FAMILIES = {
    "best-of-N": "bon-softmax",
    "CoDe": "code-softmax",
    "SVDD": "svdd-softmax",
    "SMC": "smc",
    "FK steering": "fk-diff",
    "DAS": "das",
    "DPS": "dps",
    "TDS": "tds",
    "exact guidance": "exact-guidance",
}
"""One consistent (softmax / weighted) member per family, and the gold standard."""

DEFAULT_SIZE = Size(20, 256, (4, 16), 2)
"""T = 20, n = 256 outputs per row, budgets 4T and 16T, two seeds."""


def run_dimensions(
    out: str | Path = "figures/dimensions",
    *,
    dims=DIMENSIONS,
    methods=None,
    size: Size = DEFAULT_SIZE,
    shard: Shard | None = None,
    progress: bool = True,
) -> list[dict]:
    """Every (d, method, budget, seed) not yet in ``out/results.jsonl``; all rows when done."""
    for d in dims:
        if not isinstance(d, int) or not 1 <= d <= 784:
            raise ValueError(f"dimensions must be integers in [1, 784], got {d!r}")
    methods = tuple(FAMILIES.values()) if methods is None else tuple(methods)
    shard = shard or process_shard()
    table = ResultsTable(out, key=lambda r: (r["dim"], r["method"], r["budget"], r["seed"]))
    config = {"steps": size.steps, "n": size.n, "budgets": list(size.budgets), "seeds": size.seeds}
    table.claim(config, name="dimensions.json", what="dimension study")
    done = table.done()
    for d in dims:
        every = [
            (m, b, s)
            for m in methods
            for b in (size.budgets if _record(m)[0].budget is not None else (1,))
            for s in range(size.seeds)
        ]
        jobs = [j for j in every[shard.index :: shard.count] if (d, *j) not in done]
        if not jobs:
            continue
        bench = make_bench("mnist-gmm", size, dim=d)
        claimed = table.claimed(jobs, lambda j, d=d: (d, *j))
        for method, budget, seed in tqdm(
            claimed, total=len(jobs), desc=f"d = {d}", disable=not progress
        ):
            table.append({"dim": d, **run_row(bench, method, budget, seed, size.n)})
    shard.wait()
    return read_results(out)


def _cells(rows: list[dict]) -> dict:
    """(method, budget, d) → (mean distance, its s.e. over seeds)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["method"], r["budget"], r["dim"]), []).append(r["distance"])
    return {
        k: (
            float(np.mean(v)),
            float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan,
        )
        for k, v in groups.items()
    }


def dimension_table(rows: list[dict]) -> str:
    """Markdown: per family and budget, distance to p* in each dimension (mean over seeds)."""
    cells = _cells(rows)
    dims = sorted({r["dim"] for r in rows})
    lines = ["| family | method | budget | " + " | ".join(f"d = {d}" for d in dims) + " |"]
    lines.append("|---|---|---|" + "---|" * len(dims))
    names = {m: f for f, m in FAMILIES.items()}
    for method, budget in dict.fromkeys((k[0], k[1]) for k in cells):
        row = [
            f"{cells[method, budget, d][0]:.2g}" if (method, budget, d) in cells else ""
            for d in dims
        ]
        lines.append(
            f"| {names.get(method, method)} | {method} | {budget}T | " + " | ".join(row) + " |"
        )
    return "\n".join(lines)


def plot_dimensions(rows: list[dict]):
    """Distance to p* against d (log–log), one line per family, one panel per budget."""
    import matplotlib.pyplot as plt

    cells = _cells(rows)
    budgets = sorted({k[1] for k in cells if k[1] > 1} or {1})
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.4 * len(budgets), 4.2), squeeze=False)
    names = {m: f for f, m in FAMILIES.items()}
    methods = list(dict.fromkeys(k[0] for k in cells))
    for ax, budget in zip(axes[0], budgets):
        for i, m in enumerate(methods):
            b = budget if (m, budget) in {(k[0], k[1]) for k in cells} else 1
            pts = sorted((d, *cells[m, b, d]) for (mm, bb, d) in cells if mm == m and bb == b)
            if not pts:
                continue
            d, y, se = (np.array(v, dtype=float) for v in zip(*pts))
            ax.errorbar(
                d,
                y,
                yerr=2 * np.nan_to_num(se),
                marker="o",
                ms=4,
                capsize=2,
                color=plt.get_cmap("tab10")(i % 10),
                label=names.get(m, m) + ("" if b == budget else " (one cost)"),
            )
        ax.axhline(1.0, color="0.5", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("dimension d")
        ax.set_ylabel("mode-weight TV / noise floor (±2 s.e.)")
        ax.set_title(f"MNIST mixture projected to d, budget {budget}·T NFE", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
