"""Bad input through every subcommand: refused up front, in one line, touching no file.

Each case runs `toycode ARGS` in-process with the working directory in a scratch folder that
holds the inputs a careless user might point at (a file where a folder is expected, a folder
where a file is, an image that is not one, results folders that are not ours). Every case must
exit non-zero with at most a few lines on stderr naming the bad value, no traceback, nothing on
stdout, and leave the scratch folder exactly as it was (names, sizes, bytes and mtimes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toycode.cli import main
from toycode.exact.problems import load_problem

ROOT = Path(__file__).resolve().parents[1]

ROW = {
    "problem": "between",
    "method": "code",
    "settings": {"N": 2},
    "seed": 0,
    "n": 8,
    "nfe": 10.0,
    "reward_calls": 2.0,
    "reward_grads": 0.0,
    "reward_mean": -1.0,
    "reward_se": 0.1,
    "mmd2": 0.01,
    "mmd2_floor": 0.001,
    "distance": 10.0,
    "kl_to_target": 0.5,
    "kl_to_base": 1.0,
    "mode_tv": 0.1,
    "distinct": 8,
    "wall_s": 0.01,
    "exact_reward": -0.5,
    "exact_kl": 1.2,
}
"""A well-formed tradeoff row (the schema run_sweep writes), to surround the damage with."""


def _lines(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _scratch(root: Path) -> None:
    """The inputs the cases point at."""
    (root / "afile").write_text("not a folder\n")
    (root / "adir").mkdir()
    (root / "adir" / "keep.txt").write_text("kept\n")
    (root / "notimage.png").write_text("not an image\n")
    (root / "empty_prompts.txt").write_text("\n  \n")
    (root / "bad.json").write_text("{not json")
    spec = load_problem("between").to_dict()
    spec["lam"] = 0.0
    (root / "lam0.json").write_text(json.dumps(spec))
    (root / "table").mkdir()
    (root / "table" / "results.jsonl").write_text(_lines(ROW, {**ROW, "seed": 1}))
    (root / "board").mkdir()
    (root / "board" / "leaderboard.json").write_text(json.dumps({"size": "default"}) + "\n")
    # results folders that are not ours (issue 25): refused with the line that is wrong
    for name, text in {
        "garbage": _lines(ROW, "garbage{", {**ROW, "seed": 1}),
        "foreign": _lines({"id": 1, "loss": 0.3}, {"id": 2, "loss": 0.2}),
        "notobject": _lines(ROW, "[1, 2, 3]", {**ROW, "seed": 1}),
    }.items():
        (root / name).mkdir()
        (root / name / "results.jsonl").write_text(text)
    (root / "badsweep").mkdir()
    (root / "badsweep" / "sweep.json").write_text('{"model": "tiny:sd",')
    (root / "othersweep").mkdir()
    (root / "othersweep" / "sweep.json").write_text(json.dumps({"model": "someone/else"}))


def _snapshot(root: Path) -> dict:
    """Every path under root with its kind, bytes and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        body = path.read_bytes() if path.is_file() else None
        out[str(path.relative_to(root))] = (path.is_dir(), body, st.st_mtime_ns)
    return out


SD = ["sd", "--model", "tiny:sd", "--prompt", "a cat", "--out", "out"]
SW = ["sd-sweep", "--model", "tiny:sd", "--out", "out"]
B = ["--problem", "between"]
TO = ["tradeoff", *B, "--methods", "code"]

