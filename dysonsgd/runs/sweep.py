"""Sweeps: a config's grid trained cell by cell into a resumable Zarr store.

A sweep trains every cell ``(i_T, i_S)`` of a :class:`~dysonsgd.runs.config.SweepConfig` (one
temperature, one ``sigma_W``, all seeds) with :func:`~dysonsgd.train.ensemble.train_ensemble` and
writes it into a sweep store (:mod:`dysonsgd.runs.store`), marking it complete only once
its data are on disk. Because a model's numbers depend only on ``(seed, its grid coordinates,
seed index)`` (see :mod:`dysonsgd.train.ensemble`), cells trained alone, in packs, in any
order, on any number of processes give the store the same content as one ``train_ensemble``
call over the whole grid (:func:`train_grid`), bit for bit (on one device and dtype).

Where the cells run:

- in this process (the default), pack after pack;
- on a ``dask.distributed`` cluster (:func:`dask_client`: an existing scheduler, or a
  ``LocalCluster``): each task trains one pack and writes its cells into the store itself; the
  client submits a bounded number of packs at a time and only receives small per-cell
  summaries, so its memory does not grow with the grid.

Packs: several cells trained in one ``train_ensemble`` call share its start-up and fill the SIMD
lanes (CPU) or the GPU; :func:`cells_per_pack` sizes them (by the models a device can hold, see
:func:`model_memory_bytes`). Writing is still per cell, so a killed sweep loses at most the packs
in flight.

A batch-size axis (``[grid] batch_size = [1, 4, 16]``) is swept as one ordinary store per |B|,
``NAME.b{B}.zarr`` beside ``NAME.zarr`` (``runs.config.batch_size_path``), that of
``SweepConfig.for_batch_size(B)``: the fingerprint and models of ``[training] batch_size = B``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dysonsgd._checks import InputError, check_int
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.layers import replica_layer_draws
from dysonsgd.runs import cluster
from dysonsgd.runs import store as _store
from dysonsgd.runs.config import SweepConfig, batch_size_path
from dysonsgd.runs.provenance import git_commit, package_versions, provenance
from dysonsgd.runs.store import store_lock
from dysonsgd.train import snapshot_epochs
from dysonsgd.train.ensemble import available_memory_bytes, host_memory_bytes, torch_model_bytes
from dysonsgd.train.plan import FEATURE_SLICE, TORCH_CHUNK_BUDGET

__all__ = [
    "Pack",
    "cells_per_pack",
    "model_memory_bytes",
    "pack_overhead_bytes",
    "plan_packs",
    "prepare_store",
    "run_pack",
    "run_sweep",
    "store_lock",
    "sweep_memory_bytes",
    "train_grid",
    "train_pack",
]

#: models per SIMD block-thread that amortise a train_ensemble call on CPU (measured: a
#: 10-model cell alone runs ~4x slower per model than 12 cells together)
CPU_MODELS_PER_THREAD_BLOCK = 8
#: share of the free device memory a CUDA pack may use
CUDA_MEMORY_FRACTION = 0.8


# ------------------------------------------------------------------------------------------------
# packing
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pack:
    """A block of grid cells trained together: temperatures ``rows`` x sigma_W ``cols``."""

    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @property
    def cells(self) -> list[tuple[int, int]]:
        return [(i, j) for i in self.rows for j in self.cols]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)


def plan_packs(pending: Sequence[tuple[int, int]], cells_per_pack: int) -> list[Pack]:
    """Group pending cells into rectangular packs of at most ``cells_per_pack`` cells.

    Rows (temperatures) with the same set of pending columns are grouped; a set of at least
    ``cells_per_pack`` columns is split into single-row packs, a smaller one takes as many
    whole rows as fit. Every pending cell lands in exactly one pack.

    Parameters
    ----------
    pending : sequence of (i_T, i_S)
    cells_per_pack : int >= 1
    """
    if isinstance(cells_per_pack, bool) or not isinstance(cells_per_pack, (int, np.integer)) \
            or cells_per_pack < 1:
        raise InputError(f"cells_per_pack must be an integer >= 1, got {cells_per_pack!r}")
    by_row: dict[int, list[int]] = {}
    for i, j in sorted(set(pending)):
        by_row.setdefault(int(i), []).append(int(j))
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, cols in by_row.items():
        groups.setdefault(tuple(cols), []).append(i)
    packs = []
    for cols, rows in groups.items():
        if len(cols) >= cells_per_pack:
            for i in rows:
                packs += [Pack((i,), cols[c:c + cells_per_pack])
                          for c in range(0, len(cols), cells_per_pack)]
        else:
            per = max(1, cells_per_pack // len(cols))
            packs += [Pack(tuple(rows[r:r + per]), cols) for r in range(0, len(rows), per)]
    return sorted(packs, key=lambda p: (p.rows[0], p.cols[0]))


def model_memory_bytes(model: TeacherStudentConfig, dtype: str = "float32",
                       snapshots: int = 21, device: str = "cuda") -> int:
    """Bytes one model occupies while :func:`train_ensemble` trains it on ``device``
    (``'cpu'`` or ``'cuda[:k]'``), recording ``snapshots``: on CUDA the torch backend's
    :func:`~dysonsgd.train.ensemble.torch_model_bytes`, on CPU the host memory of one model
    alone, :func:`~dysonsgd.train.ensemble.host_memory_bytes`."""
    if str(device).startswith("cuda"):
        return torch_model_bytes(model, dtype)
    return host_memory_bytes(model, 1, 0, snapshots, dtype)


def sweep_memory_bytes(config: SweepConfig, pack_cells: int, device: str = "cpu", *,
                       in_process: bool = True) -> int:
    """Host bytes a sweep of ``config`` holds: the teacher draws of every seed (and their copy)
    while it creates the store; in-process, two packs of ``pack_cells`` cells (one training,
    the one before it being written) by :func:`~dysonsgd.train.ensemble.host_memory_bytes` (on
    dask the workers hold the packs, and each checks its own)."""
    model = config.model
    draws = 2 * config.seeds * 8 * sum(math.prod(model.layer_shape(k))
                                       for k in range(1, model.n_layers + 1))
    if not in_process:
        return int(draws)
    pack = host_memory_bytes(config.model, pack_cells * config.seeds, config.seeds,
                             len(snapshot_epochs(config.epochs, config.snapshots)), config.dtype,
                             backend="numba" if device == "cpu" else "torch", device=device)
    return int(max(draws, 2 * pack))


def pack_overhead_bytes(model: TeacherStudentConfig, device: str = "cuda") -> int:
    """Bytes a ``train_ensemble`` call needs besides its models': the float64 layer-1
    pre-activations of 64 models at a time, ``64 n_data (n0 + 2 n1)`` values, plus 256 MiB
    for the CUDA context and allocator slack (CPU: the numba wave scratch, ~100 MB)."""
    n0, n1 = model.widths[:2]
    return int(FEATURE_SLICE * model.n_data * (n0 + 2 * n1) * 8 + 256 * 2**20)


def cells_per_pack(config: SweepConfig, device: str = "cpu", *, free_bytes: int | None = None,
                   threads: int | None = None, slots: int = 1,
                   n_pending: int | None = None) -> int:
    """How many cells to train in one ``train_ensemble`` call.

    CUDA: as many models as fit in ``CUDA_MEMORY_FRACTION`` of the free device memory
    (:func:`model_memory_bytes`, :func:`pack_overhead_bytes`), but no more than the torch
    backend trains at once (``TORCH_CHUNK_BUDGET`` of features), since a bigger pack only runs
    in sequential chunks and loses more work to an interruption. CPU: enough models to fill
    ``CPU_MODELS_PER_THREAD_BLOCK`` SIMD blocks per thread. With ``slots`` parallel workers, at
    most ``n_pending / (2 slots)`` cells, so that every worker gets packs.

    ``free_bytes``: free device memory (CUDA; default ``torch.cuda.mem_get_info``);
    ``threads``: of one worker (CPU; default numba's count); ``slots``: workers training packs
    at the same time; ``n_pending``: cells left to train (default the whole grid).
    """
    seeds = config.seeds
    n_pending = len(config.cells()) if n_pending is None else max(1, n_pending)
    if str(device).startswith("cuda"):
        free_bytes = _cuda_free_bytes(device) if free_bytes is None else free_bytes
        per_model = model_memory_bytes(config.model, config.dtype, config.snapshots, device)
        room = CUDA_MEMORY_FRACTION * free_bytes - pack_overhead_bytes(config.model, device)
        models = int(room // per_model)
        nd, n1, n3 = config.model.n_data, config.model.widths[1], config.model.widths[-1]
        chunk = int(TORCH_CHUNK_BUDGET // (nd * (n1 + n3) * np.dtype(config.dtype).itemsize))
        models = min(models, chunk)
        if models < seeds:
            raise InputError(
                f"device: {device} has {free_bytes / 2**30:.2f} GiB free, too little for one "
                f"cell of {seeds} models ({per_model * seeds / 2**30:.2f} GiB)")
    else:
        if threads is None:
            import numba

            threads = numba.get_num_threads()
        from dysonsgd.train.plan import lanes_for

        lanes = lanes_for(np.float32 if config.dtype == "float32" else np.float64)
        models = CPU_MODELS_PER_THREAD_BLOCK * lanes * max(1, threads)
    cells = max(1, models // seeds)
    if slots > 1:
        cells = min(cells, max(1, math.ceil(n_pending / (2 * slots))))
    return int(min(cells, n_pending))


# ------------------------------------------------------------------------------------------------
# the store
# ------------------------------------------------------------------------------------------------


def _mismatch(store: Path, attrs: dict, config: SweepConfig) -> InputError:
    theirs = attrs.get("name", "?")
    return InputError(
        f"store: {str(store)!r} was written by a different config ({theirs!r}, fingerprint "
        f"{attrs.get('fingerprint')}; this config {config.name!r} has {config.fingerprint()}): "
        "refusing to mix them. Start a new store with another --out, or delete this one "
        f"(rm -r {store}) to recompute it")


def _open_or_create(config: SweepConfig, store: Path, device: str = "cpu") -> dict:
    """The attributes of the store of ``config`` at ``store``, created if missing."""
    if store.exists():
        if not _store.is_sweep_store(store):
            raise InputError(f"store: {str(store)!r} exists and is not a sweep store; give "
                             "another --out")
        attrs = _store.store_attrs(store)
        if attrs.get("fingerprint") != config.fingerprint():
            raise _mismatch(store, attrs, config)
        return attrs
    if not store.parent.is_dir():
        raise InputError(f"store: directory {str(store.parent)!r} does not exist")
    # the teacher of each seed (the paper's widths: those of model.draws.replica_draws)
    draws = [replica_layer_draws(config.model, config.seed, r)["teacher"]
             for r in range(config.seeds)]
    _store.create_sweep_store(
        store, temperature=config.temperature, sigma_w=config.sigma_w,
        n_seeds=config.seeds, snapshot_epochs=snapshot_epochs(config.epochs, config.snapshots),
        widths=config.model.widths, dtype=config.dtype, batch_size=config.model.batch_size,
        teacher=[np.stack(w) for w in zip(*draws, strict=True)],
        attrs=provenance(config, device), layers=config.model.recorded_layers)
    attrs = _store.store_attrs(store)
    if attrs.get("fingerprint") != config.fingerprint():  # created by a concurrent run
        raise _mismatch(store, attrs, config)
    return attrs


def prepare_store(config: SweepConfig, store: str | Path, device: str = "cpu",
                  scheduler: str = "in-process") -> tuple[int, np.ndarray, list[dict]]:
    """Create the store (or check an existing one), drop its damaged cells and register this
    session. Call it holding :func:`store_lock`.

    Every complete cell is checked against its integrity record
    (:func:`dysonsgd.runs.store.verify_sweep`); a damaged one loses its marker, so that this
    sweep recomputes it.

    Returns
    -------
    session : int
        Index of this run in the store's ``sessions`` attribute.
    done : (nT, nS) bool
        Cells already complete (and intact).
    damaged : list of dict
        The damaged arrays found (``cell``, ``temperature``, ``sigma_w``, ``array``,
        ``reason``); their cells are now not done.

    Raises
    ------
    InputError
        If ``store`` exists but is not a sweep store, was written by a config with another
        fingerprint, or an array written at its creation is damaged.
    """
    store = Path(store)
    attrs = _open_or_create(config, store, device)
    _store.remove_partial_files(store)
    report = _store.verify_sweep(store)
    if any(d["cell"] is None for d in report["damaged"]):
        raise InputError(report["message"])
    _store.forget_cells(store, sorted({tuple(d["cell"]) for d in report["damaged"]}))
    sessions = json.loads(attrs.get("sessions", "[]"))
    sessions.append({"started_at": time.time(), "device": str(device), "scheduler": scheduler,
                     "host": socket.gethostname(), "pid": os.getpid(),
                     "git_commit": git_commit() or "", "versions": package_versions()})
    _store.update_store_attrs(store, sessions=json.dumps(sessions))
    return len(sessions) - 1, _store.completed_cells(store), report["damaged"]


# ------------------------------------------------------------------------------------------------
# training a pack (the unit of work, also a dask task)
# ------------------------------------------------------------------------------------------------


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    import numba
    import torch

    threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    torch.set_num_threads(threads)


def train_grid(config: SweepConfig, rows: Sequence[int] | None = None,
               cols: Sequence[int] | None = None, *, device: str = "cpu",
               progress: bool = False):
    """Train cells ``rows x cols`` of ``config`` (default: its whole grid) in one
    :func:`~dysonsgd.train.ensemble.train_ensemble` call; returns the EnsembleResult (with a
    batch-size axis: a :class:`~dysonsgd.train.result.BatchResults`, one run per ``|B|``).

    A model's numbers depend only on the config and its grid coordinates, so any block of cells
    trains bitwise as it does within the whole grid (on one device and dtype).
    """
    from dysonsgd.train import train_ensemble

    rows = range(len(config.temperature)) if rows is None else rows
    cols = range(len(config.sigma_w)) if cols is None else cols
    return train_ensemble(config.model, temperature=[config.temperature[i] for i in rows],
                          sigma_w=[config.sigma_w[j] for j in cols], n_seeds=config.seeds,
                          epochs=config.epochs, snapshots=config.snapshots, seed=config.seed,
                          device=device, dtype=config.dtype, progress=progress,
                          batch_size=list(config.batch_size) or None)


def train_pack(config: SweepConfig, rows: Sequence[int], cols: Sequence[int],
               device: str = "cpu", session: int = 0, threads: int | None = None,
               slots_by_host: dict[str, int] | None = None) -> tuple[list, list[dict]]:
    """Train cells ``rows x cols`` of ``config`` in one ``train_ensemble`` call.

    Returns
    -------
    cells : list
        ``(i_T, i_S, arrays, meta)`` per cell, for :meth:`dysonsgd.runs.store.CellWriter.write`.
    summaries : list of dict
        Per cell: ``cell``, ``temperature``, ``sigma_w``, ``wall_time_s`` (the pack's time
        divided among its cells), ``model_steps``, ``diverged``, ``finished_at``, ``host``.
    """
    _set_threads(threads if threads is not None else cluster.worker_threads(slots_by_host))
    rows, cols = [int(i) for i in rows], [int(j) for j in cols]
    t0 = time.perf_counter()
    res = train_grid(config, rows, cols, device=device)
    per_cell = (time.perf_counter() - t0) / (len(rows) * len(cols))
    steps = config.seeds * config.epochs * config.model.steps_per_epoch
    host = socket.gethostname()
    finished = time.time()
    cells, out = [], []
    for a, i in enumerate(rows):
        for b, j in enumerate(cols):
            arrays = _store.cell_values(res, a, b)
            cells.append((i, j, arrays, {"cell_wall_time_s": per_cell,
                                         "cell_finished_at": finished, "cell_session": session}))
            out.append({"cell": (i, j), "temperature": config.temperature[i],
                        "sigma_w": config.sigma_w[j], "wall_time_s": per_cell,
                        "model_steps": steps, "diverged": int(res.diverged[a, b].sum()),
                        "finished_at": finished, "host": host})
    return cells, out


def run_pack(store: str | Path, config: SweepConfig, rows: Sequence[int], cols: Sequence[int],
             device: str = "cpu", session: int = 0, threads: int | None = None,
             slots_by_host: dict[str, int] | None = None, durable: bool = True) -> list[dict]:
    """Train cells ``rows x cols`` of ``config`` and write each into ``store``: the dask task.

    Parameters
    ----------
    store : path
        An existing sweep store of ``config`` (:func:`prepare_store`).
    rows, cols : sequences of int
        Temperature and sigma_W indices.
    device : str
    session : int
        Recorded per cell (``cell_session``).
    threads : int, optional
        numba/torch threads for this pack (default: as set, or from ``slots_by_host``).
    slots_by_host : dict, optional
        Worker slots per host (dask), to share each host's CPUs among its workers.
    durable : bool
        fsync each cell's data before its marker (see :class:`dysonsgd.runs.store.CellWriter`).

    Returns
    -------
    list of dict
        The cells' summaries (:func:`train_pack`), once they are written.
    """
    cells, out = train_pack(config, rows, cols, device, session, threads, slots_by_host)
    _store.CellWriter(store, durable=durable).write(cells)  # all data, fsync, then markers
    return out


# ------------------------------------------------------------------------------------------------
# the sweep
# ------------------------------------------------------------------------------------------------


def _cuda_free_bytes(device: str) -> int:
    import torch

    return int(torch.cuda.mem_get_info(torch.device(device))[0])


def run_sweep(config: SweepConfig, store: str | Path, *, device: str = "cpu", client=None,
              pack_cells: int | None = None, on_start: Callable[[dict], None] | None = None,
              on_cell: Callable[[dict], None] | None = None,
              threads: int | None = None, durable: bool = True) -> dict[str, Any]:
    """Train every cell of ``config`` not yet complete in ``store``.

    Parameters
    ----------
    config : SweepConfig
    store : path
        Sweep store directory (created if missing; must have been written by a config with the
        same fingerprint otherwise). With a batch-size axis, one store per ``|B|`` at
        ``batch_size_path(store, B)``, swept in turn (``on_start`` is called for each).
    device : str
        ``'cpu'`` or ``'cuda[:k]'`` (every worker's own GPU with a dask client).
    client : distributed.Client, optional
        Run packs as tasks on this cluster (workers must see ``store`` at the same path).
    pack_cells : int, optional
        Cells per ``train_ensemble`` call (default :func:`cells_per_pack`).
    on_start : callable, optional
        Called once with ``cells_total``, ``cells_skipped``, ``cells_pending``,
        ``model_steps_pending``, ``packs``, ``cells_per_pack``.
    on_cell : callable, optional
        Called with each cell's summary (see :func:`run_pack`) once it is written.
    threads : int, optional
        numba/torch threads per pack (in-process default: numba's; on dask: the host's CPUs
        shared among its worker slots).
    durable : bool
        fsync each cell's data before writing its marker (default). ``False`` still survives a
        killed process (zarr renames every chunk into place) but not a crash of the machine.

    Returns
    -------
    dict
        ``store``, ``fingerprint``, ``cells_total``, ``cells_skipped``, ``cells_computed``,
        ``model_steps`` (computed now), ``wall_time_s``, ``model_steps_per_s``, ``device``,
        ``scheduler``, ``cells_per_pack``, ``packs``, ``peak_rss_mb`` (this process). With a
        batch-size axis: ``batch_size``, ``store`` and ``fingerprint`` list each |B|'s, the
        counts and times are totals over them.
    """
    import torch

    t0 = time.perf_counter()
    if not isinstance(config, SweepConfig):
        raise InputError(f"config must be a SweepConfig, got {type(config).__name__}")
    if config.batch_size:  # one ordinary store per |B|
        subs = [run_sweep(config.for_batch_size(b), batch_size_path(store, b), device=device,
                          client=client, pack_cells=pack_cells, on_start=on_start,
                          on_cell=on_cell, threads=threads, durable=durable)
                for b in config.batch_size]
        out = {k: sum(s[k] for s in subs) for k in ("cells_total", "cells_skipped", "packs",
                                                    "cells_damaged", "cells_computed",
                                                    "model_steps")}
        wall = time.perf_counter() - t0
        return {**subs[-1], **out, "store": [s["store"] for s in subs], "wall_time_s": wall,
                "fingerprint": [s["fingerprint"] for s in subs], "batch_size": [*config.batch_size],
                "model_steps_per_s": out["model_steps"] / wall if wall > 0 else 0.0}
    device = str(device)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device must be 'cpu' or 'cuda[:k]', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device must be 'cpu' or 'cuda[:k]', got {device!r}")
    if dev.type == "cuda" and client is None and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    if pack_cells is not None:
        pack_cells = check_int("pack_cells", pack_cells, minimum=1)
    if threads is not None:
        threads = check_int("threads", threads, minimum=1)
    parent = Path(os.path.realpath(store)).parent
    if not parent.is_dir():
        raise InputError(f"store: directory {str(Path(store).parent)!r} does not exist")
    scheduler = "in-process" if client is None else str(client.scheduler.address)
    _check_memory(config, device, client is None, pack_cells, threads)
    with store_lock(store, create=lambda path: _open_or_create(config, path, device)) as store:
        session, done, damaged = prepare_store(config, store, device, scheduler)
        pending = [c for c in config.cells() if not done[c]]
        slots_by_host = cluster.slots_by_host(client) if client is not None else None
        slots = sum(slots_by_host.values()) if slots_by_host else 1
        if pack_cells is None and pending:
            free = None
            if dev.type == "cuda" and client is not None:
                free = min(client.run(_cuda_free_bytes, device).values())
            worker_threads = None
            if client is not None and slots_by_host:
                worker_threads = max(1, (os.cpu_count() or 1) // max(slots_by_host.values()))
            pack_cells = cells_per_pack(
                config, device, free_bytes=free, threads=threads or worker_threads,
                slots=slots, n_pending=len(pending))
        packs = plan_packs(pending, pack_cells or 1)
        steps_per_cell = config.seeds * config.epochs * config.model.steps_per_epoch
        start = {"cells_total": len(config.cells()), "cells_skipped": int(done.sum()),
                 "cells_pending": len(pending), "model_steps_pending": steps_per_cell
                 * len(pending), "packs": len(packs), "cells_per_pack": pack_cells,
                 "damaged": damaged}
        if on_start is not None:
            on_start(start)
        if client is None:
            computed = _run_in_process(store, config, packs, device, session, threads, on_cell,
                                       durable)
        else:
            computed = _run_on_cluster(client, store, config, packs, device, session, threads,
                                       slots_by_host, on_cell, durable, max_in_flight=2 * slots)
    wall = time.perf_counter() - t0
    steps = steps_per_cell * len(computed)
    import resource

    return {
        "store": str(store), "fingerprint": config.fingerprint(),
        "cells_total": start["cells_total"], "cells_skipped": start["cells_skipped"],
        "cells_damaged": len({tuple(d["cell"]) for d in damaged}),
        "cells_computed": len(computed), "model_steps": steps, "wall_time_s": wall,
        "model_steps_per_s": steps / wall if wall > 0 else 0.0, "device": device,
        "scheduler": scheduler, "cells_per_pack": pack_cells, "packs": len(packs),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _check_memory(config: SweepConfig, device: str, in_process: bool, pack_cells: int | None,
                  threads: int | None) -> None:
    """Refuse a sweep whose host memory (:func:`sweep_memory_bytes`) exceeds what is available,
    before the store is created."""
    pack = (pack_cells or cells_per_pack(config, device, threads=threads)) if in_process else 1
    need = sweep_memory_bytes(config, pack, device, in_process=in_process)
    available = available_memory_bytes()
    if available is not None and need > available:
        what = (f"two packs of {pack} cell(s) x {config.seeds} seeds" if in_process else
                "the teacher draws of the store")
        raise InputError(f"seeds = {config.seeds}: the sweep needs {need / 2**30:.3g} GiB of "
                         f"host memory ({what}), {available / 2**30:.3g} GiB are available: "
                         f"fewer [grid] seeds{', or a smaller --pack' if pack > 1 else ''}")


def _run_in_process(store: Path, config: SweepConfig, packs: list[Pack], device: str,
                    session: int, threads: int | None, on_cell, durable: bool) -> list[dict]:
    """Train pack after pack; each pack is written by a second thread while the next one
    trains (fsync waits overlap training; at most two packs are held in memory)."""
    from concurrent.futures import ThreadPoolExecutor

    writer = _store.CellWriter(store, durable=durable)
    computed: list[dict] = []

    def written(job) -> None:
        out = job.result()
        for summary in out:
            if on_cell is not None:
                on_cell(summary)
        computed.extend(out)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dysonsgd-writer") as pool:
        job = None
        for p in packs:
            cells, out = train_pack(config, p.rows, p.cols, device, session, threads)
            if job is not None:
                written(job)
            job = pool.submit(lambda c=cells, o=out: (writer.write(c), o)[1])
        if job is not None:
            written(job)
    return computed


def _run_on_cluster(client, store: Path, config: SweepConfig, packs: list[Pack], device: str,
                    session: int, threads: int | None, slots_by_host: dict[str, int],
                    on_cell, durable: bool, max_in_flight: int) -> list[dict]:
    """Submit packs as tasks, at most ``max_in_flight`` at a time; gather the summaries."""
    from distributed import as_completed

    queue = list(reversed(packs))

    def submit(p: Pack):
        return client.submit(run_pack, str(store), config, p.rows, p.cols, device, session,
                             threads, slots_by_host, durable, pure=False,
                             key=f"dysonsgd-pack-{session}-{p.rows[0]}-{p.cols[0]}-{len(p)}")

    first = [submit(queue.pop()) for _ in range(min(max_in_flight, len(queue)))]
    computed: list[dict] = []
    ac = as_completed(first)
    try:
        for fut in ac:
            summaries = fut.result()
            fut.release()
            for s in summaries:
                s["cell"] = tuple(s["cell"])
                if on_cell is not None:
                    on_cell(s)
            computed += summaries
            if queue:
                ac.add(submit(queue.pop()))
    except BaseException:
        client.cancel(list(ac.futures))
        raise
    return computed
