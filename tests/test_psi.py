"""Ψ-Sampler (Yoon et al. 2025, arXiv 2506.01320): the noise posterior π ∝ N(0, I) e^{λ r∘Φ},
sampled by MCMC and pushed through the exact ODE Φ, is p* itself; and every call is counted."""

import pytest
import torch
from test_rbf import _Counting

from toycode.backends import analytic_backend
from toycode.core.diffusion import Process
from toycode.core.noise_mcmc import noise_posterior_mcmc, psi_sample
from toycode.core.sampler import sample_blockwise
from toycode.exact.reference import ExactReference
from toycode.experiments import api
from toycode.leaderboard.board import Size, make_bench, run_row


def _scores(x, rewards, target, ref):
    """(|reward mean − E_p*[r]| / s.e., mode TV / its floor, MMD² / its floor)."""
    m = ref.evaluate(x, rewards, target)
    z = abs(m["reward_mean"] - target.reward_mean) / m["reward_se"]
    return z, m["mode_tv"] / ref.floor_metrics["mode_tv"], m["mmd2"] / ref.floor


@pytest.mark.slow
@pytest.mark.parametrize("langevin, step_size, evaluations", [(True, 0.1, 61), (False, 0.5, 101)])
def test_the_chains_stationary_law_through_the_ode_is_the_exact_target(
    between, langevin, step_size, evaluations
):
    """The defining property: with the exact denoiser and a fine ODE (T = 50 DDIM η = 0 steps
    of the exact score, whose base samples are p within the noise floor), Φ pushes
    π ∝ N(0, I) e^{λ r∘Φ} to p* exactly. 1000 independent chains (60 pCNL or 100 pCN
    proposals; with pCNL's Langevin correction dropped from the acceptance ratio, measured by
    hand, the same test fails at z = 12), the last
    state of each: the reward mean within 4 s.e. of E_p*[r], the mode masses and MMD² within
    a few noise floors; the chains at λ = 0 (the base) and 2λ fail the same test."""
    backend = analytic_backend(between.prior, Process.make(50, eta=0.0))
    target = between.target
    ref = ExactReference.of_target(target, 1000, torch.Generator().manual_seed(5))
    for lam, right in ((between.lam, True), (0.0, False), (2 * between.lam, False)):
        chains = noise_posterior_mcmc(
            backend, between.reward, 1000, lam=lam, evaluations=evaluations, step_size=step_size,
            langevin=langevin, generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        z, tv, mmd = _scores(chains.x0, chains.rewards, target, ref)
        if right:
            assert 0.2 < chains.acceptance < 0.9
            assert z < 4 and tv < 3 and mmd < 4, (z, tv, mmd)
        else:
            assert z > 10 and mmd > 10, (lam, z, mmd)


def test_one_evaluation_is_the_base_models_ode_bit_for_bit(between):
    """N = 1, K = 1: no proposal, the output is Φ(x_T) of a prior draw, the DDIM η = 0 sampler
    on the backend's grid (whatever η the backend steps with)."""
    stochastic = api.make_toy_backend(between, steps=12)
    ode = api.make_toy_backend(between, steps=12, eta=0.0)
    psi = psi_sample(stochastic, between.reward, 16, generator=torch.Generator().manual_seed(2))
    base = sample_blockwise(ode, between.reward, 16, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(psi.samples, base.samples, rtol=0, atol=1e-12)
    assert psi.nfe == base.nfe == 16 * 12 and psi.backprops == 16 * 12


@pytest.mark.parametrize("langevin", [True, False])
def test_every_call_is_counted(between, langevin):
    """Per population: N·T forward NFE for the chain (each evaluation solves the ODE) and K·T
    for the SMC; pCNL adds N·T backprops (one per denoiser call it differentiates, as DPS
    counts them) and N reward gradients; reward calls N + K·T. The Ledger's NFE is what the
    backend itself saw."""
    big_n, big_k, steps, pops = 5, 4, 9, 6
    backend = _Counting(api.make_toy_backend(between, steps=steps))
    res = psi_sample(
        backend, between.reward, pops * big_k, num_candidates=big_n, particles=big_k,
        lam=between.lam, langevin=langevin, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert res.nfe == sum(backend.rows) == pops * (big_n + big_k) * steps
    assert res.backprops == (pops * big_n * steps if langevin else 0)
    assert res.reward_grads == (pops * big_n if langevin else 0)
    assert res.reward_calls == pops * (big_n + big_k * steps)
    assert res.ess.shape == (steps, pops) and res.n == pops * big_k


def test_the_smc_starts_from_the_chains_kept_states(between):
    """K states per chain after burn-in (the last always), and the SMC moves them: with a
    stochastic step the outputs differ from Φ of the kept noises."""
    backend = api.make_toy_backend(between, steps=10)
    seen = []
    res = psi_sample(
        backend, between.reward, 32, num_candidates=9, particles=4, lam=between.lam,
        callback=seen.append, generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    (rec,) = seen
    assert rec["noise"].shape == (32, 2) and 0 < rec["acceptance"] < 1
    assert res.settings["burn_in"] == 4 and res.rewards.shape == (32,)
    chains = noise_posterior_mcmc(
        backend, between.reward, 8, lam=between.lam, evaluations=9, keep=4,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert torch.equal(chains.noise, rec["noise"])
    assert not torch.allclose(res.samples, chains.x0)


def test_psi_on_the_leaderboard_at_its_budget(between):
    bench = make_bench("between", Size(8, 32, (1, 4, 16), 1))
    for m, nfe in ((1, 8), (4, 4 * 8), (16, 16 * 8)):
        row = run_row(bench, "psi-pcn", m, 0, 32)
        assert row["nfe"] == nfe and row["backprops"] == 0
    row = run_row(bench, "psi", 16, 0, 32)
    assert row["settings"] == {"N": 8, "K": 8} and row["backprops"] == 8 * 8


def test_psi_refuses_what_it_cannot_do(between, box):
    with pytest.raises(ValueError, match="differentiable"):
        api.sample(box, method="psi", n=4, steps=5)
    res = api.sample(box, method="psi-pcn", n=8, particles=2, num_candidates=3, steps=5)
    assert res.backprops == 0 and res.n == 8
    backend = api.make_toy_backend(between, steps=5)
    with pytest.raises(ValueError, match="multiple of particles"):
        psi_sample(backend, between.reward, 6, particles=4)
    with pytest.raises(ValueError, match="selection must be one of"):
        psi_sample(backend, between.reward, 4, selection="argmax")
    with pytest.raises(ValueError, match="step_size must be in"):
        psi_sample(backend, between.reward, 4, step_size=4.0)
    with pytest.raises(ValueError, match="burn_in must be in"):
        psi_sample(backend, between.reward, 4, num_candidates=3, burn_in=5)
