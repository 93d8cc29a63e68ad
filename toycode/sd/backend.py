"""Stable Diffusion (SD 1.x / 2.x, SDXL, SD3) and FLUX behind the backend contract: latents are
the state.

:func:`make_sd_backend` picks the backend for a pipeline's class. The pipeline only lends its
modules: ``pipe.unet`` for ε̂ (its ε, v or x̂0 output converted by the scheduler's
``prediction_type``; with classifier-free guidance, one guided UNet call = one NFE),
``pipe.vae`` to decode x̂0 for the rewards and to encode references, the text encoders once to
embed the prompt, and ``pipe.scheduler``'s config for ᾱ and the timestep grid. The reverse
steps are toycode's own DDIM(η) maths (:class:`toycode.core.diffusion.Process`), identical to
diffusers' DDIMScheduler.step for the "leading" spacing SD uses, and at η = 0 to
EulerDiscreteScheduler's step on its grid (SDXL's default), so N = 1 with η = 0 reproduces the
pipeline's own latents. The pipeline's scheduler is never mutated. Needs the
``sd`` extra (diffusers, transformers).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from ..core.backend import Prediction
from ..core.diffusion import Process, to_eps_x0
from ..utils.checks import check_choice, check_range

__all__ = [
    "StableDiffusionBackend",
    "StableDiffusionXLBackend",
    "StableDiffusion3Backend",
    "FluxBackend",
    "make_sd_backend",
    "load_pipeline",
    "sd_process",
    "sd3_process",
    "flow_process",
    "flux_shift",
    "SD_SCHEDULERS",
    "UNET_PREDICTIONS",
]

UNET_PREDICTIONS = ("epsilon", "v_prediction", "sample")
"""The scheduler ``prediction_type`` values the UNet backends read (SD 1.x: ε, SD 2.x: v)."""

log = logging.getLogger(__name__)


def load_pipeline(
    model: str | Path, *, device: str | None = None, dtype: torch.dtype | None = None
):
    """A diffusers pipeline from a hub id, a local folder, ``tiny:KIND`` (a random-weight
    :func:`~toycode.sd.tiny.tiny_pipeline`, offline), ``tiny:fashion`` or ``tiny:fashion-sd3``
    (toycode's trained Fashion-MNIST StableDiffusionPipeline and its rectified-flow
    StableDiffusion3Pipeline sibling, :mod:`toycode.sd.fashion`); fp16 on CUDA, float32 on CPU.

    The class comes from the folder's ``model_index.json`` (SD 1.x/2.x, SDXL, ...); whether
    toycode can sample it is :func:`make_sd_backend`'s question.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    from .fashion import TRAINED_MODELS

    if str(model) in TRAINED_MODELS:  # a trained Fashion-MNIST pipeline, a committed folder
        model = TRAINED_MODELS[str(model)]
    elif str(model).startswith("tiny:"):
        from .tiny import tiny_pipeline

        pipe = tiny_pipeline(str(model)[len("tiny:") :])  # built in float32
        # a cast to float32 is a no-op that diffusers still warns about: skip it
        return pipe.to(device) if dtype == torch.float32 else pipe.to(device, dtype)
    from diffusers import DiffusionPipeline

    try:
        kind = DiffusionPipeline.load_config(str(model)).get("_class_name", "")
        extra = (
            {"safety_checker": None, "requires_safety_checker": False}
            if kind == "StableDiffusionPipeline"
            else {}
        )
        pipe = DiffusionPipeline.from_pretrained(str(model), dtype=dtype, **extra)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"could not load a diffusers pipeline from {str(model)!r}: {str(err).splitlines()[0]}"
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


SD_SCHEDULERS = ("ddim", "ddpm", "euler")
"""The timestep grids the UNet backends step on (the step itself is always DDIM(η))."""


