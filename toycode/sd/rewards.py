"""Rewards on images (n, C, H, W) for the Stable Diffusion wing: CLIP similarity, PickScore, the
LAION aesthetic score (``Compressibility``, shared with the MNIST wing, is in
:mod:`toycode.utils.images`).

Each is a callable returning one float per image with a ``differentiable`` flag. CLIP models
load with transformers from a hub id or a local folder (``local_files_only`` when offline);
nothing is downloaded by toycode's tests, which build tiny CLIP models from configs.

    ClipImageSimilarity(ref, clip)  cos(CLIP(x), CLIP(reference))             differentiable
    ClipTextScore(text, clip)       cos(CLIP(x), CLIP_text(text))             differentiable
    Aesthetic(head, clip)           LAION aesthetic head on CLIP ViT-L/14     differentiable
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["Clip", "ClipImageSimilarity", "ClipTextScore", "Aesthetic", "load_clip"]


PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_TOKENIZER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # PickScore ships no tokenizer


def load_clip(
    model: str | Path = "openai/clip-vit-large-patch14",
    device=None,
    tokenizer: str | Path | None = None,
):
    """A transformers CLIPModel and tokenizer from a hub id or a local folder (the tokenizer from
    ``tokenizer`` when given, else from ``model``)."""
    from transformers import CLIPModel, CLIPTokenizer

    try:
        clip = CLIPModel.from_pretrained(str(model)).eval()
        tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer or model))
    except OSError as err:
        raise ValueError(
            f"could not load the CLIP model {str(model)!r}: {str(err).splitlines()[0]}"
        ) from None
    return (clip.to(device) if device is not None else clip), tokenizer


class Clip:
    """CLIP image embeddings with the preprocessing done in torch (so gradients flow)."""

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model, tokenizer=None):
        self.model, self.tokenizer = model, tokenizer
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.size = model.config.vision_config.image_size

    def _device(self):
        return next(self.model.parameters()).device

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of images in [0, 1] (n, 3, H, W): resize, crop, normalise."""
        x = images.float().to(self._device())
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        x = nn.functional.interpolate(
            x,
            size=(max(self.size, round(h * scale)), max(self.size, round(w * scale))),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]
        mean = torch.tensor(self.MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.STD, device=x.device).view(1, 3, 1, 1)
        out = self.model.get_image_features(pixel_values=(x - mean) / std)
        out = getattr(out, "pooler_output", out)
        return nn.functional.normalize(out, dim=-1)

    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("a CLIP text score needs the CLIP tokenizer")
        tokens = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        )
        with torch.no_grad():
            out = self.model.get_text_features(
                **{k: v.to(self._device()) for k, v in tokens.items()}
            )
        out = getattr(out, "pooler_output", out)
        return nn.functional.normalize(out, dim=-1)


class ClipImageSimilarity:
    """r(x) = cosine similarity of CLIP(x) and CLIP(reference) (the paper's style task)."""

    differentiable = True

    def __init__(self, reference: torch.Tensor, clip: Clip):
        if reference.ndim == 3:
            reference = reference[None]
        if reference.ndim != 4 or reference.shape[1] != 3:
            raise ValueError(
                f"reference must be an image (3, H, W) in [0, 1], got shape "
                f"{tuple(reference.shape)}"
            )
        self.clip = clip
        with torch.no_grad():
            self.target = clip.image_embeds(reference)

    def __call__(self, x):
        return (self.clip.image_embeds(x) @ self.target.T).squeeze(1).double().cpu()

    def to_dict(self):
        return {"type": "clip-image"}


class ClipTextScore:
    """r(x) = cosine similarity of CLIP(x) and the CLIP text embedding of ``text``."""

    differentiable = True

    def __init__(self, text: str, clip: Clip):
        self.text, self.clip = text, clip
        self.target = clip.text_embeds([text])

    def __call__(self, x):
        return (self.clip.image_embeds(x) @ self.target.T).squeeze(1).double().cpu()

    def to_dict(self):
        return {"type": "clip-text", "text": self.text}


class PickScore:
    """PickScore (Kirstain et al. 2023, "Pick-a-Pic"): a CLIP-H fine-tuned on human preference
    pairs; r(x) = exp(logit_scale) · cos(CLIP(x), CLIP(prompt)) — the logit its preference model
    compares across images of one prompt. Load its weights with
    ``load_clip(PICKSCORE_MODEL, tokenizer=PICKSCORE_TOKENIZER)``."""

    differentiable = True

    def __init__(self, prompt: str, clip: Clip):
        self.prompt, self.clip = prompt, clip
        self.target = clip.text_embeds([prompt])
        self.scale = float(clip.model.logit_scale.exp())

    def __call__(self, x):
        return self.scale * (self.clip.image_embeds(x) @ self.target.T).squeeze(1).double().cpu()

    def to_dict(self):
        return {"type": "pickscore", "text": self.prompt}


class _AestheticMLP(nn.Module):
    """The improved aesthetic predictor's MLP: 1024 → 128 → 64 → 16 → 1, dropout between."""

    def __init__(self, dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


def _aesthetic_head(state: dict, dim: int) -> nn.Module:
    """The LAION predictor's head: linear (``weight``/``bias``) or its MLP (``layers.*``)."""
    head = nn.Linear(dim, 1) if set(state) == {"weight", "bias"} else _AestheticMLP(dim)
    head.load_state_dict(state)
    return head.eval()


class Aesthetic:
    """r(x) = the LAION aesthetic predictor on unit-norm CLIP ViT-L/14 image embeddings.

    ``head`` is the path of the predictor's weights (a torch state dict: the linear head, e.g.
    ``sa_0_4_vit_l_14_linear.pth``, or the MLP ``sac+logos+ava1-l14-linearMSE.pth``).
    """

    differentiable = True

    def __init__(self, head: str | Path, clip: Clip):
        path = Path(head)
        if not path.is_file():
            raise ValueError(f"aesthetic head {str(head)!r} is not a file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        dim = clip.model.config.projection_dim
        self.head, self.clip = _aesthetic_head(state, dim).to(clip._device()), clip
        for p in self.head.parameters():
            p.requires_grad_(False)

    def __call__(self, x):
        return self.head(self.clip.image_embeds(x)).squeeze(1).double().cpu()

    def to_dict(self):
        return {"type": "aesthetic"}
