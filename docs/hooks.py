"""mkdocs hooks: pages built from the repository itself, so that they cannot go stale.

- the committed, executed notebooks (``notebooks/*.ipynb``) and the figures (``figures/*.png``)
  are added to the site from where they live, not copied into ``docs/``;
- the nav's "Notebooks" section lists every notebook there, titled by its first heading;
- ``cli.md`` is generated from :func:`toycode.cli.build_parser`'s help text at every build.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
HELP_WIDTH = 78   # what a material code block shows without scrolling


def _help(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=HELP_WIDTH)
    return parser.format_help()


def cli_reference() -> str:
    """Markdown for the command line: the top-level help, then every command's own help."""
    from toycode.cli import build_parser
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["# Command line\n",
             "Generated from `toycode.cli.build_parser()` at every docs build: the text "
             f"`toycode COMMAND --help` prints, wrapped at {HELP_WIDTH} columns.\n",
             "```text\n" + _help(parser) + "```\n"]
    for name, sub in commands.choices.items():
        parts.append(f"## `toycode {name}`\n\n```text\n{_help(sub)}```\n")
    return "\n".join(parts)


def _notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def _title(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return notebook.stem


def on_config(config):
    nav = config["nav"]
    at = next(i for i, item in enumerate(nav) if "Results" in item) + 1
    nav.insert(at, {"Notebooks": [{_title(nb): f"notebooks/{nb.name}"} for nb in _notebooks()]})
    return config


# before mkdocs-jupyter's on_files, which turns the .ipynb files it is given into pages
@event_priority(50)
def on_files(files: Files, config) -> Files:
    for path in [*_notebooks(), *sorted((ROOT / "figures").glob("*.png"))]:
        files.append(File(f"{path.parent.name}/{path.name}", str(ROOT), config["site_dir"],
                          config["use_directory_urls"]))
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    return files
