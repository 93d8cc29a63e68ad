"""Classifier-free guidance against the tilt on a labelled 2-D mixture (Chidambaram et al. 2024,
arXiv 2409.13074): the CFG "target" p(x|c)^w p(x)^{1−w} is the tilt p(x) p(c|x)^w, toycode's
reward-tilt samplers reach it, and CFG sampling with exact scores does not (for w > 1).

Distances are MMD² to 1000 exact samples in units of the noise floor (ExactReference, 10
replicates); exact samplers are asserted below 4 floors, as elsewhere in the suite. Measured at
these seeds (torch 2.13, CPU): CFG at w = 1, DDPM 1.8 / ODE 1.3 floors from p(x|c); at w = 4,
88 / 965 floors from the target; exact guidance at w = 4 (T = 200) 1.3, SMC with exact values
(K = 16, T = 100) 3.0 (``python -m toycode.experiments.cfg_study`` prints them all)."""

import math

import pytest
import torch

from toycode import GaussianMixture, load_problem
from toycode.core.diffusion import NoiseLevel
from toycode.exact.cfg import CFGTarget, ClassLogProb, LabelledMixture, tilt_problem
from toycode.exact.metrics import target_cov_trace
from toycode.exact.reference import ExactReference
from toycode.experiments import cfg_study
from toycode.experiments.cfg_study import cfg_sample, labelled_between, measure, tilt_sample

F64 = torch.float64
C = 2


@pytest.fixture(scope="module")
def mixture():
    return labelled_between()


@pytest.fixture(scope="module")
def tilt4(mixture):
    """(b) at w = 4 as a problem, its GridTarget built once (about 4 s)."""
    problem = tilt_problem(mixture, C, 4.0)
    problem.target  # noqa: B018 - build the quadrature once for the module
    return problem


@pytest.fixture(scope="module")
def cfg4(mixture):
    return CFGTarget(mixture, C, 4.0)


