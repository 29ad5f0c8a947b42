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


def _autograd_gradients(w1, w2t, w3, w2, x):
    """Per-sample gradients of W2 by autograd, one point at a time: (D, n2, n1)."""
    grads = []
    for point in x:
        xt = torch.tensor(point)
        h1 = torch.tanh(torch.tensor(w1) @ xt)
        target = torch.tensor(w3) @ torch.tanh(torch.tensor(w2t) @ h1)
        w = torch.tensor(w2, requires_grad=True)
        loss = 0.5 * torch.sum((target - torch.tensor(w3) @ torch.tanh(w @ h1)) ** 2)
        (g,) = torch.autograd.grad(loss, w)
        grads.append(g.numpy())
    return np.array(grads)


def test_series_at_several_snapshots_and_odd_widths_match_the_reference_loop():
    """measure_series (the fused kernel) against the autograd loop at two snapshots, with
    widths that are no multiple of the kernel's vector length and two outputs.

    Tolerance: both sides are float64 sums over the same 128 samples in different orders, so
    they differ by rounding (~1e-15 of the largest entry); 1e-10 of it is the margin, as above.
    """
    config = TeacherStudentConfig(widths=(3, 11, 5, 2), n_data=40)
    run = train_ensemble(config, temperature=[0.25], sigma_w=[0.5, 2.0], n_seeds=2, epochs=2,
                         snapshots=3, dtype=torch.float64, progress=False)
    series = gradstats.measure_series(run, [2, 0], chunk=3)
    assert [s.snapshot for s in series] == [2, 0]
    x = observables.test_inputs(128, 3, 42)
    w1, w2t, w3 = run.teacher()
    for stats in series:
        for idx in [(0, 0, 1), (0, 1, 0)]:
            w2 = np.asarray(run.w2[idx][stats.snapshot], dtype=float)
            _, u = np.linalg.eigh(w2 @ w2.T)
            k_rot, v_rot = _reference(w1[idx], w2t[idx], w3[idx], w2, x, basis=u)
            _, v = _reference(w1[idx], w2t[idx], w3[idx], w2, x)
            np.testing.assert_allclose(stats.k[idx], k_rot, rtol=0,
                                       atol=1e-10 * np.abs(k_rot).max())
            np.testing.assert_allclose(stats.v[idx], v_rot, rtol=0,
                                       atol=1e-10 * np.abs(v_rot).max())
            np.testing.assert_allclose(stats.v_paper_rotation[idx], u.T @ v @ u, rtol=0,
                                       atol=1e-10 * np.abs(v).max())


def test_fused_moments_match_the_materialised_gradients(small_run):
    """The kernel's singular-basis moments against measure.moments.singular_moments on the
    stacked autograd gradients (the plain numpy formulas, an independent evaluation).

    The singular pairs (u_i, v_i) are defined up to a common sign, so g_ij is compared after
    aligning the signs; every other field is sign-invariant. Margin as above: 1e-10 of each
    field's largest entry (rounding is ~1e-14 for these well-separated singular values).
    """
    from dysonsgd.measure.moments import singular_moments

    stats = gradstats.measure(small_run, snapshot=-1)
    x = observables.test_inputs(128, 3, 42)
    w1, w2t, w3 = small_run.teacher()
    for idx in [(0, 0, 0), (1, 1, 1), (1, 0, 1)]:
        w2 = np.asarray(small_run.w2[idx][-1], dtype=float)
        ref = singular_moments(w2, _autograd_gradients(w1[idx], w2t[idx], w3[idx], w2, x))
        got = stats.moments.map(lambda a, idx=idx: a[idx])
        for name in ("singular_values", "mean_square", "ito", "diagonal_covariance",
                     "variance", "cross"):
            a, b = getattr(got, name), getattr(ref, name)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * np.abs(b).max(), err_msg=name)
        sign = np.sign(np.diagonal(got.mean) * np.diagonal(ref.mean))  # g_ii is invariant
        np.testing.assert_allclose(np.abs(np.diagonal(got.mean)), np.abs(np.diagonal(ref.mean)),
                                   rtol=1e-10)
        np.testing.assert_array_equal(sign, 1.0)
        # off-diagonal: g_ij -> sigma_i sigma_j g_ij; |g_ij| and g_ij g_ji are invariant
        np.testing.assert_allclose(np.abs(got.mean), np.abs(ref.mean), rtol=0,
                                   atol=1e-10 * np.abs(ref.mean).max())
        np.testing.assert_allclose(got.mean * got.mean.T, ref.mean * ref.mean.T, rtol=0,
                                   atol=1e-10 * np.abs(ref.mean).max() ** 2)


def test_singular_system_matches_an_svd_when_ill_conditioned():
    """moments.singular_system (eigh of W W^T refined by Jacobi) against LAPACK's SVD for
    matrices with singular values from 1e-7 to 1e2, where vt = W^T U / s alone would lose
    (s_max / s_i)^2 of the small vectors' accuracy.

    Tolerances from perturbation theory: both are backward stable, so the singular values
    agree to c eps s_max (Weyl) and the vectors to c eps s_max / gap_i (Wedin; for the right
    vectors of an N x M matrix, M > N, the gap includes s_i itself, the distance to the null
    space), c = 100 covering the backward-error constants (~sqrt(N M)) of both algorithms.
    """
    from dysonsgd.measure.moments import singular_system

    rng = np.random.default_rng(11)
    n, m = 6, 9
    eps = np.finfo(float).eps
    design = np.array([1e-7, 3e-5, 1e-3, 0.5, 7.0, 100.0])
    ws = []
    for _ in range(20):
        q1, _ = np.linalg.qr(rng.normal(size=(n, n)))
        q2, _ = np.linalg.qr(rng.normal(size=(m, n)))
        ws.append(q1 @ np.diag(design * rng.uniform(0.8, 1.25, n)) @ q2.T)
    w = np.array(ws)
    s, u, vt = singular_system(w)
    uu, ss, vh = np.linalg.svd(w, full_matrices=False)
    ss, uu, vv = ss[:, ::-1], uu[..., ::-1], np.swapaxes(vh, -1, -2)[..., ::-1]
    s_max = ss[:, -1:]
    assert np.all(np.abs(s - ss) < 100 * eps * s_max)
    gap = np.minimum(np.abs(np.diff(ss, axis=-1, prepend=-np.inf)),
                     np.abs(np.diff(ss, axis=-1, append=np.inf)))
    bound = 100 * eps * s_max / gap
    for ours, lapack, b in ((u, uu, bound), (vt, vv, 100 * eps * s_max / np.minimum(gap, ss))):
        sign = np.sign(np.sum(ours * lapack, axis=-2, keepdims=True))
        err = np.linalg.norm(ours * sign - lapack, axis=-2)
        assert np.all(err < b)
    # the pairs reproduce W, and the naive vt = W^T U / s would not for the smallest pair
    np.testing.assert_allclose(u @ (s[..., None] * np.swapaxes(vt, -1, -2)), w, rtol=0,
                               atol=100 * eps * design[-1])
    _, u_eig = np.linalg.eigh(w @ np.swapaxes(w, -1, -2))
    naive = np.swapaxes(w, -1, -2) @ u_eig[..., :1] / np.sqrt(np.maximum(
        np.linalg.eigvalsh(w @ np.swapaxes(w, -1, -2))[..., :1], 1e-300))[..., None]
    naive_err = np.linalg.norm(np.abs(naive[..., 0]) - np.abs(vv[..., 0]), axis=-1)
    assert np.median(naive_err) > 1e3 * np.median(bound[:, 0])
