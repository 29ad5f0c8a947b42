"""Run files: an :class:`~dysonsgd.train.result.EnsembleResult` (or another dataset) in one file.

Runs are written as ``.nc``: netCDF4 (HDF5, through xarray's ``h5netcdf`` engine), every
non-empty numeric variable gzip-compressed with the byte shuffle, no fill value (so NaN after a
divergence is stored as it is), dtypes kept (``float32`` stays ``float32``, ``int64`` stays
``int64``; booleans go through xarray's ``int8`` encoding and come back ``bool``). Reading back
gives the written arrays bit for bit.

Still read, never written:

- ``.npz``: the retired hand-made layout (variables under their names, the attributes as a JSON
  string ``attrs``). :func:`convert_run` turns such a run into ``.nc``.
- ``.nc`` in netCDF3 (the classic format of xarray's scipy engine, which earlier versions
  wrote; integers there were stored as ``int32``), recognised by its magic number.

Every command that takes a RUN reads it with :func:`load_result`, which also accepts a sweep
store (a directory, :mod:`dysonsgd.runs.store`) and returns its completed cells.
:func:`save_dataset` writes other datasets (the trajectories of ``dysonsgd sde``) in the same
format, and :func:`result_summary` gives the plain numbers ``dysonsgd train`` prints about a
run.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from dysonsgd._checks import InputError, readable
from dysonsgd.runs.paths import RETIRED_SUFFIXES
from dysonsgd.runs.store import load_sweep
from dysonsgd.train.result import EnsembleResult

__all__ = ["FILE_SUFFIXES", "READ_SUFFIXES", "convert_run", "load_result", "result_summary",
           "save_dataset", "save_result"]

#: file suffixes :func:`save_result` and :func:`save_dataset` write
FILE_SUFFIXES = (".nc",)
#: file suffixes :func:`load_result` reads (``.npz``: the retired layout, read only)
READ_SUFFIXES = (".nc", ".npz")
#: the netCDF4 writer and reader (HDF5 through h5py; no netCDF-C library needed)
NETCDF_ENGINE = "h5netcdf"
#: HDF5 filters of every non-empty numeric variable: gzip level 4 after the byte shuffle
COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
#: the first bytes of a netCDF3 (classic, 64-bit offset or CDF-5) file
_NETCDF3_MAGIC = b"CDF"


def _checked_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix in RETIRED_SUFFIXES:
        raise InputError(f"path: {str(path)!r}: {RETIRED_SUFFIXES[path.suffix]}")
    if path.suffix not in FILE_SUFFIXES:
        raise InputError(f"path must end in one of {FILE_SUFFIXES}, got {str(path)!r}")
    return path


def _encoding(ds) -> dict:
    """Per-variable netCDF4 encoding: no fill value; compression where HDF5 can chunk."""
    encoding = {}
    for name, var in ds.variables.items():
        enc = {"_FillValue": None}
        if var.ndim and var.size and var.dtype.kind in "biuf":
            enc.update(COMPRESSION)
        encoding[name] = enc
    return encoding


def save_dataset(ds, path: str | Path) -> Path:
    """Write an xarray Dataset to ``path`` (``.nc``): netCDF4, compressed, dtypes kept.

    Parameters
    ----------
    ds : xarray.Dataset
        The dataset; its attributes must be netCDF attributes (strings, numbers, arrays).
    path : str or Path
        The file to write; must end in ``.nc``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If ``path`` does not end in ``.nc`` (``.npz``: the message says what to do instead).
    """
    path = _checked_path(path)
    ds.to_netcdf(path, engine=NETCDF_ENGINE, encoding=_encoding(ds))
    return path


def save_result(result: EnsembleResult, path: str | Path) -> Path:
    """Write ``result`` to ``path`` (``.nc``, see :func:`save_dataset`); return ``path``."""
    return save_dataset(result.to_xarray(), path)


def _load_netcdf(path: Path):
    """A ``.nc`` file as an in-memory Dataset: netCDF4 by h5netcdf, netCDF3 by scipy."""
    import xarray as xr

    with readable(path):
        with path.open("rb") as f:
            magic = f.read(len(_NETCDF3_MAGIC))
        engine = "scipy" if magic == _NETCDF3_MAGIC else NETCDF_ENGINE
        return xr.load_dataset(path, engine=engine)


def convert_run(source: str | Path, target: str | Path) -> Path:
    """Rewrite a run in an older format (``.npz``, netCDF3 ``.nc``) as netCDF4 ``.nc``.

    Parameters
    ----------
    source : str or Path
        Any run :func:`load_result` reads.
    target : str or Path
        The ``.nc`` file to write (not ``source`` itself).

    Returns
    -------
    Path
        ``target``.
    """
    target = _checked_path(target)
    if Path(source).resolve() == target.resolve():
        raise InputError(f"target: {str(target)!r} is the source; give another file name")
    return save_result(load_result(source), target)


def result_summary(result: EnsembleResult, path: str | Path | None = None) -> dict:
    """Plain numbers about a training run (what ``dysonsgd train`` prints): models, grid,
    steps, wall time and speed, diverged models, the median final training loss, where it ran
    and ``out``, the file written."""
    final = result.loss[..., -1]
    return {
        "models": result.n_models,
        "grid": list(result.diverged.shape),
        "epochs": result.epochs,
        "model_steps": result.model_steps,
        "wall_time_s": result.wall_time,
        "model_steps_per_s": result.model_steps / result.wall_time,
        "train_model_steps_per_s": result.model_steps / result.timings.get("train_s", np.nan),
        "diverged": int(result.diverged.sum()),
        "final_train_loss_median": float(np.nanmedian(final)) if np.isfinite(final).any()
        else float("nan"),
        "backend": result.backend,
        "device": result.device,
        "dtype": result.dtype,
        "out": str(path) if path is not None else None,
    }


class _NpzRun:
    """The variables of a ``.npz`` run (the retired layout), read the way
    :meth:`EnsembleResult.from_xarray` reads a dataset (``run[name].values`` and
    ``run.attrs``), so no second table of dims is needed."""

    def __init__(self, path: Path) -> None:
        # the file is opened here, not by np.load, which leaves it open when the zip is broken
        with readable(path), path.open("rb") as f, np.load(f, allow_pickle=False) as z:
            if "attrs" not in z.files:
                raise InputError(f"run: {str(path)!r} is not a readable dysonsgd run (no "
                                 "'attrs'; a file of dysonsgd sde or another program?)")
            self.attrs = json.loads(str(z["attrs"]))
            self._arrays = {k: z[k] for k in z.files if k != "attrs"}

    def __getitem__(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(values=self._arrays[name])


def load_result(path: str | Path) -> EnsembleResult:
    """Read a run written by :func:`save_result` (or ``dysonsgd train``), or a sweep store.

    A sweep store (a directory) gives the completed cells: the whole grid when the sweep has
    finished, else the largest block of complete rows x complete columns (see
    :func:`~dysonsgd.runs.store.load_sweep`). A ``.npz`` run of the retired layout and a
    netCDF3 ``.nc`` are read too.

    Raises
    ------
    InputError
        If ``path`` does not exist or is not a run in a known format.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"run: {str(path)!r} does not exist")
    if path.is_dir():
        return load_sweep(path)
    if path.suffix == ".npz":
        ds = _NpzRun(path)
    elif path.suffix == ".nc":
        ds = _load_netcdf(path)
    else:
        raise InputError(f"run: {str(path)!r} is not a run file ({', '.join(READ_SUFFIXES)})")
    try:
        return EnsembleResult.from_xarray(ds)
    except KeyError as exc:
        raise InputError(f"run: {str(path)!r} lacks {exc} (not a dysonsgd run?)") from exc
