"""Runs on disk: .nc files and Zarr sweep stores (dysonsgd.runs.store); tests/test_files.py
has the file formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from dysonsgd._checks import InputError
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.runs import files, integrity, store
from dysonsgd.train import train_ensemble

CFG = TeacherStudentConfig(n_data=40, batch_size=4, activation="relu")
TEMPS = [0.25, 1.0, 8.0]
SIGMAS = [0.5, 2.0]


@pytest.fixture(scope="module")
def grid_result():
    # relu at T = 8 diverges for 2 of 3 seeds: NaN losses and frozen snapshots belong to the content
    return train_ensemble(CFG, temperature=TEMPS, sigma_w=SIGMAS, n_seeds=3, epochs=6,
                          snapshots=4, seed=5, dtype="float64", progress=False)


def _new_store(path, res):
    attrs = {"config": json.dumps(asdict(CFG)),
             "seed": 5, "replica_offset": 0, "dtype": "float64", "device": "cpu",
             "backend": "numba", "wall_time_s": 0.0}
    return store.create_sweep_store(
        path, temperature=res.temperature, sigma_w=res.sigma_w, n_seeds=3,
        snapshot_epochs=res.snapshot_epochs, widths=CFG.widths, dtype="float64",
        batch_size=CFG.batch_size, teacher=(res.teacher_w1, res.teacher_w2, res.teacher_w3),
        attrs=attrs)


def _write(path, res, i, j, wall=1.0):
    arrays = {name: getattr(res, name)[i, j] for name in store.CELL_ARRAYS}
    store.write_cell(path, i, j, arrays, {"cell_wall_time_s": wall, "cell_finished_at": 0.0,
                                          "cell_session": 0})


@pytest.mark.parametrize("suffix", [".nc"])
def test_files_still_round_trip(tmp_path, grid_result, suffix):
    back = files.load_result(files.save_result(grid_result, tmp_path / f"run{suffix}"))
    for name in ("w2", "grad", "loss", "diverged_epoch", "teacher_w1"):
        np.testing.assert_array_equal(getattr(back, name), getattr(grid_result, name))
    with pytest.raises(ValueError, match="must end in"):
        files.save_result(grid_result, tmp_path / "run.csv")


def test_complete_store_reads_back_bitwise(tmp_path, grid_result):
    assert grid_result.diverged.any() and not grid_result.diverged.all()
    assert np.isnan(grid_result.loss).any()
    path = _new_store(tmp_path / "s.zarr", grid_result)
    assert store.is_sweep_store(path) and not store.completed_cells(path).any()
    cells = [(i, j) for i in range(3) for j in range(2)]
    for k, (i, j) in enumerate(reversed(cells)):  # any order
        _write(path, grid_result, i, j, wall=float(k + 1))
    assert store.completed_cells(path).all()
    back = files.load_result(path)
    for name in ("w2", "grad", "loss", "diverged", "diverged_epoch", "diverged_step", "group",
                 "teacher_w1", "teacher_w2", "teacher_w3", "temperature", "sigma_w",
                 "snapshot_epochs"):
        a, b = getattr(back, name), getattr(grid_result, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert back.config == CFG and back.seed == 5
    assert back.wall_time == sum(range(1, 7))  # the cells' wall times
    ds = store.open_sweep(path)
    assert ds["w2"].encoding["chunks"] == (1, 1, 3, 4, 16, 32)  # one chunk per cell
    assert ds.attrs["format"] == store.SWEEP_FORMAT
    np.testing.assert_array_equal(ds["learning_rate"].values, np.array(TEMPS) * 4)


def test_partial_store_gives_complete_rows_or_columns(tmp_path, grid_result):
    path = _new_store(tmp_path / "s.zarr", grid_result)
    with pytest.raises(ValueError, match=r"0 of 6 cells complete.*dysonsgd sweep"):
        files.load_result(path)
    _write(path, grid_result, 1, 0)
    _write(path, grid_result, 1, 1)  # row 1 complete
    _write(path, grid_result, 2, 0)
    part = files.load_result(path)
    np.testing.assert_array_equal(part.temperature, [1.0])
    np.testing.assert_array_equal(part.w2, grid_result.w2[1:2])
    with pytest.raises(ValueError, match="3 of 6"):
        store.load_sweep(path, partial=False)
    _write(path, grid_result, 0, 0)  # column 0 complete (3 cells) beats row 1 (2 cells)
    part = files.load_result(path)
    np.testing.assert_array_equal(part.sigma_w, [0.5])
    np.testing.assert_array_equal(part.loss, grid_result.loss[:, :1])


def test_data_without_marker_is_not_complete(tmp_path, grid_result, monkeypatch):
    """A writer killed between a cell's data and its marker leaves the cell not done."""
    path = _new_store(tmp_path / "s.zarr", grid_result)
    synced = []
    real_sync = store.CellWriter._sync

    def dies_before_marker(self, where, names):
        real_sync(self, where, names)
        synced.append(names)
        raise KeyboardInterrupt  # stand-in for the kill, right after the data's fsync

    monkeypatch.setattr(store.CellWriter, "_sync", dies_before_marker)
    with pytest.raises(KeyboardInterrupt):
        _write(path, grid_result, 0, 1)
    assert synced == [(*store.CHECKED, integrity.CHECKSUM)]  # data and their record
    ds = store.open_sweep(path)
    np.testing.assert_array_equal(ds["w2"].values[0, 1], grid_result.w2[0, 1])  # data there
    assert not store.completed_cells(path).any()  # but not taken as done
    monkeypatch.undo()
    _write(path, grid_result, 0, 1)
    assert store.completed_cells(path)[0, 1]


