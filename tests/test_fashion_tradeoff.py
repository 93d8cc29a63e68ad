"""The Fashion-MNIST reward-vs-prompt-fidelity study at a tiny size: rows, costs, the figure."""

import json

import pytest
from test_fashion import needs_data

from toycode.sd.fashion.__main__ import main
from toycode.sd.fashion.prompts import class_prompt
from toycode.sd.fashion.tradeoff import (
    confusable_partners,
    expected_nfe,
    format_summary,
    method_grids,
    run_fashion_tradeoff,
    summarize,
)

T = 4


def test_expected_nfe_is_the_cost_formula():
    assert expected_nfe("base", {}, 20) == 20
    assert expected_nfe("bon", {"N": 8}, 20) == 1 + 19 * 8
    assert expected_nfe("code", {"N": 4, "B": 5}, 20) == 1 + 19 * 4
    assert expected_nfe("svdd", {"N": 2}, 20) == 1 + 19 * 2
    assert expected_nfe("smc", {"K": 8, "B": 5, "lam": 50.0}, 20) == 160
    assert expected_nfe("dps", {"scale": 4.0}, 20) == 20


def test_bad_options_are_one_line_errors(capsys):
    with pytest.raises(ValueError, match="budgets"):
        method_grids((1, 2))
    with pytest.raises(ValueError, match="scales"):
        method_grids((2,), scales=(0.0,))
    with pytest.raises(ValueError, match="among bon, code, svdd, smc,"):
        run_fashion_tradeoff(reward="jpeg", methods=["dps"], figure=None)
    with pytest.raises(ValueError, match="reward must be one of"):
        run_fashion_tradeoff(reward="clip", figure=None)
    assert main(["tradeoff", "--seeds", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m toycode.sd.fashion tradeoff: error:") and "\n" not in err


def test_an_output_that_is_a_file_or_a_figure_that_is_a_folder_is_refused_untouched(
    tmp_path, capsys
):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    for argv, says in (
        (["--out", str(taken)], "existing file, not a folder"),
        (["--out", str(taken / "x")], "which is a file"),
        (["--out", str(tmp_path / "new"), "--figure", str(tmp_path)], "not a file"),
    ):
        assert main(["tradeoff", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and "\n" not in err, err
    assert taken.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.slow
def test_tiny_tradeoff_rows_and_figure(tmp_path):
    figure = tmp_path / "tradeoff.png"
    rows = run_fashion_tradeoff(
        tmp_path / "sweep",
        seeds=1,
        steps=T,
        budgets=(2,),
        classes=[0, 7],
        figure=figure,
        progress=False,
    )
    # base + four methods at N = 2, two prompts, one seed
    assert len(rows) == 5 * 2
    assert {r["prompt"] for r in rows} == {class_prompt(0), class_prompt(7)}
    for r in rows:
        assert isinstance(r["reward"], float) and r["reward"] < 0  # −kB
        assert r["fidelity"] in (0.0, 1.0)
        assert r["nfe"] == expected_nfe(r["method"], r["settings"], T)
        assert (tmp_path / "sweep" / r["image"]).is_file()
    assert {r["method"]: r["nfe"] for r in rows} == {
        "base": T,
        "bon": 7,
        "code": 7,
        "svdd": 7,
        "smc": 8,
    }
    assert (tmp_path / "sweep" / ".gitignore").read_text() == "images/\n"
    assert figure.is_file() and figure.stat().st_size > 10_000
    summary = summarize(rows)
    assert set(summary) == {"bon", "code", "svdd", "smc"}
    assert all(pts[0]["nfe"] == T and pts[0]["n"] == 2 for pts in summary.values())
    assert "SVDD" in format_summary(rows)
    # resuming computes nothing new: the same rows come back
    again = run_fashion_tradeoff(
        tmp_path / "sweep",
        seeds=1,
        steps=T,
        budgets=(2,),
        classes=[0, 7],
        figure=None,
        progress=False,
    )
    assert sorted(r["image"] for r in again) == sorted(r["image"] for r in rows)


@needs_data
def test_confusable_partners_are_the_classifiers_known_confusions():
    """On the test split the committed classifier confuses the tops with each other and the
    shoes with each other, as every Fashion-MNIST classifier does."""
    partners = confusable_partners()
    assert set(partners) == set(range(10)) and all(partners[c] != c for c in partners)
    assert (partners[0], partners[6]) == (6, 0)  # T-shirt/top ↔ shirt
    assert partners[2] == 4  # pullover → coat
    assert partners[7] == 9 and partners[9] == 7  # sneaker ↔ ankle boot
    assert partners[5] == 7  # sandal → sneaker


@needs_data
@pytest.mark.slow
def test_the_confusable_reward_competes_with_the_prompt_and_dps_ascends_it(tmp_path):
    """Reward log p(c′ | x): DPS at a large scale raises it over the base image of the same
    noise for both prompts and costs T UNet calls; rows carry the partners in sweep.json.

    The 1-nat margin: in the committed study (T = 20, scale 8) every one of the 40 paired gains
    exceeded 1.4 nats (mean 7.5, s.d. 3.6 per image), so a gain under 1 for one image is a
    1.8-s.d. event there; a DPS that did not ascend the reward gains 0 on average."""
    rows = run_fashion_tradeoff(
        tmp_path / "sweep",
        reward="confusable",
        seeds=1,
        steps=T,
        budgets=(2,),
        scales=(8.0,),
        classes=[0, 7],
        methods=["code", "dps"],
        figure=tmp_path / "c.png",
        progress=False,
    )
    assert {r["method"] for r in rows} == {"base", "code", "dps"}
    base = {r["prompt"]: r["reward"] for r in rows if r["method"] == "base"}
    for r in rows:
        assert r["reward"] <= 0  # a log-probability
        if r["method"] == "dps":
            assert r["nfe"] == T and r["reward"] > base[r["prompt"]] + 1.0
    held = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert held["reward"] == "confusable-logprob"
    assert held["partners"] == {"T-shirt/top": "shirt", "sneaker": "ankle boot"}
    assert (tmp_path / "c.png").stat().st_size > 10_000
