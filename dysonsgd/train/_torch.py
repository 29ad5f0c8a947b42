"""The torch training backend: a plain batched ``torch.bmm`` SGD loop on any device.

Models train in chunks of at most :data:`~dysonsgd.train.plan.TORCH_CHUNK_BUDGET` bytes of
layer-1 features and targets. Per chunk, the layer-1 features ``phi1 = phi(W1 x)`` (2.3) are
computed once in float64 and rounded to the working precision; every SGD step (2.28) is then
three batched products from them (:func:`dysonsgd.model.network.backprop`), with the exact
activations of :mod:`dysonsgd.model.activations`.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from dysonsgd.model import network
from dysonsgd.train.plan import (
    EVAL_ROWS,
    FEATURE_SLICE,
    TORCH_CHUNK_BUDGET,
    EngineOutput,
    TrainPlan,
    allocate_outputs,
    progress_bar,
)

__all__ = ["train_torch"]


def train_torch(plan: TrainPlan) -> EngineOutput:
    """Run ``plan`` with batched torch products on ``plan.device``.

    Parameters
    ----------
    plan : TrainPlan

    Returns
    -------
    EngineOutput
        With timings ``initial_gradient_s`` and ``train_s``.
    """
    config, dev = plan.config, plan.device
    _, n1, n2, n3 = config.widths
    nd, bsz = config.n_data, config.batch_size
    steps = config.steps_per_epoch
    act = config.activation
    thr = config.divergence_threshold
    x, w1, w3, y, group, w2_init = plan.x, plan.w1, plan.w3, plan.y, plan.group, plan.w2_init
    m = plan.n_models
    npdt = plan.np_dtype
    tdtype = getattr(torch, plan.dtype)
    snap_rec = plan.record_index()
    out = allocate_outputs(plan)
    per_model_bytes = nd * (n1 + n3) * np.dtype(npdt).itemsize
    chunk = max(1, min(m, int(TORCH_CHUNK_BUDGET // per_model_bytes)))
    bar = progress_bar(plan)
    t_train = t_eval = 0.0
    threads = torch.get_num_threads()
    if dev.type == "cpu" and chunk < FEATURE_SLICE:
        # tiny products: an OpenMP team only adds barrier latency (milliseconds on a busy host)
        torch.set_num_threads(1)

    def tt(a):
        return torch.as_tensor(np.ascontiguousarray(a), device=dev)

    try:
        for c0 in range(0, m, chunk):
            c1 = min(m, c0 + chunk)
            g = group[c0:c1]
            # layer-1 features in float64, then cast (as the numba fill kernel); in slices, so
            # that no float64 copy of the whole chunk is ever paged in
            phi1_all = torch.empty((c1 - c0, nd, n1), dtype=tdtype, device=dev)
            for a in range(0, c1 - c0, FEATURE_SLICE):
                ga = g[a:a + FEATURE_SLICE]
                phi1 = network.layer1_features(tt(x[ga]), tt(w1[ga]), act, engine="native")
                phi1_all[a:a + FEATURE_SLICE] = phi1.to(tdtype)
            y_all = tt(y[g]).to(tdtype)
            W3 = tt(w3[g]).to(tdtype)
            W2 = tt(w2_init[c0:c1]).to(tdtype)
            c = tt(plan.temperature[c0:c1]).to(tdtype)[:, None, None]
            mc = c1 - c0
            active = torch.ones(mc, dtype=torch.bool, device=dev)
            de = torch.full((mc,), -1, dtype=torch.int64, device=dev)
            dst = torch.full((mc,), -1, dtype=torch.int64, device=dev)
            eg = torch.zeros((mc, n2, n1), dtype=tdtype, device=dev)
            ar = torch.arange(mc, device=dev)[:, None]

            def batch_grad(P, Yb, W2, W3=W3):
                """Summed gradient (2.28) over the rows of ``P`` and their mean loss (2.6)."""
                err, delta = network.backprop(P, Yb, W2, W3, act)
                loss = 0.5 * (err * err).sum(-1).mean(-1)
                return torch.bmm(delta.transpose(1, 2), P), loss

            # snapshot 0: full-data gradient and loss at initialisation
            t = time.perf_counter()
            gsum, lsum = torch.zeros_like(W2), torch.zeros(mc, dtype=torch.float64, device=dev)
            for s0 in range(0, nd, EVAL_ROWS):
                gb, lb = batch_grad(phi1_all[:, s0:s0 + EVAL_ROWS], y_all[:, s0:s0 + EVAL_ROWS],
                                    W2)
                gsum += gb
                lsum += lb.double() * (min(nd, s0 + EVAL_ROWS) - s0)
            out.w2[c0:c1, 0] = W2.cpu().numpy()
            out.grad[c0:c1, 0] = (gsum / nd).cpu().numpy()
            out.loss[c0:c1, 0] = (lsum / nd).cpu().numpy()
            t_eval += time.perf_counter() - t
            t = time.perf_counter()
            for e in range(plan.epochs):
                if plan.orders is not None:
                    perm = tt(plan.orders(e, g))
                    phi1, ys = phi1_all[ar, perm], y_all[ar, perm]
                else:
                    phi1, ys = phi1_all, y_all
                k = snap_rec[e]
                record = k >= 0
                gacc = torch.zeros_like(W2)
                lacc = torch.zeros(mc, dtype=torch.float64, device=dev)
                for s in range(steps):
                    P = phi1[:, s * bsz:(s + 1) * bsz]
                    gb, loss = batch_grad(P, ys[:, s * bsz:(s + 1) * bsz], W2)
                    bad = active & ~(loss <= thr)
                    eg = torch.where(bad[:, None, None], gb / bsz, eg)
                    de = torch.where(bad, e, de)
                    dst = torch.where(bad, s, dst)
                    active = active & ~bad
                    am = active[:, None, None]
                    W2 = torch.where(am, W2 - c * gb, W2)
                    lacc += torch.where(active, loss.double(), 0.0)
                    if record:
                        gacc += torch.where(am, gb, 0.0)
                if record:
                    out.w2[c0:c1, k] = W2.cpu().numpy()
                    out.grad[c0:c1, k] = (gacc / (bsz * steps)).cpu().numpy()
                    out.loss[c0:c1, k] = (lacc / steps).cpu().numpy()
                bar.update(mc * steps)
            t_train += time.perf_counter() - t
            out.div_epoch[c0:c1] = de.cpu().numpy()
            out.div_step[c0:c1] = dst.cpu().numpy()
            out.end_grad[c0:c1] = eg.cpu().numpy()
    finally:
        bar.close()
        torch.set_num_threads(threads)
    out.timings = {"initial_gradient_s": t_eval, "train_s": t_train}
    return out