CASES = [
    # demo: sizes, names, paths, memory, the parser's own errors
    (["demo", "--n", "0"], "n"),
    (["demo", "--steps", "0"], "steps"),
    (["demo", "--steps", "1001"], "steps"),
    (["demo", "--num-candidates", "0"], "num_candidates"),
    (["demo", "--block-size", "0"], "block_size"),
    (["demo", "--problem", "nowhere"], "nowhere"),
    (["demo", "--process", "banana"], "banana"),
    (["demo", "--backends", "banana"], "banana"),
    (["demo", "--out-dir", "afile"], "afile"),
    (["demo", "--out-dir", "afile/sub"], "afile"),
    (["demo", "--seed", "-1"], "seed"),
    (["demo", "--n", "1000000000"], "limit"),
    (["demo", "--n", "abc"], "abc"),
    # compare
    (["compare", "--problems", "nowhere"], "nowhere"),
    (["compare", "--value", "banana"], "banana"),
    (["compare", "--n", "0"], "n"),
    (["compare", "--process", "banana"], "banana"),
    # target
    (["target", *B, "--n", "0"], "n"),
    (["target", *B, "--out", "adir"], "adir"),
    (["target", *B, "--out", "afile/t.npz"], "afile"),
    (["target", "--problem", "bad.json"], "JSON"),
    (["target", *B, "--n", "10000000000"], "limit"),
    # sample
    (["sample", *B, "--out", "adir"], "adir"),
    (["sample", *B, "--method", "banana"], "banana"),
    (["sample", *B, "--eta", "2"], "eta"),
    (["sample", *B, "--value", "lookahead", "--value-samples", "0"], "value_samples"),
    (["sample", *B, "--lookahead-steps", "0"], "lookahead_steps"),
    (["sample", *B, "--backend", "banana"], "banana"),
    (["sample", *B, "--selection", "banana"], "banana"),
    (["sample", *B, "--backward-lr", "0"], "backward_lr"),
    (["sample", *B, "--n", "1000000", "--num-candidates", "100000"], "limit"),
    (["sample", *B, "--process", "banana"], "banana"),
    # train
    (["train", *B, "--out", "adir"], "adir"),
    (["train", *B, "--out", "m.pt", "--steps", "0"], "steps"),
    (["train", *B, "--out", "m.pt", "--batch-size", "0"], "batch_size"),
    (["train", *B, "--out", "m.pt", "--process", "banana"], "banana"),
    (["train", "--problem", "nowhere", "--out", "m.pt"], "nowhere"),
    # train-value
    (["train-value", *B, "--steps", "0"], "steps"),
    (["train-value", *B, "--out", "adir"], "adir"),
    (["train-value", *B, "--process", "banana"], "banana"),
    (["train-value", "--problem", "lam0.json"], "lam"),
    # values
    (["values", *B, "--n", "0"], "n"),
    (["values", *B, "--process", "banana"], "banana"),
    (["values", *B, "--out", "adir"], "adir"),
    # lineages: rules, sizes, paths
    (["lineages", "--selections", "argmax"], "selection"),
    (["lineages", "--selections", "banana"], "banana"),
    (["lineages", "--particles", "1"], "particles"),
    (["lineages", "--seeds", "0"], "seeds"),
    (["lineages", "--problem", "nope"], "nope"),
    (["lineages", "--out", "adir"], "adir"),
    # compositions: exponent, sizes, paths
    (["compositions", "--beta", "0"], "beta"),
    (["compositions", "--particles", "1"], "particles"),
    (["compositions", "--n", "0"], "n"),
    (["compositions", "--out", "adir"], "adir"),
    # dimensions: dimensions, methods, sizes, paths
    (["dimensions", "--dims", "0"], "dims"),
    (["dimensions", "--dims", "785"], "dims"),
    (["dimensions", "--methods", "banana"], "banana"),
    (["dimensions", "--n", "0"], "n"),
    (["dimensions", "--out", "afile"], "afile"),
    (["dimensions", "--figure", "adir"], "adir"),
    # routes: benches, budgets, paths
    (["routes", "--benches", "mnist-class"], "mnist-class"),
    (["routes", "--budgets", "0"], "budgets"),
    (["routes", "--out", "afile"], "afile"),
    (["routes", "--figure", "adir"], "adir"),
    (["values", *B, "--steps", "0"], "steps"),
    (["values", *B, "--only", "banana"], "banana"),
    (["values", *B, "--n", "100000000"], "limit"),
    (["values", "--problem", "lam0.json"], "lam"),
    # tradeoff: empty work, bad grids, the folder
    ([*TO, "--seeds", "0"], "seeds"),
    (["tradeoff", *B, "--methods", "banana"], "banana"),
    ([*TO, "--grid", "N=0"], "N"),
    ([*TO, "--grid", "N=abc"], "abc"),
    ([*TO, "--grid", "speed=3"], "speed"),
    ([*TO, "--grid", "T=5000"], "T"),
    ([*TO, "--out", "afile"], "afile"),
    ([*TO, "--n", "0"], "n"),
    ([*TO, "--grid", "N=1000000000"], "limit"),
    (["tradeoff", *B, "--methods", "base", "--grid", "N=4"], "N"),
    ([*TO, "--process", "banana"], "banana"),
    # plot
    (["plot", "nowhere"], "nowhere"),
    (["plot", "afile"], "afile"),
    (["plot", "adir"], "no results"),
    (["plot", "table", "--kind", "banana"], "banana"),
    (["plot", "table", "--out", "adir"], "adir"),
    # leaderboard: paths refused before the board runs, a folder run at another size
    (["leaderboard", "--out", "afile"], "afile"),
    (["leaderboard", "--figure", "adir", "--out", "lb"], "adir"),
    (["leaderboard", "--benches", "banana"], "banana"),
    (["leaderboard", "--methods", "banana"], "banana"),
    (
        ["leaderboard", "--out", "board", "--fast", "--benches", "between", "--methods", "base"],
        "leaderboard run",
    ),
    # mnist-gmm: d ≥ 1 and no larger than MNIST's 784 pixels
    (["mnist-gmm", "--dims", "0"], "dims"),
    (["mnist-gmm", "--dims", "1000"], "784"),
    (["mnist-gmm", "--digit", "10"], "digit"),
    (["mnist-gmm", "--n", "0"], "n"),
    (["mnist-gmm", "--steps", "0"], "steps"),
    (["mnist-gmm", "--out-dir", "afile"], "afile"),
    # mnist-demo, mnist-eval, train-mnist
    (["mnist-demo", "--digit", "-1"], "digit"),
    (["mnist-demo", "--n", "0"], "n"),
    (["mnist-demo", "--lam", "-1"], "lam"),
    (["mnist-demo", "--out-dir", "afile"], "afile"),
    (["mnist-demo", "--value", "banana"], "banana"),
    (["mnist-eval", "--n", "0"], "n"),
    (["mnist-eval", "--steps", "0"], "steps"),
    (["mnist-eval", "--data-dir", "afile"], "afile"),
    (["train-mnist", "--model", "banana"], "banana"),
    (["train-mnist", "--model", "unet", "--steps", "0"], "steps"),
    (["train-mnist", "--model", "classifier", "--epochs", "0"], "epochs"),
    (["train-mnist", "--model", "unet", "--out", "adir"], "adir"),
    # sd: devices, models, prompts, references, sizes
    ([*SD, "--device", "banana"], "banana"),
    (["sd", "--model", "tiny:banana", "--prompt", "a cat", "--out", "out"], "banana"),
    (["sd", "--model", "/no/such/model", "--prompt", "a cat", "--out", "out"], "/no/such/model"),
    (["sd", "--model", "tiny:sd", "--prompt", "a cat", "--out", "afile"], "afile"),
    ([*SD, "--n", "0"], "n"),
    (
        ["sd", "--model", "tiny:sd", "--prompt", "a", "b", "c", "--n", "2", "--out", "out"],
        "prompts",
    ),
    ([*SD, "--strength", "0.5"], "reference"),
    ([*SD, "--reference", "notimage.png"], "notimage.png"),
    ([*SD, "--reference", "missing.png"], "missing.png"),
    ([*SD, "--eta", "1.5"], "eta"),
    ([*SD, "--num-candidates", "1000000000"], "limit"),
    ([*SD, "--reward", "banana"], "banana"),
    ([*SD, "--reward", "aesthetic"], "aesthetic-head"),
    ([*SD, "--max-batch", "0"], "max_batch"),
    # sd-sweep: an absurd grid is refused before sweep.json, as is every other mistake
    ([*SW, "--grid", "N=1000000000"], "limit"),
    (["sd-sweep", "--model", "tiny:sd", "--out", "afile"], "afile"),
    ([*SW, "--methods", "dps"], "dps"),
    ([*SW, "--seeds", "0"], "seeds"),
    ([*SW, "--prompts", "nowhere.txt"], "nowhere.txt"),
    ([*SW, "--prompts", "empty_prompts.txt"], "no prompts"),
    ([*SW, "--grid", "M=2"], "M"),
    ([*SW, "--methods", "base", "--grid", "N=4"], "N"),
    ([*SW, "--device", "banana"], "banana"),
    ([*SW, "--limit-prompts", "0"], "limit_prompts"),
    ([*SW, "--grid", "T=0"], "T"),
    ([*SW, "--steps", "0"], "steps"),
    ([*SW, "--score-decoder", "nowhere"], "nowhere"),
    # the command itself
    ([], "command"),
    (["banana"], "banana"),
]

