"""Compiled kernels of the measurement: K and V (4.4) and the singular-basis moments, fused.

The per-sample gradient of W2 is the outer product Delta_a = delta_a phi_a^T (2.28) (delta_a
the back-propagated error of layer 2, phi_a the layer-1 features), so nothing needs the
(D, N, M) stack of gradients that the plain numpy formulas
(:func:`dysonsgd.measure.gradstats.drift_and_noise`,
:func:`dysonsgd.measure.moments.singular_moments`) take: with p_a = W phi_a,

    Delta^X_a = p_a delta_a^T + delta_a p_a^T,         U^T Delta^X_a U = p'_a d'_a^T + d'_a p'_a^T
    G_a = U^T Delta_a Vt = d_a r_a^T (r_a = Vt^T phi_a),  H_a = U^T Delta_a = d_a phi_a^T,

and every mean and variance is taken sample by sample on (N, N) or (N, M) values, two-pass
(the mean first, then the centred squares), as the numpy formulas do. One model-snapshot's
arrays (about 150 kB) stay in the second-level cache; items run on
``numba.get_num_threads()`` Python threads over serial kernels that release the GIL (each
item's numbers do not depend on the split).

The singular system of W itself comes from :mod:`dysonsgd.measure._singular`.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
from numba import types
from numba.extending import intrinsic

from dysonsgd.train._numba.simd import vfma, vload, vmul, vsplat, vstore, vsub
from dysonsgd.train.plan import VECTOR_BYTES

#: float64 lanes of one vector of :mod:`dysonsgd.train._numba.simd`
L = VECTOR_BYTES // 8


@intrinsic
def sload(typingctx, arr, off):
    """``arr[off]`` of a 1-D array without the wraparound test of a signed index (the kernels'
    offsets are never negative), so that LLVM folds it into a broadcast load."""

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        o = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.load(builder.gep(a.data, [o]))

    return arr.dtype(arr, off), codegen

__all__ = [
    "STATISTICS",
    "allocate_statistics",
    "fused_gradient_statistics",
    "parallel_batches",
]

#: set in the worker threads of :func:`parallel_batches` (nested calls then run serially)
_WORKER = threading.local()


def _thread_count(n_tasks: int) -> int:
    if getattr(_WORKER, "active", False):
        return 1
    return max(1, min(nb.get_num_threads(), n_tasks))


def _threads(n_items: int, body, *, min_items: int = 64) -> None:
    """Run ``body(start, stop)`` over ``n_items`` items on numba's thread count."""
    threads = _thread_count(n_items // min_items)
    if threads == 1:
        body(0, n_items)
        return
    bounds = np.linspace(0, n_items, threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(body, int(a), int(b)) for a, b in itertools.pairwise(bounds)]:
            f.result()


@nb.njit(cache=True, nogil=True, inline="always")
def _pad(n):  # pragma: no cover - compiled
    return -(-n // L) * L


@nb.njit(cache=True, nogil=True)
def _outer_moments(xs, ys, np_, d_n, n, inv, k_out, v_out, q, want_k, buf):  # pragma: no cover
    """Mean and variance over a of x_a y_a^T + y_a x_a^T, entries i <= j (then mirrored).

    Four rows at a time (four independent accumulators in the sample loop); a block's last
    rows are clamped to n - 1 (recomputed, written once).
    """
    zero = vsplat(xs, 0.0)
    minv = vsplat(xs, inv)
    for i0 in range(0, n, 4):
        i1 = min(i0 + 1, n - 1)
        i2 = min(i0 + 2, n - 1)
        i3 = min(i0 + 3, n - 1)
        for jv in range((i0 // L) * L, np_, L):
            m0 = zero
            m1 = zero
            m2 = zero
            m3 = zero
            for a in range(d_n):
                o = a * np_
                yj = vload(ys, o + jv)
                xj = vload(xs, o + jv)
                m0 = vfma(vsplat(xs, sload(xs, o + i0)), yj,
                          vfma(vsplat(xs, sload(ys, o + i0)), xj, m0))
                m1 = vfma(vsplat(xs, sload(xs, o + i1)), yj,
                          vfma(vsplat(xs, sload(ys, o + i1)), xj, m1))
                m2 = vfma(vsplat(xs, sload(xs, o + i2)), yj,
                          vfma(vsplat(xs, sload(ys, o + i2)), xj, m2))
                m3 = vfma(vsplat(xs, sload(xs, o + i3)), yj,
                          vfma(vsplat(xs, sload(ys, o + i3)), xj, m3))
            m0 = vmul(m0, minv)
            m1 = vmul(m1, minv)
            m2 = vmul(m2, minv)
            m3 = vmul(m3, minv)
            a0 = zero
            a1 = zero
            a2 = zero
            a3 = zero
            for a in range(d_n):
                o = a * np_
                yj = vload(ys, o + jv)
                xj = vload(xs, o + jv)
                e0 = vsub(vfma(vsplat(xs, sload(xs, o + i0)), yj,
                               vmul(vsplat(xs, sload(ys, o + i0)), xj)), m0)
                e1 = vsub(vfma(vsplat(xs, sload(xs, o + i1)), yj,
                               vmul(vsplat(xs, sload(ys, o + i1)), xj)), m1)
                e2 = vsub(vfma(vsplat(xs, sload(xs, o + i2)), yj,
                               vmul(vsplat(xs, sload(ys, o + i2)), xj)), m2)
                e3 = vsub(vfma(vsplat(xs, sload(xs, o + i3)), yj,
                               vmul(vsplat(xs, sload(ys, o + i3)), xj)), m3)
                a0 = vfma(e0, e0, a0)
                a1 = vfma(e1, e1, a1)
                a2 = vfma(e2, e2, a2)
                a3 = vfma(e3, e3, a3)
            for r in range(4):
                i = i0 + r
                if i >= n:
                    break
                vstore(buf, 0, vmul(a0 if r == 0 else a1 if r == 1 else a2 if r == 2 else a3,
                                    minv))
                vstore(buf, L, m0 if r == 0 else m1 if r == 1 else m2 if r == 2 else m3)
                for lane in range(L):
                    j = jv + lane
                    if i <= j < n:
                        v_out[q, i, j] = buf[lane]
                        v_out[q, j, i] = buf[lane]
                        if want_k:
                            k_out[q, i, j] = -buf[L + lane]
                            k_out[q, j, i] = -buf[L + lane]


@nb.njit(cache=True, nogil=True)
def _project(ph, wt, vq, uq, usq, dl, p, r, pe, de, ds, d_n, n, m, np_, mp):  # pragma: no cover
    """p_a = W phi_a, r_a = Vt^T phi_a, then U^T p_a, U^T delta_a, Us^T delta_a (4 samples
    at a time; the last block's samples clamped to d_n - 1)."""
    zero = vsplat(p, 0.0)
    for b0 in range(0, d_n, 4):
        b1 = min(b0 + 1, d_n - 1)
        b2 = min(b0 + 2, d_n - 1)
        b3 = min(b0 + 3, d_n - 1)
        for iv in range(0, np_, L):
            p0 = zero
            p1 = zero
            p2 = zero
            p3 = zero
            r0 = zero
            r1 = zero
            r2 = zero
            r3 = zero
            for j in range(m):
                w = vload(wt, j * np_ + iv)
                v = vload(vq, j * np_ + iv)
                c0 = vsplat(p, sload(ph, b0 * mp + j))
                c1 = vsplat(p, sload(ph, b1 * mp + j))
                c2 = vsplat(p, sload(ph, b2 * mp + j))
                c3 = vsplat(p, sload(ph, b3 * mp + j))
                p0 = vfma(w, c0, p0)
                p1 = vfma(w, c1, p1)
                p2 = vfma(w, c2, p2)
                p3 = vfma(w, c3, p3)
                r0 = vfma(v, c0, r0)
                r1 = vfma(v, c1, r1)
                r2 = vfma(v, c2, r2)
                r3 = vfma(v, c3, r3)
            vstore(p, b0 * np_ + iv, p0)
            vstore(p, b1 * np_ + iv, p1)
            vstore(p, b2 * np_ + iv, p2)
            vstore(p, b3 * np_ + iv, p3)
            vstore(r, b0 * np_ + iv, r0)
            vstore(r, b1 * np_ + iv, r1)
            vstore(r, b2 * np_ + iv, r2)
            vstore(r, b3 * np_ + iv, r3)
        for iv in range(0, np_, L):
            e0 = zero
            e1 = zero
            e2 = zero
            e3 = zero
            f0 = zero
            f1 = zero
            f2 = zero
            f3 = zero
            s0 = zero
            s1 = zero
            s2 = zero
            s3 = zero
            for k in range(n):
                uk = vload(uq, k * np_ + iv)
                sk = vload(usq, k * np_ + iv)
                d0 = vsplat(p, sload(dl, b0 * np_ + k))
                d1 = vsplat(p, sload(dl, b1 * np_ + k))
                d2 = vsplat(p, sload(dl, b2 * np_ + k))
                d3 = vsplat(p, sload(dl, b3 * np_ + k))
                e0 = vfma(uk, vsplat(p, sload(p, b0 * np_ + k)), e0)
                e1 = vfma(uk, vsplat(p, sload(p, b1 * np_ + k)), e1)
                e2 = vfma(uk, vsplat(p, sload(p, b2 * np_ + k)), e2)
                e3 = vfma(uk, vsplat(p, sload(p, b3 * np_ + k)), e3)
                f0 = vfma(uk, d0, f0)
                f1 = vfma(uk, d1, f1)
                f2 = vfma(uk, d2, f2)
                f3 = vfma(uk, d3, f3)
                s0 = vfma(sk, d0, s0)
                s1 = vfma(sk, d1, s1)
                s2 = vfma(sk, d2, s2)
                s3 = vfma(sk, d3, s3)
            vstore(pe, b0 * np_ + iv, e0)
            vstore(pe, b1 * np_ + iv, e1)
            vstore(pe, b2 * np_ + iv, e2)
            vstore(pe, b3 * np_ + iv, e3)
            vstore(de, b0 * np_ + iv, f0)
            vstore(de, b1 * np_ + iv, f1)
            vstore(de, b2 * np_ + iv, f2)
            vstore(de, b3 * np_ + iv, f3)
            vstore(ds, b0 * np_ + iv, s0)
            vstore(ds, b1 * np_ + iv, s1)
            vstore(ds, b2 * np_ + iv, s2)
            vstore(ds, b3 * np_ + iv, s3)


@nb.njit(cache=True, nogil=True)
def _h_moments(ds, ph, hbar, d_n, n, m, np_, mp, inv, ito_row, m_row, buf):  # pragma: no cover
    """Hbar = mean_a d_a phi_a^T, q_i = sum_k Var_a(H_ik), m_i = sum_k Hbar_ik^2 (4 rows at a
    time, the last block's rows clamped)."""
    zero = vsplat(ph, 0.0)
    minv = vsplat(ph, inv)
    for i in range(n):
        ito_row[i] = 0.0
        m_row[i] = 0.0
    for i0 in range(0, n, 4):
        i1 = min(i0 + 1, n - 1)
        i2 = min(i0 + 2, n - 1)
        i3 = min(i0 + 3, n - 1)
        for kv in range(0, mp, L):
            h0 = zero
            h1 = zero
            h2 = zero
            h3 = zero
            for a in range(d_n):
                x = vload(ph, a * mp + kv)
                o = a * np_
                h0 = vfma(vsplat(ph, sload(ds, o + i0)), x, h0)
                h1 = vfma(vsplat(ph, sload(ds, o + i1)), x, h1)
                h2 = vfma(vsplat(ph, sload(ds, o + i2)), x, h2)
                h3 = vfma(vsplat(ph, sload(ds, o + i3)), x, h3)
            h0 = vmul(h0, minv)
            h1 = vmul(h1, minv)
            h2 = vmul(h2, minv)
            h3 = vmul(h3, minv)
            vstore(hbar, i0 * mp + kv, h0)
            vstore(hbar, i1 * mp + kv, h1)
            vstore(hbar, i2 * mp + kv, h2)
            vstore(hbar, i3 * mp + kv, h3)
            a0 = zero
            a1 = zero
            a2 = zero
            a3 = zero
            for a in range(d_n):
                x = vload(ph, a * mp + kv)
                o = a * np_
                e0 = vsub(vmul(vsplat(ph, sload(ds, o + i0)), x), h0)
                e1 = vsub(vmul(vsplat(ph, sload(ds, o + i1)), x), h1)
                e2 = vsub(vmul(vsplat(ph, sload(ds, o + i2)), x), h2)
                e3 = vsub(vmul(vsplat(ph, sload(ds, o + i3)), x), h3)
                a0 = vfma(e0, e0, a0)
                a1 = vfma(e1, e1, a1)
                a2 = vfma(e2, e2, a2)
                a3 = vfma(e3, e3, a3)
            vstore(buf, 0, a0)
            vstore(buf, L, a1)
            vstore(buf, 2 * L, a2)
            vstore(buf, 3 * L, a3)
            for rr in range(4):
                i = i0 + rr
                if i >= n:
                    break
                for lane in range(L):
                    if kv + lane < m:
                        hv = sload(hbar, i * mp + kv + lane)
                        ito_row[i] += buf[rr * L + lane] * inv
                        m_row[i] += hv * hv


@nb.njit(cache=True, nogil=True)
def _g_moments(ds, r, dg, g, gt, d_n, n, np_, inv, var_q, cross_q, sig_q, buf):  # pragma: no cover
    """Var(G_ij), Cov(G_ij, G_ji), Cov(G_ii, G_jj) of G_a = d_a r_a^T (centred by g), two rows
    at a time."""
    zero = vsplat(ds, 0.0)
    minv = vsplat(ds, inv)
    for i0 in range(0, n, 2):
        i1 = min(i0 + 1, n - 1)
        g00 = sload(g, i0 * np_ + i0)
        g11 = sload(g, i1 * np_ + i1)
        for jv in range(0, np_, L):
            gi0 = vload(g, i0 * np_ + jv)
            gi1 = vload(g, i1 * np_ + jv)
            gt0 = vload(gt, i0 * np_ + jv)
            gt1 = vload(gt, i1 * np_ + jv)
            v0 = zero
            v1 = zero
            c0 = zero
            c1 = zero
            s0 = zero
            s1 = zero
            for a in range(d_n):
                o = a * np_
                rj = vload(r, o + jv)
                dj = vload(ds, o + jv)
                dgj = vload(dg, o + jv)
                d0 = sload(ds, o + i0)
                d1 = sload(ds, o + i1)
                q0 = sload(r, o + i0)
                q1 = sload(r, o + i1)
                t0 = vsub(vmul(vsplat(ds, d0), rj), gi0)
                t1 = vsub(vmul(vsplat(ds, d1), rj), gi1)
                u0 = vsub(vmul(dj, vsplat(ds, q0)), gt0)
                u1 = vsub(vmul(dj, vsplat(ds, q1)), gt1)
                v0 = vfma(t0, t0, v0)
                v1 = vfma(t1, t1, v1)
                c0 = vfma(t0, u0, c0)
                c1 = vfma(t1, u1, c1)
                s0 = vfma(vsplat(ds, d0 * q0 - g00), dgj, s0)
                s1 = vfma(vsplat(ds, d1 * q1 - g11), dgj, s1)
            vstore(buf, 0, vmul(v0, minv))
            vstore(buf, L, vmul(c0, minv))
            vstore(buf, 2 * L, vmul(s0, minv))
            vstore(buf, 3 * L, vmul(v1, minv))
            vstore(buf, 4 * L, vmul(c1, minv))
            vstore(buf, 5 * L, vmul(s1, minv))
            for rr in range(2):
                i = i0 + rr
                if i >= n:
                    break
                for lane in range(L):
                    j = jv + lane
                    if j < n:
                        var_q[i, j] = buf[3 * rr * L + lane]
                        cross_q[i, j] = buf[(3 * rr + 1) * L + lane]
                        sig_q[i, j] = buf[(3 * rr + 2) * L + lane]


@nb.njit(cache=True, nogil=True)
def _statistics_block(phi, model_of, delta, w2, u, us, vt, k_out, v_out, vp_out, g_out, m_out,
                      ito_out, sig_out, var_out, cross_out):  # pragma: no cover - compiled
    """K, V (rotated and plain) and the singular-basis moments of every item.

    Rows of N (and M) values are padded with zeros to whole vectors of L lanes; every sum over
    the samples a runs in sample order, one accumulator per entry.
    """
    n_items, d_n, n = delta.shape
    m = phi.shape[2]
    np_ = _pad(n)
    mp = _pad(m)
    inv = 1.0 / d_n
    p = np.zeros(d_n * np_)
    pe = np.zeros(d_n * np_)
    de = np.zeros(d_n * np_)
    dl = np.zeros(d_n * np_)
    ds = np.zeros(d_n * np_)
    r = np.zeros(d_n * np_)
    dg = np.zeros(d_n * np_)
    ph = np.zeros(d_n * mp)
    wt = np.zeros(m * np_)
    vq = np.zeros(m * np_)
    uq = np.zeros(n * np_)
    usq = np.zeros(n * np_)
    hbar = np.zeros(n * mp)
    g = np.zeros(n * np_)
    gt = np.zeros(n * np_)
    buf = np.zeros(6 * L)
    last = -1
    for q in range(n_items):
        if model_of[q] != last:
            last = model_of[q]
            for a in range(d_n):
                for k in range(m):
                    ph[a * mp + k] = phi[last, a, k]
        for i in range(n):
            for j in range(m):
                wt[j * np_ + i] = w2[q, i, j]
                vq[j * np_ + i] = vt[q, j, i]
            for k in range(n):
                uq[k * np_ + i] = u[q, k, i]
                usq[k * np_ + i] = us[q, k, i]
        for a in range(d_n):
            for i in range(n):
                dl[a * np_ + i] = delta[q, a, i]
        # p_a = W phi_a, r_a = Vt^T phi_a; rotations into the eigenbasis (U) and singular basis
        _project(ph, wt, vq, uq, usq, dl, p, r, pe, de, ds, d_n, n, m, np_, mp)
        # K = -mean, V = var of the rotated update; the plain (unrotated) variance
        _outer_moments(pe, de, np_, d_n, n, inv, k_out, v_out, q, True, buf)
        _outer_moments(p, dl, np_, d_n, n, inv, k_out, vp_out, q, False, buf)
        # H = U^T Delta: its mean (U^T mu), the Ito term sum_k Var(H_ik), m_i = |mean(H_i)|^2
        _h_moments(ds, ph, hbar, d_n, n, m, np_, mp, inv, ito_out[q], m_out[q], buf)
        # G = U^T Delta Vt: its mean g = Hbar Vt, then the centred moments
        for i in range(n):
            for j in range(n):
                acc = 0.0
                for k in range(m):
                    acc += hbar[i * mp + k] * vt[q, k, j]
                g[i * np_ + j] = acc
                g_out[q, i, j] = acc
        for i in range(n):
            for j in range(n):
                gt[i * np_ + j] = g[j * np_ + i]
        for a in range(d_n):
            o = a * np_
            for j in range(n):
                dg[o + j] = ds[o + j] * r[o + j] - g[j * np_ + j]
        _g_moments(ds, r, dg, g, gt, d_n, n, np_, inv, var_out[q], cross_out[q], sig_q=sig_out[q],
                   buf=buf)


def parallel_batches(n_batches: int, work) -> None:
    """Run ``work(b)`` for every batch b on numba's thread count (numpy and the kernels
    release the GIL; each batch's numbers do not depend on the thread that runs it)."""
    threads = _thread_count(n_batches)
    if threads == 1:
        for b in range(n_batches):
            work(b)
        return

    def run(b):
        _WORKER.active = True
        work(b)

    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(run, b) for b in range(n_batches)]:
            f.result()


#: the kernel's outputs, in its argument order
STATISTICS = ("k", "v", "v_plain", "mean", "mean_square", "ito", "diagonal_covariance",
              "variance", "cross")


def allocate_statistics(n_items: int, n: int) -> dict[str, np.ndarray]:
    """Empty outputs of :func:`fused_gradient_statistics` for ``n_items`` items."""
    return {name: np.empty((n_items, n) if name in ("mean_square", "ito") else (n_items, n, n))
            for name in STATISTICS}


def fused_gradient_statistics(phi, model_of, delta, w2, u, us, vt, out) -> None:
    """K, V of (4.4) in the eigenbasis and plain, and the singular-basis moments, per item.

    Parameters
    ----------
    phi : (n_models, D, M) layer-1 features of each model's data
    model_of : (Q,) int64, the row of ``phi`` of each item (a model at one snapshot)
    delta : (Q, D, N) back-propagated errors of layer 2 (:func:`dysonsgd.model.network.backprop`)
    w2 : (Q, N, M); u : (Q, N, N) eigenvectors of X (ascending)
    us, vt : (Q, N, N), (Q, M, N) the singular system of W2 (:func:`refine_singular_system`)
    out : dict of C-contiguous float64 arrays, as :func:`allocate_statistics` (or views of
        consecutive items of them), filled: ``k``, ``v``, ``v_plain`` (Q, N, N); the moments
        ``mean`` (Q, N, N), ``mean_square``, ``ito`` (Q, N), ``diagonal_covariance``,
        ``variance``, ``cross`` (Q, N, N)
    """
    c = np.ascontiguousarray
    _statistics_block(c(phi, dtype=float), c(model_of, dtype=np.int64), c(delta, dtype=float),
                      c(w2, dtype=float), c(u, dtype=float), c(us, dtype=float),
                      c(vt, dtype=float), *(out[name] for name in STATISTICS))
