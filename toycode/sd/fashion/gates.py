"""The pipeline's quality gates: classifier accuracy, prompt fidelity, Fréchet distance.

- Classifier test accuracy on the 10,000 test images (none seen in training).
- Base prompt fidelity: images from each class prompt ("a photo of a sneaker") sampled by the
  pipeline's own ``__call__`` at its default guidance; the share the classifier labels as the
  prompted class, per class and averaged.
- Fréchet distance in the classifier's 64-d feature space between the pooled class-prompt images
  (ten classes in equal numbers, as in the test set) and a random half of the test images; its
  floor is the distance of the other half to the same reference (what a perfect model would
  show with as many images), and beside it the distance of the VAE's reconstructions of those
  test images, the part of the gap the autoencoder alone opens. The generic prompt's class
  shares are reported too.
"""

from __future__ import annotations

import math
import time

import torch

from ...training.classifier import frechet_distance
from ...utils.checks import check_count, check_range
from .data import CLASSES, load_fashion, pad32
from .prompts import GENERIC_PROMPT, class_prompt
from .rewards import classify, to_classifier_input

__all__ = [
    "quality_gates",
    "format_gates",
    "format_guidance_table",
    "pipeline_images",
    "classifier_test_accuracy",
]


def classifier_test_accuracy(classifier, data_dir=None) -> tuple[float, float]:
    """Accuracy on the 10,000 test images and its binomial standard error."""
    x, y = load_fashion("test", data_dir)
    with torch.no_grad():
        pred = torch.cat([classifier(c).argmax(1) for c in x.split(1000)])
    acc = float((pred == y).double().mean())
    return acc, math.sqrt(acc * (1 - acc) / len(y))


def pipeline_images(
    pipe,
    prompt: str,
    n: int,
    *,
    steps: int,
    guidance_scale: float | None,
    seed: int,
    batch: int = 250,
) -> torch.Tensor:
    """n images (n, 3, 32, 32) in [0, 1] from the pipeline's own ``__call__`` (its scheduler:
    DDIM η = 0, or FlowMatchEuler)."""
    gen = torch.Generator().manual_seed(seed)
    extra = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
    out = []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        out.append(
            pipe(
                prompt,
                num_images_per_prompt=m,
                num_inference_steps=steps,
                generator=gen,
                output_type="pt",
                **extra,
            ).images.float()
        )
    return torch.cat(out)


