"""Ψ-Sampler: MCMC over the initial noise from the reward-aware posterior, then SMC.

Yoon, Min, Yeo, Sung 2025, "Ψ-Sampler: Initial Particle Sampling for SMC-Based Inference-Time
Reward Alignment in Score Models" (arXiv 2506.01320). Let Φ be the backend's deterministic
sampler (DDIM η = 0 on its grid: the probability-flow ODE, rectified flow's Euler steps), which
pushes the prior N(0, I) to the base sampler's law q (= p for an exact ODE). The noise posterior

    π(x_T) ∝ N(x_T; 0, I) · exp(λ r(Φ(x_T)))

is pushed by Φ to q·e^{λr}/Z: with an exact Φ, p* itself. Ψ-Sampler draws initial particles from
π by MCMC whose proposals keep N(0, I) invariant (Cotter, Roberts, Stuart, White 2013):

    pCN    x' = ρ x + √(1 − ρ²) z                   accept w.p. min(1, e^{ℓ(x') − ℓ(x)})
    pCNL   x' = ρ x + √(1 − ρ²) (z + (√h/2) ∇ℓ(x))  accept w.p. min(1, e^{ℓ(x') − ℓ(x) + c(x', x)
                                                                − c(x, x')})
    c(a, b) = (√h/2) ∇ℓ(a)·(b − ρa)/√(1 − ρ²) − (h/8)|∇ℓ(a)|²   (the Langevin correction)
    ρ = (1 − h/4)/(1 + h/4),  ℓ(x) = λ r(Φ(x)),  h the step size

then runs SMC from them (:func:`psi_sample`): each particle starts with the value
V_T = r(Φ(x_T)) its chain computed, moves by the backend's stochastic step and is weighed by
λ(V_{t'} − V_t) (Tweedie values r(x̂0), r itself at the clean end). The potentials telescope to
e^{λ(r(x0) − r(Φ(x_T)))}, and times π's e^{λ r(Φ(x_T))} that is e^{λ r(x0)}: the SMC is
consistent for p* from π-distributed starts whatever its values. With one particle, or a
deterministic step, the output is each kept noise's Φ(x_T), already computed by the chain.

Cost, per population (one chain of N evaluations: the prior start and N − 1 proposals; K SMC
particles thinned from it after burn-in):

    forward NFE     N·T (every evaluation solves the ODE) + K·T (SMC; none when K = 1)
    backprops       N·T for pCNL: the gradient of r∘Φ is one backward pass through each of
                    the ODE's T denoiser calls, counted as DPS's are (one backprop per denoiser
                    call differentiated, beside the NFE of its forward pass); none for pCN
    reward calls    N + K·T, reward gradients N (pCNL)

The official code (Psi-Sampler, ``mcmc: pcnl``) scores x_T by the reward of its one-step Tweedie
estimate, accurate for the few-step FLUX-Schnell it aligns; the full ODE here is what makes the
posterior exact, and exactness is what the test checks.

    code name     paper symbol
    ---------     ------------
    N             MCMC evaluations per chain (the start and N − 1 proposals)
    K             SMC particles per population
    step_size     h (pCNL's step; ρ = (1 − h/4)/(1 + h/4))
    lam           λ = 1/α (the paper's α_MCMC, α_SMC)
    ell           ℓ(x_T) = λ r(Φ(x_T)), the log-likelihood part of π
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from tqdm.auto import tqdm

from ..utils.checks import check_choice, check_range
from .backend import Backend
from .diffusion import Process
from .guidance import require_differentiable
from .ledger import Ledger, SampleResult
from .steering import SELECTIONS
from .values import ValueSpec, make_value_fn

__all__ = ["flow_map", "NoiseChains", "noise_posterior_mcmc", "psi_sample"]


def _ode(process: Process) -> Process:
    """The process's grid with the deterministic DDIM step (η = 0)."""
    return Process(process.alphas, process.sigmas, process.timesteps, 0.0, process.kind)


