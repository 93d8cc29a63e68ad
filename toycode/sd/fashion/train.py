"""Training the Fashion-MNIST text-to-image pipeline: VAE, classifier, then text encoder + UNet.

Everything runs on one CPU thread (so the weights do not depend on the core count) from fixed
seeds; :func:`train_all` reproduces the committed folder. The stages:

1. :func:`train_vae`: an ``AutoencoderKL`` on the 60,000 training images padded to 32×32 and
   repeated to three channels (reconstruction MSE plus a small KL term, as SD's VAE); its latent
   scaling factor is measured on the data (1 / std of the latents) and written into its config.
2. :func:`train_classifier`: the reward and the prompt-fidelity judge, on the same images.
3. :func:`train_unet`: a ``CLIPTextModel`` and a cross-attention ``UNet2DConditionModel``
   trained together on DDPM's ε-loss over the VAE's latents, prompts drawn from the class
   templates and the generic prompt, and dropped to "" one time in ten so classifier-free
   guidance works; saved as a ``StableDiffusionPipeline`` with a DDIM scheduler config.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from ...training.classifier import Classifier, fit_classifier
from ...utils.io import atomic_save
from ...utils.seeding import seeded
from . import CLASSIFIER_PATH, PIPELINE_DIR
from .data import load_fashion, pad32
from .prompts import GENERIC_PROMPT, MAX_LENGTH, class_prompts, fashion_tokenizer

__all__ = [
    "build_vae",
    "build_text_encoder",
    "build_unet",
    "build_scheduler",
    "assemble",
    "train_vae",
    "train_classifier",
    "train_unet",
    "train_all",
    "load_fashion_classifier",
]

log = logging.getLogger(__name__)

CLASSIFIER_WIDTHS = (16, 32)

# the noise schedule of SD 1.x (scaled-linear β over 1000 steps), shared by training and the
# saved DDIM config, so the pipeline samples the process the UNet was trained on
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def build_vae():
    """A small AutoencoderKL: 3×32×32 images ↔ 4×8×8 latents (three blocks of 8, 16, 32
    channels; no mid-block attention, which buys nothing at 8×8 and costs CPU time)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[8, 16, 32],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        mid_block_add_attention=False,
    )


def build_text_encoder(vocab_size: int):
    """A two-layer, 32-wide CLIPTextModel over the word-level vocabulary (bos 0, eos = pad 1)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=2,
            max_position_embeddings=MAX_LENGTH,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            layer_norm_eps=1e-5,
        )
    )


def build_unet():
    """A UNet2DConditionModel on 4×8×8 latents: 32 and 64 channels, cross-attention to the
    32-wide text states in every block."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 2,
        up_block_types=("CrossAttnUpBlock2D",) * 2,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def build_scheduler():
    """The DDIM scheduler config saved with the pipeline (SD 1.x's, on the training schedule)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        **SCHEDULE,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def assemble(vae, text_encoder, tokenizer, unet):
    """The StableDiffusionPipeline of the trained parts (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _cosine_lr(step: int, steps: int, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to zero: the factor on the base learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_vae(
    out: str | Path,
    *,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 2e-3,
    kl_weight: float = 1e-4,
    seed: int = 0,
    data_dir=None,
    log_every: int = 100,
):
    """Train the VAE (MSE + ``kl_weight`` · mean KL), measure its scaling factor, save it."""
    x, _ = load_fashion("train", data_dir)
    gen = torch.Generator().manual_seed(seed)
    with seeded(seed):
        vae = build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, steps))
    vae.train()
    start = time.time()
    for step in range(steps):
        batch = pad32(x[torch.randint(0, len(x), (batch_size,), generator=gen)])
        post = vae.encode(batch).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        mse = nn.functional.mse_loss(rec, batch)
        kl = 0.5 * (post.mean**2 + post.var - 1 - post.logvar).mean()
        loss = mse + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            log.info(
                "vae step %d/%d mse %.4f kl %.3f (%.0f s)",
                step,
                steps,
                mse.item(),
                kl.item(),
                time.time() - start,
            )
    vae.eval()
    # SD's recipe: scale the latents to unit variance over the data (posterior samples)
    with torch.no_grad():
        lat = torch.cat(
            [vae.encode(pad32(c)).latent_dist.sample(generator=gen) for c in x[:5000].split(500)]
        )
    vae.register_to_config(scaling_factor=float(1 / lat.std()))
    log.info("vae scaling factor %.4f", vae.config.scaling_factor)
    vae.save_pretrained(out)
    return vae


