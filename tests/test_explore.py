"""The notebook explorer: widget values set from Python change what it shows; no browser."""

import subprocess
import sys

import pytest

import toycode
from toycode import load_problem
from toycode.experiments.explorer import Explorer, method_names

SMALL = {"n": 128, "steps": 20}


@pytest.fixture(scope="module")
def explorer():
    return toycode.explore("between", method="code", num_candidates=16, selection="argmax", **SMALL)


@pytest.mark.slow
def test_importing_toycode_does_not_import_ipywidgets():
    code = (
        "import sys, toycode; assert 'ipywidgets' not in sys.modules; "
        "ex = toycode.explore('between', n=64); "
        "assert 'ipywidgets' in sys.modules; print(type(ex).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "Explorer"


@pytest.mark.slow
def test_menus_list_every_method(explorer):
    assert list(explorer.controls["method"].options) == method_names()
    assert {"base", "bon", "svdd", "code", "smc", "dps", "exact-guidance"} <= set(method_names())
    assert isinstance(explorer, Explorer) and explorer.last["error"] is None


@pytest.mark.slow
def test_changing_n_changes_the_nfe_shown(explorer):
    explorer.set(method="code", N=16, value="tweedie")
    before, text, png = explorer.last["nfe"], explorer.stats.value, explorer.image.value
    explorer.controls["N"].value = 4
    after = explorer.last["nfe"]
    # Tweedie values: 1 + (T − 1)·N denoiser calls per sample (the ledger's formula)
    assert (before, after) == (1 + 19 * 16, 1 + 19 * 4)
    assert f"<td>{after:.0f}</td>" in explorer.stats.value and explorer.stats.value != text
    assert explorer.image.value != png and explorer.image.value[:4] == b"\x89PNG"
    scatter = explorer.last["figure"].axes[0].collections[-1]
    assert len(scatter.get_offsets()) == SMALL["n"]


@pytest.mark.slow
def test_changing_the_method_changes_the_reward_shown(explorer):
    explorer.set(method="code", N=16, selection="argmax")
    argmax_reward = explorer.last["reward"]
    explorer.controls["method"].value = "base"
    base = explorer.last
    # argmax CoDe climbs to the reward's peak (0); the base model sits far below it
    assert base["reward"] < argmax_reward - 1.0 and base["nfe"] == SMALL["steps"]
    assert f"{base['reward']:.3f}" in explorer.stats.value
    assert base["exact_reward"] == pytest.approx(load_problem("between").target.reward_mean)


@pytest.mark.slow
def test_lambda_moves_the_exact_target(explorer):
    explorer.set(method="code", lam=0.5)
    exact = load_problem("between").with_lam(0.5).target.reward_mean
    assert explorer.last["exact_reward"] == pytest.approx(exact)
    assert explorer.last["mmd_floor"] > 0


@pytest.mark.slow
def test_refused_combinations_show_an_error_instead_of_raising():
    ex = Explorer("box", method="code", **SMALL)
    assert ex.last["error"] is None
    last = ex.set(method="dps")  # box is an indicator: no gradient to guide with
    assert "differentiable" in last["error"] and last["figure"] is None
    assert "differentiable" in ex.message.value and ex.stats.value == ""
    ex.set(method="code", value="exact", lam=0.0)
    assert "lam" in ex.last["error"]
    ex.set(lam=3.0)
    assert ex.last["error"] is None and ex.message.value == "" and ex.last["nfe"] > 0
    with pytest.raises(ValueError, match="unknown controls"):
        ex.set(temperature=1.0)
