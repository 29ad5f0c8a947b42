"""Compiled kernels of the singular basis: the singular system of W and the complete SDE's matrices.

:func:`refine_singular_system` turns an eigensystem of X = W W^T into the singular system of W
by one-sided Jacobi on the rows of U^T W: small rotations that keep the eigenvectors' order
and signs and give the singular vectors of the small singular values to the accuracy of an SVD
(vt = W^T U / s alone loses (s_max / s_i)^2 in them). :func:`coefficients_matrices` evaluates
V, P and C of :func:`dysonsgd.measure.moments.coefficients_at` for a whole run in one pass, with
the numpy expressions' operations in their order (the same numbers, bit for bit).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from dysonsgd.measure._fused import _threads

__all__ = ["coefficients_matrices", "refine_singular_system"]

#: Jacobi stops rotating a pair when |a_i . a_j| <= _TOL sqrt(|a_i|^2 |a_j|^2)
_TOL = 4.0 * np.finfo(float).eps
_MAX_SWEEPS = 12


@nb.njit(cache=True, nogil=True)
def _jacobi_block(a, u, s, ok, start, stop):  # pragma: no cover - compiled
    """One-sided Jacobi on the rows of a[q] = U^T W (N, M), rotating u[q]'s columns alike."""
    n, m = a.shape[1], a.shape[2]
    for q in range(start, stop):
        aq = a[q]
        uq = u[q]
        for _ in range(_MAX_SWEEPS):
            rotated = False
            for i in range(n - 1):
                for j in range(i + 1, n):
                    alpha = 0.0
                    beta = 0.0
                    gamma = 0.0
                    for k in range(m):
                        alpha += aq[i, k] * aq[i, k]
                        beta += aq[j, k] * aq[j, k]
                        gamma += aq[i, k] * aq[j, k]
                    if abs(gamma) <= _TOL * math.sqrt(alpha * beta) or gamma == 0.0:
                        continue
                    rotated = True
                    zeta = (beta - alpha) / (2.0 * gamma)
                    t = math.copysign(1.0, zeta) / (abs(zeta) + math.sqrt(1.0 + zeta * zeta))
                    c = 1.0 / math.sqrt(1.0 + t * t)
                    sn = c * t
                    for k in range(m):
                        ai = aq[i, k]
                        aj = aq[j, k]
                        aq[i, k] = c * ai - sn * aj
                        aq[j, k] = sn * ai + c * aj
                    for k in range(n):
                        ui = uq[k, i]
                        uj = uq[k, j]
                        uq[k, i] = c * ui - sn * uj
                        uq[k, j] = sn * ui + c * uj
            if not rotated:
                break
        good = True
        for i in range(n):
            acc = 0.0
            for k in range(m):
                acc += aq[i, k] * aq[i, k]
            s[q, i] = math.sqrt(acc)
        for i in range(n):
            if not s[q, i] > 0.0:
                good = False
        ok[q] = good


def refine_singular_system(w: np.ndarray, u: np.ndarray):
    """Singular system of W from an eigensystem of X = W W^T (see the module docstring).

    Parameters
    ----------
    w : (Q, N, M) float64, N <= M
    u : (Q, N, N) float64, eigenvectors of X (ascending eigenvalues)

    Returns
    -------
    s : (Q, N) singular values, ascending
    u : (Q, N, N) the rotated eigenvectors (paired with vt)
    vt : (Q, M, N) right singular vectors
    ok : (Q,) bool, False where some s_i = 0 (vt undefined there: the caller takes an SVD)
    """
    a = np.ascontiguousarray(np.swapaxes(u, -1, -2) @ w)
    u = np.array(u, dtype=float, order="C")
    q, n = a.shape[0], a.shape[1]
    s = np.empty((q, n))
    ok = np.empty(q, dtype=np.bool_)
    _threads(q, lambda b0, b1: _jacobi_block(a, u, s, ok, b0, b1))
    order = np.argsort(s, axis=-1, kind="stable")
    if np.any(order != np.arange(n)):  # a near-degenerate pair swapped: ascending again
        s = np.take_along_axis(s, order, axis=-1)
        u = np.take_along_axis(u, order[:, None, :], axis=-1)
        a = np.take_along_axis(a, order[:, :, None], axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        vt = np.swapaxes(a, -1, -2) / s[:, None, :]
    return s, u, np.ascontiguousarray(vt), ok


@nb.njit(cache=True, nogil=True)
def _coefficients_block(x, g, v, cross, sigma, noise, finite, covariance, start, stop
                        ):  # pragma: no cover - compiled
    """V, P and C of :func:`dysonsgd.measure.moments.coefficients_at` for items [start, stop):
    the same IEEE operations in the same order as its numpy expressions (no fast-math)."""
    n = x.shape[1]
    s = np.empty(n)
    for q in range(start, stop):
        for i in range(n):
            xv = x[q, i]
            s[i] = np.sqrt(xv if xv > 0.0 or xv != xv else 0.0)  # np.maximum(x, 0)
        for i in range(n):
            si = s[i]
            xi = x[q, i]
            for j in range(n):
                sj = s[j]
                c = 4.0 * si * sj * sigma[q, i, j]
                covariance[q, i, j] = c
                if i == j:
                    noise[q, i, j] = c
                    finite[q, i, j] = 0.0
                else:
                    noise[q, i, j] = (xi * v[q, j, i] + x[q, j] * v[q, i, j]
                                      + 2.0 * si * sj * cross[q, i, j])
                    r = si * g[q, j, i] + g[q, i, j] * sj
                    finite[q, i, j] = r * r


def coefficients_matrices(x, g, v, cross, sigma) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(noise V, finite-lr P, covariance C) of ``coefficients_at`` for flat items.

    Parameters
    ----------
    x : (Q, N); g, v, cross, sigma : (Q, N, N), C-contiguous float64

    Returns
    -------
    noise, finite, covariance : (Q, N, N)
    """
    q, n = x.shape
    out = [np.empty((q, n, n)) for _ in range(3)]
    _threads(q, lambda b0, b1: _coefficients_block(x, g, v, cross, sigma, *out, b0, b1),
             min_items=256)
    return out[0], out[1], out[2]
