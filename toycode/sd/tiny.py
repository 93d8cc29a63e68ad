"""Stable Diffusion pipelines built from configs with random weights: no download, ever.

``tiny_pipeline()`` follows diffusers' own dummy components (a 2-step call takes ~0.03 s on a
CPU); ``sd15_random_pipeline()`` has SD 1.5's architecture (UNet, VAE, CLIP ViT-L/14 text
encoder) with random weights — what a speed benchmark needs, since cost does not depend on
weight values. Both tokenizers are built from a tiny local vocabulary.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from ..seeding import seeded

__all__ = ["tiny_pipeline", "sd15_random_pipeline", "tiny_tokenizer"]


def tiny_tokenizer(max_length: int = 77):
    """A CLIPTokenizer over the letters a–z, from a temporary folder (no hub access)."""
    from transformers import CLIPTokenizer
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["<|startoftext|>", "<|endoftext|>"] + letters + [f"{c}</w>" for c in letters]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=max_length,
                                             local_files_only=True)


def _pipeline(unet, vae, text_encoder, tokenizer, scheduler):
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder,
                                   tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _scheduler():
    from diffusers import DDIMScheduler
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def tiny_pipeline(seed: int = 0):
    """diffusers' dummy SD components (32×32 latents of a 64×64 image), random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    with seeded(seed):   # module initialisation reads the global generator
        unet = UNet2DConditionModel(
            block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
            norm_num_groups=2)
        torch.manual_seed(seed)
        vae = AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3,
                            down_block_types=["DownEncoderBlock2D"] * 2,
                            up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4,
                            norm_num_groups=2)
        torch.manual_seed(seed)
        text = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=8,
                                            intermediate_size=16, layer_norm_eps=1e-5,
                                            num_attention_heads=2, num_hidden_layers=2,
                                            pad_token_id=1, vocab_size=1000))
    return _pipeline(unet, vae, text, tiny_tokenizer(), _scheduler())


def sd15_random_pipeline(seed: int = 0):
    """SD 1.5's architecture (860M-parameter UNet, 64×64 latents) with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    with seeded(seed):   # module initialisation reads the global generator
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
            attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], in_channels=3, out_channels=3,
                            down_block_types=["DownEncoderBlock2D"] * 4,
                            up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4,
                            layers_per_block=2, sample_size=512)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072,
                                            num_attention_heads=12, num_hidden_layers=12,
                                            max_position_embeddings=77, vocab_size=49408,
                                            projection_dim=768, hidden_act="quick_gelu"))
    return _pipeline(unet, vae, text, tiny_tokenizer(), _scheduler())
