"""A deliberately wrong theory, built through the public API, must FAIL validate."""

from __future__ import annotations

import pytest

import dysonsgd
from dysonsgd.analysis.spec import ValidationSpec


@pytest.fixture(scope="module")
def hot_run():
    # one high-temperature cell (T = 2, 1/sigma_W = 8), 24 independent models, 10 epochs
    return dysonsgd.train_ensemble(temperature=[2.0], sigma_w=[0.125], n_seeds=24, epochs=10,
                                   snapshots=3, seed=11, progress=False, dtype="float64")


def test_validate_fails_a_theory_with_the_wrong_temperature(hot_run):
    spec = ValidationSpec.make(options={"forecasts": ("replay",), "controls": False,
                                        "steps_per_interval": 10})
    wrong = dysonsgd.Theory("T x 16", temperature_scale=16.0)
    out = dysonsgd.evaluate(hot_run, {(0, 0): "high-temperature"}, spec, theory=wrong)
    assert not out.passed
    failed = {c.name for c in out.checks if c.verdict == "FAIL"}
    assert {"calibration_spacing", "spacing_mean"} <= failed
    ratio = next(c.metric for c in out.checks if c.name == "spacing_mean")
    assert ratio > 1.25  # sixteen times the noise spreads the levels: S far too large
