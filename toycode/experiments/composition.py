"""Annealed and product targets, sampled three ways and measured against their exact law.

For a composition q ∝ Π_k p_k^{c_k} (:mod:`toycode.exact.compose`) on the analytic denoisers:

    route       proposal                          weights
    naive       the composed score Σ c_k ε̂_k      none (what plain score composition samples)
    smc         the model p_0's own steps         SMC on λV_t = log q_t − log p_0,t (exact)
    fkc         the composed score                the same SMC, proposals weighed against p_0's
                                                  steps (twisted), as FK correctors do

Both SMC routes target the noised sequence q_t exactly, so they are consistent as K grows; the
naive route is not (noising does not commute with the composition). One particle is drawn
uniformly from each population (an equal-weight draw at K·T calls per output).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..backends import analytic_backend
from ..core.diffusion import Process
from ..core.guidance import GuidedBackend, ScoreSum
from ..core.sampler import sample_blockwise
from ..exact.compose import Composition, annealed, product
from ..exact.gmm import GaussianMixture
from ..exact.metrics import mean_se
from ..exact.problems import load_problem
from ..exact.reference import ExactReference

__all__ = [
    "ROUTES",
    "SECOND_EXPERT",
    "default_compositions",
    "composed_samples",
    "composition_study",
    "summarize_compositions",
    "plot_compositions",
]

SECOND_EXPERT = GaussianMixture(
    [0.5, 0.5], [[-1.0, 1.5], [1.5, -1.0]], [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]
)
"""The second expert of the product study: two unit Gaussians across the `between` prior's
modes, so p_1·p_2 keeps parts of three modes at new weights."""


def default_compositions(beta: float = 4.0) -> list[Composition]:
    """The `between` prior annealed to p^β, and its product with :data:`SECOND_EXPERT`."""
    prior = load_problem("between").prior
    return [annealed(prior, beta), product(prior, SECOND_EXPERT)]


ROUTES = ("naive", "smc", "fkc")


def composed_samples(
    comp: Composition,
    route: str,
    n: int,
    *,
    particles: int = 16,
    steps: int = 100,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """n samples of ``comp`` by one of :data:`ROUTES` (module docstring) on exact denoisers."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {list(ROUTES)}, got {route!r}")
    process = Process.make(steps)
    model = analytic_backend(comp.mixtures[0], process)
    others = [analytic_backend(m, process) for m in comp.mixtures[1:]]
    composed = GuidedBackend(model, ScoreSum(others, comp.weights))
    if route == "naive":
        return sample_blockwise(composed, comp.reward, n, generator=generator).samples
    res = sample_blockwise(
        model if route == "smc" else composed,
        comp.reward,
        n * particles,
        particles=particles,
        block_size=1,
        selection="systematic",
        ess_threshold=0.5,
        lam=1.0,
        value=comp.value(),
        twisted=route == "fkc",
        generator=generator,
    )
    pick = torch.arange(n) * particles + torch.randint(particles, (n,), generator=generator)
    return res.samples[pick]


def composition_study(
    compositions: list[Composition],
    *,
    particles=(4, 16, 64),
    n: int = 1024,
    steps: int = 100,
    seeds: int = 3,
    progress: bool = True,
) -> list[dict]:
    """Rows (composition, route, K, seed, distance = MMD² / noise floor of n samples against an
    exact sample of the composition drawn by quadrature)."""
    jobs = [
        (c, route, k, s)
        for c in compositions
        for route in ROUTES
        for k in ((1,) if route == "naive" else particles)
        for s in range(seeds)
    ]
    refs = {
        c.name: ExactReference.of_target(c.problem.target, n, torch.Generator().manual_seed(7))
        for c in compositions
    }
    rows = []
    for c, route, k, seed in tqdm(jobs, disable=not progress, desc="compositions"):
        x = composed_samples(
            c, route, n, particles=k, steps=steps, generator=torch.Generator().manual_seed(seed)
        )
        ref = refs[c.name]
        rows.append(
            {
                "composition": c.name,
                "route": route,
                "K": k,
                "seed": seed,
                "distance": ref.mmd2(x) / ref.floor,
            }
        )
    return rows


def summarize_compositions(rows: list[dict]) -> list[dict]:
    """Mean ± s.e. of the distance over seeds per (composition, route, K)."""
    keys = list(dict.fromkeys((r["composition"], r["route"], r["K"]) for r in rows))
    out = []
    for name, route, k in keys:
        d = [
            r["distance"]
            for r in rows
            if (r["composition"], r["route"], r["K"]) == (name, route, k)
        ]
        mean, se = mean_se(d)
        out.append({"composition": name, "route": route, "K": k, "distance": mean, "se": se})
    return out


def plot_compositions(compositions: list[Composition], rows: list[dict], n: int = 2000):
    """Per composition: the exact density with FKC samples over it, and distance vs K per route."""
    import matplotlib.pyplot as plt
    import numpy as np

    summary = summarize_compositions(rows)
    fig, axes = plt.subplots(2, len(compositions), figsize=(4.6 * len(compositions), 8.4))
    axes = np.asarray(axes).reshape(2, -1)
    for col, c in enumerate(compositions):
        ax = axes[0, col]
        lim = 4.5
        g = torch.linspace(-lim, lim, 200, dtype=torch.float64)
        gx, gy = torch.meshgrid(g, g, indexing="ij")
        log_q = c.log_prob_unnormalised(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1))
        q = (log_q - log_q.max()).exp().view(200, 200)
        ax.contourf(gx.numpy(), gy.numpy(), q.numpy(), levels=12, cmap="Blues")
        gen = torch.Generator().manual_seed(0)
        for route, color in (("naive", "C3"), ("fkc", "k")):
            x = composed_samples(c, route, 400, particles=16, generator=gen).numpy()
            ax.scatter(x[:, 0], x[:, 1], s=2, color=color, alpha=0.5, label=route)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_title(f"{c.name}: exact density, samples", fontsize=9)
        ax.legend(fontsize=7, markerscale=4)
        bx = axes[1, col]
        for k, route in enumerate(ROUTES):
            pts = [s for s in summary if s["composition"] == c.name and s["route"] == route]
            ks = [s["K"] for s in pts]
            bx.errorbar(
                ks,
                [s["distance"] for s in pts],
                yerr=[2 * s["se"] for s in pts],
                fmt="o-",
                color=f"C{k}",
                label=route,
                capsize=2,
            )
        bx.axhline(1.0, color="0.5", ls=":", label="exact sampler")
        bx.set_xscale("log", base=2)
        bx.set_yscale("log")
        bx.set_xlabel("particles K per output (naive: 1)")
        bx.set_ylabel("MMD² / noise floor (±2 s.e.)")
        bx.grid(alpha=0.3)
        bx.legend(fontsize=7)
    fig.tight_layout()
    return fig
