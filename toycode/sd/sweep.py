"""`toycode sd-sweep`: methods × settings × prompts × seeds on a Stable Diffusion pipeline, as one
tidy, resumable table and one PNG per row.

    toycode sd-sweep --model tiny:sd --prompts animals --reward jpeg \\
        --methods base bon code smc --grid "N=1,4,8;B=5;K=4" --seeds 2 --steps 50 --out DIR
    accelerate launch --num_processes 4 -m toycode sd-sweep ...      (one GPU per process)

A row is one (prompt, method, settings, seed): the reward of the image, its prompt fidelity (the
CLIP text–image cosine, when a fidelity CLIP is given), the UNet calls (NFE) and reward calls
spent on it (for SMC, all K particles'), wall seconds, the device and the PNG's path under DIR.
``settings`` holds the grid knobs the method reads (as in :mod:`toycode.experiments.tradeoff`,
whose grid
parser, expansion and strict-JSON rows are reused); the resolved sampler settings are columns.
A knob a method reads but the grid leaves out takes :data:`DEFAULTS`.

Seeds. Each row draws from its own CPU ``torch.Generator`` seeded by :func:`row_seed`, a
SHA-256 of (prompt, seed): not Python's salted ``hash``, so a row recomputes alone, in any
process, with :func:`sweep_row`; and every method sees the same noise for a (prompt, seed).
An SMC row runs one population of K particles and keeps one drawn uniformly (with that generator)
after the final resampling: each particle is an equally weighted draw.

Resuming. Rows are appended to ``DIR/results.jsonl`` one at a time (flushed and fsynced) after
their PNG is written, so a killed sweep loses at most the rows in flight; a rerun skips the rows
already there (a torn last line is cut off first). ``DIR/sweep.json`` records what is held fixed
(model, reward, steps, η, CFG, score decoder, ...): a rerun that differs is refused, so one
folder never mixes two configurations.

Many processes, one table. Under ``accelerate launch`` each process takes its share of the
rows — every P-th of the full, fixed job list, P = ``PartialState().num_processes`` — on its own
device (its index is the row's ``rank``), and all processes append to the same
``results.jsonl`` through :class:`toycode.experiments.results.ResultsTable`: a row is leased
before it is computed, so independent ``toycode sd-sweep`` processes on one folder never compute
a row twice either. Rows do not depend on which process ran them, so the union equals a
one-process run's, and a sweep killed under P processes resumes under any other P.
On CPUs, ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...`` starts the
processes (torchrun, gloo); ``accelerate launch --cpu`` starts only one unless MPI is set up.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from importlib import resources
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..core.methods import GuidanceInputs, get_method
from ..experiments.results import ResultsTable
from ..experiments.shards import Shard, process_shard
from ..experiments.tradeoff import expand, read_results
from ..utils.checks import check_range
from .backend import make_sd_backend
from .rewards import ClipTextScore
from .run import SD_GRADIENT_METHODS, SD_METHODS, save_png
from .score_decoder import ScoreDecoderValue

__all__ = [
    "PROMPT_SETS",
    "SD_KNOBS",
    "DEFAULTS",
    "Shard",
    "load_prompts",
    "sweep_jobs",
    "row_seed",
    "row_key",
    "sweep_row",
    "process_shard",
    "run_sd_sweep",
]

PROMPT_SETS = ("animals",)
"""Prompt sets shipped with toycode (``toycode/sd/prompts/NAME.txt``): "animals" is 45 common
animal names, the kind of prompt set DDPO-style aesthetic studies use (Black et al. 2023)."""

SD_KNOBS = ("N", "B", "K", "lam", "scale", "T")
"""The grid knobs an SD sweep varies (Tweedie values only: no M, k; ``scale`` is the gradient
methods' guidance scale)."""

DEFAULTS = {"N": 8, "B": 5, "K": 4, "lam": 1.0, "scale": 1.0}
"""A knob a method reads but the grid leaves out (T: ``steps``); the same as ``toycode sd``."""


def load_prompts(spec: str | Path, limit: int | None = None) -> list[str]:
    """The prompts of a shipped set (:data:`PROMPT_SETS`) or of a file with one prompt a line
    (blank lines ignored, repeats dropped), the first ``limit`` of them if given."""
    if str(spec) in PROMPT_SETS:
        text = resources.files("toycode.sd").joinpath(f"prompts/{spec}.txt").read_text()
    elif Path(spec).is_file():
        text = Path(spec).read_text()
    else:
        raise ValueError(
            f"prompts must be one of {list(PROMPT_SETS)} or a file with one prompt "
            f"a line, got {str(spec)!r}"
        )
    prompts = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if not prompts:
        raise ValueError(f"prompt file {str(spec)!r} holds no prompts")
    if limit is not None:
        check_range("limit_prompts", limit, 1, None)
    return prompts[:limit]


def sweep_jobs(
    prompts: list[str], methods, grid: dict[str, list], seeds: int, *, gradient: bool = False
) -> list[tuple[str, str, dict, int]]:
    """Every (prompt, method, settings, seed), prompt by prompt, or a one-line error for a
    method without an SD run (gradient guidance unless ``gradient``: the reward is
    differentiable), a knob an SD sweep does not vary, or a knob none of the methods reads."""
    check_range("seeds", seeds, 1, None)
    allowed = SD_METHODS + (SD_GRADIENT_METHODS if gradient else ())
    for m in methods:
        if m in SD_GRADIENT_METHODS and not gradient:
            raise ValueError(
                f"method {m!r} ascends the reward's gradient: this reward is not "
                f"differentiable (gradient-free methods: {', '.join(SD_METHODS)})"
            )
        if m not in allowed:
            raise ValueError(f"method must be one of {list(allowed)}, got {m!r}")
    for knob, values in grid.items():
        if knob not in SD_KNOBS:
            raise ValueError(f"sd-sweep grid knobs are {', '.join(SD_KNOBS)}, got {knob!r}")
        readers = [m for m in methods if knob in get_method(m).knobs]
        if not readers:
            raise ValueError(
                f"grid knob {knob!r} is read by none of the methods {', '.join(methods)}"
            )
        for v in values:
            check_range(knob, v, 0 if knob in ("lam", "scale") else 1, None)
    settings = expand(methods, grid)
    return [(p, m, s, seed) for p in prompts for m, s in settings for seed in range(seeds)]


def row_seed(prompt: str, seed: int) -> int:
    """The generator seed of every row of (prompt, seed): the first 63 bits of SHA-256."""
    digest = hashlib.sha256(json.dumps([prompt, seed]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def row_key(prompt: str, method: str, settings: dict, seed: int) -> str:
    """What identifies a row in the table (and makes a rerun skip it)."""
    return json.dumps([prompt, method, settings, seed], sort_keys=True)


def _image_path(prompt: str, method: str, settings: dict, seed: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "prompt"
    tag = hashlib.sha256(prompt.encode()).hexdigest()[:6]
    knobs = "".join(f"_{k}{v:g}" for k, v in sorted(settings.items()))
    return f"images/{slug}-{tag}/{method}{knobs}_seed{seed}.png"


def _sampler(method: str, settings: dict, steps: int, selection: str | None = None) -> dict:
    """The sample_blockwise keywords of a method at its grid settings (DEFAULTS elsewhere).
    ``selection`` is the candidate methods' (as in :func:`toycode.experiments.tradeoff.run_sweep`):
    particle
    and search methods keep their own."""
    knobs, record = {**DEFAULTS, **settings}, get_method(method)
    own = record.selection is None or record.uses_particles
    return record.sampler_settings(
        steps,
        num_candidates=knobs["N"],
        block_size=knobs["B"],
        particles=knobs["K"],
        selection=None if own else selection,
    )


def sweep_row(
    backend,
    method: str,
    settings: dict,
    seed: int,
    reward: Callable,
    *,
    selection: str | None = None,
    fidelity: Callable | None = None,
    score_decoder=None,
) -> tuple[dict, torch.Tensor]:
    """One row and its image (3, H, W) in [0, 1], from a backend made for the row's prompt and
    T; the same numbers whichever process or sweep computes it.

    ``fidelity`` scores the image (the prompt's CLIP text–image cosine); ``score_decoder`` (an
    ``AutoencoderTiny``) decodes the block-end candidates that are scored
    (:class:`~toycode.sd.score_decoder.ScoreDecoderValue`).
    """
    knobs = {**DEFAULTS, **settings}
    sampler = _sampler(method, settings, backend.process.num_steps, selection)
    n = sampler.get("particles", 1)  # SMC: one population of K particles
    value = "tweedie" if score_decoder is None else ScoreDecoderValue(reward, score_decoder)
    gen = torch.Generator(device="cpu").manual_seed(row_seed(backend.prompt, seed))
    record = get_method(method)
    guided = record.wrap(backend, GuidanceInputs(reward, float(knobs["scale"])))
    start = time.perf_counter()
    res = record.run(
        guided, reward, n, lam=float(knobs["lam"]), value=value, generator=gen, **sampler
    )
    wall = time.perf_counter() - start
    keep = int(torch.randint(n, (1,), generator=gen)) if n > 1 else 0
    image = res.samples[keep].detach().float().cpu()
    score = None
    if fidelity is not None:
        with torch.no_grad():
            score = float(fidelity(image[None])[0])
    s = res.settings
    row = {
        "prompt": backend.prompt,
        "method": method,
        "settings": settings,
        "seed": seed,
        "reward": float(res.rewards[keep]),
        "fidelity": score,
        "nfe": res.nfe,
        "reward_calls": res.reward_calls,
        "wall_s": wall,
        **{
            k: s.get(k)
            for k in ("num_candidates", "block_size", "particles", "selection", "lam", "steps")
        },
    }
    return row, image


def _checked_backends(pipe, jobs: list, *, steps: int, options: dict) -> dict:
    """One backend per grid T for the first prompt: bad backend options (T, scheduler, η, ...)
    fail here, before anything is written, as does selection on a deterministic step."""
    backends = {}
    for t in sorted({s.get("T", steps) for _, _, s, _ in jobs}):
        backends[jobs[0][0], t] = make_sd_backend(pipe, jobs[0][0], steps=t, **options)
    kws = [_sampler(m, s, steps) for _, m, s, _ in jobs]
    if (
        any(kw["num_candidates"] * kw.get("particles", 1) > 1 for kw in kws)
        and next(iter(backends.values())).process.deterministic
    ):
        raise ValueError("selection needs a stochastic step: eta must be > 0")
    return backends


def _fidelity(prompt: str, clip, fidelity_for: Callable | None):
    """A prompt's fidelity scorer: ``fidelity_for``'s, CLIP's text–image cosine, or none."""
    if fidelity_for is not None:
        return fidelity_for(prompt)
    return None if clip is None else ClipTextScore(prompt, clip)


def _jobs(prompts, reward_for, methods, grid, *, seeds):
    """(prompts without repeats, the rewards built so far, the jobs): the first prompt's reward
    is built before any row only when a gradient method needs to know it is differentiable."""
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty strings")
    prompts = list(dict.fromkeys(prompts))
    rewards = {}
    if any(m in SD_GRADIENT_METHODS for m in methods):
        rewards[prompts[0]] = reward_for(prompts[0])
    gradient = bool(getattr(rewards.get(prompts[0]), "differentiable", False))
    return prompts, rewards, sweep_jobs(prompts, methods, grid, seeds, gradient=gradient)


def run_sd_sweep(
    pipe,
    prompts: list[str],
    reward_for: Callable[[str], Callable],
    methods,
    grid: dict[str, list],
    *,
    seeds: int = 2,
    steps: int = 50,
    out: str | Path = "sd-sweep",
    eta: float = 1.0,
    guidance_scale: float = 7.5,
    scheduler: str | None = None,
    selection: str | None = None,
    max_batch: int = 8,
    fidelity=None,
    fidelity_for: Callable[[str], Callable] | None = None,
    score_decoder=None,
    describe: dict | None = None,
    shard: Shard | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run this process's rows not yet in ``out/results.jsonl``; return every row there once all
    processes are done.

    ``reward_for(prompt)`` is the reward of that prompt's images (the same callable for a
    prompt-free reward such as JPEG size); ``fidelity`` is a :class:`~toycode.sd.rewards.Clip`
    whose text–image cosine is each row's prompt fidelity, or ``fidelity_for(prompt)`` a scorer
    of its images ((n, 3, H, W) → (n,): a classifier's 1[label = prompted class]) instead;
    ``score_decoder`` an ``AutoencoderTiny`` for block-end scoring. ``describe`` (e.g. model and
    reward names) is stored with the fixed settings in ``out/sweep.json``; ``shard`` defaults to
    :func:`process_shard`'s."""
    prompts, rewards, jobs = _jobs(prompts, reward_for, methods, grid, seeds=seeds)
    scores = {}
    shard = shard or process_shard()
    config = {"steps": steps, "eta": eta, "guidance_scale": guidance_scale}
    judged = fidelity is not None or fidelity_for is not None  # CLIP's or the caller's
    config.update(scheduler=scheduler, selection=selection, fidelity=judged)
    config.update({"score_decoder": score_decoder is not None, **(describe or {})})
    model = (describe or {}).get("model") or getattr(pipe, "name_or_path", "") or "pipeline"
    options = {"eta": eta, "guidance_scale": guidance_scale, "max_batch": max_batch}
    if scheduler is not None:
        options["scheduler"] = scheduler
    backends = _checked_backends(pipe, jobs, steps=steps, options=options)
    out = Path(out)
    table = ResultsTable(
        out, key=lambda r: row_key(r["prompt"], r["method"], r["settings"], r["seed"])
    )
    table.claim(config, name="sweep.json", what="sweep")
    done = table.done()
    todo = [j for j in jobs[shard.index :: shard.count] if row_key(*j) not in done]
    where = {"device": str(getattr(pipe, "device", shard.device)), "rank": shard.index}
    claimed = table.claimed(todo, lambda j: row_key(*j))
    desc = f"sd-sweep {shard.index + 1}/{shard.count}"
    bar = tqdm(claimed, total=len(todo), desc=desc, disable=not progress, position=shard.index)
    for prompt, method, settings, seed in bar:
        t = settings.get("T", steps)
        if (prompt, t) not in backends:  # the prompt is embedded once per backend
            backends[prompt, t] = make_sd_backend(pipe, prompt, steps=t, **options)
        if prompt not in scores:
            if prompt not in rewards:
                rewards[prompt] = reward_for(prompt)
            scores[prompt] = _fidelity(prompt, fidelity, fidelity_for)
        row, image = sweep_row(
            backends[prompt, t],
            method,
            settings,
            seed,
            rewards[prompt],
            selection=selection,
            fidelity=scores[prompt],
            score_decoder=score_decoder,
        )
        row["image"] = _image_path(prompt, method, settings, seed)
        save_png(image, out / row["image"])  # the image first: a row always has its PNG
        table.append({"model": model, **row, **where})
    bar.close()
    shard.wait()
    return read_results(out)
