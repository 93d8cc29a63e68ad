"""The Stable Diffusion wing: a diffusers pipeline behind the same backend contract as the toys,
tiny random-weight pipelines for offline tests, and ``toycode sd``. Needs the ``sd`` extra.

``toycode.sd.make_sd_backend(pipe, prompt, steps=..., eta=..., guidance_scale=...)`` returns the
backend for the pipeline's class (the module :mod:`toycode.sd.backend` holds the classes)."""

from .backend import make_sd_backend

__all__ = ["make_sd_backend"]
