"""Methods as data: what each method name means for the one blockwise sampler.

A method is a record, not a branch: how it sets N (candidates), B (block size) and K (SMC
particles), its default selection rule, the gradient-guidance rule it wraps the backend with (if
any), whether that needs a differentiable reward or an exact target, and which knobs a sweep may
vary. ``api.sample``, the command line, ``tradeoff``, ``demo``, the MNIST demo and ``toycode sd``
all read :data:`METHODS`; adding a method is adding one record to it.

    name            N          B          K   selection    guidance
    ----            -          -          -   ---------    --------
    base            1          T          1   —            —
    bon             N          T          1   argmax       —            best-of-N
    svdd            N          1          1   argmax       —            SVDD-PM (Li et al. 2024)
    code            N          B (10)     1   argmax       —            CoDe (Singh et al. 2025)
    smc             1          B (1)      K   systematic   —            SMC / FK steering
    fk-diff         1          B (20)     K   systematic   —            FK steering, λ(V − V')
    fk-max          1          B (20)     K   systematic   —            FK steering, λ max V
    fk-add          1          B (20)     K   systematic   —            FK steering, λ Σ V
    fk-rt           1          B (20)     K   systematic   —            FK steering, λ V ("rt")
    das             1          B (1)      K   systematic   —            tempered SMC (DAS)
    dps             1          T          1   —            DPS          Chung et al. 2023
    dps-detached    1          T          1   —            DPS, ε̂ held fixed (the CoDe code's)
    dps-damped      1          T          1   —            DPS, λ_t = λ/(1 + λpσ²_{0|t}) (damped)
    universal       1          T          1   —            universal    Bansal et al. 2023
    exact-guidance  1          T          1   —            exact twisted score (gold standard)
    code-gradient   N          B (10)     1   argmax       DPS          CoDe on guided proposals
    unicode         N          B (10)     1   argmax       x̂0 step     UniCoDe (Goyal et al. 2025)
    tds             1          B (1)      K   systematic   DPS          twisted SMC (Wu et al. 2023)
    noise-random    N noises   T          1   argmax       —            Ma et al. 2025, own loop
    noise-zero-order N runs    T          1   argmax       —            Ma et al. 2025, own loop
    dts             N·T NFE    —          —   softmax      —            DTS (Jain et al. 2025)
    dts-star        N·T NFE    —          —   argmax       —            DTS* (search), tree
    dsearch         N          B (5)      W   top-W        —            DSearch (Li et al. 2025)
    evosearch       N runs     T          1   argmax       —            EvoSearch (He et al. 2025)
    rbf             N·T NFE    —          1   argmax       —            RBF (Kim et al. 2025)
    psi             N chain    —          K   systematic   ∇(r∘Φ)       Ψ-Sampler (Yoon et al. 2025)
    psi-pcn         N chain    —          K   systematic   —            Ψ-Sampler with pCN (no ∇r)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..utils.checks import check_choice, check_range
from .backend import Backend
from .evolution import evolutionary_search
from .guidance import DPS, DampedDPS, ExactGuidance, GuidedBackend, ManifoldStep, Universal
from .noise_mcmc import psi_sample
from .rollover import rollover_sample
from .sampler import SampleResult, sample_blockwise
from .search import (
    beam_nfe,
    beam_search,
    beam_widths,
    noise_random_search,
    noise_zero_order_search,
    tree_sample,
)

__all__ = ["Method", "GuidanceInputs", "METHODS", "get_method", "KNOBS"]

KNOBS = {
    "N": "num_candidates",
    "B": "block_size",
    "K": "particles",
    "lam": "lam",
    "scale": "scale",
    "T": "steps",
    "M": "value_samples",
    "k": "lookahead_steps",
    "W": "beam_width",
}
"""Sweep knobs and the ``api.sample`` argument each one sets."""


@dataclass(frozen=True)
class GuidanceInputs:
    """What a guidance rule is built from: the differentiable reward it ascends, the exact
    target (exact guidance only), the scale s and universal guidance's m, step size and r."""

    reward: Callable
    scale: float
    target: object = None
    backward_steps: int = 0
    backward_lr: float = 0.1
    recurrence: int = 1


