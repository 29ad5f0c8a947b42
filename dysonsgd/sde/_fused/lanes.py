"""The fused step of Dyson Brownian motion (4.3) on L paths at once, one path per SIMD lane.

The per-path kernel of :mod:`dysonsgd.sde._fused.step` spends most of an explicit step in the
Coulomb sum, sum_{j != i} A_ij / (x_i - x_j): N (N - 1) divisions, which vectorise poorly
within one path. Here a block of L paths (one 64-byte vector,
:mod:`dysonsgd.train._numba.simd`) is stored with the path innermost, X[i][lane], and every
operation of the explicit step is one vector instruction for the L paths: each pair (i < j)
costs one division r = 1 / (x_i - x_j) for the L paths, which enters x_i as A_ij r and x_j as
-A_ji r (half the divisions of the per-path sum). A path's sum keeps the order j = 0, 1, ...
of the per-path kernel; it differs from it by the rounding of A_ij r against A_ij / (x_i - x_j).

Paths whose explicit proposal is not accepted as it stands (the drift-implicit criterion, the
domain, the move limit of :class:`dysonsgd.sde.Adaptive`) finish their step in the per-path
code (:func:`~dysonsgd.sde._fused.implicit.implicit_step`, the Brownian-bridge refinement
:func:`~dysonsgd.sde._fused.step._refine`), and the normals are those of the per-path kernel
((seed, path, step, node, component) labels, :func:`~dysonsgd.sde._fused.step._fill_normals`),
so a path's trajectory does not depend on the lanes it shares a block with, on the thread
count, or on how the paths and steps are split into calls. Only the pairwise form (N >= 2);
the spacing SDE (N = 1) keeps the per-path kernel.
"""

from __future__ import annotations

import math

import llvmlite.binding as llvm
import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from dysonsgd.sde._fused.implicit import FAST as _FAST
from dysonsgd.sde._fused.implicit import implicit_step
from dysonsgd.sde._fused.lane_normals import fill_lane_normals, miss_buffer
from dysonsgd.sde._fused.step import SUB_STEPS, _length_scale, _moved, _refine, _valid
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

__all__ = ["LANES", "lane_block"]

#: float64 paths per block (one vector register)
LANES = VECTOR_BYTES // 8


def _host_has_rcp14() -> bool:
    """The kernels compile for this CPU and it has AVX-512F (``vrcp14pd`` on 8 doubles)."""
    if nb.config.CPU_NAME is not None or LANES != 8:
        return False
    try:
        return bool(llvm.get_host_cpu_features().get("avx512f", False))
    except RuntimeError:  # pragma: no cover - no feature detection on this platform
        return False


#: 1/d by the 14-bit estimate and two Newton steps (AVX-512) instead of a division
RCP14 = _host_has_rcp14()


@intrinsic
def _rcp14(typingctx, a):
    """``vrcp14pd``: 1/a to a relative error below 2**-14, lane by lane."""

    def codegen(context, builder, sig, args):
        vty = args[0].type
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty, vty, ir.IntType(8)]),
            "llvm.x86.avx512.rcp14.pd.512")
        return builder.call(fn, [args[0], ir.Constant(vty, None), ir.Constant(ir.IntType(8), -1)])

    return a(a), codegen


@intrinsic
def _neg(typingctx, a):
    """-a lane by lane (the sign flipped: folds into a negated FMA, where 0 - a would not)."""

    def codegen(context, builder, sig, args):
        return builder.fneg(args[0])

    return a(a), codegen


@nb.njit(inline="always")
def _reciprocal(d, one):  # pragma: no cover - compiled
    """1/d lane by lane: with AVX-512 the estimate refined by two Newton steps
    r <- r + r (1 - d r) (1 - d r as one negated FMA; relative error 2**-14 -> 2**-28 ->
    below 2**-53, so within an ulp or so of the rounded quotient, at a third of a division's
    cost), else the division."""
    if RCP14:
        r = _rcp14(d)
        nd = _neg(d)
        r = vfma(r, vfma(nd, r, one), r)
        return vfma(r, vfma(nd, r, one), r)
    return vdiv(one, d)


