"""Rollover budget forcing (RBF) and the flow → VP-SDE conversion it samples flow models with.

Kim, Yoon, Hwang, Sung 2025, "Inference-Time Scaling for Flow Models via Stochastic Generation
and Rollover Budget Forcing" (arXiv 2503.19385). Two parts:

**The conversion** (§4.1–4.2). A flow-matching model (x_t = (1 − t) x0 + t ε, velocity
v = ε − x0) is sampled with a reverse *SDE* on the variance-preserving interpolant x̄_r = ᾱ_r x0
+ σ̄_r ε (ᾱ_r = e^{−β(r)/2}, σ̄_r = √(1 − e^{−β(r)}), β(r) = β_min r + (β_max − β_min) r²/2, the
paper's 0.1 and 20), whose marginals are the flow's at the same signal-to-noise ratio:

    t(r) = σ̄_r / (ᾱ_r + σ̄_r),   x̄_r = (ᾱ_r + σ̄_r) x_{t(r)}    (so p̄_r is p_{t(r)} rescaled)
    dx̄ = [−ū_r + ½ g(r)² ∇log p̄_r] dr + g(r) dW̄   (r from 1 to 0, g(r) = norm·r², norm 3)

Fokker–Planck: the ½g²∇log p term cancels the diffusion, so every g leaves the marginals
p̄_r; g only decides how much fresh noise the sampler sees, which is what particle search needs
(the ODE, g = 0, has nothing to search over). toycode integrates it in the DDIM-family form
(design notes §6, with the step's noise s chosen rather than η's)

    x' = α' x̂0 + √(σ'² − s²) ε̂ + s z,   s² = ∫_{r'}^{r} g² du = norm² (r⁵ − r'⁵)/5  (VP units)

which is the same SDE to first order in the step (−(s²/2σ) ε̂ = ½ s² ∇log p), has the right
marginal N(α' x0, σ'²) for a point mass at any step size, and runs in the flow's own state
(x = x̄ / (ᾱ + σ̄) and s / (ᾱ' + σ̄'): the same transition, rescaled), so the flow model is
called at its own t(r) with no conversion of its velocity. :meth:`VPConversion.sde` puts this
step on any grid (an :class:`SDEProcess`); :meth:`VPConversion.flow_process` is the paper's grid,
uniform in r. The official code (Flow-Inference-Time-Scaling, ``convert_scheduler: vp``) converts
the velocity to ū_r and takes Euler–Maruyama steps; same SDE, other discretisation.

**Rollover budget forcing** (§4.3, Alg. 1). A fixed budget of N·T denoiser calls per output is
spread over the steps: N initial noises (the best by value is kept), then a quota of N candidates
per step. At each step candidates x' ~ step(x_i) are drawn one at a time (each costs one call,
its ε̂ at i + 1, which gives its value r(x̂0)); the first whose value beats the best value so
far is taken at once and the unused quota *rolls over* to the next step; if none does, the
step's best candidate is taken when its quota is spent. The last searched step spends all that
is left, so the total is N·T exactly; the step into the clean end is deterministic (σ = 0:
x0 = x̂0) and is not searched. N = 1 is the base sampler.

    code name      paper symbol
    ---------      ------------
    N              NFE budget per step (the quota); N·T the total budget per output
    quota          the step's quota plus the rollover from the step before
    best           the best value on the path so far (the official code's ``best_rewards``)
    r, t(r)        the VP time and the flow time with the same signal-to-noise ratio
    norm           the diffusion coefficient's scale (``diffusion_norm``, "square": g = norm·r²)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..utils.checks import check_choice, check_range
from .backend import Backend
from .diffusion import NoiseLevel, Process
from .ledger import Ledger, SampleResult
from .values import ValueSpec, make_value_fn

__all__ = ["VPConversion", "SDEProcess", "rollover_sample", "SDES"]

SDES = ("model", "vp")
"""How RBF steps its candidates: "model" the backend's own DDIM(η) step, "vp" the paper's
flow → VP-SDE (:meth:`VPConversion.sde` on the backend's grid)."""


@dataclass(frozen=True)
class SDEProcess(Process):
    """A :class:`~toycode.core.diffusion.Process` whose step i → i + 1 takes the noise
    ``noise[i]`` (float64, 0 ≤ s ≤ σ_{i+1}) instead of DDIM's η-noise:
    x' = α' x̂0 + √(σ'² − s²) ε̂ + s z. It steps one grid point at a time."""

    noise: torch.Tensor | None = None

    def __post_init__(self):
        super().__post_init__()
        s = torch.as_tensor(self.noise, dtype=torch.float64) if self.noise is not None else None
        if s is None or s.shape != (self.num_steps,):
            got = None if s is None else tuple(s.shape)
            raise ValueError(f"noise must hold one scale per step ({self.num_steps},), got {got}")
        if (s < 0).any() or (s > self.sigmas[1:] + 1e-12).any():
            raise ValueError("noise[i] must lie in [0, sigma_{i+1}]")
        object.__setattr__(self, "noise", s.clamp(max=self.sigmas[1:]))

    @property
    def deterministic(self) -> bool:
        assert self.noise is not None, "set in __post_init__"
        return not bool((self.noise > 0).any())

    def _step_terms(self, x, i, eps, *, to, x0) -> tuple[list, float]:
        check_range("i", i, 0, self.num_steps - 1)
        i = int(i)
        if to is not None and int(to) != i + 1:
            raise ValueError("an SDE process steps one grid point at a time (to = i + 1)")
        a, s = float(self.alphas[i]), float(self.sigmas[i])
        a2, s2 = float(self.alphas[i + 1]), float(self.sigmas[i + 1])
        assert self.noise is not None, "set in __post_init__"
        noise = float(self.noise[i])
        keep = math.sqrt(max(s2 * s2 - noise * noise, 0.0))
        if x0 is not None:
            return [(a2, x0), (keep, eps)], noise
        if a == 0:
            raise ValueError(f"grid index {i} has alpha = 0: pass the model's x0 to step")
        return [(a2 / a, x), (keep - a2 * s / a, eps)], noise


@dataclass(frozen=True)
class VPConversion:
    """The paper's flow → VP-SDE conversion (module docstring): the VP schedule β(r) =
    ``beta_min``·r + (``beta_max`` − ``beta_min``) r²/2 and the diffusion g(r) = ``norm``·r²."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    norm: float = 3.0

    def __post_init__(self):
        check_range("beta_min", self.beta_min, 0.0, None, low_open=True)
        check_range("beta_max", self.beta_max, self.beta_min, None, low_open=True)
        check_range("norm", self.norm, 0.0, None)

    def level(self, r: float) -> NoiseLevel:
        """(ᾱ_r, σ̄_r) of the VP interpolant at VP time r ∈ [0, 1]."""
        check_range("r", r, 0.0, 1.0)
        b = self.beta_min * r + 0.5 * (self.beta_max - self.beta_min) * r * r
        return NoiseLevel(math.exp(-0.5 * b), math.sqrt(-math.expm1(-b)))

    def vp_time(self, level: NoiseLevel) -> float:
        """The VP time r whose SNR ᾱ/σ̄ is ``level``'s α/σ (1 beyond the schedule's end, 0 clean)."""
        if level.sigma == 0:
            return 0.0
        snr2 = (level.alpha / level.sigma) ** 2
        b = math.log1p(1.0 / snr2) if snr2 > 0 else math.inf
        lo, span = self.beta_min, self.beta_max - self.beta_min
        r = (-lo + math.sqrt(lo * lo + 2 * span * b)) / span
        return min(r, 1.0)

    def flow_time(self, r: float) -> float:
        """t(r) = σ̄_r / (ᾱ_r + σ̄_r): the flow time with VP time r's signal-to-noise ratio."""
        lv = self.level(r)
        return lv.sigma / (lv.alpha + lv.sigma)

    def noise_scales(self, process: Process) -> torch.Tensor:
        """Each step's s in the process's own state units: √(norm²(r⁵ − r'⁵)/5) in VP units,
        divided by the VP scale c' = σ̄_{r'}/σ' of the step's end, and at most σ'."""
        out = []
        for i in range(process.num_steps):
            r, r2 = (self.vp_time(process.level(j)) for j in (i, i + 1))
            s2 = float(process.sigmas[i + 1])
            if s2 == 0:
                out.append(0.0)
                continue
            s_vp = self.norm * math.sqrt(max(r**5 - r2**5, 0.0) / 5.0)
            out.append(min(s_vp / (self.level(r2).sigma / s2), s2))
        return torch.tensor(out, dtype=torch.float64)

    def sde(self, process: Process) -> SDEProcess:
        """The VP-SDE step on ``process``'s grid (its model is called where it was)."""
        return SDEProcess(
            process.alphas,
            process.sigmas,
            process.timesteps,
            1.0,
            process.kind,
            noise=self.noise_scales(process),
        )

    def flow_process(self, steps: int, num_train_steps: int = 1000) -> SDEProcess:
        """The paper's grid: rectified flow at t(r_i), r_i = 1 − i/T uniform in VP time (the
        first point at t = 1, pure noise, where the flow's prior is exact: the VP schedule's own
        r = 1 keeps ᾱ = e^{−β(1)/2} ≈ 0.007 of the signal), with the VP-SDE step."""
        check_range("steps", steps, 1, num_train_steps)
        t = [1.0] + [self.flow_time(1 - i / steps) for i in range(1, steps)] + [0.0]
        t_all = torch.tensor(t, dtype=torch.float64)
        flow = Process(1 - t_all, t_all, t_all[:-1] * num_train_steps, 1.0, "flow")
        return self.sde(flow)


