"""Argument-parsing helpers shared by every ``hrbench`` command (bench and survey_app alike).

Every option that takes several values accepts them space-separated, comma-separated, or both:
``--methods telea ns``, ``--methods telea,ns`` and ``--methods telea, ns`` mean the same.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any


class Parser(argparse.ArgumentParser):
    """argparse with usage mistakes as one ``hrbench: error: …`` line (exit 2), like every
    other user mistake, instead of the usage block; subcommands inherit it."""

    def error(self, message: str):
        self.exit(2, f"hrbench: error: {message} (see `{self.prog} --help`)\n")


def split_values(values: Iterable[object]) -> list[str]:
    """Items of several values, each of which may hold comma-separated ones; blanks dropped."""
    return [t.strip() for v in values for t in str(v).split(",") if t.strip()]


class ListAction(argparse.Action):
    """``nargs="+"`` whose tokens are also split on commas, each item converted by ``item_type``.

    Use through :func:`add_list_option`. A bad item is reported by argparse as one line naming
    the option (``argument --resolutions: 'abc' is not ...``), exit status 2.
    """

    def __init__(self, option_strings, dest, item_type: Callable[[str], Any] = str, **kwargs):
        kwargs.setdefault("nargs", "+")
        super().__init__(option_strings, dest, **kwargs)
        self.item_type = item_type

    def __call__(self, parser, namespace, values, option_string=None):
        items = split_values(values)
        if not items:
            raise argparse.ArgumentError(self, "expected at least one value")
        out = []
        for t in items:
            try:
                out.append(self.item_type(t))
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                why = str(exc) if isinstance(exc, argparse.ArgumentTypeError) else ""
                name = getattr(self.item_type, "__name__", "value")
                raise argparse.ArgumentError(
                    self, why or f"{t!r} is not a valid {'whole number' if name == 'int' else name}"
                ) from None
        setattr(namespace, self.dest, out)


def add_list_option(parser: argparse.ArgumentParser, *flags: str, item_type=str, **kwargs):
    """Add a multi-value option (space- and/or comma-separated) to ``parser``."""
    kwargs.setdefault("metavar", "VALUE")
    help_text = kwargs.get("help")
    if help_text is not None and "comma" not in help_text:
        kwargs["help"] = help_text + " (space- or comma-separated)"
    return parser.add_argument(*flags, action=ListAction, item_type=item_type, **kwargs)

