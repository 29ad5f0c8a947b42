"""The general path of :func:`~dysonsgd.train.ensemble.train_ensemble`: any depth, any trained set.

A config that is not the paper's set-up (:attr:`TeacherStudentConfig.is_paper_case`: two hidden
layers, ``W2`` alone trained, the other matrices the teacher's) trains here, on the general
SIMD kernel of :mod:`dysonsgd.train._numba.general` (driven by
:mod:`dysonsgd.train._numba.general_engine`). Everything else is as for the paper's
case: the same grid ``temperature x sigma_w x seed``, the same SGD (2.28) on every trained
matrix at once (``W_l <- W_l - T sum_{a in B} dl(x_a)/dW_l``, all gradients at the step's start
weights), the same snapshots, divergence rule and data orders, and the same common random
numbers: replica ``r`` draws teacher, data and init noise from
``SeedSequence(seed, spawn_key=(replica_offset + r,))``
(:func:`dysonsgd.model.layers.replica_layer_draws`), so a model's numbers depend on ``(seed,
its grid coordinates, seed index)`` only, never on the blocks, lanes or threads, and
``replica_layer_draws`` with :func:`~dysonsgd.model.layers.student_init` replays any model.

The student's ``W_l(0)`` follows :meth:`TeacherStudentConfig.init_rule`: the grid's
``sigma_W`` for ``W2`` (2.11), the teacher's matrix for the others unless ``sigma_w_layers``
says otherwise. Every recorded matrix (the trained ones, ``W2``, and any not started at the
teacher's) has its snapshots and epoch-mean gradients in the result: ``W2`` in
``EnsembleResult.w2`` and ``grad`` as always, the others in ``layer_w`` and ``layer_grad``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from dysonsgd._checks import InputError
from dysonsgd.model import layers
from dysonsgd.model.config import GRID_LAYER, TeacherStudentConfig
from dysonsgd.train.plan import lanes_for
from dysonsgd.train.result import EnsembleResult

__all__ = ["general_memory_bytes", "per_model", "train_general"]


def per_model(name: str, value, tail: tuple[int, ...], grid: tuple[int, int, int]):
    """Accept ``tail``, ``(nR, *tail)``, ``(M, *tail)`` or ``(nT, nS, nR, *tail)`` shapes.

    Returns ``(array, per_model)`` with the array shaped ``(nR, *tail)`` or ``(M, *tail)``.
    """
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite")
    n_t, n_s, n_r = grid
    m = n_t * n_s * n_r
    lead = arr.shape[: arr.ndim - len(tail)]
    if arr.ndim < len(tail) or arr.shape[arr.ndim - len(tail):] != tail:
        raise InputError(f"{name} must end with shape {tail}, got {arr.shape}")
    if lead == ():
        return np.broadcast_to(arr, (n_r, *tail)).copy(), False
    if lead == (n_r,):
        return arr.copy(), False
    if lead in ((m,), (n_t, n_s, n_r)):
        return arr.reshape(m, *tail).copy(), True
    raise InputError(f"{name}: leading shape {lead} is none of (), ({n_r},), ({m},), {grid}")


def general_memory_bytes(config: TeacherStudentConfig, n_models: int, n_groups: int,
                         n_snapshots: int, dtype: str, *, threads: int = 1) -> int:
    """Bytes of host memory the general path holds for ``n_models`` models of ``n_groups``
    replicas: per model the snapshots and gradients of every recorded matrix and two more sets
    of all weights, and the losses; per group the float64 draws (teacher, its noise, inputs,
    targets); the working set of one wave, at most 64 MB of lane-ordered data (or the blocks
    of one wave per thread)."""
    item = 4 if dtype == "float32" else 8
    sizes = [a * b for a, b in zip(config.widths[1:], config.widths[:-1], strict=True)]
    rec = sum(sizes[k - 1] for k in config.recorded_layers)
    nd, n0, n_out = config.n_data, config.widths[0], config.widths[-1]
    outputs = n_models * ((2 * n_snapshots * rec + 3 * sum(sizes)) * item + n_snapshots * 8)
    draws = n_groups * 8 * (2 * sum(sizes) + nd * (n0 + n_out))
    lanes = lanes_for(np.float32 if item == 4 else np.float64)
    block = nd * (n0 + n_out) * lanes * item
    wave = max(threads * block, min(64e6, math.ceil(n_models / lanes) * block))
    return int(outputs + draws + 2 * wave)


def train_general(config: TeacherStudentConfig, temps: np.ndarray, sigmas: np.ndarray, *,
                  n_seeds: int, epochs: int, snaps: np.ndarray, seed: int, replica_offset: int,
                  dtype: str, progress: bool, orders: Callable | None,
                  teacher_weights: Sequence[np.ndarray] | None = None,
                  inputs: np.ndarray | None = None, student_init: np.ndarray | None = None,
                  t_start: float | None = None,
                  data: tuple[np.ndarray, np.ndarray] | None = None) -> EnsembleResult:
    """Train the grid on the general path (arguments resolved by ``train_ensemble``).

    Parameters
    ----------
    config : TeacherStudentConfig
    temps, sigmas : (nT,), (nS,) float64, the grid's ``T`` and ``sigma_W``
    n_seeds, epochs, seed, replica_offset : int
    snaps : (n_snap,) int64, snapshot epochs
    dtype : {'float32', 'float64'}
    progress : bool
    orders : callable or None
        The data order of an epoch for given groups (``data_order`` other than 'fixed').
    teacher_weights : sequence of L arrays, optional
        The teacher's ``W_1 .. W_L``, each ``(n_l, n_{l-1})``, per replica or per model (the
        shapes of ``train_ensemble``).
    inputs : array, optional
        Training inputs, trailing ``(n_data, n0)``.
    student_init : array, optional
        ``W2(0)`` itself (trailing ``(n2, n1)``); ``sigma_w`` then only labels the cells.
    t_start : float, optional
        ``time.perf_counter()`` at the call's start (for the wall time).
    data : (x, y), optional
        Fixed inputs (n_data, n0) and targets (n_data, n_L), checked, for every model instead
        of the teacher's (``train_ensemble``'s ``data``).

    Returns
    -------
    EnsembleResult
    """
    from dysonsgd.train._numba.general_engine import LayerPlan, run_layers

    t_start = time.perf_counter() if t_start is None else t_start
    grid = (temps.size, sigmas.size, n_seeds)
    n_models = math.prod(grid)
    nl, widths = config.n_layers, config.widths
    shapes = [config.layer_shape(k) for k in range(1, nl + 1)]
    draws = [layers.replica_layer_draws(config, seed, replica_offset + r) for r in range(n_seeds)]
    teacher = [np.stack([d["teacher"][k] for d in draws]) for k in range(nl)]
    x = np.stack([d["x"] for d in draws])
    is_per_model = False
    if teacher_weights is not None:
        if len(teacher_weights) != nl:
            raise InputError(f"teacher_weights must be a sequence of the {nl} teacher matrices "
                             f"(W1, ..., W{nl})")
        given = [per_model(f"teacher_weights[{k}]", a, shapes[k], grid)
                 for k, a in enumerate(teacher_weights)]
        is_per_model = any(p for _, p in given)
        teacher = [a for a, _ in given]
    if inputs is not None:
        x, pm = per_model("inputs", inputs, (config.n_data, widths[0]), grid)
        is_per_model = is_per_model or pm
    rep = np.tile(np.arange(n_seeds), n_models // n_seeds)
    if is_per_model:  # groups become models
        teacher = [a if a.shape[0] == n_models else a[rep] for a in teacher]
        x = x if x.shape[0] == n_models else x[rep]
        group = np.arange(n_models)
    else:
        group = rep
    w2_given = None
    if student_init is not None:
        base, pm = per_model("student_init", student_init, shapes[GRID_LAYER - 1], grid)
        w2_given = base if pm else base[rep]
    sigma_of_model = np.repeat(np.tile(sigmas, grid[0]), n_seeds)

    def init(layer: int, models: np.ndarray) -> np.ndarray:
        """``W_layer(0)`` of ``models`` (flat model indices), float64."""
        rule = config.init_rule(layer)
        if layer == GRID_LAYER and w2_given is not None:
            return w2_given[models]
        if rule == "teacher":
            return teacher[layer - 1][group[models]]
        z = np.stack([d["z"][layer] for d in draws])[rep[models]]
        scale = sigma_of_model[models] if rule == "grid" else np.full(len(models), float(rule))
        return scale[:, None, None] * z / math.sqrt(widths[layer - 1])

    if data is None:
        y = layers.outputs(x, [t for t in teacher], config.activation)
    else:  # the same fixed data for every group
        x = np.broadcast_to(data[0], x.shape).copy()
        y = np.broadcast_to(data[1], (x.shape[0], *data[1].shape)).copy()
    plan = LayerPlan(
        widths=widths, activation=config.activation, trained=config.trained_layers,
        recorded=config.recorded_layers, x=x, y=y, group=group, init=init,
        temperature=np.repeat(temps, sigmas.size * n_seeds), batch_size=config.batch_size,
        epochs=epochs, snapshots=snaps, orders=orders, threshold=config.divergence_threshold,
        dtype=dtype, progress=progress)
    t_setup = time.perf_counter() - t_start
    out = run_layers(plan)
    t_total = time.perf_counter() - t_start
    n_snap = len(snaps)
    diverged = (out.div_epoch >= 0).reshape(grid)
    div_epoch = out.div_epoch.reshape(grid)
    # after a divergence in epoch e, snapshots at epoch counts >= e + 1 repeat the frozen
    # weights (the kernel froze them), take the diverging batch's gradients and a NaN loss
    loss = out.loss.reshape(*grid, n_snap)
    snap_w = {k: w.reshape(*grid, n_snap, *shapes[k - 1]) for k, w in out.weights.items()}
    snap_g = {k: g.reshape(*grid, n_snap, *shapes[k - 1]) for k, g in out.grads.items()}
    for t, s, r in zip(*np.nonzero(diverged), strict=True):
        later = snaps >= div_epoch[t, s, r] + 1
        later[0] = False
        m = (t * grid[1] + s) * grid[2] + r
        for k in snap_g:
            snap_g[k][t, s, r, later] = out.end_grad[k][m]
        loss[t, s, r, later] = np.nan
    return EnsembleResult(
        config=config, temperature=temps, sigma_w=sigmas, snapshot_epochs=snaps,
        w2=snap_w.pop(GRID_LAYER), grad=snap_g.pop(GRID_LAYER), loss=loss,
        diverged=diverged, diverged_epoch=div_epoch, diverged_step=out.div_step.reshape(grid),
        teacher_w1=teacher[0], teacher_w2=teacher[1],
        teacher_w3=teacher[2] if nl >= 3 else None, group=group.reshape(grid), seed=seed,
        replica_offset=replica_offset, dtype=dtype, device="cpu", backend="numba",
        wall_time=t_total, timings={"setup_s": t_setup, **out.timings, "total_s": t_total},
        layer_w=snap_w, layer_grad=snap_g,
        teacher_layers={k + 1: teacher[k] for k in range(3, nl)})
