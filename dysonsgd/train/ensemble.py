"""Teacher-student ensembles trained by SGD, batched over the whole hyperparameter grid.

The set-up is the paper's (section 3.1) and its released training script's (see
``reference-notes.md``): a network ``n0 -> n1 -> n2 -> n3`` without biases, activation ``phi`` on
both hidden layers and a linear output,

    yhat(x) = W3 phi(W2 phi(W1 x)),                                        (2.2)-(2.3)

a teacher with ``W1, W2*, W3 ~ N(0, 1/n_{l-1})`` (3.1), a student sharing the teacher's ``W1`` and
``W3`` whose middle matrix starts at ``W2(0) ~ N(0, sigma_W^2 / n1)`` (2.11) and is the only one
trained, by plain SGD (2.28) on the per-sample loss ``l = 1/2 sum_i (y_i - yhat_i)^2`` (2.6)::

    W2 <- W2 - lr * (1/|B|) sum_{a in B} dl(x_a)/dW2 = W2 - T sum_{a in B} dl(x_a)/dW2,

with ``lr = T |B|``.

The batch size as a grid axis: ``batch_size=[1, 4, 16]`` trains the same ``temperature x
sigma_w x seed`` grid once per ``|B|`` and returns a :class:`~dysonsgd.train.result.BatchResults`
(``|B| -> EnsembleResult``). ``T`` is held fixed while ``lr = T |B|`` varies; with the epochs
fixed, ``steps = epochs n_data / |B|``, so every batch size reaches the same continuous time
``t_f = lr x steps = T x epochs x n_data``. The seed streams do not depend on ``|B|``: each
batch size trains the same teachers, data and ``W2(0)``, and the run of ``|B| = 4`` within the
axis is bit for bit the run of ``batch_size=4`` alone (or of ``config.batch_size = 4``).

Data order, divergence rule and snapshots follow the release: ``n_data`` inputs per model, fixed
for the run, visited in consecutive batches in the same order every epoch (``data_order='fixed'``;
``'shuffled'`` draws a fresh permutation per epoch instead); a model whose batch loss exceeds
``divergence_threshold`` stops, and its later snapshots repeat the last ``W2`` and the gradient of
that batch; snapshots hold ``W2``, the epoch-mean minibatch gradient and the epoch-mean training
loss, snapshot 0 being the initial state with the full-data gradient and loss.

Random numbers and reproducibility
----------------------------------
Replica ``r`` (the seed index) owns one stream ``numpy.random.SeedSequence(seed,
spawn_key=(replica_offset + r,))`` which draws, in this order, ``W1`` (n1 x n0), ``W2*`` (n2 x n1),
``W3`` (n3 x n2), the inputs ``x`` (n_data x n0) and the standard-normal init noise ``Z``
(n2 x n1); the student starts at ``W2(0) = sigma_W Z / sqrt(n1)``. Every grid cell therefore sees
the same teachers, data and init noise (common random numbers, as the release's per-seed jobs):
differences between cells reflect the hyperparameters, not the draws. With
``data_order='shuffled'`` the permutation of epoch ``e`` comes from
``SeedSequence(seed, spawn_key=(replica_offset + r, 1, e))``. A model's numbers thus depend only on
``(seed, its grid coordinates, seed index)``: not on how the grid is split into blocks, the order
of cells, the thread count or the backend beyond rounding. The result stores the entropy and
spawn keys, so :func:`dysonsgd.model.draws.replica_draws` replays any single model.

The network, its activations and the draws live in :mod:`dysonsgd.model` (``network``,
``activations``, ``draws``); this module resolves the arguments into a
:class:`~dysonsgd.train.plan.TrainPlan` and assembles the :class:`EnsembleResult`.

Fixed data (tasks)
------------------
``data=(x, y)``, or a config whose ``task`` is not ``'teacher'`` (``task='digits'``, see
:mod:`dysonsgd.model.tasks`), trains every model on the same fixed inputs ``x`` (n_data, n0) and
targets ``y`` (n_data, n_L) instead of its teacher's: the replica's draws are unchanged (the
stream above), the drawn ``W1`` and ``W3`` become the student's fixed (W2-only) or starting
(all-layer) matrices, the drawn ``W2*`` and inputs go unused. Both paths and all backends take
it; the fused W2 kernels take any ``n3`` (the digits' ten outputs included).

Backends
--------
``'numba'`` (CPU default) runs the fused kernels of :mod:`dysonsgd.train._numba`: SIMD lanes
are models, each block's ``W2`` stays in L1 over many epochs; float32 uses a rational ``tanh``
accurate to 4e-7, float64 is exact. ``'torch'`` (:mod:`dysonsgd.train._torch`) is a plain
batched ``torch.bmm`` loop on any device (CUDA included) with exact activations. Both implement
the same algorithm and agree to rounding (tests check it); both take the temperature ``T`` as
the step coefficient.

Any other config (other trained matrices, depths or inits:
``TeacherStudentConfig.is_paper_case`` false) trains on the general path,
:mod:`dysonsgd.train.general`: the general numba kernel, CPU only, with the same grid, seeds,
snapshots and divergence rule, every recorded matrix in the result.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from dysonsgd._checks import InputError, check_int, check_positive
from dysonsgd.model import network
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.draws import epoch_order, replica_draws
from dysonsgd.model.tasks import check_data, task_data
from dysonsgd.train._torch import train_torch
from dysonsgd.train.general import general_memory_bytes, train_general
from dysonsgd.train.general import per_model as _per_model
from dysonsgd.train.plan import (
    EVAL_ROWS,
    FEATURE_SLICE,
    TORCH_CHUNK_BUDGET,
    InitRows,
    TrainPlan,
    lanes_for,
)
from dysonsgd.train.result import BatchResults, EnsembleResult

__all__ = ["BACKENDS", "available_memory_bytes", "host_memory_bytes", "release_snapshot_epochs",
           "snapshot_epochs", "torch_model_bytes", "train_ensemble"]

BACKENDS = ("auto", "numba", "torch", "triton")


# ------------------------------------------------------------------------------------------------
# snapshot schedules
# ------------------------------------------------------------------------------------------------


def snapshot_epochs(epochs: int, snapshots: int = 21) -> np.ndarray:
    """Epoch counts of evenly spaced snapshots: ``round(k * epochs / n)``, ``k = 0..n``.

    ``n = min(snapshots - 1, epochs)``; entry 0 is the initial state, the last is the end of
    training.
    """
    n = min(snapshots - 1, epochs)
    return np.round(np.arange(n + 1) * (epochs / n)).astype(np.int64)


def release_snapshot_epochs(epochs: int) -> np.ndarray:
    """The release's schedule: after epochs ``1, I+1, 2I+1, ..., 19I+1`` (``I = epochs // 20``).

    The release saves inside epoch ``e`` (0-based) when ``e`` is one of
    ``linspace(0, epochs, 21)``, i.e. after ``e + 1`` epochs; its last snapshot is therefore at
    ``0.95 epochs + 1``, not at the end. Pass the result as ``snapshots=`` to reproduce it.
    """
    points = min(20, epochs)
    marks = set(np.linspace(0, epochs, points + 1).tolist())
    return np.array([0] + [e + 1 for e in range(epochs) if float(e) in marks], dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# argument handling
# ------------------------------------------------------------------------------------------------


def _grid_values(name: str, value) -> np.ndarray:
    arr = np.atleast_1d(check_positive(name, value)).astype(np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must be a positive number or a non-empty 1-d sequence")
    return arr


def _batch_sizes(value, n_data: int) -> tuple[int, ...]:
    """A batch-size axis: ints >= 1 dividing ``n_data``, no duplicates, checked before any
    training."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = np.asarray([None])
    if arr.ndim != 1 or arr.size == 0 or arr.dtype == bool \
            or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"batch_size must be an integer >= 1 or a non-empty 1-d sequence of "
                         f"them, got {value!r}")
    sizes = tuple(int(b) for b in arr)
    for b in sizes:
        if b < 1 or n_data % b:
            raise InputError(f"batch_size: every entry must be an integer >= 1 dividing "
                             f"n_data={n_data}, got {b}")
    if len(set(sizes)) != len(sizes):
        raise InputError(f"batch_size: duplicate value in {list(sizes)}")
    return sizes


