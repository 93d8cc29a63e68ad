"""The MNIST loader: the shared test split, and downloads from a loopback HTTP server."""

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch

from toycode.mnist.data import FILES, SPLITS, data_dir, fetch, load_mnist, load_split

# the Makefile exports TOYCODE_DATA where a shared copy of MNIST exists; tests never download it
SHARED = Path(os.environ.get("TOYCODE_DATA", ""))


@pytest.fixture(scope="module")
def shared_root():
    if not os.environ.get("TOYCODE_DATA"):
        pytest.skip("TOYCODE_DATA is not set (make test sets it where a shared MNIST copy exists)")
    if not (SHARED / "mnist" / FILES["test"][0][0]).exists():
        pytest.fail(f"the shared MNIST test split is missing under {SHARED}")
    return SHARED


@pytest.fixture
def server(tmp_path, shared_root):
    """A loopback HTTP server over a folder holding the good files and a corrupted copy."""
    root = tmp_path / "served"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    for name, _ in FILES["test"]:
        shutil.copy(SHARED / "mnist" / name, root / "good" / name)
        blob = bytearray((SHARED / "mnist" / name).read_bytes())
        blob[100] ^= 0xFF
        (root / "bad" / name).write_bytes(bytes(blob))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_loads_the_shared_test_split(shared_root):
    x, y = load_mnist("test", shared_root)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert y.shape == (10000,) and set(y.tolist()) == set(range(10))
    assert torch.bincount(y).min() > 850  # every digit is there


def test_splits_are_disjoint_and_cover_the_test_set(shared_root):
    ranges = sorted((lo, hi) for _, lo, hi in SPLITS.values())
    assert ranges[0][0] == 0 and ranges[-1][1] == 10000
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    x, _ = load_split("heldout_a", shared_root)
    assert len(x) == 500


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TOYCODE_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env" / "mnist"
    assert data_dir(tmp_path / "arg") == tmp_path / "arg" / "mnist"
    monkeypatch.delenv("TOYCODE_DATA")
    assert data_dir() == Path.home() / ".cache" / "toycode" / "mnist"


def test_download_verifies_and_caches(server, tmp_path):
    cache = tmp_path / "cache"
    x, y = load_mnist("test", cache, mirrors=(server + "/missing/", server + "/good/"))
    assert x.shape == (10000, 1, 28, 28)
    names = sorted(p.name for p in (cache / "mnist").iterdir())
    assert names == sorted(n for n, _ in FILES["test"])


def test_corrupt_download_leaves_nothing(server, tmp_path):
    name, md5 = FILES["test"][0]
    folder = tmp_path / "cache" / "mnist"
    with pytest.raises(ValueError, match="MD5") as err:
        fetch(name, md5, folder, mirrors=(server + "/bad/",))
    assert "every mirror failed" in str(err.value)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_unreachable_mirrors_and_missing_files(server, tmp_path):
    name, md5 = FILES["test"][1]
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="404"):
        fetch(name, md5, cache, mirrors=(server + "/missing/",))
    with pytest.raises(ValueError, match="every mirror failed"):
        fetch(name, md5, cache, mirrors=("http://127.0.0.1:9/",), timeout=2)
    assert not cache.exists()


def test_a_corrupt_cached_file_is_refused(tmp_path):
    name, md5 = FILES["test"][1]
    (tmp_path / name).write_bytes(b"not mnist")
    with pytest.raises(ValueError, match="delete it"):
        fetch(name, md5, tmp_path, mirrors=())


def test_unknown_split():
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation")
    with pytest.raises(ValueError, match="split"):
        load_split("everything")
