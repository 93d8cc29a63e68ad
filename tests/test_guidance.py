import math

import pytest
import torch

from toycode import Process, sample_blockwise
from toycode.backends import analytic_backend
from toycode.core.guidance import DPS, ExactGuidance, GuidedBackend, Universal
from toycode.exact.reference import ExactReference
from toycode.experiments import api


@pytest.fixture(scope="module")
def backend(between):
    return analytic_backend(between.prior, Process.make(50))


def test_exact_guidance_is_the_tilted_score(between, backend, gen):
    """ε̂ = −√(1 − ᾱ) ∇log p*_t, with p*_t the noised target mixture (closed form)."""
    rule = ExactGuidance(between.target)
    for i in (0, 10, 30, 49):
        a = float(backend.process.abar[i])
        x = between.target.mixture.noised(a).sample(64, gen)
        want = -math.sqrt(1 - a) * between.target.mixture.noised(a).score(x)
        assert torch.allclose(rule(backend, x, i).eps, want, atol=1e-9)


@pytest.mark.slow
def test_exact_guidance_reaches_the_target(between):
    """The exact tilted reverse process at T = 1000: within a few noise floors of p*."""
    exact = ExactReference.of_sampler(between.target.sample, 1000, torch.Generator().manual_seed(0))
    res = api.sample(between, method="exact-guidance", steps=1000, n=1000, seed=3)
    assert exact.mmd2_over_floor(res.samples) < 4
    assert res.nfe_per_sample == 1000 and res.reward_grads == 1000 * 1000 and res.backprops == 0


def _reward_of_tweedie(backend, reward, x, i):
    return reward(backend.predict(x, i).x0)


def test_dps_shift_is_the_gradient_through_the_denoiser(between, backend, gen):
    i, s = 20, 0.7
    a = float(backend.process.abar[i])
    x = between.prior.noised(a).sample(5, gen)
    eps = DPS(between.reward, s)(backend, x, i).eps
    base = backend.predict(x, i).eps
    g = (base - eps) / (s * math.sqrt(1 - a))
    h = 1e-6  # central differences of r(x̂0(x)) in each coordinate
    for d in range(2):
        e = torch.zeros_like(x)
        e[:, d] = h
        fd = (
            _reward_of_tweedie(backend, between.reward, x + e, i)
            - _reward_of_tweedie(backend, between.reward, x - e, i)
        ) / (2 * h)
        assert torch.allclose(g[:, d], fd, atol=1e-6)


def test_dps_detached_uses_the_reward_gradient_at_tweedie(between, backend, gen):
    i, s = 20, 0.7
    a = float(backend.process.abar[i])
    x = between.prior.noised(a).sample(5, gen)
    pred = backend.predict(x, i)
    c, p = between.reward.center, between.reward.precision
    grad_r = -(pred.x0 - c) @ p  # ∇r for r = −½(x − c)ᵀP(x − c)
    eps = DPS(between.reward, s, detach=True)(backend, x, i).eps
    assert torch.allclose(eps, pred.eps - s * math.sqrt(1 - a) * grad_r / math.sqrt(a))


def test_universal_reduces_to_dps_and_counts_its_work(between, backend, gen):
    x = between.prior.noised(float(backend.process.abar[10])).sample(8, gen)
    plain = Universal(between.reward, 1.0)(backend, x, 10)
    assert torch.allclose(plain.eps, DPS(between.reward, 1.0)(backend, x, 10).eps)
    rich = Universal(between.reward, 1.0, backward_steps=3, backward_lr=0.2, recurrence=2)(
        backend, x, 10, torch.Generator().manual_seed(0)
    )
    assert rich.x is not None and (rich.nfe, rich.reward_grads, rich.backprops) == (2, 8, 2)
    # backward guidance moves x̂0 uphill in reward
    fwd = Universal(between.reward, 1.0, backward_steps=0)(backend, rich.x, 10)
    back = Universal(between.reward, 1.0, backward_steps=3, backward_lr=0.2)(backend, rich.x, 10)
    assert (between.reward(back.x0) > between.reward(fwd.x0)).all()
    res = api.sample(between, method="universal", backward_steps=3, recurrence=2, steps=20, n=4)
    assert res.nfe == 4 * 2 * 20 and res.reward_grads == 4 * 2 * 4 * 20 and res.backprops == 4 * 40


def test_code_gradient_is_guided_proposals_with_selection(between):
    res = api.sample(between, method="code-gradient", num_candidates=4, block_size=5, steps=20, n=6)
    assert res.nfe_per_sample == 1 + 19 * 4 == res.reward_grads / 6 == res.backprops / 6
    assert res.reward_calls == 6 * 4 * 4


@pytest.mark.parametrize("method", ["dps", "dps-detached", "universal", "code-gradient"])
def test_gradient_methods_refuse_non_differentiable_rewards(box, method):
    with pytest.raises(ValueError, match="not; use a gradient-free method"):
        api.sample(box, method=method, n=4, steps=10)


def test_bad_guidance_arguments(between):
    with pytest.raises(ValueError, match="scale"):
        DPS(between.reward, -1.0)
    with pytest.raises(ValueError, match="recurrence"):
        Universal(between.reward, 1.0, recurrence=0)
    with pytest.raises(ValueError, match="backward_steps"):
        Universal(between.reward, 1.0, backward_steps=-1)


def test_guided_backend_keeps_the_gradient_free_path_graph_free(between, backend):
    res = sample_blockwise(
        GuidedBackend(backend, DPS(between.reward, 1.0)),
        between.reward,
        4,
        generator=torch.Generator().manual_seed(0),
    )
    assert not res.samples.requires_grad and res.reward_grads == 4 * 50


def test_universal_recurrence_draws_only_from_the_samplers_generator(between):
    """Self-recurrence re-noises with the sampler's generator: the same seed gives the same
    samples, another seed other samples, and the global generator is left untouched."""
    be = GuidedBackend(
        analytic_backend(between.prior, Process.make(10)),
        Universal(between.reward, 1.0, recurrence=2),
    )
    state = torch.get_rng_state()
    runs = [
        sample_blockwise(be, between.reward, 6, generator=torch.Generator().manual_seed(s))
        for s in (3, 3, 4)
    ]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(runs[0].samples, runs[1].samples)
    assert not torch.allclose(runs[0].samples, runs[2].samples)
