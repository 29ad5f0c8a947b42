"""The complete eigenvalue SDE's explicit step on L paths at once, one path per SIMD lane.

As :mod:`dysonsgd.sde._fused.lanes` for Dyson Brownian motion: a block of L paths (one 64-byte
vector, :mod:`dysonsgd.train._numba.simd`) is stored with the path innermost, X[i][lane], and
the explicit proposal of :func:`dysonsgd.sde._fused.complete_step._explicit` is computed for
the L paths with one vector instruction per operation. Each pair i < j costs one weight
W_ij = T V_ij + lr P_ij (symmetric) and one division for the L paths, entering x_i as
W_ij / (x_i - x_j) and x_j as its negative (half the work of the per-path sum over ordered
pairs). The moments enter as base values and slopes on the current knot interval, gathered
once per interval for the block's paths (each its own model): a field at time t is
a_k + (t - t_k) (a_{k+1} - a_k) / (t_{k+1} - t_k), the linear interpolation of
``EigenvalueSDE._at`` (rounded differently).

Paths whose proposal is not accepted as it stands (the domain, the drift-implicit criterion, the
move limit) finish their step per path: the implicit Coulomb step on the block's weights W, then
the Brownian-bridge refinement of :func:`~dysonsgd.sde._fused.complete_step._refine`. The
normals are the per-path kernel's, so a path's trajectory does not depend on the lanes it
shares a block with, the thread count or the split of paths and steps into calls.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from dysonsgd.sde._fused.complete_step import _refine, _slot, buffer_size
from dysonsgd.sde._fused.implicit import FAST, implicit_step
from dysonsgd.sde._fused.lane_normals import fill_lane_normals, miss_buffer
from dysonsgd.sde._fused.step import SUB_STEPS, _length_scale, _moved, _valid
from dysonsgd.train._numba.simd import (
    vadd,
    vdiv,
    vfma,
    vload,
    vmul,
    vpos,
    vsplat,
    vstore,
    vsub,
    vwhere,
)
from dysonsgd.train.plan import VECTOR_BYTES

__all__ = ["LANES", "complete_lane_block"]

#: float64 paths per block (one vector register)
LANES = VECTOR_BYTES // 8


@nb.njit(inline="always", error_model="numpy")
def _interval(moments, knots, k, b0, m, temperature, lr, base, slope):  # pragma: no cover
    """base, slope = the block's fields at knot k and their rate to knot k + 1 (0 past the last).

    Field f of lane l is at [f * L + l]: g_ii, T q_i + lr m_i (2N); per pair i < j, row-major,
    T v_ji, T v_ij, 2 T c_ij, sqrt(lr) g_ji, sqrt(lr) g_ij; 2 sqrt(T) L_ik over k <= i. Lanes
    past the block's m paths copy its first path.
    """
    g, msq, ito, var, cross, factor = moments
    lanes = LANES
    n = msq.shape[-1]
    nc = knots.size
    k1 = min(k + 1, nc - 1)
    rate = 1.0 / (knots[k1] - knots[k]) if k1 != k else 0.0
    root = math.sqrt(lr)
    two_t = 2.0 * temperature
    scale = 2.0 * math.sqrt(temperature)
    per_path = msq.shape[1] > 1
    for lane in range(lanes):
        pm = b0 + min(lane, m - 1) if per_path else 0
        f = 0
        for i in range(n):
            a, b = g[k, pm, i * n + i], g[k1, pm, i * n + i]
            base[f * lanes + lane] = a
            slope[f * lanes + lane] = (b - a) * rate
            a = temperature * ito[k, pm, i] + lr * msq[k, pm, i]
            b = temperature * ito[k1, pm, i] + lr * msq[k1, pm, i]
            base[(n + f) * lanes + lane] = a
            slope[(n + f) * lanes + lane] = (b - a) * rate
            f += 1
        f = 2 * n
        for i in range(n):
            for j in range(i + 1, n):
                ij, ji = i * n + j, j * n + i
                for a, b in ((temperature * var[k, pm, ji], temperature * var[k1, pm, ji]),
                             (temperature * var[k, pm, ij], temperature * var[k1, pm, ij]),
                             (two_t * cross[k, pm, ij], two_t * cross[k1, pm, ij]),
                             (root * g[k, pm, ji], root * g[k1, pm, ji]),
                             (root * g[k, pm, ij], root * g[k1, pm, ij])):
                    base[f * lanes + lane] = a
                    slope[f * lanes + lane] = (b - a) * rate
                    f += 1
        for i in range(n):
            for j in range(i + 1):
                a, b = scale * factor[k, pm, i * n + j], scale * factor[k1, pm, i * n + j]
                base[f * lanes + lane] = a
                slope[f * lanes + lane] = (b - a) * rate
                f += 1


@nb.njit(inline="always", error_model="numpy")
def _proposal(X, XN, S, REG, NOISE, WP, DW, base, slope, tau, lr, h, ref):  # pragma: no cover
    """The explicit proposal XN of the block from X (lane layout), with the regular drift REG,
    the noise NOISE, s = sqrt(x) in S and the pair weights WP on the way."""
    lanes = LANES
    n = X.size // lanes
    vt = vsplat(ref, tau)
    vh = vsplat(ref, h)
    vlr = vsplat(ref, lr)
    two = vsplat(ref, 2.0)
    zero = vsplat(ref, 0.0)
    for f in range(n * lanes):
        S[f] = math.sqrt(max(X[f], 0.0))
    tri = (2 * n + 5 * (n * (n - 1) // 2)) * lanes
    for i in range(n):
        si = vload(S, i * lanes)
        gi = vfma(vt, vload(slope, i * lanes), vload(base, i * lanes))
        off = vfma(vt, vload(slope, (n + i) * lanes), vload(base, (n + i) * lanes))
        # K_i + T q_i + lr m_i - lr g_ii^2
        vstore(REG, i * lanes, vsub(off, vfma(two, vmul(si, gi), vmul(vlr, vmul(gi, gi)))))
        row = tri + (i * (i + 1) // 2) * lanes
        acc = zero
        for k in range(i + 1):
            f = row + k * lanes
            acc = vfma(vfma(vt, vload(slope, f), vload(base, f)), vload(DW, k * lanes), acc)
        vstore(NOISE, i * lanes, vmul(si, acc))
        vstore(XN, i * lanes, zero)  # the Coulomb sum, until the proposal
    p = 0
    for i in range(n):
        xi, si = vload(X, i * lanes), vload(S, i * lanes)
        acc = vload(XN, i * lanes)
        for j in range(i + 1, n):
            xj, sj = vload(X, j * lanes), vload(S, j * lanes)
            f = (2 * n + 5 * p) * lanes
            r = vadd(vmul(si, vfma(vt, vload(slope, f + 3 * lanes), vload(base, f + 3 * lanes))),
                     vmul(sj, vfma(vt, vload(slope, f + 4 * lanes), vload(base, f + 4 * lanes))))
            w = vfma(xi, vfma(vt, vload(slope, f), vload(base, f)),
                     vfma(xj, vfma(vt, vload(slope, f + lanes), vload(base, f + lanes)),
                          vfma(vmul(si, sj),
                               vfma(vt, vload(slope, f + 2 * lanes), vload(base, f + 2 * lanes)),
                               vmul(r, r))))
            vstore(WP, p * lanes, w)
            q = vdiv(w, vsub(xi, xj))
            acc = vadd(acc, q)
            vstore(XN, j * lanes, vsub(vload(XN, j * lanes), q))
            p += 1
        drift = vmul(vadd(vload(REG, i * lanes), acc), vh)
        vstore(XN, i * lanes, vadd(vadd(xi, drift), vload(NOISE, i * lanes)))


@nb.njit(inline="always", error_model="numpy")
def _flags(X, XN, WP, h, fraction, wall, check_near, FLAG, ref):  # pragma: no cover
    """FLAG[:L] = the domain of XN (1.0 / 0.0), FLAG[L:] = the drift-implicit criterion of
    :class:`~dysonsgd.sde.DriftImplicit` (gap or x_1 shrunk by more than ``fraction`` of
    itself, or a stiff pair h W_{i,i+1} > fraction g^2), as vectors of flags (a < b as
    b - a > 0: false with a NaN, like the per-path tests)."""
    lanes = LANES
    n = X.size // lanes
    zero = vsplat(ref, 0.0)
    keep = vsplat(ref, 1.0 - fraction)
    vf = vsplat(ref, fraction)
    vh = vsplat(ref, h)
    xl = vload(XN, 0)
    okv = vmul(vpos(vsub(xl, vsplat(ref, -np.inf))),
               vpos(vsub(vsplat(ref, np.inf), vload(XN, (n - 1) * lanes))))
    nearv = zero
    if wall:
        okv = vmul(okv, vpos(xl))
        if check_near:
            nearv = vpos(vsub(vmul(keep, vload(X, 0)), xl))
    for i in range(n - 1):
        gn = vsub(vload(XN, (i + 1) * lanes), vload(XN, i * lanes))
        okv = vmul(okv, vpos(gn))
        if check_near:
            g = vsub(vload(X, (i + 1) * lanes), vload(X, i * lanes))
            p = i * n - i * (i + 1) // 2  # the pair (i, i + 1)
            stiff = vsub(vmul(vh, vload(WP, p * lanes)), vmul(vmul(vf, g), g))
            nearv = vadd(nearv, vadd(vpos(vsub(vmul(keep, g), gn)), vpos(stiff)))
    vstore(FLAG, 0, okv)
    vstore(FLAG, lanes, nearv)


@nb.njit(nogil=True, cache=True, error_model="numpy", fastmath=FAST)
def complete_lane_block(first, last, x, dead, out, rec, step0, h, times, knots, moments,
                        temperature, lr, keys, ki, wi, fi, scheme, form):  # pragma: no cover
    """Advance the paths first <= p < last over one block of steps, L paths at a time.

    The arguments are those of :func:`dysonsgd.sde._fused.complete_step.complete_block`.
    """
    n = x.shape[1]
    count = h.size
    lanes = LANES
    n_pairs = n * (n - 1) // 2
    n_fields = 2 * n + 5 * n_pairs + n * (n + 1) // 2
    ref = np.zeros(1)
    X, XN, S = np.zeros(n * lanes), np.zeros(n * lanes), np.zeros(n * lanes)
    REG, NOISE, DW = np.zeros(n * lanes), np.zeros(n * lanes), np.zeros(n * lanes)
    WP = np.zeros(max(n_pairs, 1) * lanes)
    base, slope = np.zeros(n_fields * lanes), np.zeros(n_fields * lanes)
    FLAG, MASK = np.zeros(2 * lanes), np.zeros(lanes)
    Z = np.empty(SUB_STEPS * n * lanes)
    z1 = np.empty((n, SUB_STEPS))
    misses = miss_buffer(n)
    words = np.empty((2 * ((n + 1) // 2), SUB_STEPS), dtype=np.uint64)
    xs, xns, dws, c, start = (np.empty(n), np.empty(n), np.empty(n), np.empty(n),
                              np.empty(n))
    s, reg, x0, zb = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    buf = np.empty(buffer_size(n))
    tvv = np.zeros((n, n))
    ws = np.empty((2 * n + 4, n))
    stack = np.empty((scheme.max_depth + 2, n))
    nodes = np.empty(scheme.max_depth + 2, dtype=np.int64)
    live = np.zeros(lanes, dtype=np.bool_)
    per_path = moments[1].shape[1] > 1
    fraction = scheme.explicit_fraction
    check_near = scheme.implicit and fraction != 0.0
    wall = form.wall
    for b0 in range(first, last, lanes):
        m = min(lanes, last - b0)
        for lane in range(lanes):
            live[lane] = lane < m and dead[b0 + lane] < 0
            for i in range(n):
                X[i * lanes + lane] = x[b0 + min(lane, m - 1), i]
        cur_k = np.int64(-1)
        for s0 in range(0, count, SUB_STEPS):
            cnt = min(SUB_STEPS, count - s0)
            any_live = fill_lane_normals(Z, z1, words, misses, live, b0, step0 + s0, cnt, n,
                                         keys, ki, wi, fi)
            for q in range(cnt):
                b = s0 + q
                if any_live:
                    k, w = _slot(knots, times[b])
                    if k != cur_k:
                        _interval(moments, knots, k, b0, m, temperature, lr, base, slope)
                        cur_k = k
                    tau = w * (knots[min(k + 1, knots.size - 1)] - knots[k])
                    hb = h[b]
                    sq = math.sqrt(hb)
                    for j in range(n):
                        vstore(DW, j * lanes, vmul(vsplat(ref, sq), vload(Z, (q * n + j) * lanes)))
                        for lane in range(m, lanes):
                            DW[j * lanes + lane] = 0.0
                    _proposal(X, XN, S, REG, NOISE, WP, DW, base, slope, tau, lr, hb, ref)
                    _flags(X, XN, WP, hb, fraction, wall, check_near, FLAG, ref)
                    for lane in range(lanes):
                        MASK[lane] = 0.0
                        if not live[lane]:
                            continue
                        MASK[lane] = 1.0
                        ok = FLAG[lane] != 0.0
                        near = scheme.implicit and (fraction == 0.0 or FLAG[lanes + lane] != 0.0)
                        if ok and not near and not scheme.limit_moves:
                            continue
                        for i in range(n):
                            xs[i] = X[i * lanes + lane]
                            xns[i] = XN[i * lanes + lane]
                        if scheme.implicit and (not ok or near):
                            p = 0
                            for i in range(n):
                                c[i] = xs[i] + REG[i * lanes + lane] * hb + NOISE[i * lanes + lane]
                                start[i] = xns[i]
                                for j in range(i + 1, n):
                                    tvv[i, j] = WP[p * lanes + lane]
                                    tvv[j, i] = tvv[i, j]
                                    p += 1
                            ok = implicit_step(xs, start, c, tvv, hb, fraction, form.newton_tol,
                                               form.newton_max_iter, xns, ws)
                            ok = ok and _valid(xns, wall)
                        if ok and scheme.limit_moves:
                            ok = _moved(xns, xs) <= scheme.safety * _length_scale(xs, wall)
                        if not ok:
                            for i in range(n):
                                dws[i] = DW[i * lanes + lane]
                            pm = np.int64(b0 + lane) if per_path else np.int64(0)
                            if scheme.max_depth == 0 or not _refine(
                                xs, xns, c, start, s, reg, buf, tvv, x0, zb, ws, stack, nodes,
                                knots, moments, pm, temperature, lr, times[b], hb, dws,
                                np.uint64(b0 + lane), np.uint64(step0 + b), scheme, form, keys,
                                ki, wi, fi,
                            ):
                                dead[b0 + lane] = step0 + b
                                live[lane] = False
                                MASK[lane] = 0.0
                                continue
                            for i in range(n):
                                xns[i] = xs[i]
                        for i in range(n):
                            XN[i * lanes + lane] = xns[i]
                    mk = vload(MASK, 0)
                    for i in range(n):
                        vstore(X, i * lanes, vwhere(mk, vload(XN, i * lanes), vload(X, i * lanes)))
                    any_live = False
                    for lane in range(m):
                        any_live = any_live or live[lane]
                r = rec[b]
                if r >= 0:  # failed paths keep their last state, as in the per-path kernel
                    for lane in range(m):
                        for j in range(n):
                            out[r, b0 + lane, j] = X[j * lanes + lane]
        for lane in range(m):
            for i in range(n):
                x[b0 + lane, i] = X[i * lanes + lane]
