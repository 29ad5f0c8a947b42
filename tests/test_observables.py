"""Observables of sections 3.2 and 4 (dysonsgd.measure.observables)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dysonsgd.measure import observables as obs
from dysonsgd.measure import spectrum
from dysonsgd.model import network
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.draws import replica_draws
from dysonsgd.train import train_ensemble


@pytest.fixture(scope="module")
def small_result():
    return train_ensemble(TeacherStudentConfig(n_data=400), temperature=[2.0**-5, 4.0],
                          sigma_w=[0.125, 4.0], n_seeds=4, epochs=6, snapshots=4, seed=3,
                          dtype=torch.float64, progress=False)


def test_test_inputs_are_the_releases_seed_42_draw():
    x = obs.test_inputs()
    assert x.shape == (128, 3)
    np.testing.assert_array_equal(x, np.random.RandomState(42).normal(0.0, 1.0, (128, 3)))
    assert x[0, 0] == pytest.approx(0.4967141530112327, rel=1e-15)  # the well-known first draw


def test_test_loss_conventions_by_hand():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    w1, w2, w2t, w3 = (rng.normal(size=s) for s in [(4, 3), (2, 4), (2, 4), (1, 2)])
    y = np.tanh(np.tanh(x @ w1.T) @ w2t.T) @ w3.T
    yhat = np.tanh(np.tanh(x @ w1.T) @ w2.T) @ w3.T
    want = np.mean(np.sum((y - yhat) ** 2, axis=1))
    assert obs.test_loss_release(x, w1, w2, w2t, w3) == pytest.approx(want, rel=1e-14)
    assert obs.test_loss_paper(x, w1, w2, w2t, w3) == pytest.approx(want / 2, rel=1e-14)
    assert obs.test_loss_release(x, w1, w2t, w2t, w3) == 0.0


def test_gradient_norm_is_frobenius():
    g = np.random.default_rng(1).normal(size=(3, 5, 16, 32))
    np.testing.assert_allclose(obs.gradient_norm(g), np.linalg.norm(g, axis=(-2, -1)), rtol=1e-14)
    with pytest.raises(ValueError, match="grad"):
        obs.gradient_norm(np.ones(3))


def test_feature_correlation_and_alignment_identities():
    rng = np.random.default_rng(2)
    phi = np.tanh(rng.normal(size=(7, 128, 16)))
    h = rng.normal(size=(7, 128, 16))
    np.testing.assert_allclose(obs.feature_correlation(phi, phi), np.mean(phi**2, axis=(1, 2)))
    np.testing.assert_allclose(obs.alignment(h, 3.0 * h), 1.0, rtol=1e-14)
    np.testing.assert_allclose(obs.alignment(h, -h), -1.0, rtol=1e-14)
    a = obs.alignment(h, phi)
    assert np.all(np.abs(a) < 0.2)  # independent draws are nearly orthogonal
    np.testing.assert_allclose(obs.alignment_release(h, phi), a / 128, rtol=1e-14)


def test_eigenvalues_ascending_squares_of_singular_values():
    w = np.random.default_rng(3).normal(size=(4, 16, 32))
    x = spectrum.eigenvalues(w)
    sv = np.linalg.svd(w, compute_uv=False)
    np.testing.assert_allclose(x, np.sort(sv**2, axis=-1), rtol=1e-10)
    assert np.all(np.diff(x, axis=-1) >= 0)


def test_level_spacing_and_rate():
    x0 = np.array([1.0, 2.0, 4.0])
    assert spectrum.mean_level_spacing(x0) == pytest.approx(1.5)
    assert obs.time_averaged_rate(2 * x0, x0, 10.0) == pytest.approx(math.log(2) / 10)
    with pytest.raises(ValueError, match="t must"):
        obs.time_averaged_rate(x0, x0, 0.0)
    with pytest.raises(ValueError, match="x must"):
        spectrum.mean_level_spacing(np.ones((3, 1)))


def test_initial_spectrum_has_the_marchenko_pastur_mean():
    # E[x] = sigma_W^2 for W2 ~ N(0, sigma_W^2 / n1) (4.2)
    res = train_ensemble(TeacherStudentConfig(n_data=8), temperature=0.1, sigma_w=[0.125, 8.0],
                         n_seeds=64, epochs=1, snapshots=2, seed=0, progress=False,
                         dtype=torch.float64)
    x0 = obs.result_eigenvalues(res)[0, :, :, 0]
    np.testing.assert_allclose(x0.mean(axis=(1, 2)), [0.125**2, 64.0], rtol=0.03)
    xp = (1 + math.sqrt(0.5)) ** 2
    assert np.quantile(x0[1] / 64.0, 0.99) < 1.1 * xp


def test_result_wrappers_shapes_and_values(small_result):
    res = small_result
    grid = (2, 2, 4)
    x_test = obs.test_inputs()
    loss = obs.result_test_loss(res)
    assert loss.shape == grid
    w1, w2t, w3 = res.teacher()
    np.testing.assert_allclose(loss[1, 0, 2], obs.test_loss_release(
        x_test, w1[1, 0, 2], res.w2[1, 0, 2, -1], w2t[1, 0, 2], w3[1, 0, 2]), rtol=1e-13)
    np.testing.assert_allclose(obs.result_test_loss(res, convention="paper"), loss / 2)
    g0 = obs.result_gradient_norm(res, snapshot=0)
    np.testing.assert_allclose(g0, np.linalg.norm(res.initial_gradient, axis=(-2, -1)))
    # G(0, 0) is the mean squared feature; at sigma_W = 4 the features keep their memory at
    # low temperature (jamming) and lose most of it at T = 4 (paramagnet), figure 5 (left)
    same = obs.result_feature_correlation(res, snapshot=0, reference=0)
    gtf = obs.result_feature_correlation(res)
    phi0 = network.features(x_test, w1, res.w2[..., 0, :, :])
    np.testing.assert_allclose(same, np.mean(phi0**2, axis=(-2, -1)), rtol=1e-13)
    assert np.all(gtf[0, 1] / same[0, 1] > 0.8)
    assert np.mean(gtf[1, 1] / same[1, 1]) < 0.6
    ev = obs.result_eigenvalues(res)
    assert ev.shape == (*grid, 4, 16)
    rate = obs.result_rate(res)
    s = spectrum.mean_level_spacing(ev)
    np.testing.assert_allclose(rate, np.log(s[..., -1] / s[..., 0]) / 6, rtol=1e-12)
    assert obs.ensemble_mean(rate).shape == (2, 2)
    # in the ordered cell training aligns the features with the external field (3.5)
    align = obs.result_alignment(res)
    align0 = obs.result_alignment(res, snapshot=0)
    assert np.all(align[0, 0] > align0[0, 0])
    np.testing.assert_allclose(obs.result_alignment(res, release=True), align / 128)
    with pytest.raises(ValueError, match="snapshot"):
        obs.result_test_loss(res, snapshot=4)
    with pytest.raises(ValueError, match="convention"):
        obs.result_test_loss(res, convention="half")
    with pytest.raises(ValueError, match="snapshot"):
        obs.result_rate(res, snapshot=0)


def test_student_at_teacher_is_perfectly_aligned_with_zero_test_loss():
    cfg = TeacherStudentConfig(n_data=40)
    d = replica_draws(cfg, 0, 0)
    res = train_ensemble(cfg, temperature=2.0**-5, sigma_w=1.0, epochs=1, snapshots=2, seed=0,
                         dtype=torch.float64, student_init=d["w2_teacher"], progress=False)
    assert obs.result_test_loss(res)[0, 0, 0] < 1e-28
    # h . phi with h = y W3 and y = W3 phi: positive; the teacher maximises it over students
    assert obs.result_alignment(res)[0, 0, 0] > 0


def test_spectrum_eigensystem_spacings_and_sorted_spacing():
    w = np.random.default_rng(4).normal(size=(3, 5, 8))
    x, u = spectrum.eigensystem(w)
    np.testing.assert_allclose(x, spectrum.eigenvalues(w), rtol=1e-12)
    np.testing.assert_allclose(u @ (x[..., None] * np.swapaxes(u, -1, -2)),
                               w @ np.swapaxes(w, -1, -2), atol=1e-12)
    s = spectrum.spacings(x)
    assert s.shape == (3, 4) and np.all(s >= 0)
    np.testing.assert_allclose(s.mean(-1), spectrum.mean_level_spacing(x), rtol=1e-12)
    np.testing.assert_array_equal(spectrum.mean_level_spacing(x, assume_sorted=True),
                                  spectrum.mean_level_spacing(x))
    masked = np.ma.masked_array(x, mask=np.zeros_like(x, bool))
    masked[1] = np.ma.masked
    got = spectrum.mean_level_spacing(masked, assume_sorted=True)
    assert got.mask.tolist() == [False, True, False]
    with pytest.raises(ValueError, match="x must"):
        spectrum.spacings(np.ones(1))
