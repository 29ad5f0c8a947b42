"""``analysis.describe.mean_se``, the mean +- SE over independent units of the studies, against
scipy's closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dysonsgd.analysis.describe import mean_se


def test_mean_se_against_scipy_on_the_finite_entries():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((3, 7))
    v[0, 2] = np.nan
    v[1, 4] = np.inf  # a diverged model: left out, as a NaN
    finite = v[np.isfinite(v)]
    got = mean_se(v)
    assert got["n"] == 19
    assert got["mean"] == pytest.approx(float(np.mean(finite)), rel=1e-14)
    assert got["se"] == pytest.approx(float(stats.sem(finite, ddof=1)), rel=1e-12)


def test_mean_se_below_two_entries():
    assert mean_se([np.nan, 2.5]) == {"mean": 2.5, "se": pytest.approx(math.nan, nan_ok=True),
                                      "n": 1}
    empty = mean_se([np.nan])
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["se"])
