"""The Stable Diffusion commands: sd, sd-sweep."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..core.methods import get_method
from ..core.sampler import SELECTIONS
from ..sd.run import SD_METHODS
from ..utils.checks import (
    check_batch,
    check_choice,
    check_count,
    check_in_file,
    check_out_dir,
    check_range,
    check_seed,
    resolve_device,
)
from .common import DTYPES, MAX_STEPS, add_reward_args, reward_clip

LATENT_NUMBERS = 4 * 64 * 64
"""Numbers in one SD 1.x latent at 512 px, the smallest real pipeline's: the per-sample size of
the batch estimate (larger pipelines hold more, so the estimate is a floor)."""

DEFAULT_GRID = "N=4;B=5;K=4"
"""sd-sweep's grid when --grid is not given; a knob of it that no chosen method reads is not
applied (an explicit --grid with such a knob is refused)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _check_model(model: str) -> None:
    """--model: tiny:KIND, an existing pipeline folder, or something shaped like a hub id."""
    from ..sd.fashion import TRAINED_MODELS
    from ..sd.tiny import TINY_KINDS

    if model in TRAINED_MODELS:  # the committed Fashion-MNIST pipelines
        return
    if model.startswith("tiny:"):
        check_choice("model tiny kind", model[len("tiny:") :], TINY_KINDS)
    elif Path(model).is_file():
        raise ValueError(
            f"model {model!r} is a file: give a pipeline folder, a hub id or tiny:KIND"
        )
    elif not Path(model).is_dir() and not _HUB_ID.match(model):
        raise ValueError(
            f"model {model!r} is neither a pipeline folder, a hub id nor "
            f"tiny:KIND ({', '.join('tiny:' + k for k in TINY_KINDS)})"
        )


def _check_common(args) -> None:
    """The options `toycode sd` and `toycode sd-sweep` share, before any model loads."""
    _check_model(args.model)
    check_count("steps", args.steps, 1, MAX_STEPS)
    check_range("eta", args.eta, 0.0, 1.0)
    check_range("guidance_scale", args.guidance_scale, 0.0, None)
    check_count("max_batch", args.max_batch)
    if args.aesthetic_head is not None:
        check_in_file("aesthetic_head", args.aesthetic_head)
    for name in ("reward_model", "clip_model", "fidelity_model"):
        value = getattr(args, name, None)
        if value is not None and Path(value).is_file():
            raise ValueError(f"{name} {value!r} is a file: give a CLIP folder or a hub id")


def load_reference(path):
    """--reference as an image tensor, or a one-line error naming the file."""
    from ..sd.run import load_image

    if path is None:
        return None
    check_in_file("reference", path)
    try:
        return load_image(path)
    except OSError as err:  # PIL: not an image it can read
        raise ValueError(f"reference {str(path)!r} is not a readable image ({err})") from None


def add_sd(sub) -> None:
    """`toycode sd`."""
    sd = sub.add_parser("sd", help="CoDe / best-of-N / SVDD on a Stable Diffusion pipeline")
    sd.add_argument(
        "--model",
        required=True,
        help="hub id or local folder of an SD 1.x/2.x, "
        "SDXL, SD3 or FLUX pipeline, or tiny:sd, "
        "tiny:sd-v, tiny:sdxl, tiny:sd3, tiny:flux "
        "(random weights, offline), or tiny:fashion, tiny:fashion-sd3 (toycode's trained "
        "Fashion-MNIST pipelines, offline)",
    )
    sd.add_argument("--prompt", nargs="+", required=True, help="one prompt, or one per image")
    sd.add_argument("--n", type=int, default=1, help="images to generate")
    add_reward_args(sd, "reference image (clip-image reward; CoDe(η) start)")
    sd.add_argument(
        "--method",
        default="code",
        choices=list(SD_METHODS),
        help="gradient-free methods (image rewards have no gradient here)",
    )
    sd.add_argument("--num-candidates", type=int, default=8)
    sd.add_argument("--block-size", type=int, default=5)
    sd.add_argument(
        "--selection",
        default=None,
        choices=sorted(SELECTIONS),
        help="default: the method's (argmax; systematic for SMC)",
    )
    sd.add_argument("--particles", type=int, default=4, help="SMC population size K")
    sd.add_argument("--lam", type=float, default=1.0, help="softmax selection's λ")
    sd.add_argument("--steps", type=int, default=50)
    sd.add_argument(
        "--scheduler",
        default=None,
        choices=["ddim", "ddpm", "euler"],
        help="the timestep grid (the step is always DDIM(η)); default: Euler's for "
        "a pipeline that ships EulerDiscreteScheduler (SDXL), else DDIM's",
    )
    sd.add_argument("--eta", type=float, default=1.0, help="DDIM η (selection needs η > 0)")
    sd.add_argument(
        "--strength",
        type=float,
        default=None,
        help="CoDe(η): start from --reference noised to this strength in (0, 1]",
    )
    sd.add_argument("--guidance-scale", type=float, default=7.5)
    sd.add_argument("--seed", type=int, default=0)
    sd.add_argument("--max-batch", type=int, default=8, help="latents per UNet/VAE call")
    sd.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    sd.add_argument("--dtype", default="auto", choices=list(DTYPES))
    sd.add_argument("--out", required=True, help="output folder")
    sd.set_defaults(func=run_sd)


