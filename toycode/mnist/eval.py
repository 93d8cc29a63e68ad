"""Checks on MNIST: classifier accuracy, base-model quality, and the exact tilted class fraction.

For the indicator reward r(x) = 1[classifier(x) = c], p* ∝ p e^{λr} only reweights the classes:

    P*(c) = π_c e^λ / (π_c e^λ + 1 − π_c),          π_c the base model's rate of class c,

and best-of-N with softmax selection on r is self-normalised importance sampling whose
finite-N expectation is exact too: with K ~ Binomial(N, π_c) candidates of class c,

    P_N(c) = E[K e^λ / (K e^λ + N − K)]   →   P*(c) as N → ∞.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import binom

from ..core.sampler import sample_blockwise
from ..training.classifier import frechet_distance
from .data import load_split

__all__ = [
    "classifier_accuracy",
    "class_rates",
    "tilted_fraction",
    "bon_fraction",
    "frechet_distance",
    "base_quality",
]


def _batched(fn, x, size=512):
    with torch.no_grad():
        return torch.cat([fn(c.float()) for c in x.split(size)])


def classifier_accuracy(classifier, data_dir=None) -> tuple[float, float, int]:
    """Accuracy on the two held-out ranges (test images 9000–9999), its s.e., and the count."""
    xs, ys = zip(*(load_split(s, data_dir) for s in ("heldout_a", "heldout_b")))
    x, y = torch.cat(xs), torch.cat(ys)
    acc = float((_batched(classifier, x).argmax(1) == y).double().mean())
    return acc, math.sqrt(acc * (1 - acc) / len(y)), len(y)


def class_rates(classifier, images) -> tuple[torch.Tensor, torch.Tensor]:
    """The share of each class (argmax label) and its binomial standard error."""
    labels = _batched(classifier, images).argmax(1)
    rates = torch.bincount(labels, minlength=10).double() / len(labels)
    return rates, (rates * (1 - rates) / len(labels)).sqrt()


def tilted_fraction(pi: float, lam: float) -> float:
    """P*(c) = π e^λ / (π e^λ + 1 − π)."""
    return pi * math.exp(lam) / (pi * math.exp(lam) + 1 - pi)


def bon_fraction(pi: float, lam: float, n: int) -> float:
    """E[K e^λ / (K e^λ + N − K)], K ~ Binomial(N, π): best-of-N softmax's exact expectation."""
    k = np.arange(n + 1)
    return float((binom.pmf(k, n, pi) * k * math.exp(lam) / (k * math.exp(lam) + n - k)).sum())


def base_quality(
    backend, classifier, n: int = 1000, seed: int = 0, data_dir=None, progress: bool = True
) -> dict:
    """The base DDPM's quality: confident share, class spread, Fréchet distance and its floor.

    Fréchet distances use the classifier's 64-d features and 500 images a side: the held-out
    images (test 9000–9999) are split at random into a reference half and a floor half; the
    model's first 500 samples are measured against the reference, and so is the floor half (the
    distance a perfect model would show at this sample size).
    """
    res = sample_blockwise(
        backend,
        lambda x: torch.zeros(len(x), dtype=torch.float64),
        n,
        generator=torch.Generator().manual_seed(seed),
        progress=progress,
    )
    x = res.samples
    probs = torch.softmax(_batched(classifier, x), 1)
    rates, se = class_rates(classifier, x)
    held = torch.cat([load_split(s, data_dir)[0] for s in ("heldout_a", "heldout_b")])
    order = torch.randperm(len(held), generator=torch.Generator().manual_seed(seed))
    ref, other = held[order[:500]], held[order[500:]]
    feats = [_batched(classifier.features, imgs) for imgs in (x[:500], ref, other)]
    return {
        "n": n,
        "confident": float((probs.max(1).values >= 0.9).double().mean()),
        "class_rates": rates.tolist(),
        "class_se": se.tolist(),
        "frechet": frechet_distance(feats[0], feats[1]),
        "frechet_floor": frechet_distance(feats[2], feats[1]),
        "samples": x,
    }
