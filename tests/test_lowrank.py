"""Low-rank-plus-diagonal mixtures: every method against the dense GaussianMixture of the same
U, D (d = 40), exact sampling, and no d×d tensor on any path at d = 784."""

import math
import os
import time
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from toycode import Linear, Quadratic
from toycode.backends import analytic_backend
from toycode.core.diffusion import NoiseLevel, Process
from toycode.exact.lowrank import DiagonalQuadratic, LowRankMixture, low_rank_tilt
from toycode.exact.targets import MixtureTarget, exact_target

F64 = torch.float64
LEVELS = [
    NoiseLevel.vp(1e-4),
    NoiseLevel.vp(0.3),
    NoiseLevel.vp(0.97),
    NoiseLevel(0.0, 1.0),  # pure noise: E[x0 | x_t] is the prior mean
    NoiseLevel(1.0, 0.0),  # clean: E[x0 | x_t] = x_t
    NoiseLevel.flow(0.4),
]


def _random(k=4, d=40, r=5, seed=0, spread=0.15) -> LowRankMixture:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=g, dtype=F64) + 0.3
    mu = spread * torch.randn(k, d, generator=g, dtype=F64)
    # components alike enough (a shared part of U and D) that points are shared between them
    u = 0.6 * (torch.randn(d, r, generator=g, dtype=F64) + 0.2 * torch.randn(k, d, r, generator=g))
    diag = 0.05 + torch.rand(d, generator=g, dtype=F64) * (
        0.8 + 0.4 * torch.rand(k, d, generator=g)
    )
    return LowRankMixture(w / w.sum(), mu, u, diag)


@pytest.fixture(scope="module")
def pair():
    low = _random()
    return low, low.to_dense()


@pytest.fixture(scope="module")
def points(pair):
    x = pair[1].sample(200, torch.Generator().manual_seed(1))
    resp = pair[1].responsibilities(x)
    # the comparison means something only where points are shared between components
    assert float((resp.max(1).values < 0.99).double().mean()) > 0.2
    return x


def _close(a, b, tol=1e-10):
    """Within tol of the larger of 1 and the reference's largest entry."""
    scale = max(float(b.abs().max()), 1.0)
    assert float((a - b).abs().max()) <= tol * scale, float((a - b).abs().max()) / scale


def test_density_responsibilities_and_score_equal_the_dense_mixture(pair, points):
    low, dense = pair
    _close(low.component_log_prob(points), dense.component_log_prob(points))
    _close(low.log_prob(points), dense.log_prob(points))
    _close(low.responsibilities(points), dense.responsibilities(points))
    _close(low.score(points), dense.score(points))
    xg = points.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(low.log_prob(xg).sum(), xg)
    _close(low.score(points), grad)


@pytest.mark.parametrize("level", LEVELS, ids=str)
def test_noised_and_posterior_mean_equal_the_dense_mixture(pair, points, level):
    low, dense = pair
    lo_t, de_t = low.noised(level), dense.noised(level)
    _close(lo_t.to_dense().covs, de_t.covs)
    _close(lo_t.means, de_t.means)
    _close(lo_t.log_prob(points), de_t.log_prob(points))
    _close(lo_t.score(points), de_t.score(points))
    _close(low.posterior_mean(points, level), dense.posterior_mean(points, level))
    _close(low.posterior_mean(points, level, lo_t), dense.posterior_mean(points, level, de_t))


def test_analytic_backend_takes_the_low_rank_prior(pair, points):
    low, dense = pair
    for kind in ("linear", "flow"):
        process = Process.make(8, kind)
        a, b = analytic_backend(low, process), analytic_backend(dense, process)
        for i in (0, 3, 7):
            pa, pb = a.predict(points, i), b.predict(points, i)
            _close(pa.eps, pb.eps)
            _close(pa.x0, pb.x0)


