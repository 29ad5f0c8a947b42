"""Integrity records of sweep stores: a checksum per cell and array, checked on read (issue 13).

A sweep store (:mod:`dysonsgd.runs.store`) says which cells are done with its completion marker;
this module says whether what a done cell holds is still what was written.

Records
-------
- ``cell_checksum[i_T, i_S, k]`` (uint32): the CRC-32 (``zlib.crc32``) of the bytes of array
  ``k``'s chunk of the cell as stored, for each name of :data:`~dysonsgd.runs.store.CHECKED`
  (the training arrays and the cell's bookkeeping), in C order and little-endian. The writer
  computes it from the values it writes and stores it in the same fsync round as the data,
  before the marker; its variable attribute ``arrays`` lists the names in order of ``k``.
- ``static_checksums`` (a store attribute, JSON): the same CRC of every array written once, when
  the store is created (the coordinates and the teachers), computed from the built store itself.

A reader recomputes the CRC of what it decoded and compares. This finds a chunk removed (zarr
then returns the fill value: NaN for floats), truncated or garbled (a decoding error) or changed
in place without a decoding error (zstd at level 0 stores raw blocks: a flipped byte decodes).
Because the CRC is of the decoded values, a chunk that zarr never stored because the values equal
the fill value (``diverged`` all false) reads back as itself and matches. A random change is
missed with probability 2^-32 per array and cell; the records guard against damage, not against
someone forging a store.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dysonsgd._checks import InputError, readable

__all__ = [
    "ALGORITHM",
    "CHECKSUM",
    "CHECKSUM_DIM",
    "STATIC_ATTR",
    "Damage",
    "cell_record",
    "check_block",
    "checksum",
    "describe",
    "explain",
    "mismatches",
    "read_damage",
    "report",
    "static_damage",
    "static_record",
    "why",
]

#: the per-cell record: (temperature, sigma_w, checksum_of) uint32
CHECKSUM = "cell_checksum"
CHECKSUM_DIM = "checksum_of"
#: store attribute holding the records of the arrays written at creation
STATIC_ATTR = "static_checksums"
ALGORITHM = "crc32 (zlib) of the C-order little-endian bytes of each array's cell as stored"
#: what a reader may raise on a damaged chunk: the codecs raise RuntimeError (zstd, blosc),
#: a chunk of the wrong size ValueError, a vanished file OSError
CHUNK_ERRORS = (RuntimeError, ValueError, OSError, EOFError, TypeError, IndexError)


def checksum(value) -> int:
    """CRC-32 of ``value``'s bytes: C order, little-endian, in its own dtype."""
    arr = np.asarray(value)
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
    return zlib.crc32(arr.reshape(-1).view(np.uint8))


def cell_record(values: Mapping[str, object], names: Sequence[str]) -> np.ndarray:
    """``(len(names),) uint32``: the checksum of each named value of one cell, in order."""
    return np.array([checksum(values[n]) for n in names], dtype=np.uint32)


@dataclass(frozen=True)
class Damage:
    """One damaged array: of cell ``(i_T, i_S)``, or (``cell=None``) written at creation."""

    array: str
    reason: str
    cell: tuple[int, int] | None = None


def mismatches(values: Mapping[str, np.ndarray], recorded: np.ndarray, complete: np.ndarray,
               names: Sequence[str]) -> list[tuple[tuple[int, int], str]]:
    """Cells whose decoded values differ from their record.

    Parameters
    ----------
    values : mapping
        Each name to the decoded block, shaped ``(nT', nS', ...)``.
    recorded : (nT', nS', len(names)) uint32
        The block's ``cell_checksum``.
    complete : (nT', nS') bool
        The cells to check (those marked complete).

    Returns
    -------
    list of ``((i, j), name)``, indices into the block.
    """
    out = []
    for i, j in zip(*np.nonzero(complete), strict=True):
        for k, name in enumerate(names):
            if checksum(values[name][i, j]) != int(recorded[i, j, k]):
                out.append(((int(i), int(j)), name))
    return out


def _chunk_file(path: Path, arr, i: int, j: int) -> Path:
    zeros = (0,) * (len(arr.shape) - 2)
    return path / arr.path / arr.metadata.encode_chunk_key((i, j, *zeros))


def why(path: str | Path, arr, i: int, j: int) -> str:
    """Why a cell's array differs from its record: its chunk file is gone, or it changed."""
    if not _chunk_file(Path(path), arr, int(i), int(j)).exists():
        return "chunk file missing (read back as the fill value)"
    return "does not match its checksum"


