"""The ``dysonsgd train`` sub-command: output files, summary, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from dysonsgd.cli import main
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.train import EnsembleResult, train_ensemble


def test_train_writes_netcdf_and_json_summary(tmp_path, capsys):
    out = tmp_path / "run.nc"
    argv = ["train", "--temperature", "0.03125", "4", "--sigma-w", "0.125", "--seeds", "3",
            "--epochs", "2", "--n-data", "200", "--seed", "5", "--out", str(out), "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["models"] == 6 and summary["grid"] == [2, 1, 3]
    assert summary["model_steps"] == 6 * 2 * 50
    assert summary["diverged"] == 0 and summary["model_steps_per_s"] > 0
    assert "model-step/s" in captured.err  # the progress bar
    res = EnsembleResult.from_xarray(xr.load_dataset(out, engine="h5netcdf"))
    ref = train_ensemble(TeacherStudentConfig(n_data=200), temperature=[0.03125, 4.0],
                         sigma_w=0.125, n_seeds=3, epochs=2, seed=5, progress=False)
    np.testing.assert_array_equal(res.w2, ref.w2)
    assert list(res.snapshot_epochs) == [0, 1, 2]


def test_train_table_and_npz_refused(tmp_path, capsys):
    out = tmp_path / "run.nc"
    argv = ["train", "--temperature", "0.1", "--sigma-w", "1", "--epochs", "1", "--n-data",
            "40", "--dtype", "float64", "--activation", "relu", "--no-progress", "--out",
            str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "dysonsgd train" in text and "model_steps_per_s" in text
    ds = xr.load_dataset(out, engine="h5netcdf")
    assert ds["w2"].shape == (1, 1, 1, 2, 16, 32) and ds["w2"].dtype == np.float64
    assert json.loads(ds.attrs["config"])["activation"] == "relu"
    # the retired .npz layout: refused before training, saying what to do instead
    argv[-1] = str(tmp_path / "run.npz")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "give a .nc file" in err and "convert_run" in err
    assert not (tmp_path / "run.npz").exists()


def test_paper_grid_fills_the_missing_axis(tmp_path, capsys):
    out = tmp_path / "g.nc"
    argv = ["train", "--paper-grid", "--temperature", "0.5", "--epochs", "1", "--n-data", "8",
            "--no-progress", "--json", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["grid"] == [1, 12, 1]
    ds = xr.load_dataset(out, engine="h5netcdf")
    np.testing.assert_allclose(ds["inv_sigma_w"].values, 2.0 ** -np.arange(-3, 9))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--temperature", "-1", "--sigma-w", "1"], "temperature"),
        (["--temperature", "nan", "--sigma-w", "1"], "temperature"),
        (["--temperature", "1", "--sigma-w", "0"], "sigma_w"),
        (["--sigma-w", "1"], "temperature"),
        (["--temperature", "1", "--sigma-w", "1", "--batch-size", "3"], "batch_size"),
        (["--temperature", "1", "--sigma-w", "1", "--device", "tpu"], "device"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, capsys, extra, message):
    argv = ["train", "--epochs", "1", "--out", str(tmp_path / "x.nc"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err and message in err
    assert not (tmp_path / "x.nc").exists()


def test_bad_output_suffix(tmp_path, capsys):
    argv = ["train", "--temperature", "1", "--sigma-w", "1", "--epochs", "1", "--out",
            str(tmp_path / "x.csv")]
    assert main(argv) == 2
    assert "out" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".nc"])
def test_load_result_roundtrip(tmp_path, suffix):
    from dysonsgd.model.config import TeacherStudentConfig
    from dysonsgd.runs.files import load_result, save_result
    from dysonsgd.train import train_ensemble

    res = train_ensemble(TeacherStudentConfig(n_data=40, batch_size=4), temperature=[0.5],
                         sigma_w=[1.0, 2.0], n_seeds=2, epochs=2, snapshots=3, progress=False)
    back = load_result(save_result(res, tmp_path / f"run{suffix}"))
    np.testing.assert_array_equal(back.w2, res.w2)
    np.testing.assert_array_equal(back.loss, res.loss)
    np.testing.assert_array_equal(back.teacher_w2, res.teacher_w2)
    assert back.config == res.config
    with pytest.raises(ValueError, match="run"):
        load_result(tmp_path / "missing.nc")
