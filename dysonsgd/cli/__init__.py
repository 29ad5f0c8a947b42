"""The ``dysonsgd`` command.

Each sub-command lives in its own module exposing ``register(subparsers)``; the modules are
listed in :data:`COMMANDS`. Numerics stay in the library: these modules only parse, call and print.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dysonsgd._checks import InputError
from dysonsgd._version import __version__

#: sub-command modules, in the order they appear in ``dysonsgd --help``
COMMANDS: tuple[str, ...] = (
    "dysonsgd.cli.theory",
    "dysonsgd.cli.train",
    "dysonsgd.cli.sde",
    "dysonsgd.cli.sweep",
    "dysonsgd.cli.figures",
    "dysonsgd.cli.validate",
    "dysonsgd.cli.monitor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dysonsgd",
        description="Stochastic-equation theory of SGD training (Park, Lucini, Aarts 2025).",
    )
    parser.add_argument("--version", action="version", version=f"dysonsgd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except InputError as exc:  # the library's own input errors only; anything else is a bug
        print(f"dysonsgd {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
