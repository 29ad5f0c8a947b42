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
from dysonsgd.sde._fused.step import (
    SUB_STEPS,
    _fill_normals,
    _length_scale,
    _moved,
    _near,
    _refine,
    _valid,
)
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


@nb.njit(inline="always")
def _reciprocal(d, one):  # pragma: no cover - compiled
    """1/d lane by lane: with AVX-512 the estimate refined by two Newton steps
    r <- r + r (1 - d r) (relative error 2**-14 -> 2**-28 -> below 2**-53, so within an ulp
    or so of the rounded quotient, at a third of a division's cost), else the division."""
    if RCP14:
        r = _rcp14(d)
        r = vfma(r, vfma(vsub(vsplat(d, 0.0), d), r, one), r)
        return vfma(r, vfma(vsub(vsplat(d, 0.0), d), r, one), r)
    return vdiv(one, d)


@nb.njit(inline="always", fastmath=_FAST, error_model="numpy")
def _finish(x, xn, c, start, kv, tv, gv, h, dw, scheme, form, ws):  # pragma: no cover
    """The rest of :func:`dysonsgd.sde._fused.step._attempt` after its explicit proposal xn
    (pairwise form): the implicit Coulomb step where the criterion asks for it, the domain and
    the move limit. Returns whether the step is accepted (xn then holds it)."""
    n = x.size
    wall = form.wall
    fraction = scheme.explicit_fraction
    ok = _valid(xn, wall)
    if scheme.implicit and (not ok or _near(x, xn, tv, h, fraction, wall, False)):
        for i in range(n):
            c[i] = x[i] + kv[i] * h + gv[i] * dw[i]
            start[i] = xn[i]
        if not implicit_step(x, start, c, tv, h, fraction, form.newton_tol,
                             form.newton_max_iter, xn, ws):
            return False
        ok = _valid(xn, wall)
    if ok and scheme.limit_moves:
        ok = _moved(xn, x) <= scheme.safety * _length_scale(x, wall)
    return ok


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
    zero = vsplat(ref, 0.0)
    one = vsplat(ref, 1.0)
    X = np.zeros(n * lanes)
    XN = np.zeros(n * lanes)
    ACC = np.zeros(n * lanes)
    DW = np.zeros(n * lanes)
    KL = np.zeros(n * lanes)
    GL = np.zeros(n * lanes)
    TL = np.zeros(n * n * lanes)
    kvs = np.zeros((lanes, n))
    gvs = np.zeros((lanes, n))
    tvs = np.zeros((lanes, n, n))
    z = np.empty((lanes, n, SUB_STEPS))
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
    keep = vsplat(ref, 1.0 - fraction)
    vf = vsplat(ref, fraction)
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
            any_live = False
            for lane in range(lanes):
                if live[lane]:
                    any_live = True
                    _fill_normals(z[lane], words, step0 + s0, cnt, n, np.uint64(b0 + lane),
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
                                    tvs[lane, i, j] = (u * tv[ci, pv, i, j]
                                                       + w * tv[ci + 1, pv, i, j])
                            KL[i * lanes + lane] = kvs[lane, i]
                            GL[i * lanes + lane] = gvs[lane, i]
                            for j in range(n):
                                TL[(i * n + j) * lanes + lane] = tvs[lane, i, j]
                    last_ci, last_w = ci, w
                hb = h[b]
                sq = math.sqrt(hb)
                for lane in range(lanes):
                    for j in range(n):
                        DW[j * lanes + lane] = sq * z[lane, j, q]
                # the explicit proposal of all lanes: Coulomb sum pair by pair
                for i in range(n):
                    vstore(ACC, i * lanes, zero)
                vh = vsplat(ref, hb)
                for i in range(n):
                    xi = vload(X, i * lanes)
                    acc = vload(ACC, i * lanes)
                    for j in range(i + 1, n):
                        r = _reciprocal(vsub(xi, vload(X, j * lanes)), one)
                        acc = vadd(acc, vmul(vload(TL, (i * n + j) * lanes), r))
                        vstore(ACC, j * lanes, vsub(vload(ACC, j * lanes),
                                                    vmul(vload(TL, (j * n + i) * lanes), r)))
                    drift = vmul(vadd(vload(KL, i * lanes), acc), vh)
                    vstore(XN, i * lanes, vfma(vload(GL, i * lanes), vload(DW, i * lanes),
                                               vadd(xi, drift)))
                # the domain and the drift-implicit criterion of every lane, as vectors of
                # 1.0 / 0.0 flags (a < b as b - a > 0: false with a NaN, like the scalar test)
                xl = vload(XN, 0)
                okv = vmul(vpos(vsub(xl, vsplat(ref, -np.inf))),
                           vpos(vsub(vsplat(ref, np.inf), vload(XN, (n - 1) * lanes))))
                nearv = zero
                if form.wall:
                    okv = vmul(okv, vpos(xl))
                    if check_near:
                        nearv = vpos(vsub(vmul(keep, vload(X, 0)), xl))
                for i in range(n - 1):
                    gn = vsub(vload(XN, (i + 1) * lanes), vload(XN, i * lanes))
                    okv = vmul(okv, vpos(gn))
                    if check_near:
                        g = vsub(vload(X, (i + 1) * lanes), vload(X, i * lanes))
                        stiff = vsub(vmul(vh, vload(TL, (i * n + i + 1) * lanes)),
                                     vmul(vmul(vf, g), g))
                        nearv = vadd(nearv, vadd(vpos(vsub(vmul(keep, g), gn)), vpos(stiff)))
                vstore(FLAG, 0, okv)
                vstore(FLAG, lanes, nearv)
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
                    if not _finish(xs, xns, c, start, kvs[lane], tvs[lane], gvs[lane], hb, dws,
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
