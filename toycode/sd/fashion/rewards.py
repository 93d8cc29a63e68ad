"""Rewards from the Fashion-MNIST classifier on the pipeline's decoded images.

The SD backends hand rewards (n, 3, 32, 32) images in [0, 1]; the classifier sees the 28×28
garment inside the 2-pixel border (the channels averaged), mapped to [−1, 1] as in training.

    FashionClassIndicator(c)   1[argmax classifier = c]    not differentiable
    FashionClassLogProb(c)     log p_classifier(c | x)     differentiable (DPS)
"""

from __future__ import annotations

import torch

from .data import CLASSES

__all__ = ["to_classifier_input", "FashionClassIndicator", "FashionClassLogProb", "classify"]


def to_classifier_input(images: torch.Tensor) -> torch.Tensor:
    """(n, 3, 32, 32) in [0, 1] → (n, 1, 28, 28) in [−1, 1]: the border cropped, grey."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, 32, 32):
        raise ValueError(f"expected (n, 3, 32, 32) images, got {tuple(images.shape)}")
    return images[:, :, 2:30, 2:30].float().mean(1, keepdim=True) * 2 - 1


def classify(classifier, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The classifier's label of each decoded image (n,)."""
    with torch.no_grad():
        return torch.cat(
            [classifier(to_classifier_input(c)).argmax(1) for c in images.split(batch)]
        )


def _class(c) -> int:
    if not isinstance(c, int) or not 0 <= c < len(CLASSES):
        raise ValueError(f"class must be an integer in 0..{len(CLASSES) - 1}, got {c!r}")
    return c


def _default_classifier():
    from .train import load_fashion_classifier

    return load_fashion_classifier()


class FashionClassIndicator:
    """r(x) = 1[argmax classifier(x) = c] on decoded images: tilts only the class shares."""

    differentiable = False

    def __init__(self, c: int, classifier=None):
        self.c, self.classifier = _class(c), classifier or _default_classifier()

    def __call__(self, images):
        return (classify(self.classifier, images) == self.c).double()

    def to_dict(self):
        return {"type": "fashion-class-indicator", "class": self.c, "name": CLASSES[self.c]}


class FashionClassLogProb:
    """r(x) = log p(c | x) under the classifier, differentiable through the decoded images."""

    differentiable = True

    def __init__(self, c: int, classifier=None):
        self.c, self.classifier = _class(c), classifier or _default_classifier()

    def __call__(self, images):
        logits = self.classifier(to_classifier_input(images))
        return torch.log_softmax(logits, 1)[:, self.c].to(images.dtype)

    def to_dict(self):
        return {"type": "fashion-class-logprob", "class": self.c, "name": CLASSES[self.c]}