def flow_map(ledger: Ledger, backend: Backend, x: torch.Tensor, generator=None) -> torch.Tensor:
    """Φ(x_T): the backend's deterministic sampler from grid index 0 to the clean end, T
    counted denoiser calls per row; differentiable in x where gradients are enabled."""
    ode = _ode(backend.process)
    for i in range(ode.num_steps):
        pred = ledger.predict(backend, x, i, generator)
        x = x if pred.x is None else pred.x
        x = ode.step(x, i, pred.eps, x0=pred.x0)
    return x


class _State(NamedTuple):
    """A batch of chain states: noise x_T, its Φ(x_T), r(Φ(x_T)) and ∇ℓ (None for pCN)."""

    x: torch.Tensor
    x0: torch.Tensor
    r: torch.Tensor
    grad: torch.Tensor | None


def _evaluate(ledger: Ledger, backend: Backend, reward, x, *, lam: float, langevin: bool):
    """Φ(x), r(Φ(x)) and, for pCNL, ∇_x λ r(Φ(x)) by backpropagation through the ODE."""
    if not langevin:
        with torch.no_grad():
            x0 = flow_map(ledger, backend, x)
            return _State(x, x0, ledger.reward(reward, backend.decode(x0)).double(), None)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0 = flow_map(ledger, backend, xg)
        r = ledger.reward(reward, backend.decode(x0))
        (grad,) = torch.autograd.grad(lam * r.sum(), xg)
    rows = len(x)
    ledger.backprops += rows * backend.process.num_steps  # one per denoiser call on the path
    ledger.reward_grads += rows
    return _State(x, x0.detach(), r.detach().double(), grad.detach())


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(len(t), -1).double()


def _log_forward(new: _State, old: _State, rho: float, h: float) -> torch.Tensor:
    """pCNL's half of the log acceptance ratio for the move old → new, up to the π-symmetric
    pCN part: (√h/2) ∇ℓ(new)·(old − ρ new)/√(1 − ρ²) − (h/8)|∇ℓ(new)|² (module docstring)."""
    assert new.grad is not None, "pCNL states carry their gradient"
    g = _flat(new.grad)
    back = (_flat(old.x) - rho * _flat(new.x)) / math.sqrt(1 - rho * rho)
    return 0.5 * math.sqrt(h) * (g * back).sum(1) - h / 8 * (g * g).sum(1)


def _mcmc_step(calls: tuple, state: _State, *, lam: float, h: float) -> tuple[_State, torch.Tensor]:
    """One pCN / pCNL proposal and Metropolis–Hastings test per chain; the new states and
    which chains accepted."""
    ledger, backend, reward, generator, langevin = calls
    rho = (1 - h / 4) / (1 + h / 4)
    z = torch.randn(state.x.shape, generator=generator, dtype=state.x.dtype)
    if langevin:
        assert state.grad is not None, "pCNL states carry their gradient"
        z = z + 0.5 * math.sqrt(h) * state.grad
    prop = _evaluate(
        ledger,
        backend,
        reward,
        rho * state.x + math.sqrt(1 - rho * rho) * z,
        lam=lam,
        langevin=langevin,
    )
    log_a = lam * (prop.r - state.r)
    if langevin:
        log_a = log_a + _log_forward(prop, state, rho, h) - _log_forward(state, prop, rho, h)
    u = torch.rand(len(log_a), generator=generator, dtype=torch.float64)
    ok = torch.log(u) < log_a

    def pick(a, b):
        return torch.where(ok.view(-1, *[1] * (a.ndim - 1)), a, b)

    grad = None if prop.grad is None else pick(prop.grad, state.grad)
    return _State(pick(prop.x, state.x), pick(prop.x0, state.x0), pick(prop.r, state.r), grad), ok


