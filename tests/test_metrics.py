"""The distances published toy tables report (sliced W₂², exact W₂² and W₁ = EMD, covariance
trace), checked against brute force, closed forms and their noise floors, and carried into the
rows of the tradeoff sweep and the leaderboard.

Statistical checks fix their seeds and compare means over independent replicates with a
tolerance of four standard errors of the difference."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from toycode import GaussianMixture, Problem, Quadratic, load_problem
from toycode.exact.metrics import (
    FLOORED,
    assignment_distances,
    cov_trace,
    projections,
    sliced_w2,
    target_cov_trace,
)
from toycode.exact.reference import PAPER_METRICS, ExactReference
from toycode.experiments.tradeoff import load, read_results, run_sweep
from toycode.leaderboard.board import SIZES, make_bench, run_row, summary, table

F64 = torch.float64
ROW_KEYS = [*PAPER_METRICS, *(f"{k}_floor" for k in PAPER_METRICS if k in FLOORED)]


def _gaussian_target(cov):
    """N(0, cov) in 2-D as a target (a one-component prior at λ = 0)."""
    prior = GaussianMixture([1.0], [[0.0, 0.0]], [cov])
    return Problem(prior, Quadratic([0.0, 0.0], torch.eye(2, dtype=F64)), 0.0, "gauss").target


COV = [[1.0, 0.3], [0.3, 0.5]]


def _mean_se(values):
    v = np.asarray(values, dtype=float)
    return v.mean(), v.std(ddof=1) / math.sqrt(len(v))


def test_projections_are_fixed_unit_orthonormal_frames():
    theta = projections(2)
    assert theta.shape == (256, 2) and torch.equal(theta, projections(2))
    torch.testing.assert_close(theta.norm(dim=1), torch.ones(256, dtype=F64))
    frames = theta.view(128, 2, 2)
    torch.testing.assert_close(
        frames @ frames.transpose(1, 2), torch.eye(2, dtype=F64).expand(128, 2, 2)
    )
    # a frame's cos² sum to 1: the mean over directions of (θᵀδ)² is ‖δ‖²/d exactly
    delta = torch.tensor([1.3, -0.4], dtype=F64)
    assert float(((theta @ delta) ** 2).mean()) == pytest.approx(float(delta @ delta) / 2, 1e-12)
    assert not torch.equal(projections(2, seed=1), theta)
    wide = projections(784)
    torch.testing.assert_close(wide @ wide.T, torch.eye(256, dtype=F64))
    with pytest.raises(ValueError, match="projections"):
        projections(0)


def test_in_one_dimension_sliced_and_exact_w2_are_the_sorted_matching():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, generator=gen, dtype=F64)
    y = 0.7 * torch.randn(300, 1, generator=gen, dtype=F64) + 0.5
    sorted_w2 = float(((x.sort(0).values - y.sort(0).values) ** 2).mean())
    sorted_w1 = float((x.sort(0).values - y.sort(0).values).abs().mean())
    w2, w1 = assignment_distances(x, y)
    assert w2 == pytest.approx(sorted_w2, rel=1e-10)
    assert w1 == pytest.approx(sorted_w1, rel=1e-10)
    assert sliced_w2(x, y) == pytest.approx(sorted_w2, rel=1e-10)  # θ = ±1


def test_sliced_w2_between_unequal_sizes_is_the_exact_quantile_integral():
    """Repeating every point k times leaves an empirical law unchanged; 7 and 5 points become
    35 and 35, where the equal-size formula (sorted matching) is exact."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 2, generator=gen, dtype=F64)
    y = torch.randn(5, 2, generator=gen, dtype=F64) + 1.0
    assert sliced_w2(x, y) == pytest.approx(sliced_w2(x.repeat(5, 1), y.repeat(7, 1)), rel=1e-12)
    assert sliced_w2(x, y) == pytest.approx(sliced_w2(x.repeat(2, 1), y.repeat(3, 1)), rel=1e-12)


def test_assignments_are_the_optimal_transport_found_by_brute_force():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 2, generator=gen, dtype=F64)
    y = torch.randn(6, 2, generator=gen, dtype=F64) + 0.5
    cost = torch.cdist(x, y).numpy()
    perms = [list(p) for p in itertools.permutations(range(6))]
    best_w2 = min((cost[range(6), p] ** 2).mean() for p in perms)
    best_w1 = min(cost[range(6), p].mean() for p in perms)
    w2, w1 = assignment_distances(x, y)
    assert w2 == pytest.approx(best_w2, rel=1e-12) and w1 == pytest.approx(best_w1, rel=1e-12)
    # a larger sample is cut to the common size by a fixed subsample
    assert assignment_distances(torch.cat([x, y]), y) == assignment_distances(torch.cat([x, y]), y)
    assert assignment_distances(x, y, max_points=4)[0] > 0


