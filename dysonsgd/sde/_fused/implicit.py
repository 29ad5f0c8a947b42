"""Compiled (numba) kernels for the Coulomb terms of Dyson Brownian motion, eq. (4.3).

The Coulomb sum sum_{j != i} V_ij/(x_i - x_j) and the implicit Coulomb step of
:class:`dysonsgd.sde.DriftImplicit`: damped Newton on the convex log-barrier energy
|z - c|^2/2 - a sum_{i<j} V_ij log(z_j - z_i) over a window of levels.

Pure functions on arrays. ``v`` may be a broadcast view (zero strides on the path axis) of a
single (N, N) matrix. The kernels that the general engine calls once per step are serial: a
parallel region per step costs more than it saves on a busy machine (its barrier waits for the
slowest thread); the fused engine (:mod:`dysonsgd.sde._fused.step`) is parallel over paths instead.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = [
    "FAST",
    "coulomb_sum",
    "implicit_step",
    "implicit_window",
    "newton_pair",
    "newton_ws",
    "pair_start",
]

#: fast-math flags of the kernels: reassociation lets LLVM vectorise the pair sums (with
#: error_model="numpy", a division by zero gives inf instead of a branch that blocks it)
FAST = {"reassoc", "nsz", "contract"}


@nb.njit(cache=True, error_model="numpy")
def coulomb_sum(x: np.ndarray, v: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """out[p, i] = sum_{j != i} v[p, i, j] / (x[p, i] - x[p, j]) for symmetric v.

    Each pair is visited once: V_ij/(x_i - x_j) adds to i and subtracts from j.
    """
    n_paths, n = x.shape
    out = np.zeros((n_paths, n))
    for p in range(n_paths):
        for i in range(n):
            xi = x[p, i]
            acc = 0.0
            for j in range(i + 1, n):
                term = v[p, i, j] / (xi - x[p, j])
                acc += term
                out[p, j] -= term
            out[p, i] += acc
    return out


@nb.njit(cache=True, error_model="numpy")
def _energy(z, c, v, a, lo, hi):  # pragma: no cover - compiled
    """|z_W - c_W|^2/2 - a sum v_ij log(z_j - z_i) over the pairs i < j that touch the window
    W = [lo, hi] (the levels outside W are fixed)."""
    n = z.size
    e = 0.0
    for i in range(lo, hi + 1):
        d = z[i] - c[i]
        e += 0.5 * d * d
        for j in range(n):
            if j > i or (j < lo and j < i):
                e -= a * v[i, j] * np.log(abs(z[j] - z[i]))
    return e


@nb.njit(inline="always", error_model="numpy", fastmath=FAST)
def _gradient(z, c, v, a, out, hess, lo, hi):  # pragma: no cover - compiled
    """The energy's gradient z_i - c_i - a coulomb_i(z) for i in [lo, hi] (out[i - lo]) and its
    Hessian I + a L(z) on the window (hess[i - lo, j - lo]); L is the Laplacian of the weights
    v_ij/(z_i - z_j)^2, over all j. Returns (max |out|, size), size = max_i |z_i| + |c_i| +
    |a coulomb_i|, the scale of the relative tolerance.
    """
    n = z.size
    gmax = 0.0
    size = 0.0
    for i in range(lo, hi + 1):
        zi = z[i]
        acc = 0.0
        diagonal = 1.0
        for j in range(n):
            r = 1.0 / (zi - z[j])
            t = v[i, j] * r if j != i else 0.0
            w = a * t * r if j != i else 0.0
            acc += t
            diagonal += w
            if j >= lo and j <= hi:
                hess[i - lo, j - lo] = -w
        hess[i - lo, i - lo] = diagonal
        s = a * acc
        g = zi - c[i] - s
        out[i - lo] = g
        gmax = max(gmax, abs(g))
        size = max(size, abs(zi) + abs(c[i]) + abs(s))
    return gmax, size


@nb.njit(cache=True, error_model="numpy", fastmath=FAST)
def newton_ws(z, c, v, a, tol, max_iter, ws, lo, hi):  # pragma: no cover - compiled
    """Minimise |z - c|^2/2 - a sum_{i<j} v_ij log(z_j - z_i) over the window [lo, hi] of the
    ordered z, in place, the other levels fixed; ws is a (2n + 4, n) work array.

    Converged when max |gradient| <= tol * size (see :func:`_gradient`). Each iteration solves
    with the Hessian by Cholesky and backtracks, keeping the window ordered between its fixed
    neighbours, until the gradient norm drops (cheap, and decisive near the solution, where the
    energy's decrease falls below its own rounding) or else the energy satisfies Armijo.
    """
    n = z.size
    m = hi - lo + 1
    left = lo - 1 if lo > 0 else lo
    right = hi + 1 if hi < n - 1 else hi
    hess, chol = ws[:n], ws[n : 2 * n]
    grad, step, trial, y = ws[2 * n], ws[2 * n + 1], ws[2 * n + 2], ws[2 * n + 3]
    gmax, size = _gradient(z, c, v, a, grad, hess, lo, hi)
    for _ in range(max_iter):
        if gmax <= tol * size:
            return True
        # Cholesky factorisation of the Hessian, then two triangular solves
        for j in range(m):
            s = hess[j, j]
            for k in range(j):
                s -= chol[j, k] * chol[j, k]
            if s <= 0.0:
                return False
            d = np.sqrt(s)
            chol[j, j] = d
            for i in range(j + 1, m):
                s = hess[i, j]
                for k in range(j):
                    s -= chol[i, k] * chol[j, k]
                chol[i, j] = s / d
        for i in range(m):
            s = -grad[i]
            for k in range(i):
                s -= chol[i, k] * y[k]
            y[i] = s / chol[i, i]
        for i in range(m - 1, -1, -1):
            s = y[i]
            for k in range(i + 1, m):
                s -= chol[k, i] * step[k]
            step[i] = s / chol[i, i]
        slope = 0.0
        for i in range(m):
            slope += grad[i] * step[i]
        phi0 = np.nan  # the energy, computed only when the gradient test fails
        alpha = 1.0
        accepted = False
        g_trial = size_trial = 0.0
        for i in range(n):
            trial[i] = z[i]
        for _ in range(60):
            ordered = True
            for i in range(lo, hi + 1):
                trial[i] = z[i] + alpha * step[i - lo]
            for i in range(left + 1, right + 1):
                if trial[i] <= trial[i - 1]:
                    ordered = False
            if ordered:
                # the trial's gradient and Hessian (the next iteration's, if accepted)
                g_trial, size_trial = _gradient(trial, c, v, a, y, hess, lo, hi)
                if g_trial <= (1.0 - 1e-4 * alpha) * gmax:
                    accepted = True
                else:
                    if np.isnan(phi0):
                        phi0 = _energy(z, c, v, a, lo, hi)
                    accepted = _energy(trial, c, v, a, lo, hi) <= phi0 + 1e-4 * alpha * slope
                if accepted:
                    break
            alpha *= 0.5
        if not accepted:
            return True  # no decrease possible: the residual is at rounding level
        for i in range(lo, hi + 1):
            z[i] = trial[i]
            grad[i - lo] = y[i - lo]
        gmax, size = g_trial, size_trial
    return gmax <= tol * size


@nb.njit(inline="always", error_model="numpy", fastmath=FAST)
def _pair_gradient(u, w, z, c, v, a, lo):  # pragma: no cover - compiled
    """:func:`_gradient` of the window {lo, lo + 1} with its levels at (u, w), the others at z.

    Returns (g_lo, g_hi, h_00, h_10, h_11, max |g|, size): the gradient, the Hessian's lower
    triangle and the tolerance scale, as :func:`_gradient` computes them.
    """
    n = z.size
    hi = lo + 1
    acc0 = 0.0
    acc1 = 0.0
    d0 = 1.0
    d1 = 1.0
    for j in range(lo):  # the fixed levels below, then above the window (no branch)
        r0 = 1.0 / (u - z[j])
        r1 = 1.0 / (w - z[j])
        t0 = v[lo, j] * r0
        t1 = v[hi, j] * r1
        acc0 += t0
        acc1 += t1
        d0 += a * t0 * r0
        d1 += a * t1 * r1
    for j in range(hi + 1, n):
        r0 = 1.0 / (u - z[j])
        r1 = 1.0 / (w - z[j])
        t0 = v[lo, j] * r0
        t1 = v[hi, j] * r1
        acc0 += t0
        acc1 += t1
        d0 += a * t0 * r0
        d1 += a * t1 * r1
    r0 = 1.0 / (u - w)
    t0 = v[lo, hi] * r0
    acc0 += t0
    d0 += a * t0 * r0
    r1 = 1.0 / (w - u)
    t1 = v[hi, lo] * r1
    w10 = a * t1 * r1
    acc1 += t1
    d1 += w10
    s0 = a * acc0
    s1 = a * acc1
    g0 = u - c[lo] - s0
    g1 = w - c[hi] - s1
    size = max(abs(u) + abs(c[lo]) + abs(s0), abs(w) + abs(c[hi]) + abs(s1))
    return g0, g1, d0, -w10, d1, max(abs(g0), abs(g1)), size


@nb.njit(cache=True, error_model="numpy", fastmath=FAST)
def newton_pair(z, c, v, a, tol, max_iter, lo):  # pragma: no cover - compiled
    """:func:`newton_ws` for the window of two levels {lo, lo + 1}, in scalars.

    The same iteration (Newton step by the 2 x 2 Cholesky factor, backtracking on the
    gradient norm, else Armijo on the energy, the window kept ordered between its fixed
    neighbours, the same convergence test), without work arrays: the implicit step of a
    single close pair, which is most of them.
    """
    n = z.size
    hi = lo + 1
    left = lo - 1 if lo > 0 else lo
    right = hi + 1 if hi < n - 1 else hi
    u = z[lo]
    w = z[hi]
    g0, g1, h00, h10, h11, gmax, size = _pair_gradient(u, w, z, c, v, a, lo)
    for _ in range(max_iter):
        if gmax <= tol * size:
            z[lo] = u
            z[hi] = w
            return True
        if h00 <= 0.0:
            return False
        l00 = np.sqrt(h00)
        l10 = h10 / l00
        s = h11 - l10 * l10
        if s <= 0.0:
            return False
        l11 = np.sqrt(s)
        y0 = -g0 / l00
        y1 = (-g1 - l10 * y0) / l11
        st1 = y1 / l11
        st0 = (y0 - l10 * st1) / l00
        slope = g0 * st0 + g1 * st1
        phi0 = np.nan
        alpha = 1.0
        accepted = False
        tu = u
        tw = w
        ng0 = ng1 = nh00 = nh10 = nh11 = g_trial = size_trial = 0.0
        for _ in range(60):
            tu = u + alpha * st0
            tw = w + alpha * st1
            ordered = tw > tu
            if lo > left:
                ordered = ordered and tu > z[left]
            if right > hi:
                ordered = ordered and z[right] > tw
            if ordered:
                ng0, ng1, nh00, nh10, nh11, g_trial, size_trial = _pair_gradient(
                    tu, tw, z, c, v, a, lo)
                if g_trial <= (1.0 - 1e-4 * alpha) * gmax:
                    accepted = True
                else:
                    z[lo] = u
                    z[hi] = w
                    if np.isnan(phi0):
                        phi0 = _energy(z, c, v, a, lo, hi)
                    z[lo] = tu
                    z[hi] = tw
                    accepted = _energy(z, c, v, a, lo, hi) <= phi0 + 1e-4 * alpha * slope
                if accepted:
                    break
            alpha *= 0.5
        if not accepted:  # no decrease possible: the residual is at rounding level
            z[lo] = u
            z[hi] = w
            return True
        u, w = tu, tw
        g0, g1, h00, h10, h11 = ng0, ng1, nh00, nh10, nh11
        gmax, size = g_trial, size_trial
    z[lo] = u
    z[hi] = w
    return gmax <= tol * size


@nb.njit(cache=True, error_model="numpy", fastmath=FAST)
def pair_start(x, xn, v, a, z, lo, hi):  # pragma: no cover - compiled
    """A starting point for the implicit Coulomb step from the explicit proposal xn; in z.

    Where a neighbouring pair (i, i+1) inside [lo, hi] is stiff (a v_{i,i+1} > g^2 / 2) or its
    explicit gap shrank below half of g = x_{i+1} - x_i, its own interaction is redone
    implicitly as a two-body problem, the rest kept explicit: the gap G solves
    G = G_b + 2 a v / G (the positive root), about the pair's centre. Most implicit steps then
    converge in one or two Newton iterations. Returns whether z is ordered on [lo - 1, hi + 1].
    """
    n = x.size
    for i in range(n):
        z[i] = xn[i]
    i = lo
    while i < hi:
        g = x[i + 1] - x[i]
        w = a * v[i, i + 1]
        if xn[i + 1] - xn[i] < 0.5 * g or w > 0.5 * g * g:
            kick = w / g
            low = xn[i] + kick
            high = xn[i + 1] - kick
            gb = high - low
            gap = 0.5 * (gb + np.sqrt(gb * gb + 8.0 * w))
            centre = 0.5 * (low + high)
            z[i] = centre - 0.5 * gap
            z[i + 1] = centre + 0.5 * gap
            i += 2
        else:
            i += 1
    for i in range(max(lo, 1), min(hi + 2, n)):
        if not z[i] > z[i - 1]:
            return False
    return True


@nb.njit(cache=True, error_model="numpy", fastmath=FAST)
def implicit_step(x, xn, c, v, a, fraction, tol, max_iter, z, ws):  # pragma: no cover
    """The implicit Coulomb step of a path whose explicit proposal xn was not trusted; in z.

    The window is the range of levels of the neighbouring pairs that failed the criterion
    (gap shrank by more than ``fraction``, stiff a v_{i,i+1} > fraction g^2, or crossed); its
    levels solve z_i - a sum_j v_ij/(z_i - z_j) = c_i with the other levels at their explicit
    positions xn, by Newton on the window's convex log-barrier energy, so the window stays
    ordered between its neighbours. ``fraction`` = 0 (or a start that is not ordered, or no
    convergence) solves for all levels. Returns whether Newton converged.
    """
    n = x.size
    lo, hi = n, -1
    finite = True
    for i in range(n - 1):
        g = x[i + 1] - x[i]
        gn = xn[i + 1] - xn[i]
        finite = finite and np.isfinite(gn)
        if fraction == 0.0 or not gn > 0.0 or gn < (1.0 - fraction) * g or a * v[i, i + 1] > (
            fraction * g * g
        ):
            lo = min(lo, i)
            hi = max(hi, i + 1)
    if not finite:
        lo, hi = 0, n - 1
    if hi < 0:  # no pair flagged (a wall, say): the explicit proposal
        for i in range(n):
            z[i] = xn[i]
        return True
    if lo > 0 or hi < n - 1:
        if pair_start(x, xn, v, a, z, lo, hi) and (
            newton_pair(z, c, v, a, tol, max_iter, lo) if hi == lo + 1
            else newton_ws(z, c, v, a, tol, max_iter, ws, lo, hi)
        ):
            return True
    if not pair_start(x, xn, v, a, z, 0, n - 1):
        for i in range(n):
            z[i] = x[i]
    if n == 2:
        return newton_pair(z, c, v, a, tol, max_iter, 0)
    return newton_ws(z, c, v, a, tol, max_iter, ws, 0, n - 1)


@nb.njit(cache=True, error_model="numpy")
def implicit_window(x, xn, c, v, a, fraction, tol, max_iter):  # pragma: no cover - compiled
    """:func:`implicit_step` for every path: x, xn, c (P, N), v (P, N, N) -> (z, converged).

    With ``fraction`` = 0 every level is solved for: z - a coulomb(z) = c, starting from the
    explicit proposal xn (with its stiff pairs redone as two-body problems) or from x.
    """
    n_paths, n = x.shape
    z = np.empty_like(x)
    ok = np.empty(n_paths, dtype=np.bool_)
    ws = np.empty((2 * n + 4, n))
    for p in range(n_paths):
        ok[p] = implicit_step(x[p], xn[p], c[p], v[p], a, fraction, tol, max_iter, z[p], ws)
    return z, ok
