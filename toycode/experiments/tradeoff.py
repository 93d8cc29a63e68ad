"""Sweeps over sampler settings and seeds into one tidy, resumable table (JSON lines).

    toycode tradeoff --problem between --methods bon code smc --grid "N=1,4,16;B=5" --seeds 5

Each row is one (problem, method, settings, seed): NFE, reward calls, gradient evaluations,
reward mean, MMD² to an exact sample of p* (and in units of the floor), KL estimates to p* and
to the base, mode-weight TV, the distances published toy tables report (sliced W₂², exact W₂²
and W₁ = EMD between the samples, each with its floor; the covariance trace beside the
target's: :data:`toycode.exact.reference.PAPER_METRICS`), wall time. Rows written before those
existed lack their keys and still load (missing values in :func:`load`). Rows are appended to
``results.jsonl`` one at a time (flushed and fsynced), so a killed run loses at most the row in
flight, and a rerun skips every row already there.

Every line is strict JSON (RFC 8259 has no Infinity or NaN). A metric that is not a finite
number is written as ``null`` and named in the row's ``nonfinite`` field with what it was:
``{"kl_to_target": null, "kl_to_base": null, "nonfinite": {"kl_to_target": "inf",
"kl_to_base": "inf"}}`` is a sample with repeated points (SMC copies particles), whose k-NN KL
estimate is +∞ (see :mod:`toycode.exact.metrics`). :func:`read_results` and :func:`load` put
the values back (``float("inf")``), so plots and tables see the same numbers as before.
:func:`load` returns the table as a pandas DataFrame (the ``tables`` extra).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core.methods import KNOBS, get_method
from ..exact.problems import load_problem
from ..exact.reference import ExactReference
from ..training.train import PROCESSES
from ..utils.checks import check_choice
from . import api
from .results import ResultsTable

__all__ = [
    "parse_grid",
    "expand",
    "run_sweep",
    "read_results",
    "load",
    "dumps_row",
    "append_row",
    "drop_torn_tail",
    "KNOBS",
]

_INTS = {"N", "B", "K", "T", "M", "k", "W"}


def parse_grid(text: str) -> dict[str, list]:
    """ "N=1,2,4;B=5,10;lam=1" → {"N": [1, 2, 4], "B": [5, 10], "lam": [1.0]}."""
    grid = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if "=" not in part:
            raise ValueError(f"grid entry {part!r} must look like KEY=v1,v2,...")
        key, values = (s.strip() for s in part.split("=", 1))
        if key not in KNOBS:
            raise ValueError(f"grid key must be one of {sorted(KNOBS)}, got {key!r}")
        try:
            grid[key] = [int(v) if key in _INTS else float(v) for v in values.split(",")]
        except ValueError:
            raise ValueError(f"grid values for {key} must be numbers, got {values!r}") from None
    return grid


def expand(methods, grid: dict[str, list]) -> list[tuple[str, dict]]:
    """(method, settings) for every method and every combination of the keys it reads."""
    jobs = []
    for method in methods:
        keys = [k for k in get_method(method).knobs if k in grid]
        for combo in itertools.product(*(grid[k] for k in keys)):
            jobs.append((method, dict(zip(keys, combo))))
    return jobs


def _key(row: dict) -> str:
    return json.dumps([row["problem"], row["method"], row["settings"], row["seed"]], sort_keys=True)


_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def dumps_row(row: dict) -> str:
    """One strict-JSON line: non-finite numbers become null, recorded in ``nonfinite``."""
    nonfinite = {
        k: repr(v) for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)
    }
    if nonfinite:
        row = {**{k: None if k in nonfinite else v for k, v in row.items()}, "nonfinite": nonfinite}
    return json.dumps(row, allow_nan=False)


def _restore(row: dict) -> dict:
    for key, what in row.pop("nonfinite", {}).items():
        row[key] = _NONFINITE[what]
    return row


ROW_KEYS = ("method", "seed")
"""What every row of toycode's tables has (tradeoff, leaderboard and sd-sweep alike)."""