def _check_sd(args) -> str:
    """Everything `toycode sd` can be given wrong; returns the device."""
    _check_common(args)
    check_count("n", args.n)
    if any(not p.strip() for p in args.prompt):
        raise ValueError("prompt must not be empty")
    if len(args.prompt) not in (1, args.n):
        raise ValueError(
            f"got {len(args.prompt)} prompts for n={args.n} images: give one prompt, or exactly n"
        )
    check_seed("seed", args.seed)
    check_range("lam", args.lam, 0.0, None)
    if args.strength is not None:
        check_range("strength", args.strength, 0.0, 1.0, low_open=True)
        if args.reference is None:
            raise ValueError("strength needs a reference image (--reference)")
    s = get_method(args.method).sampler_settings(
        args.steps,
        num_candidates=args.num_candidates,
        block_size=args.block_size,
        particles=args.particles,
        selection=args.selection,
    )
    check_batch(
        f"n={args.n}, N={s['num_candidates']}, K={s.get('particles', 1)}",
        args.n * s["num_candidates"] * s.get("particles", 1),
        LATENT_NUMBERS,
    )
    device = resolve_device(args.device)
    check_out_dir("out", args.out)
    return device


def run_sd(args) -> None:
    from ..sd.backend import load_pipeline
    from ..sd.run import make_image_reward, sd_sample, write_outputs

    _check_sd(args)
    reference = load_reference(args.reference)
    reward = make_image_reward(
        args.reward,
        reference=reference,
        prompt=args.prompt[0],
        clip=reward_clip(args, args.device),
        aesthetic_head=args.aesthetic_head,
    )
    pipe = load_pipeline(args.model, device=args.device, dtype=DTYPES[args.dtype])
    records = sd_sample(
        pipe,
        args.prompt,
        reward,
        n=args.n,
        method=args.method,
        num_candidates=args.num_candidates,
        block_size=args.block_size,
        selection=args.selection,
        particles=args.particles,
        lam=args.lam,
        steps=args.steps,
        scheduler=args.scheduler,
        eta=args.eta,
        guidance_scale=args.guidance_scale,
        reference=reference,
        strength=args.strength,
        seed=args.seed,
        max_batch=args.max_batch,
    )
    for path in write_outputs(records, args.out):
        print(f"wrote {path}")
    for r in records:
        print(
            json.dumps(
                {
                    "index": r["index"],
                    "prompt": r["prompt"],
                    "reward": r["reward"],
                    "nfe": r["nfe"],
                    "reward_calls": r["reward_calls"],
                }
            )
        )


def add_sd_sweep(sub) -> None:
    """`toycode sd-sweep`."""
    sw = sub.add_parser(
        "sd-sweep",
        help="methods × settings × prompts × seeds on a Stable "
        "Diffusion pipeline: a resumable table of rows and "
        "their images (accelerate launch shards the rows)",
    )
    sw.add_argument("--model", required=True, help="as for `toycode sd`")
    sw.add_argument(
        "--prompts",
        default="animals",
        help="a shipped prompt set (animals) or a file with one prompt a line",
    )
    sw.add_argument("--limit-prompts", type=int, default=None, help="only the first L prompts")
    sw.add_argument(
        "--methods",
        nargs="+",
        default=["base", "bon", "code", "smc"],
        help=f"any of {', '.join(SD_METHODS)}",
    )
    sw.add_argument(
        "--grid",
        default=None,
        help='knobs N, B, K, lam, T, e.g. "N=1,4,8;B=5,10;K=4" (a knob a method '
        "reads but the grid omits: N=8, B=5, K=4, lam=1, T=--steps)",
    )
    sw.add_argument("--seeds", type=int, default=2, help="seeds per prompt and setting")
    sw.add_argument(
        "--fidelity-model",
        help="hub id or folder of a CLIP model: each row's prompt fidelity (text–image cosine)",
    )
    sw.add_argument(
        "--score-decoder",
        help="folder of a diffusers AutoencoderTiny (TAESD) that "
        "decodes block-end candidates for scoring (tiny:fashion-taesd: the committed one "
        "of the Fashion-MNIST pipelines)",
    )
    sw.add_argument("--out", required=True, help="output folder (results.jsonl, images/)")
    add_reward_args(sw, "reference image (clip-image reward)")
    sw.add_argument(
        "--selection",
        default=None,
        choices=sorted(SELECTIONS),
        help="bon, svdd and code's (default argmax); SMC and the search methods keep their own",
    )
    sw.add_argument("--steps", type=int, default=50, help="T, unless the grid varies it")
    sw.add_argument(
        "--scheduler",
        default=None,
        help="the backend's timestep grid (ddim, ddpm, ...); default: the backend's",
    )
    sw.add_argument("--eta", type=float, default=1.0, help="DDIM η (selection needs η > 0)")
    sw.add_argument("--guidance-scale", type=float, default=7.5)
    sw.add_argument("--max-batch", type=int, default=8, help="latents per UNet/VAE call")
    sw.add_argument(
        "--device",
        default=None,
        help="default: accelerate's device for this process (cuda if available, else cpu)",
    )
    sw.add_argument("--dtype", default="auto", choices=list(DTYPES))
    sw.set_defaults(func=run_sd_sweep)


