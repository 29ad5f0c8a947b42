"""The spectrum of ``X = W W^T`` (4.1): eigenvalues, eigenvectors, level spacings.

Eigenvalues are returned in ascending order (the release's notebook takes them from an SVD,
largest first). All functions are batched over leading axes.
"""

from __future__ import annotations

import numpy as np

from dysonsgd._checks import InputError

__all__ = ["eigensystem", "eigenvalues", "layer_eigenvalues", "mean_level_spacing", "spacings"]


def eigenvalues(w: np.ndarray) -> np.ndarray:
    """Eigenvalues ``x_i`` of ``X = W W^T`` (4.1), ascending.

    Parameters
    ----------
    w : (..., n2, n1) array_like
        E.g. the student's ``W2``.

    Returns
    -------
    (..., n2) float64
    """
    w = np.asarray(w, float)
    return np.linalg.eigvalsh(w @ np.swapaxes(w, -1, -2))


def layer_eigenvalues(w: np.ndarray) -> np.ndarray:
    """The ``min(n_l, n_{l-1})`` eigenvalues of ``X_l = W_l W_l^T`` that a rectangular matrix
    can make non-zero (the squared singular values of ``W_l``), ascending.

    For ``W2`` of the paper's widths (16 x 32) this is :func:`eigenvalues`; for a tall matrix
    (``W1``, 32 x 3) the eigenvalues of ``W^T W`` (``X_1`` adds ``n_l - n_{l-1}`` exact zeros),
    for a row (``W3``, 1 x 16) ``||W3||^2``.

    Parameters
    ----------
    w : (..., n_l, n_{l-1}) array_like

    Returns
    -------
    (..., min(n_l, n_{l-1})) float64
    """
    w = np.asarray(w, float)
    return eigenvalues(w if w.shape[-2] <= w.shape[-1] else np.swapaxes(w, -1, -2))


def eigensystem(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and orthonormal eigenvectors of ``X = W W^T`` (4.1).

    The eigenvalues agree with :func:`eigenvalues` to rounding (LAPACK computes them by another
    algorithm when it also returns the vectors).

    Parameters
    ----------
    w : (..., n2, n1) array_like

    Returns
    -------
    x : (..., n2) float64
    u : (..., n2, n2) float64
        Columns ``u[..., :, i]`` are the eigenvectors, so ``X = U diag(x) U^T``.
    """
    w = np.asarray(w, float)
    return np.linalg.eigh(w @ np.swapaxes(w, -1, -2))


def mean_level_spacing(x, *, axis: int = -1, assume_sorted: bool = False) -> np.ndarray:
    """Average level spacing (4.5) and (B.2), ``S = (x_max - x_min) / (N - 1)``.

    The one home of S in the package: the theory (the Marchenko-Pastur bound (4.14) is in
    :func:`dysonsgd.theory.rmt.initial_spacing_bound`), the measurements on runs and the SDE
    predictions all call it.

    Parameters
    ----------
    x : (..., N, ...) array_like or numpy masked array
        Eigenvalues along ``axis``, N >= 2, finite (a masked array may hold anything under its
        mask and keeps its mask).
    axis : int
        Axis holding the N eigenvalues of one matrix.
    assume_sorted : bool
        The eigenvalues are sorted along ``axis`` (ascending, as :func:`eigenvalues` returns
        them, or descending): take ``|last - first|``. Otherwise max - min, in any order.

    Returns
    -------
    ndarray (masked if ``x`` is), S with ``axis`` removed
    """
    masked = isinstance(x, np.ma.MaskedArray)
    arr = x if masked else np.asarray(x, float)
    if arr.ndim < 1 or arr.shape[axis] < 2:
        raise InputError(f"x must hold at least 2 eigenvalues along axis {axis}, got shape "
                         f"{arr.shape}")
    if not masked and not np.all(np.isfinite(arr)):
        raise InputError("x must hold finite eigenvalues (got NaN or infinity)")
    n = arr.shape[axis]
    if assume_sorted:
        arr = np.moveaxis(arr, axis, -1)
        return np.abs(arr[..., -1] - arr[..., 0]) / (n - 1)
    return (np.max(arr, axis=axis) - np.min(arr, axis=axis)) / (n - 1)


def spacings(x: np.ndarray) -> np.ndarray:
    """Nearest-neighbour spacings ``s_i = x_{i+1} - x_i`` of ascending eigenvalues.

    Their mean is :func:`mean_level_spacing` (4.5).

    Parameters
    ----------
    x : (..., n2) array_like, ascending on the last axis, n2 >= 2

    Returns
    -------
    (..., n2 - 1) float64
    """
    x = np.asarray(x, float)
    if x.ndim < 1 or x.shape[-1] < 2:
        raise InputError(f"x must hold at least 2 eigenvalues on its last axis, got {x.shape}")
    return np.diff(x, axis=-1)
