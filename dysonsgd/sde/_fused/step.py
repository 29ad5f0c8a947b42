"""The fused engine's compiled step: Dyson Brownian motion (4.3) and the spacing SDE (4.8).

One kernel call (:func:`fused_block`) advances a range of paths over a block of steps, each path
on its own (:func:`_path_block`), with the Gaussian increments drawn in the kernel from the
counter-based generator of :mod:`dysonsgd.sde._fused.philox`: normal j of step s of path p is a
function of (seed, p, s, j) only. The kernels read the solver's :class:`FusedScheme` and the
equation's :class:`FusedForm` (:mod:`dysonsgd.sde._fused.plan`) by field name. The schemes are
those of :mod:`dysonsgd.sde.solvers`, step by step (A = T V, D = g^2 as in the plan):

- Euler-Maruyama: x' = x + (K + sum_j A_ij/(x_i - x_j)) h + sqrt(D_i) dW_i.
- drift-implicit: the explicit step is kept when it stays in the domain, no neighbouring gap (or
  the distance to a wall) shrank by more than ``explicit_fraction`` of itself and no pair is
  stiff (h A_{i,i+1} > fraction g^2); otherwise the Coulomb term is taken implicitly for the
  levels of the flagged pairs (damped Newton on their convex log-barrier energy, the other
  levels at their explicit positions; :func:`dysonsgd.sde._fused.implicit.implicit_step`), or
  as the positive root of a quadratic for the spacing.
- adaptive: a step that fails (leaves the domain, or moves more than ``safety`` length scales)
  is halved along the Brownian bridge of the same path, depth first, down to h / 2**max_depth;
  the bridge midpoint of node m (root 1, children 2m and 2m + 1) uses the normals labelled
  (p, s, m). Inside a refined step the coefficients stay at their values at the step's start.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from dysonsgd.sde._fused.implicit import FAST as _FAST
from dysonsgd.sde._fused.implicit import implicit_step
from dysonsgd.sde._fused.philox import _philox, _ziggurat_slow, normals

__all__ = ["SUB_STEPS", "fused_block"]

#: normals are generated for this many steps at a time (Philox vectorised over the steps)
SUB_STEPS = 16


# --------------------------------------------------------------------------------------------
# compiled step
# --------------------------------------------------------------------------------------------


@nb.njit(inline="always", error_model="numpy")
def _valid(y, wall):  # pragma: no cover - compiled
    """Finite, strictly increasing and (with a wall) y_0 > 0."""
    n = y.size
    ok = np.isfinite(y[0])
    for i in range(1, n):
        ok = ok and np.isfinite(y[i]) and y[i] > y[i - 1]
    if wall:
        ok = ok and y[0] > 0.0
    return ok


@nb.njit(inline="always", error_model="numpy")
def _length_scale(y, wall):  # pragma: no cover - compiled
    scale = np.inf
    for i in range(1, y.size):
        scale = min(scale, y[i] - y[i - 1])
    if wall:
        scale = min(scale, y[0])
    return scale


@nb.njit(inline="always", error_model="numpy")
def _moved(a, b):  # pragma: no cover - compiled
    m = 0.0
    for i in range(a.size):
        m = max(m, abs(a[i] - b[i]))
    return m


@nb.njit(inline="always", error_model="numpy")
def _near(x, xn, tv, h, f, wall, spacing):  # pragma: no cover - compiled
    """The criterion of DriftImplicit (see DysonBrownianMotion.near_singularity)."""
    if f == 0.0:
        return True
    if spacing:
        return xn[0] < (1.0 - f) * x[0] or h * tv[0, 0] > f * x[0] * x[0]
    near = wall and xn[0] < (1.0 - f) * x[0]
    for i in range(x.size - 1):
        g = x[i + 1] - x[i]
        near = near or xn[i + 1] - xn[i] < (1.0 - f) * g or h * tv[i, i + 1] > f * g * g
    return near


@nb.njit(inline="always", fastmath=_FAST, error_model="numpy")
def _attempt(x, xn, c, start, kv, tv, gv, h, dw, scheme, form, ws):  # pragma: no cover
    """One step of the base scheme from x over h with increments dw into xn; True if accepted.

    scheme : FusedScheme, form : FusedForm; c, start (n,) and ws (2n + 4, n) are work arrays.
    """
    n = x.size
    spacing, wall = form.spacing, form.wall
    fraction = scheme.explicit_fraction
    if spacing:
        xn[0] = x[0] + (kv[0] + tv[0, 0] / x[0]) * h + gv[0] * dw[0]
    else:
        for i in range(n):
            xi = x[i]
            acc = 0.0
            for j in range(n):
                if j != i:
                    acc += tv[i, j] / (xi - x[j])
            xn[i] = xi + (kv[i] + acc) * h + gv[i] * dw[i]
    ok = _valid(xn, wall)
    if scheme.implicit and (not ok or _near(x, xn, tv, h, fraction, wall, spacing)):
        for i in range(n):
            c[i] = x[i] + kv[i] * h + gv[i] * dw[i]
        if spacing:
            xn[0] = 0.5 * (c[0] + math.sqrt(c[0] * c[0] + 4.0 * h * tv[0, 0]))
        else:
            for i in range(n):
                start[i] = xn[i]
            tol, max_iter = form.newton_tol, form.newton_max_iter
            if not implicit_step(x, start, c, tv, h, fraction, tol, max_iter, xn, ws):
                return False
        ok = _valid(xn, wall)
    if ok and scheme.limit_moves:
        ok = _moved(xn, x) <= scheme.safety * _length_scale(x, wall)
    return ok


@nb.njit(inline="always", error_model="numpy")
def bridge_start(x, x0, stack, nodes, dw):  # pragma: no cover - compiled
    """Start a refinement: x0 = x, the root (node 1) pending with the step's increments."""
    for i in range(x.size):
        x0[i] = x[i]
        stack[0, i] = dw[i]
    nodes[0] = 1


