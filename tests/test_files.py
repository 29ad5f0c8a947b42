"""Run files (dysonsgd.runs.files): netCDF4 written through h5netcdf, compressed, read back bit
for bit with the dtypes kept; the retired .npz layout and netCDF3 .nc read, never written.

The oracles are the bytes themselves (``ndarray.tobytes``, so NaN payloads count), the HDF5
file as h5py sees it (signature, netCDF4 marker, filters), and two files that the previous
writer made from one run (``tests/data/legacy-run.npz`` and ``legacy-run-netcdf3.nc``, written
by dysonsgd at commit 9ad2b7c from ``train_ensemble(TeacherStudentConfig(n_data=8,
batch_size=4), temperature=[0.5], sigma_w=[1.0], n_seeds=1, epochs=1, snapshots=2, seed=3,
dtype="float64")``), decoded by two different readers (numpy's zip archive, scipy's netCDF3).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from dysonsgd._checks import InputError
from dysonsgd.cli import main
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.runs import files
from dysonsgd.train import train_ensemble

DATA = Path(__file__).resolve().parent / "data"
LEGACY_NPZ = DATA / "legacy-run.npz"
LEGACY_NC3 = DATA / "legacy-run-netcdf3.nc"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
RUN_FIELDS = ("w2", "grad", "loss", "diverged", "diverged_epoch", "diverged_step", "group",
              "teacher_w1", "teacher_w2", "teacher_w3", "temperature", "sigma_w",
              "snapshot_epochs", "spawn_keys")


@pytest.fixture(scope="module", params=["float32", "float64"])
def run(request):
    # relu at T = 8 diverges for some seeds: NaN losses and frozen snapshots are in the file
    return train_ensemble(TeacherStudentConfig(n_data=40, batch_size=4, activation="relu"),
                          temperature=[0.25, 8.0], sigma_w=[0.5, 2.0], n_seeds=3, epochs=4,
                          snapshots=3, seed=5, dtype=request.param, progress=False)


def _same_bits(a: np.ndarray, b: np.ndarray, name: str) -> None:
    assert a.dtype == b.dtype, name
    assert a.shape == b.shape, name
    assert a.tobytes() == b.tobytes(), name


def test_run_round_trips_bit_for_bit_with_dtypes(run, tmp_path):
    assert run.diverged.any() and np.isnan(run.loss).any()
    path = files.save_result(run, tmp_path / "run.nc")
    written = run.to_xarray()
    back = xr.load_dataset(path, engine="h5netcdf")
    assert set(back.variables) == set(written.variables)
    for name, var in written.variables.items():
        _same_bits(back[name].values, var.values, name)
    assert back.attrs == written.attrs
    assert back["w2"].dtype == np.dtype(run.dtype)  # float32 stays float32
    got = files.load_result(path)
    for name in RUN_FIELDS:
        _same_bits(np.asarray(getattr(got, name)), np.asarray(getattr(run, name)), name)
    assert got.config == run.config and got.seed == run.seed and got.dtype == run.dtype


def test_dataset_keeps_every_dtype_and_nan_payload(tmp_path):
    """Integer widths netCDF3 could not hold, bool, and NaNs with sign and payload (a fill value
    would turn them into the one canonical NaN on reading)."""
    rng = np.random.default_rng(7)
    nans = np.array([0x7FF8000000000123, 0xFFF8000000000000, 0x7FF8000000000000],
                    dtype=np.uint64).view(np.float64)
    data = {f"{k}{w}": ("n", rng.integers(0, 100, 6).astype(f"{k}{w}"))
            for k in ("int", "uint") for w in (8, 16, 32, 64)}
    data["big"] = ("n", np.array([2**62, -(2**62), 2**31, -1, 0, 1], dtype=np.int64))
    data["flag"] = ("n", np.array([True, False, True, True, False, False]))
    data["f32"] = ("n", rng.standard_normal(6).astype(np.float32))
    data["f64"] = ("n", np.concatenate([nans, [np.inf, -np.inf, -0.0]]))
    data["scalar"] = ((), np.float64(3.5))
    data["empty"] = ("m", np.zeros(0, dtype=np.int64))
    ds = xr.Dataset(data, attrs={"summary": json.dumps({"a": 1}), "count": np.int64(3)})
    back = xr.load_dataset(files.save_dataset(ds, tmp_path / "d.nc"), engine="h5netcdf")
    for name, var in ds.variables.items():
        _same_bits(back[name].values, var.values, name)
    assert back.attrs == ds.attrs


def test_file_is_compressed_netcdf4(run, tmp_path):
    import h5py

    path = files.save_result(run, tmp_path / "run.nc")
    assert path.read_bytes()[:8] == HDF5_SIGNATURE
    with h5py.File(path, "r") as h5:
        assert "_NCProperties" in h5.attrs  # the netCDF4 marker netCDF-C reads
        numeric = [name for name, d in h5.items()
                   if isinstance(d, h5py.Dataset) and d.shape and d.size
                   and d.dtype.kind in "biuf" and "_Netcdf4Dimid" in d.attrs
                   and "CLASS" not in d.attrs]  # the data, not the bare dimension scales
        assert {"w2", "grad", "loss", "teacher_w1"} <= set(numeric)
        for name in numeric:
            assert (h5[name].compression, h5[name].shuffle) == ("gzip", True), name


def test_compression_shrinks_redundant_data(tmp_path):
    # 8 MB of a repeated pattern: gzip after the shuffle must reach under a tenth (it reaches
    # far less; the margin is the declared one: "compressed", not a ratio we tune to)
    ds = xr.Dataset({"x": (("a", "b"), np.tile(np.arange(1000.0), (1000, 1)))})
    path = files.save_dataset(ds, tmp_path / "x.nc")
    assert path.stat().st_size < ds["x"].nbytes / 10


def test_legacy_files_read_the_same_run():
    """The old .npz (zip of arrays, JSON attrs) and the old netCDF3 .nc of one run agree."""
    assert LEGACY_NC3.read_bytes()[:3] == b"CDF"
    npz, nc3 = files.load_result(LEGACY_NPZ), files.load_result(LEGACY_NC3)
    assert npz.config == nc3.config == TeacherStudentConfig(n_data=8, batch_size=4)
    assert npz.w2.shape == (1, 1, 1, 2, 16, 32) and npz.w2.dtype == np.float64
    for name in RUN_FIELDS:
        a, b = np.asarray(getattr(npz, name)), np.asarray(getattr(nc3, name))
        _same_bits(a, b, name)  # netCDF3's int32 is widened back to int64 on reading
    assert npz.seed == nc3.seed == 3


@pytest.mark.parametrize("legacy", [LEGACY_NPZ, LEGACY_NC3], ids=lambda p: p.suffix)
def test_convert_run_writes_netcdf4(legacy, tmp_path):
    old = files.load_result(legacy)
    target = files.convert_run(legacy, tmp_path / "new.nc")
    assert target.read_bytes()[:8] == HDF5_SIGNATURE
    new = files.load_result(target)
    for name in RUN_FIELDS:
        _same_bits(np.asarray(getattr(new, name)), np.asarray(getattr(old, name)), name)
    assert new.config == old.config
    with pytest.raises(InputError, match="source"):
        files.convert_run(target, target)


def test_npz_is_refused_with_what_to_do(tmp_path):
    res = files.load_result(LEGACY_NPZ)
    for write in (lambda p: files.save_result(res, p),
                  lambda p: files.save_dataset(res.to_xarray(), p)):
        with pytest.raises(InputError, match=r"give a \.nc file.*convert_run") as info:
            write(tmp_path / "x.npz")
        assert "\n" not in str(info.value)
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(InputError, match="must end in"):
        files.save_result(res, tmp_path / "x.csv")


def test_the_advertised_conversion_command_works(tmp_path):
    """The code of the refusal message's command, run as printed (OLD, NEW filled in; in this
    process: ``python -c`` would only add the interpreter's start)."""
    message = files.RETIRED_SUFFIXES[".npz"]
    (command,) = re.findall(r'python -c "([^"]+)"', message)
    command = command.replace("OLD.npz", str(LEGACY_NPZ)).replace("NEW.nc",
                                                                  str(tmp_path / "NEW.nc"))
    exec(compile(command, "<the message's command>", "exec"), {})
    np.testing.assert_array_equal(files.load_result(tmp_path / "NEW.nc").w2,
                                  files.load_result(LEGACY_NPZ).w2)


def test_sde_reads_a_legacy_run_and_refuses_npz_output(tmp_path, capsys):
    argv = ["sde", "spacing", "--from", str(LEGACY_NPZ), "--paths-per-model", "2",
            "--steps-per-interval", "5", "--json", "--out"]
    assert main([*argv, str(tmp_path / "t.npz")]) == 2
    err = capsys.readouterr().err
    assert "give a .nc file" in err and "convert_run" in err
    assert not (tmp_path / "t.npz").exists()
    assert main([*argv, str(tmp_path / "t.nc")]) == 0
    summary = json.loads(capsys.readouterr().out)
    ds = xr.load_dataset(tmp_path / "t.nc", engine="h5netcdf")
    assert json.loads(ds.attrs["summary"]) == summary
