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
paths_per_model = 2
steps_per_interval = 10
# 6 epochs are too short for the observed-convergence rule (S over the second half)
applies = {{ convergence_verdict = [] }}
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


def test_tiny_config_passes_and_writes_report(tiny_run):
    _, _, out, code = tiny_run
    assert code == 0
    text = (out / "report.md").read_text()
    assert "checks PASS" in text and "FAIL" not in text
    assert (out / "spacing.png").stat().st_size > 0 and (out / "spacing.pdf").exists()


def test_json_lists_every_check_and_fail_exits_1(tiny_run, capsys):
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
    for cell in summary["cells"]:  # snapshots 2 and 3 are predicted from snapshot 1
        assert len(cell["spacing_ks_by_snapshot"]) == 2
        assert all(0 <= d <= 1 for d in cell["spacing_ks_by_snapshot"])
    (ks,) = [c for c in summary["checks"]
             if c["check"] == "spacing_ks" and c["temperature"] == 0.03125]  # the jamming cell
    jam = next(c for c in summary["cells"] if c["expected_phase"] == "jamming")
    assert jam["spacing_ks_by_snapshot"][-1] == pytest.approx(ks["ks_distance"])
    assert all(c["check"] in ("phase", "spacing_ks", "spacing_mean", "eigenvalue_mean",
                              "eigenvalue_spread", "convergence_verdict")
               for c in summary["checks"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("temperature = [0.03125", "temprature = [0.03125"), "temprature"),
        (lambda t: t.replace("[0.03125, 4.0]", "[-0.03125, 4.0]"), "temperature"),
        (lambda t: t.replace("paths_per_model = 2", "paths_per_modell = 2"), "paths_per_modell"),
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
def test_embedded_quick_config_with_the_complete_equation(tmp_path, capsys):
    """The acceptance run of issue 11: `dysonsgd validate` with no CONFIG integrates the
    complete equation; no predicted path has x_1 < 0 or breaks, in any cell; the exit status
    says the verdict (docs/validate.md: two ordered-cell checks fail today)."""
    code = main(["validate", "--out", str(tmp_path / "report"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == (0 if summary["passed"] else 1)
    assert len(summary["checks"]) >= 40
    predicted = [c for c in summary["cells"] if "spacing_dbm_mean" in c]
    assert len(predicted) == 9
    for cell in predicted:
        assert cell["variant"] == "complete"
        assert cell["negative_fraction"] == 0 and cell["broken_paths"] == 0
        lo, hi = cell["spacing_dbm_ratio_ci95"]
        assert lo <= cell["spacing_dbm_ratio"] <= hi
        assert "spacing_dbm_mean_paper" in cell and "negative_fraction_paper" in cell


@pytest.mark.slow
def test_embedded_quick_config_passes_with_the_paper_equation(tmp_path, capsys):
    """The same run with (4.3) and (4.8) as printed: every check PASS (as before issue 11)."""
    from dysonsgd.runs.config import bundled_config

    text = bundled_config("quick").read_text()
    config = tmp_path / "quick-paper.toml"
    config.write_text(text.replace('convention = "release"',
                                   'convention = "release"\nvariant = "paper"'))
    code = main(["validate", str(config), "--out", str(tmp_path / "report"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["passed"]
