"""MNIST: the UNet DDPM and the CNN classifier toycode trains, and rewards on images.

Rewards see images in [−1, 1], shape (n, 1, 28, 28), and return one float per image:

    ClassIndicator(c)     1[argmax classifier(x) = c]       not differentiable
    ClassLogProb(c)       log p_classifier(c | x)           differentiable
    Ink()                 mean brightness in [0, 1]          differentiable
    Compressibility(...)  −(JPEG or PNG size in kB)          not differentiable
                          (toycode.sd.rewards, with value_range=(−1, 1))
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..backends.unet import UNetDenoiser
from ..training.classifier import Classifier, fit_classifier
from ..training.train import CHECKPOINT_DIR, fit
from ..utils.checks import check_range
from ..utils.images import Compressibility
from ..utils.io import atomic_save
from ..utils.seeding import seeded
from .data import load_split

__all__ = [
    "Classifier",
    "train_unet",
    "train_classifier",
    "load_classifier",
    "ClassIndicator",
    "ClassLogProb",
    "Ink",
    "Compressibility",
    "UNET_PATH",
    "CLASSIFIER_PATH",
]

UNET_PATH = CHECKPOINT_DIR / "mnist_unet.pt"
CLASSIFIER_PATH = CHECKPOINT_DIR / "mnist_classifier.pt"


def train_unet(
    out: str | Path = UNET_PATH,
    *,
    steps: int = 12000,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    data_dir: str | Path | None = None,
    progress: bool = True,
    **options,
) -> dict:
    """Train the UNet DDPM on toycode's "ddpm" range of MNIST (test images 0–5999)."""
    images, _ = load_split("ddpm", data_dir)
    with seeded(seed):  # parameter initialisation
        model = UNetDenoiser()

    def data(n, gen):
        return images[torch.randint(0, len(images), (n,), generator=gen)]

    meta = {"kind": "unet", "config": model.config, "data": "MNIST test[0:6000]"}
    return fit(
        model,
        data,
        out=out,
        meta=meta,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
        ema_decay=0.999,
        **options,
    )


def train_classifier(
    out: str | Path = CLASSIFIER_PATH,
    *,
    epochs: int = 80,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    data_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Train the CNN on toycode's "classifier" range (test images 6000–8999), with shifts."""
    check_range("epochs", epochs, 1, None)
    x, y = load_split("classifier", data_dir)
    # dropout reads only the global generator: seed it for the whole run (and restore it)
    with seeded(seed):
        model = fit_classifier(
            Classifier(),
            x,
            y,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            progress=progress,
        )
    ckpt = {
        "kind": "classifier",
        "model": model.state_dict(),
        "seed": seed,
        "data": "MNIST test[6000:9000]",
        "train": {"epochs": epochs, "lr": lr, "batch_size": batch_size},
    }
    atomic_save(ckpt, out)
    return ckpt


def load_classifier(path: str | Path = CLASSIFIER_PATH) -> Classifier:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("kind") != "classifier":
        raise ValueError(f"{path} is not a classifier checkpoint")
    model = Classifier()
    model.load_state_dict(ckpt["model"])
    return model.eval()


def _digit(c) -> int:
    if not isinstance(c, int) or not 0 <= c <= 9:
        raise ValueError(f"digit must be an integer in 0..9, got {c!r}")
    return c


def _logits(classifier: Classifier, x: torch.Tensor, max_batch: int = 64) -> torch.Tensor:
    """The classifier's logits, ``max_batch`` rows at a time: in cache, half the time per image
    of one call on thousands of candidates (``benchmarks/bench_chunks.py``)."""
    return torch.cat([classifier(c) for c in x.float().split(max_batch)])


class ClassIndicator:
    """r(x) = 1[argmax classifier(x) = c]."""

    differentiable = False

    def __init__(self, digit: int, classifier: Classifier | None = None):
        self.digit, self.classifier = _digit(digit), classifier or load_classifier()

    def __call__(self, x):
        with torch.no_grad():
            return (_logits(self.classifier, x).argmax(1) == self.digit).double()

    def to_dict(self):
        return {"type": "class-indicator", "digit": self.digit}


class ClassLogProb:
    """r(x) = log p(c | x) under the classifier."""

    differentiable = True

    def __init__(self, digit: int, classifier: Classifier | None = None):
        self.digit, self.classifier = _digit(digit), classifier or load_classifier()

    def __call__(self, x):
        return torch.log_softmax(_logits(self.classifier, x), 1)[:, self.digit].to(x.dtype)

    def to_dict(self):
        return {"type": "class-logprob", "digit": self.digit}


class Ink:
    """r(x) = mean pixel brightness, mapped from [−1, 1] to [0, 1]."""

    differentiable = True

    def __call__(self, x):
        return ((x.clamp(-1, 1) + 1) / 2).flatten(1).mean(1)

    def to_dict(self):
        return {"type": "ink"}
