"""Argument checks shared by every layer, and the library's one input-error type.

Every public function checks its inputs before doing work and raises :class:`InputError`
naming the parameter and the allowed range. The ``dysonsgd`` command maps exactly this type
(and its subclasses, such as :class:`dysonsgd.runs.config.ConfigError`) to exit status 2;
any other exception is a bug and shows as one.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = [
    "InputError",
    "check_array",
    "check_in_range",
    "check_index",
    "check_int",
    "check_positive",
    "check_seed",
    "readable",
]


class InputError(ValueError):
    """Bad input to dysonsgd: the message names the parameter and the allowed range.

    A subclass of ``ValueError``, so ``except ValueError`` keeps working; raised before any work
    starts.
    """


def _finite_array(name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a real number or array of real numbers") from exc
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite (got NaN or infinity)")
    return arr


def check_positive(name: str, value, *, allow_zero: bool = False):
    """Return ``value`` (float or array) after checking that it is finite and > 0 (or >= 0)."""
    arr = _finite_array(name, value)
    bad = arr < 0 if allow_zero else arr <= 0
    if np.any(bad):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be {bound}, got {value!r}")
    return float(arr) if arr.ndim == 0 else arr


def check_in_range(
    name: str,
    value,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
):
    """Check ``low <(=) value <(=) high`` element-wise and return the value as float/array."""
    arr = _finite_array(name, value)
    below = arr <= low if low_open else arr < low
    above = arr >= high if high_open else arr > high
    if np.any(below | above):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise InputError(f"{name} must lie in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return float(arr) if arr.ndim == 0 else arr


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """Check that ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_index(name: str, value, length: int) -> int:
    """Check that ``value`` is an integer index into ``length`` items (negative counts from the
    end, as in Python) and return it as a non-negative ``int``."""
    allowed = f"an integer in [-{length}, {length - 1}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be {allowed}, got {value!r}")
    if not -length <= value < length:
        raise InputError(f"{name} must be {allowed}, got {value!r}")
    return int(value) % length


def check_seed(name: str, value):
    """Check that ``value`` can seed ``numpy.random.SeedSequence``: an integer >= 0, a sequence
    of such integers, or a ``SeedSequence`` itself; return it unchanged (ints as ``int``)."""
    if isinstance(value, np.random.SeedSequence):
        return value
    items = value if isinstance(value, (list, tuple)) and value else [value]
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
           for v in items):
        return int(value) if items is not value else value
    raise InputError(f"{name} must be an integer >= 0, a list of them or a "
                     f"numpy.random.SeedSequence, got {value!r}")


def check_array(
    name: str,
    value,
    *,
    min_ndim: int = 1,
    shape_tail: Sequence[int | None] | None = None,
) -> np.ndarray:
    """Convert to a finite float array and check its dimensionality and trailing shape.

    ``shape_tail`` gives the required trailing dimensions; ``None`` entries match any size.
    """
    arr = _finite_array(name, value)
    if arr.ndim < min_ndim:
        raise InputError(
            f"{name} must have at least {min_ndim} dimension(s), got shape {arr.shape}"
        )
    if shape_tail is not None:
        tail = arr.shape[arr.ndim - len(shape_tail) :] if len(shape_tail) else ()
        ok = arr.ndim >= len(shape_tail) and all(
            want is None or got == want for got, want in zip(tail, shape_tail, strict=True)
        )
        if not ok:
            want = "(..., " + ", ".join("*" if w is None else str(w) for w in shape_tail) + ")"
            raise InputError(f"{name} must have shape {want}, got {arr.shape}")
    return arr


#: what file readers raise on a damaged or foreign file: numpy (``EOFError`` on an empty
#: archive, ``ValueError`` on random bytes), zipfile (a truncated archive), json (``ValueError``),
#: scipy's netCDF reader (``TypeError``/``ValueError``/``IndexError`` on a non-netCDF file),
#: zarr (``ValueError`` subclasses, ``FileNotFoundError``) and a missing variable (``KeyError``)
READ_ERRORS = (EOFError, OSError, KeyError, IndexError, ValueError, TypeError,
               zipfile.BadZipFile, UnicodeDecodeError)


@contextmanager
def readable(path: str | Path, what: str = "run") -> Iterator[None]:
    """The one reader guard: a file that cannot be decoded becomes an :class:`InputError`.

    Wrap exactly the calls that open and decode ``path`` (not the computations on what was
    read, whose errors are bugs and keep their tracebacks). The message is one line: which file
    is not a readable dysonsgd ``what`` (``run``, ``sweep store``, ``monitor store``) and why.
    """
    try:
        yield
    except InputError:
        raise
    except READ_ERRORS as exc:
        why = (str(exc).strip().splitlines() or [""])[0].strip() or "no details"
        raise InputError(f"{what}: {str(path)!r} is not a readable dysonsgd {what} "
                         f"({type(exc).__name__}: {why})") from exc


def grid_index(grid, value: float, rtol: float = 1e-9) -> int | None:
    """Index of the first entry of ``grid`` equal to ``value`` up to ``rtol``; None if absent.

    For looking up a config's or a user's T or sigma_W among a run's grid values, which went
    through float arithmetic (1/sigma_W, files) on the way.
    """
    hit = np.flatnonzero(np.isclose(np.asarray(grid, dtype=float), value, rtol=rtol))
    return int(hit[0]) if hit.size else None
