"""The cheapest route to p*: method × value × allocation at equal budgets, tuned then reported.

For each toy bench, each value-using family runs every allocation of each budget m·T on a small
grid with each value estimator; the setting with the least mean distance on the *tuning* seeds
is then run on fresh *report* seeds, and that is the number reported (no winner's curse). The
cost of a row is what the Ledger counted (denoiser calls per output, the value's own included;
the posterior value spends reward calls instead, and exists only where p(x0 | x_t) is exact).
The cheapest route of a bench is the least budget whose tuned choice (the one setting of any
family and value with the least tuning-seed distance) is within 2 noise floors of p*, mean over
the report seeds.

    family      entry          allocations of m·T                     values
    blockwise   code-softmax   N = m, B ∈ {1, 5, 10, T} (SVDD … BoN)  tweedie, posterior,
                                                                      learned, lookahead (B ≥ 5)
    smc         smc            K = m, B ∈ {1, 5, 10}                  tweedie, posterior, learned
    fk          fk-max,        K = m, B ∈ {5, 10, 20}                 tweedie, posterior, learned
                fk-add, fk-rt  (FK steering's potentials)
    tempered    das            K = m, B = 1                           tweedie, posterior, learned
    tree        dts, dts-star  N = m (N·T calls a tree)               rollout: the tree's values
                                                                      are its rollouts' rewards
    beam        dsearch        N ∈ {2, 4} children, B ∈ {T/5, T/10},  tweedie, posterior, learned
                               W spending m·T
    gradient    tds            K = m, B = 1 (DPS proposals)           tweedie
                code-gradient  N = m, B ∈ {5, 10}                     tweedie

Block sizes above T are left out (a short test chain); B = T/10 is left out where it equals T/5.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..core.methods import beam_budget
from ..experiments import api
from ..experiments.results import ResultsTable
from ..experiments.shards import Shard, process_shard
from ..experiments.tradeoff import read_results
from .board import SIZES, Size, make_bench, run_row

__all__ = ["ROUTE_BENCHES", "TUNING_SEEDS", "REPORT_SEEDS", "settings_grid", "run_routes"]

ROUTE_BENCHES = ("between", "box", "ring")
TUNING_SEEDS = (0, 1, 2, 3, 4, 5, 6, 7)
REPORT_SEEDS = (100, 101, 102)
FAMILIES = {
    "code-softmax": "blockwise",
    "smc": "smc",
    "fk-max": "fk",
    "fk-add": "fk",
    "fk-rt": "fk",
    "das": "tempered",
    "dts": "tree",
    "dts-star": "tree",
    "dsearch": "beam",
}
GRADIENT = {"tds": "gradient", "code-gradient": "gradient"}
VALUES = ("tweedie", "posterior", "learned")
"""The values every value-using family is tried with (look-ahead only with CoDe: its M·k
calls per candidate would spend most of a small budget elsewhere)."""


def settings_grid(steps: int, budget: int, differentiable: bool) -> list[tuple[str, str, dict]]:
    """(entry, value, knobs) for every allocation of ``budget``·T (module docstring)."""
    out = []
    for b in sorted({1, 5, 10, steps}):
        out += [("code-softmax", v, {"N": budget, "B": b}) for v in VALUES]
        if b >= 5:
            out.append(("code-softmax", "lookahead", {"N": budget, "B": b, "M": 4, "k": 4}))
    for b in (1, 5, 10):
        out += [("smc", v, {"K": budget, "B": b}) for v in VALUES]
    for entry in ("fk-max", "fk-add", "fk-rt"):
        for b in (5, 10, 20):
            out += [(entry, v, {"K": budget, "B": b}) for v in VALUES]
    out += [("das", v, {"K": budget, "B": 1}) for v in VALUES]
    out += [(entry, "rollout", {"N": budget}) for entry in ("dts", "dts-star")]
    for children in (2, 4):
        for block in sorted({max(1, steps // 5), max(1, steps // 10)}):
            knobs = beam_budget(budget, steps, children=children, block=block)
            out += [("dsearch", v, knobs) for v in VALUES]
    if differentiable:
        out.append(("tds", "tweedie", {"K": budget, "B": 1}))
        out += [("code-gradient", "tweedie", {"N": budget, "B": b}) for b in (5, 10)]
    out = [(e, v, k) for e, v, k in out if k.get("B", 1) <= steps]
    return list({(e, v, json.dumps(k)): (e, v, k) for e, v, k in out}.values())


def _key(row: dict) -> tuple:
    return (row["bench"], row["method"], row["value"], json.dumps(row["settings"]), row["seed"])


def _value(bench: str, name: str, knobs: dict):
    if name == "rollout":  # a tree reads no value: its nodes' values are rollout rewards
        return "tweedie"
    return api.make_value(
        bench, name, value_samples=knobs.get("M", 4), lookahead_steps=knobs.get("k", 4)
    )


def _run(table, bench, jobs, n, *, phase, progress):
    claimed = table.claimed(jobs, lambda j: (bench.name, j[0], j[1], json.dumps(j[2]), j[4]))
    for entry, value, knobs, budget, seed in tqdm(
        claimed, total=len(jobs), desc=f"routes {bench.name} ({phase})", disable=not progress
    ):
        sampler = {k: v for k, v in knobs.items() if k not in ("M", "k")}
        row = run_row(
            bench, entry, budget, seed, n, value=_value(bench.name, value, knobs), knobs=sampler
        )
        table.append({**row, "settings": knobs, "value": value, "phase": phase})


def run_routes(
    out: str | Path = "figures/routes",
    *,
    benches=ROUTE_BENCHES,
    budgets=(4, 16, 32),
    size: Size | None = None,
    shard: Shard | None = None,
    progress: bool = True,
) -> list[dict]:
    """Tune every (entry, value, allocation) on :data:`TUNING_SEEDS`, then run each (entry,
    value, budget)'s best on :data:`REPORT_SEEDS`; rows resumable in ``out/results.jsonl``.
    ``size`` (T and n) defaults to the leaderboard's toy size."""
    size = size or SIZES["default"]["toy"]
    shard = shard or process_shard()
    table = ResultsTable(out, key=_key)
    config = {"steps": size.steps, "n": size.n, "budgets": list(budgets)}
    config["entries"] = [*FAMILIES, *GRADIENT]
    config["grid"] = _grid_digest(size.steps, budgets)  # a changed grid gets a new folder
    config.update(tuning=list(TUNING_SEEDS), report=list(REPORT_SEEDS))
    table.claim(config, name="routes.json", what="route study")
    for name in benches:
        if name not in ROUTE_BENCHES:
            raise ValueError(f"bench must be one of {list(ROUTE_BENCHES)}, got {name!r}")
        bench = make_bench(name, size)
        grid = [
            (e, v, k, m)
            for m in budgets
            for e, v, k in settings_grid(size.steps, m, bench.differentiable)
        ]
        done = table.done()
        every = [(e, v, k, m, s) for e, v, k, m in grid for s in TUNING_SEEDS]
        jobs = [j for j in every[shard.index :: shard.count] if _job_key(name, j) not in done]
        _run(table, bench, jobs, size.n, phase="tuning", progress=progress)
        shard.wait()
        best = tuned(table.rows(), name)
        done = table.done()
        every = [(e, v, k, m, s) for (e, v, m), k in best.items() for s in REPORT_SEEDS]
        jobs = [j for j in every[shard.index :: shard.count] if _job_key(name, j) not in done]
        _run(table, bench, jobs, size.n, phase="report", progress=progress)
        shard.wait()
    return read_results(out)


