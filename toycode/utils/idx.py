"""Datasets in the idx-gzip format (MNIST, Fashion-MNIST): download, verify, cache, parse.

The cache directory is, in order: the ``path`` argument, ``$TOYCODE_DATA``, or
``~/.cache/toycode``, plus one folder per data set. A file already there is used only if its
checksum matches the published one. Downloads go to a temporary file that is renamed into place
only after the checksum is verified, so a failed or corrupt download leaves nothing behind.
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

from .io import atomic_write

__all__ = ["DIGESTS", "data_dir", "fetch", "load_idx"]

log = logging.getLogger(__name__)


def data_dir(path: str | Path | None, dataset: str) -> Path:
    """The cache folder of ``dataset``: argument, else $TOYCODE_DATA, else ~/.cache/toycode;
    + /<dataset>."""
    root = path or os.environ.get("TOYCODE_DATA") or Path.home() / ".cache" / "toycode"
    return Path(root) / dataset


# how a file's checksum is taken: MNIST publishes the MD5 of its .gz files; "SHA256 of the
# contents" does not depend on how the file was compressed (repackaged copies keep it)
DIGESTS = {
    "MD5": lambda payload: hashlib.md5(payload).hexdigest(),
    "SHA256 of the contents": lambda payload: hashlib.sha256(gzip.decompress(payload)).hexdigest(),
}


def fetch(
    name: str, checksum: str, folder: Path, mirrors, timeout: float = 30.0, digest: str = "MD5"
) -> Path:
    """A verified local copy of one official file, downloading it if needed.

    ``digest`` names how ``checksum`` is taken (a key of :data:`DIGESTS`)."""
    path = folder / name
    if path.exists():
        got = DIGESTS[digest](path.read_bytes())
        if got == checksum:
            return path
        raise ValueError(
            f"{path} exists but its {digest} is {got}, not {checksum}; delete it "
            f"to download it again"
        )
    errors = []
    for mirror in mirrors:
        url = mirror + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as err:
            errors.append(f"{url}: {err}")
            continue
        try:
            got = DIGESTS[digest](payload)
        except (OSError, EOFError) as err:  # not a gzip file: the contents cannot be read
            errors.append(f"{url}: {err}")
            continue
        if got != checksum:
            errors.append(f"{url}: {digest} {got}, expected {checksum}")
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


def load_idx(
    files, split: str, folder: Path, mirrors, digest: str = "MD5"
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of an idx-gzip data set (``files[split]`` = ((images, checksum), (labels,
    checksum))), fetched and verified into ``folder``: images as float32 (n, 1, rows, cols) in
    [−1, 1] and labels as int64 (n,)."""
    if split not in files:
        raise ValueError(f"split must be one of {sorted(files)}, got {split!r}")
    (img_name, img_sum), (lab_name, lab_sum) = files[split]
    images = fetch(img_name, img_sum, folder, mirrors, digest=digest)
    labels = fetch(lab_name, lab_sum, folder, mirrors, digest=digest)
    x, y = _parse(images, labels)
    x = torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
    return x, torch.from_numpy(y.astype(np.int64))