def _check(backend: Backend, n: int, num_candidates: int, *, selection: str, sde: str) -> Process:
    """The loop's arguments, and the process its candidates step with."""
    check_range("n", n, 1, None)
    check_range("num_candidates", num_candidates, 1, None)
    check_choice("sde", sde, SDES)
    if selection != "argmax":
        raise ValueError(
            f"RBF keeps the best candidate: selection must be 'argmax', got {selection!r}"
        )
    stepper = backend.process if sde == "model" else VPConversion().sde(backend.process)
    if num_candidates > 1 and stepper.deterministic:
        raise ValueError(
            "RBF needs a stochastic step: with DDIM eta = 0 every candidate of a state is identical"
        )
    return stepper


def _take(state: dict, rows: torch.Tensor, new: dict, src: torch.Tensor | None = None) -> None:
    """Overwrite ``state``'s rows with ``new``'s (its rows ``src``, default all, in order)."""
    for key, t in new.items():
        state[key][rows] = t if src is None else t[src]


def _initial(ledger: Ledger, backend: Backend, value_fn, big_n: int, *, n: int, generator) -> dict:
    """N prior draws per output, each predicted once; the best by value is each output's start."""
    x = backend.prior_sample(n * big_n, generator)
    pred = ledger.predict(backend, x, 0, generator)
    x = x if pred.x is None else pred.x
    v = value_fn(ledger, backend, x, pred.x0 if value_fn.needs_x0 else None, 0, generator)
    best = v.view(n, big_n).argmax(1) + torch.arange(n) * big_n
    return {"x": x[best], "eps": pred.eps[best], "x0": pred.x0[best], "v": v[best]}


