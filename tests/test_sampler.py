import math

import pytest
import torch

from toycode import ExactValue, Process, sample_blockwise
from toycode.backends import analytic_backend
from toycode.exact.reference import ExactReference


class CountingBackend:
    """Wraps a backend and counts denoiser rows itself, independently of the sampler's Ledger."""

    def __init__(self, inner):
        self.inner, self.rows, self.calls = inner, 0, 0
        self.process, self.prior_sample = inner.process, inner.prior_sample
        self.decode, self.noise_to = inner.decode, inner.noise_to

    def predict(self, x, i, generator=None):
        self.rows += x.shape[0]
        self.calls += 1
        return self.inner.predict(x, i, generator)


class CountingReward:
    def __init__(self, reward):
        self.reward, self.rows = reward, 0

    def __call__(self, x):
        self.rows += len(x)
        return self.reward(x)


def expected_nfe(T, N, B, value):
    """Per-sample NFE from first principles (see the sampler's docstring)."""
    if N == 1:
        return T
    if value == "tweedie":
        return 1 + (T - 1) * N
    blocks = math.ceil(T / B)
    return (T - blocks) * N + blocks


@pytest.mark.slow
@pytest.mark.parametrize(
    "N, B, value",
    [
        (1, 5, "tweedie"),
        (4, 1, "tweedie"),
        (4, 5, "tweedie"),
        (4, 7, "tweedie"),
        (4, 20, "tweedie"),
        (3, 1, "exact"),
        (3, 5, "exact"),
        (3, 7, "exact"),
        (3, 20, "exact"),
    ],
)
def test_nfe_and_reward_calls_follow_the_formula(between, N, B, value):
    T, n = 20, 6
    backend = CountingBackend(analytic_backend(between.prior, Process.make(T)))
    reward = CountingReward(between.reward)
    val = "tweedie" if value == "tweedie" else ExactValue(between.with_lam(1.0).target)
    res = sample_blockwise(
        backend,
        reward,
        n,
        num_candidates=N,
        block_size=B,
        value=val,
        selection="softmax",
        generator=torch.Generator().manual_seed(0),
    )
    assert backend.rows == res.nfe == n * expected_nfe(T, N, B, value)
    blocks = math.ceil(T / B)
    calls = N * blocks if (value == "tweedie" and N > 1) else (N if N > 1 else 1)
    assert reward.rows == res.reward_calls == n * calls
    assert res.ess.shape == ((blocks, n) if N > 1 else (0, n))


def test_paper_setting_costs_one_plus_t_minus_one_times_n(between):
    """The paper's T = 50, B = 5, N = 8, counted by the backend itself: 1 + 49·8 = 393 per
    sample (the official code spends 8·50·(1 + 1/5) = 480)."""
    be = CountingBackend(analytic_backend(between.prior, Process.make(50)))
    res = sample_blockwise(be, between.reward, 2, num_candidates=8, block_size=5)
    assert be.rows == res.nfe == 2 * 393


def test_same_seed_same_samples_and_different_seed_differs(between):
    be = analytic_backend(between.prior, Process.make(20))
    run = [
        sample_blockwise(
            be,
            between.reward,
            50,
            num_candidates=4,
            block_size=5,
            selection="softmax",
            generator=torch.Generator().manual_seed(s),
        )
        for s in (7, 7, 8)
    ]
    assert torch.equal(run[0].samples, run[1].samples)
    assert not torch.allclose(run[0].samples, run[2].samples)


def test_argmax_keeps_the_candidate_the_reward_favours(between):
    """A reward that scores candidate 2 of every group highest (by position, whatever the state)
    must see candidate 2 kept at every block: the choice is checked against the reward's own
    preference, not against values the sampler reports."""
    N, n = 4, 5

    def favour_two(x):
        return ((torch.arange(len(x)) % N) == 2).double() + 1e-3 * x[:, 0]

    seen = []
    be = analytic_backend(between.prior, Process.make(12))
    sample_blockwise(
        be,
        favour_two,
        n,
        num_candidates=N,
        block_size=3,
        callback=seen.append,
        generator=torch.Generator().manual_seed(0),
    )
    assert [b["j"] for b in seen] == [3, 6, 9, 12]
    for b in seen:
        assert torch.equal(b["selected"].view(-1), torch.full((n,), 2))
        assert torch.equal(b["x"], b["candidates"][torch.arange(n) * N + 2])
        assert torch.equal(b["ess"], torch.ones(n, dtype=torch.float64))


class MovingRule:
    """A guidance rule that moves the state by +100 on every call (as self-recurrence moves it)
    and records the states it is asked about."""

    def __init__(self):
        self.seen = []

    def __call__(self, backend, x, i, generator=None):
        self.seen.append((i, x.clone()))
        moved = x + 100.0
        pred = backend.predict(moved, i, generator)
        return pred._replace(x=moved)


