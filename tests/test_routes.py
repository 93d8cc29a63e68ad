"""The route study: every allocation tuned on some seeds, the best reported on fresh ones, the
cheapest route read off the report seeds only."""

import json

import pytest

from toycode.core.search import beam_nfe, beam_widths
from toycode.leaderboard.board import Size
from toycode.leaderboard.routes import (
    REPORT_SEEDS,
    TUNING_SEEDS,
    cheapest,
    reported,
    routes_table,
    run_routes,
    settings_grid,
)


def test_the_grid_spends_the_budget_every_way():
    grid = settings_grid(50, 4, differentiable=False)
    code = {tuple(sorted(k.items())) for e, v, k in grid if e == "code-softmax" and v == "tweedie"}
    assert code == {(("B", b), ("N", 4)) for b in (1, 5, 10, 50)}
    assert not any(e in ("tds", "code-gradient") for e, _, _ in grid)
    assert {v for _, v, _ in grid} == {"tweedie", "posterior", "learned", "lookahead", "rollout"}
    assert {v for e, v, _ in grid if e.startswith("dts")} == {"rollout"}  # a tree reads none
    fk = {(e, k["B"]) for e, v, k in grid if e.startswith("fk-") and k["K"] == 4}
    assert fk == {(e, b) for e in ("fk-max", "fk-add", "fk-rt") for b in (5, 10, 20)}
    beams = {json.dumps(k) for e, _, k in grid if e == "dsearch"}
    assert len(beams) == 4  # N ∈ {2, 4} × B ∈ {T/5, T/10}, each width spending about 4T
    for knobs in map(json.loads, beams):
        widths = beam_widths(knobs["W"], -(-50 // knobs["B"]))
        assert abs(beam_nfe(50, knobs["B"], knobs["N"], widths) / (4 * 50) - 1) < 0.15
    assert any(e == "tds" for e, _, _ in settings_grid(50, 4, differentiable=True))
    short = settings_grid(6, 2, differentiable=False)  # no block longer than the chain
    assert all(k.get("B", 1) <= 6 for _, _, k in short)


@pytest.mark.slow
def test_a_small_study_tunes_then_reports_on_fresh_seeds(tmp_path):
    rows = run_routes(
        tmp_path / "r", benches=("ring",), budgets=(2,), size=Size(6, 32, (2,), 1), progress=False
    )
    tuning = [r for r in rows if r["phase"] == "tuning"]
    report = [r for r in rows if r["phase"] == "report"]
    assert {r["seed"] for r in tuning} == set(TUNING_SEEDS)
    assert {r["seed"] for r in report} == set(REPORT_SEEDS)
    lines = reported(rows)
    for line in lines:  # the reported knobs are the tuning seeds' best of their group
        group = [
            r
            for r in tuning
            if (r["method"], r["value"], r["budget"]) == (line["entry"], line["value"], 2)
        ]
        means = {}
        for r in group:
            means.setdefault(str(r["settings"]), []).append(r["distance"])
        assert line["tuning"] == pytest.approx(min(sum(v) / len(v) for v in means.values()))
    assert len(
        run_routes(
            tmp_path / "r",
            benches=("ring",),
            budgets=(2,),
            size=Size(6, 32, (2,), 1),
            progress=False,
        )
    ) == len(rows)  # resumed
    assert "| ring |" in routes_table(lines)


def test_the_cheapest_route_is_the_least_budget_whose_tuned_choice_holds():
    """The choice at a budget is made on the tuning seeds; a line that is only good on the
    report seeds (the winner's curse) is not taken."""

    def line(entry, family, budget, tuning, distance):
        return {
            "bench": "b",
            "entry": entry,
            "value": "tweedie",
            "family": family,
            "budget": budget,
            "tuning": tuning,
            "distance": distance,
            "se": 0.2,
            "nfe": 50.0 * budget,
            "knobs": {},
        }

    lines = [
        line("code-softmax", "blockwise", 4, 3.0, 2.5),
        line("smc", "smc", 4, 5.0, 1.0),  # good on the report seeds only: not chosen
        line("smc", "smc", 16, 1.2, 1.5),
        line("tds", "gradient", 2, 1.0, 1.1),
    ]
    assert cheapest(lines)["b"]["budget"] == 16
    assert cheapest(lines, gradient=True)["b"]["entry"] == "tds"
    assert cheapest(lines, floors=1.2)["b"] is None
