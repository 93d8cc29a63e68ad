"""The documentation site builds offline with ``mkdocs build --strict`` and shows what it should.

--strict turns every warning into a failure: a broken link, a page missing from the nav, an API
reference entry naming a module or object that no longer exists.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from toycode.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html" if name else site / "index.html").read_text()


def test_home_has_the_two_commands_and_a_figure(site):
    home = _page(site, "")
    text = re.sub(r"<[^>]+>", "", home)  # code highlighting puts each word in its own span
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
    commands = next(
        a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"
    ).choices
    for name, sub in commands.items():
        assert f"toycode {name}" in cli, name
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in cli, (name, flag)


def test_lesson_pages_show_their_saved_figures(site):
    """Each lesson page shows every figure its notebook saved (mkdocs-jupyter inlines them)."""
    shown = 0
    for nb in hooks.lessons():
        saved = sum(
            1
            for cell in json.loads(nb.read_text())["cells"]
            for out in cell.get("outputs", [])
            if "image/png" in out.get("data", {})
        )
        page = _page(site, f"notebooks/{nb.stem}")
        images = len(re.findall(r'<img[^>]+src="data:image/png;base64,', page))
        assert images >= saved, (nb.name, images, saved)
        shown += images
    assert shown or not hooks.lessons()


def test_api_reference_documents_the_core(site):
    core = _page(site, "reference/core")
    for anchor in (
        "sampler.sample_blockwise",
        "sampler.SampleResult",
        "diffusion.Process",
        "guidance.GuidedBackend",
        "backend.Backend",
        "search.beam_search",
    ):
        assert f'id="toycode.core.{anchor}"' in core, anchor
    assert 'id="toycode.experiments.api.sample"' in _page(site, "reference/tools")
    exact = _page(site, "reference/exact")
    for anchor in ("targets.exact_target", "metrics.noise_floor", "gmm.GaussianMixture"):
        assert f'id="toycode.exact.{anchor}"' in exact, anchor


# --- offline: every script, stylesheet and the math come from the site itself -----------------


class _Assets(HTMLParser):
    """The URLs a page loads (<script src>, <link href>) and its inline scripts' text."""

    def __init__(self):
        super().__init__()
        self.scripts, self.links, self.inline, self._in_script = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in attrs
            if "src" in attrs:
                self.scripts.append(attrs["src"] or "")
        elif tag == "link" and attrs.get("href"):
            self.links.append((attrs.get("rel") or "", attrs["href"]))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.inline.append(data)


def _assets(path: Path) -> _Assets:
    parser = _Assets()
    parser.feed(path.read_text())
    return parser


def _remote(url: str) -> bool:
    return url.startswith(("http:", "https:", "//"))


# what a <link> loads; prev/next/canonical/alternate only name other pages
LOADING_RELS = {
    "stylesheet",
    "preconnect",
    "preload",
    "modulepreload",
    "prefetch",
    "icon",
    "dns-prefetch",
    "manifest",
}


