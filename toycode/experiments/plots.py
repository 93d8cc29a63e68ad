"""Matplotlib figures for 2-D problems: densities, samples, and reward-vs-divergence frontiers."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..exact.problems import Problem
from ..utils.io import atomic_write

__all__ = [
    "plot_value_errors",
    "density_grid",
    "exact_frontier",
    "plot_samples_sheet",
    "plot_tradeoff",
    "plot_dimension_sweep",
    "plot_sweep",
    "plot_genealogy",
    "SWEEP_KINDS",
    "SD_SWEEP_KINDS",
    "save",
]


def save(fig, path: str | Path) -> Path:
    """Write a figure as PNG atomically and close it."""
    out = atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return out


def density_grid(fn, extent: float, resolution: int = 200):
    """fn evaluated on a square grid: (xs, ys, values) with values[iy, ix]."""
    xs = torch.linspace(-extent, extent, resolution, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    vals = fn(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).reshape(resolution, resolution)
    return xs.numpy(), xs.numpy(), vals.detach().numpy()


def exact_frontier(problem: Problem, lams=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """λ ↦ (KL(p*_λ‖p), E_{p*_λ}[r]): the best reward any sampler can reach at each divergence."""
    lams = np.concatenate([[0.0], np.geomspace(0.01, 1000, 60)]) if lams is None else lams
    kl, reward = [], []
    for lam in lams:
        t = problem.with_lam(float(lam)).target
        kl.append(t.kl_to_base)
        reward.append(t.reward_mean)
    return np.asarray(lams), np.asarray(kl), np.asarray(reward)


def _panel(
    ax,
    title,
    *,
    xs=None,
    ys=None,
    image=None,
    points=None,
    contour=None,
    extent=4.5,
    cmap="viridis",
):
    if image is not None:
        ax.pcolormesh(xs, ys, image, cmap=cmap, shading="auto")
    if contour is not None:  # the exact target, for judging samples by eye
        ax.contour(xs, ys, contour, levels=6, colors="0.55", linewidths=0.6)
    if points is not None:
        p = np.asarray(points)
        ax.scatter(p[:, 0], p[:, 1], s=1.5, alpha=0.45, color="C0", rasterized=True)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def plot_samples_sheet(
    problem: Problem,
    exact: torch.Tensor,
    runs: list[tuple[str, torch.Tensor]],
    columns: int = 6,
    extent: float = 4.0,
    note: str = "",
):
    """Prior, reward, exact target and every run's samples on one sheet (``note`` is appended
    to the title, e.g. the process)."""
    target = problem.target
    rows = 1 + -(-len(runs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.2 * rows))
    axes = np.atleast_2d(axes)
    xs, ys, prior = density_grid(lambda x: problem.prior.log_prob(x).exp(), extent)
    _panel(axes[0, 0], "prior p", xs=xs, ys=ys, image=prior, extent=extent)
    _, _, rew = density_grid(lambda x: problem.reward(x), extent)
    _panel(
        axes[0, 1],
        f"reward r ({problem.reward.to_dict()['type']})",
        xs=xs,
        ys=ys,
        image=rew,
        extent=extent,
        cmap="magma",
    )
    _, _, tgt = density_grid(lambda x: target.log_prob(x).exp(), extent)
    _panel(axes[0, 2], f"exact p* (λ={problem.lam:g})", xs=xs, ys=ys, image=tgt, extent=extent)
    _panel(
        axes[0, 3], "exact samples of p*", xs=xs, ys=ys, points=exact, contour=tgt, extent=extent
    )
    for ax in axes[0, 4:]:
        ax.axis("off")
    for k, (label, pts) in enumerate(runs):
        ax = axes[1 + k // columns, k % columns]
        _panel(ax, label, xs=xs, ys=ys, points=pts, contour=tgt, extent=extent)
    for ax in axes.flat[columns + len(runs) :]:
        ax.axis("off")
    fig.suptitle(
        f"{problem.name}: samples (blue) over contours of the exact target p*{note}", fontsize=10
    )
    fig.tight_layout()
    return fig


def plot_tradeoff(problem: Problem, points: list[dict], title: str | None = None):
    """Reward vs estimated KL(q‖p) for each run, over the exact optimal frontier."""
    lams, kl, reward = exact_frontier(problem)
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    ax.plot(kl, reward, "k-", lw=1.5, label="exact frontier λ ↦ (KL(p*_λ‖p), E_{p*_λ}[r])")
    t = problem.target
    ax.plot([t.kl_to_base], [t.reward_mean], "k*", ms=12, label=f"exact p* at λ={problem.lam:g}")
    markers = {"analytic": "o", "trained": "s"}
    for p in points:
        ax.errorbar(
            p["kl_to_base"],
            p["reward_mean"],
            yerr=2 * p["reward_se"],
            fmt=markers.get(p.get("backend"), "o"),
            ms=5,
            capsize=2,
            color=p.get("color"),
            label=p["label"],
        )
    ax.set_xlabel("KL(q‖p): divergence from the base model (k-NN estimate for samplers)")
    ax.set_ylabel("mean reward (±2 s.e.)")
    ax.set_xlim(left=min(-0.1, min(p["kl_to_base"] for p in points) - 0.1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right", ncol=2)
    ax.set_title(title or f"{problem.name}: reward vs divergence", fontsize=10)
    fig.tight_layout()
    return fig


def plot_dimension_sweep(rows: list[dict]):
    """Share of the exact tilt reached and mode-weight error against the dimension."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, method in enumerate(sorted({r["method"] for r in rows})):
        sel = [r for r in rows if r["method"] == method]
        d = [r["d"] for r in sel]
        gap = [r["exact_reward"] - r["base_reward"] for r in sel]
        axes[0].errorbar(
            d,
            [100 * r["tilt_achieved"] for r in sel],
            yerr=[200 * r["reward_se"] / g for r, g in zip(sel, gap)],
            marker="o",
            capsize=3,
            color=f"C{i}",
            label=f"{method} (NFE {sel[0]['nfe']:.0f})",
        )
        axes[1].plot(d, [r["mode_tv"] for r in sel], marker="o", color=f"C{i}", label=method)
    axes[0].axhline(100, color="k", lw=1, label="exact target")
    axes[0].set_ylabel("reward tilt reached, % of exact (±2 s.e.)")
    axes[1].set_ylabel("TV of digit weights to exact w*")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("dimension d (top-d principal axes of MNIST)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "MNIST mixture, exact tilted targets: equal NFE as the dimension grows", fontsize=10
    )
    fig.tight_layout()
    return fig


