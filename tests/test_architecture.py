"""The package's shape: method records, the backend contract, and the import layering."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from toycode import api, methods
from toycode.cli import build_parser, main
from toycode.exact.metrics import evaluate, median_bandwidth
from toycode.methods import METHODS, Method, get_method
from toycode.tradeoff import expand

PACKAGE = Path(__file__).resolve().parents[1] / "toycode"


@pytest.mark.parametrize("name, N, B, K, selection", [
    ("base", 1, 20, 1, "argmax"), ("bon", 8, 20, 1, "argmax"), ("svdd", 8, 1, 1, "argmax"),
    ("code", 8, 5, 1, "argmax"), ("smc", 1, 5, 16, "systematic"), ("dps", 1, 20, 1, "argmax"),
    ("code-gradient", 8, 5, 1, "argmax")])
def test_each_record_sets_n_b_k_as_documented(name, N, B, K, selection):
    s = get_method(name).sampler_settings(20, num_candidates=8, block_size=5, particles=16)
    assert (s["num_candidates"], s["block_size"], s.get("particles", 1), s["selection"]) == (
        N, B, K, selection)


def test_method_defaults_for_block_size():
    assert get_method("code").sampler_settings(100)["block_size"] == 10
    assert get_method("smc").sampler_settings(100, particles=4)["block_size"] == 1


def test_gradient_methods_are_marked_and_refuse_a_box_reward(box):
    marked = {n for n, m in METHODS.items() if m.needs_gradient}
    assert marked == {"dps", "dps-detached", "universal", "code-gradient", "tds"}
    for name in marked:
        with pytest.raises(ValueError, match="differentiable"):
            api.sample(box, method=name, n=4, steps=5)


def test_adding_a_method_is_adding_one_record(monkeypatch, capsys, between):
    """A new record is sampled by api.sample, offered by the CLI and swept by tradeoff."""
    record = Method("bon-softmax", "best-of-N with softmax selection", candidates=True,
                    selection="softmax", knobs=("N", "T"))
    monkeypatch.setitem(METHODS, record.name, record)
    res = api.sample(between, method="bon-softmax", num_candidates=4, n=8, steps=10)
    assert res.settings["selection"] == "softmax" and res.settings["block_size"] == 10
    assert res.nfe_per_sample == 1 + 9 * 4
    sample = next(a for a in build_parser()._subparsers._group_actions[0].choices["sample"]
                  ._actions if a.dest == "method")
    assert "bon-softmax" in sample.choices
    assert main(["sample", "--problem", "between", "--method", "bon-softmax", "--n", "4",
                 "--steps", "5", "--num-candidates", "2"]) == 0
    assert expand(["bon-softmax"], {"N": [2, 4], "B": [5]}) == [
        ("bon-softmax", {"N": 2}), ("bon-softmax", {"N": 4})]


def test_records_are_frozen_and_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        METHODS["code"].selection = "softmax"
    with pytest.raises(ValueError, match="knobs"):
        Method("x", "x", knobs=("N", "speed"))
    with pytest.raises(ValueError, match="method"):
        get_method("nope")


def test_the_backend_contract_has_five_members():
    from toycode.backends.base import Backend
    members = [m for m in vars(Backend) if not m.startswith("_")]
    members += list(Backend.__annotations__)
    assert set(members) == {"process", "prior_sample", "predict", "decode", "noise_to"}


def test_evaluate_reports_only_what_is_read(between):
    gen = torch.Generator().manual_seed(0)
    x, ref = between.target.sample(64, gen), between.target.sample(64, gen)
    keys = set(evaluate(x, between.reward(x), between.target, ref, median_bandwidth(ref)))
    assert keys == {"distinct", "reward_mean", "reward_se", "mmd2", "kl_to_target",
                    "kl_to_base", "mode_masses", "mode_tv"}


# -- layering: each module may import only from its own layer or below --------------------------
LAYERS = [
    {"checks", "io", "seeding"},
    {"diffusion", "exact"},
    {"backends"},
    {"sampler", "guidance", "values", "search"},
    {"methods", "train", "plots", "image_rewards", "learned_value"},
    {"api", "demo", "tradeoff", "explorer", "value_study"},
    {"mnist", "sd"},
    {"leaderboard"},
    {"cli", "__main__"},
]
LAYER = {name: k for k, names in enumerate(LAYERS) for name in names}


def _unit(parts):
    """The layering unit of a module path inside toycode: its subpackage or its module name."""
    return parts[0] if parts else "__init__"


def _imports(path: Path):
    """Every toycode-internal module a file imports, as unit names (relative imports resolved)."""
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    package = list(rel[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [a.name] for a in node.names] if not node.module else [target]
            elif node.module and node.module.startswith("toycode"):
                names = [node.module.split(".")[1:]]
            else:
                continue
            for t in names:
                if t:
                    yield _unit(t)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("toycode."):
                    yield _unit(a.name.split(".")[1:])


def test_every_module_is_placed_in_a_layer():
    units = {_unit(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")}
    assert units - {"__init__"} <= set(LAYER), sorted(units - set(LAYER) - {"__init__"})


def test_nothing_imports_upwards():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        me = _unit(parts)
        if me == "__init__":
            continue
        for dep in _imports(path):
            if dep in LAYER and dep != me and LAYER[dep] > LAYER[me]:
                bad.append(f"{'/'.join(parts)} imports {dep}")
    assert not bad, bad


def test_the_core_knows_nothing_of_the_wings():
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if _unit(parts) == "__init__" or LAYER[_unit(parts)] >= LAYER["mnist"]:
            continue   # the wings themselves, and what sits above them (leaderboard, cli)
        assert not {"mnist", "sd"} & set(_imports(path)), path


def test_public_names_still_import_from_the_top():
    from toycode import ExactValue, Process, load_problem, sample_blockwise  # noqa: F401
    assert methods.METHODS is api.METHODS
