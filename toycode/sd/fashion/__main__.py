"""``python -m toycode.sd.fashion train|train-flow|train-taesd|gates|taesd|tradeoff|class-value|
class-value-check``: reproduce the pipelines, the tiny decoder and the learned class value, print
their quality gates and checks, run the reward-vs-prompt-fidelity study."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toycode.sd.fashion", description=__doc__.split(":")[0].strip("`")
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_flow_and_taesd(sub)
    _add_gates(sub)
    _add_tradeoff(sub)
    _add_class_value(sub)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command == "tradeoff":
        return _tradeoff(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    commands = {
        "train": _train,
        "train-flow": _train_flow,
        "train-taesd": _train_taesd,
        "taesd": _taesd,
        "gates": _gates,
        "class-value": _class_value,
        "class-value-check": _class_value_check,
    }
    try:
        return commands[args.command](args)
    except ValueError as err:  # bad input: one line, not a traceback
        print(f"python -m toycode.sd.fashion {args.command}: error: {err}", file=sys.stderr)
        return 2


def _add_train(sub) -> None:
    """The ``train`` subcommand's options (the DDPM pipeline and the classifier)."""
    train = sub.add_parser(
        "train", help="train the VAE, classifier, text encoder and UNet (one thread, fixed seeds)"
    )
    train.add_argument("--out", help="pipeline folder (default: toycode/checkpoints/fashion-sd)")
    train.add_argument(
        "--classifier", help="classifier file (default: toycode/checkpoints/fashion_classifier.pt)"
    )
    train.add_argument("--vae-steps", type=int, default=1500)
    train.add_argument("--unet-steps", type=int, default=3000)
    train.add_argument("--classifier-epochs", type=int, default=3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--data-dir",
        help="folder holding fashion-mnist/ (default: $TOYCODE_DATA or ~/.cache/toycode)",
    )


def _add_flow_and_taesd(sub) -> None:
    """The ``train-flow``, ``train-taesd`` and ``taesd`` subcommands' options."""
    flow = sub.add_parser(
        "train-flow",
        help="train the StableDiffusion3Pipeline sibling by rectified flow on the same VAE "
        "latents (one thread, fixed seed)",
    )
    flow.add_argument("--out", help="pipeline folder (default: toycode/checkpoints/fashion-sd3)")
    flow.add_argument("--steps", type=int, default=1800)
    flow.add_argument("--seed", type=int, default=0)
    flow.add_argument("--data-dir")
    taesd = sub.add_parser(
        "train-taesd",
        help="distil the VAE into an AutoencoderTiny for --score-decoder (one thread)",
    )
    taesd.add_argument("--out", help="folder (default: toycode/checkpoints/fashion-taesd)")
    taesd.add_argument("--steps", type=int, default=2000)
    taesd.add_argument("--seed", type=int, default=0)
    taesd.add_argument("--data-dir")
    report = sub.add_parser(
        "taesd", help="the tiny decoder vs the full VAE: reconstruction error, classifier agreement"
    )
    report.add_argument("--model", help="AutoencoderTiny folder (default: the committed one)")
    report.add_argument("--n", type=int, default=100, help="trajectories per pipeline")
    report.add_argument("--data-dir")


def _add_gates(sub) -> None:
    """The ``gates`` subcommand's options."""
    gates = sub.add_parser("gates", help="print the quality gates of a committed pipeline")
    gates.add_argument(
        "--model",
        help="pipeline folder or name: fashion-sd (tiny:fashion, the default) or fashion-sd3 "
        "(tiny:fashion-sd3)",
    )
    gates.add_argument("--n", type=int, default=100, help="images per class prompt")
    gates.add_argument("--n-generic", type=int, default=500, help="images of the generic prompt")
    gates.add_argument("--steps", type=int, default=25, help="sampling steps")
    gates.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        default=None,
        help="classifier-free guidance scale(s), each gated in turn (default: the pipeline's)",
    )
    gates.add_argument("--data-dir")


