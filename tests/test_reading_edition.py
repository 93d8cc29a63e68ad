"""The reading edition of CoDe (toycode.code_sample) equals the engine bit for bit.

Samples, rewards, denoiser and reward calls of ``code_sample`` and ``sample_blockwise`` agree
exactly under one generator seed, for argmax and softmax selection, with Tweedie and exact
values, on a toy and on a tiny Stable Diffusion pipeline; a different seed gives different
samples, so the equality is not that of two constant outputs.
"""

import inspect
import math

import pytest
import torch

from toycode import ExactValue, Process, code_sample, load_problem, sample_blockwise
from toycode.backends import analytic_backend


def _both(backend, reward, n, seed, **settings):
    runs = [
        f(backend, reward, n, generator=torch.Generator().manual_seed(seed), **settings)
        for f in (code_sample, sample_blockwise)
    ]
    return runs


def _assert_same(reading, engine):
    assert torch.equal(reading.samples, engine.samples)
    assert torch.equal(reading.rewards, engine.rewards)
    assert (reading.nfe, reading.reward_calls, reading.reward_grads, reading.backprops) == (
        engine.nfe,
        engine.reward_calls,
        engine.reward_grads,
        engine.backprops,
    )
    assert reading.settings == engine.settings


@pytest.fixture(scope="module")
def between():
    return load_problem("between")


@pytest.mark.slow
@pytest.mark.parametrize("selection", ["argmax", "softmax"])
@pytest.mark.parametrize("value", ["tweedie", "exact"])
@pytest.mark.parametrize("steps, N, B", [(20, 4, 5), (20, 3, 7), (12, 2, 1), (10, 3, 10)])
def test_reading_edition_is_the_engine_on_a_toy(between, selection, value, steps, N, B):
    backend = analytic_backend(between.prior, Process.make(steps))
    val = "tweedie" if value == "tweedie" else ExactValue(between.target)
    settings = {
        "num_candidates": N,
        "block_size": B,
        "selection": selection,
        "lam": between.lam,
        "value": val,
    }
    reading, engine = _both(backend, between.reward, 16, 0, **settings)
    _assert_same(reading, engine)
    blocks = math.ceil(steps / B)
    per_sample = 1 + (steps - 1) * N if value == "tweedie" else (steps - blocks) * N + blocks
    assert reading.nfe == 16 * per_sample
    other = code_sample(
        backend, between.reward, 16, generator=torch.Generator().manual_seed(1), **settings
    )
    assert not torch.equal(other.samples, reading.samples)


@pytest.mark.slow
def test_reading_edition_is_the_engine_under_flow_and_guidance(between):
    """Rectified flow's grid and a DPS-guided backend (its predict moves no state but costs
    reward gradients) take the same path through both."""
    from toycode.core.guidance import DPS, GuidedBackend

    flow = analytic_backend(between.prior, Process.make(12, "flow"))
    guided = GuidedBackend(
        analytic_backend(between.prior, Process.make(12)), DPS(between.reward, 1.0)
    )
    for backend in (flow, guided):
        _assert_same(
            *_both(
                backend,
                between.reward,
                8,
                2,
                num_candidates=3,
                block_size=4,
                selection="softmax",
                lam=between.lam,
            )
        )


@pytest.mark.slow
def test_reading_edition_is_the_engine_on_a_tiny_sd_pipeline():
    from toycode.sd import make_sd_backend
    from toycode.sd.tiny import tiny_pipeline

    def brightness(images):
        return images.mean((1, 2, 3)).double()

    backend = make_sd_backend(tiny_pipeline("sd", seed=0), "a red fox in the snow", steps=6)
    for selection in ("argmax", "softmax"):
        settings = {"num_candidates": 3, "block_size": 2, "selection": selection, "lam": 50.0}
        reading, engine = _both(backend, brightness, 2, 0, **settings)
        _assert_same(reading, engine)
        assert reading.nfe == 2 * (1 + 5 * 3)
        other = code_sample(
            backend, brightness, 2, generator=torch.Generator().manual_seed(1), **settings
        )
        assert not torch.equal(other.samples, reading.samples)


def test_reading_edition_fits_one_screen_and_refuses_what_it_does_not_do(between):
    source = inspect.getsource(code_sample)
    body = source.split('"""')[2].strip("\n").splitlines()
    assert len(body) <= 40
    backend = analytic_backend(between.prior, Process.make(5))
    for kwargs, match in (
        ({"num_candidates": 1}, "num_candidates"),
        ({"num_candidates": 2, "selection": "systematic"}, "selection"),
        ({"num_candidates": 2, "value": "exact"}, "value"),
    ):
        with pytest.raises(ValueError, match=match):
            code_sample(backend, between.reward, 4, block_size=2, **kwargs)