def test_a_state_moved_by_predict_is_kept_at_every_index_including_the_first(between):
    from toycode.core.guidance import GuidedBackend

    rule = MovingRule()
    be = GuidedBackend(analytic_backend(between.prior, Process.make(4, eta=0.0)), rule)
    x_t = be.prior_sample(3, torch.Generator().manual_seed(0))
    sample_blockwise(be, between.reward, 3, generator=torch.Generator().manual_seed(0))
    assert [i for i, _ in rule.seen] == [0, 1, 2, 3]
    assert torch.equal(rule.seen[0][1], x_t)
    # the step from index 0 starts at the moved state (+100), so index 1 sees a state near it;
    # a sampler that dropped the first move would hand index 1 a state of order 1
    assert (rule.seen[1][1] - x_t).mean() > 50


def test_base_model_matches_the_prior(between):
    """N = 1 on the exact denoiser reproduces p within the estimator's noise floor."""
    gen = torch.Generator().manual_seed(11)
    exact = ExactReference.of_sampler(between.prior.sample, 1000, gen)
    res = sample_blockwise(
        analytic_backend(between.prior, Process.make(100)), between.reward, 1000, generator=gen
    )
    assert exact.mmd2_over_floor(res.samples) < 4


@pytest.fixture(scope="module")
def target_reference(between):
    return ExactReference.of_sampler(between.target.sample, 1000, torch.Generator().manual_seed(0))


@pytest.mark.slow
def test_softmax_with_exact_values_converges_to_the_target(between, target_reference):
    """Blockwise SNIS of the optimal policy: N = 64 is within a few floors of p*."""
    be = analytic_backend(between.prior, Process.make(100))
    res = sample_blockwise(
        be,
        between.reward,
        1000,
        num_candidates=64,
        block_size=10,
        selection="softmax",
        lam=between.lam,
        value=ExactValue(between.target),
        generator=torch.Generator().manual_seed(1),
    )
    assert target_reference.mmd2_over_floor(res.samples) < 4
    t = between.target
    masses = t.prior.responsibilities(res.samples).mean(0)
    assert 0.5 * float((masses - t.mode_weights).abs().sum()) < 0.05


@pytest.mark.slow
def test_argmax_collapses_onto_the_reward_mode(between, target_reference):
    """Argmax is the λ → ∞ limit: reward far above E_{p*}[r], distribution far from p*."""
    be = analytic_backend(between.prior, Process.make(100))
    res = sample_blockwise(
        be,
        between.reward,
        1000,
        num_candidates=64,
        block_size=10,
        selection="argmax",
        value=ExactValue(between.target),
        generator=torch.Generator().manual_seed(1),
    )
    se = float(res.rewards.std()) / math.sqrt(res.n)
    assert float(res.rewards.mean()) > between.target.reward_mean + 10 * se
    assert target_reference.mmd2_over_floor(res.samples) > 20


def test_reference_start_and_strength(between):
    T, n = 20, 8
    ref = between.prior.sample(n, torch.Generator().manual_seed(0))
    be = CountingBackend(analytic_backend(between.prior, Process.make(T)))
    res = sample_blockwise(
        be,
        between.reward,
        n,
        num_candidates=3,
        block_size=2,
        reference=ref,
        strength=0.5,
        generator=torch.Generator().manual_seed(1),
    )
    assert res.settings["start_index"] == 10
    assert res.nfe == n * (1 + (10 - 1) * 3)
    # at strength → 0 the reference is kept; at a small strength it barely moves
    kept = sample_blockwise(be, between.reward, n, reference=ref, strength=0.01)
    assert torch.equal(kept.samples, ref)
    near = sample_blockwise(
        be,
        between.reward,
        n,
        reference=ref,
        strength=0.1,
        generator=torch.Generator().manual_seed(2),
    )
    assert (near.samples - ref).norm(dim=1).max() < 0.5


def test_deterministic_steps_refuse_multiple_candidates(between):
    be = analytic_backend(between.prior, Process.make(10, eta=0.0))
    with pytest.raises(ValueError, match="stochastic"):
        sample_blockwise(be, between.reward, 2, num_candidates=4)
    # N = 1 (plain DDIM) is fine and deterministic
    a = sample_blockwise(be, between.reward, 3, generator=torch.Generator().manual_seed(0))
    b = sample_blockwise(be, between.reward, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.samples, b.samples)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_candidates": 0}, "num_candidates"),
        ({"block_size": 0}, "block_size"),
        ({"lam": -1.0}, "lam"),
        ({"selection": "best"}, "selection"),
        ({"n": 0}, "n "),
        ({"value": "oracle"}, "value"),
        ({"reference": torch.zeros(4, 2), "strength": 0.0}, "strength"),
        ({"reference": torch.zeros(4, 2), "strength": 1.5}, "strength"),
        ({"reference": torch.zeros(3, 2)}, "reference"),
    ],
)
def test_bad_arguments(between, kwargs, match):
    be = analytic_backend(between.prior, Process.make(10))
    args = {"n": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_blockwise(be, between.reward, args.pop("n"), **args)


@pytest.mark.parametrize(
    "bad, match", [(lambda x: x[:, 0] * float("nan"), "non-finite"), (lambda x: x, "shape")]
)
def test_bad_rewards_are_caught(between, bad, match):
    be = analytic_backend(between.prior, Process.make(10))
    with pytest.raises(ValueError, match=match):
        sample_blockwise(be, bad, 4, num_candidates=2, block_size=5)