def _resolve_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device must be 'cpu' or 'cuda[:k]', got {device!r}") from exc
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device must be 'cpu' or 'cuda[:k]', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return dev


def _resolve_dtype(dtype) -> str:
    """The working precision's name, 'float32' or 'float64'."""
    table = {torch.float32: "float32", torch.float64: "float64", "float32": "float32",
             "float64": "float64", np.float32: "float32", np.float64: "float64"}
    try:
        return table[dtype]
    except (KeyError, TypeError):
        raise InputError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}") from None


def _resolve_snapshots(snapshots, epochs: int) -> np.ndarray:
    if isinstance(snapshots, (int, np.integer)) and not isinstance(snapshots, bool):
        check_int("snapshots", snapshots, minimum=2)
        return snapshot_epochs(epochs, int(snapshots))
    try:
        arr = np.asarray(snapshots)
    except (TypeError, ValueError):
        arr = np.asarray([np.nan])
    if arr.ndim != 1 or arr.size < 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"snapshots must be an int >= 2 or a sequence of epoch counts, "
                         f"got {snapshots!r}")
    arr = arr.astype(np.int64)
    if arr[0] != 0 or np.any(np.diff(arr) <= 0) or arr[-1] > epochs:
        raise InputError(f"snapshots must increase strictly from 0 to at most epochs={epochs}, "
                         f"got {snapshots!r}")
    return arr


