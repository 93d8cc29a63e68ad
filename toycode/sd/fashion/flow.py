"""The flow-matching sibling: a ``StableDiffusion3Pipeline`` trained by rectified flow on the same
VAE latents and prompts as the DDPM pipeline.

Rectified flow (Liu et al. 2022, arXiv 2209.03003; SD3, Esser et al. 2024, arXiv 2403.03206):
x_t = (1 − t) x0 + t ε, and the transformer regresses the velocity dx_t/dt = ε − x0. The noise
levels t are drawn as diffusers' SD3 training script draws them (its default "logit_normal"
weighting, SD3 paper §3.1): u = sigmoid(n), n ~ N(0, 1), then the index ⌊1000 u⌋ into a
``FlowMatchEulerDiscreteScheduler``'s training grid, whose ``timesteps`` (1000·t) are the model's
time input and whose ``sigmas`` are t; the loss is the plain velocity MSE (the script's
``precondition_outputs=0``). The scheduler's ``shift`` is 1: SD3's shift 3 is for 1024² images,
and the paper's resolution rule (t ↦ αt / (1 + (α − 1)t), α = √(m/n)) gives 1 at small sizes.

The parts:

- the DDPM pipeline's trained ``AutoencoderKL``, unchanged, its config given ``shift_factor`` 0
  (SD3's pipeline decodes latents / scaling + shift), so both pipelines share their latents;
- two small ``CLIPTextModelWithProjection`` encoders over the same word-level tokenizer (a copy
  each) and a small ``T5EncoderModel`` over a word-level T5 tokenizer (a plain
  ``StableDiffusion3Pipeline.from_pretrained`` needs all three; with ``text_encoder_3=None`` it
  refuses the folder unless the caller passes ``text_encoder_3=None`` again), all trained
  with the transformer; the pipeline concatenates the CLIP states (16 tokens) and T5's
  (padded to its ``max_sequence_length``, 256);
- a small ``SD3Transformer2DModel`` (MMDiT) on the 4×8×8 latents, patch 1.

Prompts as for the DDPM pipeline (class templates, the generic prompt one time in five, "" one
time in ten for classifier-free guidance). :func:`train_flow` reproduces the committed folder on
one thread from a fixed seed: ``python -m toycode.sd.fashion train-flow``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from torch import nn

from ...utils.checks import check_count
from ...utils.seeding import seeded
from . import PIPELINE_DIR, SD3_DIR
from .data import load_fashion, pad32
from .prompts import (
    GENERIC_PROMPT,
    MAX_LENGTH,
    class_prompts,
    fashion_t5_tokenizer,
    fashion_tokenizer,
)
from .train import _cosine_lr, _prompt_table

__all__ = [
    "FLOW_SHIFT",
    "build_flow_text_encoder",
    "build_t5_encoder",
    "build_transformer",
    "build_flow_scheduler",
    "load_sd3_vae",
    "assemble_sd3",
    "flow_timesteps",
    "train_flow",
]

log = logging.getLogger(__name__)

FLOW_SHIFT = 1.0
"""The scheduler's fixed time shift (SD3 uses 3.0 at 1024²; see the module docstring)."""

TEXT_WIDTH = 32
"""Hidden size and projection size of each CLIP encoder: the transformer's context tokens are
the two concatenated (64 wide), its pooled input the two projections (64)."""


def build_flow_text_encoder(vocab_size: int):
    """A three-layer, 32-wide CLIPTextModelWithProjection (bos 0, eos = pad 1). SD3 reads the
    penultimate layer's states and the projected final eos state, so three layers leave two
    under the states the transformer sees."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=TEXT_WIDTH,
            intermediate_size=2 * TEXT_WIDTH,
            projection_dim=TEXT_WIDTH,
            num_attention_heads=2,
            num_hidden_layers=3,
            max_position_embeddings=MAX_LENGTH,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            layer_norm_eps=1e-5,
        )
    )


def build_t5_encoder(vocab_size: int):
    """A two-layer T5 encoder 64 wide (the transformer's context width), no dropout."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=2 * TEXT_WIDTH,
            d_kv=16,
            d_ff=4 * TEXT_WIDTH,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            dropout_rate=0.0,
            feed_forward_proj="gated-gelu",
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def build_transformer():
    """A four-layer MMDiT on 4×8×8 latents: patch 1 (64 image tokens), two heads of 32, context
    and pooled inputs 64 wide (the two CLIP encoders side by side)."""
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=4,
        attention_head_dim=32,
        num_attention_heads=2,
        joint_attention_dim=2 * TEXT_WIDTH,
        caption_projection_dim=64,
        pooled_projection_dim=2 * TEXT_WIDTH,
        pos_embed_max_size=8,
    )


def build_flow_scheduler():
    """The FlowMatchEulerDiscreteScheduler saved with the pipeline (1000 training levels)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=FLOW_SHIFT)


def load_sd3_vae(pipeline_dir: str | Path = PIPELINE_DIR):
    """The DDPM pipeline's trained VAE with ``shift_factor`` 0 in its config (SD3's pipeline
    needs one; 0 keeps the latents those of the DDPM pipeline, z · scaling_factor)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(Path(pipeline_dir) / "vae", local_files_only=True)
    vae.register_to_config(shift_factor=0.0)
    return vae.eval()


