"""The ``dysonsgd sde`` sub-command: integration from a run's measured coefficients."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from dysonsgd.cli import main
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.runs.files import save_result
from dysonsgd.train import train_ensemble


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    res = train_ensemble(TeacherStudentConfig(n_data=200, batch_size=4), temperature=[0.25],
                         sigma_w=[0.125, 256.0], n_seeds=4, epochs=6, snapshots=4, seed=1,
                         progress=False, dtype="float64")
    return save_result(res, tmp_path_factory.mktemp("run") / "run.nc")


def test_spacing_json_and_netcdf(run_file, tmp_path, capsys):
    out = tmp_path / "sp.nc"
    argv = ["sde", "spacing", "--from", str(run_file), "--snapshot", "1", "--sigma-w", "256",
            "--paths-per-model", "5", "--out", str(out), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    (cell,) = summary["cells"]
    assert cell["models"] == 4 and cell["paths"] == 20 and cell["broken_paths"] == 0
    ds = xr.load_dataset(out, engine="h5netcdf")
    pred, obs = ds["T0_S1_predicted"].values, ds["T0_S1_observed"].values
    assert pred.shape == (3, 20, 1) and obs.shape == (4, 3, 1)
    # the trajectories start at each model's observed spacing
    np.testing.assert_allclose(pred[0, :, 0], np.repeat(obs[:, 0, 0], 5))
    # at sigma_W = 256 the weights barely move (jamming): the prediction stays on the data
    ratio = cell["final_spacing_predicted_mean"] / cell["final_spacing_observed_mean"]
    assert abs(ratio - 1) < 0.02


def test_dyson_all_cells(run_file, tmp_path, capsys):
    out = tmp_path / "dy.nc"
    assert main(["sde", "dyson", "--from", str(run_file), "--paths-per-model", "2",
                 "--steps-per-interval", "20", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["cells"]) == 2
    z = xr.load_dataset(out, engine="h5netcdf")
    assert z["T0_S0_predicted"].shape == (4, 8, 16)
    np.testing.assert_array_equal(z["T0_S0_models"], np.repeat(np.arange(4), 2))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--snapshot", "3"], "snapshot"),
        (["--temperature", "0.3"], "temperature"),
        (["--paths-per-model", "0"], "paths-per-model"),
        (["--solver", "rk4"], "solver"),
        (["--out", "x.txt"], "out"),
    ],
)
def test_bad_input_is_refused(run_file, extra, message, capsys):
    assert main(["sde", "dyson", "--from", str(run_file), *extra]) == 2
    assert message in capsys.readouterr().err


def test_missing_run_is_refused(tmp_path, capsys):
    assert main(["sde", "spacing", "--from", str(tmp_path / "none.nc")]) == 2
    assert "does not exist" in capsys.readouterr().err
