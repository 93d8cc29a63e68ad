"""SMC bookkeeping at a block end: selection rules, FK potentials, weights, TDS and DAS.

:func:`~toycode.core.sampler.sample_blockwise` hands the values of a block's children to one
:class:`Steering` object and gets back a :class:`BlockEnd`: which children survive, with what
weights. For CoDe (K = 1 particle per population) that is argmax or a softmax draw among a state's
N candidates (:func:`toycode.code_sample` spells it out); for SMC (K > 1, N = 1) the children
carry log-weights between resamplings. The relatives (docs/methods/): other FK potentials (λ·max
or λ·sum of V along the path, or λ·V alone, "rt"; corrected at the clean end) and the official
FK code's "reset" weights (``potential``, ``weight_mode``; Singhal et al. 2025, arXiv
2501.06848); twisted SMC, whose particles move by a guided backend's proposal and are reweighted
by log p/q (``twisted``; TDS, Wu et al. 2023, arXiv 2306.17775); and tempered SMC,
λ_t V_t − λ_t' V_t' with λ_t rising to λ (``tempering``; DAS, Kim et al. 2025, arXiv 2501.05803).

    code name     paper symbol
    ---------     ------------
    N             candidates per state (CoDe's N, BoN's N)
    K             particles per SMC population (1 for CoDe)
    logw          SMC log-weights log w_t (0 after every resampling)
    potential     FK potential G_t: its log, log G, is what a block end adds to logw
    logprod       log Π G_t over the potentials a particle's weights took up (max/add)
"""

from __future__ import annotations

import math
from typing import Callable, Literal, NamedTuple

import torch

from ..utils.checks import check_choice, check_range
from .backend import Prediction
from .diffusion import Process, randn_like

__all__ = [
    "Selection",
    "Potential",
    "WeightMode",
    "SELECTIONS",
    "POTENTIALS",
    "WEIGHT_MODES",
    "BlockEnd",
    "Steering",
]

Selection = Literal["argmax", "softmax", "systematic", "stratified", "ssp"]
Potential = Literal["diff", "max", "add", "rt"]
WeightMode = Literal["incremental", "reset"]


def _argmax(values, logits, k, generator):
    return values.topk(k, dim=1).indices


def _multinomial(values, logits, k, generator):
    return torch.multinomial(torch.softmax(logits, 1), k, replacement=True, generator=generator)


def _systematic(values, logits, k, generator):
    """Systematic resampling: one uniform per population, K evenly spaced points on the CDF."""
    cdf = torch.softmax(logits, 1).cumsum(1)
    u = (
        torch.rand(len(cdf), 1, generator=generator, dtype=cdf.dtype)
        + torch.arange(k, dtype=cdf.dtype)
    ) / k
    idx = torch.searchsorted(cdf, u.clamp(max=cdf[:, -1:] * (1 - 1e-12)))
    return idx.clamp(max=cdf.shape[1] - 1)


def _stratified(values, logits, k, generator):
    """Stratified resampling: one uniform in each of the K strata [j/K, (j+1)/K) of the CDF."""
    cdf = torch.softmax(logits, 1).cumsum(1)
    u = (torch.rand(cdf.shape[0], k, generator=generator, dtype=cdf.dtype) + torch.arange(k)) / k
    idx = torch.searchsorted(cdf, u.clamp(max=cdf[:, -1:] * (1 - 1e-12)))
    return idx.clamp(max=cdf.shape[1] - 1)


