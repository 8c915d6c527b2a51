"""The ``solidrec`` command line.

Subcommands live in the modules of :mod:`solidrec.commands`; each exposes
``add_parser(subparsers)`` that registers one or more subcommands and sets ``func`` (a
callable taking the parsed ``argparse.Namespace`` and returning an exit code) with
``set_defaults``. To add a subcommand module, append its import path to
``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from solidrec import __version__
from solidrec.data.io import OutputError

COMMAND_MODULES: list[str] = [
    "solidrec.commands.data",
    "solidrec.commands.train",
    "solidrec.commands.evaluate",
    "solidrec.commands.recommend",
    "solidrec.commands.report",
    "solidrec.commands.reproduce",
    "solidrec.commands.tune",
]


VERBOSE = "log progress of each step"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="solidrec", description="SOLID recommender: data, training, evaluation."
    )
    parser.add_argument("--version", action="version", version=f"solidrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    for command in sub.choices.values():
        # `solidrec prepare ... -v` as well as `solidrec -v prepare ...`; SUPPRESS keeps
        # the top-level value when the subcommand is not given it.
        command.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``solidrec`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C outside a training step (which saves and says how to resume itself).
        print(f"\nsolidrec {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        # Disk full, read-only or forbidden output: one line naming the path, no traceback.
        text = e.strerror if isinstance(e, OutputError) else str(e)
        print(f"solidrec {args.command}: error: {text}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
