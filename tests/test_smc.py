import pytest
import torch

from toycode import ExactValue, Process, sample_blockwise
from toycode.backends import analytic_backend
from toycode.core.steering import SELECTIONS
from toycode.exact.reference import ExactReference


def test_systematic_resampling_counts_are_floor_or_ceil():
    """Each index is drawn ⌊Kw⌋ or ⌈Kw⌉ times, and K·w times on average."""
    w = torch.tensor([[0.05, 0.4, 0.15, 0.3, 0.1]], dtype=torch.float64)
    k, gen = 8, torch.Generator().manual_seed(0)
    total = torch.zeros(5, dtype=torch.float64)
    for _ in range(4000):
        idx = SELECTIONS["systematic"](w, w.log(), k, gen)[0]
        counts = torch.bincount(idx, minlength=5).double()
        assert ((counts >= (k * w[0]).floor()) & (counts <= (k * w[0]).ceil())).all()
        total += counts
    assert torch.allclose(total / 4000, k * w[0], atol=0.03)


def test_carried_weights_telescope_to_the_reward(between):
    """With no intermediate resampling, the final weights are softmax(λ r(x0)) per population."""
    be = analytic_backend(between.prior, Process.make(20))
    seen = []
    sample_blockwise(
        be,
        between.reward,
        32,
        particles=8,
        block_size=1,
        selection="softmax",
        lam=between.lam,
        value=ExactValue(between.target),
        ess_threshold=0.0,
        callback=seen.append,
        generator=torch.Generator().manual_seed(0),
    )
    for b in seen[:-1]:  # carried: identity selection
        assert torch.equal(b["selected"], torch.arange(8).expand(4, 8))
    last = seen[-1]
    want = torch.softmax(between.lam * between.reward(last["candidates"]).view(4, 8), 1)
    assert torch.allclose(last["weights"], want, atol=1e-10)


def test_smc_costs_one_denoiser_call_per_step(between):
    be = analytic_backend(between.prior, Process.make(30))
    res = sample_blockwise(
        be,
        between.reward,
        64,
        particles=16,
        block_size=1,
        selection="systematic",
        generator=torch.Generator().manual_seed(0),
    )
    assert res.nfe_per_sample == 30 and res.reward_calls == 64 * 30
    assert res.ess.shape == (30, 4)


@pytest.mark.slow
def test_smc_with_exact_values_converges_as_particles_grow(between):
    """64 populations each: the reward bias shrinks with K, and K = 128 matches p*."""
    t = between.target
    be = analytic_backend(between.prior, Process.make(100))
    errors = {}
    for k in (2, 128):
        res = sample_blockwise(
            be,
            between.reward,
            64 * k,
            particles=k,
            block_size=1,
            selection="systematic",
            lam=between.lam,
            ess_threshold=0.5,
            value=ExactValue(t),
            generator=torch.Generator().manual_seed(1),
        )
        per_pop = res.rewards.view(64, k).mean(1)
        se = float(per_pop.std()) / 8
        errors[k] = abs(float(res.rewards.mean()) - t.reward_mean) / se
        if k == 128:
            exact = ExactReference.of_sampler(
                t.sample, 2000, torch.Generator().manual_seed(0), n=64 * k, replicates=5
            )
            assert exact.mmd2_over_floor(res.samples) < 4
    assert errors[128] < 3 < 5 < errors[2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"particles": 0}, "particles"),
        ({"particles": 3}, "multiple"),
        ({"particles": 4, "selection": "argmax"}, "resamples"),
        ({"particles": 4, "selection": "residual"}, "selection"),
        ({"particles": 4, "ess_threshold": 1.5}, "ess_threshold"),
        ({"particles": 4, "ess_threshold": -0.1}, "ess_threshold"),
        ({"particles": 4, "num_candidates": 2}, "not both"),
    ],
)
def test_bad_smc_arguments(between, kwargs, match):
    be = analytic_backend(between.prior, Process.make(10))
    with pytest.raises(ValueError, match=match):
        sample_blockwise(be, between.reward, 8, **{"selection": "softmax", **kwargs})


def test_smc_refuses_a_deterministic_step(between):
    be = analytic_backend(between.prior, Process.make(10, eta=0.0))
    with pytest.raises(ValueError, match="stochastic"):
        sample_blockwise(be, between.reward, 8, particles=4, selection="softmax")
