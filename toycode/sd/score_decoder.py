"""A cheap decoder for scoring candidates: TAESD (a diffusers ``AutoencoderTiny``) at block ends.

CoDe scores its N candidates at every block end by the reward of the decoded Tweedie estimate,
r(decode(x̂0)), and on SD 1.5 those N full-VAE decodes per block end are a large share of its
cost (an estimated ~30 %). :class:`ScoreDecoderValue` is the Tweedie value with the decode done
by a small distilled decoder (TAESD, Ollin Boer Bohan, github.com/madebyollin/taesd): an
*approximate* value, r(TAESD(x̂0)) in place of r(VAE(x̂0)), so the ranking of candidates can
change where the two decodes differ. Nothing else changes: the
sampler's one loop is untouched, and at the clean end it still decodes the finished candidates
with the full VAE (they are scored exactly and the kept one is the output). Per image, the
(⌈T/B⌉ − 1)·N interior block-end decodes move from the VAE to TAESD; best-of-N (one block) has
none and is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.values import TweedieValue

__all__ = ["ScoreDecoderValue", "load_score_decoder", "check_score_decoder_path"]


def check_score_decoder_path(path: str | Path) -> Path:
    """The folder of a saved ``AutoencoderTiny`` (``config.json`` and weights), or a one-line
    error (checked before any model is loaded, so a typo costs nothing). ``tiny:fashion-taesd``
    names the committed one distilled from the Fashion-MNIST pipelines' VAE
    (:mod:`toycode.sd.fashion.taesd`)."""
    from .fashion import TAESD_DIR, TAESD_NAME

    folder = TAESD_DIR if str(path) == TAESD_NAME else Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"score decoder {str(path)!r} is not a folder holding a saved diffusers "
            f"AutoencoderTiny (config.json and weights, e.g. a local copy of "
            f"madebyollin/taesd)"
        )
    return folder


def load_score_decoder(path: str | Path, pipe):
    """The ``AutoencoderTiny`` saved at ``path``, on the pipeline's device and dtype, checked to
    decode the pipeline's latents to images of the pipeline's size."""
    from diffusers import AutoencoderTiny

    folder = check_score_decoder_path(path)
    kind = AutoencoderTiny.load_config(str(folder)).get("_class_name")
    if kind != "AutoencoderTiny":
        raise ValueError(
            f"score decoder {str(path)!r} holds {kind} weights, not an AutoencoderTiny"
        )
    model = getattr(pipe, "unet", None) or pipe.transformer
    decoder = (
        AutoencoderTiny.from_pretrained(str(folder), local_files_only=True, dtype=model.dtype)
        .to(model.device)
        .eval()
    )
    channels = model.config.in_channels
    if decoder.config.latent_channels != channels:
        raise ValueError(
            f"score decoder {str(path)!r} reads {decoder.config.latent_channels}-"
            f"channel latents; the pipeline's have {channels}"
        )
    with torch.no_grad():  # one 8×8 decode: does it upsample by the pipeline's VAE factor?
        probe = decoder.decode(
            torch.zeros(1, channels, 8, 8, device=model.device, dtype=model.dtype)
        ).sample
    if probe.shape[-1] != 8 * pipe.vae_scale_factor:
        raise ValueError(
            f"score decoder {str(path)!r} upsamples latents {probe.shape[-1] // 8}×, "
            f"the pipeline's VAE {pipe.vae_scale_factor}×"
        )
    return decoder


class ScoreDecoderValue(TweedieValue):
    """V(x_t) ≈ r(TAESD(x̂0(x_t))): CoDe's Tweedie value, decoded by a cheap ``decoder``.

    Latents map to the decoder's input as the pipelines map them to their VAE's,
    x̂0 / scaling_factor + shift_factor (TAESD for SD 1.x/XL: 1 and 0, so it reads the UNet's
    latents as they are), in chunks of the backend's ``max_batch``; images come back in [0, 1].
    """

    def __init__(self, reward, decoder):
        super().__init__(reward)
        self.decoder = decoder

    def decode(self, x0: torch.Tensor, max_batch: int = 8) -> torch.Tensor:
        cfg = self.decoder.config
        shift = cfg.get("shift_factor") or 0.0
        out = [
            self.decoder.decode(c.to(self.decoder.dtype) / cfg.scaling_factor + shift).sample
            for c in x0.split(max_batch)
        ]
        return (torch.cat(out).float() / 2 + 0.5).clamp(0, 1)

    def __call__(self, ledger, backend, x, x0, i: int, generator=None) -> torch.Tensor:
        images = self.decode(x0, getattr(backend, "max_batch", 8))
        return ledger.reward(self.reward, images).double()
