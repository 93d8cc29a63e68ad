"""Stable Diffusion (SD 1.x / 2.x, SDXL, SD3) behind the backend contract: latents are the state.

:func:`make_backend` picks the backend for a pipeline's class. The pipeline only lends its
modules: ``pipe.unet`` for ε̂ (its ε, v or x̂0 output converted by the scheduler's
``prediction_type``; with classifier-free guidance, one guided UNet call = one NFE),
``pipe.vae`` to decode x̂0 for the rewards and to encode references, the text encoders once to
embed the prompt, and ``pipe.scheduler``'s config for ᾱ and the timestep grid. The reverse
steps are toycode's own DDIM(η) maths (:class:`toycode.diffusion.Process`), identical to
diffusers' DDIMScheduler.step for the "leading" spacing SD uses, so N = 1 with η = 0
reproduces the pipeline's own latents. The pipeline's scheduler is never mutated. Needs the
``sd`` extra (diffusers, transformers).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from ..backends.base import Prediction
from ..checks import check_choice, check_range
from ..diffusion import Process, to_eps_x0

__all__ = ["StableDiffusionBackend", "StableDiffusionXLBackend", "StableDiffusion3Backend",
           "make_backend", "load_pipeline", "sd_process", "sd3_process", "UNET_PREDICTIONS"]

UNET_PREDICTIONS = ("epsilon", "v_prediction", "sample")
"""The scheduler ``prediction_type`` values the UNet backends read (SD 1.x: ε, SD 2.x: v)."""

log = logging.getLogger(__name__)


def load_pipeline(model: str | Path, *, device: str | None = None,
                  dtype: torch.dtype | None = None):
    """A diffusers pipeline from a hub id, a local folder, or ``tiny:KIND`` (a random-weight
    :func:`~toycode.sd.tiny.tiny_pipeline`, offline); fp16 on CUDA, float32 on CPU.

    The class comes from the folder's ``model_index.json`` (SD 1.x/2.x, SDXL, ...); whether
    toycode can sample it is :func:`make_backend`'s question.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    if str(model).startswith("tiny:"):
        from .tiny import tiny_pipeline
        return tiny_pipeline(str(model)[len("tiny:"):]).to(device, dtype)
    from diffusers import DiffusionPipeline
    try:
        kind = DiffusionPipeline.load_config(str(model)).get("_class_name", "")
        extra = ({"safety_checker": None, "requires_safety_checker": False}
                 if kind == "StableDiffusionPipeline" else {})
        pipe = DiffusionPipeline.from_pretrained(str(model), dtype=dtype, **extra)
    except (OSError, ValueError) as err:
        raise ValueError(f"could not load a diffusers pipeline from {str(model)!r}: "
                         f"{str(err).splitlines()[0]}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def sd_process(scheduler_config, steps: int, scheduler: str = "ddim", eta: float = 1.0) -> Process:
    """The pipeline's ᾱ and its DDIM/DDPM timestep grid (from a fresh scheduler, not the pipe's)."""
    from diffusers import DDIMScheduler, DDPMScheduler
    check_choice("scheduler", scheduler, ("ddim", "ddpm"))
    cls = DDIMScheduler if scheduler == "ddim" else DDPMScheduler
    sched = cls.from_config(scheduler_config)
    check_range("steps", steps, 1, sched.config.num_train_timesteps)
    if sched.config.get("clip_sample", False) or sched.config.get("thresholding", False):
        log.warning("the scheduler clips or thresholds x̂0; toycode's steps do neither")
    sched.set_timesteps(steps)
    final = 1.0
    if scheduler == "ddim" and not sched.config.set_alpha_to_one:
        final = float(sched.alphas_cumprod[0])
    return Process.vp(sched.alphas_cumprod.double(), sched.timesteps.long(),
                      eta=1.0 if scheduler == "ddpm" else eta, final_abar=final)


class StableDiffusionBackend:
    """A loaded StableDiffusionPipeline, one prompt, a timestep grid: the toycode contract.

    The UNet's output is read by the scheduler's ``prediction_type`` (ε for SD 1.x, v for SD
    2.x, or x̂0) and converted to (ε̂, x̂0) at the grid's noise level; CFG combines the raw outputs
    first, as the pipeline does (the conversion is linear, so the order is immaterial).

    ``max_batch`` bounds how many latents go through the UNet (twice that with CFG) and the VAE
    at once, so any number of candidates fits in memory.
    """

    def __init__(self, pipe, prompt: str, *, steps: int = 50, scheduler: str = "ddim",
                 eta: float = 1.0, guidance_scale: float = 7.5, negative_prompt: str | None = None,
                 height: int | None = None, width: int | None = None, max_batch: int = 8):
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        check_range("guidance_scale", guidance_scale, 0.0, None)
        check_range("max_batch", max_batch, 1, None)
        self.pipe, self.prompt, self.guidance_scale, self.max_batch = (
            pipe, prompt, guidance_scale, max_batch)
        self.prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction not in UNET_PREDICTIONS:
            raise ValueError(f"the scheduler's prediction_type must be one of "
                             f"{', '.join(UNET_PREDICTIONS)}, got {self.prediction!r}")
        self.process = sd_process(pipe.scheduler.config, steps, scheduler, eta)
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
        # drawn like the pipeline's randn_tensor: on the generator's device, then moved
        device = generator.device if generator is not None else self.device
        x = torch.randn((n, *self.shape), generator=generator, device=device, dtype=self.dtype)
        return x.to(self.device) * self.pipe.scheduler.init_noise_sigma

    def _unet(self, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The raw UNet output for latents x, row k conditioned on prompt row ``rows[k]``."""
        return self.pipe.unet(x, t, encoder_hidden_states=self.cond[rows]).sample

    def _output(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The classifier-free-guided model output (ε̂, v̂ or x̂0, as the scheduler says)."""
        n = x.shape[0]
        if not self.cfg:
            return self._unet(x, t, torch.zeros(n, dtype=torch.long, device=self.device))
        rows = torch.arange(2, device=self.device).repeat_interleave(n)   # [neg]*n + [pos]*n
        uncond, text = self._unet(torch.cat([x, x]), t, rows).chunk(2)
        return uncond + self.guidance_scale * (text - uncond)

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
        out = [vae.decode(c.to(vae.dtype) / vae.config.scaling_factor).sample
               for c in x0.split(self.max_batch)]
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
        return (f"{type(self).__name__}({self.name}, T={self.process.num_steps}, "
                f"eta={self.process.eta}, "
                f"cfg={self.guidance_scale})")


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
            prompt, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=self.cfg, negative_prompt=negative_prompt)
        te2 = getattr(pipe, "text_encoder_2", None)
        proj = int(pooled.shape[-1]) if te2 is None else te2.config.projection_dim
        ids = [self.height, self.width, 0, 0, self.height, self.width]
        expected = pipe.unet.add_embedding.linear_1.in_features
        if pipe.unet.config.addition_time_embed_dim * len(ids) + proj != expected:
            raise ValueError(f"the UNet expects {expected} added-embedding inputs, the time ids "
                             f"and pooled text give "
                             f"{pipe.unet.config.addition_time_embed_dim * len(ids) + proj}")
        time_ids = torch.tensor([ids], dtype=pos.dtype, device=self.device)
        self.cond = torch.cat([neg, pos]) if self.cfg else pos
        self.pooled = torch.cat([neg_pooled, pooled]) if self.cfg else pooled
        self.time_ids = time_ids.expand(len(self.cond), -1)

    def _unet(self, x, t, rows):
        added = {"text_embeds": self.pooled[rows], "time_ids": self.time_ids[rows]}
        return self.pipe.unet(x, t, encoder_hidden_states=self.cond[rows],
                              added_cond_kwargs=added).sample

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
        StableDiffusion3Pipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )
    return {StableDiffusionXLPipeline: StableDiffusionXLBackend,
            StableDiffusionPipeline: StableDiffusionBackend,
            StableDiffusion3Pipeline: StableDiffusion3Backend}