def test_no_page_loads_a_script_or_stylesheet_from_the_network(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    for page in pages:
        found = _assets(page)
        name = page.relative_to(site).as_posix()
        assert not [u for u in found.scripts if _remote(u)], name
        assert not [
            u for rel, u in found.links if set(rel.split()) & LOADING_RELS and _remote(u)
        ], name
        # e.g. nbconvert's mermaid loader, an import("https://...") in an inline module
        assert not re.search(r"""import\(\s*["'](https?:)?//""", "".join(found.inline)), name
        assert "fonts.googleapis" not in page.read_text(), name


def _math_pages(site: Path) -> list[Path]:
    pages = [p for p in site.rglob("index.html") if 'class="arithmatex"' in p.read_text()]
    return pages + [site / "notebooks" / nb.stem / "index.html" for nb in _lessons_with_math()]


def _lessons_with_math() -> list[Path]:
    """Lessons whose markdown cells have $ $ or $$ $$ math (a \\$ is a plain dollar)."""
    return [
        nb
        for nb in hooks.lessons()
        if any(
            cell["cell_type"] == "markdown"
            and _MATH.search("".join(cell["source"]).replace(r"\$", ""))
            for cell in json.loads(nb.read_text())["cells"]
        )
    ]


_MATH = re.compile(r"\$[^$\s][^$]*\$")


def test_mathjax_is_served_from_the_site_to_every_page_with_math(site):
    script = site / hooks.MATHJAX_SCRIPT
    assert script.stat().st_size > 1_000_000  # the whole TeX-to-SVG component, not a stub
    pages = _math_pages(site)
    assert site / "design" / "index.html" in pages
    for page in pages:
        scripts = _assets(page).scripts
        local = [u for u in scripts if u.endswith(hooks.MATHJAX_SCRIPT)]
        assert len(local) == 1, page
        assert (page.parent / local[0]).resolve() == script.resolve(), page
        # the settings (javascripts/mathjax.js) are read when MathJax starts, so they come first
        config = next(i for i, u in enumerate(scripts) if u.endswith("javascripts/mathjax.js"))
        assert config < scripts.index(local[0]), page


# --- the course -----------------------------------------------------------------------------


def test_lessons_are_numbered_notebooks_in_numeric_order(tmp_path):
    for name in ("10_research.ipynb", "02_b.ipynb", "9_a.ipynb", "scratch.ipynb", "01_x.txt"):
        (tmp_path / name).write_text(
            json.dumps(
                {"cells": [{"cell_type": "markdown", "source": ["# Lesson 3 — Kept as written\n"]}]}
            )
        )
    assert [p.name for p in hooks.lessons(tmp_path)] == [
        "02_b.ipynb",
        "9_a.ipynb",
        "10_research.ipynb",
    ]
    assert hooks.lesson_title(tmp_path / "9_a.ipynb") == "Lesson 3 — Kept as written"
    (tmp_path / "04_bare.ipynb").write_text(
        json.dumps(
            {
                "cells": [
                    {"cell_type": "markdown", "source": ["Some text\n", "# The tilted target\n"]}
                ]
            }
        )
    )
    assert hooks.lesson_title(tmp_path / "04_bare.ipynb") == "Lesson 4 — The tilted target"


def test_course_section_lists_the_lessons_in_order(site):
    home = _page(site, "")
    lessons = hooks.lessons()
    if not lessons:
        pytest.skip("no notebooks/NN_*.ipynb lesson yet")
    nav = home[: home.index('<div class="md-content"')]
    assert re.search(r'<span class="md-ellipsis">\s*Course\s*</span>', nav)
    assert "Notebooks" not in re.sub(r"<[^>]+>", " ", nav)
    where = []
    for nb in lessons:
        title = hooks.lesson_title(nb)
        link = re.search(
            rf'<a href="notebooks/{re.escape(nb.stem)}/" class="md-nav__link">'
            rf'\s*<span class="md-ellipsis">\s*{re.escape(title)}\s*</span>',
            nav,
        )
        assert link, (nb.name, title)
        where.append(link.start())
        # the home page's own list, generated from the same lessons
        assert f'<a href="notebooks/{nb.stem}/">{title}</a>' in home, nb.name
    assert where == sorted(where)


# --- headless Chromium, network off: the formulas are typeset --------------------------------

CHROMIUM = next(
    (
        shutil.which(b)
        for b in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
        if shutil.which(b)
    ),
    None,
)
OFFLINE = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # nothing is reachable: every host unresolvable, every request to a closed port
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=10000",
]  # let MathJax finish before the DOM is dumped


def _browse(page: Path, profile: Path, *extra: str) -> str:
    run = subprocess.run(
        [CHROMIUM, *OFFLINE, f"--user-data-dir={profile}", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def _without_math(html: str) -> str:
    return re.sub(r"<mjx-container.*?</mjx-container>", "", html, flags=re.S)


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)"
)


@needs_chromium
def test_design_page_formulas_typeset_offline_in_chromium(site, tmp_path):
    page = site / "design" / "index.html"
    dom = _browse(page, tmp_path / "profile", "--dump-dom")
    spans = re.findall(r'<(span|div) class="arithmatex">(.*?)</\1>', dom, re.S)
    assert len(spans) == page.read_text().count('class="arithmatex"') > 40
    for _, inner in spans:
        assert "<mjx-container" in inner, inner[:200]
        assert not re.search(r"\\[(\[]", _without_math(inner)), inner[:200]
    assert '<g data-mml-node="merror"' not in dom  # no TeX error boxes


@needs_chromium
def test_lesson_math_typesets_offline_in_chromium(site, tmp_path):
    with_math = _lessons_with_math()
    if not with_math:
        pytest.skip("no lesson has $ $ math in its markdown yet")
    page = site / "notebooks" / with_math[0].stem / "index.html"
    dom = _browse(page, tmp_path / "profile", "--dump-dom")
    cells = re.findall(
        r'<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown[^>]*>(.*?)</div>', dom, re.S
    )
    typeset = [c for c in cells if "<mjx-container" in c]
    assert typeset, page
    for cell in cells:
        text = _without_math(cell)
        assert "$$" not in text and not re.search(r"\\[(\[]", text), text[:200]
    assert '<g data-mml-node="merror"' not in dom
