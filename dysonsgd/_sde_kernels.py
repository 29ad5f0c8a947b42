"""Compiled (numba) kernels for the Coulomb terms of Dyson Brownian motion, eq. (4.3).

Pure functions on arrays, parallel over paths. ``v`` may be a broadcast view (zero strides on
the path axis) of a single (N, N) matrix.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(parallel=True, cache=True)
def coulomb_sum(x: np.ndarray, v: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """out[p, i] = sum_{j != i} v[p, i, j] / (x[p, i] - x[p, j]) for symmetric v.

    Each pair is visited once: V_ij/(x_i - x_j) adds to i and subtracts from j.
    """
    n_paths, n = x.shape
    out = np.zeros((n_paths, n))
    for p in nb.prange(n_paths):
        for i in range(n):
            xi = x[p, i]
            acc = 0.0
            for j in range(i + 1, n):
                term = v[p, i, j] / (xi - x[p, j])
                acc += term
                out[p, j] -= term
            out[p, i] += acc
    return out


@nb.njit(cache=True)
def _energy(z, c, v, a):  # pragma: no cover - compiled
    n = z.size
    e = 0.0
    for i in range(n):
        d = z[i] - c[i]
        e += 0.5 * d * d
        for j in range(i + 1, n):
            e -= a * v[i, j] * np.log(z[j] - z[i])
    return e


@nb.njit(cache=True)
def _residual(z, c, v, a):  # pragma: no cover - compiled
    """max_i |z_i - c_i - a sum_{j != i} v_ij / (z_i - z_j)|: the gradient of the energy."""
    n = z.size
    r = 0.0
    for i in range(n):
        s = 0.0
        for j in range(n):
            if j != i:
                s += v[i, j] / (z[i] - z[j])
        r = max(r, abs(z[i] - c[i] - a * s))
    return r


@nb.njit(cache=True)
def _newton(z, c, v, a, tol, max_iter):  # pragma: no cover - compiled
    """Minimise |z - c|^2/2 - a sum_{i<j} v_ij log(z_j - z_i) from ordered z, in place."""
    n = z.size
    grad = np.empty(n)
    hess = np.empty((n, n))
    step = np.empty(n)
    trial = np.empty(n)
    y = np.empty(n)
    for _ in range(max_iter):
        size = 0.0
        gmax = 0.0
        for i in range(n):
            hess[i, i] = 1.0
        for i in range(n):
            s = 0.0
            for j in range(n):
                if j != i:
                    d = z[i] - z[j]
                    s += v[i, j] / d
                    w = a * v[i, j] / (d * d)
                    hess[i, j] = -w
                    hess[i, i] += w
            grad[i] = z[i] - c[i] - a * s
            size = max(size, abs(z[i]) + abs(c[i]) + abs(a * s))
            gmax = max(gmax, abs(grad[i]))
        if gmax <= tol * size:
            return True
        # Cholesky factorisation of the SPD Hessian, then two triangular solves
        for j in range(n):
            s = hess[j, j]
            for k in range(j):
                s -= hess[j, k] * hess[j, k]
            if s <= 0.0:
                return False
            hess[j, j] = np.sqrt(s)
            for i in range(j + 1, n):
                s = hess[i, j]
                for k in range(j):
                    s -= hess[i, k] * hess[j, k]
                hess[i, j] = s / hess[j, j]
        for i in range(n):
            s = -grad[i]
            for k in range(i):
                s -= hess[i, k] * y[k]
            y[i] = s / hess[i, i]
        for i in range(n - 1, -1, -1):
            s = y[i]
            for k in range(i + 1, n):
                s -= hess[k, i] * step[k]
            step[i] = s / hess[i, i]
        phi0 = _energy(z, c, v, a)
        slope = 0.0
        for i in range(n):
            slope += grad[i] * step[i]
        alpha = 1.0
        accepted = False
        for _ in range(60):
            ordered = True
            for i in range(n):
                trial[i] = z[i] + alpha * step[i]
                if i > 0 and trial[i] <= trial[i - 1]:
                    ordered = False
            if ordered:
                # a drop of the residual (cheap, and decisive near the solution, where the
                # energy's decrease falls below its own rounding), else Armijo on the energy
                if (
                    _residual(trial, c, v, a) <= (1.0 - 1e-4 * alpha) * gmax
                    or _energy(trial, c, v, a) <= phi0 + 1e-4 * alpha * slope
                ):
                    accepted = True
                    break
            alpha *= 0.5
        if not accepted:
            return True  # no decrease possible: the residual is at rounding level
        for i in range(n):
            z[i] = trial[i]
    return False


@nb.njit(parallel=True, cache=True)
def implicit_coulomb(x, c, v, a, tol, max_iter):  # pragma: no cover - compiled
    """Solve z - a * coulomb(z) = c for every path, starting from the ordered states x.

    Returns the solutions (P, N) and a (P,) bool of converged paths.
    """
    n_paths, n = x.shape
    z = x.copy()
    ok = np.empty(n_paths, dtype=np.bool_)
    for p in nb.prange(n_paths):
        # start from the explicit step c + a coulomb(x) when it is ordered: it is within
        # O(dt^2) of the solution away from the barrier, saving most Newton iterations
        start = np.empty(n)
        for i in range(n):
            s = 0.0
            for j in range(n):
                if j != i:
                    s += v[p, i, j] / (x[p, i] - x[p, j])
            start[i] = c[p, i] + a * s
        ordered = True
        for i in range(1, n):
            if start[i] <= start[i - 1]:
                ordered = False
        if ordered:
            for i in range(n):
                z[p, i] = start[i]
        ok[p] = _newton(z[p], c[p], v[p], a, tol, max_iter)
    return z, ok
