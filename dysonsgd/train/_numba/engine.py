"""The numba training backend: waves of SIMD blocks, epoch chunks, snapshots.

Models are packed into blocks of ``L`` lanes (:func:`~dysonsgd.train.plan.lanes_for`),
sorted by teacher group so that a block's feature gather streams few groups' rows; any lane
assignment gives the same numbers. The layer-1 features ``phi1 = phi(W1 x)`` of every group are
computed once (float64, rounded to the working precision:
:func:`dysonsgd.model.network.layer1_features` with ``engine='torch'``), gathered into a
per-block scratch in the lane layout by the fill kernel, and streamed by the SGD kernel
(:mod:`dysonsgd.train._numba.codegen`). Blocks run in waves of few blocks, so that a wave's
scratch (about 8.5 MB per block at the paper's sizes) stays in the last-level cache between the
fill and the epochs that stream it.

Array layouts: every per-lane array is flat ``[block][...][lane]`` (:func:`_to_lanes`): ``W2``,
its gradient accumulator ``G`` and the diverging batch's gradient ``EG`` are
``[block][i][j][lane]`` (n2 x n1), ``W3`` is ``[block][k][i][lane]``, the feature scratch ``P``
is ``[block][a][j][lane]`` (n_data x n1) and the targets ``Y`` ``[block][a][k][lane]``; the
recorded snapshots are ``[lane][snapshot][i][j]``.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np

from dysonsgd.model import network
from dysonsgd.train._numba.codegen import fill_kernel, train_kernel
from dysonsgd.train.plan import EngineOutput, TrainPlan, allocate_outputs, lanes_for, progress_bar

__all__ = ["run_numba"]

#: bytes of per-group features precomputed for the whole run (else per wave)
_FEATURE_BUDGET = 1e9

#: bytes of feature scratch per wave (a typical shared L3 is 16-32 MB)
_CACHE_BUDGET = 24e6


def _to_lanes(a: np.ndarray, lanes: int, dtype) -> np.ndarray:
    """(n_blocks * L, *tail) -> flat [block][*tail][lane]."""
    nb = a.shape[0] // lanes
    tail = a.shape[1:]
    b = a.reshape(nb, lanes, -1).transpose(0, 2, 1)
    return np.ascontiguousarray(b, dtype=dtype).reshape(nb * int(np.prod(tail)) * lanes)


def _wave_plan(n_blocks: int, threads: int, max_wave: int) -> list[tuple[int, int]]:
    """Block ranges ``[b0, b1)`` of the waves: few, even, a multiple of the threads each."""
    n_waves = max(1, math.ceil(n_blocks / max_wave))
    per = math.ceil(n_blocks / n_waves)
    per = min(max_wave, threads * math.ceil(per / threads))
    return [(b0, min(b0 + per, n_blocks)) for b0 in range(0, n_blocks, per)]


def run_numba(plan: TrainPlan) -> EngineOutput:
    """Run ``plan`` with the fused SIMD kernels on the CPU.

    Parameters
    ----------
    plan : TrainPlan

    Returns
    -------
    EngineOutput
        With timings ``compile_s``, ``fill_s``, ``initial_gradient_s`` and ``train_s``.
    """
    config = plan.config
    x, w1, w3, y, group, w2_init = plan.x, plan.w1, plan.w3, plan.y, plan.group, plan.w2_init
    orders, epochs = plan.orders, plan.epochs
    npdt = plan.np_dtype
    dname = np.dtype(npdt).name
    lanes = lanes_for(npdt)
    _, n1, n2, n3 = config.widths
    nd, bsz = config.n_data, config.batch_size
    steps = config.steps_per_epoch
    m = plan.n_models
    nb = math.ceil(m / lanes)
    mp = nb * lanes
    pad = mp - m
    n_snap = len(plan.snapshots)
    t0 = time.perf_counter()
    fill = fill_kernel(dname)
    train = train_kernel(dname, bsz, config.activation)

    def padded(a, fill_value=0.0):
        if pad == 0:
            return a
        extra = np.full((pad, *a.shape[1:]), fill_value, dtype=a.dtype)
        return np.concatenate([a, extra])

    # lanes sorted by teacher group (models sharing a teacher are adjacent in a block, so the
    # feature gather streams one group's rows); any lane assignment gives the same numbers
    lane_model = np.argsort(group, kind="stable")
    lane_group = padded(group[lane_model].astype(np.int64), 0)
    w3_all = padded(w3[group[lane_model]])
    tneg_all = padded(-plan.temperature[lane_model])  # padding lanes never move
    snap_rec = plan.record_index()
    out = allocate_outputs(plan)
    fixed_order = np.arange(nd, dtype=np.int64)[None]
    threads = numba.get_num_threads()
    scratch_bytes = nd * (n1 + n3) * lanes * np.dtype(npdt).itemsize
    # a wave's feature scratch should stay in the last-level cache between the fill and the
    # epochs that stream it (about 8.5 MB per block at the paper's sizes): few blocks per wave
    max_wave = max(threads, min(8 * threads, int(_CACHE_BUDGET // max(scratch_bytes, 1))))
    waves = _wave_plan(nb, threads, max_wave)
    wmax = max(b1 - b0 for b0, b1 in waves)
    # scratch reused by every wave (fresh pages per wave would cost a page fault per 4 kB)
    p_buf = np.empty(wmax * nd * n1 * lanes, npdt)
    y_buf = np.empty(wmax * nd * n3 * lanes, npdt)
    ow_buf = np.empty(wmax * lanes * n_snap * n2 * n1, npdt)
    og_buf = np.empty_like(ow_buf)
    ol_buf = np.empty(wmax * lanes * n_snap)
    t_compile = time.perf_counter() - t0
    t = time.perf_counter()
    # features of all groups at once when they fit (teachers shared across cells: few groups)
    fits = x.shape[0] * nd * n1 * np.dtype(npdt).itemsize <= _FEATURE_BUDGET
    phig_all = (network.layer1_features(x, w1, config.activation, engine="torch", dtype=npdt)
                if fits else None)
    t_fill = time.perf_counter() - t
    t_eval = t_train = 0.0
    bar = progress_bar(plan)
    est_epoch = None
    try:
        for b0, b1 in waves:
            nbw = b1 - b0
            ls, le = b0 * lanes, b1 * lanes
            P = p_buf[: nbw * nd * n1 * lanes]
            Y = y_buf[: nbw * nd * n3 * lanes]
            rows = w2_init[lane_model[ls:min(le, m)]]
            if len(rows) < le - ls:
                rows = np.concatenate([rows, np.zeros((le - ls - len(rows), n2, n1))])
            W2 = _to_lanes(rows, lanes, npdt)
            W3 = _to_lanes(w3_all[ls:le], lanes, npdt)
            G = np.zeros_like(W2)
            EG = np.zeros_like(W2)
            tneg = tneg_all[ls:le].astype(npdt)
            lsum = np.zeros(le - ls)
            de = np.full(le - ls, -1, np.int64)
            dst = np.full(le - ls, -1, np.int64)
            ow = ow_buf[: (le - ls) * n_snap * n2 * n1]
            og = og_buf[: (le - ls) * n_snap * n2 * n1]
            ol = ol_buf[: (le - ls) * n_snap]
            lg = lane_group[ls:le]

            if phig_all is None:  # features of this wave's groups only
                uniq, lg = np.unique(lg, return_inverse=True)
                lg = lg.astype(np.int64)
                phig = network.layer1_features(x[uniq], w1[uniq], config.activation,
                                               engine="torch", dtype=npdt)
                yg = y[uniq]
            else:
                phig, yg = phig_all, y

            def do_fill(order, P=P, Y=Y, lg=lg, phig=phig, yg=yg):
                nonlocal t_fill
                t = time.perf_counter()
                fill(P, Y, phig, yg, lg, order, nd, n1, n3)
                t_fill += time.perf_counter() - t

            def call(mask, rec, e0, ne, mode, *, P=P, Y=Y, W2=W2, W3=W3, G=G, EG=EG, tneg=tneg,
                     lsum=lsum, de=de, dst=dst, ow=ow, og=og, ol=ol):
                train(W2, G, P, Y, W3, tneg, mask, lsum, de, dst, EG, ow, og, ol, rec, e0, ne,
                      steps, config.divergence_threshold, mode, n1, n2, n3, nd)

            do_fill(fixed_order if orders is None else orders(0, lg))
            # snapshot 0: full-data loss and gradient at initialisation (no update)
            t = time.perf_counter()
            call(np.ones(le - ls, npdt), np.zeros(1, np.int64), 0, 1, 1)
            t_eval += time.perf_counter() - t
            mask = np.ones(le - ls, npdt)
            n_real = max(0, min(le, m) - ls)
            e = 0
            while e < epochs:
                if orders is not None:  # a fresh permutation per epoch: refill, one epoch
                    if e > 0:
                        do_fill(orders(e, lg))
                    ne = 1
                elif est_epoch is None:
                    ne = 1
                else:  # about half a second per call keeps the bar alive
                    ne = min(epochs - e, max(1, int(0.5 / max(est_epoch, 1e-9))))
                t = time.perf_counter()
                call(mask, snap_rec[e: e + ne], e, ne, 0)
                dt = time.perf_counter() - t
                t_train += dt
                est_epoch = dt / ne
                e += ne
                bar.update(n_real * ne * steps)
            idx = lane_model[ls:ls + n_real]
            out.w2[idx] = ow.reshape(-1, n_snap, n2, n1)[:n_real]
            out.grad[idx] = og.reshape(-1, n_snap, n2, n1)[:n_real]
            out.loss[idx] = ol.reshape(-1, n_snap)[:n_real]
            out.div_epoch[idx] = de[:n_real]
            out.div_step[idx] = dst[:n_real]
            eg = EG.reshape(nbw, n2, n1, lanes).transpose(0, 3, 1, 2).reshape(-1, n2, n1)
            out.end_grad[idx] = eg[:n_real]
    finally:
        bar.close()
    out.timings = {"compile_s": t_compile, "fill_s": t_fill, "initial_gradient_s": t_eval,
                   "train_s": t_train}
    return out
