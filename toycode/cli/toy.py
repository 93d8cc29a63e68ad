"""The 2-D toy commands: demo, compare, target, sample, train."""

from __future__ import annotations

import json
import time

import torch

from ..core.methods import METHODS, get_method
from ..core.sampler import SELECTIONS
from ..experiments import api
from ..utils.checks import (
    check_batch,
    check_count,
    check_out_dir,
    check_out_file,
    check_range,
    check_seed,
)
from ..utils.io import save_npz
from .common import (
    MAX_STEPS,
    add_process_arg,
    check_problem,
    check_process,
    check_toy_backend,
    report_figures,
)


def _add_run_args(parser, backends: list[str]) -> None:
    """The sampling options demo and compare share."""
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--num-candidates", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", nargs="+", default=backends)


def _check_run_args(args, problems) -> None:
    """demo's and compare's shared options, before any sampling."""
    check_count("n", args.n)
    check_count("steps", args.steps, 1, MAX_STEPS)
    check_count("num_candidates", args.num_candidates)
    check_count("block_size", args.block_size)
    check_seed("seed", args.seed)
    check_process(args.process)
    for backend in args.backends:
        check_toy_backend(backend)
    for problem in problems:
        check_batch(
            f"n={args.n} with N={args.num_candidates} candidates on {problem.name}",
            args.n * args.num_candidates,
            problem.prior.dim,
        )


def add_demo(sub) -> None:
    """`toycode demo`."""
    d = sub.add_parser("demo", help="compare base, BoN, SVDD and CoDe against the exact target")
    d.add_argument("--problem", default="between")
    _add_run_args(d, ["analytic", "trained"])
    d.add_argument("--out-dir", default="figures")
    add_process_arg(d)
    d.set_defaults(func=run_demo)


def run_demo(args) -> None:
    from ..experiments.demo import format_table, run_demo

    _check_run_args(args, [check_problem(args.problem)])
    check_out_dir("out_dir", args.out_dir)
    start = time.time()
    result = run_demo(
        args.problem,
        out_dir=args.out_dir,
        backends=tuple(args.backends),
        n=args.n,
        steps=args.steps,
        num_candidates=args.num_candidates,
        block_size=args.block_size,
        seed=args.seed,
        process=args.process,
    )
    print(
        f"problem {result['problem'].name}: lam={result['problem'].lam:g}, n={args.n}, "
        f"T={args.steps}, seed={args.seed}, process={args.process}"
    )
    print(format_table(result))
    report_figures("demo", result["figures"], start)


def add_compare(sub) -> None:
    """`toycode compare`."""
    c = sub.add_parser(
        "compare",
        help="every method (CoDe, SMC, guidance) on the built-in "
        "problems, against the exact targets",
    )
    c.add_argument("--problems", nargs="+", help="built-in names or files (default: all built-ins)")
    c.add_argument(
        "--value",
        default="tweedie",
        choices=api.VALUES,
        help="value estimator of every run that does not name its own",
    )
    _add_run_args(c, ["analytic"])
    add_process_arg(c)
    c.set_defaults(func=run_compare)


def run_compare(args) -> None:
    from ..exact.problems import builtin_problems
    from ..experiments.demo import COMPARE_RUNS, compare, format_table

    _check_run_args(args, [check_problem(name) for name in args.problems or builtin_problems()])
    for name in args.problems or builtin_problems():
        result = compare(
            name,
            COMPARE_RUNS,
            tuple(args.backends),
            n=args.n,
            steps=args.steps,
            num_candidates=args.num_candidates,
            block_size=args.block_size,
            seed=args.seed,
            process=args.process,
            value=args.value,
        )
        p = result["problem"]
        print(
            f"\n## {p.name}: reward {p.reward.to_dict()['type']}, lam={p.lam:g}, n={args.n}, "
            f"T={args.steps}, seed={args.seed}, process={args.process}\n"
        )
        print(format_table(result, gradients=True))


def add_target(sub) -> None:
    """`toycode target`."""
    t = sub.add_parser("target", help="exact samples of the tilted target and its log Z")
    t.add_argument("--problem", required=True, help="built-in name or problem .json")
    t.add_argument("--n", type=int, default=1000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", help="write samples to this .npz")
    t.set_defaults(func=run_target)


def run_target(args) -> None:
    problem = check_problem(args.problem)
    check_count("n", args.n)
    check_seed("seed", args.seed)
    check_batch(f"n={args.n}", args.n, problem.prior.dim)
    if args.out:
        check_out_file("out", args.out)
    samples, summary = api.target(args.problem, args.n, args.seed)
    if args.out:
        save_npz(args.out, samples=samples.numpy())
    print(json.dumps(summary))


def add_sample(sub) -> None:
    """`toycode sample`."""
    s = sub.add_parser(
        "sample", help="sample a problem with any method (CoDe family, SMC, gradient guidance)"
    )
    s.add_argument("--problem", required=True)
    s.add_argument("--backend", default="analytic", help="analytic | trained | PATH.pt")
    s.add_argument("--method", default="code", choices=list(METHODS))
    s.add_argument("--num-candidates", type=int, default=16)
    s.add_argument("--block-size", type=int, default=None, help="default 10 (CoDe), 1 (SMC)")
    s.add_argument(
        "--selection",
        default=None,
        choices=sorted(SELECTIONS),
        help="default argmax (CoDe family), systematic (SMC)",
    )
    s.add_argument("--lam", type=float, default=None, help="softmax λ (default: the problem's)")
    s.add_argument(
        "--value",
        default="tweedie",
        choices=api.VALUES,
        help="value estimator at block ends (see toycode.core.values)",
    )
    s.add_argument("--particles", type=int, default=32, help="SMC population size K")
    s.add_argument("--ess-threshold", type=float, default=0.5, help="SMC resamples at ESS < this·K")
    s.add_argument("--scale", type=float, default=None, help="guidance scale (default λ)")
    s.add_argument("--backward-steps", type=int, default=0, help="universal guidance m")
    s.add_argument("--backward-lr", type=float, default=0.1, help="universal guidance step size")
    s.add_argument("--recurrence", type=int, default=1, help="universal guidance r")
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--n", type=int, default=1024)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--eta", type=float, default=1.0, help="DDIM η in [0, 1] (selection needs η > 0)"
    )
    s.add_argument("--out", help="write samples, rewards, nfe, reward_calls to this .npz")
    s.add_argument(
        "--value-samples",
        "--lookahead-samples",
        dest="value_samples",
        type=int,
        default=4,
        help="M: look-ahead rollouts or posterior draws per candidate",
    )
    s.add_argument(
        "--lookahead-steps",
        type=int,
        default=4,
        help="k: coarse model steps of each look-ahead rollout",
    )
    add_process_arg(s)
    s.set_defaults(func=run_sample)


