"""``dysonsgd monitor report``: figures and the per-layer summary of monitor stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dysonsgd.cli import main
from dysonsgd.monitor import SpectrumMonitor, open_store


def _store(path, lr: float, *, steps: int = 12):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = torch.randn(24, 6), torch.randn(24, 4)
    with SpectrumMonitor(model, opt, every=4, probe=(x[:12], y[:12]), loss_fn=nn.MSELoss(),
                         store=path, batch_size=6):
        for s in range(steps):
            opt.zero_grad()
            nn.functional.mse_loss(model(x[s % 4 * 6:s % 4 * 6 + 6]),
                                   y[s % 4 * 6:s % 4 * 6 + 6]).backward()
            opt.step()
    return path


def test_report_writes_the_figures_and_summarises_the_last_records(tmp_path, capsys):
    stores = [_store(tmp_path / "a.zarr", 0.05), _store(tmp_path / "b.zarr", 0.2)]
    out = tmp_path / "figs"
    assert main(["monitor", "report", *map(str, stores), "--out", str(out), "--format", "pdf",
                 "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    for name in ("spectrum-0", "spectrum-1", "spacing", "signal-to-noise"):
        assert (out / f"{name}.pdf").stat().st_size > 1000
    for store in stores:
        ds = open_store(store)
        row = payload["runs"][str(store)]["0.weight"]
        assert row["step"] == 12 and row["n_rows"] == 6 and row["n_cols"] == 8
        assert row["transposed"] is True  # nn.Linear(6, 8): an 8 x 6 weight
        assert row["level_spacing"] == ds["0.weight__level_spacing"].values[-1]
        assert row["signal_to_noise"] == pytest.approx(
            -ds["0.weight__k_s"].values[-1] / ds["0.weight__v_s"].values[-1], rel=1e-14)
        assert row["converged"] in (0.0, 1.0)
        assert np.isclose(row["temperature"], float(ds["0.weight__temperature"].values[-1]))


def test_report_table_and_refusals(tmp_path, capsys):
    store = _store(tmp_path / "a.zarr", 0.1)
    assert main(["monitor", "report", str(store), "--out", str(tmp_path / "o"), "--dpi",
                 "40"]) == 0  # the default formats: PNG and PDF
    text = capsys.readouterr().out
    assert "0.weight" in text and "2.weight" in text and "signal_to_noise" in text
    for name in ("spectrum", "spacing", "signal-to-noise"):
        assert (tmp_path / "o" / f"{name}.png").exists()
        assert (tmp_path / "o" / f"{name}.pdf").exists()
    assert main(["monitor", "report", str(tmp_path / "nothing"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "is not a Zarr store" in capsys.readouterr().err
    model = nn.Sequential(nn.Linear(3, 3))
    mon = SpectrumMonitor(model, torch.optim.SGD(model.parameters(), lr=0.1),
                          store=tmp_path / "empty.zarr", record_initial=False)
    mon.close(record_final=False)
    assert main(["monitor", "report", str(tmp_path / "empty.zarr"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "holds no completed record" in capsys.readouterr().err