@dataclass(frozen=True)
class Method:
    """One method of the blockwise sampler.

    ``block`` says how B is set: "given" (the caller's B, default ``default_block_size``), "all"
    (B = T: one block, best-of-N) or "one" (B = 1). ``selection`` is the default rule (None for
    methods that select nothing). ``guidance`` builds the rule a :class:`GuidedBackend` applies.

    A method whose loop has another shape (search over noises, trees, beams) names it as
    ``loop``: a function with :func:`~toycode.core.sampler.sample_blockwise`'s call signature
    ``(backend, reward, n, *, lam, value, generator, progress, callback, **settings)`` that counts
    its cost in a :class:`~toycode.core.sampler.Ledger` and returns a
    :class:`~toycode.core.sampler.SampleResult`. ``fixed`` holds sampler keywords the record pins
    (e.g. an FK potential), ``options`` the extra keywords a caller may set for it, and
    ``budget(m, T)`` the knob settings (as in :data:`KNOBS`) that spend about m·T denoiser calls
    per output sample, for equal-compute comparisons (None: the method has one cost, m = 1).
    """

    name: str
    summary: str
    uses_candidates: bool = False  # the caller's N reaches the loop (else N = 1)
    uses_particles: bool = False  # the caller's K and ESS threshold reach the loop
    block: str = "all"
    default_block_size: int = 10
    selection: str | None = None
    guidance: Callable[[GuidanceInputs], object] | None = None
    needs_gradient: bool = False
    needs_target: bool = False
    knobs: tuple[str, ...] = ("T",)
    loop: Callable[..., SampleResult] | None = None
    fixed: tuple[tuple[str, object], ...] = ()
    options: tuple[str, ...] = ()
    budget: Callable[[int, int], dict] | None = None

    def __post_init__(self):
        check_choice("block", self.block, ("given", "all", "one"))
        unknown = set(self.knobs) - set(KNOBS)
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown knobs {sorted(unknown)}")

    def sampler_settings(
        self,
        steps: int,
        *,
        num_candidates: int = 1,
        block_size: int | None = None,
        particles: int = 1,
        ess_threshold: float = 0.5,
        selection: str | None = None,
    ) -> dict:
        """The :func:`~toycode.core.sampler.sample_blockwise` keywords this method stands for."""
        check_range("num_candidates", num_candidates, 1, None)
        check_range("particles", particles, 1, None)
        if block_size is not None:
            check_range("block_size", block_size, 1, None)
        b = {"all": steps, "one": 1}.get(self.block, block_size or self.default_block_size)
        settings = {
            "num_candidates": num_candidates if self.uses_candidates else 1,
            "block_size": b,
            "selection": selection or self.selection or "argmax",
        }
        if self.uses_particles:
            settings.update(particles=particles, ess_threshold=ess_threshold)
        settings.update(self.fixed)
        return settings

    def run(
        self, backend: Backend, reward: Callable, n: int, *, options: dict | None = None, **settings
    ) -> SampleResult:
        """Sample n outputs with this method's loop (the blockwise sampler unless it has its
        own); ``settings`` as from :meth:`sampler_settings` plus lam, value, generator, progress,
        callback; ``options`` the method-specific keywords it declares."""
        unknown = set(options or {}) - set(self.options)
        if unknown:
            raise ValueError(
                f"method {self.name!r} takes no option(s) {sorted(unknown)}; "
                f"its options: {list(self.options) or 'none'}"
            )
        return (self.loop or sample_blockwise)(backend, reward, n, **settings, **(options or {}))

    def wrap(self, backend: Backend, inputs: GuidanceInputs | None) -> Backend:
        """The backend this method samples from: guided where it has a rule, else unchanged."""
        if self.guidance is None:
            return backend
        if inputs is None:
            raise ValueError(f"method {self.name!r} needs guidance inputs (a reward and a scale)")
        if self.needs_target and inputs.target is None:
            raise ValueError(
                f"method {self.name!r} needs an exact target; it runs on the toy problems only"
            )
        return GuidedBackend(backend, self.guidance(inputs))


