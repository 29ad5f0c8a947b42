"""The fused Triton SGD kernel: many epochs of a block of models in one program (2.28).

This module imports Triton at the top; only :func:`dysonsgd.train._triton.run_triton` imports
it, on use. :func:`sgd_epochs` is the plain Python source of the kernel; the engine wraps it
with ``triton.jit``, which compiles it for CUDA, or, in a process started with
``TRITON_INTERPRET=1``, runs the same source in Triton's interpreter (NumPy on the CPU: how the
tests check it without a GPU).

Design
------
One program owns a block of ``BM`` models ("lanes") for a whole launch (an epoch chunk): their
``W2`` (``n2 x n1``), ``W3`` and temperatures are loaded once into registers and written back
once at the end, and every SGD step reads from global memory only the layer-1 features
``phi1 = phi(W1 x)`` and targets of the current batch's ``B`` rows (and, shuffled, their row
indices). Nothing per model is streamed per step, so the kernel is bound by its multiply-adds
(``n2 n1 (2 B)`` per model-step: the forward products and the fused update), not by memory.

Register tensors are ``[n1, n2, BM]`` (``j``, ``i``, lane), ``j`` slowest: Triton's default
layout then spreads lanes and rows over the threads and keeps each thread's ``j`` range whole,
so that the forward sum ``z_i = sum_j W2_ij phi1_j`` (2.3) is summed within a thread (no
shuffles); only the output layer's sum over ``i`` crosses threads. The ``B`` back-propagated
errors of a step are kept in a ``[BP, n2, BM]`` tensor (``BP``: ``B`` rounded up to a power of
two).

Per step ``s`` (2.28): for each sample ``b`` of the batch, ``z = W2 phi1_b``, ``h, h' =
phi(z), phi'(z)``, ``err = W3 h - y_b``, ``delta_b = (W3^T err) * h'``; the batch loss ``lb =
(1/2B) sum_b |err|^2``; a lane whose ``lb`` is not ``<= thr`` (NaN included) stops before its
update (its ``delta`` of that batch is stored so that the host can rebuild the batch gradient,
and its epoch and step are recorded); then ``W2 <- W2 - T sum_b delta_b phi1_b^T``, applied
as ``B`` fused multiply-adds per weight. In an epoch that ends with a snapshot (``RECORD``) the
kernel also accumulates the gradient ``sum_b delta_b phi1_b^T`` and the batch losses of the
active lanes, and writes ``W2``, the epoch-mean gradient and the epoch-mean loss to the
snapshot slot. With ``UPDATE`` false the same loop evaluates the full-data gradient and loss
at the initial ``W2`` (snapshot 0).

Array layouts: every per-model array is flat with the model ("lane") innermost,
``[row][col][lane]`` over all ``n_lanes`` padded models, so that a warp's loads and stores are
contiguous and any ``BM`` reads the same arrays: ``W2`` and the snapshot slots ``[j][i][lane]``
(the host passes the snapshot's slot of its output arrays), ``W3`` ``[k][i][lane]``, the stored
errors of a divergence ``[b][i][lane]``; ``N1P, N2P, N3P`` are the widths rounded up to powers
of two, padded with zeros, which leaves every number unchanged. Features ``phi
[group][row][j]`` and targets ``y [group][row][k]`` are unpadded; shuffled row indices
``order [epoch][group][row]``.
"""

from __future__ import annotations

import triton.language as tl

__all__ = ["sgd_epochs"]


