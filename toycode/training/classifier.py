"""A small image classifier for 28×28 grey images, its training loop, and the Fréchet distance
in its feature space: the reward and quality judge of both wings (MNIST digits, Fashion-MNIST
garments), each training its own weights.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from torch import nn
from tqdm.auto import tqdm

from ..utils.checks import check_range

__all__ = ["Classifier", "fit_classifier", "frechet_distance"]


class Classifier(nn.Module):
    """A small CNN: two conv blocks (``widths`` channels), a 64-d feature layer (for Fréchet
    distances), 10 logits, on (n, 1, 28, 28) images in [−1, 1]."""

    def __init__(self, widths: tuple[int, int] = (32, 64)):
        super().__init__()
        a, b = widths
        self.body = nn.Sequential(
            nn.Conv2d(1, a, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(a, a, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(a, b, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(b, b, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(b * 49, 64),
            nn.ReLU(),
        )
        self.head = nn.Linear(64, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _shift(x: torch.Tensor, gen: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Random translations by up to ``pixels`` (background −1), one per image."""
    n = len(x)
    padded = nn.functional.pad(x, (pixels,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * pixels + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pixels + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(28))[:, :, None].expand(n, 28, 28)
    cols = (dx[:, None] + torch.arange(28))[:, None, :].expand(n, 28, 28)
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


def fit_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> nn.Module:
    """Cross-entropy training of ``model`` on images x (n, 1, 28, 28) and labels y, with random
    shifts of up to 2 pixels and a one-cycle learning rate; returns it in eval mode.

    Batches and shifts come from a generator seeded with ``seed``; dropout reads only the global
    generator, so call this inside :func:`~toycode.utils.seeding.seeded` for reproducible
    weights."""
    check_range("epochs", epochs, 1, None)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    bar = tqdm(total=steps, disable=not progress, desc="training classifier")
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(_shift(x[idx], gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    return model.eval()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}) between two feature samples."""
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with np.errstate(all="ignore"):  # sqrtm warns on tiny imaginary parts; they are dropped
        covmean = linalg.sqrtm(ca @ cb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * covmean))
