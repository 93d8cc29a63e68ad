"""A tiny autoencoder (diffusers ``AutoencoderTiny``, TAESD's architecture) distilled from the
Fashion-MNIST pipelines' trained VAE: the ``--score-decoder`` of ``tiny:fashion`` and
``tiny:fashion-sd3``.

TAESD (Ollin Boer Bohan, github.com/madebyollin/taesd) is a plain-convolution encoder and
decoder trained to reproduce a latent diffusion model's VAE. Here both halves are trained by
regression on the full VAE: the decoder on D_VAE(z / s) (images in [−1, 1]) over latents z, the
encoder on s · μ_VAE(x) over the 60,000 training images, s being the VAE's scaling factor. The
config keeps ``scaling_factor`` 1 and ``shift_factor`` 0, as SD's own TAESD does: it reads and
writes the diffusion models' scaled latents directly (both pipelines share them, the SD3 one
with shift 0), so :class:`~toycode.sd.score_decoder.ScoreDecoderValue` hands it x̂0 unchanged.

The decoder's latents: half posterior samples of training images, half convex mixes a z + (1 − a)
z' of two such samples (a ~ U(0, 1)), because CoDe scores Tweedie estimates x̂0 = E[z0 | z_t],
which at high noise are blends of latents rather than latents of images.

:func:`train_taesd` reproduces the committed folder (``python -m toycode.sd.fashion
train-taesd``); :func:`decoder_report` measures its reconstruction error against the full
decoder and the classifier's agreement between the two decodes
(``python -m toycode.sd.fashion taesd``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from ...utils.checks import check_count
from ...utils.seeding import seeded
from . import PIPELINE_DIR, TAESD_DIR
from .data import load_fashion, pad32
from .train import _cosine_lr

__all__ = ["build_taesd", "load_fashion_taesd", "train_taesd", "decoder_report", "format_report"]

log = logging.getLogger(__name__)


def build_taesd():
    """An AutoencoderTiny for 3×32×32 ↔ 4×8×8: 16 channels throughout, two downsamplings and
    two upsamplings (TAESD's factor 8 needs three), decoder blocks (2, 2, 0) so no residual
    block runs at full resolution (the full VAE's decoder is itself small: this keeps the tiny
    one cheaper)."""
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=(16, 16, 16),
        decoder_block_out_channels=(16, 16, 16),
        num_encoder_blocks=(1, 1, 1),
        num_decoder_blocks=(2, 2, 0),
        latent_channels=4,
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def load_fashion_taesd(path: str | Path = TAESD_DIR):
    """The committed AutoencoderTiny (eval mode, float32); a folder without one is a one-line
    ValueError."""
    from diffusers import AutoencoderTiny

    from ..score_decoder import check_score_decoder_path

    folder = check_score_decoder_path(path)
    return AutoencoderTiny.from_pretrained(str(folder), local_files_only=True).eval()


def _vae(pipeline_dir):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(pipeline_dir) / "vae", local_files_only=True).eval()


def _decoder_inputs(mean, std, idx, generator) -> torch.Tensor:
    """Scaled latents for the decoder: posterior samples, the second half mixed with a
    shuffled partner by a ~ U(0, 1) (blends, as Tweedie estimates at high noise are)."""
    z = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=generator)
    half = len(z) // 2
    a = torch.rand(len(z) - half, 1, 1, 1, generator=generator)
    partner = z[torch.randperm(len(z), generator=generator)[half:]]
    return torch.cat([z[:half], a * z[half:] + (1 - a) * partner])


def train_taesd(
    out: str | Path = TAESD_DIR,
    *,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    data_dir=None,
    pipeline_dir: str | Path = PIPELINE_DIR,
    log_every: int = 100,
):
    """Distil the pipelines' VAE into an AutoencoderTiny (one thread, fixed seed); save it.

    Each step: the decoder's MSE to the VAE decoder's images on :func:`_decoder_inputs`
    latents, plus the encoder's MSE to the scaled posterior means of a batch of images.
    """
    check_count("steps", steps)
    check_count("batch_size", batch_size)
    torch.set_num_threads(1)  # the weights then do not depend on the machine's core count
    x, _ = load_fashion("train", data_dir)
    vae = _vae(pipeline_dir)
    scale = vae.config.scaling_factor
    with torch.no_grad():
        posts = [vae.encode(pad32(c)).latent_dist for c in x.split(1000)]
    mean = torch.cat([p.mean for p in posts]) * scale
    std = torch.cat([p.std for p in posts]) * scale
    gen = torch.Generator().manual_seed(seed)
    with seeded(seed):
        tiny = build_taesd()
    opt = torch.optim.AdamW(tiny.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, steps))
    tiny.train()
    start = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        z = _decoder_inputs(mean, std, idx, gen)
        with torch.no_grad():
            target = vae.decode(z / scale).sample
        dec = nn.functional.mse_loss(tiny.decode(z).sample, target)
        enc = nn.functional.mse_loss(tiny.encode(pad32(x[idx])).latents, mean[idx])
        loss = dec + enc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            log.info(
                "taesd step %d/%d decoder %.5f encoder %.5f (%.0f s)",
                step,
                steps,
                dec.item(),
                enc.item(),
                time.time() - start,
            )
    tiny.eval()
    tiny.save_pretrained(out, safe_serialization=True)
    meta = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed}
    meta.update(seconds=round(time.time() - start), teacher=str(Path(pipeline_dir).name) + "/vae")
    Path(out, "toycode_training.json").write_text(json.dumps(meta, indent=1) + "\n")
    return tiny


def _decode_both(vae, tiny, z: torch.Tensor, batch: int = 500):
    """The full VAE's and the tiny decoder's images of scaled latents z, in [0, 1]."""
    scale = vae.config.scaling_factor
    full, fast = [], []
    with torch.no_grad():
        for c in z.split(batch):
            full.append((vae.decode(c / scale).sample / 2 + 0.5).clamp(0, 1))
            fast.append((tiny.decode(c).sample / 2 + 0.5).clamp(0, 1))
    return torch.cat(full), torch.cat(fast)


def _compare(vae, tiny, classifier, z: torch.Tensor) -> dict:
    """MSE and PSNR of the tiny decode against the full one, and the classifier's agreement
    (share of latents both decodes give the same label) with its binomial s.e."""
    from .rewards import classify

    full, fast = _decode_both(vae, tiny, z)
    mse = float((full - fast).pow(2).mean())
    agree = float((classify(classifier, full) == classify(classifier, fast)).double().mean())
    return {
        "n": len(z),
        "mse": mse,
        "psnr_db": 10 * math.log10(1 / mse),
        "agreement": agree,
        "agreement_se": math.sqrt(agree * (1 - agree) / len(z)),
    }


def tweedie_latents(pipe, n: int, *, steps: int = 10, seed: int = 0) -> torch.Tensor:
    """The Tweedie estimates x̂0 of n base trajectories of the generic prompt at every step of
    a T-step grid (n·T latents): what CoDe's block ends score. Through ``make_sd_backend``."""
    from ...core.sampler import sample_blockwise
    from .. import make_sd_backend
    from .prompts import GENERIC_PROMPT

    backend = make_sd_backend(
        pipe, GENERIC_PROMPT, steps=steps, eta=1.0, guidance_scale=1.0, max_batch=1024
    )
    x0s = []
    original = backend.predict

    def predict(x, i, generator=None):
        pred = original(x, i, generator)
        x0s.append(pred.x0.detach())
        return pred

    backend.predict = predict
    with torch.no_grad():
        sample_blockwise(
            backend,
            lambda im: im.new_zeros(len(im)).double(),
            n,
            generator=torch.Generator().manual_seed(seed),
        )
    return torch.cat(x0s)


def decoder_report(
    tiny=None, *, n_tweedie: int = 100, steps: int = 10, data_dir=None, classifier=None
) -> dict:
    """The tiny decoder against the full one: on the 10,000 test images' scaled posterior means,
    on the Tweedie estimates of both pipelines' generic-prompt trajectories (``n_tweedie``
    each, every step of a ``steps``-step grid), and the two decoders' per-image CPU time."""
    from ..backend import load_pipeline
    from . import SD3_DIR
    from .train import load_fashion_classifier

    check_count("n_tweedie", n_tweedie)
    check_count("steps", steps)
    tiny = tiny or load_fashion_taesd()
    classifier = classifier or load_fashion_classifier()
    vae = _vae(PIPELINE_DIR)
    x, _ = load_fashion("test", data_dir)
    with torch.no_grad():
        z = torch.cat([vae.encode(pad32(c)).latent_dist.mean for c in x.split(1000)])
    report = {"test": _compare(vae, tiny, classifier, z * vae.config.scaling_factor)}
    for name, folder in (("tweedie_sd", PIPELINE_DIR), ("tweedie_sd3", SD3_DIR)):
        lat = tweedie_latents(load_pipeline(folder, device="cpu"), n_tweedie, steps=steps)
        report[name] = _compare(vae, tiny, classifier, lat)
    report["seconds_per_1000"] = _timing(vae, tiny, z[:1000] * vae.config.scaling_factor)
    return report


def _timing(vae, tiny, z) -> dict:
    """CPU seconds to decode the 1,000 latents z with each decoder (best of three)."""
    out = {}
    for name, fn in (
        ("vae", lambda c: vae.decode(c / vae.config.scaling_factor)),
        ("taesd", tiny.decode),
    ):
        best = math.inf
        with torch.no_grad():
            for _ in range(3):
                start = time.perf_counter()
                for c in z.split(100):
                    fn(c)
                best = min(best, time.perf_counter() - start)
        out[name] = best
    return out


def format_report(r: dict) -> str:
    """The report as plain text, one line per latent set."""
    names = {
        "test": "test images' latents",
        "tweedie_sd": "Tweedie x̂0, tiny:fashion",
        "tweedie_sd3": "Tweedie x̂0, tiny:fashion-sd3",
    }
    lines = ["tiny decoder vs the full VAE decoder (images in [0, 1])"]
    for key, label in names.items():
        m = r[key]
        lines.append(
            f"  {label:<30} n {m['n']:>6}  MSE {m['mse']:.5f}  PSNR {m['psnr_db']:.1f} dB  "
            f"classifier agreement {m['agreement']:.4f} ± {m['agreement_se']:.4f}"
        )
    t = r["seconds_per_1000"]
    lines.append(
        f"  decode 1,000 latents on one CPU thread: VAE {t['vae']:.2f} s, tiny {t['taesd']:.2f} s"
    )
    return "\n".join(lines)
