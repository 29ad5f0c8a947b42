"""Reading and writing training runs.

A *run* is an :class:`~dysonsgd.training.EnsembleResult` on disk, in one of the formats
:func:`load_result` recognises:

- ``.nc``: netCDF through xarray's scipy engine;
- ``.npz``: the same variables as a numpy archive, attributes as a JSON string ``attrs``.

Every command that takes a RUN reads it with :func:`load_result`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dysonsgd.training import EnsembleResult

#: file suffixes :func:`save_result` writes and :func:`load_result` reads
FILE_SUFFIXES = (".nc", ".npz")


def save_result(result: EnsembleResult, path: str | Path) -> Path:
    """Write ``result`` to ``path`` (``.nc``: netCDF via xarray/scipy; ``.npz``: numpy archive)."""
    path = Path(path)
    if path.suffix not in FILE_SUFFIXES:
        raise ValueError(f"path must end in one of {FILE_SUFFIXES}, got {str(path)!r}")
    ds = result.to_xarray()
    if path.suffix == ".npz":
        arrays = {name: ds[name].values for name in ds.variables}
        arrays["attrs"] = np.array(json.dumps(ds.attrs))
        np.savez_compressed(path, **arrays)
    else:
        ds.to_netcdf(path, engine="scipy")
    return path


def _npz_dataset(path: Path):
    import xarray as xr

    with np.load(path, allow_pickle=False) as z:
        attrs = json.loads(str(z["attrs"]))
        arrays = {k: z[k] for k in z.files if k != "attrs"}
    # rebuild the labelled dataset with the same dims as EnsembleResult.to_xarray
    grid = ("temperature", "sigma_w", "seed")
    dims = {
        "w2": (*grid, "snapshot", "row", "col"), "grad": (*grid, "snapshot", "row", "col"),
        "loss": (*grid, "snapshot"), "diverged": grid, "diverged_epoch": grid,
        "diverged_step": grid, "group": grid, "teacher_w1": ("group", "hidden1", "input"),
        "teacher_w2": ("group", "row", "col"), "teacher_w3": ("group", "output", "row"),
        "temperature": ("temperature",), "sigma_w": ("sigma_w",), "seed": ("seed",),
        "snapshot": ("snapshot",), "epoch": ("snapshot",), "learning_rate": ("temperature",),
        "inv_sigma_w": ("sigma_w",), "spawn_key": ("seed",),
    }
    coords = {k: (dims[k], arrays[k]) for k in ("temperature", "sigma_w", "seed", "snapshot",
                                                  "epoch", "learning_rate", "inv_sigma_w",
                                                  "spawn_key") if k in arrays}
    data = {k: (dims[k], v) for k, v in arrays.items() if k not in coords}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def load_result(path: str | Path) -> EnsembleResult:
    """Read a run written by :func:`save_result` (or ``dysonsgd train``).

    Raises
    ------
    ValueError
        If ``path`` does not exist or is not a run in a known format.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise ValueError(f"run: {str(path)!r} does not exist")
    if path.suffix == ".npz":
        ds = _npz_dataset(path)
    elif path.suffix == ".nc":
        ds = xr.load_dataset(path, engine="scipy")
    else:
        raise ValueError(f"run: {str(path)!r} is not a run file ({', '.join(FILE_SUFFIXES)})")
    try:
        return EnsembleResult.from_xarray(ds)
    except KeyError as exc:
        raise ValueError(f"run: {str(path)!r} lacks {exc} (not a dysonsgd run?)") from exc
