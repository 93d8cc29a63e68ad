"""Stable Diffusion pipelines built from configs with random weights: no download, ever.

``tiny_pipeline(kind)`` follows diffusers' own dummy components for SD 1.x, SD 2.x
(v-prediction), SDXL, SD3 and FLUX (a 2-step call takes ~0.03 s on a CPU);
``sd15_random_pipeline()`` has SD 1.5's architecture (UNet, VAE, CLIP ViT-L/14 text encoder)
with random weights — what a speed benchmark needs, since cost does not depend on weight values.
The tokenizers are built from a tiny local vocabulary (CLIP's from a temporary folder, T5's in
memory).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from ..utils.seeding import seeded

__all__ = [
    "TINY_KINDS",
    "tiny_pipeline",
    "sd15_random_pipeline",
    "tiny_tokenizer",
    "tiny_t5_tokenizer",
]


def tiny_tokenizer(max_length: int = 77):
    """A CLIPTokenizer over the letters a–z, from a temporary folder (no hub access)."""
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["<|startoftext|>", "<|endoftext|>"] + letters + [f"{c}</w>" for c in letters]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer.from_pretrained(
            tmp, model_max_length=max_length, local_files_only=True
        )


def tiny_t5_tokenizer(max_length: int = 512):
    """A T5 tokenizer over the letters a–z, in memory: a Unigram vocabulary of single letters,
    word-initial (▁x) ones preferred, after T5's <pad>, </s>, <unk> (no sentencepiece file)."""
    from transformers import T5TokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = (
        [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
        + [(c, -3.0) for c in letters]
        + [("▁" + c, -2.5) for c in letters]
    )
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=max_length)


TINY_KINDS = ("sd", "sd-v", "sdxl", "sd3", "flux")
"""What :func:`tiny_pipeline` builds: SD 1.x (ε-prediction), SD 2.x (v-prediction), SDXL, SD3,
FLUX."""


def _pipeline(unet, vae, text_encoder, tokenizer, *, scheduler):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def _tiny_unet(**extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=2,
        **extra,
    )


def _tiny_vae(latent_channels: int = 4, quant_conv: bool = True, **extra):
    """diffusers' dummy AutoencoderKL; SD3 and FLUX drop the quant convs and set their latents'
    shift and scale (``extra``)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=latent_channels,
        norm_num_groups=2,
        use_quant_conv=quant_conv,
        use_post_quant_conv=quant_conv,
        **extra,
    )


def _tiny_text_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=8,
        intermediate_size=16,
        layer_norm_eps=1e-5,
        num_attention_heads=2,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        **extra,
    )


def tiny_pipeline(kind: str = "sd", seed: int = 0):
    """A diffusers pipeline of ``kind`` with tiny random weights (32×32 latents of a 64×64 image).

    "sd": diffusers' dummy SD components with an ε-prediction DDIM scheduler; "sd-v": the same
    with ``prediction_type="v_prediction"`` (SD 2.x); "sdxl": a StableDiffusionXLPipeline with
    two CLIP text encoders (the second with a projection, 8 + 8 = 16-dim cross-attention) and a
    ``text_time`` UNet (6 time ids × 4 + 8 pooled = 32 added-embedding inputs), on the same DDIM
    scheduler so its latents compare with toycode's steps; "sd3": a StableDiffusion3Pipeline with
    a one-layer MMDiT, two projected CLIP encoders, no T5 (``text_encoder_3=None``) and a
    FlowMatchEuler scheduler with shift 3; "flux": a FluxPipeline with a one-double-, one-single-
    block transformer with a guidance embedding (FLUX.1 [dev]-like), a CLIP and a tiny T5
    encoder, a 16-channel VAE and FLUX's dynamically shifted FlowMatchEuler scheduler (its
    ``default_sample_size`` set to 32, so 64×64 images as for the other kinds).
    """
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from ..utils.checks import check_choice

    check_choice("kind", kind, TINY_KINDS)
    if kind == "sd3":
        return _tiny_sd3(seed)
    if kind == "flux":
        return _tiny_flux(seed)
    with seeded(seed):  # module initialisation reads the global generator
        if kind != "sdxl":
            unet = _tiny_unet(cross_attention_dim=8)
            torch.manual_seed(seed)
            vae = _tiny_vae()
            torch.manual_seed(seed)
            text = CLIPTextModel(_tiny_text_config())
            prediction = "v_prediction" if kind == "sd-v" else "epsilon"
            return _pipeline(unet, vae, text, tiny_tokenizer(), scheduler=_scheduler(prediction))
        unet = _tiny_unet(
            cross_attention_dim=16,
            addition_embed_type="text_time",
            addition_time_embed_dim=4,
            projection_class_embeddings_input_dim=32,
        )
        torch.manual_seed(seed)
        vae = _tiny_vae()
        torch.manual_seed(seed)
        text = CLIPTextModel(_tiny_text_config())
        torch.manual_seed(seed + 1)
        text_2 = CLIPTextModelWithProjection(_tiny_text_config(projection_dim=8))
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text,
        text_encoder_2=text_2,
        tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(),
        unet=unet,
        scheduler=_scheduler(),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_sd3(seed: int):
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    with seeded(seed):
        transformer = SD3Transformer2DModel(
            sample_size=32,
            patch_size=1,
            in_channels=4,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            caption_projection_dim=16,
            joint_attention_dim=16,
            pooled_projection_dim=16,
            out_channels=4,
        )
        torch.manual_seed(seed)
        vae = _tiny_vae(quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
        torch.manual_seed(seed)
        text = CLIPTextModelWithProjection(_tiny_text_config(projection_dim=8))
        torch.manual_seed(seed + 1)
        text_2 = CLIPTextModelWithProjection(_tiny_text_config(projection_dim=8))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text,
        tokenizer=tiny_tokenizer(),
        text_encoder_2=text_2,
        tokenizer_2=tiny_tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_flux(seed: int):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    t5_tokenizer = tiny_t5_tokenizer()
    with seeded(seed):  # diffusers' dummy FLUX transformer, 16 latent channels packed 2×2
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
            guidance_embeds=True,
        )
        torch.manual_seed(seed)
        text = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=2,
                hidden_size=32,
                intermediate_size=37,
                layer_norm_eps=1e-5,
                num_attention_heads=4,
                num_hidden_layers=2,
                pad_token_id=1,
                vocab_size=1000,
            )
        )
        torch.manual_seed(seed)
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=len(t5_tokenizer),
                d_model=32,
                d_kv=8,
                d_ff=37,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                dropout_rate=0.0,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        )
        torch.manual_seed(seed)
        vae = _tiny_vae(16, quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611)
    scheduler = FlowMatchEulerDiscreteScheduler(  # FLUX.1 [dev]'s scheduler config
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=4096,
        max_shift=1.15,
        shift=3.0,
        use_dynamic_shifting=True,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text,
        tokenizer=tiny_tokenizer(),
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipe.default_sample_size = 32  # the pipeline's 128 would mean 4096 image tokens
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd15_random_pipeline(seed: int = 0):
    """SD 1.5's architecture (860M-parameter UNet, 64×64 latents) with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with seeded(seed):  # module initialisation reads the global generator
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            cross_attention_dim=768,
            attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = AutoencoderKL(
            block_out_channels=[128, 256, 512, 512],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
        )
        text = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=768,
                intermediate_size=3072,
                num_attention_heads=12,
                num_hidden_layers=12,
                max_position_embeddings=77,
                vocab_size=49408,
                projection_dim=768,
                hidden_act="quick_gelu",
            )
        )
    return _pipeline(unet, vae, text, tiny_tokenizer(), scheduler=_scheduler())
