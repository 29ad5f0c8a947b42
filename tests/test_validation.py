"""dysonsgd.analysis.validation: config tables, the observed-convergence rule, the checks."""

from __future__ import annotations

import numpy as np
import pytest

from dysonsgd.analysis import spec, validation
from dysonsgd.runs.validation_config import (
    parse_diagram_table,
    parse_expect_phases,
    parse_findings,
    parse_validate_table,
)


def test_defaults_and_overrides():
    tol, options, findings = parse_validate_table(
        {"alpha": 0.01, "paths_per_model": 60, "forecasts": ["replay"]})
    assert tol["alpha"] == 0.01 and tol["growth_threshold"] == 0.15
    assert tol["equivalence_margin"] == spec.DEFAULT_TOLERANCES["equivalence_margin"]
    assert options["paths_per_model"] == 60 and options["forecasts"] == ("replay",)
    assert options["variant"] == "complete" and options["controls"] is True
    assert findings == ()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"alpah": 0.01}, "alpah: unknown key"),
        ({"alpha": 0.7}, r"alpha: must lie in \(0, 0.5\)"),
        ({"alpha": "x"}, "alpha: must be a number"),
        ({"equivalence_margin": 0.8}, "equivalence_margin: must be > 1"),
        ({"convention": "release"}, "convention: unknown key"),
        ({"paths_per_model": 10}, "paths_per_model: must be >= 50"),
        ({"paths_per_model": 52.5}, "paths_per_model: must be of type int"),
        ({"forecasts": ["replay", "oracle"]}, "forecasts: must be a non-empty list"),
        ({"forecasts": []}, "forecasts: must be a non-empty list"),
        ({"controls": 1}, "controls: must be of type bool"),
        ({"closed_loop_paths": 0}, "closed_loop_paths: must be >= 1"),
        ({"applies": {"phase": ["ordered"]}}, "applies: unknown key"),
    ],
)
def test_bad_validate_table_is_refused(table, message):
    with pytest.raises(ValueError, match=message):
        parse_validate_table(table, source="q.toml")


def test_findings_say_which_check_is_expected_to_fail_where():
    found = parse_findings([
        {"check": "spacing_mean", "forecast": "replay", "phase": "high-temperature",
         "reason": "over-predicts S (docs/sde.md)"},
        {"check": "calibration_levels", "temperature": 2.0, "inv_sigma_w": 8.0,
         "reason": "x"}])
    s = spec.ValidationSpec.make(findings=found)
    assert s.expected("spacing_mean", "replay", "high-temperature", (2.0, 8.0)) == "FAIL"
    assert s.expected("spacing_mean", "cross-fitted", "high-temperature", (2.0, 8.0)) == "PASS"
    assert s.expected("spacing_mean", "replay", "ordered", (0.25, 8.0)) == "PASS"
    assert s.expected("calibration_levels", "closed-loop", "ordered", (2.0, 8.0)) == "FAIL"
    assert s.expected("calibration_levels", "replay", "ordered", (4.0, 8.0)) == "PASS"
    either = parse_findings([{"check": ["spacing_mean", "calibration_levels"],
                              "forecast": ["replay", "closed-loop"], "expected": "either",
                              "reason": "not stable across seeds"}])
    assert len(either) == 4 and {f.expected for f in either} == {"either"}
    from dysonsgd.analysis.checks import Check
    for verdict in ("PASS", "FAIL", "NO POWER"):
        assert Check("spacing_mean", 2.0, 8.0, 1.0, "", verdict, expected="either").as_expected
    assert not Check("spacing_mean", 2.0, 8.0, 1.0, "", "PASS", expected="FAIL").as_expected
    assert Check("spacing_mean", 2.0, 8.0, 1.0, "", "NO POWER", expected="FAIL").as_expected
    for entry, message in [({"check": "ks", "reason": "x"}, "check: must be one of"),
                           ({"check": "spacing_mean", "reason": "x", "expected": "PASS"},
                            "expected: must be one of"),
                           ({"check": "spacing_mean"}, "reason: must say why"),
                           ({"check": "spacing_mean", "reason": "x", "forecast": "y"},
                            "forecast: must be one of"),
                           ({"check": "spacing_mean", "reason": "x", "cell": 1}, "cell: unknown")]:
        with pytest.raises(ValueError, match=message):
            parse_findings([entry], source="q.toml")


