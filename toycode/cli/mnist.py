"""The MNIST commands: train-mnist, mnist-eval, mnist-demo, mnist-gmm."""

from __future__ import annotations

import json
import time

from ..utils.checks import (
    check_batch,
    check_count,
    check_out_dir,
    check_out_file,
    check_range,
    check_seed,
)
from .common import MAX_STEPS, add_data_dir_arg, check_data_dir, report_figures

MNIST_DIM = 784
"""Pixels of an MNIST image: the largest dimension the MNIST mixture has."""

FRECHET_SAMPLES = 500
"""Samples each side of mnist-eval's Fréchet distance (and of its held-out floor)."""


def _check_digit(digit) -> None:
    check_count("digit", digit, 0, 9)


def add_train_mnist(sub) -> None:
    """`toycode train-mnist`."""
    tm = sub.add_parser("train-mnist", help="train the MNIST UNet DDPM or the CNN classifier")
    tm.add_argument("--model", required=True, choices=["unet", "classifier"])
    tm.add_argument("--out", help="checkpoint path (default: the committed one)")
    tm.add_argument("--steps", type=int, default=12000, help="UNet optimisation steps")
    tm.add_argument("--epochs", type=int, default=80, help="classifier epochs")
    tm.add_argument("--seed", type=int, default=0)
    tm.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    add_data_dir_arg(tm)
    tm.set_defaults(func=run_train_mnist)


def run_train_mnist(args) -> None:
    from ..mnist.models import train_classifier, train_unet

    check_count("steps", args.steps)
    check_count("epochs", args.epochs)
    check_seed("seed", args.seed)
    check_data_dir(args.data_dir)
    if args.out:
        check_out_file("out", args.out)
    if args.model == "unet":
        ckpt = train_unet(
            args.out or None,
            steps=args.steps,
            seed=args.seed,
            data_dir=args.data_dir,
            resume=not args.restart,
        )
        print(json.dumps({"model": "unet", "steps": ckpt["step"], "loss": ckpt["loss"]}))
    else:
        train_classifier(
            args.out or None, epochs=args.epochs, seed=args.seed, data_dir=args.data_dir
        )
        run_mnist_eval(args, quality=False)


def add_mnist_eval(sub) -> None:
    """`toycode mnist-eval`."""
    me = sub.add_parser("mnist-eval", help="classifier accuracy and base DDPM quality")
    me.add_argument("--n", type=int, default=1000)
    me.add_argument("--steps", type=int, default=50)
    me.add_argument("--seed", type=int, default=0)
    add_data_dir_arg(me)
    me.set_defaults(func=run_mnist_eval)


