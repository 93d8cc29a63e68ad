"""Lesson 4's exercises: the learner counts CoDe's cost and writes its loop; the checkers run
the answers on the exact mixture denoiser of a built-in problem and compare them with the
library's engine.

``code_nfe`` is graded against the engine's own count: :func:`toycode.code_sample` is run on a
few (T, N, B, value) settings and its ledger's denoiser calls per sample are the truth.

Two things are graded. Cost: a Tweedie-valued CoDe loop needs exactly 1 + (T − 1)·N denoiser
calls per sample (the candidates of a state share its ε̂; the prediction that scores a
candidate at a block end is its next step's ε̂), counted by a wrapper around the backend.
Law: the learner's samples and an independent run of :func:`toycode.core.sampler.sample_blockwise`
with the same settings must agree in four statistics (mean reward, the two coordinate means,
the mean squared norm) within :data:`Z_MAX` standard errors of their difference. With n = 2048
per side a correct loop fails this by chance with probability below 3·10⁻⁴ per check (four
two-sided 4σ tests); the seeds are fixed, so a given answer always gets the same verdict.
"""

from __future__ import annotations

import math

import torch

from ..backends import analytic_backend
from ..core.backend import Prediction
from ..core.code import code_sample
from ..core.diffusion import Process
from ..core.sampler import sample_blockwise
from ..exact.problems import load_problem
from ..exact.values import ExactValue
from .closed_forms import compare
from .grading import Exercise, register

N_SAMPLES, STEPS, CANDIDATES, BLOCK = 2048, 20, 4, 5
Z_MAX = 4.0


def code_nfe(steps: int, num_candidates: int, block_size: int, value: str = "tweedie") -> int:
    """Denoiser calls per sample of CoDe with T steps, N candidates, blocks of B: with
    ``value="tweedie"`` every candidate's x̂0 is read, so each step after the first costs N and
    the kept one's block-end prediction is its next ε̂: 1 + (T − 1)·N. With ``value="exact"``
    (read without the denoiser) each of the n_b = ⌈T/B⌉ blocks costs one call for the shared
    first step and N for each later one: (T − n_b)·N + n_b."""
    if value == "tweedie":
        return 1 + (steps - 1) * num_candidates
    blocks = math.ceil(steps / block_size)
    return (steps - blocks) * num_candidates + blocks


NFE_CASES = (
    (10, 4, 5, "tweedie"),
    (12, 3, 1, "tweedie"),
    (10, 4, 3, "exact"),
    (12, 3, 12, "exact"),
    (7, 5, 1, "exact"),
    (20, 2, 6, "exact"),
)


def _check_code_nfe(fn) -> str | None:
    problem = load_problem("between")
    for steps, big_n, block, value in NFE_CASES:
        backend = analytic_backend(problem.prior, Process.make(steps))
        spec = "tweedie" if value == "tweedie" else ExactValue(problem.target)
        run = code_sample(
            backend,
            problem.reward,
            2,
            num_candidates=big_n,
            block_size=block,
            value=spec,
            generator=torch.Generator().manual_seed(0),
        )
        counted = torch.tensor(float(run.nfe_per_sample), dtype=torch.float64)
        reason = compare(
            fn(steps, big_n, block, value),
            counted,
            f"code_nfe({steps}, {big_n}, {block}, {value!r}) against the engine's count",
            ("the denoiser calls per sample",),
        )
        if reason:
            return reason
    return None


def code_loop(
    backend,
    reward,
    n: int,
    num_candidates: int,
    block_size: int,
    generator: torch.Generator | None = None,
    lam: float | None = None,
):
    """CoDe (arXiv 2502.00968, Alg. 1) with Tweedie values: every ``block_size`` steps each of
    the n states runs ``num_candidates`` continuations and keeps the one whose r(x̂0) is largest
    (``lam`` None) or a draw from softmax(λ·r(x̂0)). Returns the decoded samples."""
    process, steps, big_n = backend.process, backend.process.num_steps, num_candidates
    x = backend.prior_sample(n, generator)
    pred = backend.predict(x, 0, generator)
    eps, x0 = pred.eps, pred.x0
    for i in range(0, steps, block_size):
        j = min(i + block_size, steps)
        # the N candidates of a state share its ε̂ for their first step
        xs, es, x0s = (v.repeat_interleave(big_n, 0) for v in (x, eps, x0))
        for t in range(i, j):
            xs = process.step(xs, t, es, generator, x0=x0s)
            if t + 1 < steps:  # this prediction scores the block end and drives the next step
                pred = backend.predict(xs, t + 1, generator)
                es, x0s = pred.eps, pred.x0
        values = reward(backend.decode(xs if j == steps else x0s)).view(n, big_n)
        if lam is None:
            pick = values.argmax(1)
        else:
            probs = torch.softmax(lam * values.double(), 1)
            pick = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        keep = torch.arange(n) * big_n + pick
        x, eps, x0 = xs[keep], es[keep], x0s[keep]
    return backend.decode(x)