def test_expect_phases_index_the_grid():
    t, s = [0.5, 2.0], [0.125, 256.0]
    got = parse_expect_phases(
        {"phases": [{"temperature": 2.0, "inv_sigma_w": 8.0, "phase": "high-temperature"},
                    {"temperature": 0.5, "sigma_w": 256.0, "phase": "jamming"}]}, t, s)
    assert got == {(1, 0): "high-temperature", (0, 1): "jamming"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"temperature": 3.0, "inv_sigma_w": 8.0, "phase": "ordered"}, "temperature: 3 is not"),
        ({"temperature": 2.0, "inv_sigma_w": 4.0, "phase": "ordered"}, "inv_sigma_w: 4 is not"),
        ({"temperature": 2.0, "inv_sigma_w": 8.0, "phase": "gas"}, "phase: must be one of"),
        ({"temperature": 2.0, "phase": "ordered"}, "exactly one of inv_sigma_w and sigma_w"),
        ({"temperature": 2.0, "inv_sigma_w": 8.0, "phase": "ordered", "x": 1}, "x: unknown"),
    ],
)
def test_bad_expect_is_refused(entry, message):
    with pytest.raises(ValueError, match=message):
        parse_expect_phases({"phases": [entry]}, [0.5, 2.0], [0.125, 256.0], source="q.toml")


def test_observed_convergence_is_growth_over_the_second_half():
    s = np.array([[1.0, 5.0, 2.0, 2.1, 2.2],    # grows 10% after the middle: converged
                  [1.0, 1.0, 1.0, 1.5, 2.0]])   # doubles: not converged
    np.testing.assert_array_equal(validation.observed_convergence(s, 0.15), [True, False])
    np.testing.assert_array_equal(validation.observed_convergence(s, 1.0), [True, True])


def test_spacing_traces_ignore_broken_paths():
    dbm = np.ma.masked_invalid(np.array([[1.0, 3.0, np.nan], [2.0, 4.0, 100.0]]))
    tr = validation.spacing_traces([0, 5], np.array([[1.0, 2.0], [3.0, 4.0]]), dbm, dbm)
    assert "sde" in tr and "sde" not in validation.spacing_traces([0, 5], np.ones((2, 2)), dbm)
    np.testing.assert_allclose(tr["observed"][0], [2.0, 3.0])
    np.testing.assert_allclose(tr["dbm"][0], [2.0, 106 / 3])