def _check_sample(args) -> None:
    """Everything `toycode sample` can be given wrong, before a backend is built."""
    problem = check_problem(args.problem)
    check_toy_backend(args.backend)
    check_process(args.process)
    check_count("steps", args.steps, 1, MAX_STEPS)
    check_count("n", args.n)
    check_seed("seed", args.seed)
    check_count("value_samples", args.value_samples)
    check_count("lookahead_steps", args.lookahead_steps)
    check_count("backward_steps", args.backward_steps, 0)
    check_count("recurrence", args.recurrence)
    check_range("backward_lr", args.backward_lr, 0.0, None, low_open=True)
    check_range("eta", args.eta, 0.0, 1.0)
    if args.lam is not None:
        check_range("lam", args.lam, 0.0, None)
    if args.scale is not None:
        check_range("scale", args.scale, 0.0, None)
    s = get_method(args.method).sampler_settings(
        args.steps,
        num_candidates=args.num_candidates,
        block_size=args.block_size,
        particles=args.particles,
        ess_threshold=args.ess_threshold,
        selection=args.selection,
    )
    if "ess_threshold" in s:
        check_range("ess_threshold", args.ess_threshold, 0.0, 1.0)
    samples = args.n * s["num_candidates"] * s.get("particles", 1)
    draws = args.value_samples if args.value in ("lookahead", "posterior") else 1
    check_batch(
        f"n={args.n}, N={s['num_candidates']}, K={s.get('particles', 1)}"
        + (f", M={draws}" if draws > 1 else ""),
        samples * draws,
        problem.prior.dim,
    )
    if args.out:
        check_out_file("out", args.out)


def run_sample(args) -> None:
    _check_sample(args)
    res = api.sample(
        args.problem,
        backend=args.backend,
        method=args.method,
        num_candidates=args.num_candidates,
        block_size=args.block_size,
        selection=args.selection,
        lam=args.lam,
        value=args.value,
        steps=args.steps,
        n=args.n,
        seed=args.seed,
        particles=args.particles,
        ess_threshold=args.ess_threshold,
        scale=args.scale,
        backward_steps=args.backward_steps,
        backward_lr=args.backward_lr,
        recurrence=args.recurrence,
        progress=True,
        process=args.process,
        eta=args.eta,
        value_samples=args.value_samples,
        lookahead_steps=args.lookahead_steps,
    )
    if args.out:
        save_npz(
            args.out,
            samples=torch.as_tensor(res.samples).double().numpy(),
            rewards=res.rewards.numpy(),
            nfe=res.nfe,
            reward_calls=res.reward_calls,
            reward_grads=res.reward_grads,
            settings=json.dumps(res.settings),
        )
    mean, se = float(res.rewards.mean()), float(res.rewards.std() / res.n**0.5)
    print(
        json.dumps(
            {
                "reward_mean": mean,
                "reward_se": se,
                "nfe": res.nfe,
                "nfe_per_sample": res.nfe_per_sample,
                "reward_calls": res.reward_calls,
                "reward_grads": res.reward_grads,
                "backprops": res.backprops,
                **res.settings,
            }
        )
    )


def add_train(sub) -> None:
    """`toycode train`."""
    tr = sub.add_parser("train", help="train the MLP denoiser on a problem's prior")
    tr.add_argument("--problem", required=True)
    tr.add_argument("--out", required=True, help="checkpoint path (.pt)")
    tr.add_argument("--steps", type=int, default=8000)
    tr.add_argument("--batch-size", type=int, default=2048)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    add_process_arg(tr)
    tr.set_defaults(func=run_train)


MLP_NUMBERS_PER_ROW = 512
"""A lower bound on the activations one training row of the MLP denoiser holds (width 128, a
few layers), for the batch estimate."""


def run_train(args) -> None:
    check_problem(args.problem)
    check_process(args.process)
    check_count("steps", args.steps)
    check_count("batch_size", args.batch_size)
    check_seed("seed", args.seed)
    check_batch(f"batch_size={args.batch_size}", args.batch_size, MLP_NUMBERS_PER_ROW)
    check_out_file("out", args.out)
    ckpt = api.train(
        args.problem,
        args.out,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        resume=not args.restart,
        process=args.process,
    )
    print(
        json.dumps(
            {
                "out": args.out,
                "steps": ckpt["step"],
                "loss": ckpt["loss"],
                "process": ckpt["process"],
            }
        )
    )
