"""The driver of the general training kernel: the plan, blocks of lanes, waves, snapshots.

:func:`run_layers` trains a :class:`LayerPlan` (made by :mod:`dysonsgd.train.general`) with the
kernel of :mod:`dysonsgd.train._numba.general`: models are sorted by group into blocks of ``L``
lanes (:func:`~dysonsgd.train.plan.lanes_for`; any assignment gives the same numbers), each
wave's inputs and targets are put in lane order (``[block][a][k][lane]``, in the epoch's data
order), the weights of every matrix are laid out ``[block][q][lane]``, and the kernel runs the
epochs in calls of about half a second (one epoch per call with a per-epoch data order).
Snapshot 0 is the data-mean gradient and loss at the start (a call in mode 1, no update).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np

from dysonsgd.model.activations import lookup
from dysonsgd.train._numba.general import train_kernel
from dysonsgd.train.plan import lanes_for

__all__ = ["LayerOutput", "LayerPlan", "run_layers"]

#: bytes of lane-interleaved inputs and targets per wave (they are streamed once per epoch)
_WAVE_BUDGET = 64e6


@dataclass(frozen=True)
class LayerPlan:
    """One run of the general path, models flattened (``M``), data per group (``G``).

    Attributes
    ----------
    widths : (n0, ..., n_L)
    activation : str
    trained, recorded : tuple of int
        1-based matrices that train, and whose snapshots are kept (a superset).
    x : (G, n_data, n0) float64; y : (G, n_data, n_L) float64, the targets
    group : (M,) int64, the group (data) of each model
    init : callable ``(layer, models) -> (len(models), n_l, n_{l-1})`` float64
        ``W_l(0)`` of the given models.
    temperature : (M,) float64, ``T``, the step coefficient
    batch_size, epochs : int
    snapshots : (n_snap,) int64, epoch counts, starting at 0
    orders : callable ``(epoch, groups) -> (len(groups), n_data)`` int64, or None (fixed order)
    threshold : float, the divergence threshold of the batch loss
    dtype : {'float32', 'float64'}
    progress : bool
    """

    widths: tuple[int, ...]
    activation: str
    trained: tuple[int, ...]
    recorded: tuple[int, ...]
    x: np.ndarray
    y: np.ndarray
    group: np.ndarray
    init: Callable[[int, np.ndarray], np.ndarray]
    temperature: np.ndarray
    batch_size: int
    epochs: int
    snapshots: np.ndarray
    orders: Callable[[int, np.ndarray], np.ndarray] | None
    threshold: float
    dtype: str
    progress: bool = False


@dataclass
class LayerOutput:
    """Per-model results of :func:`run_layers`, models in the plan's order.

    Attributes
    ----------
    weights, grads : dict ``l -> (M, n_snap, n_l, n_{l-1})`` working precision, per recorded
        matrix: its snapshots and epoch-mean minibatch gradients (snapshot 0: the full-data
        gradient at initialisation)
    end_grad : dict ``l -> (M, n_l, n_{l-1})``, the batch-mean gradient of the batch that
        diverged (zeros for a model that did not)
    loss : (M, n_snap) float64, epoch-mean training loss (snapshot 0: full-data loss)
    div_epoch, div_step : (M,) int64, -1 for none
    timings : seconds per phase
    """

    weights: dict[int, np.ndarray]
    grads: dict[int, np.ndarray]
    end_grad: dict[int, np.ndarray]
    loss: np.ndarray
    div_epoch: np.ndarray
    div_step: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


def _to_lanes(a: np.ndarray, lanes: int, dtype) -> np.ndarray:
    """(n_blocks * L, *tail) -> flat [block][*tail][lane]."""
    nb = a.shape[0] // lanes
    b = a.reshape(nb, lanes, -1).transpose(0, 2, 1)
    return np.ascontiguousarray(b, dtype=dtype).reshape(-1)


def _from_lanes(a: np.ndarray, lanes: int, tail: tuple[int, ...]) -> np.ndarray:
    """Flat [block][*tail][lane] -> (n_blocks * L, *tail)."""
    size = int(np.prod(tail))
    nb = a.size // (size * lanes)
    return a.reshape(nb, size, lanes).transpose(0, 2, 1).reshape(nb * lanes, *tail)


def _offsets(sizes) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def run_layers(plan: LayerPlan) -> LayerOutput:
    """Train ``plan`` with the general SIMD kernel on the CPU.

    Returns
    -------
    LayerOutput
        With timings ``initial_gradient_s`` (snapshot 0), ``train_s`` and ``data_s`` (the
        inputs and targets put in lane order).
    """
    from tqdm.auto import tqdm

    npdt = np.float32 if plan.dtype == "float32" else np.float64
    lanes = lanes_for(npdt)
    widths = np.asarray(plan.widths, np.int64)
    nl = len(widths) - 1
    n0, nout = int(widths[0]), int(widths[-1])
    nd, bsz = plan.x.shape[1], plan.batch_size
    steps = nd // bsz
    m = len(plan.group)
    nb = math.ceil(m / lanes)
    n_snap = len(plan.snapshots)
    sizes = [int(widths[k + 1] * widths[k]) for k in range(nl)]
    woff = _offsets(sizes)
    hoff = _offsets(widths)
    rec_sizes = [sizes[k] if k + 1 in plan.recorded else 0 for k in range(nl)]
    rstart = _offsets(rec_sizes)
    roff = np.where(np.asarray(rec_sizes) > 0, rstart[:-1], -1).astype(np.int64)
    rtot = int(rstart[-1])
    trained = np.array([k + 1 in plan.trained for k in range(nl)], np.int64)
    low = min(plan.recorded)
    act = lookup(plan.activation)
    kernel = train_kernel(act.code, bool(npdt == np.float64))
    rec_index = np.full(plan.epochs, -1, np.int64)
    for k in range(1, n_snap):
        rec_index[plan.snapshots[k] - 1] = k
    # lanes sorted by group (any assignment gives the same numbers); padding lanes repeat the
    # last model and never move (mask 0)
    order = np.argsort(plan.group, kind="stable")
    lane_model = np.concatenate([order, np.full(nb * lanes - m, order[-1] if m else 0)])
    threads = numba.get_num_threads()
    block_bytes = nd * (n0 + nout) * lanes * np.dtype(npdt).itemsize
    per_wave = max(threads, min(nb, int(_WAVE_BUDGET // max(block_bytes, 1)) // threads
                                * threads))
    # waves of about equal size, in multiples of the threads
    per_wave = threads * math.ceil(math.ceil(nb / math.ceil(nb / per_wave)) / threads)
    out_w = {k: np.empty((m, n_snap, *(int(widths[k]), int(widths[k - 1]))), npdt)
             for k in plan.recorded}
    out_g = {k: np.empty_like(v) for k, v in out_w.items()}
    end_g = {k: np.zeros((m, int(widths[k]), int(widths[k - 1])), npdt) for k in plan.recorded}
    loss = np.empty((m, n_snap))
    div_e = np.full(m, -1, np.int64)
    div_s = np.full(m, -1, np.int64)
    t_data = t_eval = t_train = 0.0
    bar = tqdm(total=m * plan.epochs * steps, disable=not plan.progress, unit="model-step",
               unit_scale=True, desc=f"{m} models", smoothing=0.1, dynamic_ncols=True)
    est_epoch = None
    try:
        for b0 in range(0, nb, per_wave):
            b1 = min(nb, b0 + per_wave)
            lm = lane_model[b0 * lanes:b1 * lanes]
            real = np.arange(b0 * lanes, b1 * lanes) < m
            groups = plan.group[lm]
            W = np.concatenate([_to_lanes(plan.init(k, lm).reshape(len(lm), -1), lanes, npdt)
                                .reshape(b1 - b0, -1) for k in range(1, nl + 1)], axis=1)
            W = np.ascontiguousarray(W).reshape(-1)
            G = np.zeros_like(W)
            EG = np.zeros_like(W)
            tneg = np.where(real, -plan.temperature[lm], 0.0).astype(npdt)
            mask = real.astype(npdt)
            lsum = np.zeros(len(lm))
            de = np.full(len(lm), -1, np.int64)
            dst = np.full(len(lm), -1, np.int64)
            ow = np.empty(len(lm) * n_snap * rtot, npdt)
            og = np.empty_like(ow)
            ol = np.empty(len(lm) * n_snap)

            def data(epoch: int, groups=groups):
                nonlocal t_data
                t = time.perf_counter()
                if plan.orders is None:
                    xs, ys = plan.x[groups], plan.y[groups]
                else:
                    rows = plan.orders(epoch, groups)
                    xs = plan.x[groups[:, None], rows]
                    ys = plan.y[groups[:, None], rows]
                out = _to_lanes(xs, lanes, npdt), _to_lanes(ys, lanes, npdt)
                t_data += time.perf_counter() - t
                return out

            def call(X, Y, rec, e0, ne, mode, *, W=W, G=G, EG=EG, tneg=tneg, mask=mask,
                     lsum=lsum, de=de, dst=dst, ow=ow, og=og, ol=ol):
                kernel(W, G, EG, X, Y, widths, woff, hoff, roff, trained, tneg, mask, lsum, de,
                       dst, ow, og, ol, rec, e0, ne, steps, bsz, nd, plan.threshold, mode, low,
                       lanes)

            X, Y = data(0)
            t = time.perf_counter()
            call(X, Y, np.zeros(1, np.int64), 0, 1, 1)
            t_eval += time.perf_counter() - t
            e = 0
            n_real = int(real.sum())
            while e < plan.epochs:
                if plan.orders is not None:
                    if e > 0:
                        X, Y = data(e)
                    ne = 1
                elif est_epoch is None:
                    ne = 1
                else:  # about half a second per call keeps the bar alive
                    ne = min(plan.epochs - e, max(1, int(0.5 / max(est_epoch, 1e-9))))
                t = time.perf_counter()
                call(X, Y, rec_index[e:e + ne], e, ne, 0)
                dt = time.perf_counter() - t
                t_train += dt
                est_epoch = dt / ne
                e += ne
                bar.update(n_real * ne * steps)
            idx = lm[real]
            snaps_w = ow.reshape(len(lm), n_snap, rtot)[real]
            snaps_g = og.reshape(len(lm), n_snap, rtot)[real]
            eg = _from_lanes(EG, lanes, (int(woff[-1]),))[real]
            for k in plan.recorded:
                shape = (int(widths[k]), int(widths[k - 1]))
                a, z = int(roff[k - 1]), int(roff[k - 1]) + sizes[k - 1]
                out_w[k][idx] = snaps_w[:, :, a:z].reshape(-1, n_snap, *shape)
                out_g[k][idx] = snaps_g[:, :, a:z].reshape(-1, n_snap, *shape)
                end_g[k][idx] = eg[:, woff[k - 1]:woff[k]].reshape(-1, *shape)
            loss[idx] = ol.reshape(len(lm), n_snap)[real]
            div_e[idx] = de[real]
            div_s[idx] = dst[real]
    finally:
        bar.close()
    return LayerOutput(weights=out_w, grads=out_g, end_grad=end_g, loss=loss, div_epoch=div_e,
                       div_step=div_s, timings={"data_s": t_data, "initial_gradient_s": t_eval,
                                                "train_s": t_train})