def _universal(g: GuidanceInputs):
    return Universal(g.reward, g.scale, g.backward_steps, g.backward_lr, g.recurrence)


def _fk(potential: str) -> Method:
    """Feynman–Kac steering (Singhal, Horvitz et al. 2025, arXiv 2501.06848) with one of its
    potentials (:data:`toycode.core.steering.POTENTIALS`); the weights are checked only at block
    ends, every B = 20 steps (the official code's interval), and a population resamples there
    when its ESS < threshold·K (K/2 by default), and always at the clean end; option
    ``weight_mode`` ("incremental" | "reset", :data:`toycode.core.steering.WEIGHT_MODES`) picks
    the bookkeeping.
    docs/methods/fk-steering.md."""
    return Method(
        f"fk-{potential}",
        f"FK steering, {potential} potential: at every B-th step "
        f"resampled if ESS < threshold·K, and at the end",
        uses_particles=True,
        block="given",
        default_block_size=20,
        selection="systematic",
        knobs=("K", "B", "lam", "T", "M", "k"),
        fixed=(("potential", potential),),
        options=("weight_mode",),
        budget=lambda m, steps: {"K": m},
    )


def _das(
    backend: Backend, reward: Callable, n: int, *, tempering: float | None = None, **settings
) -> SampleResult:
    """Tempered SMC as in DAS (Kim, Kim, Park et al. 2025, arXiv 2501.05803): the blockwise
    sampler with λ_t = λ·min(1, (1 + γ)^{steps done} − 1). γ (option ``tempering``) defaults
    to the paper's Stable Diffusion setting, 0.008 at T = 100, rescaled to the grid so that
    λ_t reaches λ after 87 % of the steps, as (1.008)^87 ≈ 2; one particle (K = 1) weighs
    nothing, so it runs untempered (the base model). docs/methods/das.md."""
    if tempering is None and _weighted(settings):
        tempering = 2 ** (1 / (0.87 * backend.process.num_steps)) - 1
    return sample_blockwise(backend, reward, n, tempering=tempering, **settings)


def _tds(backend: Backend, reward: Callable, n: int, **settings) -> SampleResult:
    """Twisted SMC (Wu, Trippe, Naesseth, Blei, Cunningham 2023, arXiv 2306.17775): the
    blockwise sampler on a guided backend weighing its proposals against the model's own
    (``twisted=True``). One particle (K = 1) has no weights to correct: it takes the guided
    backend's own steps, DPS. docs/methods/tds.md."""
    return sample_blockwise(backend, reward, n, twisted=_weighted(settings), **settings)


def _weighted(settings: dict) -> bool:
    """Whether sampler settings weigh anything (N·K > 1)."""
    return settings.get("num_candidates", 1) * settings.get("particles", 1) > 1


