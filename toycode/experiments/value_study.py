"""How wrong is each value estimator? Errors against the exact soft value V_t, by noise level.

``toycode values --problem P`` draws states x_t from the base marginal p_t and from the tilted
marginal p*_t (exact target samples noised by the forward process) at a range of grid indices,
and compares each estimator of :mod:`toycode.core.values` with the exact V_t(x) of the problem's
target: bias = mean(V̂ − V) and RMSE, per level, with the NFE each estimate cost per state. The
analytic (exact) denoiser is used, so the errors are the estimators' own, not a network's.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..backends import analytic_backend
from ..core.diffusion import Process
from ..core.sampler import Ledger
from ..core.values import TweedieValue
from ..exact.problems import Problem, load_problem
from . import api

__all__ = ["value_errors", "format_value_errors", "DEFAULT_ESTIMATORS"]

DEFAULT_ESTIMATORS = (
    ("tweedie", {}),
    ("lookahead", {"value_samples": 8, "lookahead_steps": 4}),
    ("lookahead", {"value_samples": 32, "lookahead_steps": 4}),
    ("posterior", {"value_samples": 8}),
    ("posterior", {"value_samples": 32}),
    ("learned", {}),
)
"""(value name, options) pairs that ``toycode values`` compares by default."""


def _label(name: str, options: dict) -> str:
    if name == "lookahead":
        return f"lookahead M={options['value_samples']} k={options['lookahead_steps']}"
    if name == "posterior":
        return f"posterior M={options['value_samples']}"
    return name


def value_errors(
    problem: Problem | str,
    estimators=DEFAULT_ESTIMATORS,
    *,
    steps: int = 100,
    indices=None,
    n: int = 1000,
    seed: int = 0,
    process: str = "vp",
    progress: bool = True,
) -> list[dict]:
    """One row per (estimator, grid index, distribution): bias, RMSE and NFE per state.

    An estimator whose checkpoint is missing ("learned" for a problem without one) is skipped
    with a row holding ``"skipped"``, the reason.
    """
    problem = problem if isinstance(problem, Problem) else load_problem(problem)
    backend = analytic_backend(
        problem.prior, Process.make(steps, "flow" if process == "flow" else "linear")
    )
    indices = list(range(0, steps, max(1, steps // 10))) if indices is None else list(indices)
    gen = torch.Generator().manual_seed(seed)
    target, proc = problem.target, backend.process
    states = {}
    for i in indices:
        lv = proc.level(i)
        states[i] = {
            "p_t": problem.prior.noised(lv).sample(n, gen),
            "p*_t": proc.noise_to(target.sample(n, gen), i, gen),
        }
    rows = []
    jobs = [(name, opts, i) for name, opts in estimators for i in indices]
    for name, opts, i in tqdm(jobs, desc=f"values {problem.name}", disable=not progress):
        label = _label(name, opts)
        try:
            value = (
                TweedieValue(problem.reward)
                if name == "tweedie"
                else api.make_value(problem, name, process=process, **opts)
            )
        except ValueError as err:
            if name != "learned":
                raise
            if not any(r.get("estimator") == label for r in rows):
                rows.append({"estimator": label, "skipped": str(err)})
            continue
        lv = proc.level(i)
        for dist, x in states[i].items():
            ledger = Ledger()
            with torch.no_grad():
                x0 = ledger.predict(backend, x, i).x0 if value.needs_x0 else None
                est = value(ledger, backend, x, x0, i, gen)
            err = est - target.soft_value(x, lv)
            rows.append(
                {
                    "estimator": label,
                    "i": i,
                    "t": int(proc.timesteps[i]),
                    "alpha": lv.alpha,
                    "sigma": lv.sigma,
                    "under": dist,
                    "bias": float(err.mean()),
                    "rmse": float(err.pow(2).mean().sqrt()),
                    "nfe": ledger.nfe / n,
                    "reward_calls": ledger.reward_calls / n,
                }
            )
    return rows


def format_value_errors(rows: list[dict]) -> str:
    """Plain-text tables (one per distribution): bias / RMSE per estimator and noise level."""
    done = [r for r in rows if "skipped" not in r]
    lines = []
    for under in ("p_t", "p*_t"):
        sub = [r for r in done if r["under"] == under]
        levels = sorted({(r["i"], r["t"]) for r in sub})
        head = f"{'estimator':24s} {'NFE':>5s} " + " ".join(f"{f't={t}':>11s}" for _, t in levels)
        lines += [
            f"x_t ~ {under}: bias / RMSE of V̂ − V_t (exact) by timestep t (of 1000)",
            head,
            "-" * len(head),
        ]
        for est in dict.fromkeys(r["estimator"] for r in sub):
            cells = {r["i"]: r for r in sub if r["estimator"] == est}
            nfe = max(r["nfe"] for r in cells.values())
            lines.append(
                f"{est:24s} {nfe:5.0f} "
                + " ".join(f"{cells[i]['bias']:+5.2f}/{cells[i]['rmse']:4.2f}" for i, _ in levels)
            )
        lines.append("")
    lines += [f"{r['estimator']}: skipped ({r['skipped']})" for r in rows if "skipped" in r]
    return "\n".join(lines)