def read_results(folder: str | Path) -> list[dict]:
    """Every row of ``folder/results.jsonl``, with the non-finite values that the file stores as
    null restored. A line that is not one of our rows (not JSON, not an object, or without
    a method and a seed) refuses the table with its line number: a folder is only ever
    ours. The one damage tolerated is a torn last line (no newline: a writer killed mid-row)."""
    path = Path(folder) / "results.jsonl"
    if not path.is_file():
        return []
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    torn = lines.pop() if lines else ""  # "" after a final newline, else the torn tail
    rows = []
    for number, line in enumerate(lines + ([torn] if torn else []), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if torn and number == len(lines) + 1:
                continue
            raise ValueError(
                f"{path}, line {number}: not a toycode results row (not JSON); use another folder"
            ) from None
        if not isinstance(row, dict) or not all(k in row for k in ROW_KEYS):
            what = "not an object" if not isinstance(row, dict) else "no method or seed"
            raise ValueError(
                f"{path}, line {number}: not a toycode results row ({what}); use another folder"
            )
        rows.append(_restore(_renamed(row)))
    return rows


def _renamed(row: dict) -> dict:
    """A row written before the runners shared one schema, with today's names: the distance
    (MMD² over its noise floor) was ``mmd2_over_floor`` in tradeoff tables."""
    if "mmd2_over_floor" in row and "distance" not in row:
        row = {("distance" if k == "mmd2_over_floor" else k): v for k, v in row.items()}
    return row


def load(folder: str | Path):
    """The results table as a pandas DataFrame, one row per line, ``settings`` flattened into
    one column per knob (N, B, K, lam, scale, T; missing where a method does not read it)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "toycode.experiments.tradeoff.load needs pandas: pip install -e '.[tables]'"
        ) from None
    rows = read_results(folder)
    if not rows:
        raise ValueError(f"no results in {Path(folder) / 'results.jsonl'}")
    table = pd.DataFrame(rows)
    knobs = pd.DataFrame([r["settings"] for r in rows], index=table.index)
    order = [k for k in KNOBS if k in knobs.columns]
    for k in _INTS & set(order):  # integer knobs stay integers where a method lacks them
        knobs[k] = knobs[k].astype("Int64")
    at = table.columns.get_loc("settings")
    return pd.concat([table.iloc[:, :at], knobs[order], table.iloc[:, at + 1 :]], axis=1)


def append_row(f, row: dict) -> None:
    """Write one strict-JSON line to an open results file and make it durable (flush and
    fsync): a killed run loses at most the row being written. Text or binary mode."""
    line = dumps_row(row) + "\n"
    f.write(line.encode() if "b" in f.mode else line)
    f.flush()
    os.fsync(f.fileno())


def drop_torn_tail(path: Path) -> None:
    """A run killed mid-write leaves a last line without its newline: cut it off."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])


def _sweep_row(
    prob,
    exact: ExactReference,
    *,
    method: str,
    settings: dict,
    seed: int,
    n: int,
    selection: str,
    process: str,
    value: str,
) -> dict:
    """One (method, settings, seed) sampled and scored against the exact target."""
    target = prob.target
    kwargs = {KNOBS[k]: v for k, v in settings.items()}
    record = get_method(method)
    if record.selection is not None and not record.uses_particles:
        kwargs.setdefault("selection", selection)  # SMC keeps its own (systematic)
    start = time.perf_counter()
    res = api.sample(prob, method=method, n=n, seed=seed, process=process, value=value, **kwargs)
    wall = time.perf_counter() - start
    m = exact.evaluate(res.samples, res.rewards, target)
    row = {
        "problem": prob.name,
        "method": method,
        "settings": settings,
        "seed": seed,
        "n": n,
        "nfe": res.nfe_per_sample,
        "reward_calls": res.reward_calls / n,
        "reward_grads": res.reward_grads / n,
        "reward_mean": m["reward_mean"],
        "reward_se": m["reward_se"],
        "mmd2": m["mmd2"],
        "mmd2_floor": exact.floor,
        "distance": m["mmd2"] / exact.floor,
        "kl_to_target": m["kl_to_target"],
        "kl_to_base": m["kl_to_base"],
        "mode_tv": m["mode_tv"],
        **exact.paper_metrics(m),  # sw2, w2, emd, cov_trace…, each distance with its floor
        "distinct": m["distinct"],
        "wall_s": wall,
        "exact_reward": target.reward_mean,
        "exact_kl": target.kl_to_base,
    }
    if process != "vp":  # VP rows keep the format they always had
        row["process"] = process
    if value != "tweedie":
        row["value"] = value
    return row


def run_sweep(
    problem: str,
    methods,
    grid: dict[str, list],
    *,
    seeds: int = 5,
    out: str | Path = "results",
    n: int = 512,
    selection: str = "softmax",
    progress: bool = True,
    process: str = "vp",
    value: str = "tweedie",
) -> list[dict]:
    """Run every (method, settings, seed) not yet in ``out/results.jsonl``; return all rows.

    ``process`` ("vp" | "flow") is the analytic backend's; a flow row records it as
    ``"process": "flow"`` (rows without the field are VP), and only rows of the same process
    count as done. ``value`` (one of ``api.VALUES``) is likewise recorded as ``"value"`` where
    it is not "tweedie"; the knobs M and k set its samples and look-ahead steps."""
    check_choice("process", process, PROCESSES)
    check_choice("value", value, api.VALUES)
    prob = load_problem(problem)
    # a row is done for this run when its problem, method, settings, seed, process and value
    # match; the table is read (and refused if not ours) before anything is written
    table = ResultsTable(
        out, key=lambda r: (_key(r), r.get("process", "vp"), r.get("value", "tweedie"))
    )
    done = table.done()
    jobs = [(m, s, seed) for m, s in expand(methods, grid) for seed in range(seeds)]

    def job_key(job):
        return (
            _key({"problem": prob.name, "method": job[0], "settings": job[1], "seed": job[2]}),
            process,
            value,
        )

    todo = [j for j in jobs if job_key(j) not in done]
    target = prob.target
    if todo:
        exact = ExactReference.of_target(target, n, torch.Generator().manual_seed(12345))
        for method, settings, seed in tqdm(
            table.claimed(todo, job_key),
            total=len(todo),
            desc=f"sweep {prob.name}",
            disable=not progress,
        ):
            row = _sweep_row(
                prob,
                exact,
                method=method,
                settings=settings,
                seed=seed,
                n=n,
                selection=selection,
                process=process,
                value=value,
            )
            table.append(row)
    return read_results(out)
