"""``dysonsgd validate``: a tiny config end to end, FAIL exit status, refusals before training."""

from __future__ import annotations

import json

import pytest

from dysonsgd.cli import main

TINY = """
name = "tiny"
[grid]
temperature = [0.03125, 4.0]
inv_sigma_w = [8.0, 0.00390625]
seeds = 4
[training]
epochs = 6
snapshots = 4
n_data = 200
dtype = "float64"
[expect]
phases = [
  {{ temperature = 0.03125, inv_sigma_w = 0.00390625, phase = "jamming" }},
  {{ temperature = 4.0, inv_sigma_w = 8.0, phase = "{hot}" }},
]
[validate]
paths_per_model = 50
steps_per_interval = 5
closed_loop_steps = 20
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("validate")
    cfg = d / "tiny.toml"
    cfg.write_text(TINY.format(hot="high-temperature"))
    out = d / "report"
    code = main(["validate", str(cfg), "--out", str(out), "--save-run", str(d / "run.nc"),
                 "--quiet"])
    return d, cfg, out, code


def test_tiny_config_writes_report_and_exit_status_says_the_verdict(tiny_run, capsys):
    d, cfg, out, code = tiny_run
    text = (out / "report.md").read_text()
    assert "## Controls (replay forecast)" in text and "power over the negative controls" in text
    assert (out / "spacing.png").stat().st_size > 0 and (out / "spacing.pdf").exists()
    again = main(["validate", str(cfg), "--run", str(d / "run.nc"), "--out", str(out),
                  "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert again == code == (0 if summary["passed"] else 1)


def test_json_has_forecasts_controls_and_a_wrong_phase_exits_1(tiny_run, capsys):
    d, _, out, _ = tiny_run
    wrong = d / "wrong.toml"
    wrong.write_text(TINY.format(hot="ordered"))  # T = 4 is not ordered: the phase check fails
    code = main(["validate", str(wrong), "--run", str(d / "run.nc"), "--out", str(out),
                 "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 and summary["passed"] is False
    phase = [c for c in summary["checks"] if c["check"] == "phase"]
    assert {c["verdict"] for c in phase} == {"PASS", "FAIL"}
    failed = next(c for c in phase if c["verdict"] == "FAIL")
    assert failed["temperature"] == 4.0 and failed["observed"] == "high-temperature"
    assert failed["as_expected"] is False
    assert {c["forecast"] for c in summary["checks"]} == {"none", "replay", "cross-fitted",
                                                          "closed-loop"}
    assert all(c["verdict"] in ("PASS", "FAIL", "NO POWER") for c in summary["checks"])
    names = [c["name"] for c in summary["controls"]]
    assert len(names) == 7 and "T x 4" in names and "simulated from the theory" in names
    for c in summary["controls"]:
        assert {"name", "expected", "verdict", "forecast"} <= set(c)
        assert c["expected"] == ("PASS" if c["kind"] == "positive" else "FAIL")
    for cell in summary["cells"]:  # snapshots 2 and 3 are predicted from snapshot 1
        assert len(cell["spacing_ks_by_snapshot"]) == 2
        assert all(0 <= x <= 1 for x in cell["spacing_ks_by_snapshot"])
        assert "spacing_dbm_mean_paper" in cell


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("temperature = [0.03125", "temprature = [0.03125"), "temprature"),
        (lambda t: t.replace("[0.03125, 4.0]", "[-0.03125, 4.0]"), "temperature"),
        (lambda t: t.replace("paths_per_model = 50", "paths_per_modell = 50"),
         "paths_per_modell"),
        (lambda t: t.replace('phase = "jamming"', 'phase = "glass"'), "phase"),
        (lambda t: t.replace("inv_sigma_w = 0.00390625, phase", "inv_sigma_w = 2.0, phase"),
         "inv_sigma_w: 2 is not in the grid"),
    ],
)
def test_bad_config_is_refused_before_training(tmp_path, capsys, edit, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(edit(TINY.format(hot="high-temperature")))
    assert main(["validate", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and message in err
    assert not (tmp_path / "r").exists()


def test_run_from_another_config_is_refused(tiny_run, tmp_path, capsys):
    d, _, _, _ = tiny_run
    other = tmp_path / "other.toml"
    other.write_text(TINY.format(hot="high-temperature").replace("epochs = 6", "epochs = 8"))
    assert main(["validate", str(other), "--run", str(d / "run.nc"), "--quiet"]) == 2
    assert "not made by this config" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_quick_config(tmp_path, capsys):
    """The acceptance run of issue 12: `dysonsgd validate` with no CONFIG. Every negative
    control FAILs, the positive control PASSes, each check has its power, the closed-loop
    forecast is scored, no path of the complete equation breaks, and exit 0 means every
    verdict was the expected one."""
    code = main(["validate", "--out", str(tmp_path / "report"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == (0 if summary["passed"] else 1)
    for c in summary["controls"]:
        assert c["verdict"] == c["expected"], c["name"]
    assert {c["forecast"] for c in summary["checks"]} >= {"replay", "cross-fitted",
                                                          "closed-loop"}
    assert all(p["power"] is None or 0 <= p["power"] <= 1 for p in summary["power"].values())
    for c in summary["checks"]:
        if c["check"] == "positivity":
            assert c["verdict"] == "PASS", c