def sd_process(scheduler_config, steps: int, scheduler: str = "ddim", eta: float = 1.0) -> Process:
    """The pipeline's ᾱ and a timestep grid from a fresh scheduler (never the pipe's own).

    "ddim" / "ddpm": DDIMScheduler's / DDPMScheduler's grid (DDPM: η = 1). "euler":
    EulerDiscreteScheduler's, SDXL's default: its σ_k = √((1 − ᾱ)/ᾱ) (σ = 0 at the end, or
    σ(ᾱ_0) with ``final_sigmas_type="sigma_min"``; Karras or other σ spacings included) read as
    the VP levels ᾱ = 1/(1 + σ²), and its timesteps (float, fractional for Karras σ) as the
    UNet's time input. Euler's deterministic step on the probability-flow ODE in the variables
    (σ, x/√ᾱ), x̃' = x̃ + (σ' − σ) ε̂, is DDIM η = 0 on that grid (design §6; Song et al. 2021,
    DDIM §4.3), so the latents match the Euler pipeline's (which carries x̃ = x/√ᾱ: its
    ``init_noise_sigma`` and ``scale_model_input`` convert between the two). The last level is
    (α, σ) = (1, σ_T), Euler's own variable at its final σ, so the clean-end latent is the one
    the Euler pipeline returns also when σ_T > 0.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

    check_choice("scheduler", scheduler, SD_SCHEDULERS)
    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "euler": EulerDiscreteScheduler}
    sched = cls[scheduler].from_config(scheduler_config)
    check_range("steps", steps, 1, sched.config.num_train_timesteps)
    if sched.config.get("clip_sample", False) or sched.config.get("thresholding", False):
        log.warning("the scheduler clips or thresholds x̂0; toycode's steps do neither")
    sched.set_timesteps(steps)
    if scheduler == "euler":
        sig = sched.sigmas.double()  # T + 1 levels
        if not (torch.isfinite(sig).all() and (sig[1:] < sig[:-1]).all()):
            raise ValueError(
                f"Euler's σ grid for {steps} steps is not finite and strictly "
                f"decreasing: {sig.tolist()}"
            )
        alphas = (1 + sig**2).rsqrt()
        # the clean end in Euler's own variable x̃ = x/√ᾱ (α = 1), the latent the pipeline
        # returns and decodes; the same VP level when σ_T = 0, and never a UNet input
        alphas[-1] = 1.0
        return Process(alphas, sig * alphas, sched.timesteps.clone(), eta, "vp")
    final = 1.0
    if scheduler == "ddim" and not sched.config.set_alpha_to_one:
        final = float(sched.alphas_cumprod[0])
    return Process.vp(
        sched.alphas_cumprod.double(),
        sched.timesteps.long(),
        eta=1.0 if scheduler == "ddpm" else eta,
        final_abar=final,
    )


def _prior_std(scheduler_config, steps: int, scheduler: str) -> float:
    """The standard deviation of the first latent in the VP variable: 1, except on Euler's grid
    with "linspace"/"trailing" spacing, where diffusers starts x̃ = x/√ᾱ at σ_max·z rather than
    √(σ_max² + 1)·z (its ``init_noise_sigma``), i.e. x at √(1 − ᾱ_max)·z."""
    if scheduler != "euler":
        return 1.0
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps)
    return float(sched.init_noise_sigma) / (1 + float(sched.sigmas[0]) ** 2) ** 0.5


def _pipeline_grid(pipe) -> str:
    """The grid a pipeline samples on by default: Euler's for an EulerDiscreteScheduler (SDXL's
    default), DDIM's otherwise."""
    return "euler" if type(pipe.scheduler).__name__ == "EulerDiscreteScheduler" else "ddim"