@pytest.fixture(scope="module")
def reference4(cfg4):
    return ExactReference.of_sampler(cfg4.sample, 1000, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("w", [0.5, 2.0, 4.0])
def test_the_cfg_target_is_the_tilt_pointwise(mixture, w):
    """w log p(x|c) + (1 − w) log p(x) − [log p(x) + w log p(c|x)] = −w log p(c) everywhere."""
    x = torch.empty(4000, 2, dtype=F64).uniform_(-5, 5, generator=torch.Generator().manual_seed(1))
    cfg = CFGTarget(mixture, C, w, resolution=64)
    gap = (
        cfg.log_prob(x) + cfg.log_z - (mixture.prior.log_prob(x) + w * ClassLogProb(mixture, C)(x))
    )
    want = -w * math.log(mixture.class_prior(C))
    assert float((gap - want).abs().max()) < 1e-9


def test_the_cfg_target_and_the_tilt_problem_are_one_density(mixture, tilt4, cfg4):
    """Two quadratures (CFGTarget's of p(x|c)^w p(x)^{1−w}; the problem's GridTarget of
    p e^{λr}, r = log p(c|x)) give one normalised density, log Z_a = log Z_b − w log p(c)."""
    grid = tilt4.target
    x = cfg4.sample(2000, torch.Generator().manual_seed(2))
    assert float((cfg4.log_prob(x) - grid.log_prob(x)).abs().max()) < 2e-3
    assert cfg4.log_z == pytest.approx(
        grid.log_z - 4.0 * math.log(mixture.class_prior(C)), abs=2e-3
    )
    pts = torch.stack(torch.meshgrid(grid.centers, grid.centers, indexing="ij"), -1).reshape(-1, 2)
    torch.testing.assert_close(cfg4.mean, grid.mass @ pts, atol=2e-3, rtol=0)
    mass = float(grid.mass @ ClassLogProb(mixture, C)(pts).exp())
    assert cfg4.class_mass == pytest.approx(mass, abs=1e-4)
    # and not the class conditional: at w = 4 the log-densities part by more than quadrature error
    assert float((cfg4.log_prob(x) - mixture.conditional(C).log_prob(x)).abs().max()) > 0.05


def test_cfg_target_samples_are_exact(cfg4):
    x = cfg4.sample(100_000, torch.Generator().manual_seed(3))
    se = x.std(0) / math.sqrt(len(x))
    assert ((x.mean(0) - cfg4.mean).abs() < 4 * se).all(), (x.mean(0), cfg4.mean, se)
    pc = cfg4.mixture.log_class_posterior(x, C).exp()
    assert abs(float(pc.mean()) - cfg4.class_mass) < 4 * float(pc.std()) / math.sqrt(len(x))
    sq = ((x - x.mean(0)) ** 2).sum(1)
    exact = target_cov_trace(cfg4)  # the target brings its own trace
    assert abs(float(sq.mean()) - exact) < 4 * float(sq.std()) / math.sqrt(len(x))


def test_the_guided_score_mixes_the_noised_scores(mixture):
    level = NoiseLevel.vp(0.3)
    x = mixture.prior.noised(level).sample(50, torch.Generator().manual_seed(4))
    cond, marg = mixture.conditional(C).noised(level), mixture.prior.noised(level)
    torch.testing.assert_close(mixture.guided_score(x, level, C, 1.0), cond.score(x))
    torch.testing.assert_close(mixture.guided_score(x, level, C, 0.0), marg.score(x))
    torch.testing.assert_close(
        mixture.guided_score(x, level, C, 3.0), 3 * cond.score(x) - 2 * marg.score(x)
    )


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_cfg_sampling_at_w1_reproduces_the_class_conditional(mixture, eta):
    exact = ExactReference.of_sampler(
        mixture.conditional(C).sample, 1000, torch.Generator().manual_seed(5)
    )
    x = cfg_sample(mixture, C, 1.0, 1000, steps=1000, eta=eta, seed=6)
    assert exact.mmd2_over_floor(x) < 4


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_cfg_sampling_at_w4_is_far_from_the_tilt(mixture, cfg4, reference4, eta):
    """An exact sampler of the target sits below 4 floors (the control: fresh exact samples);
    CFG, with exact scores and 1000 steps, is more than 10 floors away, and its mean is pushed
    away from the other classes (upwards) by more than 6 standard errors."""
    control = cfg4.sample(1000, torch.Generator().manual_seed(7))
    assert reference4.mmd2_over_floor(control) < 4
    x = cfg_sample(mixture, C, 4.0, 1000, steps=1000, eta=eta, seed=6)
    m = measure(x, cfg4, reference4)
    assert m["distance"] > 10, m
    assert m["mean"][1] - m["exact_mean"][1] > 6 * m["mean_se"][1], m
    assert m["class_mass"] > m["exact_class_mass"]  # sharper than the target, not the target


@pytest.mark.slow
@pytest.mark.parametrize("method, value", [("exact-guidance", "tweedie"), ("smc", "exact")])
def test_the_reward_tilt_with_the_class_log_posterior_reaches_the_cfg_target(
    tilt4, cfg4, reference4, method, value
):
    steps = 200 if method == "exact-guidance" else 100
    x = tilt_sample(tilt4, 1000, method=method, steps=steps, seed=0, value=value, particles=16)
    m = measure(x, cfg4, reference4)
    assert m["distance"] < 4, m
    assert abs(m["mean"][1] - m["exact_mean"][1]) < 4 * m["mean_se"][1], m


@pytest.mark.slow
def test_the_study_and_its_figure_at_a_small_size(tmp_path, capsys):
    study = cfg_study.run_study(weights=(4.0,), n=128)
    assert {r["route"] for r in study["rows"]} == set(cfg_study.ROUTES)
    assert cfg_study.format_rows(study["rows"]).count("\n") == 1 + len(cfg_study.ROUTES)
    fig = cfg_study.plot_cfg_vs_tilt(study)
    assert len(fig.axes) == 5
    from toycode.experiments.plots import save

    assert save(fig, tmp_path / "cfg.png").stat().st_size > 10_000


def test_bad_input_is_a_one_line_error(mixture, capsys):
    prior = load_problem("between").prior
    with pytest.raises(ValueError, match="labels"):
        LabelledMixture(prior, [0, 1])
    with pytest.raises(ValueError, match="labels"):
        LabelledMixture(prior, [0, 2, 2])
    with pytest.raises(ValueError, match="class"):
        mixture.conditional(3)
    with pytest.raises(ValueError, match="w must"):
        CFGTarget(mixture, C, -1.0)
    with pytest.raises(ValueError, match="w must"):
        cfg_study.cfg_backend(mixture, C, -0.5)
    three = GaussianMixture([1.0], [[0.0, 0.0, 0.0]], torch.eye(3)[None])
    with pytest.raises(ValueError, match="2-D"):
        CFGTarget(LabelledMixture(three), 0, 2.0)
    with pytest.raises(SystemExit) as err:
        cfg_study.main(["--n", "3"])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    merged = LabelledMixture(prior, [0, 1, 1])  # two components, one class
    assert merged.class_prior(1) == pytest.approx(0.55)
    assert merged.conditional(1).num_components == 2