def _aggregate(rows: list[dict], y: str, x: str):
    """Mean ± s.e. over seeds of y and mean x, per (method, settings), sorted by x per method."""
    groups: dict = {}
    for r in rows:
        name = r["method"] + (f" ({r['value']} V)" if r.get("value") else "")
        key = (name, tuple(sorted(r["settings"].items())))
        groups.setdefault(key, []).append(r)
    curves: dict = {}
    for (method, settings), rs in groups.items():
        ys = np.array([r[y] for r in rs], dtype=float)
        xs = np.array([r[x] for r in rs], dtype=float)
        se = ys.std(ddof=1) / np.sqrt(len(ys)) if len(ys) > 1 else 0.0
        curves.setdefault(method, []).append((xs.mean(), ys.mean(), se, dict(settings)))
    return {m: sorted(v, key=lambda p: p[0]) for m, v in curves.items()}


def _label(settings: dict) -> str:
    return ",".join(f"{k}={v:g}" for k, v in settings.items() if k != "T")


SWEEP_KINDS = {
    "frontier": ("kl_to_base", "reward_mean", "KL(q‖p) (k-NN estimate)", "mean reward"),
    "distance-nfe": ("nfe", "distance", "NFE per sample", "MMD² to exact p* / floor"),
    "reward-nfe": ("nfe", "reward_mean", "NFE per sample", "mean reward"),
}

SD_SWEEP_KINDS = {
    "reward-nfe": ("nfe", "reward", "UNet calls per image (NFE)", "mean reward"),
    "reward-fidelity": (
        "fidelity",
        "reward",
        "prompt fidelity (mean CLIP text–image cosine)",
        "mean reward",
    ),
}
"""The kinds of an sd-sweep table (one image per row), averaged over prompts × seeds."""


