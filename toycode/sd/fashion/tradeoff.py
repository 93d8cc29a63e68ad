"""Reward against prompt fidelity on the Fashion-MNIST pipeline: an ``sd-sweep`` whose reward
competes with the prompt.

    python -m toycode.sd.fashion tradeoff [--reward jpeg|confusable] [--out DIR] [--seeds 4]

The ten class prompts ("a photo of a sneaker", ...) × seeds, one image a row, on ``tiny:fashion``
(DDIM η = 1, guidance 7.5): base, best-of-N, CoDe (blocks of B), SVDD and SMC (K particles, the
same UNet calls as N candidates, resampling every B steps at ``smc_lam``) at each N of
``budgets``, and DPS at each guidance scale of ``scales`` where the reward is differentiable.
Two rewards (:data:`REWARDS`):

- ``jpeg``: JPEG compressibility (−kB at quality 95: a plainer garment compresses better);
- ``confusable``: log p(c′ | x) under the committed classifier, c′ the class it most confuses
  with the prompted class c on the test split (:func:`confusable_partners`: a shirt for a
  T-shirt, a coat for a pullover, ...). It pulls against the prompt by construction: the more
  reward, the more the garment looks like c′. SMC at λ = 1 targets p(x | prompt)·p(c′ | x).

Prompt fidelity is the classifier's verdict, 1[label = prompted class]. The rows go to
``OUT/results.jsonl`` through :func:`toycode.sd.sweep.run_sd_sweep` (resumable; the PNGs under
``OUT/images/``, ignored by git) and the figure shows reward and fidelity against UNet calls and
against each other, mean ± standard error over the rows of a setting.

Cost per image (T steps): base T; best-of-N, CoDe and SVDD 1 + (T − 1)·N; SMC K·T; DPS T forward
calls, each with one backward pass through UNet, decoder and classifier (:func:`expected_nfe`
counts forward calls; the rows' ``wall_s`` shows the backward's price).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

__all__ = [
    "METHODS",
    "REWARDS",
    "confusable_partners",
    "expected_nfe",
    "method_grids",
    "run_fashion_tradeoff",
    "summarize",
    "format_summary",
    "plot_fashion_tradeoff",
]

METHODS = ("bon", "code", "svdd", "smc", "dps")
"""The reward-guided methods of the study (the base sampler is every curve's first point); DPS
only for a differentiable reward."""

REWARDS = {"jpeg": "JPEG compressibility (−kB)", "confusable": "log p(confusable class | x)"}
"""The study's rewards and their axis labels."""

DEFAULT_LAM = {"jpeg": 50.0, "confusable": 1.0}
"""SMC's λ per reward: JPEG sizes differ by hundredths of a kB; λ = 1 on a log-probability is
the product p(x | prompt)·p(c′ | x)."""

LABELS = {
    "base": "base",
    "bon": "best-of-N",
    "code": "CoDe",
    "svdd": "SVDD",
    "smc": "SMC",
    "dps": "DPS",
}


def confusable_partners(classifier=None, data_dir=None) -> dict[int, int]:
    """Each class c → the other class with the largest mean classifier probability on the
    test images of class c (the committed classifier on the Fashion-MNIST test split)."""
    import torch

    from .data import load_fashion
    from .train import load_fashion_classifier

    classifier = classifier or load_fashion_classifier()
    x, y = load_fashion("test", data_dir)
    with torch.no_grad():
        p = torch.cat([classifier(c).softmax(1) for c in x.split(1000)])
    partners = {}
    for c in range(p.shape[1]):
        confusion = p[y == c].mean(0)
        confusion[c] = -1.0
        partners[c] = int(confusion.argmax())
    return partners


def expected_nfe(method: str, settings: dict, steps: int) -> int:
    """UNet calls per image: base and DPS T; best-of-N, CoDe, SVDD 1 + (T − 1)·N; SMC K·T."""
    if method in ("base", "dps"):
        return steps
    if method == "smc":
        return settings["K"] * steps
    return 1 + (steps - 1) * settings["N"]


def method_grids(budgets=(4, 8), block: int = 5, smc_lam: float = 50.0, scales=(1.0, 4.0)):
    """Each method's sd-sweep grid: N (K for SMC) over ``budgets``, CoDe's and SMC's B, DPS's
    guidance scales."""
    budgets = [int(n) for n in budgets]
    if not budgets or min(budgets) < 2:
        raise ValueError(f"budgets must be integers ≥ 2 (N = 1 is the base), got {budgets}")
    scales = [float(s) for s in scales]
    if not scales or min(scales) <= 0:
        raise ValueError(f"DPS scales must be > 0, got {scales}")
    return {
        "base": {},
        "bon": {"N": budgets},
        "code": {"N": budgets, "B": [block]},
        "svdd": {"N": budgets},
        "smc": {"K": budgets, "B": [block], "lam": [smc_lam]},
        "dps": {"scale": scales},
    }


def _rewards(reward: str, prompts: list[str], label: dict, judge) -> tuple:
    """``reward_for`` of the sweep and what ``sweep.json`` records about the reward."""
    from ..run import make_image_reward
    from .data import CLASSES
    from .rewards import FashionClassLogProb

    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    if reward == "jpeg":
        return (lambda p: make_image_reward("jpeg")), {"reward": "jpeg"}
    partners = confusable_partners(judge)
    named = {CLASSES[label[p]]: CLASSES[partners[label[p]]] for p in prompts}
    return (
        lambda p: FashionClassLogProb(partners[label[p]], judge),
        {"reward": "confusable-logprob", "partners": named},
    )


def run_fashion_tradeoff(
    out: str | Path = "figures/fashion-sweep",
    *,
    reward: str = "jpeg",
    seeds: int = 4,
    steps: int = 20,
    budgets=(4, 8),
    block: int = 5,
    smc_lam: float | None = None,
    scales=(1.0, 4.0),
    classes=range(10),
    methods=None,
    guidance_scale: float = 7.5,
    figure: str | Path | None = "figures/fashion_tradeoff.png",
    pipe=None,
    progress: bool = True,
) -> list[dict]:
    """Run (or resume) the study into ``out`` and draw ``figure``; return the rows.

    ``methods`` defaults to every method of :data:`METHODS` the reward allows (DPS only for
    ``confusable``), ``smc_lam`` to :data:`DEFAULT_LAM`'s. One
    :func:`~toycode.sd.sweep.run_sd_sweep` per method on one folder (the fixed settings are
    shared, so ``out/sweep.json`` refuses a rerun that changes them); every row gets the
    classifier's fidelity and the cost :func:`expected_nfe` predicts is checked against it.
    """
    from ..backend import load_pipeline
    from ..sweep import run_sd_sweep
    from .prompts import class_prompt
    from .rewards import FashionClassIndicator
    from .train import load_fashion_classifier

    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    allowed = METHODS if reward == "confusable" else METHODS[:-1]
    methods = allowed if methods is None else tuple(methods)
    unknown = [m for m in methods if m not in allowed]
    if unknown:
        raise ValueError(
            f"methods for reward {reward!r} must be among {', '.join(allowed)}, got {unknown}"
        )
    lam = DEFAULT_LAM[reward] if smc_lam is None else smc_lam
    grids = method_grids(budgets, block, lam, scales)
    classes = list(classes)
    prompts = [class_prompt(c) for c in classes]
    judge = load_fashion_classifier()
    label = dict(zip(prompts, classes))
    reward_for, described = _rewards(reward, prompts, label, judge)
    pipe = pipe if pipe is not None else load_pipeline("tiny:fashion", device="cpu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text("images/\n")
    rows = []
    for method in ("base", *methods):
        rows = run_sd_sweep(
            pipe,
            prompts,
            reward_for,
            [method],
            grids[method],
            seeds=seeds,
            steps=steps,
            out=out,
            eta=1.0,
            guidance_scale=guidance_scale,
            fidelity_for=lambda p: FashionClassIndicator(label[p], judge),
            describe={"model": "tiny:fashion", **described, "fidelity": "classifier"},
            progress=progress,
        )
    # this study's rows only: a folder run with more seeds or classes before keeps its rows
    rows = [r for r in rows if r["seed"] < seeds and r["prompt"] in label and _in(r, grids)]
    for r in rows:
        want = expected_nfe(r["method"], r["settings"], r["steps"])
        if r["nfe"] != want:
            raise RuntimeError(f"{r['method']} {r['settings']}: {r['nfe']} UNet calls, not {want}")
    if figure is not None:
        plot_fashion_tradeoff(rows, figure, reward=reward)
    return rows


def _in(row: dict, grids: dict) -> bool:
    """Whether a row's method and settings are on this study's grids."""
    grid = grids.get(row["method"])
    return grid is not None and all(v in grid.get(k, ()) for k, v in row["settings"].items())


def _mean_se(values) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def summarize(rows: list[dict]) -> dict[str, list[dict]]:
    """Per method, its settings by UNet calls: n, NFE, reward and fidelity (mean, s.e.); the
    base's point opens every method's list."""
    groups = defaultdict(list)
    for r in rows:  # DPS's scales share one NFE: a setting is its knobs, not its cost
        groups[r["method"], r["nfe"], json.dumps(r["settings"], sort_keys=True)].append(r)
    points = defaultdict(list)
    # by cost, then by the knobs' values as numbers (scale 2 before 16)
    order = sorted(groups, key=lambda k: (k[1], sorted(json.loads(k[2]).items())))
    for (method, nfe, _), rs in ((k, groups[k]) for k in order):
        reward = _mean_se([r["reward"] for r in rs])
        fidelity = _mean_se([float(r["fidelity"]) for r in rs])
        points[method].append(
            {
                "nfe": nfe,
                "n": len(rs),
                "settings": rs[0]["settings"],
                "reward": reward,
                "fidelity": fidelity,
            }
        )
    base = points.pop("base", [])
    return {m: base + pts for m, pts in points.items()} or {"base": base}


def format_summary(rows: list[dict]) -> str:
    """The summary as a text table: method, settings, NFE, n, reward ± s.e., fidelity ± s.e.,
    and the reward gain over the base paired by (prompt, seed) (the same noise), ± s.e."""
    base = {(r["prompt"], r["seed"]): r["reward"] for r in rows if r["method"] == "base"}
    head = f"{'method':<10} {'settings':<18} {'NFE':>5} {'n':>4} {'reward':>17}"
    lines = [head + f" {'fidelity':>15} {'gain over base':>18}"]
    seen_base = False
    for curve, pts in summarize(rows).items():
        for p in pts:
            method = curve if p["settings"] else "base"  # the base opens every curve
            if method == "base":
                if seen_base:
                    continue
                seen_base = True
            gain = _mean_se(
                [
                    r["reward"] - base[r["prompt"], r["seed"]]
                    for r in rows
                    if r["method"] == method
                    and r["settings"] == p["settings"]
                    and (r["prompt"], r["seed"]) in base
                ]
                or [math.nan]
            )
            knobs = ", ".join(f"{k}={v:g}" for k, v in sorted(p["settings"].items())) or "—"
            (rm, rs), (fm, fs) = p["reward"], p["fidelity"]
            lines.append(
                f"{LABELS.get(method, method):<10} {knobs:<18} {p['nfe']:>5} {p['n']:>4} "
                f"{rm:>9.4f} ± {rs:.4f} {fm:>7.3f} ± {fs:.3f} {gain[0]:>+9.4f} ± {gain[1]:.4f}"
            )
    return "\n".join(lines)


def plot_fashion_tradeoff(rows: list[dict], path: str | Path, *, reward: str = "jpeg") -> Path:
    """Three panels, mean ± s.e.: reward vs UNet calls, fidelity vs UNet calls, reward vs
    fidelity (each method's base point included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    marks = dict(zip(LABELS, "osD^vP"))
    for i, (method, pts) in enumerate(summarize(rows).items()):
        nfe = [p["nfe"] * 1.03**i for p in pts]  # nudged apart so overlapping bars show
        rm, rs = zip(*[p["reward"] for p in pts])
        fm, fs = zip(*[p["fidelity"] for p in pts])
        style = {"marker": marks.get(method, "o"), "capsize": 3, "alpha": 0.85}
        style.update(label=LABELS.get(method, method), linestyle=("-", "--", "-.", ":")[i % 4])
        axes[0].errorbar(nfe, rm, yerr=rs, **style)
        axes[1].errorbar(nfe, fm, yerr=fs, **style)
        axes[2].errorbar(fm, rm, xerr=fs, yerr=rs, **style)
    n = max((p["n"] for pts in summarize(rows).values() for p in pts), default=0)
    nfes = [p["nfe"] for pts in summarize(rows).values() for p in pts] or [1]
    ticks = [min(nfes) * 2**k for k in range(math.ceil(math.log2(max(nfes) / min(nfes))) + 1)]
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("UNet calls per image (NFE)")
    axes[0].set_ylabel(REWARDS[reward])
    axes[0].set_title("reward vs compute")
    axes[1].set_ylabel("prompt fidelity (classifier = prompted class)")
    axes[1].set_title("prompt fidelity vs compute")
    axes[2].set_xlabel("prompt fidelity")
    axes[2].set_ylabel(REWARDS[reward])
    axes[2].set_title("the trade-off")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower center")
    fig.suptitle(
        f"tiny:fashion, ten class prompts, {n} images per setting, DDIM η = 1, CFG 7.5: mean ± s.e."
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