def sgd_epochs(
    w2_ptr, w3_ptr, phi_ptr, y_ptr, group_ptr, order_ptr, tneg_ptr, active_ptr,
    div_epoch_ptr, div_step_ptr, end_delta_ptr, out_w2_ptr, out_g_ptr, out_loss_ptr,
    thr_ptr, n_lanes, epoch0, n_epochs, n_steps, n_data, n_order_groups,
    N1: tl.constexpr, N2: tl.constexpr, N3: tl.constexpr,
    N1P: tl.constexpr, N2P: tl.constexpr, N3P: tl.constexpr,
    B: tl.constexpr, BP: tl.constexpr, BM: tl.constexpr, ACT: tl.constexpr,
    UPDATE: tl.constexpr, RECORD: tl.constexpr, SHUFFLED: tl.constexpr,
):
    """``n_epochs`` epochs of ``n_steps`` SGD steps of the ``BM`` lanes of block
    ``program_id(0)`` (see the module docstring; ``ACT``: the activation's code in
    :mod:`dysonsgd.model.activations`, 0 tanh, 1 relu, 2 identity, 3 GELU).

    No fractional scalar is an argument: a Python float becomes an fp32 argument of the
    compiled kernel (the interpreter keeps it exact), so the divergence threshold is a float64
    array of one element and the snapshot's gradient is divided by the integer count."""
    pid = tl.program_id(0)
    lane = tl.arange(0, BM)
    jv = tl.arange(0, N1P)
    iv = tl.arange(0, N2P)
    kv = tl.arange(0, N3P)
    bv = tl.arange(0, BP)
    mlane = pid * BM + lane
    woff = (jv[:, None, None] * N2P + iv[None, :, None]) * n_lanes + mlane[None, None, :]
    W2 = tl.load(w2_ptr + woff)
    W3 = tl.load(w3_ptr + (kv[:, None, None] * N2P + iv[None, :, None]) * n_lanes
                 + mlane[None, None, :])
    gid = tl.load(group_ptr + mlane).to(tl.int64)
    tneg = tl.load(tneg_ptr + mlane)
    active = tl.load(active_ptr + mlane) != 0
    d_epoch = tl.load(div_epoch_ptr + mlane)
    d_step = tl.load(div_step_ptr + mlane)
    thr = tl.load(thr_ptr)  # float64, as the threshold of the other backends
    jmask = jv[:, None] < N1
    kmask = kv[:, None] < N3
    # pointers to row 0 of each lane's group: a batch row r is + r * N1 (features), + r * N3
    frow = gid * n_data
    pbase = phi_ptr + frow[None, :] * N1 + jv[:, None]
    ybase = y_ptr + frow[None, :] * N3 + kv[:, None]
    obase = order_ptr + frow
    zero = tl.full([N2P, BM], 0.0, W2.dtype)
    if RECORD:
        G = tl.full([N1P, N2P, BM], 0.0, W2.dtype)
        lsum = tl.full([BM], 0.0, tl.float64)
    for e in range(n_epochs):
        oe = obase + e * n_order_groups * n_data
        for s in range(n_steps):
            D = tl.full([BP, N2P, BM], 0.0, W2.dtype)
            lossv = tl.full([BM], 0.0, W2.dtype)
            for b in tl.static_range(B):
                if SHUFFLED:
                    r = tl.load(oe + (s * B + b)).to(tl.int64)[None, :]
                    P = tl.load(pbase + r * N1, mask=jmask, other=0.0)
                    Y = tl.load(ybase + r * N3, mask=kmask, other=0.0)
                else:
                    P = tl.load(pbase + (s * B + b) * N1, mask=jmask, other=0.0)
                    Y = tl.load(ybase + (s * B + b) * N3, mask=kmask, other=0.0)
                z = tl.reduce(W2 * P[:, None, :], 0, tl.standard._sum_combine)
                if ACT == 0:  # tanh = sign(z) (1 - t) / (1 + t), t = exp(-2 |z|)
                    t = tl.exp(-2.0 * tl.abs(z))
                    h = tl.where(z < 0, t - 1.0, 1.0 - t) / (1.0 + t)
                    dh = 1.0 - h * h
                elif ACT == 1:
                    h = tl.where(z > 0, z, zero)
                    dh = tl.where(z > 0, zero + 1.0, zero)
                elif ACT == 2:
                    h = z
                    dh = zero + 1.0
                else:  # GELU: z Phi(z), Phi(z) + z phi(z)
                    cdf = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))
                    h = z * cdf
                    dh = cdf + z * tl.exp(-0.5 * z * z) * 0.3989422804014327
                err = tl.reduce(W3 * h[None, :, :], 1, tl.standard._sum_combine) - Y
                lossv += tl.reduce(err * err, 0, tl.standard._sum_combine)
                d = tl.reduce(W3 * err[:, None, :], 0, tl.standard._sum_combine) * dh
                D = tl.where(bv[:, None, None] == b, d[None, :, :], D)
            lb = lossv * (0.5 / B)
            if UPDATE:
                bad = active & ~(lb <= thr)
                if tl.reduce(bad.to(tl.int32), 0, tl.standard._elementwise_max) > 0:
                    # rare: a lane diverges; keep its errors (the host rebuilds the gradient)
                    tl.store(end_delta_ptr + (bv[:, None, None] * N2P + iv[None, :, None])
                             * n_lanes + mlane[None, None, :], D, mask=bad[None, None, :])
                    d_epoch = tl.where(bad, epoch0 + e, d_epoch)
                    d_step = tl.where(bad, s, d_step)
                    active = active & ~bad
            cn = tl.where(active, tneg, 0.0)
            for b in tl.static_range(B):
                if SHUFFLED:
                    r = tl.load(oe + (s * B + b)).to(tl.int64)[None, :]
                    P = tl.load(pbase + r * N1, mask=jmask, other=0.0)
                else:
                    P = tl.load(pbase + (s * B + b) * N1, mask=jmask, other=0.0)
                d = tl.reduce(tl.where(bv[:, None, None] == b, D, 0.0), 0,
                              tl.standard._sum_combine)
                if UPDATE:
                    W2 += (cn[None, :] * d)[None, :, :] * P[:, None, :]
                if RECORD:
                    G += tl.where(active[None, :], d, zero)[None, :, :] * P[:, None, :]
            if RECORD:
                lsum += tl.where(active, lb.to(tl.float64), 0.0)
    tl.store(w2_ptr + woff, W2)
    tl.store(active_ptr + mlane, active.to(tl.int32))
    tl.store(div_epoch_ptr + mlane, d_epoch)
    tl.store(div_step_ptr + mlane, d_step)
    if RECORD:
        tl.store(out_w2_ptr + woff, W2)
        tl.store(out_g_ptr + woff, G / (n_steps * B))
        tl.store(out_loss_ptr + mlane, lsum / n_steps)