SWEEP_ONE = ["--methods", "base", "--seeds", "1", "--limit-prompts", "1", "--steps", "2"]
RESULTS_CASES = [
    (["plot", "garbage"], "line 2"),
    (["plot", "foreign"], "line 1"),
    (["plot", "notobject"], "line 2"),
    ([*TO, "--out", "garbage", "--seeds", "1", "--n", "8"], "line 2"),
    ([*TO, "--out", "foreign", "--seeds", "1", "--n", "8"], "line 1"),
    (["sd-sweep", "--model", "tiny:sd", "--out", "badsweep", *SWEEP_ONE], "sweep.json"),
    (["sd-sweep", "--model", "tiny:sd", "--out", "othersweep", *SWEEP_ONE], "model"),
]
"""A results folder that is not ours (issue 25's results part: every row checked, the line
named, a refused resume leaving the folder as it was: toycode.experiments.results)."""


@pytest.fixture(scope="module", autouse=True)
def _imported():
    """Import what the runners import lazily, so that a case's time is its own checks'."""
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for name in (
        "experiments.demo",
        "experiments.plots",
        "experiments.tradeoff",
        "experiments.value_study",
        "leaderboard.board",
        "training.learned_value",
        "mnist.demo",
        "mnist.gmm",
        "mnist.eval",
        "mnist.models",
        "sd.backend",
        "sd.sweep",
        "sd.run",
        "sd.rewards",
        "sd.score_decoder",
        "sd.tiny",
    ):
        importlib.import_module(f"toycode.{name}")