# ------------------------------------------------------------------------------------------------
# memory (issue 13: refuse before allocating)
# ------------------------------------------------------------------------------------------------


def torch_model_bytes(config: TeacherStudentConfig, dtype: str) -> int:
    """Bytes one model occupies in the torch backend while it trains, on its device: the layer-1
    features and targets, ``n_data (n1 + n3)`` values (twice with ``data_order='shuffled'``,
    which gathers a permuted copy); the activations of the initial full-data evaluation, done
    ``EVAL_ROWS`` rows at a time, ``min(n_data, EVAL_ROWS) (3 n2 + 2 n3)``; about ten ``n2 x n1``
    matrices (W2, its gradient, their accumulators and temporaries). The paper's set-up only:
    the general path (:mod:`dysonsgd.train.general`) has no torch backend."""
    if not config.is_paper_case:
        raise InputError("backend: the general path (trained_layers other than (2,), other "
                         "depths or inits) trains on the CPU only, backend 'numba'")
    _, n1, n2, n3 = config.widths
    nd = config.n_data
    features = nd * (n1 + n3) * (2 if config.data_order == "shuffled" else 1)
    return int(_itemsize(dtype) * (features + min(nd, EVAL_ROWS) * (3 * n2 + 2 * n3)
                                   + 10 * n2 * n1))


def host_memory_bytes(config: TeacherStudentConfig, n_models: int, n_groups: int,
                      n_snapshots: int, dtype: str, *, backend: str = "numba",
                      device: str = "cpu", threads: int = 1) -> int:
    """Bytes of host memory :func:`train_ensemble` holds for ``n_models`` models of ``n_groups``
    replicas: per model the snapshots of W2 and of its gradient and three more ``n2 x n1``
    matrices, ``(2 n_snap + 3) n2 n1`` values, and the losses ``n_snap`` float64; per group the
    float64 draws W1, W2*, W3, Z, the inputs ``x`` and targets ``y``, and the layer-1 features
    ``n_data n1``; and the working set. numba: the features, targets and snapshot scratch
    ``n_data (n1 + n3) + 2 n_snap n2 n1`` of the models of one wave (at most 8 SIMD blocks per
    thread). torch on CPU: :func:`torch_model_bytes` for the models of one chunk (at most
    ``TORCH_CHUNK_BUDGET`` bytes of features) and the float64 layer-1 pre-activations of
    ``FEATURE_SLICE`` models, ``n_data (n0 + 2 n1)`` each (on CUDA these are device memory).
    A config of the general path: :func:`~dysonsgd.train.general.general_memory_bytes`."""
    item = _itemsize(dtype)
    if not config.is_paper_case:
        return general_memory_bytes(config, n_models, n_groups, n_snapshots, dtype,
                                    threads=threads)
    n0, n1, n2, n3 = config.widths
    nd = config.n_data
    outputs = n_models * ((2 * n_snapshots + 3) * n2 * n1 * item + n_snapshots * 8)
    draws = n_groups * (8 * (n1 * n0 + 2 * n2 * n1 + n3 * n2 + nd * (n0 + n3)) + nd * n1 * item)
    if backend in ("torch", "triton"):
        working = 0 if str(device).startswith("cuda") else _torch_chunk(config, n_models, dtype)[1]
    else:
        wave = min(n_models, 8 * lanes_for(np.float32 if item == 4 else np.float64) * threads)
        working = wave * (nd * (n1 + n3) + 2 * n_snapshots * n2 * n1) * item
    return int(outputs + draws + working)


