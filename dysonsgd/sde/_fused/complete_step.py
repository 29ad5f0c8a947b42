"""The per-path compiled step of the complete eigenvalue SDE (see :mod:`.complete`).

One path at a time: the moments of its model interpolated at the step's time into a buffer
(:func:`_moments_at`), the coefficients evaluated at its state, the explicit proposal
(:func:`_explicit`), the drift-implicit Coulomb step and the domain (:func:`_attempt`), and the
Brownian-bridge refinement of a rejected step with the moments and coefficients at each
half-step's own time and state (:func:`_refine`). :mod:`.complete_lanes` runs the explicit part
for a vector of paths at once and finishes the steps it does not accept here.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from dysonsgd.sde._fused.implicit import FAST, implicit_step
from dysonsgd.sde._fused.step import (
    SUB_STEPS,
    _fill_normals,
    _length_scale,
    _moved,
    _near,
    _valid,
    bridge_depth,
    bridge_split,
    bridge_start,
)

__all__ = ["buffer_size", "complete_block"]


@nb.njit(inline="always", error_model="numpy")
def _slot(knots, t):  # pragma: no cover - compiled
    """The knot k and weight w of the next one at time t (held constant outside), as _at."""
    nc = knots.size
    if nc == 1 or t <= knots[0]:
        return np.int64(0), 0.0
    if t >= knots[nc - 1]:
        return np.int64(nc - 1), 0.0
    k = np.int64(np.searchsorted(knots, t, side="right") - 1)
    return k, (t - knots[k]) / (knots[k + 1] - knots[k])


@nb.njit(inline="always")
def buffer_size(n: int) -> int:
    """Length of the step's moment buffer for N = n levels (see :func:`_moments_at`)."""
    return 2 * n + 5 * n * n + n * (n + 1) // 2


@nb.njit(inline="always", fastmath=FAST, error_model="numpy")
def _lerp(out, a, b, u, w, scale):  # pragma: no cover - compiled
    """out = scale ((1 - w) a + w b), vectors of one length."""
    for f in range(out.size):
        out[f] = scale * (u * a[f] + w * b[f])


