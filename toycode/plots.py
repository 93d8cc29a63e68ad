"""Matplotlib figures for 2-D problems: densities, samples, and reward-vs-divergence frontiers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # figures are written to files; no display is needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .io import atomic_write  # noqa: E402
from .problems import Problem  # noqa: E402

__all__ = ["density_grid", "exact_frontier", "plot_samples_sheet", "plot_tradeoff",
           "plot_dimension_sweep", "save"]


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


def _panel(ax, title, xs=None, ys=None, image=None, points=None, contour=None, extent=4.5,
           cmap="viridis"):
    if image is not None:
        ax.pcolormesh(xs, ys, image, cmap=cmap, shading="auto")
    if contour is not None:   # the exact target, for judging samples by eye
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


def plot_samples_sheet(problem: Problem, exact: torch.Tensor, runs: list[tuple[str, torch.Tensor]],
                       columns: int = 6, extent: float = 4.0):
    """Prior, reward, exact target and every run's samples on one sheet."""
    target = problem.target
    rows = 1 + -(-len(runs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.2 * rows))
    axes = np.atleast_2d(axes)
    xs, ys, prior = density_grid(lambda x: problem.prior.log_prob(x).exp(), extent)
    _panel(axes[0, 0], "prior p", xs, ys, prior, extent=extent)
    _, _, rew = density_grid(lambda x: problem.reward(x), extent)
    _panel(axes[0, 1], f"reward r ({problem.reward.to_dict()['type']})", xs, ys, rew,
           extent=extent, cmap="magma")
    _, _, tgt = density_grid(lambda x: target.log_prob(x).exp(), extent)
    _panel(axes[0, 2], f"exact p* (λ={problem.lam:g})", xs, ys, tgt, extent=extent)
    _panel(axes[0, 3], "exact samples of p*", xs, ys, points=exact, contour=tgt, extent=extent)
    for ax in axes[0, 4:]:
        ax.axis("off")
    for k, (label, pts) in enumerate(runs):
        ax = axes[1 + k // columns, k % columns]
        _panel(ax, label, xs, ys, points=pts, contour=tgt, extent=extent)
    for ax in axes.flat[columns + len(runs):]:
        ax.axis("off")
    fig.suptitle(f"{problem.name}: samples (blue) over contours of the exact target p*",
                 fontsize=10)
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
        ax.errorbar(p["kl_to_base"], p["reward_mean"], yerr=2 * p["reward_se"],
                    fmt=markers.get(p.get("backend"), "o"), ms=5, capsize=2,
                    color=p.get("color"), label=p["label"])
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
        axes[0].errorbar(d, [100 * r["tilt_achieved"] for r in sel],
                         yerr=[200 * r["reward_se"] / g for r, g in zip(sel, gap)], marker="o",
                         capsize=3, color=f"C{i}", label=f"{method} (NFE {sel[0]['nfe']:.0f})")
        axes[1].plot(d, [r["mode_tv"] for r in sel], marker="o", color=f"C{i}", label=method)
    axes[0].axhline(100, color="k", lw=1, label="exact target")
    axes[0].set_ylabel("reward tilt reached, % of exact (±2 s.e.)")
    axes[1].set_ylabel("TV of digit weights to exact w*")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("dimension d (top-d principal axes of MNIST)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("MNIST mixture, exact tilted targets: equal NFE as the dimension grows",
                 fontsize=10)
    fig.tight_layout()
    return fig