def _grid_digest(steps: int, budgets) -> str:
    """A short hash of every (entry, value, knobs) the grid runs at these budgets."""
    grid = [settings_grid(steps, m, d) for m in budgets for d in (False, True)]
    return hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:16]


def _job_key(bench: str, job) -> tuple:
    entry, value, knobs, _, seed = job
    return (bench, entry, value, json.dumps(knobs), seed)


def tuned(rows: list[dict], bench: str) -> dict:
    """(entry, value, budget) → the knobs with the least mean distance on the tuning seeds."""
    groups: dict = {}
    for r in rows:
        if r["bench"] == bench and r.get("phase") == "tuning":
            key = (r["method"], r["value"], r["budget"], json.dumps(r["settings"]))
            groups.setdefault(key, []).append(r["distance"])
    best: dict = {}
    for (entry, value, budget, knobs), d in groups.items():
        score = float(np.mean(d))
        if (entry, value, budget) not in best or score < best[entry, value, budget][0]:
            best[entry, value, budget] = (score, json.loads(knobs))
    return {k: v[1] for k, v in best.items()}


def reported(rows: list[dict]) -> list[dict]:
    """One line per (bench, entry, value, budget): the tuned knobs, their tuning-seed distance,
    and on the report seeds the distance (mean ± s.e.) and cost (NFE, reward calls per output)."""
    out = []
    for bench in dict.fromkeys(r["bench"] for r in rows):
        best = tuned(rows, bench)
        for (entry, value, budget), knobs in best.items():
            tune = [
                r
                for r in rows
                if r["bench"] == bench
                and r.get("phase") == "tuning"
                and (r["method"], r["value"], r["budget"]) == (entry, value, budget)
                and r["settings"] == knobs
            ]
            rep = [
                r
                for r in rows
                if r["bench"] == bench
                and r.get("phase") == "report"
                and (r["method"], r["value"], r["budget"]) == (entry, value, budget)
                and r["settings"] == knobs
            ]
            if not rep:
                continue
            d = np.array([r["distance"] for r in rep])
            out.append(
                {
                    "bench": bench,
                    "entry": entry,
                    "value": value,
                    "budget": budget,
                    "family": FAMILIES.get(entry) or GRADIENT.get(entry, entry),
                    "knobs": knobs,
                    "tuning": float(np.mean([r["distance"] for r in tune])),
                    "distance": float(d.mean()),
                    "se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan,
                    "nfe": float(np.mean([r["nfe"] for r in rep])),
                    "reward_calls": float(np.mean([r["reward_calls"] for r in rep])),
                }
            )
    return out