def _refused(tmp_path, monkeypatch, capsys, argv, needle) -> float:
    _scratch(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    start = time.perf_counter()
    code = main(argv)
    took = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert code != 0, (argv, out, err)
    assert "Traceback" not in err and out == "", (out, err)
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 3 and needle in err, err
    assert _snapshot(tmp_path) == before, "the refusal touched the scratch folder"
    return took


@pytest.mark.slow
@pytest.mark.parametrize("argv, needle", CASES, ids=[" ".join(a) or "(none)" for a, _ in CASES])
def test_bad_input_is_refused_before_any_work(tmp_path, monkeypatch, capsys, argv, needle):
    took = _refused(tmp_path, monkeypatch, capsys, argv, needle)
    assert took < 2.0, f"refusing {argv} took {took:.2f} s: checked after work began?"


@pytest.mark.slow
@pytest.mark.parametrize("argv, needle", RESULTS_CASES, ids=[" ".join(a) for a, _ in RESULTS_CASES])
def test_a_results_folder_that_is_not_ours_is_refused_untouched(
    tmp_path, monkeypatch, capsys, argv, needle
):
    _refused(tmp_path, monkeypatch, capsys, argv, needle)


def test_the_table_covers_every_subcommand():
    from toycode.cli import build_parser

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)
    covered = {argv[0] for argv, _ in CASES if argv}
    assert commands <= covered, sorted(commands - covered)
    assert len(CASES) >= 60


def test_default_knobs_a_method_does_not_read_are_not_applied(tmp_path, monkeypatch):
    """sd-sweep --methods base with the default grid is not refused for N, B, K."""
    from toycode.cli import build_parser
    from toycode.cli.sd import _check_sweep, _sweep_grid
    from toycode.sd.sweep import load_prompts

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(
        ["sd-sweep", "--model", "tiny:sd", "--out", "o", "--methods", "base"]
    )
    grid = _sweep_grid(args)
    assert grid == {}
    _check_sweep(args, load_prompts(args.prompts), grid)
    args.methods = ["base", "code"]
    assert _sweep_grid(args) == {"N": [4], "B": [5]}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["values", "--problem", "between", "--process", "banana"], "banana"),
        (["sd-sweep", "--model", "tiny:sd", "--out", "out", "--grid", "N=1000000000"], "limit"),
        (["demo", "--n", "nope"], "nope"),
    ],
)
def test_the_real_exit_path(tmp_path, argv, needle):
    """`python -m toycode` as a shell runs it: status 2, one line, no traceback, no file."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "toycode", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"toycode {argv[0]}: error: ")
    assert list(tmp_path.iterdir()) == []
