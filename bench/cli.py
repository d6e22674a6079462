"""The ``hrbench`` command line: a thin front over the library.

Core commands live here (prepare, run, table, plot, methods). Other command groups register
themselves from their own modules through ``register(subparsers)``:
``bench.inpaint_cli`` (inpaint, weights), ``bench.train.cli`` (train), ``survey_app.cli``
(survey). Every user mistake surfaces as one ``hrbench: error: …`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .cli_args import Parser
from .errors import UserError

_EXTENSIONS = ("bench.inpaint_cli", "bench.train.cli", "survey_app.cli")
log = logging.getLogger("hrbench")


def _core_commands(sub: argparse._SubParsersAction) -> None:
    from . import commands

    commands.register(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hrbench", description="Benchmark and crowd studies for high-resolution inpainting."
    )
    parser.add_argument("--version", action="version", version=f"hrbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _core_commands(sub)
    for mod in _EXTENSIONS:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
        stream=sys.stderr,
    )
    func = getattr(args, "func", None)
    if func is None:
        # `hrbench` alone runs the default benchmark on the embedded sample set.
        args = parser.parse_args(["run", *(argv or [])])
        func = args.func
    try:
        return int(func(args) or 0)
    except UserError as exc:
        print(f"hrbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hrbench: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
