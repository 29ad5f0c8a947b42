"""Tests of dysonsgd.theory.relu: the sympy derivations against their closed forms, and both
against Monte Carlo oracles (seeded; tolerances are 5 standard errors, a two-sided level of
6e-7 per comparison), direct simulation of random teacher-student networks at the paper's
widths, torch autograd Hessians and the trainer itself (the homogeneity identity)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from scipy import stats

from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.theory import relu, symbolic
from dysonsgd.train import train_ensemble

Z_MAX = 5.0  # |estimate - expectation| <= 5 SE


def _within(samples, expected, axis=0):
    samples = np.asarray(samples, float)
    mean = samples.mean(axis=axis)
    se = samples.std(axis=axis, ddof=1) / math.sqrt(samples.shape[axis])
    assert np.all(np.abs(mean - expected) <= Z_MAX * se), (mean, expected, se)


# ------------------------------------------------------------------------------------------------
# the soft-spin picture
# ------------------------------------------------------------------------------------------------


def test_relu_potential_is_a_single_well_at_every_variance_unlike_tanh():
    potential, atom = relu.soft_spin_potential()
    assert sp.simplify(potential - relu.phi**2 / (2 * relu.sigma_z2)) == 0
    assert atom == sp.Rational(1, 2)
    assert relu.critical_variance() is None
    assert symbolic.critical_variance() == sp.Rational(1, 2)  # tanh's, for contrast
    # Monte Carlo: the atom, and the law of phi / sigma_z is the same at sigma_z = 0.1 and 30
    # (two-sample Kolmogorov-Smirnov at level 0.01)
    rng = np.random.default_rng(16)
    small, large = (np.maximum(s * rng.standard_normal(20000), 0.0) / s for s in (0.1, 30.0))
    _within(small == 0.0, 0.5)
    assert stats.ks_2samp(small, large).pvalue > 0.01


def test_gaussian_moments_against_monte_carlo():
    m = relu.gaussian_moments()
    rng = np.random.default_rng(1)
    for s2 in (0.04, 1.0, 9.0):
        z = math.sqrt(s2) * rng.standard_normal(200000)
        values = {k: float(v.subs(relu.sigma_z2, s2)) for k, v in m.items()}
        _within(np.maximum(z, 0), values["mean"])
        _within(np.maximum(z, 0) ** 2, values["second"])
        _within(z > 0, values["slope"])
    assert m["slope"] == sp.Rational(1, 2)  # no sigma_z2 in the active fraction


def test_arc_cosine_kernel_symbolic_closed_form_and_monte_carlo():
    kernel = sp.lambdify((relu.sigma_u, relu.sigma_v, relu.theta), relu.arc_cosine_kernel())
    c = np.array([-0.95, -0.5, 0.0, 0.3, 0.8, 0.99])
    # the sympy derivation equals the numeric closed form (its value at c = 1 is 1/2)
    np.testing.assert_allclose(kernel(1.0, 1.0, np.arccos(c)), relu.normalised_overlap(c) / 2,
                               rtol=1e-13, atol=1e-15)
    rng = np.random.default_rng(2)
    su, sv = 0.7, 3.0
    for ci in c:
        xi = rng.standard_normal((2, 200000))
        u = su * xi[0]
        v = sv * (ci * xi[0] + math.sqrt(1 - ci * ci) * xi[1])
        _within(np.maximum(u, 0) * np.maximum(v, 0), kernel(su, sv, math.acos(ci)))
    assert relu.normalised_overlap(0.0) == pytest.approx(relu.ERASED_OVERLAP, rel=1e-15)
    np.testing.assert_allclose(relu.normalised_overlap([-1.0, 1.0]), [0.0, 1.0], atol=1e-15)


def test_overlap_correlation_inverts_the_normalised_overlap():
    c = np.linspace(-1.0, 1.0, 41)
    np.testing.assert_allclose(relu.overlap_correlation(relu.normalised_overlap(c)), c,
                               atol=1e-8)  # kappa'(-1) = 0: c near -1 is ill-conditioned
    assert abs(relu.overlap_correlation(1 / math.pi)) < 1e-12
    for bad, name in ((1.5, "overlap"), (-0.1, "overlap")):
        with pytest.raises(ValueError, match=name):
            relu.overlap_correlation(bad)
    with pytest.raises(ValueError, match="correlation"):
        relu.normalised_overlap(1.2)


# ------------------------------------------------------------------------------------------------
# the teacher-student network at initialisation, by direct simulation
# ------------------------------------------------------------------------------------------------


def _networks(sigma_w: float, n_nets: int = 3000, n_points: int = 32, widths=(3, 32, 16, 1),
              seed: int = 3):
    """Independent random relu teacher-student pairs: per-network G, rho, loss (2.6)."""
    n0, n1, n2, n3 = widths
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_nets, n_points, n0))
    w1 = rng.normal(0, 1 / math.sqrt(n0), (n_nets, n1, n0))
    w2t = rng.normal(0, 1 / math.sqrt(n1), (n_nets, n2, n1))
    w3 = rng.normal(0, 1 / math.sqrt(n2), (n_nets, n3, n2))
    w2s = rng.normal(0, sigma_w / math.sqrt(n1), (n_nets, n2, n1))
    phi1 = np.maximum(x @ w1.transpose(0, 2, 1), 0)
    zs, zt = phi1 @ w2s.transpose(0, 2, 1), phi1 @ w2t.transpose(0, 2, 1)
    fs, ft = np.maximum(zs, 0), np.maximum(zt, 0)
    err = (fs - ft) @ w3.transpose(0, 2, 1)
    return {"g00": np.mean(fs * fs, axis=(1, 2)), "g_teacher": np.mean(fs * ft, axis=(1, 2)),
            "rho": np.mean(zs * zs, axis=(1, 2)) / sigma_w**2,
            "loss": 0.5 * np.mean(np.sum(err * err, axis=-1), axis=-1)}


@pytest.mark.parametrize("sigma_w", [0.25, 1.0, 16.0])
def test_closed_forms_against_random_networks_at_the_papers_widths(sigma_w):
    sim = _networks(sigma_w)
    _within(sim["rho"], relu.preactivation_ratio())
    _within(sim["g00"], relu.feature_self_overlap(sigma_w))
    # the student's initial features against the teacher's: uncorrelated pre-activations, so
    # E[G] = sigma_W E[q] / (2 pi), and normalised 1/pi
    _within(sim["g_teacher"], relu.ERASED_OVERLAP * math.sqrt(
        relu.feature_self_overlap(sigma_w) * relu.feature_self_overlap(1.0)))
    _within(sim["loss"], relu.initial_loss(sigma_w))
    assert relu.initial_loss(sigma_w, convention="release") == 2 * relu.initial_loss(sigma_w)
    expr = relu.initial_loss_expectation()
    assert float(expr.subs({relu.sigma_w: sigma_w, relu.input_variance: 1})) == pytest.approx(
        float(relu.initial_loss(sigma_w)), rel=1e-14)


def test_divergence_line_and_bad_input():
    inv = relu.divergence_line(100.0)
    assert float(relu.initial_loss(1 / inv)) == pytest.approx(100.0, rel=1e-12)
    assert 0.0349 < inv < 0.0351
    with pytest.raises(ValueError, match="threshold"):
        relu.divergence_line(0.1)
    with pytest.raises(ValueError, match="convention"):
        relu.initial_loss(1.0, convention="both")
    with pytest.raises(ValueError, match="sigma_w"):
        relu.initial_loss(-1.0)


# ------------------------------------------------------------------------------------------------
# homogeneity: the trainer and the Hessian
# ------------------------------------------------------------------------------------------------


def _draws(seed: int, n_data: int, sigma_w: float, widths=(3, 32, 16, 1)):
    n0, n1, n2, n3 = widths
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1 / math.sqrt(n0), (n1, n0))
    w2t = rng.normal(0, 1 / math.sqrt(n1), (n2, n1))
    w3 = rng.normal(0, 1 / math.sqrt(n2), (n3, n2))
    x = rng.normal(0, 1, (n_data, n0))
    return x, w1, w2t, w3, rng.normal(0, sigma_w / math.sqrt(n1), (n2, n1))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_sgd_trajectory_scales_with_student_and_teacher_for_relu_only(activation):
    x, w1, w2t, w3, w2 = _draws(5, 400, sigma_w=0.5)
    c = 4.0  # a power of 2: every product and sum scales exactly
    cfg = TeacherStudentConfig(activation=activation, n_data=400)
    kw = dict(temperature=2.0**-4, sigma_w=0.5, epochs=3, snapshots=4, dtype=torch.float64,
              progress=False, inputs=x)
    base = train_ensemble(cfg, teacher_weights=(w1, w2t, w3), student_init=w2, **kw)
    scaled = train_ensemble(cfg, teacher_weights=(w1, c * w2t, w3), student_init=c * w2, **kw)
    assert not base.diverged.any() and np.abs(base.w2[..., -1, :, :] - w2).max() > 1e-3
    if activation == "relu":
        np.testing.assert_array_equal(scaled.w2, c * base.w2)
        np.testing.assert_array_equal(scaled.loss, c * c * base.loss)
    else:  # tanh saturates: the scaled student is a different problem
        assert np.abs(scaled.w2 / c - base.w2).max() > 1e-2


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_hessian_in_w2_does_not_depend_on_the_scale_of_w2_for_relu(activation):
    x, w1, w2t, w3, w2 = _draws(7, 64, sigma_w=1.0, widths=(3, 8, 5, 1))
    act = torch.relu if activation == "relu" else torch.tanh
    t = {k: torch.tensor(v) for k, v in dict(x=x, w1=w1, w2t=w2t, w3=w3).items()}
    phi1 = act(t["x"] @ t["w1"].T)
    y = act(phi1 @ t["w2t"].T) @ t["w3"].T

    def loss(w):
        err = act(phi1 @ w.T) @ t["w3"].T - y
        return 0.5 * (err * err).sum() / x.shape[0]

    h1, h8 = (torch.autograd.functional.hessian(loss, torch.tensor(s * w2)).reshape(40, 40)
              for s in (1.0, 8.0))
    if activation == "relu":  # Gauss-Newton term on the (scale-free) active pattern, phi'' = 0
        np.testing.assert_allclose(h8.numpy(), h1.numpy(), rtol=0,
                                   atol=1e-13 * float(h1.abs().max()))
    else:
        assert float((h8 - h1).abs().max()) > 0.1 * float(h1.abs().max())


def test_a_model_whose_initial_loss_exceeds_the_threshold_stops_in_the_first_epoch():
    # E[L(0)] = 512 at sigma_W = 64 (5x the threshold 100), 1.9 at sigma_W = 4; the loss of a
    # single model spreads widely about its expectation, so the statement is per model: its
    # initial loss above the threshold means batch losses above it in the first steps
    res = train_ensemble(TeacherStudentConfig(activation="relu"), temperature=2.0**-5,
                         sigma_w=[64.0, 4.0], n_seeds=8, epochs=1, snapshots=2, seed=0,
                         dtype=torch.float64, progress=False)
    assert 1 / 64 < relu.divergence_line() < 1 / 4
    above = res.loss[..., 0] > 100.0
    assert above[0, 0].sum() >= 4 and not above[0, 1].any()
    assert res.diverged[above].all() and (res.diverged_epoch[above] == 0).all()
    assert not res.diverged[0, 1].any()
