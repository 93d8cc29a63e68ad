"""Search loops beside the sampler: noise search, Diffusion Tree Sampling, the shrinking beam."""

import itertools
import math

import pytest
import torch

from toycode import ExactValue, Process, sample_blockwise
from toycode.backends import analytic_backend
from toycode.core.methods import KNOBS, METHODS, beam_budget
from toycode.core.search import (
    Forest,
    beam_nfe,
    beam_search,
    beam_widths,
    noise_random_search,
    noise_zero_order_search,
    tree_sample,
)
from toycode.exact.reference import ExactReference
from toycode.experiments import api

SEARCH = ("noise-random", "noise-zero-order", "dts", "dts-star", "dsearch")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _base_from(backend, noise):
    """The base sampler's output from a given x_T (deterministic when η = 0)."""
    x = noise
    for i in range(backend.process.num_steps):
        pred = backend.predict(x, i)
        x = backend.process.step(x, i, pred.eps, None, x0=pred.x0)
    return x


# -- noise search ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["noise-random", "noise-zero-order", "dts"])
def test_one_trajectory_is_the_base_sampler_bit_for_bit(between, method):
    """N = 1: one noise, one rollout — the same draws as the base model's loop, same output."""
    base = api.sample(between, method="base", n=16, steps=10, seed=3)
    res = api.sample(between, method=method, num_candidates=1, n=16, steps=10, seed=3)
    assert torch.equal(res.samples, base.samples) and torch.equal(res.rewards, base.rewards)
    assert res.nfe_per_sample == 10 and res.reward_calls == 16


def test_noise_search_keeps_base_trajectories_and_only_chooses(between):
    """Every kept output is exactly the base sampler's output from the kept noise (η = 0: the
    noise fixes the trajectory); random search keeps the best of its N; zero-order search
    moves its pivot on a sphere around it and never loses reward. Cost: N·T and N calls."""
    be = analytic_backend(between.prior, Process.make(10, eta=0.0))
    seen = []
    res = noise_random_search(
        be, between.reward, 8, num_candidates=5, generator=_gen(), callback=seen.append
    )
    (info,) = seen
    kept = info["noise"][torch.arange(8), info["selected"]]
    assert torch.allclose(_base_from(be, kept), res.samples, atol=1e-12, rtol=0)
    assert torch.equal(res.rewards, info["rewards"].max(1).values)
    assert res.nfe == 8 * 5 * 10 and res.reward_calls == 8 * 5

    seen.clear()
    res = noise_zero_order_search(
        be,
        between.reward,
        8,
        num_candidates=10,
        neighbours=4,
        radius=0.3,
        generator=_gen(1),
        callback=seen.append,
    )
    assert [s["noise"].shape[1] for s in seen] == [4, 4, 1]  # 1 pivot + 9 neighbours
    for s in seen:
        dist = (s["noise"] - s["centre"][:, None]).norm(dim=-1)
        assert torch.allclose(dist, torch.full_like(dist, 0.3 * math.sqrt(2)), atol=1e-12)
    best = torch.stack([s["rewards"].max(1).values for s in seen])
    assert (res.rewards >= best.max(0).values - 1e-12).all()
    assert torch.allclose(_base_from(be, seen[-1]["pivot"]), res.samples, atol=1e-12, rtol=0)
    assert res.nfe == 8 * 10 * 10 and res.reward_calls == 8 * 10


# -- Diffusion Tree Sampling ----------------------------------------------------------------------


def _hand_tree(lam):
    """root → a, b (x_T); a → leaves 1, 2; b → leaf 3 (T = 1, two children at most)."""
    forest = Forest(1, 1, 2, torch.zeros(1, 2, dtype=torch.float64))
    rows, x = torch.tensor([0]), torch.zeros(1, 2, dtype=torch.float64)
    a = forest.add(rows, torch.tensor([0]), x, 0)
    b = forest.add(rows, torch.tensor([0]), x, 0)
    leaves, rewards = [], (0.3, -1.2, 0.5)
    for parent, r in zip((a, a, b), rewards):
        leaf = forest.add(rows, parent, x, 1)
        forest.value[0, leaf] = r
        forest.sat[0, leaf] = True
        forest.backup(rows, leaf, lam)
        leaves.append(int(leaf))
    return forest, int(a), int(b), leaves, rewards