def ssp_counts(expected: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Offspring counts of the Srinivasan sampling process (SSP; Gerber, Chopin & Whiteley 2019,
    arXiv 1707.01845, Alg. 4) for each row of expected counts e (rows summing to K): every count
    is ⌊e_i⌋ or ⌈e_i⌉, E[count_i] = e_i, and the counts are negatively associated whatever the
    order of the particles (systematic resampling's are not). The fractional parts are settled
    in pairs, one column at a time, for all rows at once."""
    counts = expected.floor()
    frac = expected - counts
    rows = torch.arange(len(expected))
    cur, f_cur = torch.zeros(len(expected), dtype=torch.long), frac[:, 0].clone()
    for j in range(1, expected.shape[1]):
        f_j, total = frac[:, j], f_cur + frac[:, j]
        u = torch.rand(len(expected), generator=generator, dtype=expected.dtype)
        low = total < 1
        # below 1: the pair's mass goes to one of them (the current one w.p. f_cur / total);
        # at or above 1: one of them gains a child and the other carries total − 1 on (the
        # current one gains w.p. (1 − f_j)/(2 − total)); both keep E[count] exact
        p = torch.where(low, f_cur / total.clamp(min=1e-300), (1 - f_j) / (2 - total))
        first = u < p
        counts[rows, cur] += (~low & first).to(counts.dtype)
        counts[:, j] += (~low & ~first).to(counts.dtype)
        stays = low == first  # the current one carries the remainder on
        cur = torch.where(stays, cur, torch.full_like(cur, j))
        f_cur = torch.where(low, total, total - 1)
    counts[rows, cur] += (f_cur > 0.5).to(
        counts.dtype
    )  # the last remainder is 0 or 1 up to rounding
    return counts.long()


def _in_place(counts: torch.Tensor) -> torch.Tensor:
    """K slots from offspring counts (rows of K parents): a parent with a child keeps its own
    slot and its extra children fill the slots of parents without any, so a survivor's line
    stays in its place (the genealogy reads as lines, not as a shuffle)."""
    k = counts.shape[1]
    slots = torch.arange(k).expand_as(counts)
    extra = (counts - 1).clamp(min=0)
    copies = torch.searchsorted(extra.cumsum(1), slots.contiguous(), right=True).clamp(max=k - 1)
    free = (counts > 0).int().argsort(dim=1, stable=True)  # the childless slots first
    n_free = (counts == 0).sum(1, keepdim=True)
    return slots.clone().scatter_(1, free, torch.where(slots < n_free, copies, free))


def _ssp(values, logits, k, generator):
    """SSP resampling (see :func:`ssp_counts`); with one child per particle (N = 1) survivors
    keep their slots (:func:`_in_place`)."""
    counts = ssp_counts(k * torch.softmax(logits, 1), generator)
    if counts.shape[1] == k:
        return _in_place(counts)
    ends = counts.cumsum(1)
    return torch.searchsorted(ends, torch.arange(k).expand(len(ends), k).contiguous(), right=True)


SELECTIONS: dict[str, Callable] = {
    "argmax": _argmax,
    "softmax": _multinomial,
    "systematic": _systematic,
    "stratified": _stratified,
    "ssp": _ssp,
}
"""Selection rules: (values, logits, K, generator) → K kept indices per population, each row
of values/logits holding a population's K·N children; logits = log w + λ(V_child − V_parent).
argmax keeps the best K by value (λ-free); softmax draws K with replacement ∝ e^{logits};
systematic does so with one uniform per population (lower variance); stratified with one
uniform per stratum; ssp (the Srinivasan sampling process) gives each child ⌊K w⌋ or ⌈K w⌉
copies, negatively associated, and keeps survivors in their own slots (lineage-preserving;
docs/methods/resampling.md)."""

POTENTIALS = ("diff", "max", "add", "rt")
"""Feynman–Kac steering potentials (Singhal et al. 2025, arXiv 2501.06848, §3) on the values
V_1, V_2, … a particle's path meets at its block ends: log G = λ(V − V_parent) ("diff"),
λ·max of V so far ("max"), λ·sum of V so far ("add"), λ·V itself ("rt", the current value
r_t alone; added to the official FK code after the paper, PotentialType.RT). At the clean end
max, add and rt take G = e^{λ r(x0)} / Π G (the potentials the path's weights took up), so every
path's potentials multiply to e^{λ r(x0)}; diff telescopes to it by itself (V starts at 0)."""

WEIGHT_MODES = ("incremental", "reset")
"""SMC weight bookkeeping between resamplings: "incremental" multiplies the carried weight by
each block's potential (standard SMC); "reset" sets the weight to the current potential alone,
as the official FK-steering code does (its issue #12): a block that did not resample loses its
potential (and, for max/add, is left out of the clean-end correction; a twisted proposal's
correction is lost likewise, so twisted SMC wants "incremental")."""


def _ess(weights: torch.Tensor) -> torch.Tensor:
    return 1.0 / (weights**2).sum(1)


class _Selected(NamedTuple):
    keep: torch.Tensor  # kept child indices into the flat children
    logw: torch.Tensor  # the kept children's log-weights (0 where resampled)
    weights: torch.Tensor  # (populations, K·N) selection weights
    chosen: torch.Tensor  # (populations, K) kept children within each population
    resampled: torch.Tensor  # (populations,) which populations resampled


def _select(
    values, log_g, logw, *, big_n, k, selection, ess_threshold, clean, generator, reset=False
) -> _Selected:
    """Weight the children of each population and keep K of its K·N (CoDe: K = 1).

    ``log_g`` is each child's incremental log-weight (its potential, see :func:`_potential`),
    added to the carried log-weight, or replacing it with ``reset``. A population resamples when
    N > 1, at the clean end, or when its ESS < threshold·K; otherwise it carries its weights.
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
    if selection == "argmax":  # the weights it used are those of its choice
        weights = torch.zeros_like(weights).scatter_(1, chosen, 1.0)
    return _Selected(keep, logw, weights, chosen, resample)


def _potential(kind, values, stat, logprod, *, lam, lam_prev, clean):
    """(the children's path statistic, their log-potential log G); ``stat`` and ``logprod``
    are the parents', one per child. ``lam_prev`` is the λ of the parent's block end (it
    differs from λ only under tempering, where diff is λ_t V − λ_{t'} V_parent). max, add and
    rt give λ·(running max | running sum | V) before the clean end and λ r(x0) − log Π G there."""
    if kind == "diff":
        return values, (
            lam * (values - stat) if lam_prev == lam else lam * values - lam_prev * stat
        )
    if kind == "rt":  # the current value alone: G = e^{λ V}
        stat = values
    else:
        stat = torch.maximum(stat, values) if kind == "max" else stat + values
    return stat, (lam * values - logprod if clean else lam * stat)


class _Carry(NamedTuple):
    """What each kept particle carries from block end to block end (gathered on resampling)."""

    v: torch.Tensor  # its value at the last block end (the reward at the clean end)
    stat: torch.Tensor  # the potential's path statistic: last V (diff, rt), running max or sum
    logprod: torch.Tensor  # log Π G over the potentials its weights took up
    logw: torch.Tensor  # SMC log-weight (0 after a resampling)

    @classmethod
    def start(cls, n: int, potential: str) -> "_Carry":
        zeros = torch.zeros(n, dtype=torch.float64)
        stat = torch.full_like(zeros, -math.inf) if potential == "max" else zeros
        return cls(zeros, stat, zeros, zeros)


def _tempered(lam: float, gamma: float | None, steps_done: int, clean: bool) -> float:
    """DAS's tempering schedule λ_t = λ·min(1, (1 + γ)^{steps done} − 1) (Kim et al. 2025,
    arXiv 2501.05803, "exp" schedule); λ itself at the clean end and without tempering."""
    if gamma is None or clean:
        return lam
    return lam * min(1.0, (1.0 + gamma) ** steps_done - 1.0)


def _twisted_step(process, x, t, eps, *, x0, base, generator):
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


class BlockEnd(NamedTuple):
    """What one block end decided (flat children: the block's n·N candidates)."""

    keep: torch.Tensor  # (n,) indices of the kept children into the flat children
    weights: torch.Tensor  # (populations, K·N) selection weights (one-hot for argmax)
    ess: torch.Tensor  # (populations,) effective sample size of those weights
    chosen: torch.Tensor  # (populations, K) kept children within each population; the
    # identity where a population carried its weights
    log_g: torch.Tensor  # (n·N,) the children's log-potentials log G

    def record(
        self,
        *,
        block: int,
        i: int,
        j: int,
        candidates: torch.Tensor,
        values: torch.Tensor,
        x0: torch.Tensor | None,
    ) -> dict:
        """What a sampler's callback receives for this block end (populations as rows)."""
        pops = len(self.weights)
        return {
            "block": block,
            "i": i,
            "j": j,
            "candidates": candidates,
            "x0": x0,
            "values": values.view(pops, -1),
            "potential": self.log_g.view(pops, -1),
            "weights": self.weights,
            "selected": self.chosen,
            "ess": self.ess,
            "x": candidates[self.keep],
        }


class Steering:
    """The selection and SMC state of one blockwise run: ``block_end`` weighs the children's
    values and keeps K per population; ``propose`` moves candidates one step (the model's own
    step, or twisted SMC's guided proposal with its log p/q).

    ``particles`` K > 1 groups the n states into n/K SMC populations, resampled when their ESS
    falls below ``ess_threshold`` · K. ``potential`` (:data:`POTENTIALS`) and ``weight_mode``
    (:data:`WEIGHT_MODES`) choose the FK-steering potential and weight bookkeeping; ``twisted``
    weighs the proposals of a guided backend (DPS or exact guidance) against the model's own
    (TDS); ``tempering`` γ tempers λ over time (DAS). ``start`` is the grid index the run
    starts at (DAS tempers λ by the steps done since). The other settings are
    :func:`~toycode.core.sampler.sample_blockwise`'s."""

    def __init__(
        self,
        *,
        n: int,
        num_candidates: int,
        particles: int,
        selection: Selection,
        lam: float,
        ess_threshold: float,
        potential: Potential = "diff",
        weight_mode: WeightMode = "incremental",
        twisted: bool = False,
        tempering: float | None = None,
        start: int = 0,
    ):
        check_choice("potential", potential, POTENTIALS)
        check_choice("weight_mode", weight_mode, WEIGHT_MODES)
        if tempering is not None:
            check_range("tempering", tempering, 0.0, None, low_open=True)
            if potential != "diff":
                raise ValueError(f"tempering works on the diff potential, not {potential!r}")
        # with one state per population nothing is weighted: tempering and the p/q correction
        # would have nothing to act on, and twisted=True would only swap in its proposal
        for name, on in (("tempering", tempering is not None), ("twisted=True", twisted)):
            if on and num_candidates * particles == 1:
                raise ValueError(
                    f"{name} weighs particles: it needs particles > 1 or "
                    f"num_candidates > 1, got num_candidates = particles = 1"
                )
        self.big_n, self.k, self.selection, self.lam = num_candidates, particles, selection, lam
        self.ess_threshold, self.potential, self.weight_mode = ess_threshold, potential, weight_mode
        self.twisted, self.tempering, self.start = twisted, tempering, start
        self.populations = n // particles
        self.weighted = num_candidates * particles > 1  # else nothing is selected or weighed
        self.carry = _Carry.start(n, potential)
        self.history: list[torch.Tensor] = []

    def checked(self, pred: Prediction) -> Prediction:
        """``pred``, refused where twisted SMC needs the model's own (ε̂, x̂0) beside it."""
        if self.twisted and pred.unguided is None:
            raise ValueError(
                "twisted=True needs a guided backend whose predictions carry the "
                "unguided ε̂ and x̂0 (DPS or exact guidance)"
            )
        return pred

    def value_x0(self, x0: torch.Tensor, base) -> torch.Tensor:
        """The x̂0 a block end is valued at: twisted SMC's twist is the model's own value
        (``base``: the unguided (ε̂, x̂0)), not the guided prediction's."""
        return base[1] if self.twisted and base is not None else x0

    def propose(self, process: Process, x, t: int, eps, *, x0, base, generator):
        """One step of each candidate from grid index t: (x', log p/q), log p/q = 0 unless
        twisted (``base``: the model's own (ε̂, x̂0) beside a guided prediction's)."""
        if self.twisted:
            return _twisted_step(process, x, t, eps, x0=x0, base=base, generator=generator)
        return process.step(x, t, eps, generator, x0=x0), 0.0

    def block_end(
        self,
        values: torch.Tensor,
        *,
        i: int,
        j: int,
        clean: bool,
        log_pq,
        generator: torch.Generator | None,
    ) -> BlockEnd:
        """The block [i, j)'s children valued ``values`` (r itself at the ``clean`` end):
        their potentials (plus twisted SMC's proposal correction ``log_pq``), the selection,
        and what the kept particles carry on."""
        big_n, carry = self.big_n, self.carry
        lam = _tempered(self.lam, self.tempering, j - self.start, clean)
        lam_prev = _tempered(self.lam, self.tempering, i - self.start, False)
        stat, log_g = _potential(
            self.potential,
            values,
            carry.stat.repeat_interleave(big_n),
            carry.logprod.repeat_interleave(big_n),
            lam=lam,
            lam_prev=lam_prev,
            clean=clean,
        )
        reset = self.weight_mode == "reset"
        sel = _select(
            values,
            log_g + log_pq if self.twisted else log_g,
            carry.logw,
            big_n=big_n,
            k=self.k,
            selection=self.selection,
            ess_threshold=self.ess_threshold,
            clean=clean,
            generator=generator,
            reset=reset,
        )
        took = (
            torch.where(sel.resampled.repeat_interleave(self.k * big_n), log_g, 0.0)
            if reset
            else log_g
        )
        logprod = carry.logprod.repeat_interleave(big_n) + took
        keep = sel.keep
        self.carry = _Carry(values[keep], stat[keep], logprod[keep], sel.logw)
        ess = _ess(sel.weights)
        self.history.append(ess)
        return BlockEnd(keep, sel.weights, ess, sel.chosen, log_g)

    @property
    def values(self) -> torch.Tensor:
        """The kept particles' values at the last block end (their rewards after the clean end)."""
        return self.carry.v

    def ess_table(self) -> torch.Tensor:
        """(blocks, populations) ESS of every block end so far (an empty table without any)."""
        if not self.history:
            return torch.ones(0, self.populations, dtype=torch.float64)
        return torch.stack(self.history)

    def settings(self) -> dict:
        """The FK / TDS / DAS keywords, recorded only where they differ from plain SMC."""
        return {
            name: v
            for name, v, default in (
                ("potential", self.potential, "diff"),
                ("weight_mode", self.weight_mode, "incremental"),
                ("twisted", self.twisted, False),
                ("tempering", self.tempering, None),
            )
            if v != default
        }
