"""Image utilities shared by the wings: the compressibility reward (an encoder's size).

Compressibility(fmt, quality)   −(encoded size in kB), JPEG by default    not differentiable
"""

from __future__ import annotations

import io

import numpy as np
import torch

from .checks import check_choice, check_range

__all__ = ["Compressibility"]


class Compressibility:
    """r(x) = −(size in kB of x encoded as JPEG at ``quality``, or as PNG).

    ``value_range`` is what black and white are in x: (0, 1) for decoded SD images, (−1, 1) for
    toycode's MNIST tensors. The encoder runs per image (PIL), so this is the slowest reward.
    """

    differentiable = False

    def __init__(self, fmt: str = "jpeg", quality: int = 95, value_range=(0.0, 1.0)):
        check_choice("format", fmt, ("jpeg", "png"))
        check_range("quality", quality, 1, 100)
        self.fmt, self.quality, self.low, self.high = fmt, quality, *value_range

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        scaled = (x.detach().float() - self.low) / (self.high - self.low)
        pixels = (scaled.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        sizes = []
        for img in pixels:
            arr = img[0] if img.shape[0] == 1 else np.ascontiguousarray(np.moveaxis(img, 0, -1))
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format=self.fmt.upper(), quality=self.quality)
            sizes.append(buf.tell() / 1000)
        return -torch.tensor(sizes, dtype=torch.float64)

    def to_dict(self):
        return {"type": "compressibility", "format": self.fmt, "quality": self.quality}