def _rewards(d: int, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    c = 0.5 * torch.randn(d, generator=g, dtype=F64)
    p = torch.rand(d, generator=g, dtype=F64) * (torch.rand(d, generator=g) > 0.3)  # some p_i = 0
    a = torch.randn(d, generator=g, dtype=F64)
    return {
        "diagonal-quadratic": DiagonalQuadratic(c, p),
        "quadratic-with-diagonal-P": Quadratic(c, torch.diag(p)),
        "linear": Linear(a / a.norm()),
    }


@pytest.mark.parametrize("kind", list(_rewards(40)))
@pytest.mark.parametrize("lam", [0.0, 0.7, 3.0])
def test_tilted_target_equals_the_dense_target(pair, points, kind, lam):
    low, dense = pair
    reward = _rewards(40)[kind]
    t_low, t_dense = exact_target(low, reward, lam), exact_target(dense, reward, lam)
    assert isinstance(t_low.mixture, LowRankMixture)
    _close(t_low.mode_weights, t_dense.mode_weights)
    assert t_low.reward_mean == pytest.approx(t_dense.reward_mean, rel=1e-10, abs=1e-12)
    assert t_low.log_z == pytest.approx(t_dense.log_z, rel=1e-10, abs=1e-12)
    _close(t_low.mixture.to_dense().covs, t_dense.mixture.covs)
    _close(t_low.mixture.means, t_dense.mixture.means)
    level = NoiseLevel.vp(0.4)
    _close(t_low.log_tilt(points, level), t_dense.log_tilt(points, level))
    if lam > 0:
        _close(t_low.soft_value(points, level), t_dense.soft_value(points, level))
    for t in (t_low, t_dense):
        x = points.clone().requires_grad_(True)
        t.grad = torch.autograd.grad(t.log_tilt(x, level).sum(), x)[0]
    _close(t_low.grad, t_dense.grad)


def test_the_tilt_refuses_a_dense_precision_and_other_rewards(pair):
    low, _ = pair
    p = torch.eye(40, dtype=F64)
    p[0, 1] = p[1, 0] = 0.1
    with pytest.raises(ValueError, match="diagonal reward precision"):
        MixtureTarget(low, Quadratic(torch.zeros(40), p), 1.0)
    with pytest.raises(ValueError, match="no closed-form low-rank tilt"):
        low_rank_tilt(low, object(), 1.0)


def test_diagonal_quadratic_is_the_quadratic_of_its_diagonal(points):
    reward = _rewards(40)["diagonal-quadratic"]
    _close(reward(points), Quadratic(reward.center, reward.precision)(points))
    assert reward.to_dict()["type"] == "quadratic" and reward.differentiable
    with pytest.raises(ValueError, match="non-negative"):
        DiagonalQuadratic(torch.zeros(3), torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="precision_diagonal"):
        DiagonalQuadratic(torch.zeros(3), torch.ones(2))


def test_samples_have_the_mixture_moments():
    """Mean and covariance of 200k draws within 5 standard errors (each entry's own s.e.)."""
    low = _random(k=3, d=6, r=2, seed=3, spread=1.0)
    dense = low.to_dense()
    x = low.sample(200_000, torch.Generator().manual_seed(4))
    mean = low.weights @ low.means
    second = (
        low.weights[:, None, None] * (dense.covs + low.means[:, :, None] * low.means[:, None])
    ).sum(0)
    cov = second - mean[:, None] * mean[None]
    centred = x - mean
    se_mean = centred.std(0) / math.sqrt(len(x))
    assert ((x.mean(0) - mean).abs() < 5 * se_mean).all()
    prods = centred[:, :, None] * centred[:, None, :]
    se_cov = prods.std(0) / math.sqrt(len(x))
    assert ((prods.mean(0) - cov).abs() < 5 * se_cov).all()
    resp = low.responsibilities(x[:20_000]).mean(0)  # E_p[ρ_k] = w_k
    assert torch.allclose(resp, low.weights, atol=5 * math.sqrt(0.25 / 20_000))


def test_bad_input_is_a_one_line_value_error():
    low = _random(k=2, d=4, r=1)
    with pytest.raises(ValueError, match="must be"):
        LowRankMixture(low.weights, low.means, low.factors[0], low.diag)
    with pytest.raises(ValueError, match="dimension mismatch"):
        LowRankMixture(low.weights, low.means, low.factors, low.diag[:, :3])
    with pytest.raises(ValueError, match="diag must be positive"):
        LowRankMixture(low.weights, low.means, low.factors, -low.diag)
    with pytest.raises(ValueError, match="sum to 1"):
        LowRankMixture(2 * low.weights, low.means, low.factors, low.diag)
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        low.log_prob(torch.zeros(3, 5))


class _SquareWatch(TorchDispatchMode):
    """Records every op (forward or backward) whose output has two axes of length d."""

    def __init__(self, d):
        super().__init__()
        self.d, self.seen = d, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and sum(s == self.d for s in t.shape) >= 2:
                self.seen.append((str(func), tuple(t.shape)))
        return out


def _every_path(mixture, reward, x):
    """The calls the leaderboard's mnist-gmm bench makes, forward and backward."""
    level = NoiseLevel.vp(0.5)
    noised = mixture.noised(level)
    noised.score(x)
    mixture.posterior_mean(x, level, noised)
    mixture.responsibilities(x)
    mixture.sample(64, torch.Generator().manual_seed(0))
    target = MixtureTarget(mixture, reward, 1.0)
    target.sample(64, torch.Generator().manual_seed(1))
    xg = x.clone().requires_grad_(True)
    torch.autograd.grad(target.log_tilt(xg, level).sum(), xg)
    xg = x.clone().requires_grad_(True)
    torch.autograd.grad(reward(mixture.posterior_mean(xg, level, noised)).sum(), xg)  # DPS


def test_no_d_by_d_tensor_at_784_dimensions():
    low = _random(k=10, d=784, r=16, seed=5)
    reward = DiagonalQuadratic(low.means[3], torch.full((784,), 0.5))  # its d×d P: built here
    x = low.noised(0.5).sample(512, torch.Generator().manual_seed(6))
    with _SquareWatch(784) as watch:
        _every_path(low, reward, x)
    assert watch.seen == []
    dense = low.to_dense()  # the watch does see the dense path's d×d algebra
    with _SquareWatch(784) as watch:
        dense.noised(0.5).score(x[:4])
    assert watch.seen
    start = time.perf_counter()
    low.posterior_mean(x, NoiseLevel.vp(0.5))
    print(f"posterior mean of 512 points at d = 784: {time.perf_counter() - start:.3f} s")


MNIST = Path(os.environ.get("TOYCODE_DATA", "/nonexistent")) / "mnist"


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason=f"no MNIST copy under {MNIST}")
def test_mnist_fit_is_low_rank_and_its_bench_runs_at_784():
    from toycode.leaderboard.board import Size, make_bench, run_row
    from toycode.mnist.gmm import fit_mnist_mixture, mixture_in_dim, project

    low, axes, _ = fit_mnist_mixture()
    assert isinstance(low, LowRankMixture) and (low.dim, low.rank) == (784, 16)
    assert mixture_in_dim(low, axes, 784) is low
    a, b = project(low, axes, 12), project(low.to_dense(), axes, 12)
    _close(a.covs, b.covs)
    _close(a.means, b.means)
    bench = make_bench("mnist-gmm", Size(4, 16, (1,), 1), dim=784)
    assert isinstance(bench.target.mixture, LowRankMixture)
    for method in ("bon-softmax", "exact-guidance"):
        row = run_row(bench, method, 1, 0, 16)
        assert row["n"] == 16 and math.isfinite(row["distance"]) and row["distance"] > 0
