"""What classifier-free guidance samples, against its "target" and against the reward tilt.

    python -m toycode.experiments.cfg_study --out figures/cfg_vs_tilt.png

On a labelled 2-D mixture (default: the ``between`` prior, each component a class, class c = 2)
and for each guidance weight w (default 1, 2, 4), three things are measured against exact
samples of the CFG "target" (a) p(x | c)^w p(x)^{1−w} = (b) the tilt p(x) p(c | x)^w
(:mod:`toycode.exact.cfg`):

- **CFG sampling** with exact scores: toycode's sampler on a backend whose ε̂ is the guided
  w ε̂(x | c) + (1 − w) ε̂(x), i.e. the score w ∇ log p_t(x | c) + (1 − w) ∇ log p_t(x)
  (Chidambaram et al. 2024, arXiv 2409.13074), by DDPM ancestral steps (η = 1) and by the
  probability-flow ODE (DDIM η = 0), both on the fine grid of the 1000-step VP schedule;
- **the reward-tilt route**: exact guidance (the exact twisted score of the tilt problem, r =
  log p(c | x) at λ = w) and SMC on the same problem, which target (b) = (a) exactly;
- their MMD² to an exact sample in units of its noise floor (≈ 1: exact), the class mass
  E[p(c | x)] and the mean, each with its standard error beside the exact value by quadrature.

Each CFG evaluation is two denoiser passes (conditional and unconditional), so a CFG step
costs 2 NFE.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..backends.base import ToyBackend
from ..core.diffusion import NoiseLevel, Process
from ..core.sampler import sample_blockwise
from ..exact.cfg import CFGTarget, ClassLogProb, LabelledMixture, tilt_problem
from ..exact.problems import load_problem
from ..exact.reference import ExactReference
from ..utils.checks import check_count, check_range
from . import api

__all__ = [
    "WEIGHTS",
    "CLASS",
    "ROUTES",
    "labelled_between",
    "cfg_backend",
    "cfg_sample",
    "tilt_sample",
    "measure",
    "format_rows",
    "run_study",
    "plot_cfg_vs_tilt",
    "main",
]

WEIGHTS = (1.0, 2.0, 4.0)
CLASS = 2
"""The default class: the ``between`` component at (0, 2.5), weight 0.2, between the others."""


def labelled_between() -> LabelledMixture:
    """The ``between`` prior with each of its three components a class."""
    return LabelledMixture(load_problem("between").prior)


class _GuidedEps:
    """ε̂ = −σ (w ∇ log p_t(x | c) + (1 − w) ∇ log p_t(x)): CFG's ε-space combination."""

    def __init__(self, mixture: LabelledMixture, c: int, w: float):
        self.mixture, self.c, self.w = mixture, c, w

    def __call__(self, x, t, level: NoiseLevel):
        return -level.sigma * self.mixture.guided_score(x, level, self.c, self.w)


class _CFGBackend(ToyBackend):
    def predict(self, x, i, generator=None):
        return super().predict(x, i, generator)._replace(nfe=2)  # conditional + unconditional


def cfg_backend(
    mixture: LabelledMixture, c: int, w: float, *, steps: int = 1000, eta: float = 1.0
) -> ToyBackend:
    """A backend whose ε̂ is the exact classifier-free-guided one at weight w, on ``steps``
    DDIM(η) steps of the linear VP schedule (η = 1: DDPM ancestral; η = 0: the
    probability-flow ODE)."""
    check_range("w", w, 0.0, None)
    check_range("eta", eta, 0.0, 1.0)
    process = Process.make(steps, eta=eta)
    return _CFGBackend(_GuidedEps(mixture, mixture.check_class(c), float(w)), process, 2)


