"""The dimension study: rows per (d, method, budget, seed), resumable, a table and a figure."""

from toycode.cli import main
from toycode.experiments.tradeoff import read_results
from toycode.leaderboard.dimensions import dimension_table


def test_a_small_study_runs_resumes_and_tabulates(tmp_path, capsys):
    args = ["dimensions", "--dims", "2", "8", "--methods", "bon-softmax", "smc", "--n", "16"]
    args += ["--steps", "4", "--budgets", "2", "--seeds", "1", "--no-progress"]
    args += ["--out", str(tmp_path / "dims"), "--figure", str(tmp_path / "dims.png")]
    assert main(args) in (0, None)
    rows = read_results(tmp_path / "dims")
    assert sorted((r["dim"], r["method"]) for r in rows) == [
        (2, "bon-softmax"),
        (2, "smc"),
        (8, "bon-softmax"),
        (8, "smc"),
    ]
    assert all(r["bench"] == "mnist-gmm" and r["distance"] > 0 for r in rows)
    assert (tmp_path / "dims.png").stat().st_size > 10_000
    capsys.readouterr()
    assert main(args) in (0, None)  # resumed: nothing recomputed
    assert len(read_results(tmp_path / "dims")) == 4
    md = dimension_table(rows)
    assert "| SMC | smc | 2T |" in md and "d = 8" in md