def assemble_sd3(vae, text_encoders: tuple, tokenizers: tuple, transformer):
    """The StableDiffusion3Pipeline of the parts: ``text_encoders`` (CLIP, CLIP, T5) and
    ``tokenizers`` (CLIP, T5); the second CLIP tokenizer is a copy of the first."""
    import copy

    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=build_flow_scheduler(),
        vae=vae,
        text_encoder=text_encoders[0],
        tokenizer=tokenizers[0],
        text_encoder_2=text_encoders[1],
        tokenizer_2=copy.deepcopy(tokenizers[0]),
        text_encoder_3=text_encoders[2],
        tokenizer_3=tokenizers[1],
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flow_timesteps(scheduler, n: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n training levels as diffusers' SD3 script draws them: logit-normal u, the index ⌊1000u⌋
    into the scheduler's training grid; returns (timesteps 1000·t, t)."""
    u = torch.sigmoid(torch.randn(n, generator=generator))
    index = (u * scheduler.config.num_train_timesteps).long().clamp(max=len(scheduler.sigmas) - 2)
    return scheduler.timesteps[index], scheduler.sigmas[index]


def _prompt_list() -> list[str]:
    """The prompt table's strings in :func:`~toycode.sd.fashion.train._prompt_table`'s order:
    "", each class's templates, the generic prompt."""
    return [""] + [p for c in range(10) for p in class_prompts(c)] + [GENERIC_PROMPT]


def _latent_posteriors(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior's mean and std of every image, once."""
    with torch.no_grad():
        posts = [vae.encode(pad32(c)).latent_dist for c in x.split(1000)]
    return torch.cat([p.mean for p in posts]), torch.cat([p.std for p in posts])


def _draw_rows(y, rows, n_ids, generator, *, p_uncond, p_generic):
    """Each image's prompt row: "" (row 0) with p_uncond, the generic prompt (last) with
    p_generic, else one of its class's templates."""
    n = len(y)
    u = torch.rand(n, generator=generator)
    template = torch.randint(0, rows.shape[1], (n,), generator=generator)
    row = rows[y, template]
    row = torch.where(u < p_generic + p_uncond, torch.full_like(row, n_ids - 1), row)
    return torch.where(u < p_uncond, torch.zeros_like(row), row)


def train_flow(
    out: str | Path = SD3_DIR,
    *,
    steps: int = 1800,
    batch_size: int = 64,
    lr: float = 1e-3,
    p_uncond: float = 0.1,
    p_generic: float = 0.2,
    seed: int = 0,
    data_dir=None,
    vae_dir: str | Path = PIPELINE_DIR,
    log_every: int = 100,
    save_every: int = 300,
):
    """Train the three text encoders and the transformer by rectified flow; save the pipeline.

    One thread, fixed seed. Every step embeds the whole prompt table (32 prompts) through
    ``pipe.encode_prompt``, the pipeline's own code, so training conditions exactly as sampling
    does; the folder is rewritten every ``save_every`` steps with its record.
    """
    check_count("steps", steps)
    check_count("batch_size", batch_size)
    torch.set_num_threads(1)  # the weights then do not depend on the machine's core count
    x, y = load_fashion("train", data_dir)
    vae = load_sd3_vae(vae_dir)
    mean, std = _latent_posteriors(vae, x)
    scale, shift = vae.config.scaling_factor, vae.config.shift_factor
    tokenizer = fashion_tokenizer()
    ids, rows = _prompt_table(tokenizer)
    rows = torch.tensor(rows)
    prompts = _prompt_list()
    gen = torch.Generator().manual_seed(seed)
    t5_tokenizer = fashion_t5_tokenizer()
    with seeded(seed):
        texts = (build_flow_text_encoder(len(tokenizer)), build_flow_text_encoder(len(tokenizer)))
        texts += (build_t5_encoder(len(t5_tokenizer)),)
        torch.manual_seed(seed + 1)
        transformer = build_transformer()
    pipe = assemble_sd3(vae, texts, (tokenizer, t5_tokenizer), transformer)
    sched = pipe.scheduler
    params = list(transformer.parameters()) + [p for t in texts for p in t.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, steps))
    _train_mode(pipe, True)
    meta = {"steps": steps, "batch_size": batch_size, "lr": lr, "p_uncond": p_uncond}
    meta.update(p_generic=p_generic, seed=seed, shift=FLOW_SHIFT, timesteps="logit_normal(0, 1)")
    start = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen) - shift) * scale
        row = _draw_rows(y[idx], rows, len(ids), gen, p_uncond=p_uncond, p_generic=p_generic)
        timestep, t = flow_timesteps(sched, batch_size, gen)
        eps = torch.randn(z0.shape, generator=gen)
        xt = (1 - t.view(-1, 1, 1, 1)) * z0 + t.view(-1, 1, 1, 1) * eps
        cond, pooled = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False)[
            ::2
        ]
        pred = transformer(
            hidden_states=xt,
            timestep=timestep,
            encoder_hidden_states=cond[row],
            pooled_projections=pooled[row],
        ).sample
        loss = nn.functional.mse_loss(pred, eps - z0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_sched.step()
        if step % log_every == 0 or step == steps - 1:
            log.info(
                "flow step %d/%d loss %.4f (%.0f s)", step, steps, loss.item(), time.time() - start
            )
        if (step + 1) % save_every == 0 or step == steps - 1:
            _save_sd3(out, pipe, {"steps_done": step + 1, **meta, "seconds": time.time() - start})
    return pipe


def _train_mode(pipe, on: bool) -> None:
    for module in (pipe.transformer, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
        module.train(on)


def _save_sd3(out, pipe, meta: dict) -> None:
    """The pipeline saved (float32 safetensors) with its training record."""
    _train_mode(pipe, False)
    pipe.save_pretrained(out, safe_serialization=True)
    Path(out, "toycode_training.json").write_text(json.dumps(meta, indent=1) + "\n")
    _train_mode(pipe, True)