def _train(args) -> int:
    from . import CLASSIFIER_PATH, PIPELINE_DIR
    from .train import train_all

    train_all(
        args.out or PIPELINE_DIR,
        args.classifier or CLASSIFIER_PATH,
        vae_steps=args.vae_steps,
        unet_steps=args.unet_steps,
        classifier_epochs=args.classifier_epochs,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    return 0


def _train_flow(args) -> int:
    from . import SD3_DIR
    from .flow import train_flow

    train_flow(args.out or SD3_DIR, steps=args.steps, seed=args.seed, data_dir=args.data_dir)
    return 0


def _train_taesd(args) -> int:
    from . import TAESD_DIR
    from .taesd import train_taesd

    train_taesd(args.out or TAESD_DIR, steps=args.steps, seed=args.seed, data_dir=args.data_dir)
    return 0


def _taesd(args) -> int:
    from .taesd import decoder_report, format_report, load_fashion_taesd

    tiny = load_fashion_taesd(args.model) if args.model else None
    print(format_report(decoder_report(tiny, n_tweedie=args.n, data_dir=args.data_dir)))
    return 0


def _gates(args) -> int:
    from ...utils.checks import check_range
    from .gates import format_gates, format_guidance_table, quality_gates

    for g in args.guidance or []:  # every scale checked before the first is gated
        check_range("--guidance", g, 0.0, None)
    every = []
    for g in args.guidance or [None]:
        every.append(
            quality_gates(
                args.model,
                n=args.n,
                n_generic=args.n_generic,
                steps=args.steps,
                guidance_scale=g,
                data_dir=args.data_dir,
            )
        )
        print(format_gates(every[-1]), flush=True)
    if len(every) > 1:
        print(format_guidance_table(every))
    return 0


def _add_class_value(sub) -> None:
    """The ``class-value`` and ``class-value-check`` subcommands' options."""
    from .class_value import HINTS

    cv = sub.add_parser(
        "class-value",
        help="fit the learned class value q_θ on base latents of tiny:fashion (one thread)",
    )
    cv.add_argument("--out", help="file (default: toycode/checkpoints/class_value_fashion.pt)")
    cv.add_argument("--n", type=int, default=4096, help="base latents to draw and label")
    cv.add_argument("--steps", type=int, default=3000, help="training steps")
    cv.add_argument("--hint", default="none", choices=HINTS)
    cv.add_argument("--seed", type=int, default=0)
    ck = sub.add_parser(
        "class-value-check",
        help="the class tilt's shares with the learned value vs Tweedie against P*(c), and "
        "q_θ's held-out log-loss per level",
    )
    ck.add_argument("--model", help="class-value file (default: the committed one)")
    ck.add_argument("--class", dest="cls", type=int, default=8, help="the class c (8: bag)")
    ck.add_argument("--lam", type=float, default=1.5)
    ck.add_argument("--n", type=int, default=256, help="CoDe starts per run")
    ck.add_argument("--n-base", type=int, default=2048, help="held-out base latents (π, loss)")
    ck.add_argument("--candidates", type=int, default=4, help="CoDe's N (Tweedie)")
    ck.add_argument("--block", type=int, default=2, help="the smaller B (CoDe, SMC)")
    ck.add_argument("--particles", type=int, default=32, help="SMC's K")
    ck.add_argument("--pops", type=int, default=12, help="SMC populations")
    ck.add_argument("--seed", type=int, default=0)


def _class_value(args) -> int:
    import shlex

    from ...utils.checks import check_out_file
    from .class_value import CLASS_VALUE_PATH, train_fashion_class_value

    out = check_out_file("--out", args.out or CLASS_VALUE_PATH)
    command = "OMP_NUM_THREADS=1 python -m toycode.sd.fashion " + shlex.join(args.argv)
    ckpt = train_fashion_class_value(
        out, n=args.n, steps=args.steps, hint=args.hint, seed=args.seed, command=command
    )
    print(f"wrote {out}: final loss {ckpt['loss']:.4f}, seconds {ckpt['seconds']}")
    return 0


def _class_value_check(args) -> int:
    from ...utils.checks import check_in_file
    from .class_value import CLASS_VALUE_PATH, format_check, run_check

    path = check_in_file("--model", args.model or CLASS_VALUE_PATH)
    res = run_check(
        path,
        c=args.cls,
        lam=args.lam,
        n=args.n,
        n_base=args.n_base,
        candidates=args.candidates,
        block=args.block,
        particles=args.particles,
        pops=args.pops,
        seed=args.seed,
    )
    print(format_check(res))
    return 0


STUDY_PATHS = {
    "jpeg": ("figures/fashion-sweep", "figures/fashion_tradeoff.png"),
    "confusable": ("figures/fashion-confusable", "figures/fashion_confusable.png"),
}
"""Each reward's default sweep folder and figure."""


def _add_tradeoff(sub) -> None:
    """The ``tradeoff`` subcommand's options."""
    t = sub.add_parser(
        "tradeoff",
        help="reward vs prompt fidelity vs UNet calls over the ten class prompts: base, bon, "
        "code, svdd, smc (and dps for the differentiable confusable-class reward)",
    )
    t.add_argument(
        "--reward",
        default="jpeg",
        choices=list(STUDY_PATHS),
        help="jpeg: JPEG compressibility; confusable: log p(most-confused class | x)",
    )
    t.add_argument(
        "--out",
        help="sweep folder, resumable (default: figures/fashion-sweep, or "
        "figures/fashion-confusable for --reward confusable)",
    )
    t.add_argument(
        "--figure",
        help="the PNG to draw (default: figures/fashion_tradeoff.png, "
        "or figures/fashion_confusable.png)",
    )
    t.add_argument("--seeds", type=int, default=4, help="images per prompt and setting")
    t.add_argument("--steps", type=int, default=20, help="DDIM steps")
    t.add_argument("--budgets", type=int, nargs="+", default=[4, 8], help="N (and K) values")
    t.add_argument("--block", type=int, default=5, help="CoDe's and SMC's block size B")
    t.add_argument(
        "--smc-lam", type=float, help="SMC's λ (default 50 for jpeg, in −kB; 1 for confusable)"
    )
    t.add_argument(
        "--scales", type=float, nargs="+", default=[1.0, 4.0], help="DPS's guidance scales"
    )


def _tradeoff(args) -> int:
    """Run the study, print its summary; a bad option is a one-line error."""
    from ...utils.checks import check_out_dir, check_out_file
    from .tradeoff import format_summary, run_fashion_tradeoff

    default_out, default_figure = STUDY_PATHS[args.reward]
    out, figure = args.out or default_out, args.figure or default_figure
    try:
        if args.seeds < 1 or args.steps < 1 or args.block < 1:
            raise ValueError("--seeds, --steps and --block must be ≥ 1")
        check_out_dir("--out", out)  # before any model is loaded or row computed
        check_out_file("--figure", figure)
        rows = run_fashion_tradeoff(
            out,
            reward=args.reward,
            seeds=args.seeds,
            steps=args.steps,
            budgets=args.budgets,
            block=args.block,
            smc_lam=args.smc_lam,
            scales=args.scales,
            figure=figure,
        )
    except ValueError as err:
        print(f"python -m toycode.sd.fashion tradeoff: error: {err}", file=sys.stderr)
        return 2
    print(format_summary(rows))
    print(f"wrote {out}/results.jsonl and {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
