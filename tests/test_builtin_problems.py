"""The papers' toy problems as built-ins (das-grid, das-ring, checkerboard) and the uniform-box
prior behind the checkerboard: each loads by name, its exact target and its closed forms are
checked against Monte Carlo with tolerances from the estimators' standard errors."""

import json
import math

import pytest
import torch
from scipy.stats import chi2

from toycode.backends import analytic_backend
from toycode.cli import main
from toycode.core.diffusion import NoiseLevel, Process
from toycode.core.sampler import sample_blockwise
from toycode.exact.boxes import BoxMixture
from toycode.exact.problems import Problem, builtin_problems, load_problem
from toycode.exact.reference import ExactReference
from toycode.exact.targets import GridTarget, MixtureTarget

F64 = torch.float64
NEW = ("das-grid", "das-ring", "checkerboard")


@pytest.fixture(scope="module")
def checkerboard():
    return load_problem("checkerboard")


@pytest.fixture(scope="module")
def uneven():
    """Three boxes of unequal weights and sizes, two of them overlapping: what the
    checkerboard's equal unit squares cannot tell apart (weights against volumes)."""
    return BoxMixture(
        [0.5, 0.3, 0.2],
        [[-2.0, -1.0], [-1.0, 0.0], [0.5, 1.5]],
        [[-0.5, 1.0], [1.5, 0.4], [1.0, 3.0]],
    )


def _levels():
    """VP and flow levels, early and late."""
    return [NoiseLevel.vp(0.9), NoiseLevel.vp(0.2), NoiseLevel.flow(0.15), NoiseLevel.flow(0.7)]


def _cb_squares():
    return {(i - 3, j - 3) for i in range(6) for j in range(6) if (i + j) % 2 == 0}


# -- loading, sources, round trips -------------------------------------------------------------
def test_each_builtin_loads_by_name_with_its_source():
    assert set(NEW) <= set(builtin_problems())
    for name in NEW:
        p = load_problem(name)
        assert p.name == name
        assert {"paper", "code", "prior", "reward", "lam"} <= set(p.source)
        assert "arXiv:" in p.source["paper"] and "commit" in p.source["code"]
        again = Problem.from_dict(json.loads(json.dumps(p.to_dict())), name)
        assert again.to_dict() == p.to_dict()
        assert type(again.prior) is type(p.prior) and again.source == p.source


def test_old_problem_files_load_and_write_unchanged(between):
    spec = between.to_dict()
    assert "type" not in spec["prior"] and "source" not in spec
    assert Problem.from_dict(spec).to_dict() == spec


def test_das_grid_is_the_notebook_problem():
    """krafton-ai/DAS notebooks/GMM.ipynb: 9 modes on {−4, 0, 4}², 0.3 I, equal weights,
    r(x) = −x1²/100 − x2², kl_weight = 1."""
    p = load_problem("das-grid")
    assert {tuple(m) for m in p.prior.means.tolist()} == {
        (a, b) for a in (-4.0, 0.0, 4.0) for b in (-4.0, 0.0, 4.0)
    }
    assert torch.equal(
        p.prior.covs, torch.tensor([[0.3, 0.0], [0.0, 0.3]], dtype=F64).expand(9, 2, 2)
    )
    assert torch.allclose(p.prior.weights, torch.full((9,), 1 / 9, dtype=F64))
    x = 6 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    notebook = -(x[:, 0] ** 2) / 100 - x[:, 1] ** 2
    assert torch.allclose(p.reward(x), notebook, atol=1e-12) and p.lam == 1.0


