"""The drift of the eigenvalues averaged over the SGD steps of an epoch: K with the restoring force.

The drift K of (4.3), (4.4) taken from a mean gradient G (the recorded epoch mean, or the
full-data mean at one W) is the first-order change of X = W W^T along G. Along a real SGD run W
fluctuates about its mean path, and the gradient responds to the fluctuation dW through the
Hessian: the instantaneous first-order drift -(W_s Delta_s^T + Delta_s W_s^T) then carries a
second-order part -(dW (H dW)^T + h.c.) that the drift from G does not. Where the fluctuations
are stationary this part cancels the Ito term T q and the Coulomb terms on average: one SGD
step does what the complete SDE says (the Kramers-Moyal check), but over many steps the
eigenvalues drift only by K of G (docs/sde.md has the numbers).

:func:`epoch_drift` measures the drift that includes it: from a snapshot W, it runs the epoch
that follows the snapshot (the run's own data order, the same teachers and data, plain SGD as
(2.29)) and averages the instantaneous first-order drift over its steps,

    K_X = -(1/n) sum_s (W_s Delta_{B_s}^T + Delta_{B_s} W_s^T),   K_i = (U^T K_X U)_ii,

with U the eigenbasis of X at the snapshot. Each term pairs W_s with the batch that follows it,
so the average contains no noise-W correlation of its own (unlike K at the epoch's end). For
``data_order='fixed'`` the epoch is the one the run itself took next (deterministic).
"""

from __future__ import annotations

import numpy as np

from dysonsgd._checks import check_index, check_int
from dysonsgd.measure.gradstats import training_inputs
from dysonsgd.measure.spectrum import eigensystem
from dysonsgd.model.draws import epoch_order
from dysonsgd.model.network import backprop, layer1_features, outputs

__all__ = ["epoch_drift", "training_w2"]


def epoch_drift(result, snapshot: int, *, chunk: int = 64) -> np.ndarray:
    """K_i averaged over the SGD steps of the epoch after ``snapshot``, for every model.

    Parameters
    ----------
    result : dysonsgd.train.EnsembleResult
    snapshot : int
        Snapshot index (negative counts from the end).
    chunk : int
        Models replayed together (memory: chunk x n_data x n1 floats).

    Returns
    -------
    ndarray, shape (nT, nS, nR, n2): K_i in the eigenbasis of X at the snapshot, ascending;
    NaN for models that diverged.
    """
    return _replay(result, snapshot, chunk)[0]