class StableDiffusionBackend:
    """A loaded StableDiffusionPipeline, one prompt, a timestep grid: the toycode contract.

    The UNet's output is read by the scheduler's ``prediction_type`` (ε for SD 1.x, v for SD
    2.x, or x̂0) and converted to (ε̂, x̂0) at the grid's noise level; CFG combines the raw outputs
    first, as the pipeline does (the conversion is linear, so the order is immaterial).

    ``scheduler`` picks the grid the DDIM(η) step runs on ("ddim", "ddpm", "euler"; default:
    Euler's for an EulerDiscreteScheduler pipeline, DDIM's otherwise; see :func:`sd_process`).
    ``guidance_rescale`` φ ∈ [0, 1] rescales the guided output toward the text output's
    per-sample standard deviation, o ← φ·o·std(o_text)/std(o) + (1 − φ)·o (Lin et al. 2023,
    "Common Diffusion Noise Schedules and Sample Steps are Flawed", §3.4; diffusers'
    ``rescale_noise_cfg``), as the pipeline's own ``guidance_rescale`` does.
    ``max_batch`` bounds how many latents go through the UNet (twice that with CFG) and the VAE
    at once, so any number of candidates fits in memory.
    """

    def __init__(
        self,
        pipe,
        prompt: str,
        *,
        steps: int = 50,
        scheduler: str | None = None,
        eta: float = 1.0,
        guidance_scale: float = 7.5,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        max_batch: int = 8,
        guidance_rescale: float = 0.0,
    ):
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        check_range("guidance_scale", guidance_scale, 0.0, None)
        check_range("guidance_rescale", guidance_rescale, 0.0, 1.0)
        check_range("max_batch", max_batch, 1, None)
        self.pipe, self.prompt, self.guidance_scale, self.max_batch = (
            pipe,
            prompt,
            guidance_scale,
            max_batch,
        )
        self.guidance_rescale = guidance_rescale
        self.prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction not in UNET_PREDICTIONS:
            raise ValueError(
                f"the scheduler's prediction_type must be one of "
                f"{', '.join(UNET_PREDICTIONS)}, got {self.prediction!r}"
            )
        self.scheduler = scheduler or _pipeline_grid(pipe)
        self.process = sd_process(pipe.scheduler.config, steps, self.scheduler, eta)
        self.prior_std = _prior_std(pipe.scheduler.config, steps, self.scheduler)
        self.device, self.dtype = pipe.unet.device, pipe.unet.dtype
        self.cfg = guidance_scale > 1.0
        f = pipe.vae_scale_factor
        self.height = height or pipe.unet.config.sample_size * f
        self.width = width or pipe.unet.config.sample_size * f
        self.shape = (pipe.unet.config.in_channels, self.height // f, self.width // f)
        with torch.no_grad():
            self._encode_prompt(prompt, negative_prompt)
        self.name = f"sd:{getattr(pipe, 'name_or_path', '') or type(pipe).__name__}"

    def _encode_prompt(self, prompt: str, negative_prompt: str | None) -> None:
        """Embed the prompt once: ``cond`` is (1 or 2, L, D), [negative, positive] with CFG."""
        pos, neg = self.pipe.encode_prompt(prompt, self.device, 1, self.cfg, negative_prompt)
        self.cond = torch.cat([neg, pos]) if self.cfg else pos

    def prior_sample(self, n, generator=None):
        # drawn like the pipeline's randn_tensor: on the generator's device, then moved. The
        # state is the VP latent x, not Euler's x/√ᾱ: see _prior_std for init_noise_sigma
        device = generator.device if generator is not None else self.device
        x = torch.randn((n, *self.shape), generator=generator, device=device, dtype=self.dtype)
        return x.to(self.device) if self.prior_std == 1.0 else x.to(self.device) * self.prior_std

    def _unet(self, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The raw UNet output for latents x, row k conditioned on prompt row ``rows[k]``."""
        return self.pipe.unet(x, t, encoder_hidden_states=self.cond[rows]).sample

    def _output(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The classifier-free-guided model output (ε̂, v̂ or x̂0, as the scheduler says)."""
        n = x.shape[0]
        if not self.cfg:
            return self._unet(x, t, torch.zeros(n, dtype=torch.long, device=self.device))
        rows = torch.arange(2, device=self.device).repeat_interleave(n)  # [neg]*n + [pos]*n
        uncond, text = self._unet(torch.cat([x, x]), t, rows).chunk(2)
        out = uncond + self.guidance_scale * (text - uncond)
        if self.guidance_rescale == 0:
            return out
        # §3.4: match each sample's guided std to its text-only std, then mix by φ
        dims = list(range(1, out.ndim))
        rescaled = out * (text.std(dim=dims, keepdim=True) / out.std(dim=dims, keepdim=True))
        return self.guidance_rescale * rescaled + (1 - self.guidance_rescale) * out

    def predict(self, x, i, generator=None):
        """One guided UNet pass (in chunks of max_batch), read by the scheduler's
        ``prediction_type`` ("epsilon", "v_prediction" or "sample") at the grid's level i."""
        t = self.process.timesteps[i].to(self.device)
        out = torch.cat([self._output(c, t) for c in x.split(self.max_batch)])
        lv = self.process.level(i)
        return Prediction(*to_eps_x0(out, self.prediction, x, lv.alpha, lv.sigma))

    def _vae(self):
        """The VAE that decodes and encodes (the pipeline's own here)."""
        return self.pipe.vae

    def decode(self, x0):
        """VAE decode to images in [0, 1], (n, 3, H, W) float32, in chunks of max_batch."""
        vae = self._vae()
        out = [
            vae.decode(c.to(vae.dtype) / vae.config.scaling_factor).sample
            for c in x0.split(self.max_batch)
        ]
        return (torch.cat(out).float() / 2 + 0.5).clamp(0, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (n, 3, H, W) to latents (the VAE posterior mean, scaled)."""
        vae = self._vae()
        x = (2 * images - 1).to(self.device, vae.dtype)
        with torch.no_grad():
            lat = [vae.encode(c).latent_dist.mean for c in x.split(self.max_batch)]
        return (torch.cat(lat) * vae.config.scaling_factor).to(self.dtype)

    def noise_to(self, x0, i, generator=None):
        return self.process.noise_to(x0.to(self.device, self.dtype), i, generator)

    def __repr__(self):
        return (
            f"{type(self).__name__}({self.name}, T={self.process.num_steps}, "
            f"eta={self.process.eta}, "
            f"cfg={self.guidance_scale})"
        )


class StableDiffusionXLBackend(StableDiffusionBackend):
    """A StableDiffusionXLPipeline behind the same contract: two text encoders, one UNet call.

    The prompt is embedded once by ``pipe.encode_prompt`` (the two encoders' penultimate states
    concatenated, and the second encoder's pooled projection; an absent negative prompt gives
    zeros, as ``force_zeros_for_empty_prompt`` asks). Each UNet call also gets
    ``added_cond_kwargs = {"text_embeds": pooled, "time_ids": (H, W, 0, 0, H, W)}``, the
    micro-conditioning the pipeline builds from original size, crop (0, 0) and target size. The
    VAE decodes and encodes in float32 when it is fp16 and its config asks to be upcast.
    """

    def _encode_prompt(self, prompt: str, negative_prompt: str | None) -> None:
        pipe = self.pipe
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=self.cfg,
            negative_prompt=negative_prompt,
        )
        te2 = getattr(pipe, "text_encoder_2", None)
        proj = int(pooled.shape[-1]) if te2 is None else te2.config.projection_dim
        ids = [self.height, self.width, 0, 0, self.height, self.width]
        expected = pipe.unet.add_embedding.linear_1.in_features
        if pipe.unet.config.addition_time_embed_dim * len(ids) + proj != expected:
            raise ValueError(
                f"the UNet expects {expected} added-embedding inputs, the time ids "
                f"and pooled text give "
                f"{pipe.unet.config.addition_time_embed_dim * len(ids) + proj}"
            )
        time_ids = torch.tensor([ids], dtype=pos.dtype, device=self.device)
        self.cond = torch.cat([neg, pos]) if self.cfg else pos
        self.pooled = torch.cat([neg_pooled, pooled]) if self.cfg else pooled
        self.time_ids = time_ids.expand(len(self.cond), -1)

    def _unet(self, x, t, rows):
        added = {"text_embeds": self.pooled[rows], "time_ids": self.time_ids[rows]}
        return self.pipe.unet(
            x, t, encoder_hidden_states=self.cond[rows], added_cond_kwargs=added
        ).sample

    def _vae(self):
        """The pipeline's VAE, or a float32 copy of it (made once) when it is fp16 and its
        config sets ``force_upcast``: SDXL's VAE overflows in fp16, the pipeline upcasts too."""
        vae = self.pipe.vae
        if not (vae.dtype == torch.float16 and vae.config.get("force_upcast", False)):
            return vae
        if getattr(self, "_vae32", None) is None:
            self._vae32 = copy.deepcopy(vae).float()
        return self._vae32


def _backend_classes() -> dict:
    from diffusers import (
        FluxPipeline,
        StableDiffusion3Pipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    return {
        StableDiffusionXLPipeline: StableDiffusionXLBackend,
        StableDiffusionPipeline: StableDiffusionBackend,
        StableDiffusion3Pipeline: StableDiffusion3Backend,
        FluxPipeline: FluxBackend,
    }


def make_sd_backend(pipe, prompt: str, **options):
    """The toycode backend for a loaded diffusers ``pipe`` and one prompt.

    StableDiffusionPipeline (SD 1.x, SD 2.x with ε or v prediction) →
    :class:`StableDiffusionBackend`; StableDiffusionXLPipeline → :class:`StableDiffusionXLBackend`;
    StableDiffusion3Pipeline → :class:`StableDiffusion3Backend` and FluxPipeline →
    :class:`FluxBackend` (``scheduler`` "ddim" only: the DDIM(η) step on the pipeline's flow
    grid). ``options`` are the backend's keywords (``steps``, ``scheduler``, ``eta``,
    ``guidance_scale``, ``negative_prompt``, ``height``, ``width``, ``max_batch``; the UNet
    backends' ``guidance_rescale``; FLUX's ``max_sequence_length``).
    """
    classes = _backend_classes()
    for pipe_cls, backend_cls in classes.items():
        if isinstance(pipe, pipe_cls):
            return backend_cls(pipe, prompt, **options)
    raise ValueError(
        f"no toycode backend for {type(pipe).__name__}; supported: "
        f"{', '.join(c.__name__ for c in classes)}"
    )


def flow_process(
    scheduler_config, steps: int, eta: float = 1.0, *, sigmas=None, mu: float | None = None
) -> Process:
    """Rectified flow on the grid of a fresh ``FlowMatchEulerDiscreteScheduler`` built from the
    pipeline's config: t_i = its sigmas, shifted by its fixed ``shift`` or, with
    ``use_dynamic_shifting``, by exp(μ) (t ↦ e^μ t / (e^μ t + 1 − t), FLUX and SD3.5); the
    model's time input 1000·t_i. ``sigmas``: the unshifted levels the pipeline passes, if any
    (FLUX: linspace(1, 1/T, T))."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
    check_range("steps", steps, 1, sched.config.num_train_timesteps)
    if sched.config.get("use_dynamic_shifting", False) and mu is None:
        raise ValueError("the scheduler's use_dynamic_shifting needs mu (the image-size shift)")
    sched.set_timesteps(steps, sigmas=sigmas, mu=mu)
    t = sched.sigmas.double()  # T + 1 levels, ending at 0
    return Process(1 - t, t, sched.timesteps.clone(), eta, "flow")


def sd3_process(scheduler_config, steps: int, eta: float = 1.0) -> Process:
    """SD3's flow grid: :func:`flow_process` with the scheduler's fixed shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if FlowMatchEulerDiscreteScheduler.from_config(scheduler_config).config.get(
        "use_dynamic_shifting", False
    ):
        raise ValueError("the scheduler's use_dynamic_shifting is not supported; use a fixed shift")
    return flow_process(scheduler_config, steps, eta)


class StableDiffusion3Backend:
    """A StableDiffusion3Pipeline behind the contract: an MMDiT velocity model on rectified flow.

    ``pipe.transformer`` predicts the flow velocity v̂ = dx/dt, read as (ε̂, x̂0) with
    ``to_eps_x0(·, "flow", ...)``; the grid is the pipeline's FlowMatchEuler grid, so N = 1 with
    η = 0 (the Euler step x + (t' − t) v̂) reproduces its latents. The prompt is embedded once by
    ``pipe.encode_prompt`` (two CLIP encoders and T5, or zeros where ``text_encoder_3`` is None).
    """

    prediction = "flow"

    def __init__(
        self,
        pipe,
        prompt: str,
        *,
        steps: int = 28,
        eta: float = 1.0,
        guidance_scale: float = 7.0,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        max_batch: int = 8,
        scheduler: str | None = None,
    ):
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        check_choice("scheduler", scheduler or "ddim", ("ddim",))  # DDIM(η) on the flow grid
        check_range("guidance_scale", guidance_scale, 0.0, None)
        check_range("max_batch", max_batch, 1, None)
        self.pipe, self.prompt, self.guidance_scale, self.max_batch = (
            pipe,
            prompt,
            guidance_scale,
            max_batch,
        )
        self.process = sd3_process(pipe.scheduler.config, steps, eta)
        tr = pipe.transformer
        self.device, self.dtype = tr.device, tr.dtype
        self.cfg = guidance_scale > 1.0
        f = pipe.vae_scale_factor
        self.height = height or tr.config.sample_size * f
        self.width = width or tr.config.sample_size * f
        self.shape = (tr.config.in_channels, self.height // f, self.width // f)
        with torch.no_grad():
            pos, neg, pooled, neg_pooled = pipe.encode_prompt(
                prompt,
                None,
                None,
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=self.cfg,
                negative_prompt=negative_prompt,
            )
        self.cond = torch.cat([neg, pos]) if self.cfg else pos
        self.pooled = torch.cat([neg_pooled, pooled]) if self.cfg else pooled
        self.name = f"sd3:{getattr(pipe, 'name_or_path', '') or type(pipe).__name__}"

    def prior_sample(self, n, generator=None):
        device = generator.device if generator is not None else self.device
        x = torch.randn((n, *self.shape), generator=generator, device=device, dtype=self.dtype)
        return x.to(self.device)

    def _output(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The classifier-free-guided velocity v̂ for latents x at time input t."""
        n = x.shape[0]
        rows = (
            torch.arange(2, device=self.device).repeat_interleave(n)
            if self.cfg
            else torch.zeros(n, dtype=torch.long, device=self.device)
        )
        xx = torch.cat([x, x]) if self.cfg else x
        out = self.pipe.transformer(
            hidden_states=xx,
            timestep=t.expand(len(xx)),
            encoder_hidden_states=self.cond[rows],
            pooled_projections=self.pooled[rows],
        ).sample
        if not self.cfg:
            return out
        uncond, text = out.chunk(2)
        return uncond + self.guidance_scale * (text - uncond)

    def predict(self, x, i, generator=None):
        """One guided transformer pass (in chunks of max_batch): v̂ read as (ε̂, x̂0)."""
        t = self.process.timesteps[i].to(self.device, self.dtype)
        out = torch.cat([self._output(c, t) for c in x.split(self.max_batch)])
        lv = self.process.level(i)
        return Prediction(*to_eps_x0(out, "flow", x, lv.alpha, lv.sigma))

    def decode(self, x0):
        """VAE decode (x̂0 / scaling + shift) to images in [0, 1], (n, 3, H, W) float32."""
        vae = self.pipe.vae
        scale, shift = vae.config.scaling_factor, vae.config.get("shift_factor") or 0.0
        out = [vae.decode(c / scale + shift).sample for c in x0.split(self.max_batch)]
        return (torch.cat(out).float() / 2 + 0.5).clamp(0, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (n, 3, H, W) to latents ((posterior mean − shift) · scaling)."""
        vae = self.pipe.vae
        scale, shift = vae.config.scaling_factor, vae.config.get("shift_factor") or 0.0
        x = (2 * images - 1).to(self.device, self.dtype)
        with torch.no_grad():
            lat = [vae.encode(c).latent_dist.mean for c in x.split(self.max_batch)]
        return (torch.cat(lat) - shift) * scale

    def noise_to(self, x0, i, generator=None):
        return self.process.noise_to(x0.to(self.device, self.dtype), i, generator)

    def __repr__(self):
        return (
            f"{type(self).__name__}({self.name}, T={self.process.num_steps}, "
            f"eta={self.process.eta}, cfg={self.guidance_scale})"
        )


def flux_shift(seq_len: int, scheduler_config) -> float:
    """FLUX's μ: the log-shift grows linearly in the number of image tokens, from ``base_shift``
    at ``base_image_seq_len`` (256) to ``max_shift`` at ``max_image_seq_len`` (4096) (Black
    Forest Labs' FLUX.1 reference sampler; SD3 paper §5.3.2 on resolution-dependent shifts)."""
    lo, hi = (
        scheduler_config.get("base_image_seq_len", 256),
        scheduler_config.get("max_image_seq_len", 4096),
    )
    a, b = scheduler_config.get("base_shift", 0.5), scheduler_config.get("max_shift", 1.15)
    slope = (b - a) / (hi - lo)
    return seq_len * slope + (a - slope * lo)


class FluxBackend(StableDiffusion3Backend):
    """A FluxPipeline behind the contract: a velocity transformer on rectified flow.

    The state is the unpacked latent (C, h, w); each call packs its 2×2 patches into
    (h/2 · w/2) tokens of 4C channels, as the pipeline does, and unpacks the velocity. The grid
    is the pipeline's: unshifted levels linspace(1, 1/T, T), shifted by μ = :func:`flux_shift`
    of the token count. FLUX.1 [dev] is guidance-distilled: ``guidance_scale`` is an input of
    the transformer (its guidance embedding), not classifier-free guidance, so one transformer
    call is one NFE; FLUX.1 [schnell] has no guidance input and ignores it. The prompt is
    embedded once by ``pipe.encode_prompt`` (CLIP's pooled output and T5's states, up to
    ``max_sequence_length`` tokens as in the pipeline). N = 1 with η = 0 reproduces the
    pipeline's latents.
    """

    def __init__(
        self,
        pipe,
        prompt: str,
        *,
        steps: int = 28,
        eta: float = 1.0,
        guidance_scale: float = 3.5,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        max_batch: int = 8,
        scheduler: str | None = None,
        max_sequence_length: int = 512,
    ):
        import numpy as np

        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        if negative_prompt is not None:
            raise ValueError("FLUX's guidance is distilled: it takes no negative prompt")
        check_choice("scheduler", scheduler or "ddim", ("ddim",))  # DDIM(η) on the flow grid
        check_range("guidance_scale", guidance_scale, 0.0, None)
        check_range("max_batch", max_batch, 1, None)
        self.pipe, self.prompt, self.guidance_scale, self.max_batch = (
            pipe,
            prompt,
            guidance_scale,
            max_batch,
        )
        tr = pipe.transformer
        self.device, self.dtype = tr.device, tr.dtype
        self.cfg = False
        f = pipe.vae_scale_factor
        self.height = height or pipe.default_sample_size * f
        self.width = width or pipe.default_sample_size * f
        if self.height % (2 * f) or self.width % (2 * f):
            raise ValueError(
                f"height and width must be multiples of {2 * f} (the VAE's factor "
                f"{f} times FLUX's 2×2 packing), got {self.height}×{self.width}"
            )
        h, w = self.height // f, self.width // f
        self.shape = (tr.config.in_channels // 4, h, w)
        config = pipe.scheduler.config
        check_range("steps", steps, 1, config.num_train_timesteps)
        levels = None if config.get("use_flow_sigmas", False) else np.linspace(1, 1 / steps, steps)
        self.process = flow_process(
            config, steps, eta, sigmas=levels, mu=flux_shift(h // 2 * (w // 2), config)
        )
        with torch.no_grad():
            self.cond, self.pooled, self.txt_ids = pipe.encode_prompt(
                prompt,
                None,
                device=self.device,
                num_images_per_prompt=1,
                max_sequence_length=max_sequence_length,
            )
        # each token's position (0, row, column) for the rotary embedding
        rows, cols = torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
        ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3)
        self.img_ids = ids.to(self.device, self.dtype)
        self.guidance = (
            torch.tensor([float(guidance_scale)], device=self.device)
            if tr.config.guidance_embeds
            else None
        )
        self.name = f"flux:{getattr(pipe, 'name_or_path', '') or type(pipe).__name__}"

    def _pack(self, x: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) → (n, h/2 · w/2, 4C): one token per 2×2 patch."""
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(n, (h // 2) * (w // 2), 4 * c)

    def _unpack(self, tokens: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        x = tokens.reshape(len(tokens), h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(len(tokens), c, h, w)

    def _output(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity v̂ for latents x at time input t (1000·t_i; the transformer takes t_i)."""
        n = x.shape[0]
        out = self.pipe.transformer(
            hidden_states=self._pack(x),
            timestep=t.expand(n) / 1000,
            guidance=None if self.guidance is None else self.guidance.expand(n),
            pooled_projections=self.pooled.expand(n, -1),
            encoder_hidden_states=self.cond.expand(n, -1, -1),
            txt_ids=self.txt_ids,
            img_ids=self.img_ids,
        ).sample
        return self._unpack(out)
