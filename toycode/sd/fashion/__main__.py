"""``python -m toycode.sd.fashion train|gates``: reproduce the pipeline, print its quality gates."""

from __future__ import annotations

import argparse
import logging


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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
