"""Genealogy collapse: how many of an SMC population's starting particles still have descendants.

Resampling copies the heavy particles and drops the light ones, so after enough block ends the K
survivors of a population descend from a handful of the K particles it started with — their
paths share a prefix and the population's diversity is that of its few ancestors (VASR, Shekhar
et al. 2026, arXiv 2604.06779, traces this collapse to multinomial resampling's offspring
variance). :func:`distinct_ancestors` follows the ancestry through the sampler's block-end
records; :func:`lineage_study` runs SMC with each selection rule at equal compute and reports
the surviving lineages beside the distance to the exact target; :func:`plot_lineages` draws it.
"""

from __future__ import annotations

import torch

from ..exact.metrics import mean_se
from ..exact.problems import Problem
from ..exact.reference import ExactReference
from . import api

__all__ = ["distinct_ancestors", "lineage_study", "plot_lineages"]


def distinct_ancestors(blocks: list[dict], particles: int) -> torch.Tensor:
    """(blocks, populations) number of distinct starting particles among each population's K
    survivors after each block end, from the ``callback`` records of
    :func:`~toycode.core.sampler.sample_blockwise` (``selected``: the kept children, child c of
    parent c // N)."""
    if not blocks:
        raise ValueError("no block-end records: run the sampler with a callback")
    pops = blocks[0]["selected"].shape[0]
    children = blocks[0]["weights"].shape[1] // particles  # N children per particle
    ancestor = torch.arange(particles).expand(pops, particles)
    counts = []
    for b in blocks:
        ancestor = ancestor.gather(1, b["selected"] // children)
        ordered = ancestor.sort(1).values
        counts.append((ordered.diff(dim=1) != 0).sum(1) + 1)
    return torch.stack(counts)


def lineage_study(
    problem: Problem,
    selections=("softmax", "systematic", "stratified", "ssp"),
    *,
    particles: int = 16,
    populations: int = 64,
    steps: int = 50,
    seeds: int = 3,
) -> list[dict]:
    """SMC (B = 1, resampled when ESS < K/2) with each selection rule on ``problem``: per rule
    and seed, the surviving lineages after every block end (mean over populations), the
    share of starting particles with descendants at the end, and MMD² / noise floor of all
    n = populations·K particles against an exact reference of the same size."""
    n = particles * populations
    exact = ExactReference.of_target(problem.target, n, torch.Generator().manual_seed(7))
    rows = []
    for selection in selections:
        for seed in range(seeds):
            blocks: list[dict] = []
            res = api.sample(
                problem,
                method="smc",
                particles=particles,
                n=n,
                steps=steps,
                seed=seed,
                selection=selection,
                callback=blocks.append,
            )
            lineages = distinct_ancestors(blocks, particles).double().mean(1)
            rows.append(
                {
                    "selection": selection,
                    "seed": seed,
                    "lineages": lineages.tolist(),
                    "surviving": float(lineages[-1]) / particles,
                    "distance": exact.mmd2(res.samples) / exact.floor,
                    "resamplings": float((res.ess < 0.5 * particles).double().sum(0).mean()),
                }
            )
    return rows


def summarize_lineages(rows: list[dict]) -> list[dict]:
    """Per selection rule: surviving share and distance, mean ± s.e. over seeds."""
    out = []
    for selection in dict.fromkeys(r["selection"] for r in rows):
        mine = [r for r in rows if r["selection"] == selection]
        surviving, surviving_se = mean_se([r["surviving"] for r in mine])
        distance, distance_se = mean_se([r["distance"] for r in mine])
        out.append(
            {
                "selection": selection,
                "surviving": surviving,
                "surviving_se": surviving_se,
                "distance": distance,
                "distance_se": distance_se,
            }
        )
    return out


def plot_lineages(rows: list[dict], particles: int):
    """Surviving lineages against block end per selection rule (mean over seeds), and the
    distance to p* each reaches."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    summary = summarize_lineages(rows)
    for k, s in enumerate(summary):
        curves = np.array([r["lineages"] for r in rows if r["selection"] == s["selection"]])
        ax.plot(
            np.arange(1, curves.shape[1] + 1),
            curves.mean(0),
            color=f"C{k}",
            label=f"{_label(s['selection'])}: {100 * s['surviving']:.0f} % survive",
        )
        bx.errorbar([k], [s["distance"]], yerr=[2 * s["distance_se"]], fmt="o", color=f"C{k}")
    ax.set_xlabel("block end (step)")
    ax.set_ylabel(f"distinct starting particles (of K = {particles})")
    ax.set_title("lineages left in a population (mean over populations and seeds)", fontsize=9)
    ax.legend(fontsize=7)
    bx.axhline(1.0, color="0.5", ls=":", label="exact sampler (noise floor)")
    bx.set_xticks(range(len(summary)), [_label(s["selection"]) for s in summary])
    bx.set_ylabel("MMD² / noise floor (±2 s.e.)")
    bx.set_title("distance to p*", fontsize=9)
    bx.legend(fontsize=7)
    for a in (ax, bx):
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _label(selection: str) -> str:
    return "multinomial" if selection == "softmax" else selection
