"""The package's shape: method records, the backend contract, and the import layering."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from toycode.cli import build_parser, main
from toycode.core import methods
from toycode.core.methods import METHODS, Method, get_method
from toycode.exact.metrics import evaluate, median_bandwidth
from toycode.experiments import api
from toycode.experiments.tradeoff import expand

PACKAGE = Path(__file__).resolve().parents[1] / "toycode"


@pytest.mark.parametrize(
    "name, N, B, K, selection",
    [
        ("base", 1, 20, 1, "argmax"),
        ("bon", 8, 20, 1, "argmax"),
        ("svdd", 8, 1, 1, "argmax"),
        ("code", 8, 5, 1, "argmax"),
        ("smc", 1, 5, 16, "systematic"),
        ("dps", 1, 20, 1, "argmax"),
        ("code-gradient", 8, 5, 1, "argmax"),
    ],
)
def test_each_record_sets_n_b_k_as_documented(name, N, B, K, selection):
    s = get_method(name).sampler_settings(20, num_candidates=8, block_size=5, particles=16)
    assert (s["num_candidates"], s["block_size"], s.get("particles", 1), s["selection"]) == (
        N,
        B,
        K,
        selection,
    )


def test_method_defaults_for_block_size():
    assert get_method("code").sampler_settings(100)["block_size"] == 10
    assert get_method("smc").sampler_settings(100, particles=4)["block_size"] == 1


@pytest.mark.slow
def test_gradient_methods_are_marked_and_refuse_a_box_reward(box):
    marked = {n for n, m in METHODS.items() if m.needs_gradient}
    assert marked == {
        "dps",
        "dps-damped",
        "dps-detached",
        "universal",
        "code-gradient",
        "unicode",
        "tds",
        "psi",
    }
    for name in marked:
        with pytest.raises(ValueError, match="differentiable"):
            api.sample(box, method=name, n=4, steps=5)


def test_adding_a_method_is_adding_one_record(monkeypatch, capsys, between):
    """A new record is sampled by api.sample, offered by the CLI and swept by tradeoff."""
    record = Method(
        "bon-softmax",
        "best-of-N with softmax selection",
        uses_candidates=True,
        selection="softmax",
        knobs=("N", "T"),
    )
    monkeypatch.setitem(METHODS, record.name, record)
    res = api.sample(between, method="bon-softmax", num_candidates=4, n=8, steps=10)
    assert res.settings["selection"] == "softmax" and res.settings["block_size"] == 10
    assert res.nfe_per_sample == 1 + 9 * 4
    sample = next(
        a
        for a in build_parser()._subparsers._group_actions[0].choices["sample"]._actions
        if a.dest == "method"
    )
    assert "bon-softmax" in sample.choices
    assert (
        main(
            [
                "sample",
                "--problem",
                "between",
                "--method",
                "bon-softmax",
                "--n",
                "4",
                "--steps",
                "5",
                "--num-candidates",
                "2",
            ]
        )
        == 0
    )
    assert expand(["bon-softmax"], {"N": [2, 4], "B": [5]}) == [
        ("bon-softmax", {"N": 2}),
        ("bon-softmax", {"N": 4}),
    ]


def test_records_are_frozen_and_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        METHODS["code"].selection = "softmax"
    with pytest.raises(ValueError, match="knobs"):
        Method("x", "x", knobs=("N", "speed"))
    with pytest.raises(ValueError, match="method"):
        get_method("nope")


def test_the_backend_contract_has_five_members():
    from toycode.core.backend import Backend

    members = [m for m in vars(Backend) if not m.startswith("_")]
    members += list(Backend.__annotations__)
    assert set(members) == {"process", "prior_sample", "predict", "decode", "noise_to"}


def test_evaluate_reports_only_what_is_read(between):
    gen = torch.Generator().manual_seed(0)
    x, ref = between.target.sample(64, gen), between.target.sample(64, gen)
    keys = set(evaluate(x, between.reward(x), between.target, ref, median_bandwidth(ref)))
    assert keys == {
        "distinct",
        "reward_mean",
        "reward_se",
        "mmd2",
        "sw2",
        "w2",
        "emd",
        "cov_trace",
        "cov_trace_exact",
        "cov_trace_err",
        "kl_to_target",
        "kl_to_base",
        "mode_masses",
        "mode_tv",
    }


# -- layering: the folders are the layers; a module imports only from its own folder or below --
LAYERS = (
    "utils",
    "core",
    "exact",
    "backends",
    "training",
    "experiments",
    ("mnist", "sd"),
    ("leaderboard", "course"),
    "cli",
)
"""Bottom to top; units sharing a layer (the wings; the leaderboard and the course) never import
each other; the command line is the top layer. Only the entry points (the package's ``__init__``
and ``__main__``) sit above, outside folders."""
LAYER = {
    name: k
    for k, names in enumerate(LAYERS)
    for name in (names if isinstance(names, tuple) else (names,))
}
ENTRY_POINTS = {"__init__", "__main__"}


def _unit(parts):
    """The layering unit of a module path inside toycode: its top folder (or its module name)."""
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


def _modules():
    for path in PACKAGE.rglob("*.py"):
        yield path, path.relative_to(PACKAGE).with_suffix("").parts


def test_every_folder_is_a_layer_and_no_module_sits_loose():
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert folders == set(LAYER), (sorted(folders - set(LAYER)), sorted(set(LAYER) - folders))
    loose = {p.stem for p in PACKAGE.glob("*.py")}
    assert loose == ENTRY_POINTS, sorted(loose - ENTRY_POINTS)


def test_nothing_imports_upwards_or_across_the_wings():
    bad = []
    for path, parts in _modules():
        me = _unit(parts)
        if me in ENTRY_POINTS:
            continue
        for dep in _imports(path):
            if dep in LAYER and dep != me and LAYER[dep] >= LAYER[me]:
                bad.append(f"{'/'.join(parts)} imports {dep}")
    assert not bad, bad


def test_the_core_knows_nothing_above_it():
    """The sampler's folder imports nothing but utils: no exact targets, no model, no wing."""
    for path, parts in _modules():
        if parts[0] == "core":
            assert set(_imports(path)) <= {"core", "utils"}, path


def test_public_names_still_import_from_the_top():
    from toycode import ExactValue, Process, load_problem, sample_blockwise  # noqa: F401

    assert methods.METHODS is api.METHODS


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(PACKAGE.parent), node


def _body_lines(node) -> int:
    body = (
        node.body[1:]
        if isinstance(node.body[0], ast.Expr)
        and isinstance(getattr(node.body[0], "value", None), ast.Constant)
        else node.body
    )
    return node.end_lineno - body[0].lineno + 1


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, node in _functions()
        if node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, long


def test_the_engine_reads_as_the_reading_edition_plus_one_steering_call():
    sizes = {
        node.name: _body_lines(node)
        for _, node in _functions()
        if node.name in ("sample_blockwise", "code_sample")
    }
    assert sizes["sample_blockwise"] <= 70 and sizes["code_sample"] <= 40, sizes


def test_private_helpers_past_four_parameters_take_the_rest_by_keyword():
    """A helper with many inputs is called with their names: f(x, y, *, lam=..., steps=...)."""
    positional = [
        f"{path}:{node.lineno} {node.name}"
        for path, node in _functions()
        if node.name.startswith("_")
        and not node.name.startswith("__")
        and len([a for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")])
        > 4
    ]
    assert not positional, positional