def run_mnist_eval(args, quality: bool = True) -> None:
    from ..backends import load_trained_backend
    from ..mnist.eval import base_quality, classifier_accuracy
    from ..mnist.models import UNET_PATH, load_classifier

    if quality:
        # the Fréchet distance compares the first 500 samples with 500 held-out images
        check_count("n", args.n, FRECHET_SAMPLES)
        check_batch(f"n={args.n}", args.n, MNIST_DIM)
        check_count("steps", args.steps, 1, MAX_STEPS)
        check_seed("seed", args.seed)
        check_data_dir(args.data_dir)
    classifier = load_classifier()
    acc, se, count = classifier_accuracy(classifier, args.data_dir)
    print(
        f"classifier accuracy on held-out MNIST test[9000:10000]: {100 * acc:.2f} % "
        f"± {100 * se:.2f} (n = {count})"
    )
    if not quality:
        return
    q = base_quality(
        load_trained_backend(UNET_PATH, steps=args.steps),
        classifier,
        n=args.n,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    print(f"base DDPM, {q['n']} samples, T = {args.steps}:")
    print(f"  classified with confidence ≥ 0.9: {100 * q['confident']:.1f} %")
    print(
        "  class shares: "
        + ", ".join(f"{d}: {100 * r:.1f}" for d, r in enumerate(q["class_rates"]))
        + " (%)"
    )
    print(
        f"  Fréchet distance in the classifier's features, 500 samples vs 500 held-out images: "
        f"{q['frechet']:.1f}; the other 500 held-out images vs the same (floor): "
        f"{q['frechet_floor']:.1f}"
    )


def add_mnist_demo(sub) -> None:
    """`toycode mnist-demo`."""
    md = sub.add_parser(
        "mnist-demo",
        help="best-of-N, CoDe, SMC, DPS on MNIST against the exact tilted class fraction",
    )
    md.add_argument("--digit", type=int, default=3)
    md.add_argument("--lam", type=float, default=2.0)
    md.add_argument("--n", type=int, default=64)
    md.add_argument("--steps", type=int, default=50)
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--out-dir", default="figures")
    md.add_argument(
        "--value",
        default="tweedie",
        choices=["tweedie", "lookahead"],
        help="block-end value of best-of-N, CoDe and SMC",
    )
    md.add_argument(
        "--value-samples",
        "--lookahead-samples",
        dest="value_samples",
        type=int,
        default=4,
        help="look-ahead M",
    )
    md.add_argument("--lookahead-steps", type=int, default=4, help="look-ahead k")
    add_data_dir_arg(md)
    md.set_defaults(func=run_mnist_demo)


def _check_mnist_demo(args) -> None:
    from ..mnist.demo import MnistDemoConfig

    _check_digit(args.digit)
    check_range("lam", args.lam, 0.0, None)
    check_count("n", args.n)
    check_count("steps", args.steps, 1, MAX_STEPS)
    check_seed("seed", args.seed)
    check_count("value_samples", args.value_samples)
    check_count("lookahead_steps", args.lookahead_steps)
    check_data_dir(args.data_dir)
    config = MnistDemoConfig()
    width = max(config.num_candidates, config.particles)
    draws = args.value_samples if args.value == "lookahead" else 1
    check_batch(
        f"n={args.n} with {width} candidates" + (f", M={draws}" if draws > 1 else ""),
        args.n * width * draws,
        MNIST_DIM,
    )
    check_out_dir("out_dir", args.out_dir)


def run_mnist_demo(args) -> None:
    from ..mnist.demo import MnistDemoConfig, run_mnist_demo

    _check_mnist_demo(args)
    start = time.time()
    r = run_mnist_demo(
        MnistDemoConfig(
            digit=args.digit,
            lam=args.lam,
            n=args.n,
            value=args.value,
            value_samples=args.value_samples,
            lookahead_steps=args.lookahead_steps,
            steps=args.steps,
            seed=args.seed,
            out_dir=args.out_dir,
        )
    )
    print(
        f"digit {args.digit}, λ = {args.lam:g}: base rate π = {r['pi']:.3f} ± {r['pi_se']:.3f}; "
        f"exact tilted fraction {r['exact']:.3f} ± {r['exact_se']:.3f}; best-of-N softmax "
        f"exact expectation {r['bon_exact']:.3f}"
    )
    print(f"{'method':22s} {'class-c fraction':>18s} {'NFE/sample':>10s} {'grads':>6s}")
    for row in r["rows"]:
        print(
            f"{row['method']:22s} {row['fraction']:9.3f} ± {row['se']:.3f} {row['nfe']:10.0f} "
            f"{row['reward_grads']:6.0f}"
        )
    report_figures("mnist-demo", r["figures"], start)


def add_mnist_gmm(sub) -> None:
    """`toycode mnist-gmm`."""
    mg = sub.add_parser(
        "mnist-gmm",
        help="best-of-N vs CoDe against exact targets of an "
        "MNIST-fitted mixture, as the dimension grows",
    )
    mg.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64, 784])
    mg.add_argument("--digit", type=int, default=3)
    mg.add_argument("--n", type=int, default=256)
    mg.add_argument("--num-candidates", type=int, default=16)
    mg.add_argument("--block-size", type=int, default=5)
    mg.add_argument("--steps", type=int, default=30)
    mg.add_argument("--seed", type=int, default=0)
    mg.add_argument("--out-dir", default="figures")
    add_data_dir_arg(mg)
    mg.set_defaults(func=run_mnist_gmm)


def run_mnist_gmm(args) -> None:
    from ..experiments.plots import plot_dimension_sweep, save
    from ..mnist.gmm import dimension_sweep

    for d in args.dims:
        # the mixture lives on MNIST's 784 pixels: a larger d cannot be projected onto
        check_count("dims", d, 1, MNIST_DIM)
    _check_digit(args.digit)
    check_count("n", args.n)
    check_count("num_candidates", args.num_candidates)
    check_count("block_size", args.block_size)
    check_count("steps", args.steps, 1, MAX_STEPS)
    check_seed("seed", args.seed)
    check_data_dir(args.data_dir)
    check_batch(
        f"n={args.n}, N={args.num_candidates} at d={max(args.dims)}",
        args.n * args.num_candidates,
        max(args.dims),
    )
    out = check_out_dir("out_dir", args.out_dir)
    check_out_file("figure", out / "mnist_gmm_dims.png")
    rows = dimension_sweep(
        tuple(args.dims),
        digit=args.digit,
        n=args.n,
        num_candidates=args.num_candidates,
        block_size=args.block_size,
        steps=args.steps,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    print(
        f"MNIST mixture (one component per digit, rank-16 + diagonal covariances), projected "
        f"on the top-d principal axes; reward −½·0.5‖x − μ_{args.digit}‖², λ = 1; n = {args.n}, "
        f"T = {args.steps}, N = {args.num_candidates}, CoDe B = {args.block_size}, softmax, "
        f"Tweedie values"
    )
    print(
        f"{'d':>4s} {'method':10s} {'NFE':>5s} {'reward ± s.e.':>17s} {'exact E_p*[r]':>13s} "
        f"{'tilt reached':>12s} {f'w*_{args.digit}':>6s} {'got':>6s} {'mode TV':>7s} "
        f"{'KL(p*‖p)':>8s}"
    )
    for r in rows:
        print(
            f"{r['d']:4d} {r['method']:10s} {r['nfe']:5.0f} {r['reward']:8.3f} ± "
            f"{r['reward_se']:6.3f} {r['exact_reward']:13.3f} {100 * r['tilt_achieved']:11.0f}% "
            f"{r['exact_digit_weight']:6.3f} {r['digit_weight']:6.3f} {r['mode_tv']:7.3f} "
            f"{r['kl_target_base']:8.2f}"
        )
    print(f"wrote {save(plot_dimension_sweep(rows), args.out_dir + '/mnist_gmm_dims.png')}")