def test_das_ring_is_the_notebook_problem():
    """notebooks/GMM2.ipynb: 8 modes at radius 4, angles kπ/4; r(x) = −x1² − (x2 − 1)²/10."""
    p = load_problem("das-ring")
    m = p.prior.means
    assert torch.allclose(m.norm(dim=1), torch.full((8,), 4.0, dtype=F64), atol=1e-12)
    angles = torch.atan2(m[:, 1], m[:, 0]) / (math.pi / 4)
    assert (
        torch.allclose(angles, angles.round(), atol=1e-12)
        and len(set(angles.round().tolist())) == 8
    )
    assert torch.allclose(p.prior.weights, torch.full((8,), 1 / 8, dtype=F64))
    x = 6 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    notebook = -(x[:, 0] ** 2) - (x[:, 1] - 1) ** 2 / 10
    assert torch.allclose(p.reward(x), notebook, atol=1e-12) and p.lam == 1.0


def test_checkerboard_is_the_papers_board(checkerboard, gen):
    """sanjitdp/reward-guidance checkerboard/model.py: the 18 unit squares of [−3, 3]² with
    floor(x) + floor(y) even, equal weights; reward exp(−‖x − (½, ½)‖² / (2 · 1.5²)), λ = 10."""
    prior = checkerboard.prior
    assert isinstance(prior, BoxMixture) and prior.num_components == 18
    assert {tuple(c) for c in prior.low.long().tolist()} == _cb_squares()
    assert torch.equal(prior.high - prior.low, torch.ones(18, 2, dtype=F64))
    x = prior.sample(20_000, gen)
    assert bool(((x.floor().sum(1) % 2) == 0).all()) and bool((x.abs() <= 3).all())
    r = checkerboard.reward(x)
    assert torch.allclose(r, torch.exp(-((x - 0.5) ** 2).sum(1) / (2 * 1.5**2)))
    assert checkerboard.lam == 10.0


@pytest.mark.parametrize("name", NEW)
def test_target_command_prints_each_builtins_target(capsys, tmp_path, name):
    out = tmp_path / "t.npz"
    code = main(["target", "--problem", name, "--n", "200", "--seed", "1", "--out", str(out)])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["log_z"] == pytest.approx(load_problem(name).target.log_z)