def _torch_chunk(config: TeacherStudentConfig, n_models: int, dtype: str) -> tuple[int, int]:
    """The torch backend's models at a time (``TORCH_CHUNK_BUDGET`` bytes of features) and the
    bytes they hold on its device: :func:`torch_model_bytes` each, plus the float64 layer-1
    pre-activations of ``FEATURE_SLICE`` models, ``n_data (n0 + 2 n1)`` each."""
    n0, n1, _, n3 = config.widths
    nd = config.n_data
    chunk = min(n_models, max(1, int(TORCH_CHUNK_BUDGET // (nd * (n1 + n3) * _itemsize(dtype)))))
    return chunk, int(chunk * torch_model_bytes(config, dtype) + FEATURE_SLICE * nd * (n0 + 2 * n1)
                      * 8)


def _itemsize(dtype: str) -> int:
    if dtype not in ("float32", "float64"):
        raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return 4 if dtype == "float32" else 8


def available_memory_bytes() -> int | None:
    """Host memory available to this process: ``MemAvailable`` (free plus reclaimable cache),
    capped by a cgroup v2 limit (``memory.max - memory.current``); None where unknown."""
    values = []
    try:
        with open("/proc/meminfo") as f:
            values += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvail")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            values.append(int(f.read()) - int(g.read()))  # 'max' (no limit): ValueError
    except (OSError, ValueError):
        pass
    return min(values) if values else None


def _threads(backend: str) -> int:
    if backend == "numba":
        import numba  # what run_numba imports next anyway

        return int(numba.get_num_threads())
    return int(torch.get_num_threads())


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------


def train_ensemble(
    config: TeacherStudentConfig | None = None,
    temperature=2.0**-5,
    sigma_w=0.125,
    *,
    n_seeds: int = 1,
    epochs: int = 1,
    snapshots=21,
    seed: int = 0,
    device="cpu",
    dtype=torch.float32,
    progress: bool = True,
    teacher_weights: Sequence[np.ndarray] | None = None,
    inputs: np.ndarray | None = None,
    student_init: np.ndarray | None = None,
    backend: str = "auto",
    replica_offset: int = 0,
    batch_size=None,
    data: tuple[np.ndarray, np.ndarray] | None = None,
) -> EnsembleResult | BatchResults:
    """Train the grid ``temperature x sigma_w x seed`` of teacher-student models in one run.

    Parameters
    ----------
    config : TeacherStudentConfig, optional
        Architecture and protocol (default: the paper's).
    temperature : float or sequence of float
        ``T = lr / |B|`` (2.30), each > 0; ``lr = T * batch_size``.
    sigma_w : float or sequence of float
        ``sigma_W`` > 0 of ``W2(0) ~ N(0, sigma_W^2 / n1)`` (2.11).
    n_seeds : int
        Replicas (teachers) per cell.
    epochs : int
        Epochs of ``n_data / batch_size`` steps each (the paper's ``t`` counts epochs).
    snapshots : int or sequence of int
        Number of evenly spaced snapshots including the initial state (21, see
        :func:`snapshot_epochs`), or explicit epoch counts starting at 0 (e.g.
        :func:`release_snapshot_epochs`).
    seed : int
        Base entropy of the ``SeedSequence`` of every replica (see the module docstring).
    device : str or torch.device
        ``'cpu'`` or ``'cuda[:k]'``.
    dtype : torch.float32 or torch.float64
        Arithmetic precision (the release uses float64).
    progress : bool
        Show a tqdm bar (models, model-steps/s, ETA).
    teacher_weights : (W1, W2*, W3), optional
        Teacher matrices, each shaped ``(n_l, n_{l-1})``, ``(n_seeds, ...)`` or per model
        ``(nT * nS * n_seeds, ...)`` / ``(nT, nS, n_seeds, ...)``; replaces the drawn teacher.
    inputs : array, optional
        Training inputs ``x`` with the same leading-axis options and trailing ``(n_data, n0)``.
    student_init : array, optional
        ``W2(0)`` itself (trailing ``(n2, n1)``), same leading-axis options; ``sigma_w`` then
        only labels the cells.
    backend : {'auto', 'numba', 'torch', 'triton'}
        ``'auto'``: the fused numba kernel on CPU, torch on CUDA. ``'triton'``: the fused Triton
        kernel on CUDA (docs/gpu.md); opt-in until it has been measured on a GPU.
    replica_offset : int
        Spawn keys are ``(replica_offset + r,)``: runs split over seeds reproduce one big run.
    batch_size : int or sequence of int, optional
        ``|B|``, each >= 1 and dividing ``n_data`` (default ``config.batch_size``). A sequence
        is a grid axis: the grid is trained once per ``|B|`` at the same temperatures (so
        ``lr = T |B|`` varies) and seeds, and the result is a :class:`BatchResults`.
    data : (x, y), optional
        Fixed training data for every model instead of the teacher's: ``x`` (n_data, n0) and
        ``y`` (n_data, n_L), finite (see "Fixed data" in the module docstring). Default: the
        data of ``config.task`` (:func:`~dysonsgd.model.tasks.task_data`; none for the
        teacher). Not together with ``inputs``.

    Returns
    -------
    EnsembleResult
        For a single batch size (``None`` or an int).
    BatchResults
        ``|B| -> EnsembleResult`` for a sequence of batch sizes, in its order.
    """
    t_start = time.perf_counter()
    config = TeacherStudentConfig() if config is None else config
    if not isinstance(config, TeacherStudentConfig):
        raise InputError(f"config must be a TeacherStudentConfig, got {type(config).__name__}")
    if batch_size is not None and np.ndim(batch_size) > 0:
        sizes = _batch_sizes(batch_size, config.n_data)
        kwargs = dict(n_seeds=n_seeds, epochs=epochs, snapshots=snapshots, seed=seed,
                      device=device, dtype=dtype, progress=progress,
                      teacher_weights=teacher_weights, inputs=inputs, student_init=student_init,
                      backend=backend, replica_offset=replica_offset, data=data)
        return BatchResults([(b, train_ensemble(config, temperature, sigma_w, batch_size=b,
                                                **kwargs)) for b in sizes])
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise InputError(f"batch_size must be an integer >= 1 or a non-empty 1-d sequence "
                             f"of them, got {batch_size!r}")
        (b,) = _batch_sizes([batch_size], config.n_data)
        config = dataclasses.replace(config, batch_size=b)
    temps = _grid_values("temperature", temperature)
    sigmas = _grid_values("sigma_w", sigma_w)
    n_seeds = check_int("n_seeds", n_seeds, minimum=1)
    epochs = check_int("epochs", epochs, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    replica_offset = check_int("replica_offset", replica_offset, minimum=0)
    snaps = _resolve_snapshots(snapshots, epochs)
    if data is None:
        data = task_data(config)
    if data is not None:
        if inputs is not None:
            raise InputError("inputs: not together with fixed data (data=, or a config task "
                             "other than 'teacher'), which gives the inputs of every model")
        data = check_data(data, config.n_data, config.widths[0], config.widths[-1])
    dev = _resolve_device(device)
    dtype = _resolve_dtype(dtype)
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "numba" if dev.type == "cpu" else "torch"
    if backend == "numba" and dev.type != "cpu":
        raise InputError("backend 'numba' runs on device 'cpu' only")
    if backend == "triton" and dev.type != "cuda":
        raise InputError("backend 'triton' runs on device 'cuda' only")
    if not config.is_paper_case and backend != "numba":
        raise InputError(f"backend: the general path (trained_layers {config.trained_layers}, "
                         f"{config.depth} hidden layers) trains on device 'cpu' with backend "
                         f"'numba' only, got backend {backend!r} on {str(dev)!r}")
    grid = (temps.size, sigmas.size, n_seeds)
    need = host_memory_bytes(config, math.prod(grid), n_seeds, len(snaps), dtype,
                             backend=backend, device=str(dev), threads=_threads(backend))
    available = available_memory_bytes()
    if available is not None and need > available:
        raise InputError(f"n_seeds = {n_seeds}: {math.prod(grid)} models ({grid[0]} temperatures x "
                         f"{grid[1]} sigma_w x {n_seeds} seeds) need {need / 2**30:.3g} GiB of "
                         f"host memory, {available / 2**30:.3g} GiB are available: train fewer "
                         "at a time (split the seeds with replica_offset, or the grid)")
    if not config.is_paper_case:
        return train_general(config, temps, sigmas, n_seeds=n_seeds, epochs=epochs, snaps=snaps,
                             seed=seed, replica_offset=replica_offset, dtype=dtype,
                             progress=progress, orders=_shuffled_orders(config, seed,
                                                                        replica_offset, n_seeds),
                             teacher_weights=teacher_weights, inputs=inputs,
                             student_init=student_init, t_start=t_start, data=data)
    if dev.type == "cuda" and backend == "torch":
        chunk, need = _torch_chunk(config, math.prod(grid), dtype)
        free = torch.cuda.mem_get_info(dev)[0]
        if need > free:
            raise InputError(f"device: {dev} has {free / 2**30:.3g} GiB free; the torch backend "
                             f"trains {chunk} models at a time here, which need "
                             f"{need / 2**30:.3g} GiB: fewer models, or device='cpu'")
    _, n1, n2, _ = config.widths
    w1, w2t, w3, x, group, w2_init = _models(config, sigmas, grid, seed, replica_offset,
                                             teacher_weights, inputs, student_init)
    if data is None:
        y = network.outputs(x, w1, w2t, w3, config.activation, engine="torch")
    else:  # the same fixed data for every group
        x = np.broadcast_to(data[0], x.shape).copy()
        y = np.broadcast_to(data[1], (x.shape[0], *data[1].shape)).copy()
    plan = TrainPlan(
        config=config, x=x, w1=w1, w3=w3, y=y,
        group=group, w2_init=w2_init, temperature=np.repeat(temps, sigmas.size * n_seeds),
        epochs=epochs, snapshots=snaps, orders=_shuffled_orders(config, seed, replica_offset,
                                                                n_seeds),
        device=dev, dtype=dtype, progress=progress)
    t_setup = time.perf_counter() - t_start
    if backend == "numba":
        # imported on use: numba and llvmlite cost ~0.2 s that torch-only (CUDA) runs never need
        from dysonsgd.train._numba.engine import run_numba

        out = run_numba(plan)
    elif backend == "triton":
        from dysonsgd.train._triton import run_triton  # checks its own device memory

        out = run_triton(plan)
    else:
        out = train_torch(plan)
    t_total = time.perf_counter() - t_start

    n_snap = len(snaps)
    res = EnsembleResult(
        config=config,
        temperature=temps,
        sigma_w=sigmas,
        snapshot_epochs=snaps,
        w2=out.w2.reshape(*grid, n_snap, n2, n1),
        grad=out.grad.reshape(*grid, n_snap, n2, n1),
        loss=out.loss.reshape(*grid, n_snap),
        diverged=(out.div_epoch >= 0).reshape(grid),
        diverged_epoch=out.div_epoch.reshape(grid),
        diverged_step=out.div_step.reshape(grid),
        teacher_w1=w1,
        teacher_w2=w2t,
        teacher_w3=w3,
        group=group.reshape(grid),
        seed=seed,
        replica_offset=replica_offset,
        dtype=dtype,
        device=str(dev),
        backend=backend,
        wall_time=t_total,
        timings={"setup_s": t_setup, **out.timings, "total_s": t_total},
    )
    _apply_divergence(res, out.end_grad.reshape(*grid, n2, n1))
    return res


def _apply_divergence(res: EnsembleResult, end_grad: np.ndarray) -> None:
    """After a divergence in epoch e, snapshots at epoch counts >= e + 1 repeat the frozen W2
    (the kernels already froze it), take the diverging batch's gradient and a NaN loss."""
    idx = np.nonzero(res.diverged)
    for t, s, r in zip(*idx, strict=True):
        later = res.snapshot_epochs >= res.diverged_epoch[t, s, r] + 1
        later[0] = False
        res.grad[t, s, r, later] = end_grad[t, s, r]
        res.loss[t, s, r, later] = np.nan


def _models(config: TeacherStudentConfig, sigmas: np.ndarray, grid: tuple[int, int, int],
            seed: int, replica_offset: int, teacher_weights, inputs, student_init):
    """Teachers, data and ``W2(0)``, float64, per replica (group) or per model.

    Returns
    -------
    w1, w2t, w3, x : (G, ...) teacher matrices and inputs per group
    group : (M,) int64, the group of each model
    w2_init : InitRows, ``W2(0)`` of each model
    """
    n0, n1, n2, n3 = config.widths
    n_seeds = grid[2]
    n_models = int(np.prod(grid))
    w1 = np.empty((n_seeds, n1, n0))
    w2t = np.empty((n_seeds, n2, n1))
    w3 = np.empty((n_seeds, n3, n2))
    x = np.empty((n_seeds, config.n_data, n0))
    z = np.empty((n_seeds, n2, n1))
    need_draws = teacher_weights is None or inputs is None or student_init is None
    if need_draws:
        for r in range(n_seeds):
            d = replica_draws(config, seed, replica_offset + r)
            w1[r], w2t[r], w3[r], x[r], z[r] = d["w1"], d["w2_teacher"], d["w3"], d["x"], d["z"]
    per_model = False
    if teacher_weights is not None:
        if len(teacher_weights) != 3:
            raise InputError("teacher_weights must be a sequence (W1, W2*, W3)")
        given = [_per_model(f"teacher_weights[{k}]", a, tail, grid) for k, (a, tail) in
                 enumerate(zip(teacher_weights, [(n1, n0), (n2, n1), (n3, n2)], strict=True))]
        per_model = any(p for _, p in given)
        w1, w2t, w3 = (a for a, _ in given)
    if inputs is not None:
        x, pm = _per_model("inputs", inputs, (config.n_data, n0), grid)
        per_model = per_model or pm
    rep = np.tile(np.arange(n_seeds), n_models // n_seeds)
    if per_model:  # groups become models: expand whatever is still per replica
        w1, w2t, w3, x = (a if a.shape[0] == n_models else a[rep] for a in (w1, w2t, w3, x))
        group = np.arange(n_models)
    else:
        group = rep
    if student_init is not None:
        base, pm = _per_model("student_init", student_init, (n2, n1), grid)
        w2_init = InitRows(base, np.arange(n_models) if pm else rep, np.ones(n_models))
    else:
        scale = np.repeat(np.tile(sigmas, grid[0]), n_seeds) / math.sqrt(n1)
        w2_init = InitRows(z, rep, scale)
    return w1, w2t, w3, x, group, w2_init


def _shuffled_orders(config: TeacherStudentConfig, seed: int, replica_offset: int,
                     n_seeds: int) -> Callable[[int, np.ndarray], np.ndarray] | None:
    """The plan's ``orders`` (None for ``data_order='fixed'``): per epoch and group, the data
    order :func:`~dysonsgd.model.draws.epoch_permutation` of the group's replica."""
    if config.data_order == "fixed":
        return None

    def orders(epoch: int, groups: np.ndarray) -> np.ndarray:
        """(len(groups), n_data) data order of ``epoch`` for the given groups."""
        uniq, inv = np.unique(groups, return_inverse=True)
        perms = np.stack([epoch_order(config.data_order, config.n_data, seed,
                                      replica_offset + int(u) % n_seeds, epoch)
                          for u in uniq])
        return perms[inv].astype(np.int64)

    return orders