@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0])
def test_soft_backup_is_the_closed_form_on_a_hand_built_tree(lam):
    forest, a, b, leaves, (r1, r2, r3) = _hand_tree(lam)

    def soft(*v):
        return (
            sum(v) / len(v)
            if lam == 0
            else math.log(sum(math.exp(lam * u) for u in v) / len(v)) / lam
        )

    va, vb = soft(r1, r2), soft(r3)
    assert forest.value[0, a].item() == pytest.approx(va, abs=1e-12)
    assert forest.value[0, b].item() == pytest.approx(vb, abs=1e-12)
    assert forest.value[0, 0].item() == pytest.approx(soft(va, vb), abs=1e-12)
    # a is full of saturated leaves; b has room, so the root is open
    assert forest.sat[0, a] and not forest.sat[0, b] and not forest.sat[0, 0]


def test_boltzmann_descent_draws_leaves_as_importance_sampling():
    """P(leaf) = e^{λ r} / (Π_ancestors |children| · e^{λ V̂(root)}): self-normalised
    importance sampling of the tree's leaves, checked against 20000 draws."""
    lam = 1.5
    forest, a, b, leaves, rewards = _hand_tree(lam)
    v_root = forest.value[0, 0].item()
    want = torch.tensor(
        [math.exp(lam * (r - v_root)) / (2 * c) for r, c in zip(rewards, (2, 2, 1))],
        dtype=torch.float64,
    )
    assert want.sum().item() == pytest.approx(1.0, abs=1e-12)
    m, gen = 20000, _gen()
    node = torch.zeros(m, dtype=torch.long)
    rows = torch.zeros(m, dtype=torch.long)
    for _ in range(2):
        node = forest.choose(rows, node, lam, False, gen)
    freq = torch.tensor([(node == leaf).double().mean() for leaf in leaves])
    assert (freq - want).abs().max() < 4 * (want * (1 - want) / m).sqrt().max()


def test_dts_spends_its_budget_and_no_more(between):
    """Each tree rolls out while it has spent ≤ (N − 1)·T calls: (N − 1)·T < NFE ≤ N·T per
    output; one child per node makes a single path, after which the tree is complete."""
    be = analytic_backend(between.prior, Process.make(10))
    seen = []
    res = tree_sample(
        be,
        between.reward,
        16,
        num_candidates=6,
        children=3,
        lam=between.lam,
        generator=_gen(),
        callback=seen.append,
    )
    spent = torch.zeros(16)
    for s in seen:
        spent += torch.where(s["active"], 10 - s["depth"], 0)
    assert ((spent > 50) & (spent <= 60)).all() and res.nfe == int(spent.sum())
    assert res.reward_calls == sum(int(s["active"].sum()) for s in seen)
    assert seen[0]["depth"].eq(0).all()  # the first rollout starts at the prior
    single = tree_sample(be, between.reward, 4, num_candidates=6, children=1, generator=_gen())
    assert single.nfe_per_sample == 10 and single.settings["iterations"] == 1


@pytest.mark.slow
def test_dts_converges_to_p_star_as_its_budget_grows(between):
    """DTS on `between` (T = 20, 16 children per node, 256 trees): with 2 rollouts' worth of
    calls it is tens of noise floors from p*; with 64 (1280 NFE per output) its MMD² is within
    a few floors (measured 2.1, 1.2, 0.9 on seeds 1–3). Its reward is still 3–4.5 s.e. below
    E_p*[r] there: the adaptive tree's finite-budget bias (docs/methods/dts.md)."""
    t, n = between.target, 256
    be = analytic_backend(between.prior, Process.make(20))
    exact = ExactReference.of_sampler(t.sample, 2000, _gen(), n=n, replicates=5)
    floors = {}
    for budget in (2, 64):
        res = tree_sample(
            be,
            between.reward,
            n,
            num_candidates=budget,
            children=16,
            lam=between.lam,
            generator=_gen(1),
        )
        floors[budget] = exact.mmd2_over_floor(res.samples)
    assert floors[64] < 4 < 20 < floors[2]


