"""SDE predictions from a run: time units, the training drift, per-model integration."""

from __future__ import annotations

import numpy as np
import pytest

from dysonsgd.analysis import predict
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.train import train_ensemble


@pytest.fixture(scope="module")
def small_run():
    return train_ensemble(TeacherStudentConfig(n_data=200, batch_size=4), temperature=[0.25, 2.0],
                          sigma_w=[0.125, 4.0], n_seeds=3, epochs=4, snapshots=3, seed=3,
                          progress=False, dtype="float64")


def test_training_drift_is_the_first_order_eigenvalue_change():
    """x_i(W - h G) = x_i(W) + h K_i + O(h^2): central differences as the oracle."""
    rng = np.random.default_rng(0)
    w, g = rng.normal(size=(5, 6, 9)), rng.normal(size=(5, 6, 9))
    eig, drift = predict.training_drift(w, g)
    np.testing.assert_allclose(eig, np.linalg.eigvalsh(w @ np.swapaxes(w, -1, -2)), rtol=1e-12)
    h = 1e-6

    def x(step):
        m = w - step * g
        return np.linalg.eigvalsh(m @ np.swapaxes(m, -1, -2))

    np.testing.assert_allclose(drift, (x(h) - x(-h)) / (2 * h), rtol=1e-6, atol=1e-8)


