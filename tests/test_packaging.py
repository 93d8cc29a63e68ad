"""The version is written once (``toycode.__version__``) and the installed metadata agrees."""

import importlib.metadata
import re
from pathlib import Path

import pytest

import toycode

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_written_once():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?", toycode.__version__)


def test_the_installed_metadata_carries_that_version():
    installed = importlib.metadata.version("toycode")
    assert installed == toycode.__version__, (
        f"installed metadata says {installed}: reinstall (`pip install -e .`)"
    )
