"""Output paths checked before any work starts (issue 13, class 1).

Every command that writes calls :func:`check_output_file` or :func:`check_output_dir` on each of
its output paths before it trains, integrates or draws, so that a path that cannot be written
(a directory where a file is expected, a missing parent directory, no write permission) is
refused with an :class:`~dysonsgd._checks.InputError` naming the option, and no work is thrown
away. The checks only look: they create and write nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dysonsgd._checks import InputError

__all__ = ["RETIRED_SUFFIXES", "check_output_dir", "check_output_file"]

#: suffixes that are read but no longer written, with what to do instead (one line each)
RETIRED_SUFFIXES = {
    ".npz": ".npz files are no longer written (the hand-made layout is retired): give a .nc "
            "file (netCDF4, compressed), which every RUN argument reads; an old .npz run still "
            "reads, and python -c \"from dysonsgd.runs.files import convert_run; "
            "convert_run('OLD.npz', 'NEW.nc')\" converts it",
}


def _writable_dir(option: str, directory: Path, what: str) -> None:
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"{option}: {what} {str(directory)!r} is not writable")


def check_output_file(option: str, path: str | Path, *,
                      suffixes: Sequence[str] | None = None) -> Path:
    """Check that the file ``path`` can be written; return it as a :class:`~pathlib.Path`.

    Parameters
    ----------
    option : str
        The option that named the path (``--out``), put in the message.
    path : str or Path
        The file to be written; an existing file is overwritten, so it must be writable.
    suffixes : sequence of str, optional
        The allowed suffixes (``(".nc",)``). A retired one (:data:`RETIRED_SUFFIXES`) is
        refused with what to do instead.

    Raises
    ------
    InputError
        If the suffix is not allowed, ``path`` is a directory, its parent directory does not exist
        (or is not a directory), or the file or its directory is not writable.
    """
    path = Path(path)
    if suffixes is not None and path.suffix not in suffixes:
        if path.suffix in RETIRED_SUFFIXES:
            raise InputError(f"{option}: {str(path)!r}: {RETIRED_SUFFIXES[path.suffix]}")
        raise InputError(f"{option} must end in {' or '.join(suffixes)}, got {str(path)!r}")
    if path.is_dir():
        raise InputError(f"{option}: {str(path)!r} is a directory, expected a file")
    parent = path.parent
    if not parent.exists():
        raise InputError(f"{option}: directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise InputError(f"{option}: {str(parent)!r} is not a directory")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{option}: file {str(path)!r} exists and is not writable")
    _writable_dir(option, parent, "directory")
    return path


def check_output_dir(option: str, path: str | Path) -> Path:
    """Check that the directory ``path`` exists and is writable, or can be created.

    A missing directory is created by the writer with its parents (``mkdir(parents=True)``), so
    the nearest existing ancestor must be a writable directory.

    Raises
    ------
    InputError
        If ``path`` (or an ancestor) is an existing file, or the directory that would hold the new
        entries is not writable.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{option}: {str(path)!r} is a file, expected a directory")
        _writable_dir(option, path, "directory")
        return path
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{option}: {str(ancestor)!r} is a file, so directory {str(path)!r} "
                         "cannot be made")
    _writable_dir(option, ancestor, "directory")
    return path
