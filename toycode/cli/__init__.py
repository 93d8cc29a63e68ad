"""The `toycode` command line: reward-guided sampling checked against exact targets.

2-D problems: demo, compare, target, sample, train, tradeoff, plot. All methods against exact
targets: leaderboard. MNIST: train-mnist,
mnist-eval, mnist-demo, mnist-gmm. Stable Diffusion: sd, sd-sweep. Each has a Python counterpart
in toycode.experiments.api, toycode.experiments.demo, toycode.experiments.tradeoff, toycode.mnist,
toycode.sd.run or toycode.sd.sweep.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import mnist, sd, studies, toy
from .common import DTYPES

__all__ = ["DTYPES", "COMMANDS", "build_parser", "main"]

COMMANDS = (
    toy.add_demo,
    toy.add_compare,
    toy.add_target,
    toy.add_sample,
    sd.add_sd,
    sd.add_sd_sweep,
    mnist.add_train_mnist,
    mnist.add_mnist_eval,
    mnist.add_mnist_demo,
    mnist.add_mnist_gmm,
    studies.add_tradeoff,
    studies.add_leaderboard,
    studies.add_values,
    studies.add_train_value,
    studies.add_plot,
    studies.add_lineages,
    studies.add_compositions,
    studies.add_dimensions,
    studies.add_routes,
    toy.add_train,
)
"""Each subcommand's parser, in the order `toycode --help` lists them; each sets its runner as
``func``."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``toycode CMD: error: ...`` (no usage
    block: the message names the option; ``--help`` shows the rest)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The `toycode` parser: the global options and one subparser per command."""
    p = Parser(prog="toycode", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run `toycode ARGV`; a bad argument is one line on stderr and exit status 2 (returned,
    also for the parser's own errors and ``--help``'s 0, so that in-process callers see the
    status the shell would)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    # commands only write figures to files; library modules leave the backend alone so that a
    # notebook keeps its inline backend
    import matplotlib

    matplotlib.use("Agg")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except ValueError as err:
        print(f"toycode {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
