"""The general training kernel: any depth, any set of trained matrices, lanes = models.

The paper's set-up (two hidden layers, ``W2`` alone trained) runs on the generated kernels of
:mod:`dysonsgd.train._numba.codegen`, which stream precomputed layer-1 features. Everything
else runs here: one compiled kernel (per dtype) that takes the widths at run time and, per SGD
step (2.28) of every model of a block of ``L`` lanes (:func:`~dysonsgd.train.plan.lanes_for`),

1. runs the forward pass through all layers for the ``|B|`` samples of the batch,
   ``z_l = W_l h_{l-1}``, ``h_l = phi(z_l)`` (the activation forms of
   :mod:`dysonsgd.train._numba.simd`: vector forms in float32, libm's exact scalar forms in
   float64 where the vector form approximates), and the output error ``yhat - y``;
2. back-propagates the errors ``delta_l`` (see :mod:`dysonsgd.model.layers`) down to the lowest
   recorded matrix, with the weights of the step's start;
3. checks the batch loss against the divergence threshold (a model that crosses it stops with
   the weights that produced it and keeps that batch's gradients, as the W2 kernels);
4. sums the per-sample gradients ``delta_l h_{l-1}^T`` over the batch and updates every trained
   matrix, ``W_l <- W_l - T sum_b dl(x_b)/dW_l``; in an epoch that ends in a snapshot it also
   accumulates the gradients of every recorded matrix (trained or not).

Each SIMD instruction advances the same arithmetic for ``L`` models; a lane never reads another
lane, so a model's numbers do not depend on its block, its lane or the thread count.

Array layouts (flat, lane innermost): the weights ``W``, the gradient accumulators ``G`` and the
diverging batch's gradients ``EG`` are ``[block][q][lane]`` with ``q`` running over ``W_1``,
``W_2``, ... (row-major each, offsets ``woff``); the inputs ``X`` are ``[block][a][k][lane]``
(n_data x n0, rows in the epoch's data order) and the targets ``Y`` ``[block][a][k][lane]``;
per-sample scratch (activations, ``phi'``, errors) ``[b][layer offset + i][lane]``. The recorded
snapshots are ``[lane][snapshot][q']``, ``q'`` over the recorded matrices only (offsets
``roff``). The driver, :mod:`dysonsgd.train._numba.general_engine`, puts models in lanes and
data in lane order, and calls the kernel in waves of blocks.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import numpy as np
from numba import njit, prange

from dysonsgd.train._numba import simd
from dysonsgd.train._numba.simd import (
    gelu_exact,
    tanh_exact,
    vadd,
    vfma,
    vgelu,
    videntity,
    vload,
    vmul,
    vrelu,
    vsplat,
    vstore,
    vsub,
    vtanh_fast,
    vwhere,
)

__all__ = ["train_kernel"]

#: fastmath flags of the scalar code (the W2 kernels' choice): NaN and infinity stay meaningful,
#: so that the divergence test ``not (loss <= threshold)`` sees a NaN; the vector intrinsics
#: round as written whatever the flags
_FASTMATH = {"contract", "reassoc", "nsz", "arcp", "afn"}

# ------------------------------------------------------------------------------------------------
# the kernel
# ------------------------------------------------------------------------------------------------


@njit(inline="always")
def _vec_act(z, ref, code):
    """``(phi(z), phi'(z))`` of the registry's vector form with code ``code``."""
    if code == 0:
        return vtanh_fast(z, ref)
    if code == 1:
        return vrelu(z, ref)
    if code == 2:
        return videntity(z, ref)
    return vgelu(z, ref)


@njit(inline="always")
def _scalar_act(z, code):
    """The exact scalar ``(phi, phi')`` of tanh (code 0) or GELU (code 3)."""
    if code == 0:
        return tanh_exact(z)
    return gelu_exact(z)


@njit(inline="always")
def _block(A, a, da, na, sa, Bm, b, db, nb, sb, n, zero):
    """Sixteen sums ``s[4 p + q] = sum_{r < n} A[a_p + r sa] Bm[b_q + r sb]``, ``p, q < 4``, each
    a chain of FMAs in the order of ``r``, with ``a_p = a + min(p, na - 1) da`` and ``b_q = b +
    min(q, nb - 1) db`` (a block smaller than 4 x 4 repeats its last row or column)."""
    a1 = a + min(1, na - 1) * da
    a2 = a + min(2, na - 1) * da
    a3 = a + min(3, na - 1) * da
    b1 = b + min(1, nb - 1) * db
    b2 = b + min(2, nb - 1) * db
    b3 = b + min(3, nb - 1) * db
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
    s8 = s9 = s10 = s11 = s12 = s13 = s14 = s15 = zero
    for r in range(n):
        x0 = vload(A, a + r * sa)
        x1 = vload(A, a1 + r * sa)
        x2 = vload(A, a2 + r * sa)
        x3 = vload(A, a3 + r * sa)
        y0 = vload(Bm, b + r * sb)
        y1 = vload(Bm, b1 + r * sb)
        y2 = vload(Bm, b2 + r * sb)
        y3 = vload(Bm, b3 + r * sb)
        s0 = vfma(x0, y0, s0)
        s1 = vfma(x0, y1, s1)
        s2 = vfma(x0, y2, s2)
        s3 = vfma(x0, y3, s3)
        s4 = vfma(x1, y0, s4)
        s5 = vfma(x1, y1, s5)
        s6 = vfma(x1, y2, s6)
        s7 = vfma(x1, y3, s7)
        s8 = vfma(x2, y0, s8)
        s9 = vfma(x2, y1, s9)
        s10 = vfma(x2, y2, s10)
        s11 = vfma(x2, y3, s11)
        s12 = vfma(x3, y0, s12)
        s13 = vfma(x3, y1, s13)
        s14 = vfma(x3, y2, s14)
        s15 = vfma(x3, y3, s15)
    return (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15)


@njit(inline="always")
def _act_store(H, Dp, off, code, scalar, L):
    """``H[off] = phi(z)``, ``Dp[off] = phi'(z)`` of ``z = H[off]``: the exact scalar form lane
    by lane, or the vector form."""
    if scalar:
        for ln in range(L):
            h, d = _scalar_act(H[off + ln], code)
            H[off + ln] = h
            Dp[off + ln] = d
    else:
        h, d = _vec_act(vload(H, off), H, code)
        vstore(H, off, h)
        vstore(Dp, off, d)


@njit(inline="always")
def _update_block(W, G, p, rs, L, nik, njk, g, mk, cn, upd, acc_g, zero):
    """:func:`_update` of the ``nik x njk`` leading entries of the 4 x 4 block ``g`` (entry
    ``(a, c)`` at ``p + a rs + c L``)."""
    _update(W, G, p + 0 * rs + 0 * L, g[0], mk, cn, upd, acc_g, zero)
    if njk > 1:
        _update(W, G, p + 0 * rs + 1 * L, g[1], mk, cn, upd, acc_g, zero)
    if njk > 2:
        _update(W, G, p + 0 * rs + 2 * L, g[2], mk, cn, upd, acc_g, zero)
    if njk > 3:
        _update(W, G, p + 0 * rs + 3 * L, g[3], mk, cn, upd, acc_g, zero)
    if nik > 1:
        _update(W, G, p + 1 * rs + 0 * L, g[4], mk, cn, upd, acc_g, zero)
    if nik > 1 and njk > 1:
        _update(W, G, p + 1 * rs + 1 * L, g[5], mk, cn, upd, acc_g, zero)
    if nik > 1 and njk > 2:
        _update(W, G, p + 1 * rs + 2 * L, g[6], mk, cn, upd, acc_g, zero)
    if nik > 1 and njk > 3:
        _update(W, G, p + 1 * rs + 3 * L, g[7], mk, cn, upd, acc_g, zero)
    if nik > 2:
        _update(W, G, p + 2 * rs + 0 * L, g[8], mk, cn, upd, acc_g, zero)
    if nik > 2 and njk > 1:
        _update(W, G, p + 2 * rs + 1 * L, g[9], mk, cn, upd, acc_g, zero)
    if nik > 2 and njk > 2:
        _update(W, G, p + 2 * rs + 2 * L, g[10], mk, cn, upd, acc_g, zero)
    if nik > 2 and njk > 3:
        _update(W, G, p + 2 * rs + 3 * L, g[11], mk, cn, upd, acc_g, zero)
    if nik > 3:
        _update(W, G, p + 3 * rs + 0 * L, g[12], mk, cn, upd, acc_g, zero)
    if nik > 3 and njk > 1:
        _update(W, G, p + 3 * rs + 1 * L, g[13], mk, cn, upd, acc_g, zero)
    if nik > 3 and njk > 2:
        _update(W, G, p + 3 * rs + 2 * L, g[14], mk, cn, upd, acc_g, zero)
    if nik > 3 and njk > 3:
        _update(W, G, p + 3 * rs + 3 * L, g[15], mk, cn, upd, acc_g, zero)


@njit(inline="always")
def _store_block(H, o, ra, rc, na, nc, z):
    """Store the ``na x nc`` leading entries of the 4 x 4 block ``z`` (entry ``(a, c)`` at
    ``o + a ra + c rc``)."""
    vstore(H, o + 0 * ra + 0 * rc, z[0])
    if nc > 1:
        vstore(H, o + 0 * ra + 1 * rc, z[1])
    if nc > 2:
        vstore(H, o + 0 * ra + 2 * rc, z[2])
    if nc > 3:
        vstore(H, o + 0 * ra + 3 * rc, z[3])
    if na > 1:
        vstore(H, o + 1 * ra + 0 * rc, z[4])
    if na > 1 and nc > 1:
        vstore(H, o + 1 * ra + 1 * rc, z[5])
    if na > 1 and nc > 2:
        vstore(H, o + 1 * ra + 2 * rc, z[6])
    if na > 1 and nc > 3:
        vstore(H, o + 1 * ra + 3 * rc, z[7])
    if na > 2:
        vstore(H, o + 2 * ra + 0 * rc, z[8])
    if na > 2 and nc > 1:
        vstore(H, o + 2 * ra + 1 * rc, z[9])
    if na > 2 and nc > 2:
        vstore(H, o + 2 * ra + 2 * rc, z[10])
    if na > 2 and nc > 3:
        vstore(H, o + 2 * ra + 3 * rc, z[11])
    if na > 3:
        vstore(H, o + 3 * ra + 0 * rc, z[12])
    if na > 3 and nc > 1:
        vstore(H, o + 3 * ra + 1 * rc, z[13])
    if na > 3 and nc > 2:
        vstore(H, o + 3 * ra + 2 * rc, z[14])
    if na > 3 and nc > 3:
        vstore(H, o + 3 * ra + 3 * rc, z[15])


@njit(inline="always")
def _update(W, G, p, g, mk, cn, upd, acc_g, zero):
    """``W[p] += cn g`` where the lane trains (``mk``), if ``upd``; ``G[p] += g`` there, if
    ``acc_g``."""
    if upd:
        w = vload(W, p)
        vstore(W, p, vwhere(mk, vfma(cn, g, w), w))
    if acc_g:
        vstore(G, p, vadd(vload(G, p), vwhere(mk, g, zero)))


@cache
def train_kernel(code: int, exact: bool):
    """The compiled kernel for the activation of registry code ``code``; ``exact`` (float64
    kernels): the activation's exact scalar form where it has one (tanh, GELU: libm), else the
    vector form. Compiled on first use for the dtype of its arrays and cached on disk.

    The kernel is ``train(W, G, EG, X, Y, widths, woff, hoff, roff, trained, tneg, mask, lsum,
    div_epoch, div_step, out_w, out_g, out_loss, rec, epoch0, n_epochs, n_steps, B, n_data,
    thr, mode, low, L)``: ``n_epochs`` epochs of every block (mode 0: SGD; mode 1: the
    data-mean gradient and loss into snapshot ``rec[0]``, no update); ``L`` lanes per block
    (the vector width of the dtype), ``low`` the lowest recorded matrix (1-based), where
    back-propagation stops. See the module docstring for the layouts.
    """
    scalar_act = exact and (code == 0 or code == 3)
    # numba's disk cache is keyed by this module's file and the closure's values, not by the
    # modules it inlines from: the simd module's digest in the closure keys it by them too
    simd_digest = hashlib.sha1(Path(simd.__file__).read_bytes()).hexdigest()

    @njit(parallel=True, fastmath=_FASTMATH, nogil=True, cache=True)
    def train(W, G, EG, X, Y, widths, woff, hoff, roff, trained, tneg, mask, lsum, div_epoch,
              div_step, out_w, out_g, out_loss, rec, epoch0, n_epochs, n_steps, B, n_data, thr,
              mode, low, L):  # pragma: no cover - compiled
        """See :func:`train_kernel`."""
        if len(simd_digest) == 0:  # never: it only keys the cache
            return
        nbw = tneg.shape[0] // L
        nl = widths.shape[0] - 1
        n0, nout = widths[0], widths[nl]
        wtot = woff[nl]
        htot = hoff[nl + 1]
        n_snap = out_loss.shape[0] // (nbw * L)
        rtot = out_w.shape[0] // (nbw * L * n_snap)
        update = mode == 0
        for blk in prange(nbw):
            lo = blk * L
            wo = blk * wtot * L
            xo = blk * n_data * n0 * L
            yo = blk * n_data * nout * L
            H = np.empty(B * htot * L, W.dtype)
            Dp = np.empty(B * htot * L, W.dtype)
            De = np.empty(B * htot * L, W.dtype)
            lb = np.empty(L, W.dtype)
            zero = vsplat(W, 0.0)
            mk = vload(mask, lo)
            cn = vload(tneg, lo)
            for ep in range(n_epochs):
                k = rec[ep]
                record = k >= 0
                for ln in range(L):
                    lsum[lo + ln] = 0.0
                for s in range(n_steps):
                    for b in range(B):
                        a = s * B + b
                        for j in range(n0):
                            vstore(H, (b * htot + j) * L, vload(X, xo + (a * n0 + j) * L))
                    # forward pass, blocks of 4 rows x 4 samples (see _block)
                    lossv = zero
                    for m in range(nl):
                        nin, nn = widths[m], widths[m + 1]
                        last = m == nl - 1
                        for b in range(0, B, 4):
                            nbk = min(4, B - b)
                            for i in range(0, nn, 4):
                                nik = min(4, nn - i)
                                z = _block(W, wo + (woff[m] + i * nin) * L, nin * L, nik, L,
                                           H, (b * htot + hoff[m]) * L, htot * L, nbk, L, nin,
                                           zero)
                                o = (b * htot + hoff[m + 1] + i) * L
                                if not last:
                                    _store_block(H, o, L, htot * L, nik, nbk, z)
                                    continue
                                _store_block(De, o, L, htot * L, nik, nbk, z)
                                for p in range(nik):  # the output error and the batch loss
                                    for c in range(nbk):
                                        ho = o + (c * htot + p) * L
                                        yo_ = yo + ((s * B + b + c) * nout + i + p) * L
                                        e = vsub(vload(De, ho), vload(Y, yo_))
                                        vstore(De, ho, e)
                                        lossv = vfma(e, e, lossv)
                        if not last:  # h = phi(z), phi'(z) of the layer's pre-activations
                            for b in range(B):
                                for i in range(nn):
                                    _act_store(H, Dp, (b * htot + hoff[m + 1] + i) * L, code,
                                               scalar_act, L)
                    # back-propagation: delta_q = (W_{q+1}^T delta_{q+1}) phi'(z_q)
                    for q in range(nl - 1, low - 1, -1):
                        nin, nn = widths[q], widths[q + 1]
                        for b in range(0, B, 4):
                            nbk = min(4, B - b)
                            for j in range(0, nin, 4):
                                njk = min(4, nin - j)
                                z = _block(W, wo + (woff[q] + j) * L, L, njk, nin * L,
                                           De, (b * htot + hoff[q + 1]) * L, htot * L, nbk, L,
                                           nn, zero)
                                o = (b * htot + hoff[q] + j) * L
                                _store_block(De, o, L, htot * L, njk, nbk, z)
                                for p in range(njk):  # times phi'(z_q)
                                    for c in range(nbk):
                                        oc = o + (c * htot + p) * L
                                        vstore(De, oc, vmul(vload(De, oc), vload(Dp, oc)))
                    vstore(lb, 0, vmul(lossv, vsplat(lb, 0.5 / B)))
                    # divergence check before the update (the release's rule)
                    changed = False
                    for ln in range(L):
                        v = lb[ln]
                        if mask[lo + ln] != 0.0:
                            if update and not (v <= thr):
                                mask[lo + ln] = 0.0
                                div_epoch[lo + ln] = epoch0 + ep
                                div_step[lo + ln] = s
                                for m in range(nl):
                                    if roff[m] < 0:
                                        continue
                                    nin, nn = widths[m], widths[m + 1]
                                    for i in range(nn):
                                        for j in range(nin):
                                            g = 0.0
                                            for b in range(B):
                                                hb = b * htot
                                                g += (De[(hb + hoff[m + 1] + i) * L + ln]
                                                      * H[(hb + hoff[m] + j) * L + ln])
                                            EG[wo + (woff[m] + i * nin + j) * L + ln] = g / B
                                changed = True
                            else:
                                lsum[lo + ln] += v
                    if changed:
                        mk = vload(mask, lo)
                    # gradients summed over the batch, blocks of 4 x 4 entries; update of the
                    # trained matrices
                    for m in range(nl):
                        upd = update and trained[m] != 0
                        acc_g = record and roff[m] >= 0
                        if not (upd or acc_g):
                            continue
                        nin, nn = widths[m], widths[m + 1]
                        wm = wo + woff[m] * L
                        for i in range(0, nn, 4):
                            nik = min(4, nn - i)
                            for j in range(0, nin, 4):
                                njk = min(4, nin - j)
                                g = _block(De, (hoff[m + 1] + i) * L, L, nik, htot * L,
                                           H, (hoff[m] + j) * L, L, njk, htot * L, B, zero)
                                _update_block(W, G, wm + (i * nin + j) * L, nin * L, L, nik,
                                              njk, g, mk, cn, upd, acc_g, zero)
                if record:
                    inv = 1.0 / (B * n_steps)
                    for ln in range(L):
                        md = lo + ln
                        out_loss[md * n_snap + k] = lsum[md] / n_steps
                        base = (md * n_snap + k) * rtot
                        for m in range(nl):
                            if roff[m] < 0:
                                continue
                            for q in range(widths[m] * widths[m + 1]):
                                out_w[base + roff[m] + q] = W[wo + (woff[m] + q) * L + ln]
                                out_g[base + roff[m] + q] = G[wo + (woff[m] + q) * L + ln] * inv
                    for q in range(wtot * L):
                        G[wo + q] = 0.0

    return train
