import json

import pytest

from toycode.cli import main
from toycode.experiments import api
from toycode.experiments.plots import plot_sweep
from toycode.experiments.tradeoff import expand, parse_grid, read_results, run_sweep


def test_grid_parsing_and_expansion():
    grid = parse_grid("N=1,4;B=5;lam=2;K=8")
    assert grid == {"N": [1, 4], "B": [5], "lam": [2.0], "K": [8]}
    jobs = expand(["bon", "code", "smc", "base"], grid)
    assert ("bon", {"N": 4, "lam": 2.0}) in jobs and ("smc", {"K": 8, "B": 5, "lam": 2.0}) in jobs
    assert ("base", {}) in jobs and len(jobs) == 2 + 2 + 1 + 1
    for bad, match in [("N=1;Q=2", "grid key"), ("N=a", "numbers"), ("N", "KEY=")]:
        with pytest.raises(ValueError, match=match):
            parse_grid(bad)
    with pytest.raises(ValueError, match="method"):
        expand(["magic"], grid)


def test_sweep_is_resumable_and_loses_at_most_the_row_in_flight(tmp_path, monkeypatch):
    grid = parse_grid("N=2,4;T=10")
    real = api.sample
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sweep("between", ["bon"], grid, seeds=2, out=tmp_path, n=64, progress=False)
    assert len(read_results(tmp_path)) == 2
    with open(tmp_path / "results.jsonl", "a") as f:  # a row torn by a kill
        f.write('{"problem": "betw')
    monkeypatch.setattr(api, "sample", real)
    rows = run_sweep("between", ["bon"], grid, seeds=2, out=tmp_path, n=64, progress=False)
    assert len(rows) == 4 and len({(json.dumps(r["settings"]), r["seed"]) for r in rows}) == 4
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)

    def never(*args, **kwargs):
        raise AssertionError("a finished row was recomputed")

    monkeypatch.setattr(api, "sample", never)
    assert (
        len(run_sweep("between", ["bon"], grid, seeds=2, out=tmp_path, n=64, progress=False)) == 4
    )
    row = rows[0]
    for key in (
        "nfe",
        "reward_calls",
        "reward_grads",
        "reward_mean",
        "mmd2",
        "kl_to_target",
        "kl_to_base",
        "wall_s",
        "seed",
        "settings",
        "method",
        "problem",
    ):
        assert key in row


@pytest.mark.slow
def test_plots_and_cli(tmp_path, capsys):
    assert (
        main(
            [
                "tradeoff",
                "--problem",
                "between",
                "--methods",
                "bon",
                "smc",
                "--grid",
                "N=2,4;K=4;T=10",
                "--seeds",
                "2",
                "--n",
                "64",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    rows = read_results(tmp_path)
    assert len(rows) == 6
    for kind in ("frontier", "distance-nfe", "reward-nfe", "genealogy"):
        assert main(["plot", str(tmp_path), "--kind", kind]) == 0
        assert (tmp_path / f"between_{kind}.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="kind"):
        plot_sweep(rows, "violin")
    assert main(["plot", str(tmp_path / "empty")]) == 2