def test_write_cell_checks_its_input(tmp_path, grid_result):
    path = _new_store(tmp_path / "s.zarr", grid_result)
    arrays = {name: getattr(grid_result, name)[0, 0] for name in store.CELL_ARRAYS}
    meta = {"cell_wall_time_s": 1.0, "cell_finished_at": 0.0, "cell_session": 0}
    with pytest.raises(ValueError, match="missing"):
        store.write_cell(path, 0, 0, {"w2": arrays["w2"]}, meta)
    with pytest.raises(ValueError, match="w2 must have shape"):
        store.write_cell(path, 0, 0, dict(arrays, w2=arrays["w2"][:2]), meta)
    assert not store.completed_cells(path).any()


def test_not_a_store(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match=r"not a run file|not a Zarr"):
        files.load_result(tmp_path / "d")
    with pytest.raises(ValueError, match="not a Zarr sweep store"):
        store.store_attrs(tmp_path / "d")
    with pytest.raises(ValueError, match="does not exist"):
        files.load_result(tmp_path / "missing.zarr")


def test_existing_path_refused_and_partial_files_removed(tmp_path, grid_result):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".s.zarr.init-{dead.pid}-0000abcd"  # a creation killed midway
    (stale / "w2").mkdir(parents=True)
    alive = tmp_path / f".s.zarr.init-{os.getpid()}-0000abcd"  # one still being built
    alive.mkdir()
    path = _new_store(tmp_path / "s.zarr", grid_result)
    assert not stale.exists() and alive.exists()
    alive.rmdir()
    with pytest.raises(ValueError, match="already exists"):
        _new_store(path, grid_result)
    stray = path / "w2" / "zarr.0123abcd.partial"
    stray.write_bytes(b"half")
    assert store.remove_partial_files(path) == 1 and not stray.exists()
    assert not list(tmp_path.glob(".s.zarr.init-*"))  # the build directory was renamed


# ------------------------------------------------------------------------------------------------
# integrity records (issue 13, class 3)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def complete(tmp_path_factory, grid_result):
    """A store with every cell written (once per module; tests damage copies)."""
    path = _new_store(tmp_path_factory.mktemp("complete") / "s.zarr", grid_result)
    store.CellWriter(path, durable=False).write(
        [(i, j, {n: getattr(grid_result, n)[i, j] for n in store.CELL_ARRAYS},
          {"cell_wall_time_s": 1.0, "cell_finished_at": 0.0, "cell_session": 0})
         for i in range(3) for j in range(2)])
    return path


def _complete_store(path, complete):
    import shutil

    return Path(shutil.copytree(complete, path))


