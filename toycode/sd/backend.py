"""Stable Diffusion (SD 1.x / 2.x) behind the backend contract: latents are the state.

The pipeline only lends its modules: ``pipe.unet`` for ε̂ (with classifier-free guidance, one
guided UNet call = one NFE), ``pipe.vae`` to decode x̂0 for the rewards and to encode references,
``pipe.text_encoder``/``pipe.tokenizer`` once to embed the prompt, and ``pipe.scheduler``'s
config for ᾱ and the timestep grid. The reverse steps are toycode's own DDIM(η) maths
(:class:`toycode.diffusion.Process`), identical to diffusers' DDIMScheduler.step for the
"leading" spacing SD uses, so N = 1 with η = 0 reproduces the pipeline's own latents. The
pipeline's scheduler is never mutated. Needs the ``sd`` extra (diffusers, transformers).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..backends.base import Prediction
from ..checks import check_choice, check_range
from ..diffusion import Process

__all__ = ["StableDiffusionBackend", "load_pipeline", "sd_process"]

log = logging.getLogger(__name__)


def load_pipeline(model: str | Path, *, device: str | None = None,
                  dtype: torch.dtype | None = None):
    """A StableDiffusionPipeline from a hub id or a local folder; fp16 on CUDA, float32 on CPU."""
    from diffusers import StableDiffusionPipeline
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(str(model), dtype=dtype,
                                                       safety_checker=None,
                                                       requires_safety_checker=False)
    except OSError as err:
        raise ValueError(f"could not load a Stable Diffusion pipeline from {str(model)!r}: "
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
        self.process = sd_process(pipe.scheduler.config, steps, scheduler, eta)
        self.device, self.dtype = pipe.unet.device, pipe.unet.dtype
        self.cfg = guidance_scale > 1.0
        with torch.no_grad():
            pos, neg = pipe.encode_prompt(prompt, self.device, 1, self.cfg, negative_prompt)
        self.cond = torch.cat([neg, pos]) if self.cfg else pos            # (1 or 2, L, D)
        f = pipe.vae_scale_factor
        h = height or pipe.unet.config.sample_size * f
        w = width or pipe.unet.config.sample_size * f
        self.shape = (pipe.unet.config.in_channels, h // f, w // f)
        self.name = f"sd:{getattr(pipe, 'name_or_path', '') or type(pipe).__name__}"

    def prior_sample(self, n, generator=None):
        # drawn like the pipeline's randn_tensor: on the generator's device, then moved
        device = generator.device if generator is not None else self.device
        x = torch.randn((n, *self.shape), generator=generator, device=device, dtype=self.dtype)
        return x.to(self.device) * self.pipe.scheduler.init_noise_sigma

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not self.cfg:
            return self.pipe.unet(x, t, encoder_hidden_states=self.cond.expand(n, -1, -1)).sample
        cond = self.cond.repeat_interleave(n, 0)                           # [neg]*n + [pos]*n
        out = self.pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=cond).sample
        uncond, text = out.chunk(2)
        return uncond + self.guidance_scale * (text - uncond)

    def predict(self, x, i, generator=None):
        t = self.process.timesteps[i].to(self.device)
        eps = torch.cat([self._eps(c, t) for c in x.split(self.max_batch)])
        return Prediction(eps, self.process.tweedie(x, i, eps))

    def decode(self, x0):
        """VAE decode to images in [0, 1], (n, 3, H, W) float32, in chunks of max_batch."""
        vae = self.pipe.vae
        out = [vae.decode(c / vae.config.scaling_factor).sample for c in x0.split(self.max_batch)]
        return (torch.cat(out).float() / 2 + 0.5).clamp(0, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (n, 3, H, W) to latents (the VAE posterior mean, scaled)."""
        vae = self.pipe.vae
        x = (2 * images - 1).to(self.device, self.dtype)
        with torch.no_grad():
            lat = [vae.encode(c).latent_dist.mean for c in x.split(self.max_batch)]
        return torch.cat(lat) * vae.config.scaling_factor

    def noise_to(self, x0, i, generator=None):
        return self.process.noise_to(x0.to(self.device, self.dtype), i, generator)

    def __repr__(self):
        return (f"StableDiffusionBackend({self.name}, T={self.process.num_steps}, "
                f"eta={self.process.eta}, "
                f"cfg={self.guidance_scale})")
