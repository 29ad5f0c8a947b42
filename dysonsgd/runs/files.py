"""Run files: an :class:`~dysonsgd.train.result.EnsembleResult` (or another dataset) in one file.

- ``.nc``: netCDF through xarray's scipy engine;
- ``.npz``: the same variables as a numpy archive, attributes as a JSON string ``attrs``.

Every command that takes a RUN reads it with :func:`load_result`, which also accepts a sweep
store (a directory, :mod:`dysonsgd.runs.store`) and returns its completed cells.
:func:`save_dataset` writes other datasets (the trajectories of ``dysonsgd sde``) in the same two
file formats, and :func:`result_summary` gives the plain numbers ``dysonsgd train`` prints about a
run.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from dysonsgd._checks import InputError, readable
from dysonsgd.runs.store import load_sweep
from dysonsgd.train.result import EnsembleResult

__all__ = ["FILE_SUFFIXES", "load_result", "result_summary", "save_dataset", "save_result"]

#: file suffixes :func:`save_result` writes and :func:`load_result` reads
FILE_SUFFIXES = (".nc", ".npz")


def save_result(result: EnsembleResult, path: str | Path) -> Path:
    """Write ``result`` to ``path`` (``.nc``: netCDF via xarray/scipy; ``.npz``: numpy archive)."""
    path = Path(path)
    if path.suffix not in FILE_SUFFIXES:
        raise InputError(f"path must end in one of {FILE_SUFFIXES}, got {str(path)!r}")
    ds = result.to_xarray()
    if path.suffix == ".npz":
        arrays = {name: ds[name].values for name in ds.variables}
        arrays["attrs"] = np.array(json.dumps(ds.attrs))
        np.savez_compressed(path, **arrays)
    else:
        ds.to_netcdf(path, engine="scipy")
    return path


def save_dataset(ds, path: str | Path) -> Path:
    """Write an xarray Dataset to ``path``: ``.nc`` as netCDF (scipy engine); ``.npz`` with
    every variable under its name and every attribute as a 0-d array of its own."""
    path = Path(path)
    if path.suffix not in FILE_SUFFIXES:
        raise InputError(f"path must end in one of {FILE_SUFFIXES}, got {str(path)!r}")
    if path.suffix == ".npz":
        np.savez_compressed(path, **{k: np.array(v) for k, v in ds.attrs.items()},
                            **{name: ds[name].values for name in ds.variables})
    else:
        ds.to_netcdf(path, engine="scipy")
    return path


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
    """The variables of a ``.npz`` run, read the way :meth:`EnsembleResult.from_xarray` reads a
    dataset (``run[name].values`` and ``run.attrs``), so no second table of dims is needed."""

    def __init__(self, path: Path) -> None:
        with readable(path), np.load(path, allow_pickle=False) as z:
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
    :func:`load_sweep`).

    Raises
    ------
    ValueError
        If ``path`` does not exist or is not a run in a known format.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise InputError(f"run: {str(path)!r} does not exist")
    if path.is_dir():
        return load_sweep(path)
    if path.suffix == ".npz":
        ds = _NpzRun(path)
    elif path.suffix == ".nc":
        with readable(path):
            ds = xr.load_dataset(path, engine="scipy")
    else:
        raise InputError(f"run: {str(path)!r} is not a run file ({', '.join(FILE_SUFFIXES)})")
    try:
        return EnsembleResult.from_xarray(ds)
    except KeyError as exc:
        raise InputError(f"run: {str(path)!r} lacks {exc} (not a dysonsgd run?)") from exc
