"""dysonsgd.analysis.validation: config tables, the observed-convergence rule, the checks."""

from __future__ import annotations

import numpy as np
import pytest

from dysonsgd.analysis import spec, validation
from dysonsgd.runs.validation_config import (
    parse_diagram_table,
    parse_expect_phases,
    parse_validate_table,
)


def test_defaults_and_overrides():
    tol, applies, options = parse_validate_table(
        {"ks_alpha": 0.05, "paths_per_model": 3, "applies": {"spacing_ks": ["ordered"]}})
    assert tol["ks_alpha"] == 0.05 and tol["growth_threshold"] == 0.15
    assert tol["verdict_fraction_tolerance"] == 0.45
    assert applies["spacing_ks"] == ("ordered",)
    assert applies["phase"] == spec.DEFAULT_APPLIES["phase"]
    assert options["paths_per_model"] == 3 and options["convention"] == "release"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"ks_alpa": 0.01}, "ks_alpa: unknown key"),
        ({"ks_alpha": 1.5}, r"ks_alpha: must lie in \(0, 1\)"),
        ({"ks_alpha": "x"}, "ks_alpha: must be a number"),
        ({"spread_ratio_max": 0.5}, "spread_ratio_max: must be >= 1"),
        ({"convention": "mine"}, "convention: must be 'paper' or 'release'"),
        ({"paths_per_model": 0}, "paths_per_model: must be >= 1"),
        ({"paths_per_model": 2.5}, "paths_per_model: must be of type int"),
        ({"applies": {"nothing": ["ordered"]}}, "nothing: unknown check"),
        ({"applies": {"phase": ["liquid"]}}, "phase: must be a list of phases"),
    ],
)
def test_bad_validate_table_is_refused(table, message):
    with pytest.raises(ValueError, match=message):
        parse_validate_table(table, source="q.toml")


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
    with pytest.raises(ValueError, match="loss_ratio: unknown key"):
        parse_diagram_table({"loss_ratio": 100})
    with pytest.raises(ValueError, match="transition: must be"):
        parse_diagram_table({"transition": {"inv_sigma_w": 8, "between": [2, 1]}})
