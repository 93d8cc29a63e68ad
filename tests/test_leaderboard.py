"""The leaderboard: equal compute, honest skips, a referee that tells p* from p, resumable rows."""

import json
from pathlib import Path

import pytest
import torch

from toycode.cli import main
from toycode.core.methods import METHODS
from toycode.core.sampler import SELECTIONS
from toycode.experiments.tradeoff import read_results
from toycode.leaderboard.board import (
    SIZES,
    VARIANTS,
    Size,
    entries,
    make_bench,
    one_per_population,
    run_leaderboard,
    run_row,
    table,
)

FAST = SIZES["fast"]["toy"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def between_bench():
    return make_bench("between", Size(8, 128, (1, 4), 1))


def test_the_referee_scores_exact_samples_near_one_and_the_base_far_from_it(between_bench):
    """distance = MMD²/floor has mean 1 over exact samples (the floor is that mean), within 3
    s.e. of 8 fresh replicates; the base model p is many replicate spreads above it."""
    target = between_bench.target
    exact = torch.tensor(
        [
            between_bench.score(x, target.reward(x))["distance"]
            for x in (target.sample(128, torch.Generator().manual_seed(s)) for s in range(8))
        ]
    )
    se = float(exact.std()) / 8**0.5
    assert abs(float(exact.mean()) - 1) < 3 * se
    base = run_row(between_bench, "base", 1, 0, 128)
    assert base["distance"] > 1 + 10 * float(exact.std())


def test_one_output_per_population_is_an_equal_weight_draw():
    """After systematic resampling every copy has weight 1/K: a uniform pick keeps the weighted
    mean (within 3 s.e.); the first copy of each population would not (it sits at the CDF's
    low end, here far below)."""
    gen = torch.Generator().manual_seed(0)
    pops, k = 20000, 8
    values = torch.randn(pops, k, generator=gen, dtype=torch.float64).sort(1).values
    logits = 2.0 * values
    chosen = SELECTIONS["systematic"](values, logits, k, gen)
    kept = values.gather(1, chosen).reshape(-1)  # populations after resampling
    weighted = float((torch.softmax(logits, 1) * values).sum(1).mean())
    _, picked = one_per_population(kept, kept, k, gen)
    se = float(picked.std()) / pops**0.5
    assert abs(float(picked.mean()) - weighted) < 3 * se
    assert float(kept[::k].mean()) < weighted - 20 * se


def test_a_folder_holds_one_run_size(tmp_path, capsys):
    out = str(tmp_path / "lb")
    assert (
        main(
            [
                "leaderboard",
                "--benches",
                "between",
                "--methods",
                "base",
                "--fast",
                "--no-progress",
                "--out",
                out,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "leaderboard",
                "--benches",
                "between",
                "--methods",
                "base",
                "--no-progress",
                "--out",
                out,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "holds a leaderboard run" in err and err.count("\n") == 1
    assert len(read_results(out)) == 1


@pytest.mark.parametrize(
    "method, budget, nfe",
    [("bon", 4, 1 + 7 * 4), ("code", 4, 1 + 7 * 4), ("smc", 4, 4 * 8), ("base", 1, 8)],
)
def test_budgets_spend_about_m_times_t_per_output(between_bench, method, budget, nfe):
    """N candidates cost 1 + (T − 1)N; K particles cost K·T per kept output (one per population)."""
    row = run_row(between_bench, method, budget, 0, 128)
    assert row["nfe"] == nfe and row["n"] == 128


def test_softmax_variants_run_the_parent_record_with_softmax(between_bench):
    assert entries().index("code-softmax") == entries().index("code") + 1
    a, b = (run_row(between_bench, m, 4, 0, 128) for m in ("code", "code-softmax"))
    assert a["nfe"] == b["nfe"] and a["reward_mean"] != b["reward_mean"]


@pytest.mark.slow
def test_a_fast_run_is_complete_resumable_and_marks_skips(tmp_path):
    out = tmp_path / "lb"
    rows = run_leaderboard(out, benches=["box"], size="fast", progress=False)
    record = {m: METHODS[VARIANTS.get(m, (m,))[0]] for m in entries()}
    expected = sum(len(FAST.budgets) if record[m].budget else 1 for m in entries()) * FAST.seeds
    assert len(rows) == expected
    skipped = {r["method"] for r in rows if "skipped" in r}
    assert skipped == {m for m, r in METHODS.items() if r.needs_gradient}
    assert all(r["skipped"] == "needs a differentiable reward" for r in rows if "skipped" in r)
    # a torn last line (a killed run) is dropped and its row recomputed; nothing is duplicated
    path = out / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])
    again = run_leaderboard(out, benches=["box"], size="fast", progress=False)
    keys = [(r["bench"], r["method"], r["budget"], r["seed"]) for r in again]
    assert len(keys) == len(set(keys)) == expected
    assert all(json.loads(line) for line in path.read_text().splitlines())
    md = table(again)
    assert md.count("\n") == 2 + len(entries()) - 1 and "| dps (∇r) | — |" in md


def test_bad_bench_or_method_is_a_one_line_error(tmp_path, capsys):
    assert main(["leaderboard", "--benches", "moon", "--out", str(tmp_path / "a"), "--fast"]) == 2
    assert "bench must be one of" in capsys.readouterr().err
    assert main(["leaderboard", "--methods", "magic", "--out", str(tmp_path / "b"), "--fast"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert not read_results(tmp_path / "a") and not read_results(tmp_path / "b")


@pytest.mark.slow
def test_mnist_benches_run_at_the_fast_size(tmp_path, capsys):
    """The class tilt refuses gradient and exact-target methods; the mixture (d = 16 when fast)
    scores mode weights; the CLI writes the table and the figure."""
    out = tmp_path / "lb"
    assert (
        main(
            [
                "leaderboard",
                "--benches",
                "mnist-class",
                "mnist-gmm",
                "--methods",
                "base",
                "bon",
                "dps",
                "exact-guidance",
                "--fast",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = read_results(out)
    skips = {(r["bench"], r["method"]): r.get("skipped") for r in rows}
    assert skips[("mnist-class", "dps")] == "needs a differentiable reward"
    assert skips[("mnist-class", "exact-guidance")] == "needs an exact target"
    assert skips[("mnist-gmm", "exact-guidance")] is None
    gmm = [r for r in rows if r["bench"] == "mnist-gmm" and "skipped" not in r]
    assert all(r["mode_tv_floor"] > 0 and r["distance"] >= 0 for r in gmm)
    assert (out / "leaderboard.png").stat().st_size > 10_000
    assert (out / "leaderboard.md").read_text().startswith("| method | mnist-class | mnist-gmm |")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_accelerate_processes_give_the_rows_of_one(tmp_path):
    """`accelerate launch` on CPU (gloo, no config file): each process takes every second job
    of each bench into one file-locked table, and the rows equal the one-process rows bit for
    bit but for their wall time."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    args = ["--fast", "--benches", "between", "box", "--methods", "base", "bon", "code"]
    args += ["smc", "smc-ssp", "evosearch", "--no-progress"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "ACCELERATE_USE_CPU": "1",
    }
    root = Path(__file__).resolve().parents[1]
    one = subprocess.run(
        [sys.executable, "-m", "toycode", "leaderboard", *args, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    two = subprocess.run(
        [*launch, "-m", "toycode", "leaderboard", *args, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "(2 processes)" in two.stdout

    def by_key(folder):
        rows = read_results(folder)
        return {(r["bench"], r["method"], r["budget"], r["seed"]): r for r in rows}

    want, got = by_key(tmp_path / "one"), by_key(tmp_path / "two")
    assert got.keys() == want.keys() and len(want) > 20
    for k, r in want.items():
        assert {f: v for f, v in got[k].items() if f != "wall_s"} == {
            f: v for f, v in r.items() if f != "wall_s"
        }, k
    assert (tmp_path / "two" / "leaderboard.md").read_text() == (
        tmp_path / "one" / "leaderboard.md"
    ).read_text()


def test_the_committed_table_and_the_readme_show_the_committed_rows():
    """leaderboard.md is ``table`` of the committed rows, and the README's copy is that table: a
    column regenerated without copying its table over would show stale numbers."""
    folder = ROOT / "figures" / "leaderboard"
    committed = table(read_results(folder))
    assert (folder / "leaderboard.md").read_text().strip() == committed
    assert committed in (ROOT / "README.md").read_text()