def code_softmax_loop(
    backend,
    reward,
    n: int,
    num_candidates: int,
    block_size: int,
    lam: float,
    generator: torch.Generator | None = None,
):
    """CoDe with softmax selection: keep a candidate with probability ∝ e^{λ r(x̂0)}."""
    return code_loop(backend, reward, n, num_candidates, block_size, generator, lam=lam)


class _Counting:
    """A backend that counts the rows it is asked to predict (one row = one NFE)."""

    def __init__(self, backend):
        self.inner, self.calls = backend, 0
        self.process = backend.process

    def prior_sample(self, n, generator=None):
        return self.inner.prior_sample(n, generator)

    def predict(self, x, i, generator=None) -> Prediction:
        self.calls += len(x)
        return self.inner.predict(x, i, generator)

    def decode(self, x0):
        return self.inner.decode(x0)

    def noise_to(self, x0, i, generator=None):
        return self.inner.noise_to(x0, i, generator)


def _stats(x: torch.Tensor, r: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "the mean reward": r,
        "the mean of x[0]": x[:, 0],
        "the mean of x[1]": x[:, 1],
        "the mean of |x|²": (x**2).sum(1),
    }


def _sampler_checker(selection: str):
    def checker(fn) -> str | None:
        problem = load_problem("between")
        backend = _Counting(analytic_backend(problem.prior, Process.make(STEPS)))
        args = (backend, problem.reward, N_SAMPLES, CANDIDATES, BLOCK)
        if selection == "softmax":
            args += (problem.lam,)
        x = fn(*args, torch.Generator().manual_seed(1))
        if x is None:
            return "the sampler returned None: return the decoded samples"
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.shape != (N_SAMPLES, 2):
            return f"the sampler returned shape {tuple(x.shape)}, expected ({N_SAMPLES}, 2)"
        if not torch.isfinite(x).all():
            return "the samples are not finite (a step with a wrong sign or coefficient?)"
        per_sample = backend.calls / N_SAMPLES
        need = 1 + (STEPS - 1) * CANDIDATES
        if per_sample != need:
            return (
                f"the loop spent {per_sample:g} denoiser calls per sample where CoDe needs "
                f"1 + (T − 1)·N = {need} (T = {STEPS}, N = {CANDIDATES})"
            )
        ref = sample_blockwise(
            backend.inner,
            problem.reward,
            N_SAMPLES,
            num_candidates=CANDIDATES,
            block_size=BLOCK,
            selection=selection,
            lam=problem.lam,
            generator=torch.Generator().manual_seed(2),
        )
        mine, theirs = _stats(x, problem.reward(x)), _stats(ref.samples, ref.rewards)
        for what in mine:
            a, b = mine[what], theirs[what]
            se = math.sqrt(a.var().item() / len(a) + b.var().item() / len(b))
            z = (a.mean().item() - b.mean().item()) / se
            if abs(z) > Z_MAX:
                return (
                    f"{what} of your samples is {a.mean().item():.4f}, the engine's "
                    f"{b.mean().item():.4f}: {z:+.1f} standard errors apart"
                )
        return None

    return checker


register(
    Exercise(
        "code_nfe",
        4,
        "CoDe's cost in denoiser calls",
        "count one call for x_T, then per block one shared first step and N calls for "
        "each later step; with Tweedie values the block-end prediction of every "
        "candidate is also needed, and the kept one's is reused for its next step",
        _check_code_nfe,
        code_nfe,
    )
)
register(
    Exercise(
        "code_argmax",
        4,
        "CoDe's blockwise loop with argmax selection",
        "run each state's N candidates for B steps from the shared ε̂, score each by "
        "r(x̂0) of the prediction at the block end, keep the best, and reuse that "
        "prediction for its next step",
        _sampler_checker("argmax"),
        code_loop,
    )
)
register(
    Exercise(
        "code_softmax",
        4,
        "CoDe with softmax selection",
        "as code_argmax, but draw the kept candidate with probability ∝ e^{λ r(x̂0)} "
        "(torch.multinomial on softmax(λ·values))",
        _sampler_checker("softmax"),
        code_softmax_loop,
    )
)