def test_diagram_checks_on_a_synthetic_grid():
    """A 3 x 2 grid with known labels, losses, G and (4.15) fractions."""
    temperature = np.array([0.25, 1.0, 4.0])
    inv = np.array([8.0, 1 / 256])
    labels = np.array([["ordered", "jamming"], ["ordered", "jamming"],
                       ["high-temperature", "jamming"]])
    loss = np.broadcast_to(np.array([[1e-5, 0.1], [2e-5, 0.1], [1e-2, 0.1]])[..., None],
                           (3, 2, 4))
    g = np.broadcast_to(np.array([[0.0, 0.8], [0.0, 0.7], [0.0, 0.9]])[..., None], (3, 2, 4))
    fraction = np.array([[0.9, 0.5], [0.7, 0.5], [0.0, 0.5]])
    table = {"ordered_corner": {"temperature_max": 1.0, "inv_sigma_w_min": 1.0},
             "loss_ratio_min": 100, "transition": {"inv_sigma_w": 8.0, "between": [1.0, 4.0]},
             "jamming_region": {"inv_sigma_w_max": 0.01}, "feature_correlation_min": 0.5,
             "signal_to_noise_level": 0.68, "separation_min": 1.0}
    checks = {c.name: c for c in validation.diagram_checks(parse_diagram_table(table),
                                                           temperature, inv, labels, loss, g,
                                                           fraction)}
    # 1e-2 / median(1e-5, 2e-5) = 666.7
    assert checks["diagram_loss_ratio"].metric == pytest.approx(1e-2 / 1.5e-5)
    assert checks["diagram_loss_ratio"].passed
    assert checks["diagram_transition"].passed
    assert checks["diagram_jamming_memory"].metric == pytest.approx(0.7)
    assert checks["diagram_signal_to_noise"].metric == 1.0
    # move the transition: T = 1 would have to be high-temperature -> FAIL
    table["transition"] = {"inv_sigma_w": 8.0, "between": [0.25, 1.0]}
    fraction[1, 0] = 0.5  # an ordered cell below the level -> 2 of 3 separated
    checks = {c.name: c for c in validation.diagram_checks(parse_diagram_table(table),
                                                           temperature, inv, labels, loss, g,
                                                           fraction)}
    assert not checks["diagram_transition"].passed
    assert checks["diagram_signal_to_noise"].metric == pytest.approx(2 / 3)
    assert not checks["diagram_signal_to_noise"].passed
    # the (4.15) separation as Fisher's exact test over models: ordered models converge (3 of
    # 4 in each ordered cell), hot ones do not: table [[6, 2], [0, 4]], one-sided
    # p = C(6,6) C(6,2) / C(12,8) = 15/495
    converged = np.zeros((3, 2, 4), dtype=bool)
    converged[:2, 0, :3] = True
    fisher = next(c for c in validation.diagram_checks(
        parse_diagram_table({"signal_to_noise_alpha": 0.05}), temperature, inv, labels, loss, g,
        fraction, converged) if c.name == "diagram_signal_to_noise_test")
    assert fisher.metric == pytest.approx(15 / 495) and fisher.passed
    with pytest.raises(ValueError, match="signal_to_noise_alpha: must lie"):
        parse_diagram_table({"signal_to_noise_alpha": 0.9})
    with pytest.raises(ValueError, match="loss_ratio: unknown key"):
        parse_diagram_table({"loss_ratio": 100})
    with pytest.raises(ValueError, match="transition: must be"):
        parse_diagram_table({"transition": {"inv_sigma_w": 8, "between": [2, 1]}})


def test_closed_loop_in_the_background_gives_the_forecast_computed_in_turn(monkeypatch):
    """evaluate starts the closed-loop forecasts on a background thread (they need no
    measurement); its checks equal, bitwise, those of the forecasts computed when scored."""
    from dysonsgd.model.config import TeacherStudentConfig
    from dysonsgd.train import train_ensemble

    run = train_ensemble(TeacherStudentConfig(n_data=200, batch_size=4), temperature=[2.0],
                         sigma_w=[0.125, 8.0], n_seeds=4, epochs=2, snapshots=3, seed=7,
                         progress=False, dtype="float64")
    options = spec.ValidationSpec.make(options={
        "forecasts": ("closed-loop",), "controls": False, "closed_loop_steps": 10,
        "closed_loop_paths": 3})
    cells = {(0, 0): "high-temperature", (0, 1): "jamming"}
    background = validation.evaluate(run, cells, options)

    class InTurn:  # the executor's interface, running each forecast when its result is asked
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, fn, *args):
            class Later:
                def result(self):
                    return fn(*args)

                def cancel(self):
                    pass
            return Later()

        def shutdown(self, wait=True):
            pass

    monkeypatch.setattr(validation, "ThreadPoolExecutor", InTurn)
    in_turn = validation.evaluate(run, cells, options)
    got = [c.as_dict() for c in background.checks if c.forecast == "closed-loop"]
    assert len(got) == 2 * 3  # two cells: calibration of S, of the levels, spacing_mean
    # repr: NaN prints equal to NaN
    assert repr(got) == repr([c.as_dict() for c in in_turn.checks if c.forecast == "closed-loop"])
