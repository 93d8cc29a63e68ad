"""Rollover budget forcing (Kim et al. 2025, arXiv 2503.19385) and its flow → VP-SDE conversion:
the conversion keeps the flow's exact marginals, and the budget is spent exactly, with rollover."""

import math

import pytest
import torch

from toycode.backends import analytic_backend
from toycode.core.backend import Prediction
from toycode.core.diffusion import NoiseLevel, Process
from toycode.core.rollover import SDEProcess, VPConversion, rollover_sample
from toycode.core.sampler import sample_blockwise
from toycode.exact.reference import ExactReference
from toycode.experiments import api
from toycode.leaderboard.board import Size, make_bench, run_row

CONV = VPConversion()


def _moment_errors(x: torch.Tensor, exact) -> float:
    """The largest |sample − exact| / s.e. over the mean's and the covariance's entries."""
    n = len(x)
    mean = exact.weights @ exact.means
    centred = exact.means - mean
    cov = (
        exact.weights[:, None, None] * (exact.covs + centred[:, :, None] * centred[:, None])
    ).sum(0)
    m_hat = x.mean(0)
    z_mean = (m_hat - mean) / (cov.diagonal() / n).sqrt()
    d = x - m_hat
    prods = d[:, :, None] * d[:, None, :]
    z_cov = (prods.mean(0) - cov) / (prods.std(0) / math.sqrt(n))
    return float(torch.cat([z_mean.abs(), z_cov.abs().flatten()]).max())


def _run_to(backend, stepper, stops, n, generator, *, corrected=True):
    """States at the grid indices ``stops`` of the stepper's sampler from the prior; without
    ``corrected`` the same noise is added with the ODE's ε̂ coefficient (no ½g²∇log p term)."""
    x, out = backend.prior_sample(n, generator), {}
    for i in range(max(stops)):
        pred = backend.predict(x, i)
        if corrected:
            x = stepper.step(x, i, pred.eps, generator, x0=pred.x0)
        else:
            s2 = float(stepper.sigmas[i + 1])
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = float(stepper.alphas[i + 1]) * pred.x0 + s2 * pred.eps + float(stepper.noise[i]) * z
        if i + 1 in stops:
            out[i + 1] = x
    return out


def test_the_paper_grid_matches_snr_and_its_noise_is_the_integral_of_g_squared():
    """t(r) has VP time r's signal-to-noise ratio; s² (in VP units) is ∫ g² dr, g = 3r²."""
    steps = 10
    proc = CONV.flow_process(steps)
    assert float(proc.sigmas[0]) == 1.0 and float(proc.sigmas[-1]) == 0.0
    for i in range(1, steps):
        r = 1 - i / steps
        lv = CONV.level(r)
        t = float(proc.sigmas[i])
        assert (1 - t) / t == pytest.approx(lv.alpha / lv.sigma, rel=1e-12)
        assert CONV.vp_time(NoiseLevel.flow(t)) == pytest.approx(r, abs=1e-12)
    for i in range(1, steps - 1):
        r, r2 = 1 - i / steps, 1 - (i + 1) / steps
        scale = CONV.level(r2).sigma / float(proc.sigmas[i + 1])  # x̄ = (ᾱ + σ̄) x
        s_vp = float(proc.noise[i]) * scale
        assert s_vp == pytest.approx(3.0 * math.sqrt((r**5 - r2**5) / 5), rel=1e-12)
    assert not proc.deterministic and float(proc.noise[-1]) == 0.0


def test_the_vp_sde_keeps_the_exact_flow_marginals(between):
    """The defining property of the conversion: sampled by the VP-SDE from the flow's prior,
    the states at several t are the exact noised mixture p_t = Σ w N((1 − t)μ, (1 − t)²Σ + t²I)
    (mean and covariance within 4 s.e., MMD² within a few noise floors); the same noise without
    its ½g²∇log p correction is not."""
    proc = CONV.flow_process(100)
    backend = analytic_backend(between.prior, proc)
    stops, n = (40, 70, 100), 4000
    got = _run_to(backend, proc, stops, n, torch.Generator().manual_seed(0))
    bad = _run_to(backend, proc, stops, n, torch.Generator().manual_seed(0), corrected=False)
    for i, x in got.items():
        exact = between.prior.noised(proc.level(i))
        ref = ExactReference.of_sampler(exact.sample, 1500, torch.Generator().manual_seed(i))
        assert _moment_errors(x, exact) < 4, i
        ratio = ref.mmd2(x[:1500]) / ref.floor
        assert ratio < 4, (i, ratio)
        assert _moment_errors(bad[i], exact) > 8, i
    # the noise is real: the SDE's states are not the ODE's (the same start, other endpoints)
    ode = Process(proc.alphas, proc.sigmas, proc.timesteps, 0.0, "flow")
    ode_x = _run_to(backend, ode, (100,), n, torch.Generator().manual_seed(0))[100]
    assert (ode_x - got[100]).norm(dim=1).median() > 0.1