def cfg_sample(
    mixture: LabelledMixture,
    c: int,
    w: float,
    n: int,
    *,
    steps: int = 1000,
    eta: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """n CFG samples (toycode's sampler, base settings, on :func:`cfg_backend`)."""
    check_count("n", n)
    backend = cfg_backend(mixture, c, w, steps=steps, eta=eta)
    reward = ClassLogProb(mixture, c)
    res = sample_blockwise(backend, reward, n, generator=torch.Generator().manual_seed(seed))
    return res.samples


def tilt_sample(
    problem,
    n: int,
    *,
    method: str = "exact-guidance",
    steps: int = 200,
    seed: int = 0,
    particles: int = 16,
    value: str = "tweedie",
) -> torch.Tensor:
    """n samples of the tilt problem (:func:`~toycode.exact.cfg.tilt_problem`) by a toycode
    method (``value``: its value estimator, :data:`~toycode.experiments.api.VALUES`); a
    particle method runs n populations of ``particles`` and keeps one uniformly chosen
    particle of each (SMC resamples at the clean end, so that is an equal-weight draw)."""
    k = particles if method in ("smc", "das", "tds") else 1
    res = api.sample(
        problem, method=method, n=n * k, steps=steps, seed=seed, particles=k, value=value
    )
    if k == 1:
        return res.samples
    gen = torch.Generator().manual_seed(seed + 1)
    return res.samples[torch.arange(n) * k + torch.randint(k, (n,), generator=gen)]


def measure(x: torch.Tensor, target: CFGTarget, reference: ExactReference) -> dict:
    """MMD² / floor against exact samples of (a), class mass E[p(c | x)] and the mean, each
    with its standard error and its exact value."""
    x = x.double()
    pc = target.mixture.log_class_posterior(x, target.c).exp()
    n = len(x)
    return {
        "distance": reference.mmd2_over_floor(x),
        "class_mass": float(pc.mean()),
        "class_mass_se": float(pc.std()) / math.sqrt(n),
        "exact_class_mass": target.class_mass,
        "mean": x.mean(0).tolist(),
        "mean_se": (x.std(0) / math.sqrt(n)).tolist(),
        "exact_mean": target.mean.tolist(),
    }


ROUTES = (
    "CFG, DDPM",
    "CFG, ODE",
    "tilt, exact guidance",
    "tilt, SMC (exact V)",
    "tilt, SMC (Tweedie)",
)
"""The samplers of a study: CFG with exact scores on T = 1000 steps (η = 1, η = 0); exact
guidance (T = 200) and SMC with K = 16 particles (T = 100; exact soft values or Tweedie's
r(x̂0)) on the tilt problem r = log p(c | x), λ = w."""


def _routes(mixture, c, w, n, *, seed):
    problem = tilt_problem(mixture, c, w)
    smc = {"method": "smc", "steps": 100, "seed": seed, "particles": 16}
    return {
        "CFG, DDPM": cfg_sample(mixture, c, w, n, steps=1000, eta=1.0, seed=seed),
        "CFG, ODE": cfg_sample(mixture, c, w, n, steps=1000, eta=0.0, seed=seed),
        "tilt, exact guidance": tilt_sample(problem, n, steps=200, seed=seed),
        "tilt, SMC (exact V)": tilt_sample(problem, n, value="exact", **smc),
        "tilt, SMC (Tweedie)": tilt_sample(problem, n, **smc),
    }


def run_study(
    mixture: LabelledMixture | None = None,
    c: int = CLASS,
    weights=WEIGHTS,
    *,
    n: int = 1000,
    seed: int = 0,
) -> dict:
    """For each w: the target (a), its exact reference (n samples, the floor over 10 more),
    every route's (:data:`ROUTES`) samples and :func:`measure` rows (one per route)."""
    mixture = labelled_between() if mixture is None else mixture
    c = mixture.check_class(c)
    per_w, rows = {}, []
    for w in weights:
        start = time.perf_counter()
        target = CFGTarget(mixture, c, w)
        reference = ExactReference.of_sampler(
            target.sample, n, torch.Generator().manual_seed(seed + 12345)
        )
        samples = _routes(mixture, c, w, n, seed=seed)
        for route, x in samples.items():
            rows.append({"w": w, "route": route, **measure(x, target, reference)})
        per_w[w] = {"target": target, "samples": samples, "wall_s": time.perf_counter() - start}
    return {"mixture": mixture, "class": c, "per_w": per_w, "rows": rows}


def format_rows(rows: list[dict]) -> str:
    """The study's rows as a markdown table."""
    lines = [
        "| w | route | MMD²/floor | class mass | exact | mean | exact mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mean = ", ".join(f"{m:.3f}±{s:.3f}" for m, s in zip(r["mean"], r["mean_se"]))
        exact = ", ".join(f"{m:.3f}" for m in r["exact_mean"])
        lines.append(
            f"| {r['w']:g} | {r['route']} | {r['distance']:.1f} | "
            f"{r['class_mass']:.4f}±{r['class_mass_se']:.4f} | {r['exact_class_mass']:.4f} | "
            f"({mean}) | ({exact}) |"
        )
    return "\n".join(lines)


def _kde_grid(x: torch.Tensor, xs, ys):
    """A Gaussian kernel density estimate of 2-D samples (Scott's bandwidth) on a grid."""
    from scipy.stats import gaussian_kde

    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    return gaussian_kde(x.numpy().T)(np.stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)


def plot_cfg_vs_tilt(study: dict, routes=ROUTES[:4]):
    """One row per w: the exact density of (a) = (b), then each route's samples as a density
    (a kernel density estimate) under the target's contours (white), titled with its
    MMD² / floor and its mean's second coordinate beside the exact one."""
    import matplotlib.pyplot as plt

    per_w = study["per_w"]
    rows = {(r["w"], r["route"]): r for r in study["rows"]}
    means = study["mixture"].conditional(study["class"]).means
    centre = means.mean(0).numpy()
    xs = np.linspace(centre[0] - 1.9, centre[0] + 1.9, 120)
    ys = np.linspace(centre[1] - 1.9, centre[1] + 1.9, 120)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    grid = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1))
    cols = 1 + len(routes)
    fig, axes = plt.subplots(
        len(per_w), cols, figsize=(3.0 * cols, 3.2 * len(per_w)), squeeze=False
    )
    for ax_row, (w, entry) in zip(axes, per_w.items()):
        dens = entry["target"].log_prob(grid).exp().numpy().reshape(gx.shape)
        ax_row[0].contourf(xs, ys, dens, levels=14, cmap="viridis")
        ax_row[0].set_title(f"w = {w:g}: exact p(x|c)^w p(x)^(1−w)", fontsize=8.5)
        for ax, route in zip(ax_row[1:], routes):
            ax.contourf(xs, ys, _kde_grid(entry["samples"][route], xs, ys), 14, cmap="viridis")
            ax.contour(xs, ys, dens, levels=5, colors="w", linewidths=0.6, alpha=0.9)
            r = rows[(w, route)]
            ax.set_title(
                f"{route}\nMMD²/floor {r['distance']:.1f}; mean y {r['mean'][1]:.2f} "
                f"({r['exact_mean'][1]:.2f})",
                fontsize=8.5,
            )
        for ax in ax_row:
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
    fig.suptitle(
        f"Classifier-free guidance is not the tilt (class {study['class']} of a labelled mixture, "
        "exact scores): densities; white: the target's contours; in brackets: its exact mean y",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def main(argv=None) -> int:
    """``python -m toycode.experiments.cfg_study``: run the study, print its table, save the
    figure."""
    from .plots import save

    parser = argparse.ArgumentParser(prog="python -m toycode.experiments.cfg_study")
    parser.add_argument("--out", default="figures/cfg_vs_tilt.png", help="figure path (PNG)")
    parser.add_argument("--n", type=int, default=1000, help="samples per route and w")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        check_count("n", args.n, 16)
        if Path(args.out).is_dir():
            raise ValueError(f"--out must be a file path, got the folder {args.out!r}")
        study = run_study(n=args.n, seed=args.seed)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    print(format_rows(study["rows"]))
    print(f"figure: {save(plot_cfg_vs_tilt(study), args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
