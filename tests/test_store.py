"""Runs on disk: .nc files and Zarr sweep stores (dysonsgd.runs.store); tests/test_files.py
has the file formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest

from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.runs import files, store
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
    assert synced == [(*store.CELL_ARRAYS, *store.CELL_META)]
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