def cheapest(lines: list[dict], *, floors: float = 2.0, gradient: bool = False) -> dict:
    """bench → the route at the least budget whose choice is within ``floors`` noise floors
    (None: no budget's is). At each budget the choice is the one (entry, value, knobs) with the
    least distance on the tuning seeds, and only its report-seed distance decides: choosing
    among the report numbers themselves would bring the winner's curse back."""
    out = {}
    for bench in dict.fromkeys(line["bench"] for line in lines):
        mine = [
            line
            for line in lines
            if line["bench"] == bench and (line["family"] == "gradient") == gradient
        ]
        out[bench] = None
        for budget in sorted({line["budget"] for line in mine}):
            choice = min((x for x in mine if x["budget"] == budget), key=lambda x: x["tuning"])
            if choice["distance"] <= floors:
                out[bench] = choice
                break
    return out


def routes_table(lines: list[dict]) -> str:
    """Markdown: the cheapest route per bench (gradient-free, then with ∇r), then every
    reported (family, value) at each budget."""
    out = [
        "| bench | cheapest gradient-free route within 2 floors | NFE / output | distance,"
        " report seeds | cheapest with ∇r | NFE / output | distance, report seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    free, grad = cheapest(lines), cheapest(lines, gradient=True)

    def cell(line):
        if line is None:
            return "none within 2 floors", "", ""
        knobs = ", ".join(f"{k}={v}" for k, v in line["knobs"].items())
        return (
            f"{line['entry']} ({line['value']}; {knobs})",
            f"{line['nfe']:.0f}",
            f"{line['distance']:.2f} ± {line['se']:.2f} (tuning {line['tuning']:.2f})",
        )

    for bench in free:
        out.append(f"| {bench} | " + " | ".join([*cell(free[bench]), *cell(grad[bench])]) + " |")
    budgets = sorted({line["budget"] for line in lines})
    out += ["", "| bench | entry | value | " + " | ".join(f"{m}T" for m in budgets) + " |"]
    out.append("|---|---|---|" + "---|" * len(budgets))
    groups: dict = {}
    for line in lines:
        groups.setdefault((line["bench"], line["entry"], line["value"]), {})[line["budget"]] = line
    for (bench, entry, value), by in groups.items():
        cells = [f"{by[m]['distance']:.2g} ({_knobs(by[m])})" if m in by else "" for m in budgets]
        out.append(f"| {bench} | {entry} | {value} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _knobs(line: dict) -> str:
    """The allocation's knobs, less the N or K that is the budget itself (DSearch's N is its
    children, shown always)."""
    spent = "" if line["entry"] == "dsearch" else "NK"
    knobs = line["knobs"].items()
    return ",".join(f"{k}{v}" for k, v in knobs if not (k in spent and v == line["budget"]))


def plot_routes(lines: list[dict]):
    """Distance to p* (report seeds, ±2 s.e.) against NFE per output for each family's best
    (value, allocation) at each budget, one panel per bench."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    benches = list(dict.fromkeys(line["bench"] for line in lines))
    fig, axes = plt.subplots(1, len(benches), figsize=(5.2 * len(benches), 4.2), squeeze=False)
    families = list(dict.fromkeys(line["family"] for line in lines))
    for ax, bench in zip(axes[0], benches):
        for i, fam in enumerate(families):
            mine = [line for line in lines if line["bench"] == bench and line["family"] == fam]
            best = {}
            for line in mine:  # the family's best by the tuning seeds at each budget
                m = line["budget"]
                if m not in best or line["tuning"] < best[m]["tuning"]:
                    best[m] = line
            pts = [best[m] for m in sorted(best)]
            if not pts:
                continue
            ax.errorbar(
                [p["nfe"] for p in pts],
                [p["distance"] for p in pts],
                yerr=[2 * np.nan_to_num(p["se"]) for p in pts],
                marker="o",
                capsize=2,
                color=f"C{i}",
                label=fam,
            )
            for p in pts:
                ax.annotate(
                    f"{p['value'][:4]} {_knobs(p)}",
                    (p["nfe"], p["distance"]),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.axhline(2.0, color="0.5", ls="--", lw=1, label="2 noise floors")
        ax.axhline(1.0, color="0.5", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=2))  # any T: 128, 256, ... calls
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # log minor labels collide at 10²–10³
        ax.set_xlabel("denoiser calls per output (the value's included)")
        ax.set_ylabel("MMD² / noise floor, report seeds (±2 s.e.)")
        ax.set_title(f"{bench}: each family's tuned best", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    legend = {}  # one legend for all panels, below them: inside, it hides points
    for ax in axes[0]:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=len(legend), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