def explain(path: str | Path, group, cell: tuple[int, int], names: Sequence[str]) -> list[Damage]:
    """The damage of ``cell`` whose arrays ``names`` differ from its record: the record's own
    chunk gone (it then reads as zeros, and every array seems to differ), else each array."""
    i, j = int(cell[0]), int(cell[1])
    if not _chunk_file(Path(path), group[CHECKSUM], i, j).exists():
        return [Damage(CHECKSUM, why(path, group[CHECKSUM], i, j), (i, j))]
    return [Damage(n, why(path, group[n], i, j), (i, j)) for n in names]


def _by_cell(bad) -> dict[tuple[int, int], list[str]]:
    cells: dict[tuple[int, int], list[str]] = {}
    for cell, name in bad:
        cells.setdefault(cell, []).append(name)
    return cells


def read_damage(path: str | Path, group, names: Sequence[str], complete: np.ndarray,
                progress: Callable[[int], None] | None = None) -> list[Damage]:
    """Read every complete cell of ``group`` (a zarr group) and compare it with its record.

    Row by row (one temperature at a time, so the memory is one row of the grid); a row whose
    read fails is read cell by cell, so that a chunk that does not decode names its cell.
    ``progress`` is called with the number of rows done.
    """
    path = Path(path)
    damage: list[Damage] = []
    for i in range(complete.shape[0]):
        cols = np.nonzero(complete[i])[0]
        if cols.size == 0:
            continue
        bad: set[tuple[int, str]] = set()
        rows = {}
        for name in (*names, CHECKSUM):
            try:
                rows[name] = np.asarray(group[name][i])
            except CHUNK_ERRORS:
                rows[name] = _row_by_cells(path, group[name], i, cols, damage, bad)
        for j in cols:
            if (j, CHECKSUM) in bad:
                continue
            differ = [n for k, n in enumerate(names) if (j, n) not in bad
                      and checksum(rows[n][j]) != int(rows[CHECKSUM][j, k])]
            if differ:
                damage += explain(path, group, (i, int(j)), differ)
        if progress is not None:
            progress(i + 1)
    return sorted(damage, key=lambda d: (d.cell, d.array))


def _row_by_cells(path: Path, arr, i: int, cols, damage: list[Damage],
                  bad: set[tuple[int, str]]) -> np.ndarray:
    """Row ``i`` of ``arr`` read cell by cell; a cell that does not decode is recorded."""
    row = np.zeros(arr.shape[1:], dtype=arr.dtype)
    name = arr.path.rsplit("/", 1)[-1]
    for j in cols:
        try:
            row[j] = arr[i, j]
        except CHUNK_ERRORS as exc:
            why = (str(exc).strip().splitlines() or [""])[0] or "no details"
            damage.append(Damage(name, f"unreadable ({type(exc).__name__}: {why})", (i, int(j))))
            bad.add((int(j), name))
    return row


def static_record(group, names: Sequence[str]) -> dict[str, int]:
    """The checksum of each named array of ``group`` (read whole): the creation record."""
    return {name: checksum(group[name][...]) for name in names}


def static_damage(group, record: Mapping[str, int]) -> list[Damage]:
    """The arrays written at creation that no longer match ``record``."""
    damage = []
    for name, crc in record.items():
        try:
            ok = checksum(group[name][...]) == int(crc)
            why = "does not match its checksum"
        except (KeyError, *CHUNK_ERRORS) as exc:
            ok, why = False, f"unreadable ({type(exc).__name__}: {exc})"
        if not ok:
            damage.append(Damage(name, why))
    return damage


def describe(path: str | Path, damage: Sequence[Damage], temperature, sigma_w, *,
             limit: int = 3) -> str:
    """One line: which cells (and arrays) are damaged, and the remedy.

    A damaged cell is recomputed by the next sweep; an array written at creation is not (the
    store must then be deleted and the sweep run again).
    """
    path = str(path)
    static = [d for d in damage if d.cell is None]
    if static:
        what = "; ".join(f"{d.array} {d.reason}" for d in static)
        return (f"store: {path!r}: {what} (written when the store was created; a rerun does not "
                f"rewrite it): delete the store (rm -r {path}) and run the sweep again")
    cells: dict[tuple[int, int], list[str]] = {}
    for d in damage:
        cells.setdefault(d.cell, []).append(f"{d.array} {d.reason}")
    parts = [f"cell (T = {float(temperature[i]):g}, sigma_W = {float(sigma_w[j]):g}): "
             + ", ".join(why) for (i, j), why in list(cells.items())[:limit]]
    more = (f"; and {len(cells) - limit} more (`dysonsgd sweep --verify {path}` lists them)"
            if len(cells) > limit else "")
    n = len(cells)
    return (f"store: {path!r}: {n} complete cell{'s' if n > 1 else ''} damaged: "
            f"{'; '.join(parts)}{more}. Rerun the sweep (`dysonsgd sweep CONFIG --out {path}`): "
            f"{'they are' if n > 1 else 'it is'} recomputed")


