"""Theories and controls of validate (analysis.theories), and the forecasts they drive."""

from __future__ import annotations

import numpy as np
import pytest

from dysonsgd._checks import InputError
from dysonsgd.analysis import forecasts, predict
from dysonsgd.analysis.theories import NEGATIVE_CONTROLS, Theory
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.train import train_ensemble


@pytest.fixture(scope="module")
def coeffs():
    run = train_ensemble(TeacherStudentConfig(n_data=200, batch_size=4), temperature=[2.0],
                         sigma_w=[0.125], n_seeds=6, epochs=4, snapshots=3, seed=5,
                         progress=False, dtype="float64")
    return predict.measure_run(run)


@pytest.mark.parametrize("sign", [1, -1])
def test_noiseless_paper_theory_integrates_the_drift_exactly(coeffs, sign):
    """With V = 0, (4.3) is dx = +-K dt. With K_i = x_i(0) / (2 t_f) constant (ordering
    kept), the oracle is x(t_f) = x(0) (1 +- 1/2)."""
    x0 = coeffs.eigenvalues[:, :, :, :1]
    t_f = coeffs.times[0, -1]
    drift = np.broadcast_to(x0 / (2 * t_f), coeffs.drift.shape).copy()
    c = predict.MeasuredCoefficients(**{**coeffs.__dict__, "drift": drift})
    theory = Theory("noiseless", variant="paper", noise=False, drift_sign=sign)
    fp = forecasts.replay(c, (0, 0), theory, start=0, paths=3, steps_per_interval=40)
    assert not fp.broken().any()
    expected = coeffs.eigenvalues[0, 0, :, 0] * (1 + sign / 2)
    got = np.ma.filled(fp.eigenvalues[-1], np.nan)  # (R, P, N)
    np.testing.assert_allclose(got, np.broadcast_to(expected[:, None], got.shape), rtol=1e-9)


def test_noiseless_complete_theory_gives_one_curve_per_model(coeffs):
    """V = 0 leaves the complete equation an ODE. Oracle: the engine integrating all R x P
    paths of the cell (written out here, not through predict): its paths of one model coincide
    (the noise is multiplied by zero), and the forecast, which integrates one path per model
    and repeats it, is those paths exactly."""
    from dysonsgd.sde import integrate
    from dysonsgd.sde.complete import EigenvalueSDE

    theory, p = Theory("noiseless", noise=False), 4
    fp = forecasts.replay(coeffs, (0, 0), theory, start=1, paths=p, steps_per_interval=10)
    c = theory.apply(coeffs)
    times = c.times[0, 1:]
    moments = c.moments.map(lambda a: np.repeat(np.moveaxis(a[0, 0, :, 1:], 1, 0), p, axis=1))
    eq = EigenvalueSDE(moments, float(c.temperature[0]), times=times,
                       learning_rate=float(c.learning_rate[0]))
    x0 = np.repeat(c.eigenvalues[0, 0, :, 1], p, axis=0)
    every = integrate(eq, x0, times, n_paths=x0.shape[0], seed=0,
                      dt=float(np.min(np.diff(times))) / 10)
    every = np.ma.filled(every, np.nan).reshape(times.size, -1, p, x0.shape[-1])
    np.testing.assert_array_equal(every, np.broadcast_to(every[:, :, :1], every.shape))
    np.testing.assert_array_equal(np.ma.filled(fp.eigenvalues, np.nan), every)
    noisy = forecasts.replay(coeffs, (0, 0), Theory(), start=1, paths=4, steps_per_interval=10)
    assert np.ma.std(noisy.eigenvalues[-1], axis=1).min() > 0


def test_no_coulomb_removes_the_repulsion_only(coeffs):
    c = Theory("x", coulomb=False).apply(coeffs)
    off = ~np.eye(coeffs.noise.shape[-1], dtype=bool)
    assert np.all(c.noise[..., off] == 0)
    np.testing.assert_array_equal(np.diagonal(c.noise, axis1=-2, axis2=-1),
                                  np.diagonal(coeffs.noise, axis1=-2, axis2=-1))
    assert np.all(c.moments.variance == 0) and np.all(c.moments.cross == 0)
    np.testing.assert_array_equal(c.moments.diagonal_covariance,
                                  coeffs.moments.diagonal_covariance)


def test_temperature_scale_multiplies_the_spread_of_a_short_step(coeffs):
    """Over a time short against the drift, the increments are Gaussian with variance T V dt:
    x 4 on T gives x 4 on the variance of the paths (ratio of two sample variances of 400
    paths each of 6 models: F-distributed, SE of the log-ratio sqrt(2/399 * 2) ~ 0.1)."""
    base = dict(start=0, paths=400, steps_per_interval=20, seed=3)
    short = predict.MeasuredCoefficients(**{**coeffs.__dict__,
                                            "times": coeffs.times * 1e-4})
    v1 = np.ma.var(forecasts.replay(short, (0, 0), Theory(variant="paper"), **base)
                   .eigenvalues[1], axis=1)
    v4 = np.ma.var(forecasts.replay(short, (0, 0), Theory(variant="paper",
                                                          temperature_scale=4.0), **base)
                   .eigenvalues[1], axis=1)
    ratio = np.ma.median(v4 / v1)
    assert abs(np.log(ratio / 4.0)) < 0.3


def test_controls_are_declared_with_targets_among_the_checks():
    from dysonsgd.analysis.scoring import FAMILIES

    names = [c.theory.name for c in NEGATIVE_CONTROLS]
    assert len(set(names)) == len(names) == 6
    assert all(c.targets and set(c.targets) <= set(FAMILIES) for c in NEGATIVE_CONTROLS)


@pytest.mark.parametrize(("kw", "message"), [
    ({"variant": "exact"}, "variant"), ({"temperature_scale": 0.0}, "temperature_scale"),
    ({"drift_sign": 2}, "drift_sign")])
def test_bad_theories_are_refused(kw, message):
    with pytest.raises(InputError, match=message):
        Theory(**kw)


def test_cross_fitted_scores_every_model_from_the_other_half(coeffs):
    fp = forecasts.cross_fitted(coeffs, (0, 0), start=1, paths=3, steps_per_interval=5)
    assert fp.eigenvalues.shape == (2, 6, 3, coeffs.eigenvalues.shape[-1])
    np.testing.assert_array_equal(fp.eigenvalues[0, :, 0],
                                  coeffs.eigenvalues[0, 0, :, 1])  # each from its own start
    assert not fp.broken().all()
    with pytest.raises(InputError, match=">= 4 models"):
        forecasts.cross_fitted(predict.MeasuredCoefficients(**{
            **coeffs.__dict__, "diverged": np.arange(6)[None, None] > 1}), (0, 0))