@nb.njit(inline="always", error_model="numpy")
def bridge_depth(node):  # pragma: no cover - compiled
    """The depth of bridge node ``node`` (root 1, children 2m, 2m + 1): its bit length - 1."""
    depth = 0
    while node > 1:
        node >>= 1
        depth += 1
    return depth


@nb.njit(inline="always", error_model="numpy")
def bridge_split(stack, nodes, top, hh, zb, keys, path, step, ki, wi,
                 fi):  # pragma: no cover - compiled
    """Split the pending half ``top`` (node m, increments stack[top], length hh) at its bridge
    midpoint: first half dw/2 + sqrt(hh/4) Z, Z the normals labelled (path, step, m), pushed on
    top of the second (the rest). Returns the new top."""
    n = zb.size
    node = nodes[top]
    normals(zb, n, keys, path, step, np.uint64(node), ki, wi, fi)
    half = math.sqrt(0.25 * hh)
    for i in range(n):
        d1 = 0.5 * stack[top, i] + half * zb[i]
        stack[top + 1, i] = d1
        stack[top, i] = stack[top, i] - d1
    nodes[top] = 2 * node + 1
    nodes[top + 1] = 2 * node
    return top + 1


@nb.njit(fastmath=_FAST, cache=True, error_model="numpy")
def _refine(
    x, xn, c, start, x0, zb, ws, stack, nodes, kv, tv, gv, h, dw, path, step, scheme, form,
    keys, ki, wi, fi,
):  # pragma: no cover - compiled
    """Redo a failed step of x over h as halves along the Brownian bridge, depth first.

    A pending half is (node, increments), node 1 the whole step and 2m, 2m + 1 the halves of
    m (depth = bit length - 1); splitting node m draws the normals labelled (path, step, m)
    (:func:`bridge_split`). Returns False, with x unchanged, if a half still fails at depth
    ``max_depth``.
    """
    n = x.size
    bridge_start(x, x0, stack, nodes, dw)
    top = bridge_split(stack, nodes, 0, h, zb, keys, path, step, ki, wi, fi)  # the step failed
    while top >= 0:
        depth = bridge_depth(nodes[top])
        hh = h / (1 << depth)
        for i in range(n):
            zb[i] = stack[top, i]
        if _attempt(x, xn, c, start, kv, tv, gv, hh, zb, scheme, form, ws):
            for i in range(n):
                x[i] = xn[i]
            top -= 1
        elif depth >= scheme.max_depth:
            for i in range(n):
                x[i] = x0[i]
            return False
        else:
            top = bridge_split(stack, nodes, top, hh, zb, keys, path, step, ki, wi, fi)
    return True


