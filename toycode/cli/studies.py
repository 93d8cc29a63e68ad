"""The studies over the toys: tradeoff, leaderboard, values, train-value, plot."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.methods import get_method
from ..exact.problems import load_problem
from ..experiments import api
from ..utils.checks import (
    check_batch,
    check_choice,
    check_count,
    check_out_dir,
    check_out_file,
    check_range,
    check_seed,
)
from .common import MAX_STEPS, add_process_arg, check_problem, check_process


def add_tradeoff(sub) -> None:
    """`toycode tradeoff`."""
    to = sub.add_parser(
        "tradeoff", help="sweep methods × settings × seeds into a resumable table (results.jsonl)"
    )
    to.add_argument("--problem", required=True)
    to.add_argument("--methods", nargs="+", required=True)
    to.add_argument("--grid", default="", help='e.g. "N=1,2,4,8;B=5;lam=2;scale=1;K=8,32"')
    to.add_argument("--seeds", type=int, default=5)
    to.add_argument("--n", type=int, default=512, help="samples per row")
    to.add_argument("--out", default="results")
    to.add_argument(
        "--value",
        default="tweedie",
        choices=api.VALUES,
        help="value estimator of every row (grid knobs M, k set its options)",
    )
    add_process_arg(to)
    to.set_defaults(func=run_tradeoff)


def _check_tradeoff(args, grid: dict) -> None:
    """The problem, methods, grid, seeds, n and folder of a sweep, before any row runs."""
    from ..experiments.tradeoff import expand

    problem = check_problem(args.problem)
    check_process(args.process)
    check_count("seeds", args.seeds)
    check_count("n", args.n)
    records = [get_method(m) for m in args.methods]
    unread = sorted(k for k in grid if not any(k in r.knobs for r in records))
    if unread:
        raise ValueError(
            f"grid knob(s) {unread} are read by none of the methods {', '.join(args.methods)}"
        )
    for knob, values in grid.items():
        for v in values:
            if knob in ("lam", "scale"):
                check_range(knob, v, 0.0, None)
            else:
                check_count(knob, v, 1, MAX_STEPS if knob == "T" else None)
    jobs = expand(args.methods, grid)
    for method, settings in jobs:
        draws = settings.get("M", 4) if args.value in ("lookahead", "posterior") else 1
        width = settings.get("N", 1) * settings.get("K", 1) * draws
        check_batch(f"{method} {settings} at n={args.n}", args.n * width, problem.prior.dim)
    check_out_dir("out", args.out)


def run_tradeoff(args) -> None:
    from ..experiments.tradeoff import parse_grid, run_sweep

    grid = parse_grid(args.grid)
    _check_tradeoff(args, grid)
    rows = run_sweep(
        args.problem,
        args.methods,
        grid,
        seeds=args.seeds,
        out=args.out,
        n=args.n,
        process=args.process,
        value=args.value,
    )
    print(f"{len(rows)} rows in {args.out}/results.jsonl")


def add_leaderboard(sub) -> None:
    """`toycode leaderboard`."""
    lb = sub.add_parser(
        "leaderboard",
        help="every method × budgets × seeds against the exact "
        "targets, at equal compute (resumable table + figure)",
    )
    lb.add_argument(
        "--out",
        default="leaderboard",
        help="folder of results.jsonl, leaderboard.md and the figure",
    )
    lb.add_argument(
        "--benches", nargs="+", help="between box ring mnist-class mnist-gmm (default: all)"
    )
    lb.add_argument("--methods", nargs="+", help="method records or variants (default: all)")
    lb.add_argument("--fast", action="store_true", help="the tests' size (minutes → seconds)")
    lb.add_argument("--figure", help="PNG path (default OUT/leaderboard.png)")
    lb.add_argument("--no-progress", action="store_true")
    lb.set_defaults(func=run_leaderboard)


def run_leaderboard(args) -> None:
    from ..experiments.plots import save
    from ..leaderboard.board import BENCHES, entries, plot_leaderboard, run_leaderboard, table

    for bench in args.benches or ():
        check_choice("bench", bench, BENCHES)
    entries(args.methods)
    out = check_out_dir("out", args.out)
    check_out_file("table", out / "leaderboard.md")
    check_out_file("figure", args.figure or out / "leaderboard.png")
    from ..experiments.shards import process_shard

    shard = process_shard("cpu")
    rows = run_leaderboard(
        args.out,
        benches=args.benches or BENCHES,
        methods=args.methods,
        size="fast" if args.fast else "default",
        progress=not args.no_progress,
        shard=shard,
    )
    if shard.index > 0:  # the first process writes the table and the figure
        return
    text = table(rows)
    (Path(args.out) / "leaderboard.md").write_text(text + "\n")
    print(text)
    figure = args.figure or str(Path(args.out) / "leaderboard.png")
    saved = save(plot_leaderboard(rows), figure)
    procs = f" ({shard.count} processes)" if shard.count > 1 else ""
    print(f"{len(rows)} rows in {args.out}/results.jsonl{procs}; wrote {saved}")


def add_values(sub) -> None:
    """`toycode values`."""
    va = sub.add_parser(
        "values",
        help="each value estimator's error against the exact V_t, "
        "by noise level (table and figure)",
    )
    va.add_argument("--problem", required=True)
    va.add_argument(
        "--only",
        nargs="+",
        choices=[v for v in api.VALUES if v != "exact"],
        help="estimators to compare (default: all)",
    )
    va.add_argument("--n", type=int, default=1000, help="states per noise level")
    va.add_argument("--steps", type=int, default=100)
    va.add_argument("--seed", type=int, default=0)
    va.add_argument("--out", help="PNG path (default figures/values_PROBLEM.png)")
    add_process_arg(va)
    va.set_defaults(func=run_values)


def run_values(args) -> None:
    from ..experiments.plots import plot_value_errors, save
    from ..experiments.value_study import DEFAULT_ESTIMATORS, format_value_errors, value_errors

    problem = check_problem(args.problem)
    check_process(args.process)
    check_count("n", args.n)
    check_count("steps", args.steps, 1, MAX_STEPS)
    check_seed("seed", args.seed)
    if problem.lam <= 0:
        raise ValueError(
            f"values compares against the exact soft value, which needs lam > 0; "
            f"{problem.name} has lam={problem.lam:g}"
        )
    estimators = [e for e in DEFAULT_ESTIMATORS if not args.only or e[0] in args.only]
    draws = max(opts.get("value_samples", 1) for _, opts in estimators)
    check_batch(f"n={args.n} states with M={draws} draws each", args.n * draws, problem.prior.dim)
    check_out_file("out", args.out or f"figures/values_{problem.name}.png")
    rows = value_errors(
        args.problem, estimators, steps=args.steps, n=args.n, seed=args.seed, process=args.process
    )
    name = load_problem(args.problem).name
    print(
        f"problem {name}: value estimators against the exact soft value V_t, n = {args.n} "
        f"states per level, analytic denoiser, T = {args.steps}, {args.process}"
    )
    print(format_value_errors(rows))
    out = args.out or f"figures/values_{name}.png"
    fig = plot_value_errors(rows, f"{name}: value estimators against the exact V_t")
    print(f"wrote {save(fig, out)}")


def add_train_value(sub) -> None:
    """`toycode train-value`."""
    tv = sub.add_parser("train-value", help="train the learned soft value of a toy problem")
    tv.add_argument("--problem", required=True)
    tv.add_argument("--out", help="checkpoint (default toycode/checkpoints/value_P_PROCESS.pt)")
    tv.add_argument("--steps", type=int, default=1500)
    tv.add_argument("--seed", type=int, default=0)
    add_process_arg(tv)
    tv.set_defaults(func=run_train_value)


def run_train_value(args) -> None:
    from ..training.learned_value import train_value

    problem = check_problem(args.problem)
    check_process(args.process)
    check_count("steps", args.steps)
    check_seed("seed", args.seed)
    if args.out:
        check_out_file("out", args.out)
    if problem.lam <= 0:
        raise ValueError(f"a learned value needs lam > 0, got lam={problem.lam}")
    ckpt = train_value(
        load_problem(args.problem), args.out, process=args.process, steps=args.steps, seed=args.seed
    )
    print(
        json.dumps(
            {"steps": ckpt["train"]["steps"], "loss": ckpt["loss"], "process": ckpt["process"]}
        )
    )


PLOT_KINDS = ["frontier", "distance-nfe", "reward-nfe", "genealogy", "reward-fidelity"]


def add_plot(sub) -> None:
    """`toycode plot`."""
    pl = sub.add_parser("plot", help="plots from a tradeoff or sd-sweep table")
    pl.add_argument("results", help="the folder holding results.jsonl")
    pl.add_argument(
        "--kind",
        default=None,
        choices=PLOT_KINDS,
        help="default: frontier (tradeoff), reward-nfe (sd-sweep); sd-sweep tables "
        "have reward-nfe and reward-fidelity",
    )
    pl.add_argument("--out", help="PNG path (default: in the results folder)")
    pl.set_defaults(func=run_plot)


def run_plot(args) -> None:
    from ..experiments.plots import plot_genealogy, plot_sweep, save
    from ..experiments.tradeoff import read_results

    folder = Path(args.results)
    if not folder.is_dir():
        raise ValueError(
            f"results {args.results!r} is "
            f"{'a file' if folder.exists() else 'not found'}: give the folder "
            f"holding results.jsonl"
        )
    if args.out:
        check_out_file("out", args.out)
    rows = read_results(args.results)
    if not rows:
        raise ValueError(
            f"no results in {args.results}/results.jsonl; run `toycode tradeoff` first"
        )
    if "prompt" in rows[0]:  # an sd-sweep table
        kind = args.kind or "reward-nfe"
        if kind == "reward-fidelity" and all(r.get("fidelity") is None for r in rows):
            raise ValueError(
                f"{args.results} has no prompt fidelity: run sd-sweep with --fidelity-model"
            )
        out = args.out or str(Path(args.results) / f"sd_{kind}.png")
        print(f"wrote {save(plot_sweep(rows, kind), out)}")
        return
    args.kind = args.kind or "frontier"
    problem = load_problem(rows[0]["problem"])
    out = args.out or str(Path(args.results) / f"{problem.name}_{args.kind}.png")
    if args.kind == "genealogy":
        blocks = []
        api.sample(
            problem,
            method="code",
            num_candidates=16,
            block_size=10,
            selection="softmax",
            n=64,
            seed=0,
            callback=blocks.append,
        )
        fig = plot_genealogy(blocks)
    else:
        fig = plot_sweep(rows, args.kind, problem)
    print(f"wrote {save(fig, out)}")


def add_lineages(sub) -> None:
    """`toycode lineages`."""
    li = sub.add_parser(
        "lineages",
        help="genealogy collapse: SMC's surviving lineages and distance to p* per "
        "resampling rule (table and figure)",
    )
    li.add_argument("--problem", default="between")
    li.add_argument(
        "--selections",
        nargs="+",
        default=["softmax", "systematic", "stratified", "ssp"],
        help="resampling rules (softmax = multinomial)",
    )
    li.add_argument("--particles", type=int, default=16, help="K particles per population")
    li.add_argument("--populations", type=int, default=64)
    li.add_argument("--steps", type=int, default=50)
    li.add_argument("--seeds", type=int, default=8)
    li.add_argument("--out", default="figures/lineages.png", help="PNG path")
    li.set_defaults(func=run_lineages)


def run_lineages(args) -> None:
    from ..core.steering import SELECTIONS
    from ..experiments.genealogy import lineage_study, plot_lineages, summarize_lineages
    from ..experiments.plots import save

    problem = check_problem(args.problem)
    for s in args.selections:
        check_choice("selection", s, [k for k in SELECTIONS if k != "argmax"])
    check_count("particles", args.particles, 2)
    check_count("populations", args.populations)
    check_count("steps", args.steps, 1, MAX_STEPS)
    check_count("seeds", args.seeds)
    check_out_file("out", args.out)
    rows = lineage_study(
        problem,
        tuple(args.selections),
        particles=args.particles,
        populations=args.populations,
        steps=args.steps,
        seeds=args.seeds,
    )
    print(
        f"problem {problem.name}: SMC, K = {args.particles}, B = 1, T = {args.steps}, "
        f"{args.populations} populations, {args.seeds} seeds (mean ± s.e.)"
    )
    print(f"{'selection':<12} {'lineages left':>16} {'MMD²/floor':>16}")
    for s in summarize_lineages(rows):
        print(
            f"{s['selection']:<12} {100 * s['surviving']:>9.1f} ± {100 * s['surviving_se']:.1f} %"
            f" {s['distance']:>9.2f} ± {s['distance_se']:.2f}"
        )
    print(f"wrote {save(plot_lineages(rows, args.particles), args.out)}")


def add_compositions(sub) -> None:
    """`toycode compositions`."""
    co = sub.add_parser(
        "compositions",
        help="annealed p^β and product p1·p2 targets: composed scores vs SMC vs FK correctors "
        "against the exact law (table and figure)",
    )
    co.add_argument("--beta", type=float, default=4.0, help="annealing exponent β of p^β")
    co.add_argument("--particles", type=int, nargs="+", default=[4, 16, 64])
    co.add_argument("--n", type=int, default=512, help="outputs per row")
    co.add_argument("--steps", type=int, default=50)
    co.add_argument("--seeds", type=int, default=3)
    co.add_argument("--out", default="figures/compositions.png", help="PNG path")
    co.set_defaults(func=run_compositions)


def run_compositions(args) -> None:
    from ..experiments.composition import (
        composition_study,
        default_compositions,
        plot_compositions,
        summarize_compositions,
    )
    from ..experiments.plots import save

    check_range("beta", args.beta, 0.0, 20.0, low_open=True)
    for k in args.particles:
        check_count("particles", k, 2, 512)
    check_count("n", args.n)
    check_count("steps", args.steps, 1, MAX_STEPS)
    check_count("seeds", args.seeds)
    check_out_file("out", args.out)
    comps = default_compositions(args.beta)
    rows = composition_study(
        comps, particles=tuple(args.particles), n=args.n, steps=args.steps, seeds=args.seeds
    )
    print(
        f"compositions of the `between` prior: exact denoisers, T = {args.steps}, n = {args.n} "
        f"outputs, {args.seeds} seeds; MMD² / noise floor (1 = exact), mean ± s.e."
    )
    print(f"{'composition':<14} {'route':<6} {'K':>4} {'distance':>16}")
    for s in summarize_compositions(rows):
        print(
            f"{s['composition']:<14} {s['route']:<6} {s['K']:>4} "
            f"{s['distance']:>9.2f} ± {s['se']:.2f}"
        )
    print(f"wrote {save(plot_compositions(comps, rows), args.out)}")


def add_dimensions(sub) -> None:
    """`toycode dimensions`."""
    di = sub.add_parser(
        "dimensions",
        help="the curse of dimension: each sampler family's distance to p* on the MNIST "
        "mixture projected to d = 2 … 784 (resumable table + figure)",
    )
    di.add_argument("--out", default="figures/dimensions", help="folder of results.jsonl")
    di.add_argument("--dims", type=int, nargs="+", default=[2, 8, 32, 128, 784])
    di.add_argument("--methods", nargs="+", help="entries (default: one per family)")
    di.add_argument("--budgets", type=int, nargs="+", default=[4, 16])
    di.add_argument("--n", type=int, default=256, help="outputs per row")
    di.add_argument("--steps", type=int, default=20)
    di.add_argument("--seeds", type=int, default=2)
    di.add_argument("--figure", default="figures/dimensions.png", help="PNG path")
    di.add_argument("--no-progress", action="store_true")
    di.set_defaults(func=run_dimensions)


def run_dimensions(args) -> None:
    from ..experiments.plots import save
    from ..experiments.shards import process_shard
    from ..leaderboard.board import Size, entries
    from ..leaderboard.dimensions import dimension_table, plot_dimensions
    from ..leaderboard.dimensions import run_dimensions as run

    for d in args.dims:
        check_count("dims", d, 1, 784)
    entries(args.methods)
    for b in args.budgets:
        check_count("budgets", b, 1, 256)
    check_count("n", args.n)
    check_count("steps", args.steps, 1, MAX_STEPS)
    check_count("seeds", args.seeds)
    out = check_out_dir("out", args.out)
    check_out_file("table", out / "dimensions.md")
    check_out_file("figure", args.figure)
    shard = process_shard("cpu")
    rows = run(
        args.out,
        dims=tuple(args.dims),
        methods=args.methods,
        size=Size(args.steps, args.n, tuple(args.budgets), args.seeds),
        shard=shard,
        progress=not args.no_progress,
    )
    if shard.index > 0:
        return
    text = dimension_table(rows)
    (Path(args.out) / "dimensions.md").write_text(text + "\n")
    print(text)
    saved = save(plot_dimensions(rows), args.figure)
    print(f"{len(rows)} rows in {args.out}/results.jsonl; wrote {saved}")


def add_routes(sub) -> None:
    """`toycode routes`."""
    ro = sub.add_parser(
        "routes",
        help="the cheapest route to p*: method × value × allocation at equal budgets, tuned "
        "on some seeds and reported on fresh ones (resumable table + figure)",
    )
    ro.add_argument("--out", default="figures/routes", help="folder of results.jsonl")
    ro.add_argument("--benches", nargs="+", default=["between", "box", "ring"])
    ro.add_argument("--budgets", type=int, nargs="+", default=[4, 16, 32])
    ro.add_argument("--figure", default="figures/routes.png", help="PNG path")
    ro.add_argument("--no-progress", action="store_true")
    ro.set_defaults(func=run_routes_cli)


def run_routes_cli(args) -> None:
    from ..experiments.plots import save
    from ..experiments.shards import process_shard
    from ..leaderboard.routes import ROUTE_BENCHES, plot_routes, reported, routes_table, run_routes

    for b in args.benches:
        check_choice("bench", b, ROUTE_BENCHES)
    for m in args.budgets:
        check_count("budgets", m, 1, 256)
    out = check_out_dir("out", args.out)
    check_out_file("table", out / "routes.md")
    check_out_file("figure", args.figure)
    shard = process_shard("cpu")
    rows = run_routes(
        args.out,
        benches=tuple(args.benches),
        budgets=tuple(args.budgets),
        shard=shard,
        progress=not args.no_progress,
    )
    if shard.index > 0:
        return
    lines = reported(rows)
    text = routes_table(lines)
    (Path(args.out) / "routes.md").write_text(text + "\n")
    print(text)
    saved = save(plot_routes(lines), args.figure)
    print(f"{len(rows)} rows in {args.out}/results.jsonl; wrote {saved}")
