"""`toycode sd`: the blockwise sampler on a Stable Diffusion pipeline, with image rewards.

One backend per distinct prompt (the prompt is embedded once), the same
:func:`toycode.core.sampler.sample_blockwise` as everywhere else, and outputs written atomically:
one PNG per image, ``rewards.json`` (per image: prompt, reward, NFE, reward calls, seed, all
settings) and ``grid.png``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import torch

from ..core.methods import METHODS, get_method
from ..utils.checks import check_choice, check_range
from ..utils.images import Compressibility
from ..utils.io import atomic_write
from .backend import make_sd_backend
from .rewards import Aesthetic, ClipImageSimilarity, ClipTextScore, PickScore

__all__ = [
    "IMAGE_REWARDS",
    "SD_METHODS",
    "SD_GRADIENT_METHODS",
    "make_image_reward",
    "load_image",
    "sd_sample",
    "save_png",
    "write_outputs",
]

IMAGE_REWARDS = ("jpeg", "clip-image", "clip-text", "aesthetic", "pickscore")
SD_METHODS = tuple(
    name for name, m in METHODS.items() if m.guidance is None and not m.needs_gradient
)
"""The gradient-free methods: image rewards (JPEG size, CLIP scores) are not differentiated."""
SD_GRADIENT_METHODS = tuple(
    name for name, m in METHODS.items() if m.guidance is not None and not m.needs_target
)
"""The methods that wrap the backend with a gradient-guidance rule (DPS and its variants,
universal guidance, CoDe and UniCoDe on guided proposals, TDS): an SD sweep runs them for a
reward that says it is ``differentiable`` (the Fashion-MNIST classifier's log-probability);
``toycode sd`` and ``toycode sd-sweep`` keep their image rewards gradient-free. The Ψ-Sampler,
whose chain differentiates the whole ODE, is in neither list."""


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """An RGB image file as a (3, H, W) float tensor in [0, 1], resized to (H, W) if given."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"reference image {str(path)!r} is not a file")
    img = Image.open(path).convert("RGB")
    if size is not None:
        img = img.resize((size[1], size[0]), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def _starts_from_reference(record) -> bool:
    """Whether a method's loop takes the blockwise sampler's ``reference`` (its own keyword,
    or keywords it hands on to the blockwise sampler)."""
    if record.loop is None:
        return True
    params = inspect.signature(record.loop).parameters.values()
    return any(p.name == "reference" or p.kind is p.VAR_KEYWORD for p in params)


def make_image_reward(
    name: str,
    *,
    reference: torch.Tensor | None = None,
    prompt: str | None = None,
    clip=None,
    aesthetic_head=None,
):
    """An image reward by name. ``clip`` is a :class:`Clip` or a function returning one (called
    only once the other arguments have been checked, so a bad call loads no model)."""
    check_choice("reward", name, IMAGE_REWARDS)
    if name == "jpeg":
        return Compressibility("jpeg", quality=95)
    if name == "clip-image" and reference is None:
        raise ValueError("reward 'clip-image' needs a reference image (--reference)")
    if name == "aesthetic" and aesthetic_head is None:
        raise ValueError(
            "reward 'aesthetic' needs the predictor head's weights (--aesthetic-head PATH)"
        )
    if clip is None:
        raise ValueError(f"reward {name!r} needs a CLIP model (--clip-model)")
    clip = clip() if callable(clip) else clip
    if name == "clip-image":
        return ClipImageSimilarity(reference, clip)
    if name == "clip-text":
        return ClipTextScore(prompt, clip)
    if name == "pickscore":
        return PickScore(prompt, clip)
    return Aesthetic(aesthetic_head, clip)


def sd_sample(
    pipe,
    prompts: str | list[str],
    reward,
    *,
    n: int = 1,
    method: str = "code",
    num_candidates: int = 8,
    block_size: int = 5,
    selection: str | None = None,
    particles: int = 4,
    lam: float = 1.0,
    steps: int = 50,
    scheduler: str | None = None,
    eta: float = 1.0,
    guidance_scale: float = 7.5,
    reference: torch.Tensor | None = None,
    strength: float | None = None,
    seed: int = 0,
    max_batch: int = 8,
    progress: bool = True,
) -> list[dict]:
    """n images for one prompt, or one image per prompt; returns one record per image.

    ``reference`` (an image (3, H, W) in [0, 1]) with ``strength`` ∈ (0, 1] starts CoDe(η)
    from the reference encoded by the VAE and noised to that strength.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    record = _checked_request(prompts, n=n, method=method, reference=reference, strength=strength)
    groups = {p: [] for p in prompts}  # prompt → image indices, in order
    for k in range(n):
        groups[prompts[k % len(prompts)] if len(prompts) == n else prompts[0]].append(k)
    records = [None] * n
    options = {"steps": steps, "scheduler": scheduler, "eta": eta}
    options.update(guidance_scale=guidance_scale, max_batch=max_batch)
    for g, (prompt, idx) in enumerate(groups.items()):
        backend = make_sd_backend(pipe, prompt, **options)
        settings = record.sampler_settings(
            backend.process.num_steps,
            num_candidates=num_candidates,
            block_size=block_size,
            particles=particles,
            selection=selection,
        )
        if reference is not None and strength is not None:
            # CoDe(η): only the blockwise loop starts from a reference
            start = _reference_latents(pipe, backend, reference, len(idx))
            settings.update(reference=start, strength=strength)
        gen = torch.Generator(device="cpu").manual_seed(seed + g)
        res = record.run(
            backend, reward, len(idx), lam=lam, generator=gen, progress=progress, **settings
        )
        common = {
            "prompt": prompt,
            "seed": seed + g,
            "method": method,
            "steps": steps,
            "scheduler": getattr(backend, "scheduler", scheduler or "ddim"),
            "eta": eta,
            "guidance_scale": guidance_scale,
            "strength": strength,
            "nfe": res.nfe / len(idx),
            "reward_calls": res.reward_calls / len(idx),
            **res.settings,
        }
        for j, k in enumerate(idx):
            image = res.samples[j].detach().float().cpu()
            records[k] = {**common, "index": k, "reward": float(res.rewards[j]), "image": image}
    return records


def _checked_request(prompts: list[str], *, n: int, method: str, reference, strength):
    """Refuse a request the run cannot serve, before any model call; the method's record."""
    check_range("n", n, 1, None)
    check_choice("method", method, SD_METHODS)
    record = get_method(method)
    if len(prompts) not in (1, n):
        raise ValueError(
            f"got {len(prompts)} prompts for n={n} images: give one prompt, or exactly n"
        )
    if strength is not None and reference is None:
        raise ValueError("strength needs a reference image (--reference)")
    if strength is not None and not _starts_from_reference(record):
        raise ValueError(
            f"method {method!r} runs its own loop, which cannot start from a "
            f"reference (--strength); use one of "
            f"{[m for m in SD_METHODS if _starts_from_reference(METHODS[m])]}"
        )
    return record


def _reference_latents(pipe, backend, reference: torch.Tensor, count: int) -> torch.Tensor:
    """The reference image resized to the pipeline's resolution and VAE-encoded, ``count`` times."""
    h, w = (s * pipe.vae_scale_factor for s in backend.shape[1:])
    ref = torch.nn.functional.interpolate(
        reference[None].float(), size=(h, w), mode="bilinear", align_corners=False
    )
    return backend.encode(ref).expand(count, -1, -1, -1)


def _png(img: torch.Tensor):
    from PIL import Image

    arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return lambda f: Image.fromarray(arr).save(f, format="PNG")


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """An image in [0, 1] (3, H, W) as an 8-bit PNG, written atomically."""
    return atomic_write(path, _png(image))


def write_outputs(records: list[dict], out: str | Path) -> list[Path]:
    """image_KKK.png per record, rewards.json and grid.png (a row of images) under ``out``."""
    out = Path(out)
    paths = [atomic_write(out / f"image_{r['index']:03d}.png", _png(r["image"])) for r in records]
    meta = [{k: v for k, v in r.items() if k != "image"} for r in records]
    paths.append(
        atomic_write(out / "rewards.json", lambda f: f.write(json.dumps(meta, indent=2).encode()))
    )
    cols = min(len(records), 8)
    images = [r["image"] for r in records]
    images += [torch.zeros_like(images[0])] * (-len(images) % cols)
    rows = [torch.cat(images[i : i + cols], dim=2) for i in range(0, len(images), cols)]
    paths.append(atomic_write(out / "grid.png", _png(torch.cat(rows, dim=1))))
    return paths