def _grid(path: Path, group) -> tuple[np.ndarray, np.ndarray]:
    with readable(path, "sweep store"):
        return group["temperature"][...], group["sigma_w"][...]


def _static(block_or_group) -> dict | None:
    """The creation record (None: a store written before the records)."""
    text = block_or_group.attrs.get(STATIC_ATTR)
    return None if text is None else json.loads(text)


def check_block(path: str | Path, group, block, rows: np.ndarray, cols: np.ndarray,
                done: np.ndarray, names: Sequence[str]):
    """Load ``block``, the cells ``rows x cols`` of the store ``group`` as an xarray Dataset, and
    check its complete cells (``done``, over the whole grid) against their records.

    The decoded block is compared with its records without a second read; only when a chunk
    does not decode is the block read again cell by cell, to name it. A store without records
    (written before them) is loaded unchecked.

    Raises
    ------
    InputError
        Naming the damaged cells and the remedy (:func:`describe`).
    """
    path = Path(path)
    temperature, sigma_w = _grid(path, group)
    static = _static(block)
    if static is None or CHECKSUM not in block:
        try:
            return block.load()
        except CHUNK_ERRORS as exc:
            raise InputError(f"sweep store: {str(path)!r} has a chunk that does not decode "
                             f"({type(exc).__name__}: {exc}) and no integrity records to say "
                             "which cell (written before them): run the sweep again into a "
                             "new store") from exc
    mine = np.zeros(done.shape, dtype=bool)
    mine[np.ix_(rows, cols)] = done[np.ix_(rows, cols)]
    damage = static_damage(group, static)
    if not damage:
        try:
            block = block.load()
        except CHUNK_ERRORS:  # a chunk that does not decode: find it, cell by cell
            damage = read_damage(path, group, names, mine)
            if not damage:
                raise
        else:
            bad = mismatches({n: block[n].values for n in names}, block[CHECKSUM].values,
                             done[np.ix_(rows, cols)], names)
            for (i, j), differ in _by_cell(bad).items():
                damage += explain(path, group, (rows[i], cols[j]), differ)
    if damage:
        raise InputError(describe(path, damage, temperature, sigma_w))
    return block


def report(path: str | Path, group, done: np.ndarray, names: Sequence[str]) -> dict:
    """Check every complete cell (``done``) of the store ``group`` against its record.

    Returns
    -------
    dict
        ``store``; ``integrity_records`` (False for a store written before they existed: then
        nothing else is checked); ``cells_total``, ``cells_complete``, ``cells_damaged``;
        ``damaged``: per damaged array ``{"cell": [i_T, i_S] or None (written at creation),
        "temperature", "sigma_w", "array", "reason"}``; ``message``: one line with the remedy
        (empty when the store is intact; without records, says that nothing was checked).
    """
    path = Path(path)
    temperature, sigma_w = _grid(path, group)
    static = _static(group)
    records = CHECKSUM in group and static is not None
    damage = []
    if records:
        damage = static_damage(group, static) or read_damage(path, group, names, done)
    cells = {d.cell for d in damage if d.cell is not None}
    return {
        "store": str(path), "integrity_records": records, "cells_total": int(done.size),
        "cells_complete": int(done.sum()), "cells_damaged": len(cells),
        "damaged": [{"cell": None if d.cell is None else list(d.cell),
                     "temperature": None if d.cell is None else float(temperature[d.cell[0]]),
                     "sigma_w": None if d.cell is None else float(sigma_w[d.cell[1]]),
                     "array": d.array, "reason": d.reason} for d in damage],
        "message": describe(path, damage, temperature, sigma_w) if damage else "" if records
        else (f"store: {str(path)!r} has no integrity records (written before them): nothing "
              "could be checked"),
    }
