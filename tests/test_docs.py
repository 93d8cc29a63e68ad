"""The documentation site builds offline with ``mkdocs build --strict`` and shows what it should.

--strict turns every warning into a failure: a broken link, a page missing from the nav, an API
reference entry naming a module or object that no longer exists.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from toycode.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(out)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html" if name else site / "index.html").read_text()


def test_home_has_the_two_commands_and_a_figure(site):
    home = _page(site, "")
    text = re.sub(r"<[^>]+>", "", home)   # code highlighting puts each word in its own span
    assert "make demo" in text and "make test" in text
    assert 'src="figures/gmm_between_samples.png"' in home
    assert (site / "figures" / "gmm_between_samples.png").stat().st_size > 10_000


def test_formulas_are_marked_up_for_mathjax(site):
    design = _page(site, "design")
    assert design.count('class="arithmatex"') > 40
    # generic arithmatex: TeX kept verbatim inside \( \) and \[ \] for MathJax to typeset
    assert r"\[" in design and r"p^*(x) \;\propto\; p(x)\, e^{\lambda r(x)}" in design
    assert "javascripts/mathjax.js" in design


def test_cli_page_is_the_parsers_help(site):
    """Generated at build time, so a new command or option appears without editing docs/."""
    cli = _page(site, "cli")
    commands = next(a for a in build_parser()._actions if a.__class__.__name__ ==
                    "_SubParsersAction").choices
    for name, sub in commands.items():
        assert f"toycode {name}" in cli, name
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in cli, (name, flag)


def test_notebook_pages_show_their_saved_figures(site):
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = _page(site, f"notebooks/{nb.stem}")
        assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', page)) >= 1, nb.name


def test_api_reference_documents_the_core(site):
    core = _page(site, "reference/core")
    for anchor in ("sampler.sample_blockwise", "sampler.SampleResult", "diffusion.Process",
                   "guidance.GuidedBackend", "backend.Backend", "search.beam_search"):
        assert f'id="toycode.core.{anchor}"' in core, anchor
    assert 'id="toycode.experiments.api.sample"' in _page(site, "reference/tools")
    exact = _page(site, "reference/exact")
    for anchor in ("targets.exact_target", "metrics.noise_floor", "gmm.GaussianMixture"):
        assert f'id="toycode.exact.{anchor}"' in exact, anchor
