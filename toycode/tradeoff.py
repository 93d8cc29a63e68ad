"""Sweeps over sampler settings and seeds into one tidy, resumable table (JSON lines).

    toycode tradeoff --problem between --methods bon code smc --grid "N=1,4,16;B=5" --seeds 5

Each row is one (problem, method, settings, seed): NFE, reward calls, gradient evaluations,
reward mean, MMD² to an exact sample of p* (and in units of the floor), KL estimates to p* and
to the base, mode-weight TV, wall time. Rows are appended to ``results.jsonl`` one at a time
(flushed and fsynced), so a killed run loses at most the row in flight, and a rerun skips every
row already there.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import api
from .exact.metrics import evaluate, median_bandwidth, noise_floor
from .exact.problems import load_problem

__all__ = ["parse_grid", "expand", "run_sweep", "read_results", "KNOBS"]

# which grid keys each method reads, and the api.sample argument each key sets
KNOBS = {"N": "num_candidates", "B": "block_size", "K": "particles", "lam": "lam",
         "scale": "scale", "T": "steps"}
METHOD_KNOBS = {
    "base": ("T",), "bon": ("N", "lam", "T"), "svdd": ("N", "lam", "T"),
    "code": ("N", "B", "lam", "T"), "smc": ("K", "B", "lam", "T"),
    "dps": ("scale", "T"), "dps-detached": ("scale", "T"), "universal": ("scale", "T"),
    "exact-guidance": ("T",), "code-gradient": ("N", "B", "lam", "scale", "T"),
}
_INTS = {"N", "B", "K", "T"}


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
        if method not in METHOD_KNOBS:
            raise ValueError(f"method must be one of {sorted(METHOD_KNOBS)}, got {method!r}")
        keys = [k for k in METHOD_KNOBS[method] if k in grid]
        for combo in itertools.product(*(grid[k] for k in keys)):
            jobs.append((method, dict(zip(keys, combo))))
    return jobs


def _key(row: dict) -> str:
    return json.dumps([row["problem"], row["method"], row["settings"], row["seed"]],
                      sort_keys=True)


def read_results(folder: str | Path) -> list[dict]:
    """Every complete row of ``folder/results.jsonl`` (a torn last line is ignored)."""
    path = Path(folder) / "results.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _drop_torn_tail(path: Path) -> None:
    """A run killed mid-write leaves a last line without its newline: cut it off."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[:data.rfind(b"\n") + 1])


def run_sweep(problem: str, methods, grid: dict[str, list], *, seeds: int = 5,
              out: str | Path = "results", n: int = 512, selection: str = "softmax",
              progress: bool = True) -> list[dict]:
    """Run every (method, settings, seed) not yet in ``out/results.jsonl``; return all rows."""
    prob = load_problem(problem)
    target = prob.target
    gen = torch.Generator().manual_seed(12345)
    reference = target.sample(n, gen)
    bandwidth = median_bandwidth(reference)
    floor = noise_floor(target, n, gen, reference)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(out / "results.jsonl")
    done = {_key(r) for r in read_results(out)}
    jobs = [(m, s, seed) for m, s in expand(methods, grid) for seed in range(seeds)]
    todo = [j for j in jobs if _key({"problem": prob.name, "method": j[0], "settings": j[1],
                                     "seed": j[2]}) not in done]
    with open(out / "results.jsonl", "a") as f:
        for method, settings, seed in tqdm(todo, desc=f"sweep {prob.name}", disable=not progress):
            kwargs = {KNOBS[k]: v for k, v in settings.items()}
            if method in ("bon", "svdd", "code", "smc", "code-gradient"):
                kwargs.setdefault("selection", "systematic" if method == "smc" else selection)
            if method == "smc":
                kwargs.setdefault("block_size", 1)
            start = time.perf_counter()
            res = api.sample(prob, method=method, n=n, seed=seed, **kwargs)
            wall = time.perf_counter() - start
            m = evaluate(res.samples, res.rewards, target, reference, bandwidth)
            row = {"problem": prob.name, "method": method, "settings": settings, "seed": seed,
                   "n": n, "nfe": res.nfe_per_sample, "reward_calls": res.reward_calls / n,
                   "grad_evals": res.grad_evals / n, "reward_mean": m["reward_mean"],
                   "reward_se": m["reward_se"], "mmd2": m["mmd2"],
                   "mmd2_floor": floor["mmd2"], "mmd2_over_floor": m["mmd2"] / floor["mmd2"],
                   "kl_to_target": m["kl_to_target"], "kl_to_base": m["kl_to_base"],
                   "mode_tv": m["mode_tv"], "distinct": m["distinct"], "wall_s": wall,
                   "exact_reward": target.reward_mean, "exact_kl": target.kl_to_base}
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
    return read_results(out)
