"""mkdocs hooks: pages built from the repository itself, so that they cannot go stale.

- the course's lessons, the committed, executed notebooks ``notebooks/NN_*.ipynb``, and the
  figures (``figures/*.png``) are added to the site from where they live, not copied into
  ``docs/``; each lesson page shows its saved outputs, figures included;
- the nav's "Course" section lists the lessons in numeric order, each titled "Lesson N — …" by
  its first heading, and the home page's ``<!-- course -->`` line becomes the same list;
- MathJax 3 is served from the site itself: the ``docs`` extra installs it from PyPI
  (``django-static-mathjax``, the official MathJax build, with no Django dependency) and
  :func:`mathjax_files` copies it into ``site/mathjax/``, so formulas typeset with no network
  (an offline lab, a saved copy of the site) and no copy of MathJax lives in the repository;
- ``cli.md`` is generated from :func:`toycode.cli.build_parser`'s help text at every build;
- the nav's "Methods" section lists ``docs/methods/*.md`` (one page per method family, titled by
  its first heading), and each page whose front matter names ``methods: [...]`` gets their
  measured rows from the committed leaderboard (``figures/leaderboard/results.jsonl``) appended;
  ``leaderboard.md`` is generated from the same table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
HELP_WIDTH = 78  # what a material code block shows without scrolling


def _help(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=HELP_WIDTH)
    return parser.format_help()


def cli_reference() -> str:
    """Markdown for the command line: the top-level help, then every command's own help."""
    from toycode.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = [
        "# Command line\n",
        "Generated from `toycode.cli.build_parser()` at every docs build: the text "
        f"`toycode COMMAND --help` prints, wrapped at {HELP_WIDTH} columns.\n",
        "```text\n" + _help(parser) + "```\n",
    ]
    for name, sub in commands.choices.items():
        parts.append(f"## `toycode {name}`\n\n```text\n{_help(sub)}```\n")
    return "\n".join(parts)


LESSON = re.compile(r"(\d+)_.+\.ipynb")


def lessons(folder: Path = ROOT / "notebooks") -> list[Path]:
    """The course: ``notebooks/NN_*.ipynb`` in numeric order (9 before 10)."""
    found = [
        (int(m[1]), nb.name, nb)
        for nb in folder.glob("*.ipynb")
        if (m := LESSON.fullmatch(nb.name))
    ]
    return [nb for *_, nb in sorted(found)]