def _search_step(calls: tuple, state: dict, i: int, quota: torch.Tensor, *, last: bool):
    """One step i → i + 1 of every output (module docstring): candidates one at a time until one
    beats the path's best value (not at the ``last`` searched step) or the quota is spent.
    Returns the new states at i + 1, the calls each output spent, which took a winner early and
    each output's best candidate value."""
    ledger, backend, stepper, value_fn, generator = calls
    n = len(quota)
    spent = torch.zeros(n, dtype=torch.long)
    early = torch.zeros(n, dtype=torch.bool)
    searching = quota > 0
    best = {k: v.clone() for k, v in state.items()}
    best["v"] = torch.full((n,), -math.inf, dtype=torch.float64)
    new = {k: v.clone() for k, v in best.items()}
    while searching.any():
        rows = searching.nonzero()[:, 0]
        x = stepper.step(state["x"][rows], i, state["eps"][rows], generator, x0=state["x0"][rows])
        pred = ledger.predict(backend, x, i + 1, generator)
        x = x if pred.x is None else pred.x
        x0_v = pred.x0 if value_fn.needs_x0 else None
        cand = {"x": x, "eps": pred.eps, "x0": pred.x0}
        cand["v"] = value_fn(ledger, backend, x, x0_v, i + 1, generator).double()
        spent[rows] += 1
        better = cand["v"] > best["v"][rows]
        _take(best, rows[better], cand, better)
        # (1) beats the best so far: taken at once, the rest of the quota rolls over
        win = torch.zeros_like(better) if last else cand["v"] > state["v"][rows]
        _take(new, rows[win], cand, win)
        early[rows[win]] = True
        # (2) quota spent without a winner: the step's best candidate
        done = ~win & (spent[rows] >= quota[rows])
        _take(new, rows[done], {k: best[k][rows[done]] for k in best})
        searching[rows[win | done]] = False
    # the path's best value only rises: a forced move keeps the old bar
    new["v"] = torch.where(early, new["v"], state["v"])
    return new, spent, early, best["v"]


