"""Tests of dysonsgd.measure.gradstats: K and V of (4.4) against a slow reference loop with
autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dysonsgd.measure import gradstats, observables
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.theory import rmt
from dysonsgd.train import train_ensemble


@pytest.fixture(scope="module")
def small_run():
    config = TeacherStudentConfig(n_data=40)
    return train_ensemble(
        config,
        temperature=[0.03125, 4.0],
        sigma_w=[0.125, 2.0],
        n_seeds=2,
        epochs=3,
        snapshots=3,
        dtype=torch.float64,
        progress=False,
    )


def _reference(w1, w2t, w3, w2, x, basis=None):
    """Per model, per sample: autograd gradient of W2, then dX, then mean and variance."""
    dxs = []
    for point in x:
        xt = torch.tensor(point)
        target = torch.tensor(w3) @ torch.tanh(
            torch.tensor(w2t) @ torch.tanh(torch.tensor(w1) @ xt)
        )
        w = torch.tensor(w2, requires_grad=True)
        out = torch.tensor(w3) @ torch.tanh(w @ torch.tanh(torch.tensor(w1) @ xt))
        loss = 0.5 * torch.sum((target - out) ** 2)
        (g,) = torch.autograd.grad(loss, w)
        g = g.numpy()
        dx = w2 @ g.T + g @ w2.T
        dxs.append(dx if basis is None else basis.T @ dx @ basis)
    dxs = np.array(dxs)
    k = np.zeros_like(dxs[0])
    v = np.zeros_like(dxs[0])
    for i in range(k.shape[0]):
        for j in range(k.shape[1]):
            k[i, j] = -np.mean(dxs[:, i, j])
            v[i, j] = np.mean((dxs[:, i, j] + k[i, j]) ** 2)
    return k, v


def test_k_and_v_match_reference_loop(small_run):
    stats = gradstats.measure(small_run, snapshot=-1)
    x = observables.test_inputs(128, 3, 42)
    w1, w2t, w3 = small_run.teacher()
    for idx in [(0, 0, 0), (1, 1, 1), (0, 1, 0)]:
        w2 = np.asarray(small_run.w2[idx][-1], dtype=float)
        eig, u = np.linalg.eigh(w2 @ w2.T)
        k, v = _reference(w1[idx], w2t[idx], w3[idx], w2, x)
        k_rot, v_rot = _reference(w1[idx], w2t[idx], w3[idx], w2, x, basis=u)
        np.testing.assert_allclose(stats.k[idx], u.T @ k @ u, rtol=0, atol=1e-10 * np.abs(k).max())
        np.testing.assert_allclose(stats.k[idx], k_rot, rtol=0, atol=1e-10 * np.abs(k).max())
        np.testing.assert_allclose(stats.v[idx], v_rot, rtol=0, atol=1e-10 * np.abs(v).max())
        np.testing.assert_allclose(
            stats.v_paper_rotation[idx], u.T @ v @ u, rtol=0, atol=1e-10 * np.abs(v).max()
        )
        np.testing.assert_allclose(stats.eigenvalues[idx], eig, rtol=1e-12)


def test_v_symmetric_non_negative_and_coefficients(small_run):
    stats = gradstats.measure(small_run, snapshot=0, chunk=3)
    np.testing.assert_allclose(stats.v, np.swapaxes(stats.v, -1, -2), atol=1e-15)
    np.testing.assert_allclose(stats.k, np.swapaxes(stats.k, -1, -2), atol=1e-15)
    assert np.all(stats.v >= 0)
    k_s, v_s, d_s = rmt.spacing_coefficients(np.diagonal(stats.k, axis1=-2, axis2=-1), stats.v)
    np.testing.assert_allclose(stats.k_s, k_s)
    np.testing.assert_allclose(stats.v_s, v_s)
    np.testing.assert_allclose(stats.d_s, d_s)
    assert np.all(stats.d_s >= 0)
    # the paper's rotation U^T V U is not a variance: it has negative diagonal entries here
    assert np.any(np.diagonal(stats.v_paper_rotation, axis1=-2, axis2=-1) < 0)
    assert np.all(np.diff(stats.eigenvalues, axis=-1) >= 0)


def test_unrotated_v_is_non_negative(small_run):
    x = observables.test_inputs(16, 3, 1)
    w2 = np.random.default_rng(0).normal(size=(2, 16, 32))
    grads = np.random.default_rng(1).normal(size=(2, 16, 16, 32))
    _, v = gradstats.drift_and_noise(w2, grads)
    assert np.all(v >= 0) and x.shape == (16, 3)
    with pytest.raises(ValueError, match="grads"):
        gradstats.drift_and_noise(w2, grads[..., :5])


def test_release_variant_differs_as_documented():
    n = 4
    rng = np.random.default_rng(3)
    a = rng.uniform(size=(n, n))
    v = a + a.T
    k = np.diag([-2.0, 0.1, 0.3, 0.5])
    k_s, v_s, d_s = rmt.spacing_coefficients(k, v)
    k_r, v_r, d_r = gradstats.spacing_coefficients_release(k, v)
    assert k_s == pytest.approx((0.5 - -2.0) / 3)
    assert k_r == pytest.approx((0.5 - 2.0) / 3)  # absolute values
    # k = 1 term: V_{N,N} instead of V_{N,N-1}; k = 2: V_{N,N-1} instead of V_{N,N-2}
    diff = ((v[3, 3] - v[3, 2]) / 1 + (v[3, 2] - v[3, 1]) / 2) / 3
    assert v_r - v_s == pytest.approx(diff)
    assert d_r == pytest.approx(d_s)


def test_bad_snapshot(small_run):
    with pytest.raises(ValueError, match="snapshot"):
        gradstats.measure(small_run, snapshot=7)


def test_per_model_data_equals_one_model_at_a_time():
    """x per model (the replicas' own training inputs) == measuring each model alone."""
    from dysonsgd.model.config import TeacherStudentConfig
    from dysonsgd.train import train_ensemble

    res = train_ensemble(TeacherStudentConfig(n_data=40, batch_size=4), temperature=[0.5],
                         sigma_w=[1.0, 2.0], n_seeds=3, epochs=2, snapshots=2, seed=7,
                         progress=False, dtype="float64")
    x = gradstats.training_inputs(res, n_points=24)
    assert x.shape == (1, 1, 3, 24, 3)
    both = gradstats.measure(res, -1, x=x, chunk=4)
    for r in range(3):
        alone = gradstats.measure(res, -1, x=x[0, 0, r])
        np.testing.assert_allclose(both.v[:, :, r], alone.v[:, :, r], rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(both.k[:, :, r], alone.k[:, :, r], rtol=1e-12, atol=1e-300)
    with pytest.raises(ValueError, match="n_points"):
        gradstats.training_inputs(res, n_points=41)
    with pytest.raises(ValueError, match="x must broadcast"):
        gradstats.measure(res, -1, x=np.zeros((2, 24, 3)))
