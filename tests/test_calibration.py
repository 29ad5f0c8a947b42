"""The statistics of validate (dysonsgd.analysis.calibration) against exact results and oracles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dysonsgd._checks import InputError
from dysonsgd.analysis import calibration as cal


def test_pit_is_uniform_when_the_observation_is_one_more_path():
    # R = 4000 models, P = 9 paths each, observation from the same law: the randomised rank is
    # exactly U(0, 1). Its mean has standard error 1/sqrt(12 R) = 0.0046; 4 SE bounds the miss
    # at a two-sided level of 6e-5. Its variance 1/12 has SE sqrt(1/180 / R) = 0.0012.
    rng = np.random.default_rng(1)
    loc = rng.normal(size=(4000, 1)) * 10  # a different law per model
    draws = loc + rng.normal(size=(4000, 10))
    pit = cal.randomized_pit(draws[:, :9], draws[:, 9], rng)
    assert abs(pit.mean() - 0.5) < 4 * np.sqrt(1 / 12 / 4000)
    assert abs(pit.var() - 1 / 12) < 4 * np.sqrt(1 / 180 / 4000)
    # and the exact discrete law of the rank: each of the P + 1 = 10 bins has 1/10
    counts = np.bincount(np.floor(pit * 10).astype(int), minlength=10)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_pit_breaks_ties_at_random_and_drops_broken_paths():
    rng = np.random.default_rng(2)
    # every path equals the observation: the rank is uniform over the P + 1 positions
    pit = cal.randomized_pit(np.ones((2000, 4)), np.ones(2000), rng)
    assert abs(pit.mean() - 0.5) < 4 * np.sqrt(1 / 12 / 2000)
    # a NaN path is left out: with paths [0, nan, 2] and observation 1 the rank is 1 of 0..2
    pit = cal.randomized_pit(np.array([[0.0, np.nan, 2.0]]), np.array([1.0]), rng)
    assert 1 / 3 <= pit[0] <= 2 / 3
    assert np.isnan(cal.randomized_pit(np.full((1, 3), np.nan), np.array([1.0]), rng)[0])
    with pytest.raises(InputError, match="predicted must be"):
        cal.randomized_pit(np.ones(3), np.ones(3), rng)


def test_uniformity_test_has_its_size_and_sees_bias_and_spread():
    # size: 400 replicates of R = 20 uniform PITs, rejection rate at 0.05 within 3 binomial SE
    rng = np.random.default_rng(3)
    p = np.array([cal.uniformity_pvalue(rng.random(20)) for _ in range(400)])
    assert abs(np.mean(p < 0.05) - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 400)
    # a biased forecast (observation above most paths) and one too wide are rejected
    assert cal.uniformity_pvalue(rng.uniform(0.7, 1.0, 20)) < 1e-3
    assert cal.uniformity_pvalue(rng.uniform(0.45, 0.55, 20)) < 1e-3


def test_uniformity_pvalues_of_many_rows_at_once():
    """The vectorised form gives each row's p-value bitwise: scipy's one-sample CvM on that
    row (its finite values), NaN where fewer than two are finite."""
    rng = np.random.default_rng(4)
    pits = rng.random((17, 10)) ** np.linspace(0.3, 3.0, 17)[:, None]  # calibrated to biased
    pits[3, [1, 7]] = np.nan
    pits[5, 1:] = np.nan
    got = cal.uniformity_pvalues(pits)
    for row, p in zip(pits, got, strict=True):
        u = row[np.isfinite(row)]
        want = stats.cramervonmises(u, "uniform").pvalue if u.size >= 2 else np.nan
        np.testing.assert_array_equal(p, want)
    assert got[0] < 1e-3  # PITs piled near 1 (u^0.3, mean 0.77) are rejected
    with pytest.raises(InputError, match="pits"):
        cal.uniformity_pvalues(np.ones(3))


def test_min_uniformity_pvalue_is_attained_by_values_at_one_end():
    # the statistic's maximum 1/(12 n) + sum_i ((2i - 1)/(2n))^2 is reached with every value at
    # 0: no sample of n values gives a smaller p-value
    for n in (2, 3, 5, 20):
        floor = cal.min_uniformity_pvalue(n)
        w2 = 1 / (12 * n) + sum(((2 * i - 1) / (2 * n)) ** 2 for i in range(1, n + 1))
        assert stats.cramervonmises(np.zeros(n), "uniform").statistic == pytest.approx(w2)
        rng = np.random.default_rng(n)
        assert all(cal.uniformity_pvalue(rng.random(n)) >= floor - 1e-12 for _ in range(50))
    assert cal.min_uniformity_pvalue(1) == 1.0


def test_holm_matches_the_step_down_rule_by_hand():
    # alpha = 0.05, m = 4: sorted 0.01 <= 0.0125 rejected, 0.02 <= 0.0167 no -> stop
    p = np.array([0.02, 0.01, 0.5, 0.04])
    np.testing.assert_array_equal(cal.holm(p, 0.05), [False, True, False, False])
    # 0.001 <= 0.0125, 0.015 <= 0.0167, 0.02 <= 0.025, 0.04 <= 0.05: all rejected
    np.testing.assert_array_equal(cal.holm([0.04, 0.001, 0.02, 0.015], 0.05), [True] * 4)
    # NaN never rejected and not counted: m = 2
    np.testing.assert_array_equal(cal.holm([0.024, np.nan, 0.05], 0.05), [True, False, True])


def test_ratio_equivalence_by_tost():
    rng = np.random.default_rng(4)
    obs = rng.lognormal(0, 0.1, 40)
    close = obs[:, None] * rng.lognormal(0.0, 0.05, (40, 50))  # ratio ~ 1.001
    far = 1.6 * close
    res = cal.ratio_equivalence(close, obs, 1.25, rng)
    assert res["pvalue"] < 0.01 and res["ratio_ci"][0] < res["ratio"] < res["ratio_ci"][1]
    assert res["ratio"] == pytest.approx(close.mean(axis=1).mean() / obs.mean())
    assert res["resolvable"] and not res["outside"]
    far_res = cal.ratio_equivalence(far, obs, 1.25, rng)
    assert far_res["pvalue"] > 0.5 and far_res["outside"]
    # four models with a spread of 50 %: the interval is wider than the margin, no power
    few = rng.lognormal(0, 0.5, 4)
    wide = cal.ratio_equivalence(few[:, None] * np.ones((4, 50)), rng.lognormal(0, 0.5, 4),
                                 1.25, rng)
    assert not wide["resolvable"]
    # every path broken: nothing to test, and no power either way
    none = cal.ratio_equivalence(np.full((4, 3), np.nan), obs[:4], 1.25, rng)
    assert np.isnan(none["ratio"]) and not none["resolvable"] and not none["outside"]
    # broken paths (NaN) are left out of their model's mean, not counted as zeros
    holes = close.copy()
    holes[:, ::2] = np.nan
    assert cal.ratio_equivalence(holes, obs, 1.25, rng)["ratio"] == pytest.approx(
        np.nanmean(holes, axis=1).mean() / obs.mean())
    with pytest.raises(InputError, match="margin"):
        cal.ratio_equivalence(close, obs, 0.9, rng)


def test_cohen_kappa_against_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    a = rng.random(300) < 0.4
    b = np.where(rng.random(300) < 0.7, a, rng.random(300) < 0.5)
    assert cal.cohen_kappa(a, b) == pytest.approx(metrics.cohen_kappa_score(a, b))
    lo, hi = cal.kappa_interval(a, b, rng)
    assert lo < cal.cohen_kappa(a, b) < hi
    assert np.isnan(cal.cohen_kappa(np.ones(5, bool), np.ones(5, bool)))


def test_pit_summary_intervals_cover_the_calibrated_values():
    rng = np.random.default_rng(6)
    out = cal.pit_summary(rng.random(400), rng)
    lo, hi = out["pit_mean_ci"]
    assert lo < 0.5 < hi
    lo, hi = out["pit_sd_ci"]
    assert lo < 1 / np.sqrt(12) < hi