def beam_budget(m: int, steps: int, *, children: int = 2, block: int | None = None) -> dict:
    """DSearch's knobs for about m·T denoiser calls per output at T = ``steps``: N =
    ``children`` per member, B = ``block`` (T/5 by default: five selections) and the initial
    width W whose geometric shrink to 1 spends closest to m·T by
    :func:`~toycode.core.search.beam_nfe` (m = 1: the base model, N = W = 1)."""
    check_range("children", children, 1, None)
    if block is not None:
        check_range("block", block, 1, steps)
    b = max(1, steps // 5) if block is None else block
    if m <= 1:
        return {"N": 1, "W": 1, "B": b}
    blocks = -(-steps // b)
    w = min(
        range(1, 8 * m + 2),
        key=lambda w: abs(beam_nfe(steps, b, children, beam_widths(w, blocks)) - m * steps),
    )
    return {"N": children, "W": w, "B": b}


def psi_budget(m: int, steps: int) -> dict:
    """Ψ-Sampler's knobs for m·T forward NFE per output: half the budget to the chain (N ODE
    solves), half to K SMC particles (N = K = m/2, measured best of the splits tried on the toy
    benches at m = 16 and 32); m = 1 is one ODE solve, the base model's deterministic sampler."""
    k = max(1, m // 2)
    return {"N": m - k if k > 1 else m, "K": k}


def _psi(name: str, langevin: bool) -> Method:
    """Ψ-Sampler (Yoon, Min, Yeo, Sung 2025, arXiv 2506.01320): an MCMC chain per population on
    the noise posterior N(x_T; 0, I) e^{λ r(Φ(x_T))} (pCNL, or pCN with ``langevin`` off, which
    needs no reward gradient), K particles thinned from it, then SMC. Options ``step_size``
    (h, the paper's 0.5) and ``burn_in``. docs/methods/psi-sampler.md."""
    kind = "pCNL (∇ of r∘Φ through the ODE)" if langevin else "pCN (gradient-free)"
    return Method(
        name,
        f"Ψ-Sampler: {kind} on the initial noise, then SMC from K of its states",
        uses_candidates=True,
        uses_particles=True,
        selection="systematic",
        needs_gradient=langevin,
        knobs=("N", "K", "lam", "T"),
        loop=psi_sample,
        fixed=(("langevin", langevin),),
        options=("step_size", "burn_in"),
        budget=psi_budget,
    )


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("base", "the pretrained model"),
        Method(
            "bon",
            "best-of-N: one block, score the finished samples",
            uses_candidates=True,
            selection="argmax",
            knobs=("N", "lam", "T"),
            budget=lambda m, steps: {"N": m},
        ),
        Method(
            "svdd",
            "SVDD-PM: select after every step",
            uses_candidates=True,
            block="one",
            selection="argmax",
            knobs=("N", "lam", "T", "M", "k"),
            budget=lambda m, steps: {"N": m},
        ),
        Method(
            "code",
            "CoDe: N candidates per state, select every B steps",
            uses_candidates=True,
            block="given",
            selection="argmax",
            knobs=("N", "B", "lam", "T", "M", "k"),
            budget=lambda m, steps: {"N": m},
        ),
        # K particles cost K·T per population; one output per population is the equal-compute draw
        Method(
            "smc",
            "SMC / FK steering: K particles, at every B-th step resampled if "
            "ESS < threshold·K, and at the end",
            uses_particles=True,
            block="given",
            default_block_size=1,
            selection="systematic",
            knobs=("K", "B", "lam", "T", "M", "k"),
            budget=lambda m, steps: {"K": m},
        ),
        *(_fk(potential) for potential in ("diff", "max", "add", "rt")),
        Method(
            "das",
            "tempered SMC (DAS): λ_t rises from 0 to λ over the steps, K particles",
            uses_particles=True,
            block="given",
            default_block_size=1,
            selection="systematic",
            knobs=("K", "B", "lam", "T", "M", "k"),
            loop=_das,
            options=("tempering",),
            budget=lambda m, steps: {"K": m},
        ),
        Method(
            "dps",
            "diffusion posterior sampling",
            guidance=lambda g: DPS(g.reward, g.scale),
            needs_gradient=True,
            knobs=("scale", "T"),
        ),
        Method(
            "dps-detached",
            "DPS with ε̂ held fixed (the official CoDe code's gradient baseline)",
            guidance=lambda g: DPS(g.reward, g.scale, detach=True),
            needs_gradient=True,
            knobs=("scale", "T"),
        ),
        Method(
            "dps-damped",
            "damped guidance: DPS with λ_t = λ/(1 + λ p σ²_{0|t}), exact on a Gaussian base",
            guidance=lambda g: DampedDPS(g.reward, g.scale),
            needs_gradient=True,
            knobs=("scale", "T"),
        ),
        Method(
            "universal",
            "universal guidance: forward + backward guidance, self-recurrence",
            guidance=_universal,
            needs_gradient=True,
            knobs=("scale", "T"),
        ),
        Method(
            "exact-guidance",
            "the exact twisted score (the tilted reverse process)",
            guidance=lambda g: ExactGuidance(g.target),
            needs_target=True,
        ),
        Method(
            "code-gradient",
            "CoDe on a DPS-guided backend",
            uses_candidates=True,
            block="given",
            selection="argmax",
            guidance=lambda g: DPS(g.reward, g.scale),
            needs_gradient=True,
            knobs=("N", "B", "lam", "scale", "T"),
            budget=lambda m, steps: {"N": m},
        ),
        # UniCoDe: Goyal, Singh, Jamali-Rad 2025 (arXiv 2512.12339); docs/methods/unicode.md
        Method(
            "unicode",
            "UniCoDe: CoDe whose steps move x̂0 along ∇r (no backprop through the denoiser)",
            uses_candidates=True,
            block="given",
            selection="argmax",
            guidance=lambda g: ManifoldStep(g.reward, g.scale),
            needs_gradient=True,
            knobs=("N", "B", "lam", "scale", "T"),
            budget=lambda m, steps: {"N": m},
        ),
        # TDS: Wu, Trippe, Naesseth, Blei, Cunningham 2023 (arXiv 2306.17775); docs/methods/tds.md
        Method(
            "tds",
            "twisted SMC: DPS-guided proposals reweighted by p/q and the twist ratio",
            uses_particles=True,
            block="given",
            default_block_size=1,
            selection="systematic",
            guidance=lambda g: DPS(g.reward, g.scale),
            needs_gradient=True,
            knobs=("K", "B", "lam", "scale", "T"),
            loop=_tds,
            options=("tempering",),
            budget=lambda m, steps: {"K": m},
        ),
        # loops of another shape (toycode.core.search); N is their budget in full trajectories
        Method(
            "noise-random",
            "random search over initial noises: N trajectories, keep the best",
            uses_candidates=True,
            knobs=("N", "T"),
            loop=noise_random_search,
            budget=lambda m, steps: {"N": m},
        ),
        Method(
            "noise-zero-order",
            "zero-order search over initial noises: a pivot and its "
            "neighbours, N trajectories in all",
            uses_candidates=True,
            knobs=("N", "T"),
            loop=noise_zero_order_search,
            options=("neighbours", "radius"),
            budget=lambda m, steps: {"N": m},
        ),
        Method(
            "dts",
            "Diffusion Tree Sampling: Boltzmann descent, soft Bellman backups, N·T NFE",
            uses_candidates=True,
            selection="softmax",
            knobs=("N", "lam", "T"),
            loop=tree_sample,
            fixed=(("selection", "softmax"),),
            options=("children", "descent"),
            budget=lambda m, steps: {"N": m},
        ),
        Method(
            "dts-star",
            "Diffusion Tree Search (DTS*): greedy descent, soft backups, N·T NFE",
            uses_candidates=True,
            selection="argmax",
            knobs=("N", "lam", "T"),
            loop=tree_sample,
            fixed=(("selection", "argmax"),),
            options=("children", "descent"),
            budget=lambda m, steps: {"N": m},
        ),
        Method(
            "dsearch",
            "DSearch: a beam of W shrinking to 1, N children per member every B steps",
            uses_candidates=True,
            block="given",
            default_block_size=5,
            knobs=("N", "B", "T", "M", "k"),
            loop=beam_search,
            options=("beam_width", "schedule", "final_width"),
            budget=beam_budget,
        ),
        Method(
            "evosearch",
            "EvoSearch: a population of noises, elites kept, tournament parents mutated, "
            "N trajectories in all",
            uses_candidates=True,
            knobs=("N", "T"),
            loop=evolutionary_search,
            options=("population", "elites", "mutation_rate", "tournament_share"),
            budget=lambda m, steps: {"N": m},
        ),
        # Kim, Yoon, Hwang, Sung 2025 (arXiv 2503.19385); docs/methods/rbf.md
        Method(
            "rbf",
            "rollover budget forcing: N·T NFE, a candidate quota per step, unused quota "
            "rolled over; flow models on the VP-SDE",
            uses_candidates=True,
            selection="argmax",
            knobs=("N", "T"),
            loop=rollover_sample,
            options=("sde",),
            budget=lambda m, steps: {"N": m},
        ),
        # Yoon, Min, Yeo, Sung 2025 (arXiv 2506.01320); docs/methods/psi-sampler.md
        *(_psi(name, langevin) for name, langevin in (("psi", True), ("psi-pcn", False))),
    )
}
"""Every method by name, in the order tables list them."""


def get_method(name: str) -> Method:
    """The record of a method name, or a one-line error listing the known ones."""
    check_choice("method", name, METHODS)
    return METHODS[name]