class NoiseChains(NamedTuple):
    """What :func:`noise_posterior_mcmc` kept: per chain, ``keep`` states after burn-in."""

    noise: torch.Tensor  # (chains·keep, …) x_T, chain by chain
    x0: torch.Tensor  # (chains·keep, …) Φ(x_T)
    rewards: torch.Tensor  # (chains·keep,) r(Φ(x_T))
    acceptance: float  # the share of proposals accepted
    ledger: Ledger


def noise_posterior_mcmc(
    backend: Backend,
    reward: Callable,
    chains: int,
    *,
    lam: float,
    evaluations: int,
    keep: int = 1,
    burn_in: int | None = None,
    step_size: float = 0.5,
    langevin: bool = True,
    generator: torch.Generator | None = None,
    ledger: Ledger | None = None,
    progress: bool = False,
) -> NoiseChains:
    """MCMC on π(x_T) ∝ N(x_T; 0, I) e^{λ r(Φ(x_T))} (module docstring): ``chains`` chains from
    prior draws, each of ``evaluations`` ODE solves (the start, then ``evaluations`` − 1 pCNL
    proposals, or pCN with ``langevin=False``); after ``burn_in`` proposals (default half of
    them) each chain keeps ``keep`` evenly spaced states (the last one always). Costs go to
    ``ledger`` (a new one by default)."""
    check_range("chains", chains, 1, None)
    check_range("evaluations", evaluations, 1, None)
    check_range("keep", keep, 1, None)
    check_range("lam", lam, 0.0, None)
    check_range("step_size", step_size, 0.0, 4.0, low_open=True, high_open=True)
    proposals = evaluations - 1
    burn_in = proposals // 2 if burn_in is None else burn_in
    check_range("burn_in", burn_in, 0, proposals)
    if langevin:
        require_differentiable(reward, "psi")
    ledger = Ledger() if ledger is None else ledger
    calls = (ledger, backend, reward, generator, langevin)
    marks = torch.linspace(burn_in, proposals, keep, dtype=torch.float64).round().long().tolist()
    kept, accepted = [], 0
    state = _evaluate(ledger, backend, reward, backend.prior_sample(chains, generator),
                      lam=lam, langevin=langevin)  # fmt: skip
    for it in tqdm(range(proposals + 1), disable=not progress, desc="noise MCMC", leave=False):
        if it > 0:
            state, ok = _mcmc_step(calls, state, lam=lam, h=step_size)
            accepted += int(ok.sum())
        kept += [state] * marks.count(it)

    def stack(key):  # (chains, keep, …) flattened chain by chain
        return torch.stack([getattr(s, key) for s in kept], 1).flatten(0, 1)

    rate = accepted / (chains * proposals) if proposals else 1.0
    return NoiseChains(stack("x"), stack("x0"), stack("r"), rate, ledger)


def _resample(logw, values, *, k: int, selection: str, threshold: float, clean: bool, generator):
    """Rows to keep (flat) and which populations resampled: those whose ESS < threshold·K,
    and all at the clean end; the others keep their particles and weights."""
    pops = len(logw) // k
    logits = logw.view(pops, k)
    weights = torch.softmax(logits, 1)
    ess = 1.0 / (weights**2).sum(1)
    resample = (ess < threshold * k) | clean
    chosen = SELECTIONS[selection](values.view(pops, k), logits, k, generator)
    chosen = torch.where(resample[:, None], chosen, torch.arange(k))
    return (torch.arange(pops)[:, None] * k + chosen).view(-1), resample, ess


