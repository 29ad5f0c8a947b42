"""Sweep stores: a Zarr directory written cell by cell by ``dysonsgd sweep``.

:func:`create_sweep_store` makes one, :class:`CellWriter` / :func:`write_cell` fill it and
:func:`load_sweep` reads its completed cells (as :func:`dysonsgd.runs.files.load_result`
does for any RUN argument that is a directory).

Sweep store layout
------------------
The variables and coordinates of :meth:`EnsembleResult.to_xarray` over the whole grid, chunked
one grid cell (one temperature x one sigma_W, all seeds) per chunk, so that each cell is written
independently (its chunk of each array, :class:`CellWriter`); the teacher matrices (one group
per seed) are written when the store is created, through xarray, which also reads the store.
Per cell, besides the training arrays: ``cell_wall_time_s``, ``cell_finished_at`` (Unix time),
``cell_session`` (index into the JSON list ``sessions`` of the store's attributes) and the
completion marker ``cell_complete``, written (and fsync'ed) only after the cell's data are on
disk. Zarr writes each chunk to a temporary file renamed into
place, so a process killed at any moment leaves every chunk either old or new: a cell whose
marker is not set is simply recomputed by the next run, and a reader never takes a half-written
cell as done.

A run of the general path (other trained matrices or depths, :mod:`dysonsgd.train.general`)
adds per cell ``w{l}`` and ``grad_w{l}`` (dims ``seed, snapshot, w{l}_row, w{l}_col``) for
every recorded matrix ``W_l`` but ``W2`` (:func:`layer_arrays`), and the teacher matrices
``teacher_w{l}`` for ``l >= 4``; the paper's store is as it always was. The arrays a cell holds
are the store's (:func:`cell_names`), and :func:`cell_values` takes them from a result.

Each cell also carries its integrity record ``cell_checksum`` (:mod:`dysonsgd.runs.integrity`),
written with its data, before the marker; the arrays written at creation have theirs in the
attribute ``static_checksums``. :func:`load_sweep` checks every cell it returns and refuses a
damaged one naming the cell and the remedy; :func:`verify_sweep` checks a whole store
(``dysonsgd sweep --verify STORE``); a sweep resumed on the store recomputes the damaged cells.
Stores written before the records existed are read as before (without the check).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from dysonsgd._checks import InputError, readable
from dysonsgd.runs import integrity
from dysonsgd.train.result import EnsembleResult, layer_dims

__all__ = [
    "CellWriter",
    "cell_names",
    "cell_values",
    "completed_cells",
    "create_sweep_store",
    "forget_cells",
    "is_sweep_store",
    "layer_arrays",
    "load_sweep",
    "open_sweep",
    "remove_partial_files",
    "store_attrs",
    "store_lock",
    "update_store_attrs",
    "verify_sweep",
    "what_is_kept",
    "write_cell",
]

# ------------------------------------------------------------------------------------------------
# sweep stores (Zarr, one chunk per grid cell)
# ------------------------------------------------------------------------------------------------

#: ``attrs["format"]`` of a sweep store
SWEEP_FORMAT = "dysonsgd-sweep/1"
GRID_DIMS = ("temperature", "sigma_w")
#: per-cell training arrays: name -> dims after (temperature, sigma_w)
CELL_ARRAYS = {
    "w2": ("seed", "snapshot", "row", "col"),
    "grad": ("seed", "snapshot", "row", "col"),
    "loss": ("seed", "snapshot"),
    "diverged": ("seed",),
    "diverged_epoch": ("seed",),
    "diverged_step": ("seed",),
    "group": ("seed",),
}
#: per-cell bookkeeping, written with the arrays
CELL_META = ("cell_wall_time_s", "cell_finished_at", "cell_session")
#: the completion marker, written last
MARKER = "cell_complete"
#: what a cell's integrity record covers, in the order of its entries (the paper's store; a
#: store of the general path: :func:`cell_names`)
CHECKED = (*CELL_ARRAYS, *CELL_META)
_LAYER_ARRAY = re.compile(r"(?:grad_)?w(\d+)")


def layer_arrays(layers) -> dict[str, tuple[str, ...]]:
    """The per-cell arrays of the recorded matrices ``layers`` other than ``W2``: name -> dims
    after (temperature, sigma_w)."""
    out: dict[str, tuple[str, ...]] = {}
    for k in sorted(int(k) for k in layers if int(k) != 2):
        out[f"w{k}"] = ("seed", "snapshot", *layer_dims(k))
        out[f"grad_w{k}"] = ("seed", "snapshot", *layer_dims(k))
    return out


def cell_names(group) -> tuple[str, ...]:
    """The names a cell's integrity record covers in the store ``group`` (a zarr group), in
    order: :data:`CELL_ARRAYS`, the other matrices' arrays, :data:`CELL_META`."""
    layers = {int(m[1]) for n in group.array_keys() if (m := _LAYER_ARRAY.fullmatch(n))}
    return (*CELL_ARRAYS, *layer_arrays(layers), *CELL_META)


