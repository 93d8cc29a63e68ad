"""MNIST from the official idx-gzip files: download from known mirrors, verify MD5, cache, parse.

The cache directory is, in order: the ``data_dir`` argument, ``$TOYCODE_DATA``, or
``~/.cache/toycode``; files live in ``<dir>/mnist``. A file already there is used only if its
MD5 matches the published checksum. Downloads go to a temporary file that is renamed into place
only after its checksum is verified, so a failed or corrupt download leaves nothing behind.

toycode's own models were trained on the 10,000-image *test* split (the only one on the
machines they were built on), divided into fixed, disjoint ranges (:data:`SPLITS`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..utils.io import atomic_write

__all__ = ["MIRRORS", "FILES", "SPLITS", "data_dir", "fetch", "load_mnist", "load_split"]

log = logging.getLogger(__name__)

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# the published MD5 checksums of the four official files
FILES = {
    "train": (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432")),
    "test": (("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
             ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
}

# disjoint ranges of the test split used by toycode's models and checks
SPLITS = {
    "ddpm": ("test", 0, 6000),          # the UNet DDPM's training images
    "classifier": ("test", 6000, 9000),  # the CNN classifier's training images
    "heldout_a": ("test", 9000, 9500),   # classifier accuracy, Fréchet reference
    "heldout_b": ("test", 9500, 10000),  # classifier accuracy, Fréchet floor
}


def data_dir(path: str | Path | None = None) -> Path:
    """The MNIST cache folder: argument, else $TOYCODE_DATA, else ~/.cache/toycode; + /mnist."""
    root = path or os.environ.get("TOYCODE_DATA") or Path.home() / ".cache" / "toycode"
    return Path(root) / "mnist"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str, md5: str, folder: Path, mirrors=MIRRORS, timeout: float = 30.0) -> Path:
    """A verified local copy of one official file, downloading it if needed."""
    path = folder / name
    if path.exists():
        if _md5(path) == md5:
            return path
        raise ValueError(f"{path} exists but its MD5 is {_md5(path)}, not {md5}; delete it to "
                         f"download it again")
    errors = []
    for mirror in mirrors:
        url = mirror + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as err:
            errors.append(f"{url}: {err}")
            continue
        got = hashlib.md5(payload).hexdigest()
        if got != md5:
            errors.append(f"{url}: MD5 {got}, expected {md5}")
            continue
        log.info("downloaded %s from %s", name, mirror)
        return atomic_write(path, lambda f, data=payload: f.write(data))
    raise ValueError(f"could not fetch {name}; every mirror failed:\n  " + "\n  ".join(errors))


def _parse(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(images, "rb") as f:
        magic, n, rows, cols = np.frombuffer(f.read(16), ">u4")
        if magic != 2051:
            raise ValueError(f"{images} is not an idx3 image file (magic {magic})")
        x = np.frombuffer(f.read(), np.uint8).reshape(n, rows, cols)
    with gzip.open(labels, "rb") as f:
        magic, m = np.frombuffer(f.read(8), ">u4")
        if magic != 2049 or m != n:
            raise ValueError(f"{labels} is not an idx1 label file for {n} images")
        y = np.frombuffer(f.read(), np.uint8)
    return x, y


def load_mnist(split: str = "test", data_dir_: str | Path | None = None,
               mirrors=MIRRORS) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 (n, 1, 28, 28) in [−1, 1] and labels as int64 (n,)."""
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}")
    folder = data_dir(data_dir_)
    (img_name, img_md5), (lab_name, lab_md5) = FILES[split]
    images = fetch(img_name, img_md5, folder, mirrors)
    labels = fetch(lab_name, lab_md5, folder, mirrors)
    x, y = _parse(images, labels)
    x = torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
    return x, torch.from_numpy(y.astype(np.int64))


def load_split(name: str, data_dir_: str | Path | None = None):
    """One of toycode's fixed ranges (:data:`SPLITS`) as (images, labels)."""
    if name not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {name!r}")
    split, lo, hi = SPLITS[name]
    x, y = load_mnist(split, data_dir_)
    return x[lo:hi], y[lo:hi]
