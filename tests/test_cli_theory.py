"""The ``dysonsgd`` command: version, ``theory mp``, ``theory sigma-c`` and ``theory report``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dysonsgd import __version__
from dysonsgd.cli import main


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("entry", ["console-script", "module"])
def test_version(entry):
    script = Path(sys.executable).with_name("dysonsgd")
    if entry == "console-script":
        if not script.exists():
            pytest.skip("package not installed with its console script in this environment")
        argv = [str(script), "--version"]
    else:
        argv = [sys.executable, "-m", "dysonsgd", "--version"]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert out.returncode == 0
    assert out.stdout.strip() == f"dysonsgd {__version__}"


def test_theory_mp_json(capsys):
    data = run_json(capsys, "theory", "mp", "--ratio", "0.5", "--sigma-w", "0.125", "--json")
    assert data["x_plus"] == pytest.approx((1 / 64) * (1 + math.sqrt(0.5)) ** 2, rel=1e-14)
    assert data["x_minus"] == pytest.approx((1 / 64) * (1 - math.sqrt(0.5)) ** 2, rel=1e-14)
    assert data["mean"] == pytest.approx(1 / 64)
    assert data["variance"] == pytest.approx(0.5 / 64**2)
    assert data["moments"][1] == pytest.approx((1 / 64) ** 2 * 1.5)
    assert data["initial_spacing_bound"] == pytest.approx(4 / 64 * math.sqrt(0.5) / 15)
    assert data["spread_bound"] == pytest.approx(data["x_plus"] - data["x_minus"])


def test_theory_mp_table(capsys):
    assert main(["theory", "mp", "--sigma-w", "256"]) == 0
    out = capsys.readouterr().out
    assert "x_plus" in out and "190986" in out


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["--ratio", "0", "--sigma-w", "1"], "ratio"),
        (["--ratio", "1.5", "--sigma-w", "1"], "ratio"),
        (["--sigma-w", "-1"], "sigma-w"),
        (["--sigma-w", "nan"], "sigma-w"),
        (["--sigma-w", "1", "--n2", "1"], "n"),
    ],
)
def test_theory_mp_bad_input(capsys, argv, name):
    assert main(["theory", "mp", *argv]) == 2
    err = capsys.readouterr().err
    assert "error" in err and name in err


def test_theory_sigma_c_json(capsys):
    data = run_json(capsys, "theory", "sigma-c", "--json")
    assert data["sigma_c2"] == 0.5
    assert data["sigma_c2_symbolic"] == "1/2"
    assert data["inv_sigma_w_c_paper"] == pytest.approx(math.sqrt(2))
    assert data["inv_sigma_w_c_exact"] == pytest.approx(math.sqrt(2 * 0.343747), rel=1e-4)


def test_theory_report_json(capsys):
    data = run_json(capsys, "theory", "report", "--json")
    assert data["paper_check"]["x_plus_at_inv_sigma_w_8"] == pytest.approx(0.046, abs=1e-3)
    assert data["paper_check"]["x_plus_at_inv_sigma_w_2^-8"] == pytest.approx(1.9e5, rel=0.01)
    assert len(data["marchenko_pastur_grid"]) == 12
    assert data["spacing_coefficients_symbolic_vs_numeric_N5"] < 1e-12
    assert data["wishart_2_24"]["E[J_ii]/sigma_W^2"] == pytest.approx(0.5)


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "theory" in capsys.readouterr().out