def _features(classifier, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return classifier.features(images)


def _reconstructions(vae, x: torch.Tensor, batch: int = 250) -> torch.Tensor:
    """Test images (n, 1, 28, 28) in [−1, 1] through the VAE (posterior mean, decode) as (n, 3,
    32, 32) in [0, 1]: what the latent model could at best reproduce."""
    with torch.no_grad():
        out = [vae.decode(vae.encode(pad32(c)).latent_dist.mean).sample for c in x.split(batch)]
    return ((torch.cat(out).float().clamp(-1, 1) + 1) / 2).cpu()


def quality_gates(
    model=None,
    *,
    n: int = 100,
    n_generic: int = 500,
    steps: int = 25,
    guidance_scale: float | None = None,
    seed: int = 0,
    data_dir=None,
    classifier=None,
) -> dict:
    """Every gate of the pipeline at ``model`` (a folder, or a committed pipeline's name:
    :func:`~toycode.sd.fashion.resolve_model`; default: the DDPM pipeline), sampled by its own
    ``__call__`` (its own scheduler: DDIM for the DDPM pipeline, FlowMatchEuler for SD3)."""
    import inspect

    from ..backend import load_pipeline
    from . import PIPELINE_DIR, resolve_model
    from .train import load_fashion_classifier

    check_count("n", n, 2)  # a Fréchet distance needs a covariance
    check_count("n_generic", n_generic, 2)
    check_count("steps", steps)
    if guidance_scale is not None:
        check_range("guidance_scale", guidance_scale, 0.0, None)
    start = time.time()
    model = resolve_model(model or PIPELINE_DIR)
    pipe = load_pipeline(model, device="cpu")
    default_guidance = inspect.signature(pipe.__call__).parameters["guidance_scale"].default
    classifier = classifier or load_fashion_classifier()
    acc, acc_se = classifier_test_accuracy(classifier, data_dir)
    fidelity, pooled = [], []
    for c in range(len(CLASSES)):
        images = pipeline_images(
            pipe, class_prompt(c), n, steps=steps, guidance_scale=guidance_scale, seed=seed + c
        )
        fidelity.append(float((classify(classifier, images) == c).double().mean()))
        pooled.append(images)
    generic = pipeline_images(
        pipe, GENERIC_PROMPT, n_generic, steps=steps, guidance_scale=guidance_scale, seed=seed + 100
    )
    shares = torch.bincount(classify(classifier, generic), minlength=10).double() / n_generic
    x, _ = load_fashion("test", data_dir)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    half = len(x) // 2
    ref, other = x[order[:half]], x[order[half:]]
    pooled = torch.cat(pooled)
    m = min(len(pooled), half)  # the floor uses as many real images as the model has samples
    f_model = _features(classifier, to_classifier_input(pooled))
    f_ref = _features(classifier, ref)
    f_other = _features(classifier, other[:m])
    f_vae = _features(classifier, to_classifier_input(_reconstructions(pipe.vae, other[:m])))
    f_generic = _features(classifier, to_classifier_input(generic))
    f_floor_generic = _features(classifier, other[: len(generic)])
    mean_fid = sum(fidelity) / len(fidelity)
    return {
        "model": str(model),
        "scheduler": type(pipe.scheduler).__name__,
        "steps": steps,
        "guidance_scale": guidance_scale if guidance_scale is not None else default_guidance,
        "n_per_class": n,
        "classifier_accuracy": acc,
        "classifier_accuracy_se": acc_se,
        "fidelity": dict(zip(CLASSES, fidelity)),
        "fidelity_mean": mean_fid,
        "fidelity_mean_se": math.sqrt(sum(f * (1 - f) for f in fidelity) / n) / len(fidelity),
        "frechet": frechet_distance(f_model, f_ref),
        "frechet_floor": frechet_distance(f_other, f_ref),
        "frechet_n": m,
        "vae_frechet": frechet_distance(f_vae, f_ref),
        "generic_frechet": frechet_distance(f_generic, f_ref),
        "generic_frechet_floor": frechet_distance(f_floor_generic, f_ref),
        "generic_shares": dict(zip(CLASSES, shares.tolist())),
        "n_generic": n_generic,
        "seconds": time.time() - start,
    }


def format_gates(g: dict) -> str:
    """The gates as a short plain-text report."""
    lines = [
        f"pipeline {g['model']}: {g.get('scheduler', 'DDIMScheduler')} {g['steps']} steps, "
        f"guidance {g['guidance_scale']}",
        f"classifier test accuracy  {g['classifier_accuracy']:.4f} "
        f"± {g['classifier_accuracy_se']:.4f} (10,000 test images)",
        f"prompt fidelity (share classified as prompted, {g['n_per_class']} images a class)",
    ]
    lines += [f"  {name:<12} {f:.3f}" for name, f in g["fidelity"].items()]
    lines += [
        f"  {'mean':<12} {g['fidelity_mean']:.3f} ± {g['fidelity_mean_se']:.3f}",
        f"Fréchet (classifier features), class prompts pooled vs test half: "
        f"{g['frechet']:.3f}; floor (other test half, {g['frechet_n']} images): "
        f"{g['frechet_floor']:.3f}; ratio {g['frechet'] / g['frechet_floor']:.1f}",
        f"  the VAE's own reconstructions of those {g['frechet_n']} test images: "
        f"{g['vae_frechet']:.3f} (ratio {g['vae_frechet'] / g['frechet_floor']:.1f})",
        f"generic prompt ({g['n_generic']} images): Fréchet {g['generic_frechet']:.3f}, "
        f"floor {g['generic_frechet_floor']:.3f}; class shares "
        + ", ".join(f"{k} {v:.2f}" for k, v in g["generic_shares"].items()),
        f"({g['seconds']:.0f} s)",
    ]
    return "\n".join(lines)


def format_guidance_table(every: list[dict]) -> str:
    """Gates at several guidance scales side by side: CFG buys prompt fidelity with diversity."""
    lines = [
        "guidance  fidelity (mean ± s.e.)  Fréchet  in floors  (VAE reconstructions: "
        f"{every[0]['vae_frechet'] / every[0]['frechet_floor']:.1f} floors)"
    ]
    for g in every:
        lines.append(
            f"{g['guidance_scale']:8g}  {g['fidelity_mean']:.3f} ± {g['fidelity_mean_se']:.3f}"
            f"{'':10s}{g['frechet']:7.1f}  {g['frechet'] / g['frechet_floor']:9.1f}"
        )
    return "\n".join(lines)
