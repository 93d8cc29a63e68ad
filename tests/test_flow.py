"""One process over (α, σ): rectified flow beside VP, checked against diffusers and exact targets.

Floors are MMD² in units of ``ExactReference``'s noise floor (1000 exact samples against a
1000-sample reference). Measured at the seeds below (torch 2.13, CPU), T = 100 unless stated:
analytic flow base η = 0: 2.6, η = 1: 1.4 (VP at the same seed: 2.5 and 1.0); exact guidance
under flow at T = 1000: 1.1; CoDe softmax with exact values (N = 32, B = 10) under flow: 1.6;
the committed flow MLP at η = 1: 0.5 (η = 0: 1.5; the VP MLP at η = 1: 2.1). The assertions
are at 4 floors, as for VP. With an exact denoiser every η keeps the marginals, so sampling tests
check the path through (α, σ), not the η = 1 noise: a step with VP's variance formula on flow
levels still reaches p (0.8 floors), re-noising with fresh noise (diffusers'
stochastic_sampling) gives 4.5. The posterior test below is what pins the η = 1 step to
q(x_t' | x_t, x0).
"""

import json
import math

import pytest
import torch

from toycode import ExactValue, sample_blockwise
from toycode.backends import analytic_backend, load_trained_backend
from toycode.cli import main
from toycode.core.diffusion import PREDICTIONS, NoiseLevel, Process, from_eps_x0, to_eps_x0
from toycode.exact.reference import ExactReference
from toycode.exact.targets import GridTarget, MixtureTarget
from toycode.experiments import api
from toycode.training.train import find_mlp_checkpoint, train_mlp

F64 = torch.float64
LEVELS = [
    NoiseLevel.vp(0.97),
    NoiseLevel.vp(0.3),
    NoiseLevel.flow(0.2),
    NoiseLevel.flow(0.9),
    NoiseLevel(0.5, 2.0),
]


def _pair(gen, n=64, d=3):
    return (
        torch.randn(n, d, generator=gen, dtype=F64),
        torch.randn(n, d, generator=gen, dtype=F64),
    )


# -- conversions -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", PREDICTIONS)
@pytest.mark.parametrize("level", LEVELS, ids=str)
def test_conversions_round_trip_and_match_the_forward_process(kind, level, gen):
    x0, eps = _pair(gen)
    a, s = level.alpha, level.sigma
    if kind == "flow" and abs(a + s - 1) > 1e-12:
        with pytest.raises(ValueError, match="alpha \\+ sigma = 1"):
            from_eps_x0(eps, x0, kind, a, s)
        return
    x = a * x0 + s * eps
    out = from_eps_x0(eps, x0, kind, a, s)
    # each output is what its definition says, given the true (ε, x0)
    want = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0, "flow": eps - x0}[kind]
    assert torch.allclose(out, want, atol=1e-13)
    got_eps, got_x0 = to_eps_x0(out, kind, x, a, s)
    assert torch.allclose(got_eps, eps, atol=1e-12) and torch.allclose(got_x0, x0, atol=1e-12)


def test_conversions_agree_with_each_other_on_a_model_output(gen):
    """Whatever the parametrisation, one (ε̂, x̂0) at a flow level maps to the same pair."""
    x, out = _pair(gen)
    lv = NoiseLevel.flow(0.35)
    eps, x0 = to_eps_x0(out, "flow", x, lv.alpha, lv.sigma)
    for kind in PREDICTIONS:
        other = from_eps_x0(eps, x0, kind, lv.alpha, lv.sigma)
        e2, x2 = to_eps_x0(other, kind, x, lv.alpha, lv.sigma)
        assert torch.allclose(e2, eps, atol=1e-12) and torch.allclose(x2, x0, atol=1e-12), kind