def test_the_conversion_puts_its_step_on_any_grid(between):
    """On the plain FlowMatchEuler grid the same SDE (noise from the same g) keeps p_t."""
    proc = CONV.sde(Process.make(100, "flow"))
    assert isinstance(proc, SDEProcess) and proc.kind == "flow"
    backend = analytic_backend(between.prior, proc)
    x = _run_to(backend, proc, (60,), 4000, torch.Generator().manual_seed(1))[60]
    assert _moment_errors(x, between.prior.noised(proc.level(60))) < 4
    with pytest.raises(ValueError, match="one grid point at a time"):
        proc.step(x, 0, x, to=2, x0=x)


class _Counting:
    """A backend that counts the rows it predicts at each grid index (not through a Ledger)."""

    def __init__(self, inner):
        self.inner, self.process = inner, inner.process
        self.rows = [0] * inner.process.num_steps

    def prior_sample(self, n, generator=None):
        return self.inner.prior_sample(n, generator)

    def predict(self, x, i, generator=None) -> Prediction:
        self.rows[i] += len(x)
        return self.inner.predict(x, i, generator)

    def decode(self, x0):
        return x0

    def noise_to(self, x0, i, generator=None):
        return self.inner.noise_to(x0, i, generator)


@pytest.mark.parametrize("process", ["vp", "flow"])
def test_rollover_spends_the_budget_exactly(between, process):
    """N·T calls per output in all; each step spends at least one and at most its quota, the
    quota is N plus what an early winner left over (0 after a forced move), the last searched
    step spends everything left, and the Ledger's count is the backend's own."""
    big_n, steps, n = 3, 12, 64
    backend = _Counting(api.make_toy_backend(between, steps=steps, process=process))
    log = []
    res = rollover_sample(
        backend, between.reward, n, num_candidates=big_n, callback=log.append,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert res.nfe == n * big_n * steps == sum(backend.rows)
    assert backend.rows[0] == n * big_n and len(log) == steps - 1
    quota = torch.full((n,), big_n)
    total = torch.full((n,), big_n)
    for i, rec in enumerate(log):
        assert torch.equal(rec["quota"], quota)
        assert (rec["spent"] >= 1).all() and (rec["spent"] <= quota).all()
        assert backend.rows[i + 1] == int(rec["spent"].sum())
        forced = ~rec["early"]
        assert torch.equal(rec["spent"][forced], quota[forced])
        total += rec["spent"]
        quota = big_n + torch.where(rec["early"], quota - rec["spent"], 0)
    assert not log[-1]["early"].any() and (total == big_n * steps).all()
    assert max(int(rec["quota"].max()) for rec in log) > big_n  # some quota did roll over
    assert res.reward_calls == n * big_n * steps + n  # every candidate's value, then the outputs
    assert res.settings["sde"] == ("vp" if process == "flow" else "model")


def test_an_early_winner_beats_the_paths_best_and_a_forced_move_keeps_the_bar(between):
    log = []
    rollover_sample(
        api.make_toy_backend(between, steps=10), between.reward, 256, num_candidates=4,
        callback=log.append, generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    for before, rec in zip(log, log[1:]):
        win = rec["early"]
        assert (rec["value"][win] > before["value"][win]).all()
        assert torch.equal(rec["value"][~win], before["value"][~win])
        assert (rec["best"][win] >= rec["value"][win]).all()


def test_one_candidate_is_the_base_sampler_bit_for_bit(between):
    backend = api.make_toy_backend(between, steps=15)
    rbf = rollover_sample(backend, between.reward, 32, generator=torch.Generator().manual_seed(3))
    base = sample_blockwise(backend, between.reward, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(rbf.samples, base.samples) and rbf.nfe == base.nfe == 32 * 15


def test_rbf_runs_through_the_api_and_the_leaderboard_at_its_budget(between):
    res = api.sample(between, method="rbf", num_candidates=4, n=16, steps=8)
    assert res.nfe_per_sample == 32 and res.settings["method"] == "rbf"
    bench = make_bench("between", Size(8, 64, (1, 4), 1))
    row = run_row(bench, "rbf", 4, 0, 64)
    assert row["nfe"] == 4 * 8 and row["settings"] == {"N": 4}


def test_rbf_refuses_what_it_cannot_do(between):
    backend = api.make_toy_backend(between, steps=5)
    with pytest.raises(ValueError, match="selection must be 'argmax'"):
        rollover_sample(backend, between.reward, 4, num_candidates=2, selection="softmax")
    with pytest.raises(ValueError, match="sde must be one of"):
        rollover_sample(backend, between.reward, 4, sde="ode")
    ode = api.make_toy_backend(between, steps=5, eta=0.0)
    with pytest.raises(ValueError, match="stochastic step"):
        rollover_sample(ode, between.reward, 4, num_candidates=2)
    with pytest.raises(ValueError, match="noise must hold"):
        SDEProcess(ode.process.alphas, ode.process.sigmas, ode.process.timesteps)