@nb.njit(inline="always", fastmath=_FAST, error_model="numpy")
def _implicit(x, xn, c, start, kv, tv, gv, h, dw, scheme, form, ws):  # pragma: no cover
    """The implicit Coulomb step of a lane whose explicit proposal xn failed the domain or the
    drift-implicit criterion (the vector flags of :func:`_flags`, the tests of
    :func:`dysonsgd.sde._fused.step._attempt`), then the domain and the move limit as there.
    Returns whether the step is accepted (xn then holds it)."""
    n = x.size
    wall = form.wall
    for i in range(n):
        c[i] = x[i] + kv[i] * h + gv[i] * dw[i]
        start[i] = xn[i]
    if not implicit_step(x, start, c, tv, h, scheme.explicit_fraction, form.newton_tol,
                         form.newton_max_iter, xn, ws):
        return False
    ok = _valid(xn, wall)
    if ok and scheme.limit_moves:
        ok = _moved(xn, x) <= scheme.safety * _length_scale(x, wall)
    return ok


@nb.njit(inline="always", error_model="numpy")
def _finish_level(X, XN, DW, Z, zoff, KL, GL, acc, i, vs, vh):  # pragma: no cover - compiled
    """XN_i = x_i + (K_i + acc) h + g_i DW_i with DW_i = sqrt(h) Z_i (stored)."""
    lanes = LANES
    f = i * lanes
    dw = vmul(vs, vload(Z, zoff + f))
    vstore(DW, f, dw)
    drift = vmul(vadd(vload(KL, f), acc), vh)
    vstore(XN, f, vfma(vload(GL, f), dw, vadd(vload(X, f), drift)))


@nb.njit(cache=True, error_model="numpy")
def _propose(X, XN, ACC, Z, zoff, DW, KL, GL, TL, sq, hb, one,
             symmetric):  # pragma: no cover - compiled
    """The explicit Euler proposal XN of the block's L lanes from X: the increments
    DW = sqrt(h) Z[zoff:], the Coulomb sums and x_i + (K_i + sum_i) h + g_i DW_i.

    Each pair i < j costs one reciprocal r of the L gaps x_i - x_j, entering x_i as A_ij r and
    x_j as -A_ji r (one product if A is ``symmetric``). Level j's sum is the running sum of
    its terms in the order of the pair loop (i = 0, 1, ... then j's own row); rows i and
    i + 1 are taken together, which keeps that order and runs their two sums side by side.
    """
    lanes = LANES
    n = X.size // lanes
    vs = vsplat(X, sq)
    vh = vsplat(X, hb)
    zero = vsplat(X, 0.0)
    for i in range(n):
        vstore(ACC, i * lanes, zero)
    stride = n * lanes
    i = 0
    while i + 1 < n:
        k = i + 1
        xi = vload(X, i * lanes)
        xk = vload(X, k * lanes)
        r = _reciprocal(vsub(xi, xk), one)
        fik = i * stride + k * lanes
        fki = k * stride + i * lanes
        ti = vmul(vload(TL, fik), r)
        acc_i = vadd(vload(ACC, i * lanes), ti)
        acc_k = vsub(vload(ACC, k * lanes), ti if symmetric else vmul(vload(TL, fki), r))
        # offsets of x_j and ACC_j, A_ij and A_kj, A_ji and A_jk, advanced with j
        fj = (k + 1) * lanes
        fij = fik + lanes
        fkj = fij + stride
        fji = fj * n + i * lanes
        for _ in range(k + 1, n):
            xj = vload(X, fj)
            ri = _reciprocal(vsub(xi, xj), one)
            rk = _reciprocal(vsub(xk, xj), one)
            ti = vmul(vload(TL, fij), ri)
            tk = vmul(vload(TL, fkj), rk)
            acc_i = vadd(acc_i, ti)
            acc_k = vadd(acc_k, tk)
            if not symmetric:
                ti = vmul(vload(TL, fji), ri)
                tk = vmul(vload(TL, fji + lanes), rk)
            vstore(ACC, fj, vsub(vsub(vload(ACC, fj), ti), tk))
            fj += lanes
            fij += lanes
            fkj += lanes
            fji += stride
        _finish_level(X, XN, DW, Z, zoff, KL, GL, acc_i, i, vs, vh)
        _finish_level(X, XN, DW, Z, zoff, KL, GL, acc_k, k, vs, vh)
        i += 2
    if i < n:  # the last level of an odd n: its sum is complete
        _finish_level(X, XN, DW, Z, zoff, KL, GL, vload(ACC, i * lanes), i, vs, vh)


