"""The monitor's records: their layout, the incremental Zarr store, the xarray Dataset.

A record is one flat float64 vector: every variable of :class:`Layout` (the step, and per layer
its eigenvalues, S, <r>, ...) flattened in order. In memory the records are a list of these
vectors; on disk they are the rows of one Zarr array ``records`` (record, value), one chunk
per row, grown by doubling its length. Zarr writes every chunk and metadata file to a
temporary name and renames it, so a row is on disk entirely or not at all, and the rows are
written in order: a process killed at any moment (SIGKILL included) leaves a store whose
written rows are exactly the records completed so far, and the unwritten rows read as the
fill value NaN. One chunk per record keeps the cost of a record to one file write (a Zarr
array per variable would cost one write per variable, ~1 ms each).

:func:`open_store` and :meth:`Layout.to_xarray` give the labelled ``xarray.Dataset``: dimension
``record`` (coordinate ``step``), per layer ``{name}__i`` (and ``{name}__j`` for matrices)
over its eigenvalue index, variables ``{name}__{quantity}`` named by the layer's parameter
(``fc1.weight__eigenvalues``); the settings in ``attrs``.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dysonsgd._checks import InputError, readable

__all__ = ["FORMAT", "Field", "Layout", "RecordStore", "is_monitor_store", "open_store"]

#: the ``format`` attribute of a monitor store
FORMAT = "dysonsgd-monitor/1"
#: rows of a new store before it first grows
INITIAL_CAPACITY = 64


@dataclass(frozen=True)
class Field:
    """One variable of a record: name, dims (after ``record``), shape, kind.

    kind: 'float'; 'int' (an integer count, exact in float64); 'flag' (1.0 / 0.0, NaN where
    not measured).
    """

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    kind: str = "float"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class Layout:
    """The ordered fields of a record and their offsets in the flat vector."""

    def __init__(self, fields: list[Field]) -> None:
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise InputError(f"layout: duplicate field names in {names}")
        self.fields = tuple(fields)
        self.offsets: dict[str, tuple[int, int]] = {}
        at = 0
        for f in self.fields:
            self.offsets[f.name] = (at, at + f.size)
            at += f.size
        self.size = at

    def pack(self, values: dict) -> np.ndarray:
        """The flat record of ``values`` (name -> number or array); missing fields are NaN."""
        out = np.full(self.size, np.nan)
        for name, value in values.items():
            a, b = self.offsets[name]
            out[a:b] = np.ravel(np.asarray(value, dtype=float))
        return out

    def to_json(self) -> list:
        return [[f.name, list(f.dims), list(f.shape), f.kind] for f in self.fields]

    @classmethod
    def from_json(cls, data) -> Layout:
        return cls([Field(n, tuple(d), tuple(s), k) for n, d, s, k in data])

    def to_xarray(self, rows, attrs: dict | None = None):
        """The records ``rows`` (n, size) as a labelled ``xarray.Dataset`` (module doc)."""
        import xarray as xr

        rows = np.asarray(rows, dtype=float).reshape(-1, self.size)
        data = {}
        for f in self.fields:
            a, b = self.offsets[f.name]
            values = rows[:, a:b].reshape(rows.shape[0], *f.shape)
            if f.kind == "int" and np.all(np.isfinite(values)):
                values = values.astype(np.int64)
            data[f.name] = (("record", *f.dims), values)
        step = data.pop("step")[1]
        ds = xr.Dataset(data, coords={"record": np.arange(rows.shape[0]), "step": ("record", step)},
                        attrs=dict(attrs or {}))
        for f in self.fields:
            if f.kind == "flag" and f.name in ds:
                ds[f.name].attrs["flag"] = "1 yes, 0 no, NaN not measured at this record"
        return ds


def is_monitor_store(path) -> bool:
    """Whether ``path`` is a directory holding a Zarr group (a candidate monitor store)."""
    path = Path(path)
    return path.is_dir() and (path / "zarr.json").is_file()


class RecordStore:
    """An incremental monitor store: created atomically, one row appended per record.

    Parameters
    ----------
    path : a new directory (it must not exist)
    layout : the records' Layout
    attrs : JSON-serialisable settings, stored with the layout
    """

    def __init__(self, path, layout: Layout, attrs: dict) -> None:
        import zarr

        path = Path(path)
        if path.exists():
            raise InputError(f"store: {str(path)!r} already exists (monitor stores are never "
                             "overwritten: give a new path)")
        if not path.parent.is_dir():
            raise InputError(f"store: the directory {str(path.parent)!r} does not exist")
        tmp = path.with_name(f".{path.name}.init-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        group = zarr.open_group(str(tmp), mode="w-", zarr_format=3)
        group.create_array("records", shape=(INITIAL_CAPACITY, layout.size),
                           chunks=(1, layout.size), dtype="float64", fill_value=np.nan,
                           compressors=None, dimension_names=("record", "value"))
        group.attrs.update({"format": FORMAT, "layout": layout.to_json(),
                            "settings": json.dumps(attrs)})
        try:
            os.rename(tmp, path)
        except OSError as exc:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(f"store: cannot create {str(path)!r}: {exc}") from exc
        self.path = path
        self.layout = layout
        self.array = zarr.open_group(str(path), mode="r+")["records"]
        self.n_records = 0

    def append(self, row: np.ndarray) -> None:
        """Write one record (the next row); grows the array first when it is full."""
        if self.n_records == self.array.shape[0]:
            self.array.resize((2 * self.array.shape[0], self.layout.size))
        self.array[self.n_records] = row
        self.n_records += 1


def open_store(path):
    """A monitor store as an ``xarray.Dataset`` of its completed records (module doc).

    Raises
    ------
    InputError
        ``path`` is not a monitor store.
    """
    import zarr

    path = Path(path)
    if not is_monitor_store(path):
        raise InputError(f"store: {str(path)!r} is not a Zarr store")
    with readable(path, "monitor store"):
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        if attrs.get("format") != FORMAT or "records" not in group:
            raise InputError(f"store: {str(path)!r} is not a dysonsgd monitor store (format "
                             f"{attrs.get('format')!r}, expected {FORMAT!r})")
        layout = Layout.from_json(attrs["layout"])
        rows = np.asarray(group["records"][...])
    step = slice(*layout.offsets["step"])
    done = np.isfinite(rows[:, step]).all(axis=1)
    n = int(np.argmin(done)) if not done.all() else done.size
    settings = json.loads(attrs["settings"])
    return layout.to_xarray(rows[:n], {**settings, "store": str(path)})