def make_backend(pipe, prompt: str, **options):
    """The toycode backend for a loaded diffusers ``pipe`` and one prompt.

    StableDiffusionPipeline (SD 1.x, SD 2.x with ε or v prediction) →
    :class:`StableDiffusionBackend`; StableDiffusionXLPipeline → :class:`StableDiffusionXLBackend`;
    StableDiffusion3Pipeline → :class:`StableDiffusion3Backend` (``scheduler`` "ddim" only: the
    DDIM(η) step on the pipeline's flow grid).
    ``options`` are the backend's keywords (``steps``, ``scheduler``, ``eta``,
    ``guidance_scale``, ``negative_prompt``, ``height``, ``width``, ``max_batch``).
    """
    classes = _backend_classes()
    for pipe_cls, backend_cls in classes.items():
        if isinstance(pipe, pipe_cls):
            return backend_cls(pipe, prompt, **options)
    raise ValueError(f"no toycode backend for {type(pipe).__name__}; supported: "
                     f"{', '.join(c.__name__ for c in classes)}")


def sd3_process(scheduler_config, steps: int, eta: float = 1.0) -> Process:
    """Rectified flow on the grid of a fresh ``FlowMatchEulerDiscreteScheduler`` built from the
    pipeline's config (its shift included): t_i = its sigmas, the model's time input 1000·t_i."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    sched = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
    check_range("steps", steps, 1, sched.config.num_train_timesteps)
    if sched.config.get("use_dynamic_shifting", False):
        raise ValueError("the scheduler's use_dynamic_shifting is not supported; use a fixed shift")
    sched.set_timesteps(steps)
    t = sched.sigmas.double()                                    # T + 1 levels, ending at 0
    return Process(1 - t, t, sched.timesteps.clone(), eta, "flow")


class StableDiffusion3Backend:
    """A StableDiffusion3Pipeline behind the contract: an MMDiT velocity model on rectified flow.

    ``pipe.transformer`` predicts the flow velocity v̂ = dx/dt, read as (ε̂, x̂0) with
    ``to_eps_x0(·, "flow", ...)``; the grid is the pipeline's FlowMatchEuler grid, so N = 1 with
    η = 0 (the Euler step x + (t' − t) v̂) reproduces its latents. The prompt is embedded once by
    ``pipe.encode_prompt`` (two CLIP encoders and T5, or zeros where ``text_encoder_3`` is None).
    """

    prediction = "flow"

    def __init__(self, pipe, prompt: str, *, steps: int = 28, eta: float = 1.0,
                 guidance_scale: float = 7.0, negative_prompt: str | None = None,
                 height: int | None = None, width: int | None = None, max_batch: int = 8,
                 scheduler: str = "ddim"):
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        check_choice("scheduler", scheduler, ("ddim",))   # DDIM(η) on the flow grid
        check_range("guidance_scale", guidance_scale, 0.0, None)
        check_range("max_batch", max_batch, 1, None)
        self.pipe, self.prompt, self.guidance_scale, self.max_batch = (
            pipe, prompt, guidance_scale, max_batch)
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
                prompt, None, None, device=self.device, num_images_per_prompt=1,
                do_classifier_free_guidance=self.cfg, negative_prompt=negative_prompt)
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
        rows = (torch.arange(2, device=self.device).repeat_interleave(n) if self.cfg
                else torch.zeros(n, dtype=torch.long, device=self.device))
        xx = torch.cat([x, x]) if self.cfg else x
        out = self.pipe.transformer(hidden_states=xx, timestep=t.expand(len(xx)),
                                    encoder_hidden_states=self.cond[rows],
                                    pooled_projections=self.pooled[rows]).sample
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
        return (f"StableDiffusion3Backend({self.name}, T={self.process.num_steps}, "
                f"eta={self.process.eta}, cfg={self.guidance_scale})")
