"""Options and helpers shared by several subcommands of the `toycode` command line."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from ..sd.run import IMAGE_REWARDS
from ..utils.checks import check_choice, check_out_dir

DTYPES = {
    "auto": None,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
"""--dtype's choices: the pipeline's weights (auto: float16 on CUDA, else float32)."""


def report_figures(command: str, paths, start: float) -> None:
    """The closing lines of a command that draws: each figure it wrote, then its wall time."""
    for path in paths:
        print(f"wrote {path}")
    print(f"{command} took {time.time() - start:.1f} s")


def add_process_arg(parser) -> None:
    """--process of the toy commands (validated by the API: a bad value is a one-line error)."""
    parser.add_argument(
        "--process",
        default="vp",
        help="vp (variance-preserving, ε-prediction) | flow (rectified flow)",
    )


def add_data_dir_arg(parser) -> None:
    """--data-dir of the MNIST commands."""
    parser.add_argument(
        "--data-dir", help="MNIST cache root (default $TOYCODE_DATA or ~/.cache/toycode)"
    )


def add_reward_args(parser, reference_help: str) -> None:
    """The image-reward options of `toycode sd` and `toycode sd-sweep`."""
    parser.add_argument("--reward", default="jpeg", choices=list(IMAGE_REWARDS))
    parser.add_argument(
        "--reward-model",
        help="hub id or folder of the reward's CLIP model "
        "(pickscore: default PickScore_v1; others: "
        "--clip-model)",
    )
    parser.add_argument("--reference", help=reference_help)
    parser.add_argument("--clip-model", default="openai/clip-vit-large-patch14")
    parser.add_argument("--aesthetic-head", help="LAION aesthetic predictor weights (.pth)")


def reward_clip(args, device=None):
    """A function loading the reward's CLIP once: PickScore's own CLIP-H unless --reward-model
    names one, else --reward-model or --clip-model."""
    from ..sd.rewards import PICKSCORE_MODEL, PICKSCORE_TOKENIZER, Clip, load_clip

    if args.reward == "pickscore":
        model = args.reward_model or PICKSCORE_MODEL
        tokenizer = None if args.reward_model else PICKSCORE_TOKENIZER
    else:
        model, tokenizer = args.reward_model or args.clip_model, None
    return functools.cache(lambda: Clip(*load_clip(model, device, tokenizer)))


MAX_STEPS = 1000
"""The most denoising steps a toy command takes (the API's bound)."""


def check_problem(spec):
    """The problem a --problem names, loaded (cheap) so that a bad name or file is refused
    first."""
    from ..exact.problems import load_problem

    return load_problem(spec)


def check_process(process: str) -> None:
    """--process is one of the toy processes."""
    from ..training.train import PROCESSES

    check_choice("process", process, PROCESSES)


def check_toy_backend(backend: str) -> None:
    """A toy backend: analytic, trained or an existing checkpoint file (as api.make_toy_backend)."""
    if backend not in ("analytic", "trained") and not Path(backend).is_file():
        raise ValueError(
            f"backend must be 'analytic', 'trained' or a checkpoint path; "
            f"{backend!r} is none of these"
        )


def check_data_dir(data_dir) -> None:
    """--data-dir, where given, is a folder or can become one."""
    if data_dir is not None:
        check_out_dir("data_dir", data_dir)