@nb.njit(inline="always", error_model="numpy")
def _flags(X, XN, TL, hb, fraction, wall, check_near, FLAG):  # pragma: no cover - compiled
    """FLAG[:L] = the domain of XN, FLAG[L:] = the drift-implicit criterion (a gap or x_1
    shrank by more than ``fraction`` of itself, or a stiff pair h A_{i,i+1} > fraction g^2),
    vectors of 1.0 / 0.0 flags (a < b as b - a > 0: false with a NaN, like the scalar tests
    of :func:`dysonsgd.sde._fused.step._valid` and ``_near``, which they equal)."""
    lanes = LANES
    n = X.size // lanes
    zero = vsplat(X, 0.0)
    keep = vsplat(X, 1.0 - fraction)
    vf = vsplat(X, fraction)
    vh = vsplat(X, hb)
    xl = vload(XN, 0)
    okv = vmul(vpos(vsub(xl, vsplat(X, -np.inf))),
               vpos(vsub(vsplat(X, np.inf), vload(XN, (n - 1) * lanes))))
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
            stiff = vsub(vmul(vh, vload(TL, (i * n + i + 1) * lanes)), vmul(vmul(vf, g), g))
            nearv = vadd(nearv, vadd(vpos(vsub(vmul(keep, g), gn)), vpos(stiff)))
    vstore(FLAG, 0, okv)
    vstore(FLAG, lanes, nearv)


@nb.njit(inline="always", error_model="numpy")
def _lane_coefficients(kvs, gvs, tvs, KL, GL, TL, kk, tv, gg, dd, ci, w, b0, m, per_k,
                       per_v):  # pragma: no cover - compiled
    """The coefficients of a step for each lane (kvs, gvs, tvs) and in the lane layout (KL,
    GL, TL): row ci, or (1 - w) row ci + w row ci + 1; lanes past the block's m paths take
    path 0's."""
    lanes = LANES
    n = kvs.shape[1]
    u = 1.0 - w
    for lane in range(lanes):
        pk = b0 + lane if per_k and lane < m else 0
        pv = b0 + lane if per_v and lane < m else 0
        for i in range(n):
            if w == 0.0:
                kvs[lane, i] = kk[ci, pk, i]
                gvs[lane, i] = gg[ci, pv, i]
                for j in range(n):
                    tvs[lane, i, j] = tv[ci, pv, i, j]
            else:
                kvs[lane, i] = u * kk[ci, pk, i] + w * kk[ci + 1, pk, i]
                gvs[lane, i] = math.sqrt(u * dd[ci, pv, i] + w * dd[ci + 1, pv, i])
                for j in range(n):
                    tvs[lane, i, j] = u * tv[ci, pv, i, j] + w * tv[ci + 1, pv, i, j]
            KL[i * lanes + lane] = kvs[lane, i]
            GL[i * lanes + lane] = gvs[lane, i]
            for j in range(n):
                TL[(i * n + j) * lanes + lane] = tvs[lane, i, j]


@nb.njit(inline="always", error_model="numpy")
def _symmetric(TL, n):  # pragma: no cover - compiled
    """Whether A_ij = A_ji exactly in every lane (the lane layout TL)."""
    lanes = LANES
    for i in range(n):
        for j in range(i + 1, n):
            for lane in range(lanes):
                if TL[(i * n + j) * lanes + lane] != TL[(j * n + i) * lanes + lane]:
                    return False
    return True


