"""MNIST from the official idx-gzip files: download from known mirrors, verify MD5, cache, parse
(:mod:`toycode.utils.idx`, shared with Fashion-MNIST).

The cache directory is, in order: the ``data_dir`` argument, ``$TOYCODE_DATA``, or
``~/.cache/toycode``; files live in ``<dir>/mnist``. A file already there is used only if its
MD5 matches the published checksum. Downloads go to a temporary file that is renamed into place
only after its checksum is verified, so a failed or corrupt download leaves nothing behind.

toycode's own models were trained on the 10,000-image *test* split (the only one on the
machines they were built on), divided into fixed, disjoint ranges (:data:`SPLITS`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..utils import idx
from ..utils.idx import fetch

__all__ = ["MIRRORS", "FILES", "SPLITS", "data_dir", "fetch", "load_mnist", "load_split"]

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# the published MD5 checksums of the four official files
FILES = {
    "train": (
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
}

# disjoint ranges of the test split used by toycode's models and checks
SPLITS = {
    "ddpm": ("test", 0, 6000),  # the UNet DDPM's training images
    "classifier": ("test", 6000, 9000),  # the CNN classifier's training images
    "heldout_a": ("test", 9000, 9500),  # classifier accuracy, Fréchet reference
    "heldout_b": ("test", 9500, 10000),  # classifier accuracy, Fréchet floor
}


def data_dir(path: str | Path | None = None) -> Path:
    """The MNIST cache folder: argument, else $TOYCODE_DATA, else ~/.cache/toycode; + /mnist."""
    return idx.data_dir(path, "mnist")


def load_mnist(
    split: str = "test", data_dir_: str | Path | None = None, mirrors=MIRRORS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 (n, 1, 28, 28) in [−1, 1] and labels as int64 (n,)."""
    return idx.load_idx(FILES, split, data_dir(data_dir_), mirrors)


def load_split(name: str, data_dir_: str | Path | None = None):
    """One of toycode's fixed ranges (:data:`SPLITS`) as (images, labels)."""
    if name not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {name!r}")
    split, lo, hi = SPLITS[name]
    x, y = load_mnist(split, data_dir_)
    return x[lo:hi], y[lo:hi]
