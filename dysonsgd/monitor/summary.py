"""What a monitor's records say per layer: the numbers of ``dysonsgd monitor report``.

Functions of the ``xarray.Dataset`` of :func:`dysonsgd.monitor.store.open_store` (or
:meth:`SpectrumMonitor.to_xarray`): the layers it holds, one layer's variables under their plain
names, and per layer the last record's spectrum and the last probed record's (4.15) verdict.
"""

from __future__ import annotations

import json
import math

import numpy as np

from dysonsgd._checks import InputError

__all__ = ["last_probed", "layer_dataset", "layer_info", "layer_names", "layer_summary"]


def layer_info(ds) -> list[dict]:
    """The monitored layers of a record set: name, shape, transposed, N, M, sigma2_reference."""
    try:
        return json.loads(ds.attrs["layers"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("ds is not a monitor record set (no 'layers' attribute)") from exc


def layer_names(ds) -> list[str]:
    """Parameter names of the monitored layers, in the order of the records."""
    return [la["name"] for la in layer_info(ds)]


def layer_dataset(ds, name: str):
    """One layer's variables with the ``{name}__`` prefix dropped (``eigenvalues``, ``K``, ...)
    and its dims renamed ``i``, ``j``; ``step`` stays the coordinate of ``record``."""
    names = layer_names(ds)
    if name not in names:
        raise InputError(f"name must be one of the monitored layers {names}, got {name!r}")
    prefix = f"{name}__"
    keep = [v for v in ds.data_vars if v.startswith(prefix)]
    sub = ds[keep].rename({v: v.removeprefix(prefix) for v in keep})
    dims = {d: d.removeprefix(prefix) for d in sub.dims if d.startswith(prefix)}
    return sub.rename(dims)


def last_probed(ds) -> int | None:
    """Index of the last record with the probe run (None if none was)."""
    if "probed" not in ds:
        return None
    hit = np.flatnonzero(np.asarray(ds["probed"]) == 1.0)
    return int(hit[-1]) if hit.size else None


def _value(ds, var: str, k: int | None):
    if k is None or var not in ds:
        return math.nan
    return float(ds[var].values[k])


def layer_summary(ds) -> dict[str, dict]:
    """Per layer: the last record's spectrum and the last probed record's signal to noise.

    Returns
    -------
    name -> dict with step, n_rows, n_cols, transposed, temperature, eigenvalue_min/max,
    level_spacing, ratio_mean, mp_sigma2, n_spikes (last record) and probe_step, k_s, v_s,
    signal_to_noise (-K_S / V_S), threshold ((4.15) left side), converged (1/0) at the last
    probed record (NaN without one).
    """
    if ds.sizes.get("record", 0) == 0:
        raise InputError("ds holds no record")
    last = ds.sizes["record"] - 1
    probed = last_probed(ds)
    out = {}
    for la in layer_info(ds):
        p = la["name"]
        x = np.asarray(ds[f"{p}__eigenvalues"].values[last])
        row = {"step": int(ds["step"].values[last]), "n_rows": la["n_rows"],
               "n_cols": la["n_cols"], "transposed": la["transposed"],
               "eigenvalue_min": float(x[0]), "eigenvalue_max": float(x[-1])}
        for q in ("temperature", "level_spacing", "ratio_mean", "mp_sigma2"):
            row[q] = _value(ds, f"{p}__{q}", last)
        row["n_spikes"] = int(ds[f"{p}__n_spikes"].values[last])
        row["probe_step"] = None if probed is None else int(ds["step"].values[probed])
        for q in ("k_s", "v_s", "signal_to_noise", "threshold", "converged"):
            row[q] = _value(ds, f"{p}__{q}", probed)
        out[p] = row
    return out