@nb.njit(nogil=True, cache=True, error_model="numpy")
def lane_block(first, last, x, dead, out, rec, step0, h, cidx, cw, kk, tv, gg, dd, keys, ki, wi,
               fi, scheme, form):  # pragma: no cover - compiled
    """Advance the paths first <= p < last over one block of steps, L paths at a time.

    The arguments are those of :func:`dysonsgd.sde._fused.step.fused_block` (pairwise form,
    N >= 2).
    """
    n = x.shape[1]
    count = h.size
    per_k = kk.shape[1] > 1
    per_v = tv.shape[1] > 1
    lanes = LANES
    ref = np.zeros(1)
    one = vsplat(ref, 1.0)
    X = np.zeros(n * lanes)
    XN = np.zeros(n * lanes)
    ACC = np.zeros(n * lanes)
    symmetric = False
    DW = np.zeros(n * lanes)
    KL = np.zeros(n * lanes)
    GL = np.zeros(n * lanes)
    TL = np.zeros(n * n * lanes)
    kvs = np.zeros((lanes, n))
    gvs = np.zeros((lanes, n))
    tvs = np.zeros((lanes, n, n))
    Z = np.empty(SUB_STEPS * n * lanes)
    misses = miss_buffer(n)
    z1 = np.empty((n, SUB_STEPS))
    words = np.empty((2 * ((n + 1) // 2), SUB_STEPS), dtype=np.uint64)
    xs = np.empty(n)
    xns = np.empty(n)
    dws = np.empty(n)
    c = np.empty(n)
    start = np.empty(n)
    x0 = np.empty(n)
    zb = np.empty(n)
    ws = np.empty((2 * n + 4, n))
    stack = np.empty((scheme.max_depth + 2, n))
    nodes = np.empty(scheme.max_depth + 2, dtype=np.int64)
    live = np.zeros(lanes, dtype=np.bool_)
    FLAG = np.zeros(2 * lanes)
    MASK = np.zeros(lanes)
    fraction = scheme.explicit_fraction
    check_near = scheme.implicit and fraction != 0.0
    for b0 in range(first, last, lanes):
        m = min(lanes, last - b0)
        for lane in range(lanes):
            live[lane] = lane < m and dead[b0 + lane] < 0
            for i in range(n):
                X[i * lanes + lane] = x[b0 + lane, i] if lane < m else 0.0
        last_ci = np.int64(-1)
        last_w = -1.0
        for s0 in range(0, count, SUB_STEPS):
            cnt = min(SUB_STEPS, count - s0)
            any_live = fill_lane_normals(Z, z1, words, misses, live, b0, step0 + s0, cnt, n,
                                         keys, ki, wi, fi)
            for q in range(cnt):
                b = s0 + q
                if not any_live:  # every path of the block failed: record their last states
                    r = rec[b]
                    if r >= 0:
                        for lane in range(m):
                            for j in range(n):
                                out[r, b0 + lane, j] = X[j * lanes + lane]
                    continue
                ci = cidx[b]
                w = cw[b]
                if ci != last_ci or w != last_w:  # the coefficients of this step, per lane
                    _lane_coefficients(kvs, gvs, tvs, KL, GL, TL, kk, tv, gg, dd, ci, w, b0, m,
                                       per_k, per_v)
                    symmetric = _symmetric(TL, n)
                    last_ci, last_w = ci, w
                hb = h[b]
                _propose(X, XN, ACC, Z, q * n * lanes, DW, KL, GL, TL, math.sqrt(hb), hb, one,
                         symmetric)
                _flags(X, XN, TL, hb, fraction, form.wall, check_near, FLAG)
                # per lane: keep the proposal, finish the step in the per-path code, or fail
                for lane in range(lanes):
                    MASK[lane] = 0.0
                    if not live[lane]:
                        continue
                    MASK[lane] = 1.0
                    accept = FLAG[lane] != 0.0 and (not scheme.implicit or (
                        fraction != 0.0 and FLAG[lanes + lane] == 0.0))
                    if accept and not scheme.limit_moves:
                        continue
                    for i in range(n):
                        xs[i] = X[i * lanes + lane]
                        xns[i] = XN[i * lanes + lane]
                    if accept and _moved(xns, xs) <= scheme.safety * _length_scale(xs, form.wall):
                        continue
                    for i in range(n):
                        dws[i] = DW[i * lanes + lane]
                    # a proposal that moved too far, or left the domain without the implicit
                    # step, is refined; else the implicit step
                    if accept or not scheme.implicit or not _implicit(
                            xs, xns, c, start, kvs[lane], tvs[lane], gvs[lane], hb, dws,
                            scheme, form, ws):
                        # xs is the state before the step: refine it, or the path fails
                        if scheme.max_depth == 0 or not _refine(
                            xs, xns, c, start, x0, zb, ws, stack, nodes, kvs[lane], tvs[lane],
                            gvs[lane], hb, dws, np.uint64(b0 + lane), np.uint64(step0 + b),
                            scheme, form, keys, ki, wi, fi,
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
                r = rec[b]
                if r >= 0:  # failed paths keep their last state, as in the per-path kernel
                    for lane in range(m):
                        for j in range(n):
                            out[r, b0 + lane, j] = X[j * lanes + lane]
        for lane in range(m):
            for i in range(n):
                x[b0 + lane, i] = X[i * lanes + lane]