def test_two_exact_samples_of_one_gaussian_sit_at_the_floor():
    target = _gaussian_target(COV)
    gen = torch.Generator().manual_seed(3)
    exact = ExactReference.of_target(target, 256, gen, replicates=5)
    fresh = [target.sample(256, gen) for _ in range(20)]
    distances = {
        "sw2": exact.sw2,
        "w2": lambda x: exact.wasserstein(x)[0],
        "emd": lambda x: exact.wasserstein(x)[1],
    }
    for key, fn in distances.items():
        mean, se = _mean_se([fn(x) for x in fresh])
        floor = exact.floor_metrics[key]
        # the floor is a mean of 5 draws of the same law: its s.e. is √(20/5) times the mean's
        assert abs(mean - floor) < 4 * math.hypot(se, 2 * se), (key, mean, floor, se)
        shifted = [fn(x + 0.5) for x in fresh[:5]]
        assert min(shifted) > floor + 10 * se, key  # and a shifted sample is far above it


def _paired_values(fn, shift, reps=24, n=256, seed=4):
    """fn(X, Y + δ) − fn(X', Y') over independent exact pairs of N(0, COV)."""
    target = _gaussian_target(COV)
    gen = torch.Generator().manual_seed(seed)
    moved, same = [], []
    for _ in range(reps):
        x, y = target.sample(n, gen), target.sample(n, gen)
        moved.append(fn(x, y + shift))
        x, y = target.sample(n, gen), target.sample(n, gen)
        same.append(fn(x, y))
    (m1, s1), (m0, s0) = _mean_se(moved), _mean_se(same)
    return m1 - m0, math.hypot(s1, s0)


def test_a_mean_shift_adds_the_closed_form_gaussian_w2_and_its_sliced_share():
    """W₂²(N(0, Σ), N(δ, Σ)) = ‖δ‖² + tr(Σ + Σ − 2(Σ^½ Σ Σ^½)^½) = ‖δ‖², and for empirical
    samples E W₂²(X, Y + δ) − E W₂²(X, Y) = ‖δ‖² exactly (the optimal plan of the centred
    samples is optimal for the shifted ones; the means' gap adds its square). Sliced: each
    direction θ adds (θᵀδ)², on average ‖δ‖²/d."""
    delta = torch.tensor([0.6, -0.3], dtype=F64)
    closed = float(delta @ delta)
    gap, se = _paired_values(lambda a, b: assignment_distances(a, b)[0], delta)
    assert abs(gap - closed) < 4 * se, (gap, closed, se)
    gap, se = _paired_values(sliced_w2, delta)
    assert abs(gap - closed / 2) < 4 * se, (gap, closed / 2, se)
    assert 4 * se < 0.25 * closed / 2  # the test can tell ‖δ‖²/d from, say, ‖δ‖²


@pytest.mark.parametrize("name", ["between", "box", "ring"])
def test_covariance_trace_of_a_large_exact_sample_is_the_exact_one(name):
    target = load_problem(name).target
    x = target.sample(200_000, torch.Generator().manual_seed(5))
    exact = target_cov_trace(target)
    sq = ((x - x.mean(0)) ** 2).sum(1)
    se = float(sq.std()) / math.sqrt(len(x))
    assert abs(cov_trace(x) - exact) < 4 * se, (cov_trace(x), exact, se)
    second_moment = float((x**2).sum(1).mean())
    assert abs(second_moment - exact) > 20 * se  # a trace without the mean would be caught


def test_a_mixture_trace_is_the_law_of_total_variance(mixture3d):
    prior = mixture3d
    within = float(prior.weights @ torch.diagonal(prior.covs, dim1=-2, dim2=-1).sum(-1))
    mean = prior.weights @ prior.means
    between = float(prior.weights @ ((prior.means - mean) ** 2).sum(1))
    target = Problem(prior, Quadratic([0.0] * 3, torch.eye(3)), 0.0, "m").target
    assert target_cov_trace(target) == pytest.approx(within + between, rel=1e-12)
    assert math.isnan(target_cov_trace(object()))


def _check_row(row):
    for key in ROW_KEYS:
        assert key in row, key
        assert math.isfinite(row[key]), (key, row[key])
    for key in FLOORED:
        if key != "mmd2":
            assert row[f"{key}_floor"] > 0
    assert row["cov_trace_err"] == pytest.approx(abs(row["cov_trace"] - row["cov_trace_exact"]))


def test_sweep_rows_carry_the_paper_metrics_and_old_rows_still_load(tmp_path):
    grid = {"N": [2], "T": [10]}
    rows = run_sweep("between", ["bon"], grid, seeds=1, out=tmp_path, n=64, progress=False)
    _check_row(rows[0])
    exact_trace = target_cov_trace(load_problem("between").target)
    assert rows[0]["cov_trace_exact"] == pytest.approx(exact_trace)
    old = {k: v for k, v in rows[0].items() if k not in ROW_KEYS}
    old["seed"] = 7
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write(json.dumps(old) + "\n")
    back = read_results(tmp_path)
    assert len(back) == 2 and "sw2" not in back[1]
    frame = load(tmp_path)
    assert frame["sw2"].notna().tolist() == [True, False]


def test_a_fast_leaderboard_row_carries_the_paper_metrics_and_old_rows_summarise():
    bench = make_bench("between", SIZES["fast"]["toy"])
    row = run_row(bench, "bon", 1, 0, SIZES["fast"]["toy"].n)
    _check_row(row)
    old = {k: v for k, v in row.items() if k not in ROW_KEYS}
    old["seed"] = 1
    cells = summary([row, old])
    assert cells[("between", "bon")][1]["distance"] == pytest.approx(
        (row["distance"] + old["distance"]) / 2
    )
    assert "bon" in table([row, old])
