"""`toycode demo` and `toycode compare`: samplers scored against the exact target of 2-D problems.

Every run uses the same seed and is scored against one exact sample of p*. The "floor" row is the
same metrics for an independent exact sample of the same size: a sampler within a few floors of
the target is indistinguishable from it at this sample size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core.methods import get_method
from ..exact.problems import Problem, load_problem
from ..exact.reference import ExactReference
from ..exact.theory import knn_kl_bias
from . import api
from .plots import plot_samples_sheet, plot_tradeoff, save

__all__ = ["Run", "DEMO_RUNS", "COMPARE_RUNS", "compare", "run_demo", "format_table"]


@dataclass(frozen=True)
class Run:
    """One named sampler configuration: an api.sample method plus its options."""

    label: str
    method: str
    options: dict = field(default_factory=dict)


DEMO_RUNS = [
    Run("base", "base"),
    Run("best-of-N", "bon"),
    Run("SVDD", "svdd"),
    Run("CoDe argmax", "code"),
    Run("CoDe softmax", "code", {"selection": "softmax"}),
    Run("CoDe softmax exact-V", "code", {"selection": "softmax", "value": "exact"}),
]

COMPARE_RUNS = DEMO_RUNS + [
    Run("SMC", "smc"),
    Run("SMC exact-V", "smc", {"value": "exact"}),
    Run("DPS", "dps"),
    Run("DPS detached", "dps-detached"),
    Run("universal (m=3, r=2)", "universal", {"backward_steps": 3, "recurrence": 2}),
    Run("CoDe-gradient softmax", "code-gradient", {"selection": "softmax"}),
    Run("exact guidance", "exact-guidance"),
]


def compare(
    problem: Problem | str,
    runs=DEMO_RUNS,
    backends=("analytic",),
    *,
    n: int = 1024,
    steps: int = 100,
    num_candidates: int = 16,
    block_size: int = 10,
    seed: int = 0,
    progress: bool = True,
    process: str = "vp",
    value: str = "tweedie",
) -> dict:
    """Run every configuration on every backend under ``process`` ("vp" | "flow"); return
    rows, samples, floor and target. ``value`` is the value estimator of every run that does
    not name its own (see :data:`toycode.experiments.api.VALUES`)."""
    problem = problem if isinstance(problem, Problem) else load_problem(problem)
    target = problem.target
    gen = torch.Generator().manual_seed(seed + 10_000)
    exact = ExactReference.of_target(target, n, gen)
    rows, samples = [], []
    jobs = [(b, r) for b in backends for r in runs]
    for backend, run in tqdm(jobs, desc=problem.name, disable=not progress):
        method = get_method(run.method)
        options = {"num_candidates": num_candidates, "value": value, **run.options}
        if method.block == "given" and not method.uses_particles:
            options.setdefault("block_size", block_size)
        row = {"label": run.label, "backend": backend, "method": run.method}
        if method.needs_gradient and not getattr(problem.reward, "differentiable", False):
            rows.append({**row, "skipped": "reward not differentiable"})
            continue
        res = api.sample(
            problem,
            backend=backend,
            method=run.method,
            steps=steps,
            n=n,
            seed=seed,
            process=process,
            **options,
        )
        metrics = exact.evaluate(res.samples, res.rewards, target)
        rows.append(
            {
                **row,
                "N": res.settings["num_candidates"],
                "B": res.settings["block_size"],
                "K": res.settings["particles"],
                "nfe": res.nfe_per_sample,
                "reward_grads": res.reward_grads / res.n,
                "backprops": res.backprops / res.n,
                "reward_calls": res.reward_calls / res.n,
                **metrics,
            }
        )
        samples.append((f"{run.label} [{backend}]", res.samples.detach().double()))
    # the k-NN KL estimator's bias at this n, measured where KL(q_N‖p) is known exactly
    kl_bias = knn_kl_bias(problem.prior, problem.reward, n, (1, 4, 16), replicates=3, generator=gen)
    return {
        "problem": problem,
        "rows": rows,
        "samples": samples,
        "reference": exact.sample,
        "floor": exact.floor_metrics,
        "target": target.summary(),
        "process": process,
        "kl_bias": kl_bias,
    }


def run_demo(
    problem: str = "between",
    *,
    out_dir: str | Path = "figures",
    backends=("analytic", "trained"),
    **options,
) -> dict:
    """The demo: DEMO_RUNS on both backends, and its two figures (named ``*_flow`` under
    ``process="flow"``)."""
    result = compare(problem, DEMO_RUNS, backends, **options)
    problem = result["problem"]
    out = Path(out_dir)
    tag = "" if result["process"] == "vp" else f"_{result['process']}"
    note = "" if result["process"] == "vp" else f" ({result['process']} process)"
    result["figures"] = [
        save(
            plot_samples_sheet(problem, result["reference"], result["samples"], note=note),
            out / f"gmm_{problem.name}_samples{tag}.png",
        )
    ]
    colors = {r.label: f"C{i}" for i, r in enumerate(DEMO_RUNS)}
    points = [
        {**r, "label": f"{r['label']} [{r['backend']}]", "color": colors[r["label"]]}
        for r in result["rows"]
    ]
    result["figures"].append(
        save(plot_tradeoff(problem, points), out / f"gmm_{problem.name}_tradeoff{tag}.png")
    )
    return result


def format_table(result: dict, gradients: bool = False) -> str:
    """A comparison as a plain-text table; MMD² is in units of its noise floor."""
    floor, tgt = result["floor"], result["target"]
    grad_head = f" {'grads':>5s} {'backprop':>8s}" if gradients else ""
    head = (
        f"{'method':22s} {'backend':8s} {'N':>3s} {'B':>4s} {'NFE/sample':>10s}{grad_head} "
        f"{'reward ± s.e.':>17s} {'MMD²/floor':>10s} {'KL(q‖p*)':>9s} {'KL(q‖p)':>8s} "
        f"{'mode TV':>7s} {'distinct':>8s}"
    )
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"{r['label']:22s} {r['backend']:8s}   — {r['skipped']}")
            continue
        grads = f" {r['reward_grads']:5.0f} {r['backprops']:8.0f}" if gradients else ""
        size = f"{r['N']:3d}" if r["K"] == 1 else f"K{r['K']:<2d}"
        lines.append(
            f"{r['label']:22s} {r['backend']:8s} {size} {r['B']:4d} "
            f"{r['nfe']:10.0f}{grads} {r['reward_mean']:8.3f} ± {r['reward_se']:6.3f} "
            f"{r['mmd2'] / floor['mmd2']:10.1f} {r['kl_to_target']:9.3f} "
            f"{r['kl_to_base']:8.3f} {r['mode_tv']:7.3f} {r['distinct']:8.2f}"
        )
    lines.append("-" * len(head))
    pad = " " * (len(grad_head))
    lines.append(
        f"{'exact p* (sample)':22s} {'':8s} {'':3s} {'':4s} {'':10s}{pad} "
        f"{floor['reward_mean']:8.3f} ± {floor['reward_se']:6.3f} {1.0:10.1f} "
        f"{floor['kl_to_target']:9.3f} {floor['kl_to_base']:8.3f} {floor['mode_tv']:7.3f}"
    )
    lines.append(
        f"{'exact p* (closed form)':22s} {'':8s} {'':3s} {'':4s} {'':10s}{pad} "
        f"{tgt['reward_mean']:8.3f} {'':8s} {'0':>10s} {'0':>9s} "
        f"{tgt['kl_to_base']:8.3f} {'0':>7s}"
    )
    lines.append(
        f"MMD²/floor: MMD² to an exact sample of p* over the floor {floor['mmd2']:.2e} "
        "(two independent exact samples); the 'exact p* (sample)' row's KL and mode TV "
        "are their estimators' floors. KL is inf for samples with repeated points "
        "(SMC's resampling copies particles; 'distinct' is the share of unique ones)."
    )
    if result.get("kl_bias"):
        cells = ", ".join(
            f"N = {b['N']}: {b['estimate']:.3f} vs {b['exact']:.3f} "
            f"(bias {b['bias']:+.3f} ± {b['se']:.3f})"
            for b in result["kl_bias"]
        )
        lines.append(
            f"KL(q‖p)'s k-NN estimator on exact best-of-N samples of size "
            f"{result['kl_bias'][0]['n']}, against log N − (N − 1)/N: {cells}."
        )
    return "\n".join(lines)
