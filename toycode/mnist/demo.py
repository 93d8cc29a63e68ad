"""`toycode mnist-demo`: the unchanged samplers on the MNIST UNet, judged by the exact class tilt.

For a digit c and λ: the base model's class rates π (measured with the classifier, with their
standard errors), then best-of-N, CoDe and SMC with the indicator reward 1[classifier(x) = c]
and DPS with the differentiable log p(c | x); each method's class-c fraction is set against the
exact tilted fraction P*(c) = π_c e^λ / (π_c e^λ + 1 − π_c) (and, for softmax best-of-N, its
exact finite-N expectation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from ..backends import load_trained_backend
from ..core.methods import GuidanceInputs, get_method
from ..core.sampler import sample_blockwise
from ..core.values import LookaheadValue
from ..experiments.plots import save
from ..utils.checks import check_choice
from .eval import bon_fraction, class_rates, tilted_fraction
from .models import UNET_PATH, ClassIndicator, ClassLogProb, load_classifier

__all__ = ["MnistDemoConfig", "run_mnist_demo", "image_grid"]


@dataclass
class MnistDemoConfig:
    digit: int = 3  # the class the reward asks for
    lam: float = 2.0  # tilt strength λ
    n: int = 64  # images per method
    n_base: int = 512  # base images to measure π
    steps: int = 50  # T (strided DDPM)
    num_candidates: int = 8  # N for best-of-N and CoDe
    block_size: int = 5  # B for CoDe
    particles: int = 16  # K for SMC
    value: str = "tweedie"  # block-end value of the selecting methods: tweedie | lookahead
    value_samples: int = 4  # look-ahead M (rollouts per candidate)
    lookahead_steps: int = 4  # look-ahead k (coarse UNet steps per rollout)
    seed: int = 0
    out_dir: str = "figures"
    progress: bool = True


def image_grid(ax, images: torch.Tensor, title: str, cols: int = 8):
    """Images in [−1, 1] (n, 1, 28, 28) as one grey grid on ``ax``."""
    cols = min(cols, len(images))
    imgs = ((images[: cols * (len(images) // cols or 1)].clamp(-1, 1) + 1) / 2)[:, 0]
    rows = max(1, len(imgs) // cols)
    grid = (
        imgs[: rows * cols]
        .reshape(rows, cols, 28, 28)
        .permute(0, 2, 1, 3)
        .reshape(rows * 28, cols * 28)
    )
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _sample_methods(config: MnistDemoConfig, backend, *, indicator, logprob, gen) -> dict:
    """Every method's run at the demo's N and B (each method reads the knobs it uses)."""
    # (label, method, options): DPS ascends log p(c | x), the others score the indicator
    runs = [
        ("best-of-N (softmax)", "bon", {"selection": "softmax"}),
        ("CoDe (softmax)", "code", {"selection": "softmax"}),
        ("CoDe (argmax)", "code", {}),
        ("SMC", "smc", {"particles": config.particles, "block_size": 1}),
        ("DPS (log p(c|x))", "dps", {}),
    ]
    guidance = GuidanceInputs(logprob, scale=config.lam)
    # MNIST has no exact posterior or learned value: the model's own rollouts are what exists
    check_choice("value", config.value, ("tweedie", "lookahead"))
    value = (
        "tweedie"
        if config.value == "tweedie"
        else LookaheadValue(indicator, config.lam, config.value_samples, config.lookahead_steps)
    )
    knobs = {"num_candidates": config.num_candidates, "block_size": config.block_size}
    results = {}
    for k, (label, name, options) in enumerate(
        tqdm(runs, desc="mnist", disable=not config.progress)
    ):
        method = get_method(name)
        settings = method.sampler_settings(config.steps, **{**knobs, **options})
        backend_k = method.wrap(backend, guidance)
        results[label] = sample_blockwise(
            backend_k,
            indicator,
            config.n,
            lam=config.lam,
            value=value,
            generator=gen(k + 1),
            **settings,
        )
    return results


def _fraction_row(label: str, res) -> dict:
    frac = float(res.rewards.mean())
    return {
        "method": label,
        "fraction": frac,
        "se": math.sqrt(max(frac * (1 - frac), 1e-12) / res.n),
        "nfe": res.nfe / res.n,
        "reward_grads": res.reward_grads / res.n,
    }


def run_mnist_demo(config: MnistDemoConfig | None = None) -> dict:
    """Sample every method, measure class-c fractions, write figures/mnist_*.png."""
    config = MnistDemoConfig() if config is None else config
    c, lam = config.digit, config.lam
    classifier = load_classifier()
    backend = load_trained_backend(UNET_PATH, steps=config.steps)
    indicator = ClassIndicator(c, classifier)
    gen = lambda k: torch.Generator().manual_seed(config.seed + k)  # noqa: E731

    base = sample_blockwise(
        backend, indicator, config.n_base, generator=gen(0), progress=config.progress
    )
    rates, se = class_rates(classifier, base.samples)
    pi, pi_se = float(rates[c]), float(se[c])
    logprob = ClassLogProb(c, classifier)
    results = _sample_methods(config, backend, indicator=indicator, logprob=logprob, gen=gen)
    rows = [_fraction_row(label, res) for label, res in results.items()]
    exact = tilted_fraction(pi, lam)
    # the exact fraction's uncertainty comes from π's: dP*/dπ = e^λ / (π e^λ + 1 − π)²
    exact_se = pi_se * math.exp(lam) / (pi * math.exp(lam) + 1 - pi) ** 2
    finite_bon = bon_fraction(pi, lam, config.num_candidates)
    summary = {
        "pi": pi,
        "pi_se": pi_se,
        "exact": exact,
        "exact_se": exact_se,
        "bon_exact": finite_bon,
        "rows": rows,
    }
    figures = _draw(config, base, results, summary)
    return {**summary, "figures": figures, "config": config}


def _draw(config: MnistDemoConfig, base, results: dict, summary: dict) -> list[Path]:
    """mnist_base.png, mnist_methods.png and mnist_class_fraction.png in ``config.out_dir``."""
    c, lam, exact = config.digit, config.lam, summary["exact"]
    out = Path(config.out_dir)
    fig, ax = plt.subplots(figsize=(4.5, 4.8))
    image_grid(ax, base.samples[:64], f"base DDPM samples (T = {config.steps})")
    figures = [save(fig, out / "mnist_base.png")]
    fig, axes = plt.subplots(1, len(results), figsize=(3.1 * len(results), 3.6))
    for ax, (label, res) in zip(axes, results.items()):
        image_grid(ax, res.samples[:64], f"{label}\nclass {c}: {float(res.rewards.mean()):.2f}")
    fig.suptitle(
        f"reward 1[classifier(x) = {c}], λ = {lam:g}; exact tilted fraction {exact:.2f}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    figures.append(save(fig, out / "mnist_methods.png"))
    figures.append(_draw_fractions(config, summary, out / "mnist_class_fraction.png"))
    return figures


def _draw_fractions(config: MnistDemoConfig, summary: dict, path: Path) -> Path:
    """Each method's class fraction (±2 s.e.) against the exact tilt and exact best-of-N."""
    c, lam, rows = config.digit, config.lam, summary["rows"]
    exact, exact_se, finite_bon = summary["exact"], summary["exact_se"], summary["bon_exact"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    names = ["base"] + [r["method"] for r in rows]
    vals = [summary["pi"]] + [r["fraction"] for r in rows]
    errs = [summary["pi_se"]] + [r["se"] for r in rows]
    ax.bar(
        range(len(names)),
        vals,
        yerr=[2 * e for e in errs],
        capsize=3,
        color=["0.6"] + [f"C{i}" for i in range(len(rows))],
    )
    ax.axhspan(exact - 2 * exact_se, exact + 2 * exact_se, color="k", alpha=0.15)
    ax.axhline(exact, color="k", lw=1.5, label=f"exact P*({c}) = {exact:.3f} (±2 s.e. from π)")
    ax.axhline(
        finite_bon,
        color="C0",
        ls="--",
        lw=1,
        label=f"best-of-{config.num_candidates} softmax, exact: {finite_bon:.3f}",
    )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"fraction classified as {c} (±2 s.e.)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"MNIST, λ = {lam:g}: class-{c} fraction against the exact tilt", fontsize=10)
    fig.tight_layout()
    return save(fig, path)
