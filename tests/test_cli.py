import json

import numpy as np
import pytest

from toycode.cli import main
from toycode.exact.problems import builtin_problems, load_problem


@pytest.fixture
def problem_file(tmp_path, between):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(between.to_dict()))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_builtins_load():
    assert {"between", "box", "ring"} <= set(builtin_problems())
    for name in builtin_problems():
        assert load_problem(name).name == name


def test_target_command(capsys, tmp_path, problem_file, between):
    out_file = tmp_path / "t.npz"
    code, out, _ = run(
        capsys, "target", "--problem", problem_file, "--n", 300, "--seed", 1, "--out", out_file
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["log_z"] == pytest.approx(between.target.log_z)
    assert summary["kl_to_base"] == pytest.approx(between.target.kl_to_base)
    assert np.load(out_file)["samples"].shape == (300, 2)


@pytest.mark.parametrize("backend", ["analytic", "trained"])
def test_sample_command(capsys, tmp_path, backend):
    out_file = tmp_path / "x.npz"
    code, out, _ = run(
        capsys,
        "sample",
        "--problem",
        "between",
        "--backend",
        backend,
        "--method",
        "code",
        "--num-candidates",
        4,
        "--block-size",
        5,
        "--steps",
        20,
        "--n",
        50,
        "--seed",
        0,
        "--out",
        out_file,
    )
    assert code == 0
    data = np.load(out_file)
    assert data["samples"].shape == (50, 2) and data["rewards"].shape == (50,)
    assert int(data["nfe"]) == 50 * (1 + 19 * 4) == json.loads(out)["nfe"]
    assert int(data["reward_calls"]) == 50 * 4 * 4


@pytest.mark.parametrize(
    "method, nfe",
    [
        ("base", 20),
        ("bon", 1 + 19 * 3),
        ("svdd", 1 + 19 * 3),
        ("smc", 20),
        ("dps", 20),
        ("exact-guidance", 20),
    ],
)
def test_method_names(capsys, method, nfe):
    code, out, _ = run(
        capsys,
        "sample",
        "--problem",
        "between",
        "--method",
        method,
        "--num-candidates",
        3,
        "--steps",
        20,
        "--n",
        16,
        "--particles",
        8,
    )
    result = json.loads(out)
    assert code == 0 and result["nfe_per_sample"] == nfe
    assert result["block_size"] == {"bon": 20, "svdd": 1, "smc": 1}.get(method, 20)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda p: p.pop("lam"), "'lam'"),
        (lambda p: p["prior"].pop("covs"), "prior.covs"),
        (lambda p: p["prior"].update(weights=[0.5, 0.5, 0.5]), "sum to 1"),
        (lambda p: p["prior"].update(covs=[[[1, 0], [0, 1]]] * 2), "mismatch"),
        (lambda p: p["reward"].update(type="cubic"), "reward.type"),
        (lambda p: p["reward"].pop("center"), "reward.center"),
        (lambda p: p.update(lam=-1), "lam"),
        (
            lambda p: p.update(reward={"type": "box", "low": [0, 0, 0], "high": [1, 1, 1]}),
            "reward.low",
        ),
    ],
)
def test_malformed_problem_files_name_the_field(capsys, tmp_path, between, edit, field):
    spec = between.to_dict()
    edit(spec)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    out_file = tmp_path / "never.npz"
    code, _, err = run(capsys, "sample", "--problem", path, "--n", 5, "--out", out_file)
    assert code == 2 and field in err and len(err.strip().splitlines()) == 1
    assert not out_file.exists() and list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize(
    "args, name",
    [
        (["--num-candidates", "0"], "num_candidates"),
        (["--block-size", "0"], "block_size"),
        (["--steps", "0"], "steps"),
        (["--steps", "1001"], "steps"),
        (["--lam", "-2"], "lam"),
        (["--n", "0"], "n"),
        (["--method", "smc", "--particles", "0"], "particles"),
        (["--method", "smc", "--ess-threshold", "2"], "ess_threshold"),
        (["--method", "dps", "--scale", "-1"], "scale"),
        (["--method", "universal", "--recurrence", "0"], "recurrence"),
    ],
)
def test_bad_sampler_arguments(capsys, args, name):
    code, _, err = run(capsys, "sample", "--problem", "between", *args)
    assert code == 2 and name in err


def test_unknown_problem_and_backend(capsys, tmp_path):
    code, _, err = run(capsys, "sample", "--problem", "nowhere")
    assert code == 2 and "nowhere" in err
    code, _, err = run(capsys, "sample", "--problem", "between", "--backend", tmp_path / "m.pt")
    assert code == 2 and "backend" in err
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    code, _, err = run(capsys, "target", "--problem", bad)
    assert code == 2 and "JSON" in err


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_a_corrupt_checkpoint_is_a_one_line_error_naming_the_file(capsys, tmp_path, content):
    from toycode.training.train import CHECKPOINT_DIR

    path = tmp_path / f"{content}.pt"
    good = (CHECKPOINT_DIR / "mlp_gmm3.pt").read_bytes()
    path.write_bytes(b"not a checkpoint" if content == "garbage" else good[: len(good) // 2])
    code, out, err = run(
        capsys, "sample", "--problem", "between", "--backend", path, "--n", 4, "--steps", 5
    )
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(path) in err and "Traceback" not in err


def test_exact_value_needs_positive_lam(capsys, tmp_path, between):
    spec = between.to_dict()
    spec["lam"] = 0.0
    path = tmp_path / "zero.json"
    path.write_text(json.dumps(spec))
    code, _, err = run(capsys, "sample", "--problem", path, "--value", "exact", "--n", 3)
    assert code == 2 and "lam" in err


@pytest.mark.slow
def test_demo_and_compare_commands(capsys, tmp_path):
    """The demo's table and figures, and compare's gradient columns, on a small run."""
    code, out, _ = run(capsys, "demo", "--n", 64, "--steps", 10, "--out-dir", tmp_path)
    assert code == 0 and "CoDe softmax exact-V" in out and "exact p* (closed form)" in out
    assert {p.name for p in tmp_path.iterdir()} == {
        "gmm_between_samples.png",
        "gmm_between_tradeoff.png",
    }
    code, out, _ = run(capsys, "compare", "--problems", "box", "--n", 64, "--steps", 10)
    assert code == 0 and "reward not differentiable" in out and "backprop" in out