def test_snapshot_times_are_lr_times_steps(small_run):
    t = predict.snapshot_times(small_run)
    steps = small_run.snapshot_epochs * (200 // 4)
    np.testing.assert_allclose(t, np.outer(4 * np.array([0.25, 2.0]), steps))


def test_measure_run_matches_gradstats_and_training_drift(small_run):
    from dysonsgd.measure import gradstats

    c = predict.measure_run(small_run, snapshots=[0, 2])
    s2 = gradstats.measure(small_run, 2)
    np.testing.assert_allclose(c.noise[..., 1, :, :], s2.v, rtol=1e-12)
    np.testing.assert_allclose(c.eigenvalues[..., 1, :], s2.eigenvalues, rtol=1e-10)
    _, k = predict.training_drift(small_run.w2[..., 2, :, :], small_run.grad[..., 2, :, :])
    np.testing.assert_allclose(c.drift[..., 1, :], k)
    assert (c.drift_source, c.noise_source) == ("training", "test")
    assert c.last.snapshot == 2
    np.testing.assert_allclose(c.last.k_s_release, s2.k_s_release, rtol=1e-12)
    test = predict.measure_run(small_run, snapshots=[2], drift="test")
    np.testing.assert_allclose(test.drift[..., 0, :], np.diagonal(s2.k, axis1=-2, axis2=-1))
    np.testing.assert_allclose(c.spacing[..., 1], (s2.eigenvalues[..., -1]
                                                   - s2.eigenvalues[..., 0]) / 15)


def _synthetic(k, v, x0, times):
    """One cell, R models, constant coefficients over the snapshots."""
    r, n = x0.shape
    n_snap = len(times)
    from dysonsgd.theory import rmt

    drift = np.broadcast_to(k, (1, 1, r, n_snap, n)).copy()
    noise = np.broadcast_to(v, (1, 1, r, n_snap, n, n)).copy()
    eig = np.broadcast_to(x0[:, None, :], (1, 1, r, n_snap, n)).copy()
    k_s, v_s, d_s = rmt.spacing_coefficients(drift, noise)
    return predict.MeasuredCoefficients(
        snapshots=np.arange(n_snap), times=np.asarray(times, float)[None], temperature=np.ones(1),
        sigma_w=np.ones(1), eigenvalues=eig, drift=drift, noise=noise, k_s=k_s, v_s=v_s,
        d_s=d_s, diverged=np.zeros((1, 1, r), bool), drift_source="training")


def test_zero_noise_prediction_is_the_drift_line():
    x0 = np.array([[1.0, 2.0, 4.0], [0.5, 3.0, 3.5]])
    k = np.array([0.1, -0.2, 0.3])
    c = _synthetic(k, np.zeros((3, 3)), x0, [0.0, 1.0, 2.0])
    times, x, models = predict.predict_eigenvalues(c, (0, 0), paths_per_model=2, variant="paper")
    np.testing.assert_array_equal(times, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(models, [0, 0, 1, 1])
    np.testing.assert_allclose(x[-1], np.repeat(x0, 2, axis=0) + 2.0 * k, rtol=1e-10)
    _, s, _ = predict.predict_spacing(c, (0, 0), start=1, paths_per_model=1, variant="paper")
    np.testing.assert_allclose(s[-1, :, 0], (x0[:, -1] - x0[:, 0]) / 2 + 1.0 * (0.3 - 0.1) / 2)


def test_noise_only_spread_matches_temperature_times_v():
    """Two far-apart levels, K = 0: Var x_i(t) = T V_ii t (the Coulomb term is negligible)."""
    x0 = np.array([[0.0, 1e6]])
    v = np.array([[2.0, 0.0], [0.0, 0.5]])
    c = _synthetic(np.zeros(2), v, x0, [0.0, 1.0])
    _, x, _ = predict.predict_eigenvalues(c, (0, 0), paths_per_model=4000, steps_per_interval=4,
                                          solver="euler", seed=5, variant="paper")
    var = np.var(x[-1], axis=0, ddof=1)
    se = np.array([2.0, 0.5]) * np.sqrt(2 / 3999)  # SE of a Gaussian sample variance
    assert np.all(np.abs(var - [2.0, 0.5]) < 4 * se)


def test_one_cell_has_the_whole_runs_numbers(small_run):
    """A cell's coefficients alone (what each cell's forecasts read) give, element by element,
    the numbers of the whole run: the spacing coefficients, a changed theory, a prediction."""
    from dysonsgd.analysis.theories import Theory

    c = predict.measure_run(small_run)
    one = c.cell(1, 0)
    assert one.eigenvalues.shape == (1, 1, *c.eigenvalues.shape[2:])
    for a, b in zip(predict.spacing_series(one), predict.spacing_series(c), strict=True):
        np.testing.assert_array_equal(a, b[1:2, 0:1])
    hot = Theory("T x 4", temperature_scale=4.0, coulomb=False)
    np.testing.assert_array_equal(hot.apply(one).moments.variance,
                                  hot.apply(c).moments.variance[1:2, 0:1])
    kw = dict(paths_per_model=3, steps_per_interval=5, seed=2)
    for fn in (predict.predict_eigenvalues, predict.predict_spacing):
        a, b = fn(one, (0, 0), **kw)[1], fn(c, (1, 0), **kw)[1]
        np.testing.assert_array_equal(np.ma.filled(a, np.nan), np.ma.filled(b, np.nan))
    with pytest.raises(ValueError, match="cell"):
        c.cell(2, 0)


def test_bad_arguments_are_refused(small_run):
    with pytest.raises(ValueError, match="drift"):
        predict.measure_run(small_run, drift="train")
    with pytest.raises(ValueError, match="snapshots"):
        predict.measure_run(small_run, snapshots=[2, 1])
    c = predict.measure_run(small_run, snapshots=[1, 2])
    with pytest.raises(ValueError, match="cell"):
        predict.predict_eigenvalues(c, (5, 0))
    with pytest.raises(ValueError, match="start"):
        predict.predict_spacing(c, (0, 0), start=1)
    with pytest.raises(ValueError, match="w2 and grad"):
        predict.training_drift(np.ones((2, 3)), np.ones((3, 2)))


def test_noise_on_training_inputs_is_recorded_and_used(small_run):
    from dysonsgd.measure import gradstats

    c = predict.measure_run(small_run, snapshots=[1, 2], noise="training", noise_points=32)
    assert c.noise_source == "training"
    ref = gradstats.measure(small_run, 2, x=gradstats.training_inputs(small_run, 32))
    np.testing.assert_allclose(c.noise[..., 1, :, :], ref.v, rtol=1e-12)
    with pytest.raises(ValueError, match="noise"):
        predict.measure_run(small_run, noise="train")