def cell_values(result: EnsembleResult, i: int, j: int) -> dict[str, np.ndarray]:
    """Cell ``(i, j)`` of ``result`` as the arrays of :meth:`CellWriter.write` (seed first):
    every name of :data:`CELL_ARRAYS` and of the other recorded matrices."""
    out = {name: getattr(result, name)[i, j] for name in CELL_ARRAYS}
    for k in result.layer_w:
        out[f"w{k}"], out[f"grad_w{k}"] = result.layer_w[k][i, j], result.layer_grad[k][i, j]
    return out


def is_sweep_store(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding a Zarr group (a candidate sweep store)."""
    path = Path(path)
    return path.is_dir() and (path / "zarr.json").is_file()


def create_sweep_store(path: str | Path, *, temperature, sigma_w, n_seeds: int,
                       snapshot_epochs, widths, dtype: str, batch_size: int,
                       teacher: Sequence[np.ndarray], attrs: Mapping[str, object],
                       layers: Sequence[int] = ()) -> Path:
    """Create an empty sweep store at ``path`` atomically (built aside, then renamed).

    Parameters
    ----------
    temperature : (nT,) ; sigma_w : (nS,)
        The grid (``T = lr/|B|``, ``sigma_W``).
    n_seeds : int
    snapshot_epochs : (n_snap,) int
    widths : (n0, n1, n2, ..., n_L)
    dtype : {'float32', 'float64'}
        Of ``w2``, ``grad`` and the other matrices' arrays.
    batch_size : int
        For the ``learning_rate`` coordinate, ``lr = T |B|``.
    teacher : (W1, W2*, ..., W_L)
        The ``L`` teacher matrices, ``(n_seeds, n_l, n_{l-1})`` each.
    attrs : mapping
        Provenance (JSON-serialisable values); must include what
        :meth:`EnsembleResult.from_xarray` reads (``config``, ``seed``, ``replica_offset``,
        ``dtype``, ``device``, ``backend``).
    layers : sequence of int
        The recorded matrices besides ``W2`` (``TeacherStudentConfig.recorded_layers``): each
        gets its per-cell arrays ``w{l}``, ``grad_w{l}`` (:func:`layer_arrays`).

    Raises
    ------
    ValueError
        If ``path`` exists.
    """
    import dask.array as da
    import xarray as xr

    path = Path(path)
    if path.exists():
        raise InputError(f"store: {str(path)!r} already exists")
    temperature = np.asarray(temperature, dtype=np.float64)
    sigma_w = np.asarray(sigma_w, dtype=np.float64)
    snaps = np.asarray(snapshot_epochs, dtype=np.int64)
    n_t, n_s, n_snap = temperature.size, sigma_w.size, snaps.size
    widths = tuple(int(w) for w in widths)
    if len(teacher) != len(widths) - 1:
        raise InputError(f"teacher: {len(widths) - 1} matrices for widths {widths}, got "
                         f"{len(teacher)}")
    sizes = {"seed": n_seeds, "snapshot": n_snap, "row": widths[2], "col": widths[1]}
    extra = layer_arrays(layers)
    for k in sorted({int(k) for k in layers} - {2}):
        sizes.update(zip(layer_dims(k), (widths[k], widths[k - 1]), strict=True))
    kinds = {"w2": dtype, "grad": dtype, **dict.fromkeys(extra, dtype), "loss": "float64",
             "diverged": "bool", "diverged_epoch": "int64", "diverged_step": "int64",
             "group": "int64", "cell_wall_time_s": "float64", "cell_finished_at": "float64",
             "cell_session": "int32", MARKER: "int8", integrity.CHECKSUM: "uint32"}
    cell = {**CELL_ARRAYS, **extra}
    data = {}
    encoding = {}
    sizes[integrity.CHECKSUM_DIM] = len(CHECKED) + len(extra)
    for name, kind in kinds.items():
        tail = cell.get(name, (integrity.CHECKSUM_DIM,) if name == integrity.CHECKSUM else ())
        shape = (n_t, n_s, *(sizes[d] for d in tail))
        chunks = (1, 1, *(sizes[d] for d in tail))
        data[name] = ((*GRID_DIMS, *tail), da.zeros(shape, chunks=chunks, dtype=kind))
        encoding[name] = {"chunks": chunks, "_FillValue": None}
    data["teacher_w1"] = (("group", "hidden1", "input"), np.asarray(teacher[0]))
    data["teacher_w2"] = (("group", "row", "col"), np.asarray(teacher[1]))
    if len(teacher) >= 3:
        data["teacher_w3"] = (("group", "output", "row"), np.asarray(teacher[2]))
    for k, w in enumerate(teacher[3:], start=4):
        data[f"teacher_w{k}"] = (("group", *layer_dims(k)), np.asarray(w))
    coords = {
        "temperature": temperature,
        "sigma_w": sigma_w,
        "seed": np.arange(n_seeds),
        "snapshot": np.arange(n_snap),
        "epoch": ("snapshot", snaps),
        "learning_rate": ("temperature", temperature * batch_size),
        "inv_sigma_w": ("sigma_w", 1.0 / sigma_w),
        "spawn_key": ("seed", int(attrs.get("replica_offset", 0)) + np.arange(n_seeds)),
    }
    ds = xr.Dataset(data, coords=coords, attrs={"format": SWEEP_FORMAT, **attrs})
    ds[MARKER].attrs["long_name"] = "1 once every array of the cell is on disk"
    ds["loss"].attrs["long_name"] = "epoch-mean training loss (2.6)"
    ds["grad"].attrs["long_name"] = "epoch-mean minibatch gradient of W2 (2.28)"
    ds[integrity.CHECKSUM].attrs.update(algorithm=integrity.ALGORITHM,
                                        arrays=[*CELL_ARRAYS, *extra, *CELL_META])
    _remove_stale_builds(path)
    tmp = path.with_name(f".{path.name}.init-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    ds.to_zarr(tmp, mode="w-", compute=False, consolidated=False, encoding=encoding)
    _record_static(tmp)
    _fsync_tree(tmp)
    try:
        os.rename(tmp, path)  # atomic; fails if another process created the store meanwhile
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not is_sweep_store(path):
            raise
    _fsync_dir(path.parent)
    return path


def _record_static(path: Path) -> None:
    """Write the checksums of the arrays written at creation (read back from the built store)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    per_cell = {*cell_names(group), MARKER, integrity.CHECKSUM}
    names = sorted(n for n in group.array_keys() if n not in per_cell)
    group.attrs[integrity.STATIC_ATTR] = json.dumps(integrity.static_record(group, names))


class CellWriter:
    """Writes grid cells into an existing sweep store: data, fsync, then completion markers.

    The arrays are the Zarr arrays xarray created (:func:`create_sweep_store`); a cell is one
    chunk of each, assigned directly (an xarray region write per cell costs ~50 ms of
    bookkeeping). Several cells written in one :meth:`write` share the fsync round.
    """

    def __init__(self, path: str | Path, durable: bool = True) -> None:
        import zarr

        self.path = Path(path)
        self.durable = durable
        group = zarr.open_group(str(self.path), mode="r+")
        #: what a cell holds and its integrity record covers (:func:`cell_names`)
        self.names = cell_names(group)
        self.arrays = {name: group[name] for name in (*self.names, MARKER)}
        #: the integrity record (absent in stores written before it existed)
        self.record = group[integrity.CHECKSUM] if integrity.CHECKSUM in group else None

    def write(self, cells) -> None:
        """Write ``cells``, an iterable of ``(i_t, i_s, arrays, meta)``.

        ``arrays`` maps every array name of the store's cells (:data:`CELL_ARRAYS` and the
        other matrices', :func:`cell_values`) to the cell's values (seed first); ``meta`` every
        name of :data:`CELL_META` to a scalar. Every cell's data and integrity record are
        written and fsync'ed before any of their markers.
        """
        cells = list(cells)
        wanted = [n for n in self.names if n not in CELL_META]
        for i_t, i_s, arrays, meta in cells:
            missing = set(wanted) - set(arrays) | set(CELL_META) - set(meta)
            if missing:
                raise InputError(f"write_cell: missing {sorted(missing)}")
            values = {}
            for name in self.names:
                target = self.arrays[name]
                value = np.asarray(meta[name] if name in CELL_META else arrays[name])
                if value.shape != tuple(target.shape[2:]):
                    raise InputError(f"write_cell: {name} must have shape "
                                     f"{tuple(target.shape[2:])}, got {value.shape}")
                values[name] = value.astype(target.dtype, copy=False)
            for name, value in values.items():
                self.arrays[name][i_t, i_s] = value
            if self.record is not None:
                self.record[i_t, i_s] = integrity.cell_record(values, self.names)
        where = [(i_t, i_s) for i_t, i_s, _, _ in cells]
        self._sync(where, (*self.names, integrity.CHECKSUM) if self.record is not None
                   else self.names)
        for i_t, i_s in where:
            self.arrays[MARKER][i_t, i_s] = 1
        self._sync(where, (MARKER,))

    def _sync(self, where, names) -> None:
        """fsync the chunk files of ``where`` in arrays ``names`` and the directories up to
        each array's root (new directories and renamed entries included)."""
        if not self.durable:
            return
        files, dirs = set(), set()
        for name in names:
            arr = self.arrays[name] if name in self.arrays else self.record
            root = self.path / name
            zeros = (0,) * (len(arr.shape) - 2)
            for i_t, i_s in where:
                f = root / arr.metadata.encode_chunk_key((i_t, i_s, *zeros))
                if not f.exists():
                    continue  # equal to the fill value: zarr stores no chunk
                files.add(f)
                d = f.parent
                while d != root.parent:
                    dirs.add(d)
                    d = d.parent
        for f in sorted(files):
            _fsync_file(f)
        for d in sorted(dirs, key=lambda p: -len(p.parts)):
            _fsync_dir(d)


def write_cell(path: str | Path, i_t: int, i_s: int, arrays: Mapping[str, np.ndarray],
               meta: Mapping[str, float]) -> None:
    """Write grid cell ``(i_t, i_s)``: its arrays, then (after fsync) its completion marker.

    Parameters
    ----------
    arrays : mapping
        Every array name of the store's cells (:meth:`CellWriter.write`), shaped by its
        trailing dims (seed first).
    meta : mapping
        Every name of :data:`CELL_META` (scalars).
    """
    CellWriter(path).write([(i_t, i_s, arrays, meta)])


def completed_cells(path: str | Path) -> np.ndarray:
    """``(nT, nS)`` bool: which cells of the store are marked complete (their data are checked
    by :func:`load_sweep` and :func:`verify_sweep`). A marker chunk that does not decode counts
    as not complete (the next sweep recomputes the cell and writes it again)."""
    import zarr

    with readable(path, "sweep store"):
        group = zarr.open_group(str(path), mode="r")
        marker = group[MARKER]
    try:
        return np.asarray(marker[...]).astype(bool)
    except integrity.CHUNK_ERRORS:
        done = np.zeros(marker.shape, dtype=bool)
        for i, j in np.ndindex(*marker.shape):
            with contextlib.suppress(*integrity.CHUNK_ERRORS):
                done[i, j] = bool(marker[i, j])
        return done


def store_attrs(path: str | Path) -> dict:
    """The store's attributes (provenance), or ``ValueError`` if ``path`` is no sweep store."""
    import zarr

    path = Path(path)
    if not is_sweep_store(path):
        raise InputError(f"store: {str(path)!r} is not a Zarr sweep store")
    with readable(path, "sweep store"):
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    if attrs.get("format") != SWEEP_FORMAT:
        raise InputError(f"store: {str(path)!r} is not a dysonsgd sweep store "
                         f"(format {attrs.get('format')!r}, expected {SWEEP_FORMAT!r})")
    return attrs


def update_store_attrs(path: str | Path, **attrs) -> None:
    """Set attributes of the store (written atomically by zarr: temporary file, rename)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    group.attrs.update(attrs)
    _fsync_dir(Path(path))


def open_sweep(path: str | Path):
    """The store as a lazily loaded ``xarray.Dataset`` (incomplete cells hold zeros or NaN)."""
    import xarray as xr

    store_attrs(path)
    with readable(path, "sweep store"):
        return xr.open_dataset(path, engine="zarr", chunks=None, consolidated=False)


def load_sweep(path: str | Path, *, partial: bool = True) -> EnsembleResult:
    """The completed cells of a sweep store as one :class:`EnsembleResult`.

    Parameters
    ----------
    partial : bool
        When some cells are missing, return the block of rows (temperatures) and columns
        (sigma_W) whose cells are all complete, choosing the larger of "all complete rows" and
        "all complete columns" (``False``: refuse an incomplete store).

    Raises
    ------
    ValueError
        If no cell is complete (or any is missing with ``partial=False``); the message says how
        to finish the sweep.
    """
    path = Path(path)
    ds = open_sweep(path)
    done = completed_cells(path)
    n_done, n_all = int(done.sum()), done.size
    hint = (f"finish it with `dysonsgd sweep CONFIG --out {path}` (completed cells are "
            "skipped)")
    if n_done < n_all and (not partial or n_done == 0):
        raise InputError(f"store: {str(path)!r} has {n_done} of {n_all} cells complete; {hint}")
    rows, cols = np.arange(done.shape[0]), np.arange(done.shape[1])
    if n_done < n_all:
        full_rows = np.nonzero(done.all(axis=1))[0]
        full_cols = np.nonzero(done.all(axis=0))[0]
        if full_rows.size * done.shape[1] >= full_cols.size * done.shape[0]:
            rows = full_rows
        else:
            cols = full_cols
        if rows.size == 0 or cols.size == 0:
            raise InputError(f"store: {str(path)!r} has {n_done} of {n_all} cells complete "
                             f"but no complete row or column; {hint}")
    ds = _checked(path, ds.isel(temperature=rows, sigma_w=cols), rows, cols, done)
    ds.attrs["wall_time_s"] = float(ds["cell_wall_time_s"].values.sum())
    try:
        return EnsembleResult.from_xarray(ds)
    except KeyError as exc:
        raise InputError(f"store: {str(path)!r} lacks {exc} (not a dysonsgd sweep?)") from exc


def _checked(path: Path, block, rows: np.ndarray, cols: np.ndarray, done: np.ndarray):
    """``block`` (cells ``rows x cols``) loaded and checked against its integrity records."""
    import zarr

    with readable(path, "sweep store"):
        group = zarr.open_group(str(path), mode="r")
    return integrity.check_block(path, group, block, rows, cols, done, cell_names(group))


def verify_sweep(path: str | Path) -> dict:
    """Check every complete cell of a sweep store against its integrity record (what
    ``dysonsgd sweep --verify STORE`` prints): see :func:`dysonsgd.runs.integrity.report`."""
    import zarr

    path = Path(path)
    store_attrs(path)
    with readable(path, "sweep store"):
        group = zarr.open_group(str(path), mode="r")
    return integrity.report(path, group, completed_cells(path), cell_names(group))


def what_is_kept(paths: Sequence[str | Path]) -> str:
    """What the sweep stores at ``paths`` hold now, for the line of a stopped sweep: "7 of 12
    cells complete in 'x.zarr', kept" per store (the markers; a store not made yet says so)."""
    parts = []
    for path in paths:
        if not is_sweep_store(path):
            parts.append(f"no store at {str(path)!r} yet")
            continue
        try:
            done = completed_cells(path)
            parts.append(f"{int(done.sum())} of {done.size} cells complete in {str(path)!r}, "
                         "kept")
        except InputError:
            parts.append(f"the store {str(path)!r} is not readable")
    return "; ".join(parts)


def forget_cells(path: str | Path, cells: Sequence[tuple[int, int]]) -> None:
    """Clear the completion markers of ``cells`` (fsync'ed): the next sweep recomputes them."""
    import zarr

    marker = zarr.open_group(str(path), mode="r+")[MARKER]
    for i, j in cells:
        marker[i, j] = 0
    CellWriter(path)._sync(list(cells), (MARKER,))


@contextlib.contextmanager
def store_lock(store: str | Path, *,
               create: Callable[[Path], object] | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of the sweep store at ``store``; yields its canonical path.

    Two ``flock`` locks, released by the kernel when their holder dies (a killed sweep never
    blocks the next one):

    1. on ``.NAME.lock`` beside the store's canonical path (``os.path.realpath``: symlinks,
       relative paths, ``.``, ``..`` and trailing slashes resolved), which serialises the
       creation of a new store; ``create(canonical)`` is called under it when the store does not
       exist yet;
    2. on the store directory itself, once it exists: a lock on its inode, which every path that
       reaches the directory reaches (a bind mount, another letter case on a case-insensitive
       file system). Where the file system refuses directory locks, lock 1 alone holds.

    Raises
    ------
    InputError
        If another process holds either lock.
    """
    import fcntl

    canonical = Path(os.path.realpath(store))
    lock = canonical.parent / f".{canonical.name}.lock"
    busy = (f"store: {str(store)!r} (the store at {str(canonical)!r}) is being written by "
            "another sweep; wait for it or use another --out")
    fds = [os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)]
    try:
        try:
            fcntl.flock(fds[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(busy) from None
        if create is not None and not canonical.exists():
            create(canonical)
        if canonical.is_dir():
            fds.append(os.open(canonical, os.O_RDONLY))
            try:
                fcntl.flock(fds[1], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(busy) from None
            except OSError as exc:  # pragma: no cover - e.g. NFS: no flock on directories
                if exc.errno not in (errno.EBADF, errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
        yield canonical
    finally:
        for fd in fds:
            os.close(fd)


def remove_partial_files(path: str | Path) -> int:
    """Delete the temporary ``*.partial`` files a killed writer may leave; returns how many."""
    n = 0
    for tmp in Path(path).rglob("*.partial"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


def _remove_stale_builds(path: Path) -> None:
    """Delete ``.NAME.init-PID-*`` directories left by store creations killed midway."""
    import shutil

    for build in path.parent.glob(f".{path.name}.init-*"):
        try:
            pid = int(build.name.rsplit(".init-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(build, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync every file under ``path`` and the directories holding them."""
    files, dirs = [], [path]
    for root, subdirs, names in os.walk(path):
        files += [Path(root) / n for n in names]
        dirs += [Path(root) / d for d in subdirs]
    for f in files:
        _fsync_file(f)
    for d in dirs:
        _fsync_dir(d)