def test_conversions_refuse_what_they_cannot_form(gen):
    x, out = _pair(gen)
    with pytest.raises(ValueError, match="alpha > 0"):
        to_eps_x0(out, "epsilon", x, 0.0, 1.0)
    with pytest.raises(ValueError, match="sigma > 0"):
        to_eps_x0(out, "sample", x, 1.0, 0.0)
    with pytest.raises(ValueError, match="kind"):
        to_eps_x0(out, "score", x, 0.5, 0.5)
    # at t = 1 a velocity still determines x̂0: x − v̂, and ε̂ = x
    eps, x0 = to_eps_x0(out, "flow", x, 0.0, 1.0)
    assert torch.equal(eps, x) and torch.allclose(x0, x - out)


# -- the grid and the step against diffusers ---------------------------------------------------
@pytest.mark.parametrize("steps, shift", [(10, 1.0), (28, 3.0), (50, 1.5)])
def test_flow_grid_is_diffusers_flow_match_euler(steps, shift):
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sched.set_timesteps(steps)
    p = Process.flow(steps, shift=shift, eta=0.0)
    assert torch.allclose(p.sigmas, sched.sigmas.double(), atol=1e-6, rtol=0)
    assert torch.allclose(p.timesteps, sched.timesteps.double(), atol=1e-3, rtol=0)
    assert torch.allclose(p.alphas + p.sigmas, torch.ones(steps + 1, dtype=F64))
    assert p.sigmas[0] == 1.0 and p.alphas[-1] == 1.0 and p.kind == "flow"
    assert torch.equal(Process.make(steps, "flow", shift=shift).sigmas, p.sigmas)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_eta0_flow_step_is_diffusers_euler_step(shift, gen):
    """On diffusers' own grid, every η = 0 step equals FlowMatchEulerDiscreteScheduler.step
    (float32 there, float64 here: atol 2e-6) and the Euler step x + (t' − t) v̂ (1e-12)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    steps = 12
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sched.set_timesteps(steps)
    t = sched.sigmas.double()
    p = Process(1 - t, t, sched.timesteps.double(), eta=0.0, kind="flow")
    x = torch.randn(16, 4, generator=gen, dtype=F64)
    for i in range(steps):
        v = torch.randn(x.shape, generator=gen, dtype=F64)
        eps, x0 = to_eps_x0(v, "flow", x, float(p.alphas[i]), float(p.sigmas[i]))
        ours = p.step(x, i, eps, x0=x0)
        euler = x + (t[i + 1] - t[i]) * v
        theirs = sched.step(v.float(), sched.timesteps[i], x.float()).prev_sample
        assert torch.allclose(ours, euler, atol=1e-12, rtol=0), i
        assert torch.allclose(ours, theirs.double(), atol=2e-6, rtol=0), i
        if i > 0:  # α > 0: Tweedie's x̂0 from ε̂ alone gives the same step
            assert torch.allclose(p.step(x, i, eps), euler, atol=1e-10, rtol=0), i
        x = ours
    with pytest.raises(ValueError, match="alpha = 0"):
        p.step(x, 0, x)


def _posterior(p, i, j, xt, x0):
    """q(x_j | x_i, x0) by Gaussian algebra: prior N(α_j x0, σ_j²), likelihood
    x_i | x_j ~ N(r x_j, σ_i² − r² σ_j²) with r = α_i/α_j."""
    ai, si, aj, sj = (float(v) for v in (p.alphas[i], p.sigmas[i], p.alphas[j], p.sigmas[j]))
    r = ai / aj
    tau2 = si**2 - r**2 * sj**2
    var = 1 / (1 / sj**2 + r**2 / tau2)
    return var * (aj * x0 / sj**2 + r * xt / tau2), var


@pytest.mark.parametrize("process, i, to", [("flow", 3, None), ("flow", 5, 12), ("vp", 4, 15)])
def test_eta1_step_is_the_posterior_of_the_process(process, i, to):
    """η = 1 from i to ``to`` draws q(x_to | x_i, x0) of this process (coarse steps included)."""
    p = Process.make(20, "flow" if process == "flow" else "linear", eta=1.0)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(200_000, 1, generator=g, dtype=F64)
    eps = torch.randn(x0.shape, generator=g, dtype=F64)
    xt = p.alphas[i] * x0 + p.sigmas[i] * eps
    xs = p.step(xt, i, eps, torch.Generator().manual_seed(3), to=to)
    mean, var = _posterior(p, i, i + 1 if to is None else to, xt, x0)
    resid = xs - mean
    assert float(resid.mean()) == pytest.approx(0, abs=5 * math.sqrt(var / len(x0)))
    assert float(resid.var()) == pytest.approx(var, rel=0.02)


@pytest.mark.parametrize("schedule", ["linear", "flow"])
def test_eta0_coarse_steps_land_on_the_forward_process(schedule, gen):
    """With the true ε̂ and x̂0, a deterministic step to any later index is exact."""
    p = Process.make(30, schedule, eta=0.0)
    x0, eps = _pair(gen)
    x = p.alphas[1] * x0 + p.sigmas[1] * eps
    for i, j in [(1, 4), (4, 5), (5, 17), (17, 30)]:
        x = p.step(x, i, eps, to=j)
        assert torch.allclose(x, p.alphas[j] * x0 + p.sigmas[j] * eps, atol=1e-12)
    assert torch.allclose(x, x0, atol=1e-12)
    with pytest.raises(ValueError, match="to"):
        p.step(x, 5, eps, to=5)


def test_forward_transition_between_levels(gen):
    """Process.forward(x_j, j, i) has the law of x_i given x0 once x_j ~ q(x_j | x0)."""
    p = Process.make(20, "flow")
    x0 = torch.full((200_000, 1), 0.7, dtype=F64)
    xj = p.noise_to(x0, 12, gen)
    xi = p.forward(xj, 12, 4, gen)
    assert float(xi.mean()) == pytest.approx(float(p.alphas[4]) * 0.7, abs=0.01)
    assert float(xi.var()) == pytest.approx(float(p.sigmas[4]) ** 2, rel=0.02)


def test_process_arguments_are_checked():
    for kwargs, match in [
        ({"schedule": "flow", "eta": 1.5}, "eta"),
        ({"schedule": "flow", "shift": 0.0}, "shift"),
        ({"schedule": "rectified"}, "schedule"),
    ]:
        with pytest.raises(ValueError, match=match):
            Process.make(10, **kwargs)
    t = torch.tensor([0.5, 0.8, 0.0], dtype=F64)  # noisier after cleaner: not a reverse grid
    with pytest.raises(ValueError, match="noisy to clean"):
        Process(1 - t, t, torch.tensor([500.0, 800.0]), kind="flow")


# -- precision: fp16 latents on SD 1.5's schedule ----------------------------------------------
def test_fp16_step_and_tweedie_match_float64_on_sd15_schedule():
    """Coefficients are formed in float64 and cast last: every grid index of SD 1.5's DDIM
    schedule (50 steps, leading spacing, steps_offset 1, set_alpha_to_one False) is within 2e-3
    relative of the float64 reference. (Casting ᾱ to fp16 first puts 1 − ᾱ 15 % off there.)"""
    from diffusers import DDIMScheduler

    from toycode.sd.backend import sd_process

    config = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    ).config
    p = sd_process(config, 50, "ddim", eta=0.0)
    assert float(p.abar[-1]) == pytest.approx(0.99915, abs=1e-5)  # ᾱ_0, not 1
    g = torch.Generator().manual_seed(0)
    for i in range(p.num_steps):
        x0 = torch.randn(4096, generator=g, dtype=F64)
        eps = torch.randn(4096, generator=g, dtype=F64)
        x = (p.alphas[i] * x0 + p.sigmas[i] * eps).half()
        e16 = (eps + 0.1 * torch.randn(4096, generator=g, dtype=F64)).half()
        for name, f in [
            ("step", lambda x, e, i=i: p.step(x, i, e)),
            ("tweedie", lambda x, e, i=i: p.tweedie(x, i, e)),
        ]:
            got, want = f(x, e16).double(), f(x.double(), e16.double())
            rel = float((got - want).norm() / want.norm())
            assert rel < 2e-3, (name, i, rel)


# -- exact ground truth under any (α, σ) -------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("i", [0, 1, 30, 99])
def test_analytic_flow_backend_is_the_exact_score_and_velocity(between, gen, i):
    """ε̂ = −σ ∇log p_t (autograd of the noised mixture's density) and v̂ = ε̂ − x̂0 equals the
    probability-flow drift −(x + t ∇log p_t)/(1 − t); at t = 1, x̂0 is the prior mean."""
    be = analytic_backend(between.prior, Process.make(100, "flow"))
    lv = be.process.level(i)
    x = between.prior.noised(lv).sample(64, gen).requires_grad_(True)
    score = torch.autograd.grad(between.prior.noised(lv).log_prob(x).sum(), x)[0]
    x = x.detach()
    pred = be.predict(x, i)
    assert torch.allclose(pred.eps, -lv.sigma * score, atol=1e-9)
    assert torch.allclose(lv.alpha * pred.x0 + lv.sigma * pred.eps, x, atol=1e-10)
    if lv.alpha == 0:
        mean = between.prior.weights @ between.prior.means
        assert torch.allclose(pred.x0, mean.expand_as(x), atol=1e-12)
    else:
        v = pred.eps - pred.x0
        assert torch.allclose(v, -(x + lv.sigma * score) / lv.alpha, atol=1e-8)


@pytest.mark.slow
def test_targets_agree_at_flow_levels(between, gen):
    """Closed form and quadrature give the same log-tilt at rectified-flow levels."""
    closed = MixtureTarget(between.prior, between.reward, between.lam)
    grid = GridTarget(between.prior, between.reward, between.lam)
    for t in (0.1, 0.5, 0.9):
        lv = NoiseLevel.flow(t)
        xt = closed.prior.noised(lv).sample(300, gen)
        assert float((grid.log_tilt(xt, lv) - closed.log_tilt(xt, lv)).abs().max()) < 3e-3
    x = between.prior.sample(5, gen)
    assert torch.allclose(closed.soft_value(x, NoiseLevel.flow(0.0)), between.reward(x))
    # a float is a VP ᾱ, as before the (α, σ) form
    assert torch.equal(closed.log_tilt(x, 0.4), closed.log_tilt(x, NoiseLevel.vp(0.4)))


# -- sampling under flow -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def prior_reference(between):
    return ExactReference.of_sampler(between.prior.sample, 1000, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def target_reference(between):
    return ExactReference.of_sampler(between.target.sample, 1000, torch.Generator().manual_seed(0))


@pytest.mark.slow
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_flow_base_sampling_reaches_the_prior(between, prior_reference, eta):
    be = analytic_backend(between.prior, Process.make(100, "flow", eta=eta))
    res = sample_blockwise(be, between.reward, 1000, generator=torch.Generator().manual_seed(11))
    assert prior_reference.mmd2_over_floor(res.samples) < 4
    assert res.nfe == 1000 * 100


@pytest.mark.slow
def test_exact_guidance_under_flow_reaches_the_target(between, target_reference):
    res = api.sample(between, method="exact-guidance", steps=1000, n=1000, seed=3, process="flow")
    assert target_reference.mmd2_over_floor(res.samples) < 4


@pytest.mark.slow
def test_code_softmax_exact_values_under_flow_reaches_the_target(between, target_reference):
    be = analytic_backend(between.prior, Process.make(100, "flow"))
    res = sample_blockwise(
        be,
        between.reward,
        1000,
        num_candidates=32,
        block_size=10,
        selection="softmax",
        lam=between.lam,
        value=ExactValue(between.target),
        generator=torch.Generator().manual_seed(1),
    )
    assert target_reference.mmd2_over_floor(res.samples) < 4


def test_trained_flow_mlp_reaches_the_prior(between, prior_reference):
    """The committed flow-matching MLP at η = 1 (float32 state)."""
    be = load_trained_backend(
        find_mlp_checkpoint(between.prior, process="flow"), steps=100, process="flow"
    )
    assert be.process.kind == "flow" and be.prediction == "flow"
    res = sample_blockwise(be, between.reward, 1000, generator=torch.Generator().manual_seed(11))
    assert prior_reference.mmd2_over_floor(res.samples) < 4


def test_gradient_guidance_runs_under_flow(between):
    """DPS, detached DPS and universal guidance step through t = 1 (α = 0) without NaNs."""
    for method, opts in [
        ("dps", {}),
        ("dps-detached", {}),
        ("universal", {"backward_steps": 2, "recurrence": 2}),
    ]:
        res = api.sample(between, method=method, steps=20, n=64, process="flow", **opts)
        assert torch.isfinite(res.samples).all(), method
        assert float(res.rewards.mean()) > -1.5, method  # base mean reward is about −2.1


# -- training and loading ----------------------------------------------------------------------
def test_flow_training_is_reproducible_and_recorded(tmp_path, between):
    a = train_mlp(
        between.prior,
        tmp_path / "a.pt",
        steps=20,
        batch_size=64,
        width=16,
        depth=1,
        progress=False,
        process="flow",
    )
    torch.manual_seed(7)  # the global generator plays no part
    b = train_mlp(
        between.prior,
        tmp_path / "b.pt",
        steps=20,
        batch_size=64,
        width=16,
        depth=1,
        progress=False,
        process="flow",
    )
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (a["process"], a["prediction"], a["schedule"]["name"]) == ("flow", "flow", "flow")
    assert find_mlp_checkpoint(between.prior, tmp_path, process="flow").name == "a.pt"
    with pytest.raises(ValueError, match="process='vp'.*a.pt \\(flow\\)"):
        find_mlp_checkpoint(between.prior, tmp_path, process="vp")
    with pytest.raises(ValueError, match="cannot sample with process='vp'"):
        load_trained_backend(tmp_path / "a.pt", process="vp")


# -- the command line --------------------------------------------------------------------------
def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, match",
    [
        (["sample", "--problem", "between", "--process", "ddim"], "process must be one of"),
        (
            ["sample", "--problem", "between", "--backend", "FLOW", "--process", "vp"],
            "cannot sample with process='vp'",
        ),
        (["sample", "--problem", "between", "--process", "flow", "--eta", "1.5"], "eta must be in"),
        (
            ["sample", "--problem", "between", "--process", "flow", "--eta", "-0.1"],
            "eta must be in",
        ),
        (["train", "--problem", "between", "--process", "sde"], "process must be one of"),
    ],
)
def test_bad_process_input_is_a_one_line_error_and_writes_nothing(
    capsys, tmp_path, between, argv, match
):
    flow = find_mlp_checkpoint(between.prior, process="flow")
    argv = [flow if a == "FLOW" else a for a in argv]
    out = tmp_path / ("x.pt" if argv[0] == "train" else "x.npz")
    code, _, err = (
        _run(capsys, *argv, "--out", out, "--n", "4")
        if argv[0] == "sample"
        else _run(capsys, *argv, "--out", out)
    )
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"toycode {argv[0]}: error: ")
    assert not out.exists()


def test_sample_command_under_flow(capsys, tmp_path):
    code, out, _ = _run(
        capsys,
        "sample",
        "--problem",
        "between",
        "--process",
        "flow",
        "--backend",
        "trained",
        "--method",
        "code",
        "--n",
        "8",
        "--steps",
        "10",
        "--num-candidates",
        "2",
    )
    assert code == 0
    assert json.loads(out)["backend"].endswith("mlp_gmm3_flow.pt")