def _replay(result, snapshot: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The epoch after ``snapshot`` replayed: (K_i, W at its end), see epoch_drift."""
    chunk = check_int("chunk", chunk, minimum=1)
    snapshot = check_index("snapshot", snapshot, len(result.snapshot_epochs))
    config = result.config
    act, b, n = config.activation, config.batch_size, config.n_data
    steps = config.steps_per_epoch
    epoch = int(result.snapshot_epochs[snapshot])
    w2 = np.asarray(result.w2[..., snapshot, :, :], dtype=float)
    grid = w2.shape[:-2]
    teacher = [np.broadcast_to(np.asarray(a, dtype=float), (*grid, *np.shape(a)[-2:]))
               for a in result.teacher()]
    lr = np.broadcast_to(np.asarray(result.learning_rate, dtype=float)[:, None, None], grid)
    keys = np.broadcast_to(np.asarray(result.spawn_keys)[None, None, :], grid)
    seed_index = np.broadcast_to(np.arange(grid[-1])[None, None, :], grid).reshape(-1)
    inputs = training_inputs(result)[0, 0]  # (nR, n_data, n0): the data of each seed index
    flat = [a.reshape(-1, *a.shape[len(grid):]) for a in (*teacher, w2)]
    lr_flat, key_flat = lr.reshape(-1), keys.reshape(-1)
    out = np.full((lr_flat.size, w2.shape[-2]), np.nan)
    w_end = np.empty_like(flat[3])
    for a in range(0, lr_flat.size, chunk):
        w1, w2t, w3, w = (arr[a: a + chunk].copy() for arr in flat)
        rep = key_flat[a: a + chunk]
        x = inputs[seed_index[a: a + chunk]]
        y = outputs(x, w1, w2t, w3, act, engine="torch")
        phi1 = layer1_features(x, w1, act, engine="native")
        order = np.stack([epoch_order(config.data_order, n, result.seed, int(r), epoch)
                          for r in rep])
        step_lr = lr_flat[a: a + chunk, None, None]
        acc = np.zeros((w.shape[0], w.shape[1], w.shape[1]))
        with np.errstate(all="ignore"):  # diverged models run on as NaN and are masked below
            _sgd_steps(w, phi1, y, w3, act, order, step_lr, b, steps, acc=acc)
        k_x = -(acc + np.swapaxes(acc, -1, -2)) / steps
        _, u = eigensystem(flat[3][a: a + chunk])
        out[a: a + chunk] = np.einsum("cji,cjk,cki->ci", u, k_x, u)
        w_end[a: a + chunk] = w
    out = out.reshape(*grid, -1)
    out[np.asarray(result.diverged, dtype=bool)] = np.nan
    return out, w_end.reshape(w2.shape)


def training_w2(result, cell: tuple[int, int], models, steps: int) -> np.ndarray:
    """W2 of some models of a run after ``steps`` SGD steps, replayed from snapshot 0.

    The run's own SGD (2.29) with its data order, teachers and training inputs, in float64:
    what the run held after ``steps`` steps (to rounding: the run's kernels order their sums
    differently), also between its snapshots.

    Parameters
    ----------
    result : EnsembleResult
    cell : (i_T, i_S); models : (R,) seed indices; steps : int >= 0

    Returns
    -------
    ndarray, shape (R, n2, n1)
    """
    config = result.config
    grid = np.shape(result.diverged)
    i_t = check_index("cell[0]", cell[0], grid[0])
    i_s = check_index("cell[1]", cell[1], grid[1])
    models = np.asarray([check_index("models[...]", m, grid[2]) for m in models], dtype=int)
    steps = check_int("steps", steps, minimum=0)
    act, b, per_epoch = config.activation, config.batch_size, config.steps_per_epoch
    if int(result.snapshot_epochs[0]) != 0:
        raise ValueError("training_w2 replays from snapshot 0, which must be epoch 0")
    w1, w2t, w3 = (np.asarray(a, dtype=float)[i_t, i_s, models] for a in result.teacher())
    x = training_inputs(result)[0, 0][models]
    y = outputs(x, w1, w2t, w3, act, engine="torch")
    phi1 = layer1_features(x, w1, act, engine="native")
    w = np.asarray(result.w2[i_t, i_s, models, 0], dtype=float).copy()
    lr = float(np.asarray(result.learning_rate, dtype=float)[i_t])
    keys = np.asarray(result.spawn_keys)[models]
    with np.errstate(all="ignore"):  # a model that diverges runs on as NaN
        for epoch in range(-(-steps // per_epoch)):
            order = np.stack([epoch_order(config.data_order, config.n_data, result.seed, int(k),
                                          epoch) for k in keys])
            _sgd_steps(w, phi1, y, w3, act, order, lr, b,
                       min(per_epoch, steps - epoch * per_epoch))
    return w


def _sgd_steps(w, phi1, y, w3, activation: str, order, learning_rate, batch_size: int,
               steps: int, *, acc=None) -> None:
    """``steps`` SGD steps (2.29) of W2 in place, batches from ``order`` (c, n_data).

    w (c, n2, n1); phi1 (c, n, n1) layer-1 features; y (c, n, n3) targets; w3 (c, n3, n2);
    ``learning_rate`` a float or (c, 1, 1). ``acc`` (c, n2, n2), if given, gathers
    sum_s W_s G_s^T (the first-order drift of X before each step).
    """
    rows = np.arange(w.shape[0])[:, None]
    b = batch_size
    for s in range(steps):
        idx = order[:, s * b:(s + 1) * b]
        p = phi1[rows, idx]
        _, delta = backprop(p, y[rows, idx], w, w3, activation)
        g = np.einsum("cbi,cbj->cij", delta, p) / b
        if acc is not None:
            acc += w @ np.swapaxes(g, -1, -2)
        w -= learning_rate * g
