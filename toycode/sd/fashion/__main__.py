"""``python -m toycode.sd.fashion train|gates|tradeoff``: reproduce the pipeline, print its quality
gates, run the reward-vs-prompt-fidelity study."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toycode.sd.fashion", description=__doc__.split(":")[0].strip("`")
    )
    sub = parser.add_subparsers(dest="command", required=True)
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
    gates = sub.add_parser("gates", help="print the quality gates of the committed pipeline")
    gates.add_argument("--model", help="pipeline folder (default: the committed one)")
    gates.add_argument("--n", type=int, default=100, help="images per class prompt")
    gates.add_argument("--n-generic", type=int, default=500, help="images of the generic prompt")
    gates.add_argument("--steps", type=int, default=25, help="DDIM steps")
    gates.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale (default: the pipeline's)",
    )
    gates.add_argument("--data-dir")
    _add_tradeoff(sub)
    args = parser.parse_args(argv)
    if args.command == "tradeoff":
        return _tradeoff(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "train":
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
    from .gates import format_gates, quality_gates

    gates = quality_gates(
        args.model,
        n=args.n,
        n_generic=args.n_generic,
        steps=args.steps,
        guidance_scale=args.guidance,
        data_dir=args.data_dir,
    )
    print(format_gates(gates))
    return 0


def _add_tradeoff(sub) -> None:
    """The ``tradeoff`` subcommand's options."""
    t = sub.add_parser(
        "tradeoff",
        help="reward (JPEG compressibility) vs prompt fidelity vs UNet calls: base, bon, code, "
        "svdd, smc over the ten class prompts",
    )
    t.add_argument("--out", default="figures/fashion-sweep", help="sweep folder (resumable)")
    t.add_argument("--figure", default="figures/fashion_tradeoff.png", help="the PNG to draw")
    t.add_argument("--seeds", type=int, default=4, help="images per prompt and setting")
    t.add_argument("--steps", type=int, default=20, help="DDIM steps")
    t.add_argument("--budgets", type=int, nargs="+", default=[4, 8], help="N (and K) values")
    t.add_argument("--block", type=int, default=5, help="CoDe's and SMC's block size B")
    t.add_argument("--smc-lam", type=float, default=50.0, help="SMC's λ (reward in −kB)")


def _tradeoff(args) -> int:
    """Run the study, print its summary; a bad option is a one-line error."""
    from ...utils.checks import check_out_dir, check_out_file
    from .tradeoff import format_summary, run_fashion_tradeoff

    try:
        if args.seeds < 1 or args.steps < 1 or args.block < 1:
            raise ValueError("--seeds, --steps and --block must be ≥ 1")
        check_out_dir("--out", args.out)  # before any model is loaded or row computed
        check_out_file("--figure", args.figure)
        rows = run_fashion_tradeoff(
            args.out,
            seeds=args.seeds,
            steps=args.steps,
            budgets=args.budgets,
            block=args.block,
            smc_lam=args.smc_lam,
            figure=args.figure,
        )
    except ValueError as err:
        print(f"python -m toycode.sd.fashion tradeoff: error: {err}", file=sys.stderr)
        return 2
    print(format_summary(rows))
    print(f"wrote {args.out}/results.jsonl and {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