@pytest.mark.slow
def test_dts_bias_comes_from_its_adaptive_descent(between):
    """Same tree, backups and final draw, 32 rollouts' worth, 4 children: with the descent made
    uniform (the shape no longer depends on the values) the output matches p* (MMD² < 3 floors,
    reward within 3 s.e.; measured 0.58 floors, −1.7 s.e.); DTS's Boltzmann descent leaves its
    reward more than 4 s.e. short (measured −6.8, −8.9, −7.9 s.e. on seeds 1–3)."""
    t, n = between.target, 256
    be = analytic_backend(between.prior, Process.make(20))
    exact = ExactReference.of_sampler(t.sample, 2000, _gen(), n=n, replicates=5)
    z = {}
    for descent in ("uniform", "boltzmann"):
        res = tree_sample(
            be,
            between.reward,
            n,
            num_candidates=32,
            children=4,
            lam=between.lam,
            descent=descent,
            generator=_gen(1),
        )
        z[descent] = (float(res.rewards.mean()) - t.reward_mean) / (
            float(res.rewards.std()) / math.sqrt(n)
        )
        if descent == "uniform":
            assert exact.mmd2_over_floor(res.samples) < 3
    assert abs(z["uniform"]) < 3 and z["boltzmann"] < -4


def test_dts_star_searches_for_reward(between):
    """DTS* (greedy descent) beats DTS's reward at the same budget."""
    be = analytic_backend(between.prior, Process.make(10))
    soft, greedy = (
        tree_sample(
            be,
            between.reward,
            256,
            num_candidates=8,
            lam=between.lam,
            selection=s,
            generator=_gen(2),
        )
        for s in ("softmax", "argmax")
    )
    se = math.hypot(float(soft.rewards.std()), float(greedy.rewards.std())) / 16
    assert float(greedy.rewards.mean()) > float(soft.rewards.mean()) + 2 * se


# -- the shrinking beam ---------------------------------------------------------------------------


@pytest.mark.parametrize("block_size, value", [(5, "tweedie"), (1, "exact")])
def test_a_beam_of_one_is_code_argmax_step_for_step(between, block_size, value):
    be = analytic_backend(between.prior, Process.make(10))
    v = ExactValue(between.target) if value == "exact" else "tweedie"
    code = sample_blockwise(
        be, between.reward, 8, num_candidates=4, block_size=block_size, value=v, generator=_gen()
    )
    beam = beam_search(
        be,
        between.reward,
        8,
        num_candidates=4,
        block_size=block_size,
        beam_width=1,
        value=v,
        generator=_gen(),
    )
    assert torch.equal(beam.samples, code.samples) and torch.equal(beam.rewards, code.rewards)
    assert beam.nfe == code.nfe and beam.reward_calls == code.reward_calls


def test_beam_widths_follow_the_schedule():
    assert beam_widths(8, 4) == [8, 4, 2, 1, 1]  # geometric 8 → 1, then output
    assert beam_widths(9, 5, "linear", 1) == [9, 7, 5, 3, 1, 1]
    assert beam_widths(3, 3, "constant") == [3, 3, 3, 1]
    assert beam_widths(1, 1) == [1, 1]
    w = beam_widths(16, 20)
    assert all(a >= b for a, b in zip(w, w[1:])) and w[0] == 16 and w[-2] == 1
    with pytest.raises(ValueError, match="final_width"):
        beam_widths(2, 3, final_width=3)
    with pytest.raises(ValueError, match="schedule"):
        beam_widths(2, 3, "cosine")


