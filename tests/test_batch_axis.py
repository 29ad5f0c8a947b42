"""The batch size as a grid axis: train_ensemble(batch_size=[...]), [grid] batch_size, sweeps.

The oracles: the run of one batch size alone (bit for bit: the same seed streams give the same
models), the independent NumPy SGD loop of benchmarks/numpy_baseline.py, and the exact
continuous time t = lr x steps = T x epochs x n_data. Fast runs use the torch backend (no kernel
compilation per batch size) but for the sweep (numba, |B| = 4 and 8: one kernel compiled once
into the disk cache); the numba kernels of |B| = 1 and 8 are checked against torch under `slow`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from dysonsgd._checks import InputError
from dysonsgd.cli import main
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.draws import replica_draws
from dysonsgd.runs import files
from dysonsgd.runs.config import ConfigError, batch_size_path, parse_config
from dysonsgd.runs.sweep import run_sweep, train_grid
from dysonsgd.train import EnsembleResult, train_ensemble
from dysonsgd.train.result import BatchResults

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from numpy_baseline import train_single

F64 = torch.float64
CFG = TeacherStudentConfig(n_data=40)  # |B| = 4 by default
GRID = dict(temperature=[2.0**-3, 2.0], sigma_w=[0.125, 1.0], n_seeds=2, epochs=3,
            snapshots=4, seed=3, dtype=F64, progress=False, backend="torch")
ARRAYS = ("w2", "grad", "loss", "diverged", "diverged_epoch", "diverged_step")


def _same(a: EnsembleResult, b: EnsembleResult) -> None:
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.fixture(scope="module")
def axis() -> BatchResults:
    return train_ensemble(CFG, batch_size=[1, 4, 8], **GRID)


def test_the_axis_does_not_change_the_models_of_each_batch_size(axis):
    assert isinstance(axis, BatchResults) and list(axis) == [1, 4, 8]
    _same(axis[4], train_ensemble(CFG, **GRID))  # the default |B| = 4, no axis
    _same(axis[8], train_ensemble(CFG, batch_size=8, **GRID))
    _same(axis[1], train_ensemble(TeacherStudentConfig(n_data=40, batch_size=1), **GRID))
    for b, res in axis.items():
        assert res.config.batch_size == b and res.config.steps_per_epoch == 40 // b


def test_batch_size_one_of_the_axis_is_plain_sgd(axis):
    # an independent NumPy loop with |B| = 1 and lr = T (the drawn teacher, data and W2(0))
    d = replica_draws(CFG, 3, 1)
    t, sigma = GRID["temperature"][1], GRID["sigma_w"][0]
    ref = train_single(d["x"], d["w1"], d["w2_teacher"], d["w3"], sigma * d["z"] / np.sqrt(32),
                       lr=t * 1, epochs=3, batch_size=1, snapshot_epochs=[0, 1, 2, 3])
    # float64, two implementations (the fused kernel's tanh and sums in another order):
    # the project's float64 path-agreement level, 1e-10 of the largest weight (issue 16);
    # the machines' SIMD families differ by about 1e-12 here
    w2 = axis[1].w2[1, 0, 1]
    np.testing.assert_allclose(w2, ref["w2"], rtol=0, atol=1e-10 * np.abs(ref["w2"]).max())
    np.testing.assert_allclose(axis[1].loss[1, 0, 1], ref["loss"], rtol=1e-11)


def test_fixed_temperature_same_continuous_time_lr_varies(axis):
    t = np.array(GRID["temperature"])
    np.testing.assert_array_equal(axis.learning_rate, np.outer([1, 4, 8], t))
    for res in axis.values():  # t_f = lr x epochs x n_data / |B| = T x epochs x n_data
        np.testing.assert_array_equal(res.time[:, -1], t * 3 * 40)
        np.testing.assert_array_equal(res.temperature, t)


def test_stack_and_xarray_carry_the_batch_axis(axis):
    assert axis.stack("w2").shape == (3, 2, 2, 2, 4, 16, 32)
    ds = axis.to_xarray()
    assert ds["w2"].dims[:2] == ("batch_size", "temperature")
    assert ds["diverged"].dims == ("batch_size", "temperature", "sigma_w", "seed")
    assert ds["teacher_w1"].dims == ("group", "hidden1", "input")
    np.testing.assert_array_equal(ds["learning_rate"].values, axis.learning_rate)
    np.testing.assert_array_equal(ds["w2"].sel(batch_size=8).values, axis[8].w2)


def test_batch_results_refuse_runs_of_different_grids(axis):
    other = train_ensemble(CFG, **{**GRID, "temperature": [0.5]})
    with pytest.raises(InputError, match="share the grid"):
        BatchResults({4: other, 8: axis[8]})
    with pytest.raises(InputError, match=r"config\.batch_size"):
        BatchResults({2: axis[4]})


@pytest.mark.parametrize("value", [3, 0, -4, [4, 3], [1, 1], [], [[1, 2]], 2.0, True, [True],
                                   "4", [2.5]])
def test_bad_batch_sizes_are_refused_before_training(value, monkeypatch):
    from dysonsgd.train import ensemble

    def no_training(plan):  # pragma: no cover - must not be reached
        raise AssertionError("trained before checking batch_size")

    monkeypatch.setattr(ensemble, "train_torch", no_training)
    with pytest.raises(InputError, match="batch_size"):
        train_ensemble(CFG, batch_size=value, **GRID)


@pytest.mark.slow
def test_numba_kernels_of_other_batch_sizes_match_the_torch_backend(axis):
    # float64, fixed order: the two backends agree to rounding, which up to 120 steps at T = 2
    # amplify to ~1e-12 (the margin of tests/test_training.py's comparison with the NumPy loop)
    res = train_ensemble(CFG, batch_size=[1, 4, 8], **{**GRID, "backend": "numba"})
    for b in (1, 4, 8):
        np.testing.assert_allclose(res[b].w2, axis[b].w2, rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# configs, train_grid, sweeps, the CLI
# ------------------------------------------------------------------------------------------------

TOML = {
    "name": "axis",
    "grid": {"temperature": [0.25, 2.0], "inv_sigma_w": [8.0], "seeds": 2,
             "batch_size": [4, 8]},
    "training": {"epochs": 2, "snapshots": 3, "n_data": 40, "dtype": "float64", "seed": 1},
}


def _config(changes=None):
    mapping = json.loads(json.dumps(TOML))
    for (table, key), value in (changes or {}).items():
        if value is None:
            mapping[table].pop(key)
        else:
            mapping[table][key] = value
    return parse_config(mapping, source="axis.toml")


def test_grid_batch_size_parses_and_each_batch_size_is_the_plain_config():
    cfg = _config()
    assert cfg.batch_size == (4, 8) and cfg.batch_sizes == (4, 8)
    plain = _config({("grid", "batch_size"): None, ("training", "batch_size"): 4})
    assert plain.batch_size == () and plain.batch_sizes == (4,)
    assert cfg.for_batch_size(4) == plain  # same numbers: same fingerprint, same models
    assert cfg.for_batch_size(4).fingerprint() == plain.fingerprint()
    assert cfg.fingerprint() != plain.fingerprint()
    assert parse_config(cfg.to_dict()) == cfg
    assert cfg.model_steps() == 2 * 1 * 2 * 2 * (10 + 5)
    with pytest.raises(InputError, match="batch_size"):
        cfg.for_batch_size(2)


@pytest.mark.parametrize(("value", "reason"), [
    ([3], "entry 0 must divide n_data (40), got 3"),
    ([4, 0], "entry 1 must be an integer >= 1"),
    ([4, 4], "duplicate value 4"),
    ([2.0], "entry 0 must be an integer >= 1"),
    ([], "non-empty array"),
    (4, "non-empty array"),
])
def test_bad_grid_batch_sizes_name_the_key(value, reason):
    with pytest.raises(ConfigError) as info:
        _config({("grid", "batch_size"): value})
    assert str(info.value).startswith("axis.toml: [grid] batch_size: ")
    assert reason in info.value.reason


def test_batch_size_in_both_tables_is_refused():
    with pytest.raises(ConfigError, match=r"\[grid\] batch_size: give the batch size either"):
        _config({("training", "batch_size"): 4})


def test_train_grid_and_the_sweep_of_a_batch_axis(tmp_path):
    cfg = _config()
    runs = train_grid(cfg)
    assert isinstance(runs, BatchResults) and cfg.matches(runs)
    assert not cfg.matches(runs[4]) and cfg.for_batch_size(4).matches(runs[4])
    _same(runs[4], train_grid(cfg.for_batch_size(4)))
    out = tmp_path / "axis.zarr"
    summary = run_sweep(cfg, out, pack_cells=2)
    assert summary["batch_size"] == [4, 8] and summary["cells_computed"] == 4
    assert summary["store"] == [str(batch_size_path(out, b)) for b in (4, 8)]
    for b in (4, 8):
        _same(files.load_result(batch_size_path(out, b)), runs[b])
    assert run_sweep(cfg, out)["cells_skipped"] == 4  # resumes per store


def test_cli_train_writes_one_run_per_batch_size(tmp_path, capsys):
    out = tmp_path / "run.nc"
    argv = ["train", "--temperature", "0.5", "--sigma-w", "0.125", "--epochs", "1",
            "--n-data", "40", "--batch-size", "2", "4", "--backend", "torch", "--dtype",
            "float64", "--no-progress", "--json", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["batch_size"] == [2, 4]
    assert [r["model_steps"] for r in summary["runs"]] == [20, 10]
    ref = train_ensemble(CFG, temperature=0.5, sigma_w=0.125, epochs=1, dtype=F64,
                         progress=False, backend="torch", batch_size=2)
    got = EnsembleResult.from_xarray(xr.load_dataset(tmp_path / "run.b2.nc", engine="h5netcdf"))
    np.testing.assert_array_equal(got.w2, ref.w2)
    assert got.config.batch_size == 2 and (tmp_path / "run.b4.nc").exists()
