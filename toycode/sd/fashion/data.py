"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017) from its official idx-gzip files.

Files live in ``<dir>/fashion-mnist``, ``<dir>`` being the ``data_dir`` argument,
``$TOYCODE_DATA`` or ``~/.cache/toycode`` (:func:`toycode.utils.idx.data_dir`); missing ones are
downloaded from Zalando's mirrors. A file is accepted only if the SHA256 of its *decompressed*
contents matches: upstream publishes MD5 sums of its own .gz files, and repackaged copies (such as
Debian's) recompress them, so only the contents' checksum identifies the data in both.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...utils.idx import data_dir as _data_dir
from ...utils.idx import load_idx

__all__ = ["MIRRORS", "FILES", "CLASSES", "data_dir", "load_fashion", "pad32"]

MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)

# SHA256 of the decompressed idx files (upstream's and Debian's .gz copies both give these)
FILES = {
    "train": (
        (
            "train-images-idx3-ubyte.gz",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
    ),
    "test": (
        (
            "t10k-images-idx3-ubyte.gz",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    ),
}

CLASSES = (
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
"""The ten labels, in the data set's order (label k is ``CLASSES[k]``)."""


def data_dir(path: str | Path | None = None) -> Path:
    """The Fashion-MNIST folder: argument, else $TOYCODE_DATA, else ~/.cache/toycode; +
    /fashion-mnist."""
    return _data_dir(path, "fashion-mnist")


def load_fashion(
    split: str = "train", data_dir_: str | Path | None = None, mirrors=MIRRORS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 (n, 1, 28, 28) in [−1, 1] and labels as int64 (n,); ``split`` is
    "train" (60,000) or "test" (10,000)."""
    return load_idx(FILES, split, data_dir(data_dir_), mirrors, digest="SHA256 of the contents")


def pad32(x: torch.Tensor) -> torch.Tensor:
    """(n, 1, 28, 28) in [−1, 1] → (n, 3, 32, 32): a 2-pixel black border (the background) so
    the VAE's factor 4 divides the size, and three equal channels so every RGB utility works."""
    return torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0).expand(-1, 3, -1, -1)
