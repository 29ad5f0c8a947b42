"""Fused integration of Dyson Brownian motion (4.3) and the spacing SDE (4.8) in one kernel.

:func:`dysonsgd.sde.equations.integrate` comes here when the coefficients are arrays (constant, or
linear
in time between knots as given by :func:`dysonsgd.sde.equations.piecewise_linear`) and the solver
is one
of Euler-Maruyama, the drift-implicit step or the adaptive scheme built on them. Whole blocks of
steps then run in one compiled call per chunk of paths, with the Gaussian increments drawn
in the kernel from the counter-based generator of :mod:`dysonsgd.sde._fused.kernels`: normal j of
step s of path p is a function of (seed, p, s, j) only, so the result does not depend on the
thread count or on how the paths and steps are split into blocks. The kernel releases the GIL
and chunks of paths run on ``numba.get_num_threads()`` Python threads (a serial kernel
compiles in a fraction of the time of numba's ``parallel=True``).

The schemes are those of :mod:`dysonsgd.sde.equations`, step by step:

- Euler-Maruyama: x' = x + (K + T sum_j V_ij/(x_i - x_j)) h + sqrt(T V_ii) dW_i.
- drift-implicit: the explicit step is kept when it stays in the domain, no neighbouring gap (or
  the distance to a wall) shrank by more than ``fraction`` of itself and no pair is stiff
  (h T V_{i,i+1} > fraction g^2); otherwise the Coulomb term is taken implicitly for the levels
  of the flagged pairs (damped Newton on their convex log-barrier energy, the other levels at
  their explicit positions; :func:`dysonsgd.sde._fused.kernels.implicit_step`), or as the positive
  root of a quadratic for the spacing.
- adaptive: a step that fails (leaves the domain, or moves more than ``safety`` length scales)
  is halved along the Brownian bridge of the same path, depth first, down to h / 2**max_depth;
  the bridge midpoint of node m (root 1, children 2m and 2m + 1) uses the normals labelled
  (p, s, m). Inside a refined step the coefficients stay at their values at the step's start.

V, T V, sqrt(T V_ii) are evaluated once per step: shared coefficients that vary in time are
interpolated for a block of steps before the call, per-path ones in the kernel into a buffer.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numba as nb
import numpy as np

from dysonsgd.sde._fused.kernels import FAST as _FAST
from dysonsgd.sde._fused.kernels import ZIGGURAT, _philox, _ziggurat_slow, implicit_step, normals

__all__ = ["MAX_STEPS", "fused_block", "integrate_fused", "keys_from_seed"]

#: the step index is the third 32-bit word of the Philox counter
MAX_STEPS = 2**32
#: bridge node ids (< 2**(max_depth + 1)) are the fourth word
MAX_DEPTH = 30
#: normals are generated for this many steps at a time (Philox vectorised over the steps)
_SUB = 16
#: target number of trajectory-steps per kernel call
_WORK = 2**21


def keys_from_seed(seed) -> np.ndarray:
    """(4,) uint64: the two Philox keys (normals; ziggurat rejections) of a seed or SeedSequence."""
    sequence = (
        seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    )
    return sequence.generate_state(4, np.uint32).astype(np.uint64)


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
    """The criterion of DriftImplicit (see
    dysonsgd.sde.equations.DysonBrownianMotion.near_singularity)."""
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
def _attempt(x, xn, c, start, kv, tv, gv, h, dw, ipar, fpar, ws):  # pragma: no cover - compiled
    """One step of the base scheme from x over h with increments dw into xn; True if accepted.

    ipar = (scheme, max_depth, positive, spacing, max_iter), fpar = (fraction, safety, tol);
    c, start (n,) and ws (2n + 4, n) are work arrays.
    """
    n = x.size
    scheme, spacing = ipar[0], ipar[3]
    wall = ipar[2] != 0 or spacing != 0
    fraction, safety = fpar[0], fpar[1]
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
    if scheme == 1 and (not ok or _near(x, xn, tv, h, fraction, wall, spacing)):
        for i in range(n):
            c[i] = x[i] + kv[i] * h + gv[i] * dw[i]
        if spacing:
            xn[0] = 0.5 * (c[0] + math.sqrt(c[0] * c[0] + 4.0 * h * tv[0, 0]))
        else:
            for i in range(n):
                start[i] = xn[i]
            if not implicit_step(x, start, c, tv, h, fraction, fpar[2], ipar[4], xn, ws):
                return False
        ok = _valid(xn, wall)
    if ok and safety >= 0.0:
        ok = _moved(xn, x) <= safety * _length_scale(x, wall)
    return ok


@nb.njit(fastmath=_FAST, cache=True, error_model="numpy")
def _refine(
    x, xn, c, start, x0, zb, ws, stack, nodes, kv, tv, gv, h, dw, path, step, ipar, fpar, keys,
    ki, wi, fi,
):  # pragma: no cover - compiled
    """Redo a failed step of x over h as halves along the Brownian bridge, depth first.

    A pending half is (node, increments), node 1 the whole step and 2m, 2m + 1 the halves of
    m (depth = bit length - 1); splitting node m draws the normals labelled (path, step, m).
    Returns False, with x unchanged, if a half still fails at depth ``max_depth``.
    """
    n = x.size
    max_depth = ipar[1]
    for i in range(n):
        x0[i] = x[i]
        stack[0, i] = dw[i]
    top = 0
    nodes[0] = 1
    first = True  # the whole step has failed already
    while top >= 0:
        node = nodes[top]
        depth = 0
        m = node
        while m > 1:
            m >>= 1
            depth += 1
        hh = h / (1 << depth)
        if not first:
            for i in range(n):
                zb[i] = stack[top, i]
            if _attempt(x, xn, c, start, kv, tv, gv, hh, zb, ipar, fpar, ws):
                for i in range(n):
                    x[i] = xn[i]
                top -= 1
                continue
            if depth >= max_depth:
                for i in range(n):
                    x[i] = x0[i]
                return False
        first = False
        # first half dw/2 + sqrt(hh/4) Z, second half the rest
        normals(zb, n, keys, path, step, np.uint64(node), ki, wi, fi)
        half = math.sqrt(0.25 * hh)
        for i in range(n):
            d1 = 0.5 * stack[top, i] + half * zb[i]
            stack[top + 1, i] = d1
            stack[top, i] = stack[top, i] - d1
        nodes[top] = 2 * node + 1
        nodes[top + 1] = 2 * node
        top += 1
    return True


@nb.njit(fastmath=_FAST, cache=True, error_model="numpy")
def _fill_normals(z, words, step0, count, n, path, keys, ki, wi, fi):  # pragma: no cover
    """z[j, q] = the grid normal j of path ``path``, step ``step0 + q``, for q < count.

    The same numbers as :func:`dysonsgd.sde._fused.kernels.normals` with node 0; the loop over
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
    p, x, dead, out, rec, step0, h, cidx, cw, kk, tv, gg, dd, keys, ki, wi, fi, ipar, fpar
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
    z = np.empty((n, _SUB))
    words = np.empty((2 * ((n + 1) // 2), _SUB), dtype=np.uint64)
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
    stack = np.empty((ipar[1] + 2, n))
    nodes = np.empty(ipar[1] + 2, dtype=np.int64)
    path = np.uint64(p)
    last_ci = np.int64(-1)
    last_w = -1.0
    for b0 in range(0, count, _SUB):
        m = min(_SUB, count - b0)
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
                if _attempt(x, xn, c, start, kv, tvv, gv, h[b], dw, ipar, fpar, ws):
                    for j in range(n):
                        x[j] = xn[j]
                elif ipar[1] == 0 or not _refine(
                    x, xn, c, start, x0, zb, ws, stack, nodes, kv, tvv, gv, h[b], dw, path,
                    np.uint64(step0 + b), ipar, fpar, keys, ki, wi, fi,
                ):
                    dead = step0 + b
            r = rec[b]
            if r >= 0:
                for j in range(n):
                    out[r, p, j] = x[j]
    return dead


@nb.njit(nogil=True, cache=True, error_model="numpy")
def fused_block(
    first, last, x, dead, out, rec, step0, h, cidx, cw, kk, tv, gg, dd, keys, ki, wi, fi, ipar, fpar
):  # pragma: no cover - compiled
    """Advance the paths first <= p < last over one block of steps (in place).

    Releases the GIL: :func:`integrate_fused` runs chunks of paths on threads.

    Parameters
    ----------
    first, last : the range of paths
    x : (P, N) states; dead : (P,) int64, the global step at which a path failed, or -1
    out : (n_rows, P, N); rec : (B,) int64, the row to record after each step, or -1
    step0 : int, the global index of the block's first step; h : (B,) step sizes
    cidx, cw : (B,) the coefficient row of each step and the weight of the next row
    kk : (nc, Pk, N) K; tv : (nc, Pv, N, N) T V; gg, dd : (nc, Pv, N) sqrt(T V_ii), T V_ii
        (for the spacing N = 1 with tv = T V_S, dd = 2 T D_S); Pk, Pv are 1 or P
    keys : (4,) uint64; ki, wi, fi : ziggurat tables; ipar, fpar : see :func:`_attempt`
    """
    for p in range(first, last):
        dead[p] = _path_block(
            p, x[p], dead[p], out, rec, step0, h, cidx, cw, kk, tv, gg, dd, keys, ki, wi, fi,
            ipar, fpar,
        )


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def _interpolation(knots: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row index and weight of the next row for each time t (held constant outside)."""
    if knots.size == 1:
        return np.zeros(t.size, dtype=np.int64), np.zeros(t.size)
    k = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, knots.size - 2)
    w = (t - knots[k]) / (knots[k + 1] - knots[k])
    below, above = t <= knots[0], t >= knots[-1]
    k = np.where(above, knots.size - 1, k)
    w = np.where(below | above, 0.0, w)
    return k.astype(np.int64), w


def integrate_fused(
    x0: np.ndarray,
    times: np.ndarray,
    steps_per_interval: np.ndarray,
    knots: np.ndarray,
    kk: np.ndarray,
    tv: np.ndarray,
    dd: np.ndarray,
    keys: np.ndarray,
    ipar: np.ndarray,
    fpar: np.ndarray,
    block: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate all paths over the grid of ``times`` in blocks of steps.

    Parameters
    ----------
    x0 : (P, N) initial states
    times : (n_times,) output times; steps_per_interval : (n_times - 1,) int
    knots : (nc,) coefficient times (nc = 1: constant coefficients)
    kk : (nc, Pk, N), tv : (nc, Pv, N, N), dd : (nc, Pv, N) K, T V, and the diffusion variance
        g^2 (T V_ii; 2 T D_S for the spacing), at the knots
    keys, ipar, fpar : see :func:`fused_block`
    block : steps per kernel call (default: about 2**21 trajectory-steps per call)

    Returns
    -------
    out : (n_times, P, N); dead : (P,) the step at which each path failed, or -1;
    done : (n_times,) the number of steps completed at each output time
    """
    n_paths, n = x0.shape
    counts = np.asarray(steps_per_interval, dtype=np.int64)
    done = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty((times.size, n_paths, n))
    out[0] = x0
    x = np.array(x0, dtype=float, order="C")
    dead = np.full(n_paths, -1, dtype=np.int64)
    shared = kk.shape[1] == 1 and tv.shape[1] == 1 and knots.size > 1
    if block is None:
        block = max(_SUB, _WORK // max(n_paths, 1))
        if shared:
            block = min(block, max(_SUB, 2**20 // (n * n)))
    threads = max(1, min(numba.get_num_threads(), n_paths))
    # a few chunks per thread balance the paths that need implicit steps or die early
    n_chunks = min(n_paths, 4 * threads) if threads > 1 else 1
    edges = np.linspace(0, n_paths, n_chunks + 1).astype(np.int64)
    ki, wi, fi = ZIGGURAT
    gg = np.sqrt(dd)
    spans = np.diff(times)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for s0 in range(0, int(done[-1]), block):
            s = np.arange(s0, min(s0 + block, int(done[-1])), dtype=np.int64)
            k = np.searchsorted(done, s, side="right") - 1  # the interval of each step
            h = spans[k] / counts[k]
            t = times[k] + (s - done[k]) * h
            rec = np.where(s + 1 == done[k + 1], k + 1, -1).astype(np.int64)
            ci, cw = _interpolation(knots, t)
            if shared:  # the same coefficients for every path: interpolate once per step here
                u, w = (1.0 - cw)[:, None, None], cw[:, None, None]
                nxt = np.minimum(ci + 1, knots.size - 1)
                bk = u * kk[ci] + w * kk[nxt]
                bt = u[..., None] * tv[ci] + w[..., None] * tv[nxt]
                bd = u * dd[ci] + w * dd[nxt]
                args = (bk, bt, np.sqrt(bd), bd)
                ci, cw = np.arange(s.size, dtype=np.int64), np.zeros(s.size)
            else:
                args = (kk, tv, gg, dd)
            tail = (x, dead, out, rec, s0, h, ci, cw, *args, keys, ki, wi, fi, ipar, fpar)
            if pool is None:
                fused_block(0, n_paths, *tail)
            else:
                chunks = itertools.pairwise(edges)
                runs = [pool.submit(fused_block, lo, hi, *tail) for lo, hi in chunks]
                for run in runs:
                    run.result()
    finally:
        if pool is not None:
            pool.shutdown()
    return out, dead, done