@pytest.mark.parametrize("value", ["tweedie", "exact"])
def test_beam_widths_and_cost_match_the_formula(between, value):
    be = analytic_backend(between.prior, Process.make(12))
    v = ExactValue(between.target) if value == "exact" else "tweedie"
    seen = []
    res = beam_search(
        be,
        between.reward,
        4,
        num_candidates=3,
        block_size=3,
        beam_width=8,
        value=v,
        generator=_gen(),
        callback=seen.append,
    )
    widths = beam_widths(8, 4)
    assert [s["width"] for s in seen] == widths[:-1]
    assert [s["selected"].shape for s in seen] == [(4, w) for w in widths[1:]]
    for s in seen:  # the kept children are the best W_{b+1} of the W_b·N
        kept = s["values"].gather(1, s["selected"])
        assert (kept.min(1).values >= s["values"].topk(s["kept_width"], 1).values[:, -1]).all()
    assert res.nfe == 4 * beam_nfe(12, 3, 3, widths, needs_x0=value == "tweedie")
    assert beam_nfe(12, 3, 3, [1, 1, 1, 1, 1]) == 1 + 11 * 3  # CoDe's 1 + (T − 1)·N


# -- records --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", SEARCH)
def test_records_run_through_the_api_within_their_budget(between, method):
    """budget(m) names knobs only, and spends about m·T calls per output (at most for the
    noise and tree searches)."""
    record = METHODS[method]
    assert record.loop is not None and set(record.budget(4, 10)) <= set(KNOBS)
    knobs = record.budget(4, 10)
    options = {"beam_width": knobs["W"]} if "W" in knobs else None
    res = api.sample(
        between,
        method=method,
        num_candidates=knobs["N"],
        n=8,
        steps=10,
        block_size=knobs.get("B"),
        options=options,
    )
    assert res.n == 8 and res.settings["method"] == method
    if method == "dsearch":  # the width is whole: within 15 % of the budget
        assert 0.85 * 40 <= res.nfe_per_sample <= 1.15 * 40
    else:
        assert 30 < res.nfe_per_sample <= 40


@pytest.mark.parametrize("steps", [20, 50, 100])
def test_beam_budget_spends_m_times_t(steps):
    """The width is solved on the beam's own cost formula: within 15 % of m·T per output."""
    assert beam_budget(1, steps) == {"N": 1, "W": 1, "B": steps // 5}
    for m, children, block in itertools.product((4, 16, 32), (2, 4), (None, steps // 10)):
        knobs = beam_budget(m, steps, children=children, block=block)
        assert knobs["N"] == children and knobs["B"] == (block or steps // 5)
        widths = beam_widths(knobs["W"], -(-steps // knobs["B"]))
        nfe = beam_nfe(steps, knobs["B"], knobs["N"], widths)
        assert abs(nfe / (m * steps) - 1) < 0.15, (m, children, block, nfe)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda be, r: noise_random_search(be, r, 4, selection="systematic"), "selection"),
        (lambda be, r: noise_zero_order_search(be, r, 4, selection="softmax"), "argmax"),
        (lambda be, r: noise_zero_order_search(be, r, 4, radius=0.0), "radius"),
        (lambda be, r: noise_zero_order_search(be, r, 4, neighbours=0), "neighbours"),
        (lambda be, r: tree_sample(be, r, 4, children=0), "children"),
        (lambda be, r: tree_sample(be, r, 4, selection="systematic"), "selection"),
        (lambda be, r: tree_sample(be, r, 4, num_candidates=0), "num_candidates"),
        (lambda be, r: beam_search(be, r, 4, beam_width=0), "beam_width"),
        (lambda be, r: beam_search(be, r, 4, selection="softmax"), "argmax"),
        (lambda be, r: beam_search(be, r, 4, value="exact"), "value"),
        (lambda be, r: beam_search(be, r, 4, schedule="cosine"), "schedule"),
    ],
)
def test_bad_arguments(between, call, match):
    be = analytic_backend(between.prior, Process.make(5))
    with pytest.raises(ValueError, match=match):
        call(be, between.reward)


def test_trees_and_beams_refuse_a_deterministic_step(between):
    be = analytic_backend(between.prior, Process.make(5, eta=0.0))
    with pytest.raises(ValueError, match="stochastic"):
        tree_sample(be, between.reward, 4, num_candidates=2)
    with pytest.raises(ValueError, match="stochastic"):
        beam_search(be, between.reward, 4, num_candidates=2)
