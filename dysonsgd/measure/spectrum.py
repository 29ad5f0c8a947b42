"""The spectrum of ``X = W W^T`` (4.1): eigenvalues, eigenvectors, level spacings.

Eigenvalues are returned in ascending order (the release's notebook takes them from an SVD,
largest first). All functions are batched over leading axes.
"""

from __future__ import annotations

import numpy as np

from dysonsgd._checks import InputError

__all__ = ["eigensystem", "eigenvalues", "mean_level_spacing", "spacings"]


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


def mean_level_spacing(x: np.ndarray, *, ascending: bool = False) -> np.ndarray:
    """Average level spacing (4.5), ``S = (x_max - x_min) / (n2 - 1)``.

    Parameters
    ----------
    x : (..., n2) array_like
        Eigenvalues on the last axis, n2 >= 2.
    ascending : bool
        The eigenvalues are sorted ascending (as :func:`eigenvalues` returns them): take the last
        minus the first entry (numpy masked arrays keep their mask). Otherwise max - min, in any
        order (a NaN anywhere makes S NaN).

    Returns
    -------
    (...) float64
    """
    x = np.asanyarray(x) if ascending else np.asarray(x, float)
    if x.ndim < 1 or x.shape[-1] < 2:
        raise InputError(f"x must hold at least 2 eigenvalues on its last axis, got {x.shape}")
    if ascending:
        return (x[..., -1] - x[..., 0]) / (x.shape[-1] - 1)
    return (np.max(x, axis=-1) - np.min(x, axis=-1)) / (x.shape[-1] - 1)


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