def test_each_cell_records_the_crc32_of_what_was_written(tmp_path, grid_result, complete):
    """The record is zlib.crc32 of each array's bytes as handed to the writer (an oracle
    independent of the store: the input arrays, not what the store reads back)."""
    import zlib

    import zarr

    path = _complete_store(tmp_path / "s.zarr", complete)
    record = zarr.open_group(str(path), mode="r")[integrity.CHECKSUM][...]
    assert record.shape == (3, 2, len(store.CHECKED)) and record.dtype == np.uint32
    for i, j in [(0, 0), (2, 1)]:
        for k, name in enumerate(store.CELL_ARRAYS):
            value = np.ascontiguousarray(getattr(grid_result, name)[i, j])
            assert int(record[i, j, k]) == zlib.crc32(value.tobytes()), name
        wall = np.float64(1.0).tobytes()  # cell_wall_time_s as _write gives it
        assert int(record[i, j, len(store.CELL_ARRAYS)]) == zlib.crc32(wall)
    assert store.verify_sweep(path)["damaged"] == []


def test_a_chunk_zarr_never_stored_is_not_damage(tmp_path, grid_result, complete):
    """An all-false ``diverged`` equals the fill value, so zarr stores no chunk for it: its
    record matches the fill value read back, and the cell is intact."""
    path = _complete_store(tmp_path / "s.zarr", complete)
    i, j = next((i, j) for i in range(3) for j in range(2)
                if not grid_result.diverged[i, j].any())
    assert not (path / "diverged" / "c" / str(i) / str(j) / "0").exists()
    report = store.verify_sweep(path)
    assert report["cells_complete"] == 6 and report["damaged"] == []
    np.testing.assert_array_equal(files.load_result(path).diverged, grid_result.diverged)


def _flip(f):
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


#: damage to one chunk: name -> (array, cell, damage(file), words of the reason)
DAMAGE = {
    "removed": ("w2", (1, 0), lambda f: f.unlink(), "chunk file missing"),
    "flipped byte": ("grad", (2, 1), _flip, "does not match its checksum"),
    "truncated": ("loss", (0, 1), lambda f: f.write_bytes(f.read_bytes()[:10]), "unreadable"),
    "emptied": ("group", (0, 0), lambda f: f.write_bytes(b""), "unreadable"),
    "record removed": (integrity.CHECKSUM, (2, 0), lambda f: f.unlink(), "chunk file missing"),
    "bookkeeping changed": ("cell_wall_time_s", (1, 1), _flip, ""),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_chunk_is_reported_with_its_cell(tmp_path, grid_result, complete, case):
    import zarr

    array, (i, j), damage, words = DAMAGE[case]
    path = _complete_store(tmp_path / "s.zarr", complete)
    arr = zarr.open_group(str(path), mode="r")[array]
    damage(path / array / arr.metadata.encode_chunk_key((i, j) + (0,) * (arr.ndim - 2)))
    report = store.verify_sweep(path)
    assert report["cells_damaged"] == 1
    assert [(d["cell"], d["array"]) for d in report["damaged"]] == [([i, j], array)]
    assert words in report["damaged"][0]["reason"]
    cell = f"cell (T = {TEMPS[i]:g}, sigma_W = {SIGMAS[j]:g})"
    with pytest.raises(InputError) as info:
        files.load_result(path)
    message = str(info.value)
    assert cell in message and array in message and "recomputed" in message
    assert "\n" not in message and message == report["message"]


def test_a_damaged_creation_array_says_to_start_again(tmp_path, grid_result, complete):
    path = _complete_store(tmp_path / "s.zarr", complete)
    _flip(path / "teacher_w1" / "c" / "0" / "0" / "0")
    with pytest.raises(InputError, match=r"teacher_w1 (does not match|unreadable).*rm -r"):
        files.load_result(path)
    assert store.verify_sweep(path)["damaged"][0]["cell"] is None


def test_a_store_without_records_reads_unchecked(tmp_path, grid_result, complete):
    """Stores written before the records existed: read as before, and --verify says that
    nothing could be checked."""
    import shutil

    import zarr

    path = _complete_store(tmp_path / "s.zarr", complete)
    shutil.rmtree(path / integrity.CHECKSUM)
    group = zarr.open_group(str(path), mode="r+")
    del group.attrs[integrity.STATIC_ATTR]
    np.testing.assert_array_equal(files.load_result(path).w2, grid_result.w2)
    report = store.verify_sweep(path)
    assert not report["integrity_records"] and "nothing could be checked" in report["message"]
