"""Lesson 9's exercises: the class tilt of an indicator reward, and classifier-free guidance.

``class_tilt`` is graded twice: against the closed form P*(c) = π e^λ / (π e^λ + 1 − π)
(:func:`toycode.mnist.eval.tilted_fraction`), and by an exact check that does not use it — the
quadrature target of the built-in ``box`` problem (a box indicator tilting a 2-D mixture,
:class:`toycode.exact.targets.GridTarget`), whose E_{p*}[r] is P*(box) for the prior's own box
mass π.

``cfg_eps`` is graded against diffusers' own convention: the Fashion-MNIST pipeline's
``StableDiffusionPipeline.__call__`` runs two steps at guidance scale w with its UNet's two
halves (unconditional, text) replaced by random tensors, and the guided output that reaches
``scheduler.step`` is what the learner's ε_u + w (ε_c − ε_u) must equal. Needs the ``sd`` extra.
"""

from __future__ import annotations

import functools
import math

import torch

from ..exact.problems import load_problem
from ..exact.targets import GridTarget
from .closed_forms import _as_parts, compare
from .grading import Exercise, register

_F64 = torch.float64
_CASES = ((0.1, 1.5), (0.5, 1.0), (0.02, 4.0), (0.9, 0.3), (0.3, 0.0))  # (π, λ)


def class_tilt(pi: float, lam: float) -> float:
    """P*(c) under p* ∝ p e^{λ r} with r = 1[class = c] and base rate π = P_p(c):
    the class's mass is multiplied by e^λ, every other class's by 1, then normalised."""
    return pi * math.exp(lam) / (pi * math.exp(lam) + 1 - pi)


def _check_class_tilt(fn) -> str | None:
    from ..mnist.eval import tilted_fraction  # the library's closed form (imports scipy)

    for pi, lam in _CASES:
        reason = compare(
            fn(pi, lam),
            torch.tensor(tilted_fraction(pi, lam), dtype=_F64),
            f"class_tilt({pi}, {lam})",
        )
        if reason:
            return reason
    # the exact check: a box indicator on the 2-D "box" mixture, p* by quadrature
    problem = load_problem("box")
    pi = _grid(problem, 0.0).reward_mean
    for lam in (0.5, 3.0):
        want = torch.tensor(_grid(problem, lam).reward_mean, dtype=_F64)
        reason = compare(
            fn(pi, lam),
            want,
            f"class_tilt({pi:.4f}, {lam}) against the box "
            f"problem's quadrature target (E_p*[r] = {float(want):.4f})",
        )
        if reason:
            return reason
    return None


def _grid(problem, lam: float) -> GridTarget:
    return GridTarget(problem.prior, problem.reward, lam, resolution=160, supersample=2)


def cfg_eps(eps_uncond: torch.Tensor, eps_text: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022) in diffusers' convention:
    ε̂ = ε_u + w (ε_c − ε_u); w = 1 is the text-conditional model, w = 0 the unconditional."""
    return eps_uncond + w * (eps_text - eps_uncond)


@functools.lru_cache(maxsize=1)
def _pipeline():
    """A private copy of the Fashion-MNIST pipeline (its scheduler is mutated by __call__)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from ..sd.backend import load_pipeline

    bars = [
        lib for lib in (diffusers_logging, transformers_logging) if lib.is_progress_bar_enabled()
    ]
    for lib in bars:  # the loaders' progress bars are not the learner's business
        lib.disable_progress_bar()
    try:
        pipe = load_pipeline("tiny:fashion", device="cpu")
    finally:
        for lib in bars:
            lib.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_cfg(w: float, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(ε_u, ε_c, guided) at each step of a 2-step ``StableDiffusionPipeline`` call at guidance
    scale ``w`` > 1, with the UNet's outputs replaced by random tensors: what diffusers itself
    hands its scheduler, given the two halves of the UNet's batch [unconditional, text]."""
    pipe = _pipeline()
    g = torch.Generator().manual_seed(seed)
    seen, halves = [], []

    def fake_unet(module, args, output):
        sample = output[0] if isinstance(output, tuple) else output.sample
        u, c = (torch.randn(sample[:1].shape, generator=g) for _ in range(2))
        halves.append((u, c))
        fake = torch.cat([u, c]).to(sample.dtype)
        return (fake,) + tuple(output[1:]) if isinstance(output, tuple) else type(output)(fake)

    step = pipe.scheduler.step

    def recording_step(model_output, *args, **kwargs):
        seen.append(model_output.detach().clone())
        return step(model_output, *args, **kwargs)

    hook = pipe.unet.register_forward_hook(fake_unet)
    pipe.scheduler.step = recording_step
    try:
        pipe(
            "a photo of a bag",
            num_inference_steps=2,
            guidance_scale=w,
            output_type="latent",
            generator=torch.Generator().manual_seed(seed),
        )
    finally:
        hook.remove()
        del pipe.scheduler.step
    return [(u, c, out) for (u, c), out in zip(halves, seen)]


def _compare_float32(got, want: torch.Tensor, what: str) -> str | None:
    """As :func:`compare`, at float32's precision: diffusers forms its guided output in float32."""
    parts, reason = _as_parts(got, 1, what)
    if reason:
        return reason
    g, w = parts[0], want.double()
    if g.shape != w.shape:
        return f"{what}: the result has shape {tuple(g.shape)}, expected {tuple(w.shape)}"
    if not torch.isfinite(g).all():
        return f"{what}: the result is not finite"
    err = (g - w).abs()
    k = int(err.flatten().argmax())
    if err.flatten()[k] > 1e-5 * (1 + float(w.abs().max())):
        return (
            f"{what}: an entry is {g.flatten()[k].item():.6g} where diffusers has "
            f"{w.flatten()[k].item():.6g}"
        )
    return None


def _check_cfg_eps(fn) -> str | None:
    g = torch.Generator().manual_seed(5)  # first the two ends of the line, then diffusers
    u, c = (torch.randn(2, 4, 8, 8, generator=g, dtype=_F64) for _ in range(2))
    for w, want, what in ((1.0, c, "the text-conditional ε_c"), (0.0, u, "the unconditional ε_u")):
        reason = compare(fn(u.clone(), c.clone(), w), want, f"cfg_eps at w={w} (must be {what})")
        if reason:
            return reason
    for w in (7.5, 2.0):
        for k, (u, c, want) in enumerate(diffusers_cfg(w, seed=int(w))):
            reason = _compare_float32(
                fn(u.double(), c.double(), w),
                want,
                f"cfg_eps at w={w}, step {k} (diffusers' StableDiffusionPipeline)",
            )
            if reason:
                return reason
    return None


register(
    Exercise(
        "class_tilt",
        9,
        "the class share under an indicator tilt",
        "e^{λ r} multiplies the mass π of class c by e^λ and the rest (1 − π) by 1; "
        "divide by the new total",
        _check_class_tilt,
        class_tilt,
    )
)
register(
    Exercise(
        "cfg_eps",
        9,
        "classifier-free guidance in diffusers' convention",
        "start from the unconditional ε_u and move w times along (ε_c − ε_u); w = 1 must give ε_c",
        _check_cfg_eps,
        cfg_eps,
    )
)