def load_fashion_classifier(path: str | Path = CLASSIFIER_PATH) -> Classifier:
    """The committed Fashion-MNIST classifier (eval mode) on (n, 1, 28, 28) images in [−1, 1]."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("kind") != "fashion-classifier":
        raise ValueError(f"{path} is not a Fashion-MNIST classifier checkpoint")
    model = Classifier(tuple(ckpt["widths"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def train_classifier(
    out: str | Path = CLASSIFIER_PATH,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    data_dir=None,
    progress: bool = False,
) -> Classifier:
    """Train the judge (the MNIST wing's CNN, narrower) on the 60,000 training images."""
    x, y = load_fashion("train", data_dir)
    with seeded(seed):  # initialisation and dropout read the global generator
        model = fit_classifier(
            Classifier(CLASSIFIER_WIDTHS),
            x,
            y,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            progress=progress,
        )
    atomic_save(
        {
            "kind": "fashion-classifier",
            "model": model.state_dict(),
            "widths": list(CLASSIFIER_WIDTHS),
            "seed": seed,
            "data": "Fashion-MNIST train (60,000)",
            "train": {"epochs": epochs, "lr": lr, "batch_size": batch_size},
        },
        out,
    )
    return model


def _prompt_table(tokenizer) -> tuple[torch.Tensor, list[list[int]]]:
    """Token ids of every training prompt (row 0: "", the dropped prompt; last: the generic
    one) and, per class, the rows of its templates."""
    prompts = [""]
    rows = []
    for c in range(10):
        rows.append(list(range(len(prompts), len(prompts) + len(class_prompts(c)))))
        prompts += class_prompts(c)
    prompts.append(GENERIC_PROMPT)
    ids = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return ids, rows


def train_unet(
    out: str | Path,
    vae_dir: str | Path,
    *,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 1e-3,
    p_uncond: float = 0.1,
    p_generic: float = 0.2,
    seed: int = 0,
    data_dir=None,
    log_every: int = 100,
    save_every: int = 500,
):
    """Train the text encoder and UNet together on the VAE's latents; save the pipeline.

    Each image's prompt is "" with probability ``p_uncond`` (classifier-free guidance's
    unconditional branch), the generic prompt with probability ``p_generic``, else one of its
    class's templates at random. The pipeline folder is rewritten every ``save_every`` steps.
    """
    from diffusers import AutoencoderKL, DDPMScheduler

    x, y = load_fashion("train", data_dir)
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    with torch.no_grad():  # the posterior of every training image, once
        posts = [vae.encode(pad32(c)).latent_dist for c in x.split(1000)]
    mean = torch.cat([p.mean for p in posts])
    std = torch.cat([p.std for p in posts])
    scale = vae.config.scaling_factor
    tokenizer = fashion_tokenizer()
    ids, rows = _prompt_table(tokenizer)
    rows = torch.tensor(rows)
    abar = DDPMScheduler(**SCHEDULE).alphas_cumprod
    gen = torch.Generator().manual_seed(seed)
    with seeded(seed):
        text = build_text_encoder(len(tokenizer))
        torch.manual_seed(seed + 1)
        unet = build_unet()
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, steps))
    unet.train()
    text.train()
    meta = {"steps": steps, "batch_size": batch_size, "lr": lr}  # what the saved folder records
    meta.update(p_uncond=p_uncond, p_generic=p_generic, seed=seed)
    start = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        u = torch.rand(batch_size, generator=gen)
        template = torch.randint(0, rows.shape[1], (batch_size,), generator=gen)
        row = rows[y[idx], template]
        row = torch.where(u < p_generic + p_uncond, torch.full_like(row, len(ids) - 1), row)
        row = torch.where(u < p_uncond, torch.zeros_like(row), row)
        t = torch.randint(0, len(abar), (batch_size,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        cond = text(ids[row]).last_hidden_state
        loss = nn.functional.mse_loss(unet(zt, t, encoder_hidden_states=cond).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            log.info(
                "unet step %d/%d loss %.4f (%.0f s)", step, steps, loss.item(), time.time() - start
            )
        if (step + 1) % save_every == 0 or step == steps - 1:
            _save(out, (vae, text, tokenizer, unet), {"steps_done": step + 1, **meta})
    return unet


def _save(out, modules: tuple, meta: dict) -> None:
    """The pipeline of ``modules`` (VAE, text encoder, tokenizer, UNet) saved with its record."""
    vae, text, tokenizer, unet = modules
    unet.eval()
    text.eval()
    pipe = assemble(vae, text, tokenizer, unet)
    pipe.save_pretrained(out, safe_serialization=True)
    Path(out, "toycode_training.json").write_text(json.dumps(meta, indent=1) + "\n")
    unet.train()
    text.train()


def train_all(
    out: str | Path = PIPELINE_DIR,
    classifier: str | Path = CLASSIFIER_PATH,
    *,
    vae_steps: int = 1500,
    unet_steps: int = 3000,
    classifier_epochs: int = 3,
    seed: int = 0,
    data_dir=None,
    work_dir: str | Path | None = None,
) -> None:
    """Every stage in turn, on one thread: VAE, classifier, text encoder + UNet."""
    torch.set_num_threads(1)  # the weights then do not depend on the machine's core count
    work = Path(work_dir) if work_dir else Path(out).parent / "fashion-vae"
    start = time.time()
    train_vae(work, steps=vae_steps, seed=seed, data_dir=data_dir)
    log.info("vae done in %.0f s", time.time() - start)
    train_classifier(classifier, epochs=classifier_epochs, seed=seed, data_dir=data_dir)
    log.info("classifier done in %.0f s", time.time() - start)
    train_unet(out, work, steps=unet_steps, seed=seed, data_dir=data_dir)
    log.info("unet done in %.0f s", time.time() - start)
