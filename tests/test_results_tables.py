"""Results tables are strict JSON lines, and ``tradeoff.load`` turns them into a DataFrame."""

import json
import math
import sys
from pathlib import Path

import pytest

from toycode.experiments.plots import plot_sweep
from toycode.experiments.tradeoff import load, read_results, run_sweep

COMMITTED = sorted(
    (Path(__file__).resolve().parents[1] / "figures" / "sweeps").glob("*/results.jsonl")
)


def _refuse(name):
    raise ValueError(f"not strict JSON: {name}")


def _strict_rows(path: Path) -> list[dict]:
    return [json.loads(line, parse_constant=_refuse) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """SMC copies particles, so its rows have an infinite k-NN KL: the case strict JSON lacks."""
    out = tmp_path_factory.mktemp("sweep")
    run_sweep(
        "between",
        ["bon", "smc"],
        {"N": [2], "K": [4], "T": [10]},
        seeds=2,
        out=out,
        n=64,
        progress=False,
    )
    return out


@pytest.mark.slow
def test_fresh_sweep_is_strict_json_and_keeps_infinities(sweep):
    rows = _strict_rows(sweep / "results.jsonl")
    assert len(rows) == 4
    smc = [r for r in rows if r["method"] == "smc"]
    assert smc and all(
        r["kl_to_target"] is None and r["nonfinite"]["kl_to_target"] == "inf" for r in smc
    )
    assert all("nonfinite" not in r for r in rows if r["method"] == "bon")
    restored = [r for r in read_results(sweep) if r["method"] == "smc"]
    assert all(r["kl_to_target"] == math.inf and "nonfinite" not in r for r in restored)


def test_committed_results_are_strict_json():
    assert len(COMMITTED) >= 3
    infinite = []
    for path in COMMITTED:
        rows = _strict_rows(path)
        assert rows, path
        infinite += [r for r in rows if "nonfinite" in r]
        assert all(r[k] is None for r in infinite for k in r["nonfinite"]), path
    # the SMC rows of the committed sweeps repeat samples: their KL estimates are +∞
    assert any(r["method"] == "smc" and r["nonfinite"].get("kl_to_base") == "inf" for r in infinite)


def test_a_table_written_before_the_shared_schema_reads_with_todays_names(tmp_path):
    row = {"problem": "box", "method": "bon", "settings": {}, "seed": 0, "mmd2_over_floor": 2.5}
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n")
    (read,) = read_results(tmp_path)
    assert read["distance"] == 2.5 and "mmd2_over_floor" not in read
    assert list(read) == ["problem", "method", "settings", "seed", "distance"]


def test_load_flattens_settings(sweep):
    table = load(sweep)
    assert len(table) == 4 and "settings" not in table.columns
    for column in (
        "problem",
        "method",
        "N",
        "K",
        "T",
        "seed",
        "nfe",
        "reward_mean",
        "distance",
        "kl_to_target",
        "wall_s",
    ):
        assert column in table.columns, column
    bon = table[table.method == "bon"]
    smc = table[table.method == "smc"]
    assert (bon.N == 2).all() and bon.K.isna().all() and (smc.K == 4).all()
    assert (smc.kl_to_target == math.inf).all() and bon.kl_to_target.map(math.isfinite).all()
    committed = load(COMMITTED[0].parent)
    assert len(committed) == len(COMMITTED[0].read_text().splitlines())


def test_load_names_the_extra_when_pandas_is_missing(sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"\[tables\]"):
        load(sweep)


def test_plots_leave_out_null_and_infinite_values(sweep):
    rows = read_results(sweep)
    raw = _strict_rows(sweep / "results.jsonl")  # nulls as written, nothing restored
    for table in (rows, raw):
        fig = plot_sweep(table, "frontier")
        assert "2 rows with infinite or missing values left out" in fig.axes[0].get_title()
