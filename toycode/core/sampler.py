"""The blockwise sampler: CoDe (Singh et al. 2025, arXiv 2502.00968, Alg. 1), its edge cases, SMC.

Every B reverse steps, each of the n current states spawns N candidate continuations; a value
estimate scores them at the block end and a selection rule keeps one. N = 1 is the base model,
B ≥ T is best-of-N, B = 1 is SVDD-PM (Li et al. 2024). With ``selection="softmax"`` at the
target's λ and exact soft values, each block is self-normalised importance sampling of the
optimal policy, so the output converges to p* ∝ p e^{λr} as N grows, for any B.

The same loop runs sequential Monte Carlo (Feynman–Kac steering / TDS style): the n states form
populations of K ``particles``; each particle carries a log-weight, and at a block end the
children's weights grow by the potential λ(V_new − V_parent). A population is resampled (K draws
from its K·N children) when its ESS falls below ``ess_threshold``·K, always when N > 1, and always
at the clean end; otherwise the weights are carried. The initial V is 0, so the weights telescope
to e^{λ r(x0)}: the intermediate targets are exactly p*_t when V is exact. Three relatives run
in the same loop (docs/methods/): other FK potentials (λ·max or λ·sum of V along the path,
corrected at the clean end) and the official FK code's "reset" weights (``potential``,
``weights``; Singhal et al. 2025, arXiv 2501.06848); twisted SMC, whose particles move by a
guided backend's proposal and are reweighted by log p/q (``twisted``; TDS, Wu et al. 2023, arXiv
2306.17775); and tempered SMC, λ_t V_t − λ_t' V_t' with λ_t rising to λ (``tempering``; DAS, Kim
et al. 2025, arXiv 2501.05803).

    code name     paper symbol
    ---------     ------------
    N             candidates per state (CoDe's N, BoN's N)
    B             block size (CoDe's B); resampling interval for SMC
    K             particles per SMC population (1 for CoDe)
    values        V(x_t): r(x̂0(x_t)) ("tweedie") or the exact soft value; r at the clean end
    logw          SMC log-weights log w_t (0 after every resampling)
    potential     FK potential G_t: its log, log G, is what a block end adds to logw
    logprod       log Π G_t over the potentials a particle's weights took up (max/add)

Cost (NFE = denoiser evaluations, counted only in :class:`Ledger`). The N candidates of a block
share their parent's ε̂, and the ε̂ that gives a candidate its Tweedie x̂0 at the block end is the
one its next step uses, so nothing is evaluated twice. Per output sample, with T steps and
n_b = ⌈T/B⌉ blocks:

    value = "tweedie" (needs x̂0 of every candidate)   NFE = 1 + (T − 1)·N
    value = exact V_t (scored without the denoiser)    NFE = (T − n_b)·N + n_b
    value = look-ahead, M rollouts of k steps          NFE = 1 + (T − 1)·N + (n_b − 1)·N·M·(k − 1)
    value = posterior or learned (toys)                NFE = (T − n_b)·N + n_b
    N = 1 (base, SMC, FK, TDS, DAS)                    NFE = T

(the official CoDe code spends N·T·(1 + 1/B): an extra UNet pass to score each block and N
identical passes on the selected state). Starting from a reference at ``strength`` (CoDe(η)'s
η) replaces T by round(strength·T). Reward calls per sample: N per block scored by Tweedie, N
at the end otherwise, plus M per candidate and interior block end for look-ahead and posterior
values (:mod:`toycode.core.values`; their calls go through the same Ledger). TDS's guided
backend adds one reward gradient and one backward pass per particle and step. Look-ahead's formula
assumes at least k grid steps remain after every block end (fewer steps: fewer calls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch
from tqdm.auto import tqdm

from ..utils.checks import check_choice, check_range, check_rewards
from .backend import Backend, Prediction
from .diffusion import randn_like
from .values import make_value_fn

__all__ = ["Ledger", "SELECTIONS", "POTENTIALS", "WEIGHTS", "SampleResult", "sample_blockwise"]


@dataclass
class Ledger:
    """The one place where denoiser evaluations, reward calls and reward gradients are counted."""

    nfe: int = 0
    reward_calls: int = 0
    reward_grads: int = 0    # reward gradients
    backprops: int = 0       # backward passes through the denoiser

    def predict(self, backend: Backend, x: torch.Tensor, i: int,
                generator: torch.Generator | None = None) -> Prediction:
        pred = backend.predict(x, i, generator)
        rows = x.shape[0]
        self.nfe += rows * pred.nfe
        self.reward_grads += rows * pred.reward_grads
        self.backprops += rows * pred.backprops
        return pred

    def reward(self, reward: Callable, decoded) -> torch.Tensor:
        n = len(decoded)
        self.reward_calls += n
        who = f"reward {getattr(reward, '__name__', reward)!r}"
        return check_rewards(reward(decoded), n, who=who)


def _argmax(values, logits, k, generator):
    return values.topk(k, dim=1).indices


def _multinomial(values, logits, k, generator):
    return torch.multinomial(torch.softmax(logits, 1), k, replacement=True, generator=generator)


def _systematic(values, logits, k, generator):
    """Systematic resampling: one uniform per population, K evenly spaced points on the CDF."""
    cdf = torch.softmax(logits, 1).cumsum(1)
    u = (torch.rand(len(cdf), 1, generator=generator, dtype=cdf.dtype)
         + torch.arange(k, dtype=cdf.dtype)) / k
    idx = torch.searchsorted(cdf, u.clamp(max=cdf[:, -1:] * (1 - 1e-12)))
    return idx.clamp(max=cdf.shape[1] - 1)


SELECTIONS: dict[str, Callable] = {"argmax": _argmax, "softmax": _multinomial,
                                   "systematic": _systematic}
"""Selection rules: (values, logits, K, generator) → K kept indices per population, each row
of values/logits holding a population's K·N children; logits = log w + λ(V_child − V_parent).
argmax keeps the best K by value (λ-free); softmax draws K with replacement ∝ e^{logits};
systematic does so with one uniform per population (lower variance)."""


@dataclass
class SampleResult:
    """Samples with their rewards and what they cost (totals over all n samples)."""

    samples: Any
    rewards: torch.Tensor
    nfe: int
    reward_calls: int
    reward_grads: int = 0
    backprops: int = 0
    ess: torch.Tensor = field(default_factory=lambda: torch.empty(0))   # (blocks, populations)
    settings: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.rewards)

    @property
    def nfe_per_sample(self) -> float:
        return self.nfe / self.n


def _ess(weights: torch.Tensor) -> torch.Tensor:
    return 1.0 / (weights ** 2).sum(1)


def _blocks(start: int, stop: int, size: int):
    return [(i, min(i + size, stop)) for i in range(start, stop, size)]


def _check_arguments(backend, n, num_candidates, block_size, particles, lam, ess_threshold,
                     selection, value, reward, reference, strength):
    """Refuse bad settings with one-line errors; return the value object."""
    for name, v, lo in (("n", n, 1), ("num_candidates", num_candidates, 1),
                        ("block_size", block_size, 1), ("particles", particles, 1)):
        check_range(name, v, lo, None)
    check_range("lam", lam, 0.0, None)
    check_range("ess_threshold", ess_threshold, 0.0, 1.0)
    check_choice("selection", selection, SELECTIONS)
    value_fn = make_value_fn(value, reward)
    if n % particles:
        raise ValueError(f"n={n} must be a multiple of particles={particles}")
    if particles > 1 and num_candidates > 1:
        raise ValueError(f"use either num_candidates={num_candidates} > 1 (CoDe) or "
                         f"particles={particles} > 1 (SMC), not both")
    if particles > 1 and selection == "argmax":   # argmax is the λ → ∞ limit: nothing to resample
        raise ValueError("SMC (particles > 1) resamples: use selection='softmax' or "
                         "'systematic', not 'argmax'")
    if num_candidates * particles > 1 and backend.process.deterministic:
        raise ValueError("selection needs a stochastic step: with DDIM eta = 0 every candidate "
                         "of a shared state is identical and resampled particles never diverge")
    if reference is not None:
        check_range("strength", strength, 0.0, 1.0, low_open=True)
        if len(reference) != n:
            raise ValueError(f"reference must hold n={n} samples, got {len(reference)}")
    return value_fn


def _select(values, log_g, logw, big_n, k, selection, ess_threshold, clean, generator,
            reset=False):
    """Weight the children of each population and keep K of its K·N (CoDe: K = 1).

    ``log_g`` is each child's incremental log-weight (its potential, see :func:`_potential`),
    added to the carried log-weight, or replacing it with ``reset``. Returns (kept child indices
    into the flat children, new log-weights, weights, ESS, the chosen indices within each
    population, which populations resampled). A population resamples when N > 1, at the clean
    end, or when its ESS < threshold·K; otherwise it carries its weights.
    """
    pops = len(values) // (k * big_n)
    logits = (log_g if reset else logw.repeat_interleave(big_n) + log_g).view(pops, k * big_n)
    weights = torch.softmax(logits, 1)
    resample = (_ess(weights) < ess_threshold * k) | (big_n > 1) | clean
    chosen = SELECTIONS[selection](values.view(pops, -1), logits, k, generator)
    chosen = torch.where(resample[:, None], chosen, torch.arange(k))
    keep = (torch.arange(pops)[:, None] * (k * big_n) + chosen).view(-1)
    normalised = logits - logits.logsumexp(1, keepdim=True)
    logw = torch.where(resample[:, None], 0.0, normalised).gather(1, chosen).view(-1)
    if selection == "argmax":   # the weights it used are those of its choice
        weights = torch.zeros_like(weights).scatter_(1, chosen, 1.0)
    return keep, logw, weights, _ess(weights), chosen, resample


POTENTIALS = ("diff", "max", "add")
"""Feynman–Kac steering potentials (Singhal et al. 2025, arXiv 2501.06848, §3) on the values
V_1, V_2, … a particle's path meets at its block ends: log G = λ(V − V_parent) ("diff"),
λ·max of V so far ("max"), λ·sum of V so far ("add"). At the clean end max and add take
G = e^{λ r(x0)} / Π G (the potentials the path's weights took up), so every path's potentials
multiply to e^{λ r(x0)}; diff telescopes to it by itself (V starts at 0)."""

WEIGHTS = ("incremental", "reset")
"""SMC weight bookkeeping between resamplings: "incremental" multiplies the carried weight by
each block's potential (standard SMC); "reset" sets the weight to the current potential alone,
as the official FK-steering code does (its issue #12): a block that did not resample loses its
potential (and, for max/add, is left out of the clean-end correction; a twisted proposal's
correction is lost likewise, so twisted SMC wants "incremental")."""


def _potential(kind, values, stat, logprod, lam, lam_prev, clean):
    """(the children's path statistic, their log-potential log G); ``stat`` and ``logprod``
    are the parents', one per child. ``lam_prev`` is the λ of the parent's block end (it
    differs from λ only under tempering, where diff is λ_t V − λ_{t'} V_parent)."""
    if kind == "diff":
        return values, (lam * (values - stat) if lam_prev == lam
                        else lam * values - lam_prev * stat)
    stat = torch.maximum(stat, values) if kind == "max" else stat + values
    return stat, (lam * values - logprod if clean else lam * stat)


class _Carry(NamedTuple):
    """What each kept particle carries from block end to block end (gathered on resampling)."""

    v: torch.Tensor        # its value at the last block end (the reward at the clean end)
    stat: torch.Tensor     # the potential's path statistic: last V, running max or sum of V
    logprod: torch.Tensor  # log Π G over the potentials its weights took up
    logw: torch.Tensor     # SMC log-weight (0 after a resampling)

    @classmethod
    def start(cls, n: int, potential: str) -> "_Carry":
        zeros = torch.zeros(n, dtype=torch.float64)
        stat = torch.full_like(zeros, -math.inf) if potential == "max" else zeros
        return cls(zeros, stat, zeros, zeros)


def _steer(values, carry, log_pq, lams, clean, generator, big_n, k, selection, ess_threshold,
           potential, weights):
    """One block end of FK steering: the children's potentials (plus twisted SMC's proposal
    correction ``log_pq``), selection, and what the kept particles carry on. ``lams`` is
    (λ here, λ at the parent's block end). Returns (kept indices, carry, weights, ESS,
    chosen, log G)."""
    stat, log_g = _potential(potential, values, carry.stat.repeat_interleave(big_n),
                             carry.logprod.repeat_interleave(big_n), *lams, clean)
    incr = log_g if log_pq is None else log_g + log_pq
    reset = weights == "reset"
    keep, logw, w, ess, chosen, resampled = _select(values, incr, carry.logw, big_n, k,
                                                    selection, ess_threshold, clean, generator,
                                                    reset)
    took = torch.where(resampled.repeat_interleave(k * big_n), log_g, 0.0) if reset else log_g
    logprod = carry.logprod.repeat_interleave(big_n) + took
    return keep, _Carry(values[keep], stat[keep], logprod[keep], logw), w, ess, chosen, log_g


def _tempered(lam: float, gamma: float | None, steps_done: int, clean: bool) -> float:
    """DAS's tempering schedule λ_t = λ·min(1, (1 + γ)^{steps done} − 1) (Kim et al. 2025,
    arXiv 2501.05803, "exp" schedule); λ itself at the clean end and without tempering."""
    if gamma is None or clean:
        return lam
    return lam * min(1.0, (1.0 + gamma) ** steps_done - 1.0)


def _plain_step(process, x, t, eps, x0, base, generator):
    return process.step(x, t, eps, generator, x0=x0), 0.0


def _twisted_step(process, x, t, eps, x0, base, generator):
    """One proposal of twisted SMC (Wu et al. 2023, arXiv 2306.17775, eq. 12): the model's
    Gaussian transition p = N(μ, s²) shifted by s² g, where g = (ε̂ − ε̂_guided)/σ_t is the
    score correction the guidance added (ε̂_guided = ε̂ − σ_t g; DPS: g = s∇r(x̂0(x_t))), so
    q = N(μ + s² g, s²); returns x' ~ q and log p(x'|x) − log q(x'|x). ``base`` is the model's
    own (ε̂, x̂0). A step without noise (into the clean end) cannot be reweighted: it is the
    model's own."""
    mean_p, s = process.step_moments(x, t, base[0], x0=base[1])
    if s == 0:
        return process.step(x, t, base[0], generator, x0=base[1]), 0.0
    g = (base[0].double() - eps.double()) / float(process.sigmas[t])
    mean_q = mean_p + (s * s) * g
    x_new = mean_q + s * randn_like(x, generator).double()
    dims = tuple(range(1, x.ndim))
    d_p = ((x_new - mean_p) ** 2).sum(dims)
    d_q = ((x_new - mean_q) ** 2).sum(dims)
    return x_new.to(x.dtype), (d_q - d_p) / (2 * s * s)


def _rows(pair, idx=None, repeat=1):
    """The rows ``idx`` (or each row ``repeat`` times) of an optional (ε̂, x̂0) pair."""
    if pair is None:
        return None
    return tuple(p[idx] if idx is not None else p.repeat_interleave(repeat, 0) for p in pair)


def sample_blockwise(backend: Backend, reward: Callable, n: int, *, num_candidates: int = 1,
                     block_size: int = 1, selection: str = "argmax", lam: float = 1.0,
                     value: str | Any = "tweedie", particles: int = 1,
                     ess_threshold: float = 1.0, reference: torch.Tensor | None = None,
                     strength: float = 1.0, generator: torch.Generator | None = None,
                     callback: Callable[[dict], None] | None = None,
                     progress: bool = False, potential: str = "diff",
                     weights: str = "incremental", twisted: bool = False,
                     tempering: float | None = None) -> SampleResult:
    """Blockwise controlled denoising (CoDe, arXiv 2502.00968 Alg. 1) and SMC, in one loop.

    N = ``num_candidates``, B = ``block_size``; N = 1 is the base model, B ≥ T best-of-N, B = 1
    SVDD. ``particles`` K > 1 groups the n states into n/K SMC populations. ``value`` is
    "tweedie" or an object like :class:`ExactValue`; ``reference`` (n samples) with
    ``strength`` ∈ (0, 1] starts from the reference noised to that strength (CoDe(η)).
    ``potential`` (:data:`POTENTIALS`) and ``weights`` (:data:`WEIGHTS`) choose the FK-steering
    potential and weight bookkeeping; ``twisted`` weighs the proposals of a guided backend
    (DPS or exact guidance) against the model's own (TDS); ``tempering`` γ tempers λ over
    time (DAS, :func:`_tempered`). ``callback`` receives a dict per block: block, i, j,
    candidates, x0, values, potential (log G), weights, selected (K kept child indices per
    population; identity where weights were carried), ess, x.
    """
    value_fn = _check_arguments(backend, n, num_candidates, block_size, particles, lam,
                                ess_threshold, selection, value, reward, reference, strength)
    check_choice("potential", potential, POTENTIALS)
    check_choice("weights", weights, WEIGHTS)
    if tempering is not None:
        check_range("tempering", tempering, 0.0, None, low_open=True)
        if potential != "diff":
            raise ValueError(f"tempering works on the diff potential, not {potential!r}")
    # with one state per population nothing is weighted: tempering and the p/q correction
    # would have nothing to act on, and twisted=True would only swap in its proposal
    for name, on in (("tempering", tempering is not None), ("twisted=True", twisted)):
        if on and num_candidates * particles == 1:
            raise ValueError(f"{name} weighs particles: it needs particles > 1 or "
                             f"num_candidates > 1, got num_candidates = particles = 1")
    big_n, k, process = num_candidates, particles, backend.process
    steps, pops = process.num_steps, n // k
    start = 0 if reference is None else steps - round(strength * steps)
    ledger = Ledger()
    weighted = big_n * k > 1
    score_all = weighted and value_fn.needs_x0   # every block-end candidate needs its x̂0
    propose = _twisted_step if twisted else _plain_step

    def predict(x, i):   # a guided predict may move the state (self-recurrence)
        pred = ledger.predict(backend, x, i, generator)
        if twisted and pred.unguided is None:
            raise ValueError("twisted=True needs a guided backend whose predictions carry the "
                             "unguided ε̂ and x̂0 (DPS or exact guidance)")
        return (x if pred.x is None else pred.x), pred.eps, pred.x0, pred.unguided

    with torch.no_grad():
        if reference is None:
            x = backend.prior_sample(n, generator)
        else:   # at strength → 0 no step runs and the reference is returned untouched
            x = reference if start == steps else backend.noise_to(reference, start, generator)
        if start < steps:
            x, eps, x0, base = predict(x, start)
        carry = _Carry.start(n, potential)
        ess, keep, decoded = [], torch.arange(n), None
        bar = tqdm(total=steps - start, disable=not progress, desc="sampling", leave=False)
        for b, (i, j) in enumerate(_blocks(start, steps, block_size)):
            # (1) N candidates per state, sharing the parent's ε̂ for their first step
            candidates = x.repeat_interleave(big_n, 0)
            candidate_eps, candidate_x0 = eps.repeat_interleave(big_n, 0), None
            step_x0 = x0.repeat_interleave(big_n, 0)   # x̂0 with ε̂: a flow grid starts at α = 0
            step_base, log_pq = _rows(base, repeat=big_n), 0.0
            for t in range(i, j):
                candidates, log_ratio = propose(process, candidates, t, candidate_eps, step_x0,
                                                step_base, generator)
                log_pq = log_pq + log_ratio
                if t + 1 < steps and (t + 1 < j or score_all):
                    candidates, candidate_eps, candidate_x0, step_base = predict(candidates,
                                                                                 t + 1)
                    step_x0 = candidate_x0
                bar.update(1)
            # (2) value the children (r itself at the clean end), (3) keep K per population
            if weighted:
                if j == steps:   # decoded once: scored here, and the kept ones are the output
                    decoded = backend.decode(candidates)
                    values = ledger.reward(reward, decoded).double()
                else:   # twisted SMC's twist is the model's own value, not the guided one
                    value_x0 = step_base[1] if twisted and score_all else candidate_x0
                    values = value_fn(ledger, backend, candidates, value_x0, j, generator)
                lams = (_tempered(lam, tempering, j - start, j == steps),
                        _tempered(lam, tempering, i - start, False))
                keep, carry, block_weights, block_ess, chosen, log_g = _steer(
                    values, carry, log_pq if twisted else None, lams, j == steps, generator,
                    big_n, k, selection, ess_threshold, potential, weights)
                ess.append(block_ess)
                if callback is not None:
                    callback({"block": b, "i": i, "j": j, "candidates": candidates,
                              "x0": candidate_x0 if score_all else None,
                              "values": values.view(pops, -1),
                              "potential": log_g.view(pops, -1),
                              "weights": block_weights, "selected": chosen, "ess": block_ess,
                              "x": candidates[keep]})
            x = candidates[keep]
            # (4) the kept state's ε̂ for the next block: reused if scored, else one call
            if j < steps:
                if score_all:
                    eps, x0 = candidate_eps[keep], candidate_x0[keep]
                    base = _rows(step_base, keep)
                else:
                    x, eps, x0, base = predict(x, j)
        bar.close()
        if decoded is not None:
            out, rewards = decoded[keep], carry.v
        else:
            out = backend.decode(x)
            rewards = ledger.reward(reward, out).double()

    settings = {"num_candidates": big_n, "block_size": block_size, "selection": selection,
                "lam": lam, "value": value if isinstance(value, str) else type(value).__name__,
                "particles": k, "ess_threshold": ess_threshold, "steps": steps,
                "start_index": start}
    # the FK / TDS / DAS keywords are recorded only where they differ from plain SMC
    settings.update({name: v for name, v, default in (
        ("potential", potential, "diff"), ("weights", weights, "incremental"),
        ("twisted", twisted, False), ("tempering", tempering, None)) if v != default})
    return SampleResult(out, rewards, ledger.nfe, ledger.reward_calls, ledger.reward_grads,
                        ledger.backprops,
                        torch.stack(ess) if ess else torch.ones(0, pops, dtype=torch.float64),
                        settings)