@pytest.mark.parametrize("value", ["tweedie", "posterior"])
def test_sample_command_runs_the_checkerboard(capsys, value):
    argv = ["sample", "--problem", "checkerboard", "--n", "16", "--steps", "10", "--process"]
    argv += ["flow", "--num-candidates", "4", "--block-size", "5", "--value", value]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["reward_mean"] <= 1 and result["nfe"] > 0


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda p: p["prior"].update(type="cubes"), "prior.type"),
        (lambda p: p["prior"].pop("high"), "prior.high"),
        (lambda p: p["prior"].update(means=[[0, 0]]), "unknown field"),
        (lambda p: p["prior"]["low"].__setitem__(0, [-2.0, -3.0]), "low < high"),
        (lambda p: p["prior"]["low"].__setitem__(0, [-3.0]), "prior"),
        (lambda p: p["prior"].update(weights=[0.1] * 18), "sum to 1"),
        (lambda p: p["reward"].update(width=-1.0), "reward.width"),
        (lambda p: p["reward"].pop("width"), "reward.width"),
        (lambda p: p.update(source={"paper": 3}), "source"),
        (lambda p: p.update(source="a paper"), "source"),
    ],
)
def test_malformed_box_problem_files_name_the_field(capsys, tmp_path, checkerboard, edit, needle):
    spec = checkerboard.to_dict()
    edit(spec)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    code = main(["target", "--problem", str(path), "--n", "5"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_a_box_prior_in_three_dimensions_has_no_grid_target(capsys, tmp_path):
    spec = {
        "prior": {
            "type": "uniform_boxes",
            "weights": [1.0],
            "low": [[0, 0, 0]],
            "high": [[1, 1, 1]],
        },
        "reward": {"type": "bump", "center": [0, 0, 0], "width": 1.0},
        "lam": 1.0,
    }
    path = tmp_path / "p3.json"
    path.write_text(json.dumps(spec))
    code = main(["target", "--problem", str(path), "--n", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "d = 2" in err and len(err.strip().splitlines()) == 1


# -- the box prior's closed forms --------------------------------------------------------------
@pytest.mark.parametrize(
    "level", [*_levels(), NoiseLevel(0.0, 1.0), NoiseLevel(1e-3, 1.0), NoiseLevel(1.0, 0.1)]
)
@pytest.mark.parametrize("which", ["checkerboard", "uneven"])
def test_noised_density_integrates_to_one(request, which, level):
    prior = request.getfixturevalue(which)
    prior = prior.prior if which == "checkerboard" else prior
    # midpoints 0.04 apart: for a density smooth on the scale σ ≥ 0.1 (a Gaussian blur) the
    # rule's aliasing error is ~e^{−2π²σ²/h²} < 1e-50, so 1e-9 leaves room for rounding only
    u = -7 + 0.04 * (torch.arange(350, dtype=F64) + 0.5)
    gx, gy = torch.meshgrid(u, u, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    total = float(prior.noised(level).log_prob(pts).exp().sum()) * 0.04**2
    assert total == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("level", [NoiseLevel.vp(0.9), NoiseLevel.flow(0.3), NoiseLevel.flow(0.8)])
@pytest.mark.parametrize("which", ["checkerboard", "uneven"])
def test_noised_density_matches_monte_carlo_histogram(request, which, level):
    """Counts of α x0 + σ ε in 0.5-wide bins against the density's bin masses (20² midpoints
    per bin): a χ² test at level 1e-3, bins expecting < 5 pooled."""
    prior = request.getfixturevalue(which)
    prior = prior.prior if which == "checkerboard" else prior
    gen = torch.Generator().manual_seed(3)
    n = 200_000
    x = level.alpha * prior.sample(n, gen) + level.sigma * torch.randn(
        n, 2, generator=gen, dtype=F64
    )
    edges = torch.linspace(-6, 6, 25, dtype=F64)
    idx = torch.bucketize(x.clamp(-6 + 1e-9, 6 - 1e-9), edges) - 1  # (n, 2) in 0..23
    counts = torch.bincount(idx[:, 0] * 24 + idx[:, 1], minlength=24 * 24).to(F64)
    sub = -6 + 0.025 * (torch.arange(480, dtype=F64) + 0.5)
    gx, gy = torch.meshgrid(sub, sub, indexing="ij")
    dens = prior.noised(level).log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).exp()
    mass = dens.view(24, 20, 24, 20).sum((1, 3)).reshape(-1) * 0.025**2
    mass = torch.cat([mass, (1 - mass.sum()).clamp(min=0)[None]])  # the rest of the plane
    counts = torch.cat([counts, torch.tensor([float(n) - counts.sum()], dtype=F64)])
    big = n * mass >= 5
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([n * mass[big], n * mass[~big].sum()[None]])
    stat = float(((obs - exp) ** 2 / exp.clamp(min=1e-12)).sum())
    assert chi2.sf(stat, len(obs) - 1) > 1e-3, stat


@pytest.mark.parametrize("level", _levels())
@pytest.mark.parametrize("which", ["checkerboard", "uneven"])
def test_exact_denoiser_matches_self_normalised_importance(request, which, level):
    """E[x0 | x_t] against Σ w_i x0_i / Σ w_i, x0_i ~ p, w_i = N(x_t; α x0_i, σ² I): within
    5 delta-method standard errors at 8 states per level."""
    prior = request.getfixturevalue(which)
    prior = prior.prior if which == "checkerboard" else prior
    gen = torch.Generator().manual_seed(5)
    xt = prior.noised(level).sample(8, gen)
    x0 = prior.sample(400_000, gen)
    d2 = ((xt[:, None, :] - level.alpha * x0[None]) ** 2).sum(-1)  # (8, M)
    w = torch.softmax(-d2 / (2 * level.sigma**2), dim=1)
    est = w @ x0
    se = torch.sqrt(torch.einsum("qm,qmd->qd", w**2, (x0[None] - est[:, None]) ** 2))
    exact = prior.posterior_mean(xt, level)
    assert bool(((exact - est).abs() <= 5 * se).all()), ((exact - est) / se).abs().max()


@pytest.mark.parametrize(
    "level", [*_levels(), NoiseLevel(1.0, 0.02), NoiseLevel(0.05, 0.95), NoiseLevel(1e-3, 1.0)]
)
@pytest.mark.parametrize("which", ["checkerboard", "uneven"])
def test_denoiser_and_score_are_tweedie_to_float64(request, which, level):
    """E[x0 | x_t] = (x_t + σ² ∇ log p_t)/α and the closed-form score equal autograd of the
    noised log-density: on states from p_t to 1e-12 of their scales (1/σ for the score,
    1 + |x|/α for x̂0), and up to 20 units off the support (p_t ~ e^{−10⁶}) to 1e-9."""
    prior = request.getfixturevalue(which)
    prior = prior.prior if which == "checkerboard" else prior
    gen = torch.Generator().manual_seed(7)
    noised = prior.noised(level)
    far = torch.tensor([[9.0, -8.0], [0.5, 12.0], [-20.0, 0.3]], dtype=F64)
    for x, tol in [(noised.sample(256, gen), 1e-12), (far, 1e-9)]:
        x = x.clone().requires_grad_(True)
        grad = torch.autograd.grad(noised.log_prob(x).sum(), x)[0]
        x = x.detach()
        score_err = (noised.score(x) - grad).abs() / (grad.abs() + 1 / level.sigma)
        assert float(score_err.max()) < tol
        tweedie = (x + level.sigma**2 * grad) / level.alpha
        x0_err = (prior.posterior_mean(x, level) - tweedie).abs() / (1 + x.abs() / level.alpha)
        assert float(x0_err.max()) < tol


def test_box_closed_forms_hold_at_the_ends_and_in_the_tails(uneven):
    """α = 0: p_t = N(0, σ²I), x̂0 = E[x0]; σ → 0 and far states: finite, in the boxes' hull."""
    x = torch.tensor([[0.3, -0.2], [40.0, -55.0], [-3.0, 7.0]], dtype=F64, requires_grad=True)
    n0 = uneven.noised(NoiseLevel(0.0, 0.8))
    want = -0.5 * (x.detach() ** 2).sum(1) / 0.64 - math.log(2 * math.pi * 0.64)
    assert torch.allclose(n0.log_prob(x.detach()), want, atol=1e-12)
    assert torch.allclose(n0.score(x.detach()), -x.detach() / 0.64, atol=1e-12)
    x0 = uneven.posterior_mean(x, NoiseLevel(0.0, 0.8))
    assert torch.allclose(x0.detach(), uneven.mean.expand(3, 2), atol=1e-14)
    assert torch.equal(torch.autograd.grad(x0.sum(), x)[0], torch.zeros(3, 2, dtype=F64))
    lo, hi = uneven.low.min(0).values, uneven.high.max(0).values
    for level in (NoiseLevel(1.0, 1e-3), NoiseLevel(1e-6, 1.0), NoiseLevel.vp(1e-4)):
        noised = uneven.noised(level)
        assert bool(torch.isfinite(noised.log_prob(x.detach())).all())
        assert bool(torch.isfinite(noised.score(x.detach())).all())
        m = uneven.posterior_mean(x.detach(), level)
        assert bool(((m >= lo - 1e-12) & (m <= hi + 1e-12)).all())


def test_responsibilities_are_square_masses_on_and_off_the_support(checkerboard):
    prior = checkerboard.prior
    # in [0, 1]²; on the white square [1, 2] × [0, 1], nearest to [1, 2] × [−1, 0]; off the board
    x = torch.tensor([[0.5, 0.5], [1.5, 0.4], [0.9, 3.5]], dtype=F64)
    resp = prior.responsibilities(x)
    assert torch.allclose(resp.sum(1), torch.ones(3, dtype=F64))
    low = prior.low[resp.argmax(1)].tolist()
    assert low == [[0.0, 0.0], [1.0, -1.0], [0.0, 2.0]] and bool((resp.max(1).values == 1).all())
    assert torch.isinf(prior.log_prob(x[1:])).all() and torch.isnan(prior.score(x[1:])).all()


# -- the analytic backend reproduces the prior --------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["linear", "flow"])
@pytest.mark.parametrize("which", ["checkerboard", "uneven"])
def test_analytic_base_sampler_reproduces_the_box_prior(request, which, kind):
    """200 steps of the exact denoiser (DDPM η = 1 under VP, η = 1 under flow): per-box masses
    by a χ² test at level 1e-3 (the boxes of `uneven` that overlap are merged), MMD² to an
    exact prior sample within 4 of its noise floor, and uniformity inside the boxes."""
    prior = request.getfixturevalue(which)
    prior = prior.prior if which == "checkerboard" else prior
    n = 4000
    be = analytic_backend(prior, Process.make(200, kind))
    x = sample_blockwise(be, lambda z: z[:, 0], n, generator=torch.Generator().manual_seed(1))
    x = x.samples.double()
    resp = prior.responsibilities(x)
    if which == "uneven":  # boxes 0 and 1 overlap: their union is one cell of the partition
        resp = torch.stack([resp[:, 0] + resp[:, 1], resp[:, 2]], 1)
        want = torch.tensor([0.8, 0.2], dtype=F64)
    else:
        want = prior.weights
    stat = float(((resp.sum(0) - n * want) ** 2 / (n * want)).sum())
    assert chi2.sf(stat, len(want) - 1) > 1e-3, stat
    ref = ExactReference.of_sampler(prior.sample, 1000, torch.Generator().manual_seed(0))
    assert ref.mmd2_over_floor(x) < 4
    # within its box a sample is uniform: each coordinate falls in the box's middle half with
    # probability ½ (binomial s.e.; the kernel above is too wide to see a squeeze inside a box)
    side = torch.minimum(prior.high[:, None], prior.high) - torch.maximum(
        prior.low[:, None], prior.low
    )
    alone = (side.clamp(min=0).prod(-1) > 0).sum(1) == 1  # a box overlapping only itself
    k = prior.responsibilities(x).argmax(1)
    u = ((x - prior.low[k]) / prior.widths[k])[alone[k]]
    middle = ((u - 0.5).abs() < 0.25).double().mean(0)
    assert bool(((middle - 0.5).abs() < 5 * math.sqrt(0.25 / len(u))).all()), middle


# -- exact targets ------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["checkerboard", "uneven"])
def test_box_target_matches_monte_carlo(request, which):
    """Quadrature's E_p*[r], log Z and per-box masses against exact samples and importance
    sampling from the prior, within 5 standard errors (`uneven` under the checkerboard's
    reward: unequal widths and weights test the exact cell masses)."""
    if which == "checkerboard":
        problem = request.getfixturevalue("checkerboard")
    else:
        cb = request.getfixturevalue("checkerboard")
        problem = Problem(request.getfixturevalue("uneven"), cb.reward, 3.0, "uneven")
    t, prior = problem.target, problem.prior
    assert isinstance(t, GridTarget)
    gen = torch.Generator().manual_seed(11)
    x = t.sample(40_000, gen)
    r = problem.reward(x)
    assert float(r.mean()) == pytest.approx(t.reward_mean, abs=5 * float(r.std()) / 200)
    masses = prior.responsibilities(x).mean(0)
    se = (t.mode_weights * (1 - t.mode_weights) / len(x)).sqrt()
    assert bool(((masses - t.mode_weights).abs() <= 5 * se + 1e-4).all())
    z = torch.exp(problem.lam * problem.reward(prior.sample(400_000, gen)))
    se_log_z = float(z.std() / z.mean()) / math.sqrt(len(z))
    assert t.log_z == pytest.approx(math.log(float(z.mean())), abs=5 * se_log_z)
    assert float(t.mode_weights.sum()) == pytest.approx(1.0, abs=1e-12)


def test_checkerboard_log_tilt_matches_direct_quadrature(checkerboard):
    """log E[e^{λ r(x0)} | x_t] from the grid's convolution against a brute-force posterior
    quadrature over the squares (1200² midpoints on [−3, 3]²)."""
    t, prior = checkerboard.target, checkerboard.prior
    u = -3 + 0.005 * (torch.arange(1200, dtype=F64) + 0.5)
    gx, gy = torch.meshgrid(u, u, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    keep = torch.isfinite(prior.log_prob(pts))
    pts, lam_r = pts[keep], checkerboard.lam * checkerboard.reward(pts[keep])
    for level, xt in [
        (NoiseLevel.vp(0.5), [0.3, 0.4]),
        (NoiseLevel.flow(0.3), [1.2, -0.7]),
        (NoiseLevel.flow(0.8), [-1.0, 2.0]),
        (NoiseLevel.vp(0.95), [2.4, 2.6]),
    ]:
        xt = torch.tensor([xt], dtype=F64)
        log_lik = -((xt - level.alpha * pts) ** 2).sum(1) / (2 * level.sigma**2)
        want = torch.logsumexp(log_lik + lam_r, 0) - torch.logsumexp(log_lik, 0)
        assert float(t.log_tilt(xt, level)) == pytest.approx(float(want), abs=3e-3)


@pytest.mark.parametrize("name", ["das-grid", "das-ring"])
def test_das_targets_match_monte_carlo(name):
    """The closed-form tilt's E_p*[r], log Z and mode weights against exact samples and
    importance sampling from the prior, within 5 standard errors."""
    p = load_problem(name)
    t = p.target
    assert isinstance(t, MixtureTarget)
    gen = torch.Generator().manual_seed(13)
    x = t.sample(40_000, gen)
    r = p.reward(x)
    assert float(r.mean()) == pytest.approx(t.reward_mean, abs=5 * float(r.std()) / 200)
    masses = p.prior.responsibilities(x).mean(0)
    assert torch.allclose(masses, t.mode_weights, atol=5 * 0.5 / 200)
    z = torch.exp(p.lam * p.reward(p.prior.sample(400_000, gen)))
    se_log_z = float(z.std() / z.mean()) / math.sqrt(len(z))
    assert t.log_z == pytest.approx(math.log(float(z.mean())), abs=5 * se_log_z)


# -- exact posterior draws x0 | x_t ------------------------------------------------------------
@pytest.mark.parametrize(
    "a, b",
    [(-1.0, 2.0), (0.3, 0.31), (-0.5, 40.0), (4.0, 4.5), (8.0, 9.0), (30.0, 1e3), (-12.0, -11.9)],
)
def test_truncated_normal_draws_have_scipys_moments(a, b):
    """Mean and variance of 200 000 draws against scipy's truncnorm, within 5 s.e. (the
    variance's s.e. from the fourth central moment), in the body and both far tails."""
    from scipy.stats import truncnorm

    from toycode.exact.boxes import truncated_normal

    n = 200_000
    lo, hi = torch.full((n,), a, dtype=F64), torch.full((n,), b, dtype=F64)
    z = truncated_normal(lo, hi, torch.Generator().manual_seed(2))
    assert bool(((z >= a) & (z <= b)).all())
    mean, var = (float(v) for v in truncnorm.stats(a, b, moments="mv"))
    c = z - mean
    assert float(z.mean()) == pytest.approx(mean, abs=5 * math.sqrt(var / n))
    se_var = math.sqrt(max(float((c**4).mean()) - var**2, 1e-300) / n)
    assert float((c**2).mean()) == pytest.approx(var, abs=5 * se_var + 1e-12 * var)


@pytest.mark.parametrize("level", [NoiseLevel.vp(0.5), NoiseLevel.flow(0.1), NoiseLevel(1.0, 0.01)])
@pytest.mark.parametrize("which", ["checkerboard", "uneven"])
def test_posterior_draws_match_the_exact_denoiser(request, which, level):
    """Draws of x0 | x_t (the posterior value's) lie in the boxes, average to E[x0 | x_t]
    within 5 s.e., and fall in each box as often as the noised responsibilities say."""
    from toycode.exact.posterior import posterior_sample

    prior = request.getfixturevalue(which)
    prior = prior.prior if which == "checkerboard" else prior
    gen = torch.Generator().manual_seed(9)
    far = torch.tensor([[9.0, -8.0], [-20.0, 0.3]], dtype=F64)
    xt = torch.cat([prior.noised(level).sample(6, gen), far])
    m = 20_000
    draws = posterior_sample(prior, xt, level, m, gen)  # (8, M, 2)
    assert bool(torch.isfinite(prior.log_prob(draws.reshape(-1, 2))).all())
    se = draws.std(1) / math.sqrt(m)
    err = (draws.mean(1) - prior.posterior_mean(xt, level)).abs()
    assert bool((err <= 5 * se + 1e-12).all()), (err / se).max()
    if which == "checkerboard":  # disjoint boxes: the draw's box is its responsibility's argmax
        counts = prior.responsibilities(draws.reshape(-1, 2)).view(8, m, -1).sum(1)
        for obs, want in zip(counts, m * prior.noised(level).responsibilities(xt)):
            big = want >= 5  # a χ² test per state at level 1e-4, boxes expecting < 5 pooled
            obs = torch.cat([obs[big], obs[~big].sum()[None]])
            want = torch.cat([want[big], want[~big].sum()[None]])
            stat = float(((obs - want) ** 2 / want.clamp(min=1e-12)).sum())
            assert chi2.sf(stat, max(int(big.sum()), 1)) > 1e-4, stat


@pytest.mark.parametrize("which", ["checkerboard", "uneven"])
def test_box_prior_moments_match_its_samples(request, which):
    """mean and covariance (the learned value's Gaussian baseline) within 5 s.e. of 10⁶ draws."""
    prior = request.getfixturevalue(which)
    prior = prior.prior if which == "checkerboard" else prior
    x = prior.sample(1_000_000, torch.Generator().manual_seed(4))
    assert torch.allclose(prior.mean, x.mean(0), atol=5 * float(x.std(0).max()) / 1000)
    c = x - x.mean(0)
    outer = c[:, :, None] * c[:, None, :]
    se = outer.std(0) / 1000
    assert bool(((prior.covariance - outer.mean(0)).abs() <= 5 * se).all())


def test_a_box_prior_checkpoint_is_found_for_it_only(tmp_path, uneven, between):
    """train_mlp records the prior's own description; find_mlp_checkpoint matches it by type and
    arrays, so neither kind of prior picks up the other's checkpoint."""
    from toycode.training.train import find_mlp_checkpoint, train_mlp

    train_mlp(uneven, tmp_path / "boxes.pt", steps=2, batch_size=16, progress=False)
    assert find_mlp_checkpoint(uneven, tmp_path) == tmp_path / "boxes.pt"
    with pytest.raises(ValueError, match="no trained MLP checkpoint"):
        find_mlp_checkpoint(between.prior, tmp_path)
    shifted = BoxMixture(uneven.weights, uneven.low + 0.1, uneven.high + 0.1)
    with pytest.raises(ValueError, match="no trained MLP checkpoint"):
        find_mlp_checkpoint(shifted, tmp_path)