def _sweep_grid(args) -> dict:
    """The grid: --grid as given, or the default grid less the knobs no chosen method reads."""
    from ..experiments.tradeoff import parse_grid

    for m in args.methods:
        if m not in SD_METHODS:
            raise ValueError(
                f"method must be one of {list(SD_METHODS)} (image rewards are not "
                f"differentiated), got {m!r}"
            )
    if args.grid is not None:
        return parse_grid(args.grid)
    return {
        k: v
        for k, v in parse_grid(DEFAULT_GRID).items()
        if any(k in get_method(m).knobs for m in args.methods)
    }


def _check_sweep(args, prompts, grid) -> None:
    """Everything `toycode sd-sweep` can be given wrong, before a model loads or a file is
    written: the jobs, T, the largest batch of a setting, the device and the folder."""
    from ..experiments.tradeoff import expand
    from ..sd.sweep import DEFAULTS, sweep_jobs

    _check_common(args)
    sweep_jobs(prompts, args.methods, grid, args.seeds)
    for t in grid.get("T", ()):
        check_count("T", t, 1, MAX_STEPS)
    for method, settings in expand(args.methods, grid):
        knobs = get_method(method).knobs
        n, k = ({**DEFAULTS, **settings}.get(x, 1) if x in knobs else 1 for x in ("N", "K"))
        check_batch(f"sd-sweep {method} at N={n}, K={k}", n * k, LATENT_NUMBERS)
    resolve_device(args.device)
    check_out_dir("out", args.out)


def run_sd_sweep(args) -> None:
    from ..sd.backend import load_pipeline
    from ..sd.rewards import Clip, load_clip
    from ..sd.run import make_image_reward
    from ..sd.score_decoder import check_score_decoder_path, load_score_decoder
    from ..sd.sweep import load_prompts, process_shard, run_sd_sweep

    # everything a user can get wrong is checked before a model loads or a file is written
    prompts = load_prompts(args.prompts, args.limit_prompts)
    grid = _sweep_grid(args)
    _check_sweep(args, prompts, grid)
    if args.score_decoder:
        check_score_decoder_path(args.score_decoder)
    reference = load_reference(args.reference)
    shard = process_shard(args.device)
    clip = reward_clip(args, shard.device)

    def reward_for(prompt):
        return make_image_reward(
            args.reward,
            reference=reference,
            prompt=prompt,
            clip=clip,
            aesthetic_head=args.aesthetic_head,
        )

    reward_for(prompts[0])
    pipe = load_pipeline(args.model, device=shard.device, dtype=DTYPES[args.dtype])
    decoder = load_score_decoder(args.score_decoder, pipe) if args.score_decoder else None
    fidelity = Clip(*load_clip(args.fidelity_model, shard.device)) if args.fidelity_model else None
    describe = {
        "model": args.model,
        "dtype": str(pipe.dtype).removeprefix("torch."),
        "reward": args.reward,
        "reward_model": args.reward_model,
        "clip_model": args.clip_model,
        "aesthetic_head": args.aesthetic_head,
        "reference": args.reference,
        "fidelity_model": args.fidelity_model,
        "score_decoder": args.score_decoder,
    }
    rows = run_sd_sweep(
        pipe,
        prompts,
        reward_for,
        args.methods,
        grid,
        seeds=args.seeds,
        steps=args.steps,
        out=args.out,
        eta=args.eta,
        guidance_scale=args.guidance_scale,
        scheduler=args.scheduler,
        selection=args.selection,
        max_batch=args.max_batch,
        fidelity=fidelity,
        score_decoder=decoder,
        describe=describe,
        shard=shard,
    )
    if shard.index == 0:
        print(
            f"{len(rows)} rows in {args.out}/results.jsonl ({shard.count} process"
            f"{'es' if shard.count > 1 else ''})"
        )