@nb.njit(fastmath=_FAST, cache=True, error_model="numpy")
def _fill_normals(z, words, step0, count, n, path, keys, ki, wi, fi):  # pragma: no cover
    """z[j, q] = the grid normal j of path ``path``, step ``step0 + q``, for q < count.

    The same numbers as :func:`dysonsgd.sde._fused.philox.normals` with node 0; the loop over
    steps is innermost, where Philox vectorises (about 8x faster than over the lanes).
    """
    k0, k1 = keys[0], keys[1]  # scalars: loads of keys in the loop would block vectorising
    for lane in range((n + 1) // 2):
        c0 = np.uint64(lane)
        for q in range(count):
            a, b = _philox(c0, path, np.uint64(step0 + q), np.uint64(0), k0, k1)
            words[2 * lane, q] = a
            words[2 * lane + 1, q] = b
    slow = 0
    for j in range(n):
        for q in range(count):
            r = np.int64(words[j, q])
            idx = r & 255
            rabs = (r >> 9) & 0x000FFFFFFFFFFFFF
            sign = 1.0 - 2.0 * np.float64((r >> 8) & 1)
            z[j, q] = sign * (np.float64(rabs) * wi[idx])
            slow += rabs >= ki[idx]
    if slow:
        for j in range(n):
            for q in range(count):
                r = np.int64(words[j, q])
                if ((r >> 9) & 0x000FFFFFFFFFFFFF) >= ki[r & 255]:
                    z[j, q] = _ziggurat_slow(
                        words[j, q], keys, np.uint64(j), path, np.uint64(step0 + q), np.uint64(0),
                        ki, wi, fi,
                    )


@nb.njit(fastmath=_FAST, cache=True, error_model="numpy")
def _path_block(
    p, x, dead, out, rec, step0, h, cidx, cw, kk, tv, gg, dd, keys, ki, wi, fi, scheme, form
):  # pragma: no cover - compiled
    """Advance path p (state x, (n,), in place) over the block; return its failure step or -1.

    The coefficients of a step are copied (or interpolated) into path-local buffers when they
    change, so the step itself touches no shared array.
    """
    n = x.size
    count = h.size
    p = np.int64(p)
    pk = p if kk.shape[1] > 1 else np.int64(0)
    pv = p if tv.shape[1] > 1 else np.int64(0)
    z = np.empty((n, SUB_STEPS))
    words = np.empty((2 * ((n + 1) // 2), SUB_STEPS), dtype=np.uint64)
    dw = np.empty(n)
    kv = np.empty(n)
    tvv = np.empty((n, n))
    gv = np.empty(n)
    xn = np.empty(n)
    c = np.empty(n)
    start = np.empty(n)
    x0 = np.empty(n)
    zb = np.empty(n)
    ws = np.empty((2 * n + 4, n))
    stack = np.empty((scheme.max_depth + 2, n))
    nodes = np.empty(scheme.max_depth + 2, dtype=np.int64)
    path = np.uint64(p)
    last_ci = np.int64(-1)
    last_w = -1.0
    for b0 in range(0, count, SUB_STEPS):
        m = min(SUB_STEPS, count - b0)
        if dead < 0:
            _fill_normals(z, words, step0 + b0, m, n, path, keys, ki, wi, fi)
        for q in range(m):
            b = b0 + q
            if dead < 0:
                ci = cidx[b]
                w = cw[b]
                if ci != last_ci or w != last_w:
                    u = 1.0 - w
                    for i in range(n):
                        if w == 0.0:
                            kv[i] = kk[ci, pk, i]
                            gv[i] = gg[ci, pv, i]
                            for j in range(n):
                                tvv[i, j] = tv[ci, pv, i, j]
                        else:
                            kv[i] = u * kk[ci, pk, i] + w * kk[ci + 1, pk, i]
                            gv[i] = math.sqrt(u * dd[ci, pv, i] + w * dd[ci + 1, pv, i])
                            for j in range(n):
                                tvv[i, j] = u * tv[ci, pv, i, j] + w * tv[ci + 1, pv, i, j]
                    last_ci, last_w = ci, w
                sq = math.sqrt(h[b])
                for j in range(n):
                    dw[j] = sq * z[j, q]
                if _attempt(x, xn, c, start, kv, tvv, gv, h[b], dw, scheme, form, ws):
                    for j in range(n):
                        x[j] = xn[j]
                elif scheme.max_depth == 0 or not _refine(
                    x, xn, c, start, x0, zb, ws, stack, nodes, kv, tvv, gv, h[b], dw, path,
                    np.uint64(step0 + b), scheme, form, keys, ki, wi, fi,
                ):
                    dead = step0 + b
            r = rec[b]
            if r >= 0:
                for j in range(n):
                    out[r, p, j] = x[j]
    return dead


@nb.njit(nogil=True, cache=True, error_model="numpy")
def fused_block(
    first, last, x, dead, out, rec, step0, h, cidx, cw, kk, tv, gg, dd, keys, ki, wi, fi, scheme,
    form,
):  # pragma: no cover - compiled
    """Advance the paths first <= p < last over one block of steps (in place).

    Releases the GIL: :func:`dysonsgd.sde._fused.driver.integrate_fused` runs chunks of paths
    on threads.

    Parameters
    ----------
    first, last : the range of paths
    x : (P, N) states; dead : (P,) int64, the global step at which a path failed, or -1
    out : (n_rows, P, N); rec : (B,) int64, the row to record after each step, or -1
    step0 : int, the global index of the block's first step; h : (B,) step sizes
    cidx, cw : (B,) the coefficient row of each step and the weight of the next row
    kk : (nc, Pk, N) K; tv : (nc, Pv, N, N) T V; gg, dd : (nc, Pv, N) sqrt(T V_ii), T V_ii
        (for the spacing N = 1 with tv = T V_S, dd = 2 T D_S); Pk, Pv are 1 or P
    keys : (4,) uint64; ki, wi, fi : ziggurat tables
    scheme : FusedScheme (the solver's), form : FusedForm (the equation's)
    """
    for p in range(first, last):
        dead[p] = _path_block(
            p, x[p], dead[p], out, rec, step0, h, cidx, cw, kk, tv, gg, dd, keys, ki, wi, fi,
            scheme, form,
        )