def rollover_sample(
    backend: Backend,
    reward: Callable,
    n: int,
    *,
    num_candidates: int = 1,
    block_size: int | None = None,
    selection: str = "argmax",
    lam: float = 1.0,
    value: ValueSpec = "tweedie",
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    sde: str | None = None,
) -> SampleResult:
    """Rollover budget forcing (Kim et al. 2025, arXiv 2503.19385, Alg. 1; module docstring).

    N = ``num_candidates``: N initial noises and a quota of N candidates per step, N·T denoiser
    calls per output in all (value calls of look-ahead values come on top). ``sde``: "vp" (the
    default on a flow grid) steps candidates with the flow → VP-SDE conversion on the backend's
    grid, "model" (the default on a VP grid) with the backend's own DDIM(η) step. ``block_size``
    and ``lam`` are not read (RBF keeps the best, λ-free). ``callback`` receives a dict per
    searched step: i, quota (n,), spent (n,), early (n,: took a winner before the quota ran
    out), best (n,: the step's best candidate value), value (n,: the path's best value after).
    """
    sde = sde or ("vp" if backend.process.kind == "flow" else "model")
    stepper = _check(backend, n, num_candidates, selection=selection, sde=sde)
    value_fn, ledger, big_n = make_value_fn(value, reward), Ledger(), num_candidates
    steps = backend.process.num_steps
    calls = (ledger, backend, stepper, value_fn, generator)
    with torch.no_grad(), tqdm(total=steps, disable=not progress, desc="RBF", leave=False) as bar:
        state = _initial(ledger, backend, value_fn, big_n, n=n, generator=generator)
        quota = torch.full((n,), big_n, dtype=torch.long)
        for i in range(steps - 1):  # the step into the clean end (σ = 0) is not searched
            state, spent, early, best = _search_step(calls, state, i, quota, last=i == steps - 2)
            if callback is not None:
                callback(
                    {
                        "i": i,
                        "quota": quota,
                        "spent": spent,
                        "early": early,
                        "best": best,
                        "value": state["v"].clone(),
                    }
                )
            quota = big_n + torch.where(early, quota - spent, 0)  # (3) the rollover
            bar.update(1)
        x = stepper.step(state["x"], steps - 1, state["eps"], generator, x0=state["x0"])
        bar.update(1)
        out = backend.decode(x)
        rewards = ledger.reward(reward, out).double()
    settings = {
        "num_candidates": big_n,
        "selection": "argmax",
        "lam": lam,
        "steps": steps,
        "sde": sde,
    }
    return SampleResult.from_ledger(out, rewards, ledger, settings=settings, populations=n)