def _smc(calls: tuple, start: NoiseChains, *, k: int, lam: float, selection: str, threshold: float):
    """SMC from the chains' particles (module docstring): the backend's stochastic step, weights
    λ(V_{t'} − V_t) from V_T = r(Φ(x_T)); returns the clean particles, their rewards and the
    (steps, populations) ESS table."""
    ledger, backend, reward, value_fn, generator = calls
    process = backend.process
    x, v = start.noise, start.rewards.clone()
    logw = torch.zeros_like(v)
    pred = ledger.predict(backend, x, 0, generator)
    decoded, ess_table = None, []
    for i in range(process.num_steps):
        x = process.step(x if pred.x is None else pred.x, i, pred.eps, generator, x0=pred.x0)
        clean = i + 1 == process.num_steps
        if clean:
            decoded = backend.decode(x)
            v_new = ledger.reward(reward, decoded).double()
        else:
            pred = ledger.predict(backend, x, i + 1, generator)
            x0_v = pred.x0 if value_fn.needs_x0 else None
            v_new = value_fn(ledger, backend, x, x0_v, i + 1, generator).double()
        logw, v = logw + lam * (v_new - v), v_new
        keep, resampled, ess = _resample(
            logw, v, k=k, selection=selection, threshold=threshold, clean=clean, generator=generator
        )
        ess_table.append(ess)
        x, v, logw = x[keep], v[keep], torch.where(resampled.repeat_interleave(k), 0.0, logw)[keep]
        if not clean:
            pred = pred._replace(eps=pred.eps[keep], x0=pred.x0[keep], x=None)
    assert decoded is not None, "the loop decodes at the clean end"
    return decoded[keep], v, torch.stack(ess_table)


def psi_sample(
    backend: Backend,
    reward: Callable,
    n: int,
    *,
    num_candidates: int = 1,
    block_size: int | None = None,
    particles: int = 1,
    ess_threshold: float = 0.5,
    selection: str = "systematic",
    lam: float = 1.0,
    value: ValueSpec = "tweedie",
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    langevin: bool = True,
    step_size: float = 0.5,
    burn_in: int | None = None,
) -> SampleResult:
    """Ψ-Sampler (Yoon et al. 2025, arXiv 2506.01320; module docstring): n/K populations of
    K = ``particles``, each from one chain of N = ``num_candidates`` evaluations on the noise
    posterior (pCNL; pCN with ``langevin=False``, which needs no reward gradient), then SMC
    (``selection``, resampling at ESS < ``ess_threshold``·K and at the end). K = 1, or a
    deterministic step, outputs Φ of the kept noises. ``block_size`` is not read. ``callback``
    receives one dict after the chains: acceptance, noise (n, …), rewards (n,: r(Φ(x_T)))."""
    if langevin:
        require_differentiable(reward, "psi")
    check_range("n", n, 1, None)
    check_range("particles", particles, 1, None)
    check_range("num_candidates", num_candidates, 1, None)
    check_range("ess_threshold", ess_threshold, 0.0, 1.0)
    check_choice("selection", selection, ("softmax", "systematic"))
    if n % particles:
        raise ValueError(f"n={n} must be a multiple of particles={particles}")
    big_k, ledger = particles, Ledger()
    chains = noise_posterior_mcmc(
        backend, reward, n // big_k, lam=lam, evaluations=num_candidates, keep=big_k,
        burn_in=burn_in, step_size=step_size, langevin=langevin, generator=generator,
        ledger=ledger, progress=progress,
    )  # fmt: skip
    if callback is not None:
        callback(
            {"acceptance": chains.acceptance, "noise": chains.noise, "rewards": chains.rewards}
        )
    ess = torch.ones(0, n // big_k, dtype=torch.float64)
    if big_k == 1 or backend.process.deterministic:
        out, rewards = backend.decode(chains.x0), chains.rewards
    else:
        calls = (ledger, backend, reward, make_value_fn(value, reward), generator)
        with torch.no_grad():
            out, rewards, ess = _smc(
                calls, chains, k=big_k, lam=lam, selection=selection, threshold=ess_threshold
            )
    settings = {
        "num_candidates": num_candidates,
        "particles": big_k,
        "ess_threshold": ess_threshold,
        "selection": selection,
        "lam": lam,
        "steps": backend.process.num_steps,
        "langevin": langevin,
        "step_size": step_size,
        "burn_in": (num_candidates - 1) // 2 if burn_in is None else burn_in,
        "acceptance": chains.acceptance,
    }
    return SampleResult.from_ledger(out, rewards, ledger, settings=settings, ess=ess)
