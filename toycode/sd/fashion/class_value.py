"""A learned class value for the Fashion pipeline's latents (:mod:`toycode.training.class_value`).

``python -m toycode.sd.fashion class-value`` draws base latents of ``tiny:fashion`` on the generic
prompt (DDIM η = 1, T = 10, no CFG: the class-tilt tests' settings), labels them by the reward
classifier on their VAE decodes and fits the noisy classifier q_θ on forward-noised copies at the
scheduler's own training levels (its "scaled_linear" ᾱ, the very table the backend's grid indexes;
no reverse rollouts). ``python -m toycode.sd.fashion class-value-check`` prints the class tilt's
shares with the learned value and with Tweedie's r(decode(x̂0)) against the exact P*(c), and q_θ's
held-out log-loss per grid level against the class-prior predictor.

No hint by default: the classifier reads pixels, so a hint costs one VAE decode of x_t/α per
candidate (about 0.8 of a UNet call here on CPU, and counted in no ledger, which counts UNet
calls only). ``--hint decode`` trains with it; measured on 2048 held-out latents at 600 steps of
128 it helped only at the last three of the ten levels (log-loss 0.41 / 0.30 / 0.19 vs 0.46 /
0.43 / 0.44 at α = 0.87 / 0.95 / 0.999, equal within 1–2 s.e. elsewhere) at ~15× the training
time, and the hint-free fit at 3000 steps of 256 (~1 CPU-min) reaches 0.38 / 0.33 / 0.32 there
(docs/results.md). Without the hint the value reads neither the UNet
nor the VAE: a small CNN on the 4×8×8 latent, counted nowhere in NFE.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from ...core.sampler import sample_blockwise
from ...training.class_value import ClassValue, load_class_value, train_class_value
from ...utils.checks import check_choice, check_range
from . import PIPELINE_DIR
from .prompts import GENERIC_PROMPT
from .rewards import FashionClassIndicator, to_classifier_input

__all__ = [
    "CLASS_VALUE_PATH",
    "STEPS",
    "HINTS",
    "fashion_backend",
    "base_latents",
    "decode_hint",
    "train_fashion_class_value",
    "load_fashion_class_value",
    "heldout_logloss",
    "tilt_shares",
    "run_check",
    "format_check",
]

CLASS_VALUE_PATH = PIPELINE_DIR.parent / "class_value_fashion.pt"
"""The committed learned class value of ``tiny:fashion``."""
STEPS = 10
"""The grid the value is checked on (tests/test_fashion.py's T)."""
HINTS = ("none", "decode")
"""none: q_θ sees the latent only; decode: also the classifier's log-probs of decode(x_t/α)."""


def fashion_backend(pipe, steps: int = STEPS):
    """The generic prompt at DDIM η = 1, no CFG: the settings of the class-tilt tests."""
    from .. import make_sd_backend

    return make_sd_backend(
        pipe, GENERIC_PROMPT, steps=steps, eta=1.0, guidance_scale=1.0, max_batch=1024
    )


class _Latents:
    """The backend with decode = identity, so a run returns its clean latents."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode(self, x0):
        return x0


def _zero(x):
    return torch.zeros(len(x), dtype=torch.float64)


def _labels(backend, classifier, latents: torch.Tensor) -> torch.Tensor:
    """The classifier's label of each latent's VAE decode (the reward's own reading)."""
    with torch.no_grad():
        return torch.cat(
            [
                classifier(to_classifier_input(backend.decode(c))).argmax(1)
                for c in latents.split(1024)
            ]
        )


def base_latents(
    backend, classifier, n: int, *, seed: int, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """n clean base latents (N = 1 on the backend's grid, seed ``seed``) and their labels."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        run = sample_blockwise(_Latents(backend), _zero, n, generator=gen, progress=progress)
    x0 = run.samples.float()
    return x0, _labels(backend, classifier, x0)


def decode_hint(backend, classifier):
    """hint_fn(x_t, α) = log softmax classifier(decode(x_t/α)): one VAE decode per state."""

    def hint(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        scaled = x.float() / alpha.float().clamp_min(1e-3)[:, None, None, None]
        with torch.no_grad():
            return torch.log_softmax(classifier(to_classifier_input(backend.decode(scaled))), 1)

    return hint


def _train_alphas_cumprod(pipe) -> torch.Tensor:
    """ᾱ of every training step from a fresh scheduler, as :func:`toycode.sd.backend.sd_process`
    reads it (float64 of diffusers' float32 table), so train- and sample-time levels agree."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(pipe.scheduler.config).alphas_cumprod.double()


def train_fashion_class_value(
    out: str | Path = CLASS_VALUE_PATH,
    *,
    n: int = 4096,
    steps: int = 3000,
    hint: str = "none",
    seed: int = 0,
    command: str | None = None,
    progress: bool = True,
) -> dict:
    """Draw n base latents (seed ``seed``), label them, fit q_θ (``hint``: one of HINTS); writes
    ``out`` with ``command``, the line that reproduces it."""
    from ...sd.backend import load_pipeline
    from .train import load_fashion_classifier

    check_choice("hint", hint, HINTS)
    check_range("n", n, 2, None)
    check_range("steps", steps, 1, None)
    start = time.perf_counter()
    pipe, classifier = load_pipeline("tiny:fashion", device="cpu"), load_fashion_classifier()
    backend = fashion_backend(pipe)
    x0, labels = base_latents(backend, classifier, n, seed=seed, progress=progress)
    sampled = time.perf_counter() - start
    meta = {
        "data": f"tiny:fashion base latents, generic prompt, DDIM η = 1, T = {STEPS}, "
        f"no CFG, seed {seed}",
        "hint_kind": hint,
        "command": command or "",
    }
    ckpt = train_class_value(
        x0,
        labels,
        out,
        hint_fn=decode_hint(backend, classifier) if hint == "decode" else None,
        alphas_cumprod=_train_alphas_cumprod(pipe),
        steps=steps,
        batch_size=256,
        seed=seed,
        meta=meta,
        progress=progress,
    )
    ckpt["seconds"] = {"sampling": sampled, "total": time.perf_counter() - start}
    return ckpt


def load_fashion_class_value(
    c: int, lam: float, path=CLASS_VALUE_PATH, *, backend=None, classifier=None
) -> ClassValue:
    """The learned value of class ``c`` at ``lam`` (``backend``, ``classifier``: for a
    checkpoint trained with the decode hint)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hint_fn = None
    if isinstance(ckpt, dict) and ckpt.get("hint_kind") == "decode":
        if backend is None or classifier is None:
            raise ValueError(
                f"{path} was trained with the decode hint: pass backend and classifier"
            )
        hint_fn = decode_hint(backend, classifier)
    return load_class_value(path, c, lam, hint_fn=hint_fn)


def _mean_se(loss: torch.Tensor) -> tuple[float, float]:
    return float(loss.mean()), float(loss.std() / math.sqrt(len(loss)))


def heldout_logloss(value: ClassValue, backend, x0, labels, prior, *, seed: int = 1) -> list:
    """Per grid index i < T: q_θ's 10-way log-loss on (x0 noised to level i, label) pairs vs the
    constant class-prior predictor ``prior`` (the training labels' shares), and the paired gap
    (prior − learned), each mean ± s.e.; pairs independent of the training draws."""
    gen = torch.Generator().manual_seed(seed)
    log_prior = torch.as_tensor(prior, dtype=torch.float64).clamp_min(1e-12).log()
    rows = []
    for i in range(backend.process.num_steps):
        lv = backend.process.level(i)
        xt = backend.process.noise_to(x0, i, gen)
        q = value.probs_at(xt, lv.alpha, lv.sigma).clamp_min(1e-12)
        learned = -q.log().gather(1, labels[:, None])[:, 0]
        const = -log_prior[labels]
        rows.append(
            {
                "i": i,
                "alpha": lv.alpha,
                "learned": _mean_se(learned),
                "prior": _mean_se(const),
                "gap": _mean_se(const - learned),
            }
        )
    return rows


def _exact(pi: float, lam: float) -> float:
    """P*(c) = π e^λ / (π e^λ + 1 − π) (design note §4)."""
    return pi * math.exp(lam) / (pi * math.exp(lam) + 1 - pi)


def _share(res, kind: str, groups: int) -> tuple[float, float]:
    """The class-c share ± s.e. over independent units: starts (CoDe) or populations (SMC)."""
    r = res.rewards.double()
    if kind == "smc":
        per = r.view(groups, -1).mean(1)
        return float(per.mean()), float(per.std()) / math.sqrt(groups)
    f = float(r.mean())
    return f, math.sqrt(max(f * (1 - f), 1.0 / len(r)) / len(r))


def _runs(steps: int, *, n: int, candidates: int, block: int, particles: int, pops: int) -> list:
    """(label, value, sampler options): CoDe-softmax with one block (B = T: the value is never
    read, one block ends at the clean end), with blocks of ``block`` at matched UNet calls (the
    learned value skips the denoiser at discarded children: (T − n_b)·N + n_b calls per start,
    Tweedie 1 + (T − 1)·N, so the learned run gets the largest N within Tweedie's calls), and
    SMC, whose calls do not depend on the value."""
    n_b = steps // block
    tweedie_calls = 1 + (steps - 1) * candidates
    matched = max(candidates, (tweedie_calls - n_b) // max(steps - n_b, 1))
    code = {"selection": "softmax", "n": n}
    smc = {"selection": "systematic", "n": particles * pops, "particles": particles}
    return [
        (f"CoDe N={candidates} B={steps}", "tweedie", {**code, "num_candidates": candidates,
                                                        "block_size": steps}),
        (f"CoDe N={candidates} B={steps}", "learned", {**code, "num_candidates": candidates,
                                                        "block_size": steps}),
        (f"CoDe N={candidates} B={block}", "tweedie", {**code, "num_candidates": candidates,
                                                        "block_size": block}),
        (f"CoDe N={matched} B={block}", "learned", {**code, "num_candidates": matched,
                                                     "block_size": block}),
        (f"SMC K={particles} B={block}", "tweedie", {**smc, "block_size": block}),
        (f"SMC K={particles} B={block}", "learned", {**smc, "block_size": block}),
    ]  # fmt: skip


def tilt_shares(
    backend,
    classifier,
    value: ClassValue,
    pi: tuple[float, float],
    *,
    n: int = 256,
    candidates: int = 4,
    block: int = 2,
    particles: int = 32,
    pops: int = 12,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """The class-c share of each run of :func:`_runs` against P*(c) = tilted(π, λ): share ± s.e.
    (starts or populations), UNet calls per sample, VAE decodes per sample, and |share − P*| over
    the combined s.e. (π's propagated through P*'s slope). ``pi``: π_c ± s.e. from base draws."""
    from tqdm.auto import tqdm

    c, lam, steps = value.digit, value.lam, backend.process.num_steps
    check_range("n", n, 2, None)
    check_range("block", block, 1, steps)
    if steps % block:
        raise ValueError(f"block must divide T = {steps}, got {block}")
    want = _exact(pi[0], lam)
    slope = (_exact(pi[0] + 1e-4, lam) - _exact(pi[0] - 1e-4, lam)) / 2e-4
    reward = FashionClassIndicator(c, classifier)
    rows = []
    runs = _runs(steps, n=n, candidates=candidates, block=block, particles=particles, pops=pops)
    for k, (label, vname, options) in enumerate(tqdm(runs, disable=not progress, desc="runs")):
        options = dict(options)
        m = options.pop("n")
        decodes = []
        counted = _CountDecodes(backend, decodes)
        res = sample_blockwise(
            counted,
            reward,
            m,
            lam=lam,
            value=value if vname == "learned" else "tweedie",
            generator=torch.Generator().manual_seed(seed + k // 2),
            **options,
        )
        share, se = _share(res, "smc" if "particles" in options else "code", pops)
        sigma = math.hypot(se, slope * pi[1])
        rows.append(
            {
                "run": label,
                "value": vname,
                "share": share,
                "se": se,
                "nfe": float(res.nfe) / m,
                "decodes": sum(decodes) / m,
                "distance": abs(share - want) / sigma,
            }
        )
    return {"exact": want, "exact_se": abs(slope) * pi[1], "pi": pi, "rows": rows}


class _CountDecodes(_Latents):
    """The backend, counting the rows it VAE-decodes (the ledger counts UNet calls only)."""

    def __init__(self, inner, counts: list):
        super().__init__(inner)
        self.counts = counts

    def decode(self, x0):
        self.counts.append(len(x0))
        return self.inner.decode(x0)


def _fashion_checkpoint(path) -> dict:
    """A class-value checkpoint for this pipeline's latents, or a one-line error before any
    model loads (a file that is no checkpoint, or one fitted on other states: MNIST's)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many kinds for a file that is not a checkpoint
        raise ValueError(f"{path} is not a toycode class-value checkpoint (unreadable)") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "class-value":
        raise ValueError(f"{path} is not a toycode class-value checkpoint")
    channels, size = (ckpt["config"].get("channels", 1), ckpt["config"].get("size", 28))
    if (channels, size) != (4, 8):
        raise ValueError(
            f"{path} was fitted on {channels}×{size}×{size} states, not on tiny:fashion's "
            "4×8×8 latents"
        )
    if ckpt.get("hint") and ckpt.get("hint_kind") != "decode":
        raise ValueError(f"{path} needs a pixel-space classifier hint this pipeline lacks")
    return ckpt


def run_check(
    path=CLASS_VALUE_PATH,
    *,
    c: int = 8,
    lam: float = 1.5,
    n: int = 256,
    n_base: int = 2048,
    candidates: int = 4,
    block: int = 2,
    particles: int = 32,
    pops: int = 12,
    seed: int = 0,
) -> dict:
    """:func:`heldout_logloss` and :func:`tilt_shares` on ``n_base`` fresh base latents (seed
    12345 + ``seed``, none of the training draws), which also give π_c ± its binomial s.e."""
    from ...sd.backend import load_pipeline
    from .train import load_fashion_classifier

    for name, v, low in (
        ("n", n, 2),
        ("n_base", n_base, 2),
        ("candidates", candidates, 1),
        ("particles", particles, 1),
        ("pops", pops, 2),
    ):
        check_range(name, v, low, None)  # fmt: skip
    check_range("block", block, 1, STEPS)
    if STEPS % block:
        raise ValueError(f"block must divide T = {STEPS}, got {block}")
    check_range("class", c, 0, 9)
    check_range("lam", lam, 0.0, None, low_open=True)
    ckpt = _fashion_checkpoint(path)
    pipe, classifier = load_pipeline("tiny:fashion", device="cpu"), load_fashion_classifier()
    backend = fashion_backend(pipe)
    value = load_fashion_class_value(c, lam, path, backend=backend, classifier=classifier)
    x0, labels = base_latents(backend, classifier, n_base, seed=12345 + seed, progress=True)
    pi = float((labels == c).double().mean())
    pi_se = math.sqrt(pi * (1 - pi) / n_base)
    counts = torch.as_tensor(ckpt["class_counts"], dtype=torch.float64)
    losses = heldout_logloss(value, backend, x0, labels, counts / counts.sum(), seed=seed + 1)
    shares = tilt_shares(backend, classifier, value, (pi, pi_se), n=n, candidates=candidates,
                         block=block, particles=particles, pops=pops, seed=seed)  # fmt: skip
    return {"c": c, "lam": lam, "n_base": n_base, "losses": losses, **shares}


def format_check(res: dict) -> str:
    """:func:`run_check`'s two tables as text."""
    pi, pi_se = res["pi"]
    lines = [
        f"class {res['c']}, λ = {res['lam']}, T = {STEPS}: π = {pi:.4f} ± {pi_se:.4f} "
        f"({res['n_base']} held-out base latents), P* = {res['exact']:.4f} ± {res['exact_se']:.4f}",
        f"{'run':16s} {'value':8s} {'share':>16s} {'|s − P*|/s.e.':>14s} "
        f"{'UNet/sample':>12s} {'VAE/sample':>11s}",
    ]
    for r in res["rows"]:
        lines.append(
            f"{r['run']:16s} {r['value']:8s} {r['share']:8.4f} ± {r['se']:.4f} "
            f"{r['distance']:14.2f} {r['nfe']:12.1f} {r['decodes']:11.1f}"
        )
    lines.append(
        "held-out 10-way log-loss per grid index (q_θ vs the class prior; gap = prior − q_θ)"
    )
    for r in res["losses"]:
        (lm, ls), (pm, ps), (gm, gs) = r["learned"], r["prior"], r["gap"]
        lines.append(
            f"  i = {r['i']}  α = {r['alpha']:.3f}  q_θ {lm:.3f} ± {ls:.3f}  "
            f"prior {pm:.3f} ± {ps:.3f}  gap {gm:.3f} ± {gs:.3f}"
        )
    return "\n".join(lines)