def plot_sweep(rows: list[dict], kind: str, problem: Problem | None = None):
    """One of SWEEP_KINDS from a tradeoff table, error bars = ±2 s.e. over seeds; or one of
    SD_SWEEP_KINDS from an sd-sweep table (rows with a prompt), ±2 s.e. over prompts × seeds."""
    sd = bool(rows) and "prompt" in rows[0]
    kinds = SD_SWEEP_KINDS if sd else SWEEP_KINDS
    if kind not in kinds:
        extra = [] if sd else ["genealogy"]
        raise ValueError(f"kind must be one of {sorted(kinds) + extra}, got {kind!r}")
    x, y, xlabel, ylabel = kinds[kind]
    # null (None) is how a strict-JSON table stores a value it could not write as a number
    finite = [r for r in rows if all(r.get(k) is not None and np.isfinite(r[k]) for k in (x, y))]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if kind == "frontier" and problem is not None:
        _, kl, reward = exact_frontier(problem)
        ax.plot(kl, reward, "k-", lw=1.5, label="exact frontier")
    for i, (method, pts) in enumerate(sorted(_aggregate(finite, y, x).items())):
        xs, ys, se, st = zip(*pts)
        ax.errorbar(
            xs, ys, yerr=2 * np.array(se), marker="o", ms=4, capsize=2, color=f"C{i}", label=method
        )
        if len(pts) <= 6:
            for px, py, s in zip(xs, ys, st):
                ax.annotate(
                    _label(s),
                    (px, py),
                    fontsize=5.5,
                    alpha=0.7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    if kind == "distance-nfe":
        ax.axhline(1.0, color="k", lw=1, ls="--", label="noise floor (exact sampler)")
        ax.set_yscale("log")
    if x == "nfe":
        ax.set_xscale("log")
    skipped = len(rows) - len(finite)
    title = f"{rows[0]['model' if sd else 'problem']}: {ylabel} vs {xlabel}" if rows else kind
    if skipped:
        title += f" ({skipped} rows with infinite or missing values left out)"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + f" (±2 s.e. over {'prompts × seeds' if sd else 'seeds'})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_genealogy(blocks: list[dict], sample: int = 0):
    """ESS of every CoDe selection, and one sample's candidates and survivors block by block."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ess = np.array([b["ess"].numpy() for b in blocks])  # (blocks, n)
    n_cand = blocks[0]["weights"].shape[1]
    ends = [b["j"] for b in blocks]
    axes[0].plot(ends, ess.mean(1), "o-", color="C0", label="mean over samples")
    axes[0].fill_between(
        ends,
        np.percentile(ess, 10, 1),
        np.percentile(ess, 90, 1),
        color="C0",
        alpha=0.2,
        label="10–90 %",
    )
    axes[0].set_ylim(0, n_cand * 1.05)
    axes[0].set_xlabel("block end (grid index)")
    axes[0].set_ylabel(f"ESS of the selection weights (of N = {n_cand})")
    axes[0].legend(fontsize=7)
    for b in blocks:
        v = b["values"][sample].numpy()
        w = b["weights"][sample].numpy()
        kept = int(b["selected"][sample].view(-1)[0])
        axes[1].scatter([b["j"]] * len(v), v, s=10 + 200 * w, color="0.6", alpha=0.7)
        axes[1].scatter([b["j"]], [v[kept]], s=40, facecolors="none", edgecolors="C3", lw=1.5)
    axes[1].set_xlabel("block end (grid index)")
    axes[1].set_ylabel("candidate value (size ∝ selection weight)")
    axes[1].set_title(
        f"sample {sample}: the {n_cand} candidates of each block, survivor circled", fontsize=9
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_value_errors(rows: list[dict], title: str = ""):
    """RMSE (solid) and |bias| (dotted) of each value estimator against the exact V_t, by the
    timestep, under the base marginal p_t and the tilted marginal p*_t."""
    done = [r for r in rows if "skipped" not in r]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    names = list(dict.fromkeys(r["estimator"] for r in done))
    for ax, under in zip(axes, ("p_t", "p*_t")):
        for k, name in enumerate(names):
            pts = sorted(
                (r["t"], r["rmse"], abs(r["bias"]))
                for r in done
                if r["estimator"] == name and r["under"] == under
            )
            s, rmse, bias = (np.array(v) for v in zip(*pts))
            ax.plot(s, rmse, "-o", ms=3, color=f"C{k}", label=name)
            ax.plot(s, bias, ":", color=f"C{k}")
        ax.set_xlabel("timestep t (0 clean, 999 pure noise)")
        ax.set_title(f"x_t ~ {under}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error of V̂ against exact V_t\n(RMSE solid, |bias| dotted)")
    axes[1].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
