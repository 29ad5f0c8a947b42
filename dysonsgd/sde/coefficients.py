"""Coefficients of the equations: constants, functions of t, or functions of (t, y).

A coefficient (K, V of (4.3); K_S, V_S, D_S of (4.8); E[Delta], Var[Delta] of (2.30)) is an
array, optionally with a leading path axis (one coefficient per trajectory), a callable of t
(such as :func:`piecewise_linear`, the measured K(t), V(t) between snapshots) or a callable of
(t, y) for state-dependent coefficients. :func:`as_coefficient` turns each into ``f(t, y, rows)``
for the general engine; :func:`on_knots` evaluates arrays and :class:`PiecewiseLinear` on
common knots for the fused one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np

from dysonsgd._checks import InputError, check_array

__all__ = [
    "Coefficient",
    "PiecewiseLinear",
    "as_coefficient",
    "check_noise_matrix",
    "on_knots",
    "piecewise_linear",
]

Coefficient = np.ndarray | Callable[..., np.ndarray]


class PiecewiseLinear:
    """K(t) or V(t) linear in t between knots (the snapshot times), constant outside.

    Made by :func:`piecewise_linear`; callable as ``f(t)``. :func:`dysonsgd.sde.integrate`
    integrates equations whose coefficients are all arrays or ``PiecewiseLinear`` in its fused
    compiled kernel.
    """

    def __init__(self, times: np.ndarray, values: np.ndarray) -> None:
        self.times = times
        self.values = values

    def __call__(self, t: float) -> np.ndarray:
        times, values = self.times, self.values
        if t <= times[0]:
            return values[0]
        if t >= times[-1]:
            return values[-1]
        k = int(np.searchsorted(times, t, side="right")) - 1
        w = (t - times[k]) / (times[k + 1] - times[k])
        return (1.0 - w) * values[k] + w * values[k + 1]

    def at(self, knots: np.ndarray) -> np.ndarray:
        """The values at each of ``knots``: shape (len(knots), *values.shape[1:])."""
        return np.stack([self(float(t)) for t in knots])


def piecewise_linear(times, values) -> PiecewiseLinear:
    """Linear interpolation in time of coefficients measured on snapshot times.

    Parameters
    ----------
    times : array_like, shape (n_times,)
        Strictly increasing snapshot times.
    values : array_like, shape (n_times, ...)
        The coefficient at each time (e.g. K of shape (n_times, N) or V of shape
        (n_times, N, N), or with a path axis (n_times, P, N, N)); held constant outside the
        time range.

    Returns
    -------
    PiecewiseLinear
        ``f(t) -> ndarray`` of shape ``values.shape[1:]``.
    """
    times = check_array("times", times)
    values = check_array("values", values)
    if times.ndim != 1 or values.shape[0] != times.size:
        raise InputError(
            f"values must have shape (len(times), ...) = ({times.size}, ...), got {values.shape}"
        )
    if times.size > 1 and np.any(np.diff(times) <= 0):
        raise InputError("times must be strictly increasing")
    return PiecewiseLinear(times, values)


def as_coefficient(name: str, value, tail_ndim: int) -> Callable:
    """Wrap a constant, a callable of t or a callable of (t, y) as ``f(t, y, rows)``.

    A coefficient with more than ``tail_ndim`` dimensions carries a leading path axis (one
    coefficient per trajectory); ``rows`` then selects the paths being stepped.
    """
    if callable(value):
        try:
            n_args = len(inspect.signature(value).parameters)
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            n_args = 1
        if n_args >= 2:
            return lambda t, y, rows: value(t, y)
        return lambda t, y, rows: _select(np.asarray(value(t), dtype=float), rows, tail_ndim)
    arr = check_array(name, value, min_ndim=tail_ndim)
    return lambda t, y, rows: _select(arr, rows, tail_ndim)


def _select(arr: np.ndarray, rows, tail_ndim: int) -> np.ndarray:
    if rows is not None and arr.ndim > tail_ndim:
        return arr[rows]
    return arr


#: symmetry tolerance of :func:`check_noise_matrix`, in units of eps * N * max|V| per matrix: the
#: forward rounding error of U^T A U (two N-term dot products per entry) is ~2 N eps max|A|, so
#: 100 is a margin of 50 over that bound, declared before looking at measured V (which show
#: <= 4 eps max|V|); a genuinely asymmetric V is off by far more.
SYMMETRY_ROUNDING = 100.0


def check_noise_matrix(v: np.ndarray) -> None:
    """Raise InputError unless V (..., N, N) is finite, symmetric and non-negative.

    Symmetric means symmetric up to the rounding of the computation that produced V:
    max_ij |V_ij - V_ji| <= :data:`SYMMETRY_ROUNDING` * eps * N * max_ij |V_ij| for each matrix
    (eps of V's floating type, float64 for others), not element-wise, since rounding is relative
    to the largest entry and not to each small one.
    """
    if v.shape[-1] != v.shape[-2]:
        raise InputError(f"noise must have shape (..., N, N), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise InputError("noise must be finite")
    if np.any(v < 0):
        raise InputError("noise V_ij is a variance and must be >= 0 element-wise")
    n = v.shape[-1]
    eps = np.finfo(v.dtype if np.issubdtype(v.dtype, np.floating) else np.float64).eps
    if v.size == 0:
        return
    asym = np.max(np.abs(v - np.swapaxes(v, -1, -2)), axis=(-2, -1))
    scale = np.max(np.abs(v), axis=(-2, -1))
    tol = SYMMETRY_ROUNDING * eps * n * scale
    if np.any(asym > tol):
        worst = float(np.max(asym / np.where(scale > 0, scale, 1.0)))
        raise InputError(f"noise V must be symmetric (V_ij = V_ji up to rounding: "
                         f"max|V - V^T| <= {SYMMETRY_ROUNDING:g} eps N max|V| = "
                         f"{SYMMETRY_ROUNDING * eps * n:.2g} max|V|), got {worst:.2g} max|V|")


def on_knots(
    values: Sequence, tail_ndims: Sequence[int], n_paths: int
) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """Coefficients given as arrays or :class:`PiecewiseLinear`, on their common knots.

    Parameters
    ----------
    values : sequence of array_like or PiecewiseLinear
        Each of shape (*tail) or (P', *tail) (with a path axis), a PiecewiseLinear of such
        values, or another callable.
    tail_ndims : sequence of int
        The number of trailing (non-path) dimensions of each (1 for K, 2 for V).
    n_paths : int

    Returns
    -------
    (knots, arrays) or None
        knots (nc,): the union of the PiecewiseLinear times (one knot at 0 if all are
        constant); arrays: each coefficient at the knots, shape (nc, 1 or n_paths, *tail).
        None if a coefficient is another callable or its path axis is not 1 or n_paths.
    """
    entries = []
    for value in values:
        if isinstance(value, PiecewiseLinear):
            entries.append((value.times, value))
        elif callable(value):
            return None
        else:
            entries.append((None, np.asarray(value, dtype=float)[None]))
    own = [knots for knots, _ in entries if knots is not None]
    knots = np.unique(np.concatenate(own)) if own else np.zeros(1)
    arrays = []
    for (own_knots, value), tail_ndim in zip(entries, tail_ndims, strict=True):
        arr = value.at(knots) if own_knots is not None else np.repeat(value, knots.size, axis=0)
        if arr.ndim == 1 + tail_ndim:
            arr = arr[:, None]
        if arr.ndim != 2 + tail_ndim or arr.shape[1] not in (1, n_paths):
            return None
        arrays.append(np.ascontiguousarray(arr, dtype=float))
    return knots, arrays
