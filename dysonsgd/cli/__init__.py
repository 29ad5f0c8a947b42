"""The ``dysonsgd`` command.

Each sub-command lives in its own module exposing ``register(subparsers)``; the modules are
listed in :data:`COMMANDS`. Numerics stay in the library: these modules only parse, call and print.

:func:`main` is the one place that turns the library's own exceptions into one line on stderr
and an exit status: bad input (:class:`~dysonsgd._checks.InputError`) 2, Ctrl-C
(``KeyboardInterrupt``) 130, a full disk or quota (``ENOSPC``, ``EDQUOT``) 74 (``EX_IOERR``). A
handler may set ``args.kept`` to a callable saying what is kept and how to go on (``dysonsgd
sweep``: the cells complete in the store, rerunning resumes). Every other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
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


#: exit statuses of a stopped command: interrupted (128 + SIGINT), no space (EX_IOERR)
EXIT_INTERRUPTED, EXIT_NO_SPACE = 130, 74
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _no_space(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind ``exc`` (itself, its cause or context), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _stopped(args: argparse.Namespace, why: str) -> None:
    """One line: why the command stopped, what is kept and how to go on."""
    kept = "outputs being written may be incomplete; rerun the command"
    if callable(getattr(args, "kept", None)):
        try:
            kept = args.kept()
        except Exception:  # the line must come out even if the store is broken
            pass
    print(f"dysonsgd {args.command}: {why}: {kept}", file=sys.stderr)


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
    except KeyboardInterrupt:
        _stopped(args, "interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        full = _no_space(exc)
        if full is None:
            raise
        where = f" writing {full.filename!r}" if full.filename else ""
        _stopped(args, f"no space left on the device{where} ({full.strerror or full})")
        return EXIT_NO_SPACE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