@nb.njit(cache=True, fastmath=FAST, error_model="numpy")
def _moments_at(moments, pm, k, w, temperature, lr, buf):  # pragma: no cover - compiled
    """buf = the moments of path row pm at knot k and weight w of knot k + 1, as a step reads them.

    Layout, the matrices row-major (i, j) and L over k <= i:
    [g_ii | T q_i + lr m_i | T v_ji | T v_ij | 2 T c_ij | sqrt(lr) g_ji | sqrt(lr) g_ij |
    2 sqrt(T) L_ik]. Every field is (1 - w) a_k + w a_{k+1}, as ``EigenvalueSDE._at``.
    """
    g, msq, ito, var, cross, factor = moments
    n = msq.shape[-1]
    nn = n * n
    k1 = min(k + 1, msq.shape[0] - 1)
    u = 1.0 - w
    root = math.sqrt(lr)
    a, b = ito[k, pm], ito[k1, pm]
    m0, m1 = msq[k, pm], msq[k1, pm]
    for i in range(n):
        buf[n + i] = temperature * (u * a[i] + w * b[i]) + lr * (u * m0[i] + w * m1[i])
    a, b = g[k, pm], g[k1, pm]
    for i in range(n):
        buf[i] = u * a[i * n + i] + w * b[i * n + i]
    # the matrices (flattened row-major on the host, so that these loops are contiguous), then
    # the transposes of v and g from them
    off = 2 * n
    v_t, v = buf[off : off + nn], buf[off + nn : off + 2 * nn]
    g_t, gg = buf[off + 3 * nn : off + 4 * nn], buf[off + 4 * nn : off + 5 * nn]
    _lerp(v, var[k, pm], var[k1, pm], u, w, temperature)
    _lerp(buf[off + 2 * nn : off + 3 * nn], cross[k, pm], cross[k1, pm], u, w, 2.0 * temperature)
    _lerp(gg, g[k, pm], g[k1, pm], u, w, root)
    for i in range(n):
        for j in range(n):
            v_t[i * n + j] = v[j * n + i]
            g_t[i * n + j] = gg[j * n + i]
    off += 5 * nn
    a, b = factor[k, pm], factor[k1, pm]
    scale = 2.0 * math.sqrt(temperature)
    for i in range(n):
        row = buf[off + i * (i + 1) // 2 : off + (i + 1) * (i + 2) // 2]
        for j in range(i + 1):
            row[j] = scale * (u * a[i * n + j] + w * b[i * n + j])


@nb.njit(inline="always", fastmath=FAST, error_model="numpy")
def _weight(x, s, buf, i, j):  # pragma: no cover - compiled
    """W_ij = T V_ij + lr P_ij at the state x (s = sqrt(x)) from the moment buffer."""
    n = x.size
    nn = n * n
    q = 2 * n + i * n + j
    r = s[i] * buf[q + 3 * nn] + s[j] * buf[q + 4 * nn]
    return x[i] * buf[q] + x[j] * buf[q + nn] + s[i] * s[j] * buf[q + 2 * nn] + r * r


@nb.njit(cache=True, fastmath=FAST, error_model="numpy")
def _explicit(x, xn, c, s, reg, buf, tvv, lr, h, dw):  # pragma: no cover - compiled
    """The explicit Euler proposal xn from x, with the regular drift (reg), the noise (c),
    s = sqrt(x) and the neighbours' weights W_{i,i+1} (tvv) at x on the way.

    (A function of its own: inlined into the step, its loops no longer vectorise as well.)
    """
    n = x.size
    nn = n * n
    tri = 2 * n + 5 * nn
    for i in range(n):
        s[i] = math.sqrt(max(x[i], 0.0))
    for i in range(n):
        g_ii = buf[i]
        # K_i + T q_i + lr m_i - lr g_ii^2; the noise 2 sqrt(T) s_i (L dW)_i
        reg[i] = -2.0 * s[i] * g_ii + buf[n + i] - lr * g_ii * g_ii
        row = tri + i * (i + 1) // 2
        factor = buf[row : row + i + 1]  # slices: their loops vectorise (no index wraparound)
        acc = 0.0
        for k in range(i + 1):
            acc += factor[k] * dw[k]
        c[i] = s[i] * acc
        # sum_j W_ij / (x_i - x_j), the row of W from contiguous rows of the moments
        xi, si = x[i], s[i]
        q = 2 * n + i * n
        v_t, v, cross = buf[q : q + n], buf[q + nn : q + nn + n], buf[q + 2 * nn : q + 2 * nn + n]
        g_t, g = buf[q + 3 * nn : q + 3 * nn + n], buf[q + 4 * nn : q + 4 * nn + n]
        total = 0.0
        for j in range(n):
            r = si * g_t[j] + s[j] * g[j]
            w = xi * v_t[j] + x[j] * v[j] + si * s[j] * cross[j] + r * r
            total += w / (xi - x[j]) if j != i else 0.0
        xn[i] = total
    for i in range(n - 1):
        tvv[i, i + 1] = _weight(x, s, buf, i, i + 1)
    for i in range(n):
        xn[i] = x[i] + (reg[i] + xn[i]) * h + c[i]


@nb.njit(inline="always", fastmath=FAST, error_model="numpy")
def _attempt(x, xn, c, start, s, reg, buf, tvv, lr, h, dw, scheme, form, ws):  # pragma: no cover
    """One step of the base scheme from x over h with increments dw into xn; True if accepted.

    The coefficients are evaluated at x from the moment buffer ``buf``. reg, s, c, start (n,),
    tvv (n, n) and ws (2n + 4, n) are work arrays: tvv holds the weights W_{i,i+1} of the
    neighbours for the criterion, and all of W (symmetric) when the implicit step needs them.
    """
    n = x.size
    wall = form.wall
    _explicit(x, xn, c, s, reg, buf, tvv, lr, h, dw)
    ok = _valid(xn, wall)
    fraction = scheme.explicit_fraction
    if scheme.implicit and (not ok or _near(x, xn, tvv, h, fraction, wall, False)):
        for i in range(n):
            c[i] = x[i] + reg[i] * h + c[i]
            start[i] = xn[i]
            for j in range(i + 1, n):
                w = _weight(x, s, buf, i, j)
                tvv[i, j] = w
                tvv[j, i] = w
        tol, max_iter = form.newton_tol, form.newton_max_iter
        if not implicit_step(x, start, c, tvv, h, fraction, tol, max_iter, xn, ws):
            return False
        ok = _valid(xn, wall)
    if ok and scheme.limit_moves:
        ok = _moved(xn, x) <= scheme.safety * _length_scale(x, wall)
    return ok


@nb.njit(cache=True, fastmath=FAST, error_model="numpy")
def _refine(x, xn, c, start, s, reg, buf, tvv, x0, zb, ws, stack, nodes, knots, moments, pm,
            temperature, lr, t, h, dw, path, step, scheme, form, keys, ki, wi,
            fi):  # pragma: no cover - compiled
    """Redo a failed step of x from time t over h as halves along the Brownian bridge.

    As :func:`dysonsgd.sde._fused.step._refine` (node m's midpoint from the normals labelled
    (path, step, m), depth first down to h / 2**max_depth), except that every half-step takes
    the moments at its own start time and the coefficients at its own start state, as the
    general engine's :class:`~dysonsgd.sde.Adaptive` does. Returns False, with x unchanged, if
    a half still fails at ``max_depth``; ``buf`` is left at an arbitrary time.
    """
    n = x.size
    bridge_start(x, x0, stack, nodes, dw)
    top = bridge_split(stack, nodes, 0, h, zb, keys, path, step, ki, wi, fi)  # the step failed
    now = t
    while top >= 0:
        depth = bridge_depth(nodes[top])
        hh = h / (1 << depth)
        for i in range(n):
            zb[i] = stack[top, i]
        k, w = _slot(knots, now)
        _moments_at(moments, pm, k, w, temperature, lr, buf)
        if _attempt(x, xn, c, start, s, reg, buf, tvv, lr, hh, zb, scheme, form, ws):
            for i in range(n):
                x[i] = xn[i]
            now += hh
            top -= 1
        elif depth >= scheme.max_depth:
            for i in range(n):
                x[i] = x0[i]
            return False
        else:
            top = bridge_split(stack, nodes, top, hh, zb, keys, path, step, ki, wi, fi)
    return True


@nb.njit(cache=True, fastmath=FAST, error_model="numpy")
def _path_block(p, x, dead, out, rec, step0, h, times, knots, moments, temperature, lr, keys, ki,
                wi, fi, scheme, form):  # pragma: no cover - compiled
    """Advance path p (state x, (n,), in place) over the block; return its failure step or -1."""
    n = x.size
    count = h.size
    p = np.int64(p)
    pm = p if moments[1].shape[1] > 1 else np.int64(0)
    z = np.empty((n, SUB_STEPS))
    words = np.empty((2 * ((n + 1) // 2), SUB_STEPS), dtype=np.uint64)
    dw = np.empty(n)
    buf = np.empty(buffer_size(n))
    tvv = np.zeros((n, n))
    xn = np.empty(n)
    c = np.empty(n)
    start = np.empty(n)
    s = np.empty(n)
    reg = np.empty(n)
    x0 = np.empty(n)
    zb = np.empty(n)
    ws = np.empty((2 * n + 4, n))
    stack = np.empty((scheme.max_depth + 2, n))
    nodes = np.empty(scheme.max_depth + 2, dtype=np.int64)
    path = np.uint64(p)
    last_k = np.int64(-1)
    last_w = -1.0
    for b0 in range(0, count, SUB_STEPS):
        m = min(SUB_STEPS, count - b0)
        if dead < 0:
            _fill_normals(z, words, step0 + b0, m, n, path, keys, ki, wi, fi)
        for q in range(m):
            b = b0 + q
            if dead < 0:
                k, w = _slot(knots, times[b])
                if k != last_k or w != last_w:
                    _moments_at(moments, pm, k, w, temperature, lr, buf)
                    last_k, last_w = k, w
                sq = math.sqrt(h[b])
                for j in range(n):
                    dw[j] = sq * z[j, q]
                if _attempt(x, xn, c, start, s, reg, buf, tvv, lr, h[b], dw, scheme, form, ws):
                    for j in range(n):
                        x[j] = xn[j]
                else:
                    if scheme.max_depth == 0 or not _refine(
                        x, xn, c, start, s, reg, buf, tvv, x0, zb, ws, stack, nodes, knots,
                        moments, pm, temperature, lr, times[b], h[b], dw, path,
                        np.uint64(step0 + b), scheme, form, keys, ki, wi, fi,
                    ):
                        dead = step0 + b
                    last_k = np.int64(-1)  # the refinement moved buf to other times
            r = rec[b]
            if r >= 0:
                for j in range(n):
                    out[r, p, j] = x[j]
    return dead


@nb.njit(nogil=True, cache=True, error_model="numpy")
def complete_block(first, last, x, dead, out, rec, step0, h, times, knots, moments, temperature,
                   lr, keys, ki, wi, fi, scheme, form):  # pragma: no cover - compiled
    """Advance the paths first <= p < last over one block of steps (in place, GIL released).

    Parameters
    ----------
    first, last : the range of paths
    x : (P, N) states; dead : (P,) int64, the global step at which a path failed, or -1
    out : (n_rows, P, N); rec : (B,) int64, the row to record after each step, or -1
    step0 : int, the global index of the block's first step; h, times : (B,) the step sizes
        and start times
    knots : (nc,); moments : MomentKnots.moments; temperature, lr : float
    keys : (4,) uint64; ki, wi, fi : ziggurat tables
    scheme : FusedScheme (the solver's), form : FusedForm (the equation's)
    """
    for p in range(first, last):
        dead[p] = _path_block(p, x[p], dead[p], out, rec, step0, h, times, knots, moments,
                              temperature, lr, keys, ki, wi, fi, scheme, form)
