"""Argument helpers the ``solidrec`` subcommands share."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any


class Accumulate(argparse.Action):
    """A list option that may be given several times: every occurrence adds its values
    (``--set a=1 --set b=2`` is ``[a=1, b=2]``); the first replaces the default.

    argparse's own ``nargs='+'`` keeps only the last occurrence, silently, and
    ``action='extend'`` appends to the default list instead of replacing it.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        given = list(values) if isinstance(values, (list, tuple)) else [values]
        current = getattr(namespace, self.dest)
        # Still the default object: this is the first occurrence, which replaces it.
        first = current is None or current is self.default
        setattr(namespace, self.dest, (given if first else [*current, *given]))


def plain(doc: str | None) -> str:
    """A docstring as ``--help`` text: reST roles and literals as plain words."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc or "")
    return text.replace("``", "")


def add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE ...``, repeatable (:class:`Accumulate`) into ``args.set``."""
    p.add_argument(
        "--set", nargs="+", default=[], action=Accumulate, metavar="KEY=VALUE", help=help
    )