def _title(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return notebook.stem


def lesson_title(notebook: Path) -> str:
    """The lesson's first heading ("Lesson N — Title"), numbered from its file name if it is not."""
    heading = _title(notebook)
    if re.match(r"Lesson \d+\b", heading):
        return heading
    return f"Lesson {int(LESSON.fullmatch(notebook.name)[1])} — {heading}"


COURSE_MARK = "<!-- course -->"


def course_list() -> str:
    """Markdown for the home page: every lesson, linked, in order."""
    items = [f"[{lesson_title(nb)}](notebooks/{nb.name})" for nb in lessons()] or ["none yet"]
    return "\n".join(f"    - {item}" for item in items)


# the component mkdocs.yml loads (TeX in, SVG out: no web fonts to fetch, and a saved page keeps
# its typeset formulas), with the folders it loads lazily (the context menu and accessibility)
MATHJAX_SCRIPT = "mathjax/es5/tex-svg-full.js"
MATHJAX_LAZY = ("ui", "a11y", "sre")


def _mathjax_static() -> Path:
    spec = importlib.util.find_spec("mathjax")
    static = (
        Path(next(iter(spec.submodule_search_locations))) / "static"
        if spec and spec.submodule_search_locations
        else None
    )
    if static is None or not (static / MATHJAX_SCRIPT).is_file():
        raise RuntimeError(
            f"{MATHJAX_SCRIPT} not found: the docs need the `docs` extra "
            "(pip install -e '.[docs]', which brings django-static-mathjax)"
        )
    return static


def mathjax_files(config) -> list[File]:
    """MathJax's script and its lazily loaded parts, as site files under ``mathjax/es5/``."""
    static = _mathjax_static()
    es5 = static / "mathjax" / "es5"
    paths = [static / MATHJAX_SCRIPT] + [
        p for d in MATHJAX_LAZY for p in sorted((es5 / d).rglob("*")) if p.is_file()
    ]
    return [
        File(
            p.relative_to(static).as_posix(),
            str(static),
            config["site_dir"],
            config["use_directory_urls"],
        )
        for p in paths
    ]


# nbconvert's page head: a MathJax 2 loader with an empty URL and its (inert) configuration, and
# a mermaid loader that imports mermaid from a CDN. The site's own MathJax typesets notebooks
# too, and no notebook draws a mermaid diagram, so both are dropped from the built page.
NBCONVERT_MATHJAX = re.compile(
    r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S
)
NBCONVERT_MERMAID = re.compile(
    r'<script type="module">(?:(?!</script>).)*?mermaid\.esm'
    r".*?</script>",
    re.S,
)


LEADERBOARD = ROOT / "figures" / "leaderboard"


def _method_pages() -> list[Path]:
    return sorted((ROOT / "docs" / "methods").glob("*.md"))


def _heading(page: Path) -> str:
    for line in page.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return page.stem


def _leaderboard_rows() -> list[dict]:
    from toycode.experiments.tradeoff import read_results

    return read_results(LEADERBOARD)


def measured(methods: list[str], rows: list[dict]) -> str:
    """Markdown: every leaderboard row of these methods, mean over seeds per budget."""
    from toycode.leaderboard.board import summary

    cells = summary([r for r in rows if r["method"] in methods])
    if not cells:
        return (
            "\n## Measured\n\nNot in the committed leaderboard yet (`make leaderboard` adds it).\n"
        )
    kinds = {r["bench"]: r["distance_kind"] for r in rows if "distance_kind" in r}
    lines = [
        "",
        "## Measured",
        "",
        "From the committed leaderboard (`make leaderboard`; Tweedie values, equal compute, "
        "mean over seeds; 1 ≈ an exact sampler of p\\*). See [the leaderboard](../"
        "leaderboard.md) for every method side by side.",
        "",
        "| method | bench | distance to p\\* | budget m | NFE per output | reward |",
        "|---|---|---|---:|---:|---:|",
    ]
    for (bench, method), by_budget in sorted(
        cells.items(), key=lambda kv: (methods.index(kv[0][1]), kv[0][0])
    ):
        for budget, c in by_budget.items():
            if isinstance(c, str):
                lines.append(f"| {method} | {bench} | skipped: {c} | {budget} | | |")
            else:
                lines.append(
                    f"| {method} | {bench} | {c['distance']:.3g} ({kinds[bench]}) | "
                    f"{budget} | {c['nfe']:.0f} | {c['reward']:.3g} |"
                )
    return "\n".join(lines) + "\n"


LEADERBOARD_INTRO = """# Leaderboard

Every method of toycode, at equal compute, against the exact tilted target
p\\* ∝ p·e^{λr}. `make leaderboard` (= `toycode leaderboard --out figures/leaderboard`)
runs each method at budgets of about m·T denoiser calls per output sample (m = 1, 4, 16, 32 on
the 2-D problems; 1, 4, 16 on MNIST), on five benches: the 2-D problems `between`, `box`,
`ring` (distance: MMD² to an exact sample, in units of its noise floor), the MNIST class tilt
(|class-3 fraction − P\\*(3)| in standard errors) and the 784-D MNIST mixture (mode-weight TV, in
units of its noise floor). On every bench 1 is what an exact sampler of p\\* scores. A particle
method runs n populations of K particles and keeps one uniformly chosen particle per population
(K·T per output). CoDe, FK steering and DSearch act every B = T/5 steps. Every value is Tweedie's
r(x̂0). Methods that need a reward gradient (∇r) are skipped where the reward has none (`box`,
the MNIST class indicator), exact guidance where there is no exact target (MNIST classes). The
table shows each method at its largest budget (distance @ NFE per output); the figure every
budget; each method's page lists its rows. The module is
`toycode.leaderboard.board` (API reference: Experiments and figures).

"""


def leaderboard_page() -> str:
    from toycode.leaderboard.board import table

    rows = _leaderboard_rows()
    text = LEADERBOARD_INTRO
    if not rows:
        return text + "\nNo committed results yet: run `make leaderboard`.\n"
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- leaderboard-summary", "<!-- /leaderboard-summary -->"
    summary = readme[readme.index("-->", readme.index(start)) + 3 : readme.index(end)].strip()
    return (
        text
        + "\n"
        + table(rows)
        + "\n\n"
        + summary
        + "\n\n![leaderboard](figures/leaderboard.png)\n"
    )


def on_config(config):
    nav = config["nav"]
    at = next(i for i, item in enumerate(nav) if "Results" in item) + 1
    course = [{lesson_title(nb): f"notebooks/{nb.name}"} for nb in lessons()]
    if course:
        nav.insert(at, {"Course": course})
    nav.insert(
        at,
        {
            "Methods": [{"Leaderboard": "leaderboard.md"}]
            + [{_heading(p): f"methods/{p.name}"} for p in _method_pages()]
        },
    )
    return config


def on_page_markdown(markdown, page, config, files):
    if COURSE_MARK in markdown:
        markdown = markdown.replace(COURSE_MARK, course_list())
    methods = page.meta.get("methods")
    if not methods:
        return markdown
    return markdown + measured(list(methods), _leaderboard_rows())


# before mkdocs-jupyter's on_files, which turns the .ipynb files it is given into pages
@event_priority(50)
def on_files(files: Files, config) -> Files:
    for path in [*lessons(), *sorted((ROOT / "figures").glob("*.png"))]:
        files.append(
            File(
                f"{path.parent.name}/{path.name}",
                str(ROOT),
                config["site_dir"],
                config["use_directory_urls"],
            )
        )
    for file in mathjax_files(config):
        files.append(file)
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    files.append(File.generated(config, "leaderboard.md", content=leaderboard_page()))
    return files


def on_post_page(output, page, config):
    if not page.file.src_uri.endswith(".ipynb"):
        return output
    output = NBCONVERT_MATHJAX.sub("", output)
    if 'class="jp-Mermaid' not in output:
        output = NBCONVERT_MERMAID.sub("", output)
    return output
