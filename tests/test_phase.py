"""dysonsgd.analysis.phase: the symmetry-breaking line, the (4.15) fractions, phase labels,
guidance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dysonsgd.analysis import guidance, phase
from dysonsgd.measure import observables
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.theory import boundaries, rmt
from dysonsgd.theory.disorder import preactivation_variances
from dysonsgd.train import train_ensemble

# ------------------------------------------------------------------------------------------------
# symmetry-breaking line
# ------------------------------------------------------------------------------------------------


def test_symmetry_breaking_line_values():
    line = boundaries.symmetry_breaking_line()
    assert line.sigma_c2 == 0.5
    assert line.inv_sigma_w["paper"] == pytest.approx(math.sqrt(2.0), rel=1e-15)
    # rho from the (independent) layer recursion of disorder
    rho_g = preactivation_variances([1.0, 1.0])[-1]
    rho_x = preactivation_variances([1.0, 1.0], input_dim=3)[-1]
    assert line.inv_sigma_w["gaussian"] == pytest.approx(math.sqrt(2 * rho_g), rel=1e-12)
    assert line.inv_sigma_w["input_average"] == pytest.approx(math.sqrt(2 * rho_x), rel=1e-12)
    assert line.inv_sigma_w["gaussian"] == pytest.approx(0.888, abs=5e-4)
    assert line.inv_sigma_w["input_average"] == pytest.approx(0.829, abs=5e-4)
    err = line.assumption_error()
    assert err["variance_factor"] == pytest.approx(1 / rho_x)
    assert err["line_factor"] == pytest.approx(math.sqrt(2) / line.inv_sigma_w["input_average"])
    # sigma_z^2 at the line is exactly sigma_c^2
    for name, inv in line.inv_sigma_w.items():
        assert float(line.sigma_z2(1.0 / inv, name)) == pytest.approx(0.5, rel=1e-12)
    assert boundaries.symmetry_breaking_line(measured_ratio=0.32).inv_sigma_w["measured"] == \
        pytest.approx(0.8)


def test_preactivation_ratio_saturated_layer_is_exactly_one():
    # huge inputs saturate tanh: phi1 = +-1 exactly; rows of W2 summing (signed) to sigma_W
    # make every z = +-sigma_W, so rho = 1 and the paper's assumption sigma_z^2 = sigma_W^2 holds
    sigma_w = 0.7
    n1 = 8
    w1 = np.ones((n1, 1))
    x = np.array([[1e3], [-1e3], [2e3]])
    w2 = np.full((4, n1), sigma_w / n1)
    rho = phase.preactivation_ratio(x, w1, w2, sigma_w)
    assert rho == pytest.approx(1.0, rel=1e-14)
    line = boundaries.symmetry_breaking_line(measured_ratio=float(rho))
    assert line.inv_sigma_w["measured"] == pytest.approx(math.sqrt(2.0))


def test_preactivation_ratio_linear_regime():
    # tiny inputs: tanh(z1) = z1 to O(z1^3); with W1 = I and W2 = sigma_W I,
    # rho = mean over points and nodes of x^2 (known exactly up to the cubic correction)
    eps = 1e-6
    x = eps * np.array([[1.0, 2.0], [3.0, -1.0]])
    rho = phase.preactivation_ratio(x, np.eye(2), 0.3 * np.eye(2), 0.3)
    assert rho == pytest.approx(np.mean(x**2), rel=1e-10)


def test_preactivation_ratio_monte_carlo_matches_quadrature():
    mc = phase.preactivation_ratio_monte_carlo(n_teachers=3000, n_points=64, seed=1)
    rho = boundaries.symmetry_breaking_line().ratio["input_average"]
    assert abs(mc["ratio"] - rho) < 4 * mc["stderr"]
    assert mc["inv_sigma_w"] == pytest.approx(math.sqrt(2 * mc["ratio"]))


def test_measured_ratio_on_a_run_matches_the_fixed_input_oracle():
    res = train_ensemble(TeacherStudentConfig(n_data=8), temperature=0.03125,
                         sigma_w=[0.5, 4.0], n_seeds=400, epochs=1, progress=False)
    rho = phase.measured_preactivation_ratio(res)
    assert rho.shape == (1, 2, 400)
    # common random numbers: rho depends on the seed only, not on sigma_W
    np.testing.assert_allclose(rho[0, 0], rho[0, 1], rtol=1e-5)
    per_seed = rho[0, 0]
    oracle = boundaries.preactivation_ratio_for_inputs(observables.test_inputs())
    assert abs(per_seed.mean() - oracle) < 4 * per_seed.std(ddof=1) / math.sqrt(per_seed.size)
    assert oracle == pytest.approx(0.3229, abs=1e-4)


# ------------------------------------------------------------------------------------------------
# (4.15)
# ------------------------------------------------------------------------------------------------


def test_threshold_is_temperature_over_initial_spacing_bound():
    for t, s in [(0.03125, 0.125), (4.0, 256.0), (1.0, 1.0)]:
        bound = rmt.initial_spacing_bound(s**2, 0.5, 16)
        assert boundaries.signal_to_noise_threshold(t, s) == pytest.approx(t / bound, rel=1e-13)


def test_convergence_criterion_at_the_boundary_and_broadcasting():
    temps = np.array([0.5, 2.0])[:, None, None]
    sig = np.array([0.25, 1.0, 4.0])[None, :, None]
    lhs = boundaries.signal_to_noise_threshold(temps, sig)
    v_s = np.array([0.5, 1.0, 2.0, 3.0])  # models
    ks_on = -lhs * v_s  # exactly on the boundary: converged
    assert boundaries.convergence_criterion(ks_on, v_s, temps, sig).all()
    assert not boundaries.convergence_criterion(ks_on * (1 - 1e-9), v_s, temps, sig).any()
    assert boundaries.convergence_criterion(ks_on * (1 + 1e-9), v_s, temps, sig).all()
    assert boundaries.convergence_criterion(ks_on, v_s, temps, sig).shape == (2, 3, 4)
    # release: K_S / V_S >= lhs with the sign as given
    assert boundaries.convergence_criterion(-ks_on, v_s, temps, sig, convention="release").all()
    assert not boundaries.convergence_criterion(ks_on, v_s, temps, sig, convention="release").any()
    # V_S <= 0 is outside the paper's assumption: drift at S_0 decides
    assert boundaries.convergence_criterion(-1.0, -0.1, 1.0, 1.0)
    assert not boundaries.convergence_criterion(0.1, 0.0, 1.0, 1.0)
    assert not boundaries.convergence_criterion(np.nan, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="convention"):
        boundaries.convergence_criterion(1.0, 1.0, 1.0, 1.0, convention="notebook")
    with pytest.raises(ValueError, match="temperature"):
        boundaries.convergence_criterion(1.0, 1.0, -1.0, 1.0)


def test_converged_fraction_known_distribution():
    # -K_S / V_S ~ Exp(1) per model: the fraction converged is P(X >= lhs) = exp(-lhs)
    rng = np.random.default_rng(3)
    n = 20000
    temps = np.array([0.01, 0.05, 0.2])
    sig = 1.0
    snr = rng.exponential(1.0, size=(3, 1, n))
    v_s = rng.uniform(0.5, 2.0, size=(3, 1, n))
    conv = boundaries.convergence_criterion(-snr * v_s, v_s, temps[:, None, None], sig)
    frac = phase.converged_fraction(conv)
    want = np.exp(-boundaries.signal_to_noise_threshold(temps, sig))[:, None]
    se = np.sqrt(want * (1 - want) / n)
    assert np.all(np.abs(frac - want) < 4 * se)


def test_converged_fraction_counts_diverged_as_not_converged():
    conv = np.array([[[True] * 7 + [False] * 3]])
    assert phase.converged_fraction(conv)[0, 0] == pytest.approx(0.7)
    div = np.zeros_like(conv)
    div[..., :2] = True
    assert phase.converged_fraction(conv, div)[0, 0] == pytest.approx(0.5)
    assert boundaries.sigma_levels() == (0.68, 0.95, 0.997)


@given(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3), st.floats(1e-2, 1e2), st.floats(1e-2, 1e2))
def test_criterion_monotone_in_temperature_and_sigma(snr, t, factor, sigma):
    # converged at T implies converged at any lower T and any larger sigma_W
    ok = boundaries.convergence_criterion(-snr, 1.0, t, sigma)
    if ok:
        assert boundaries.convergence_criterion(-snr, 1.0, t / (1 + factor), sigma)
        assert boundaries.convergence_criterion(-snr, 1.0, t, sigma * (1 + factor))


def test_signal_to_noise_boundary_interpolates_in_log_t():
    temps = np.array([0.25, 0.5, 1.0, 2.0])
    frac = np.array([[1.0, 1.0, 0.2], [0.9, 0.9, 0.1], [0.5, 0.8, 0.1], [0.1, 0.7, 0.0]])
    b = phase.signal_to_noise_boundary(frac, temps, 0.7)
    # column 0 crosses between 0.5 (0.9) and 1 (0.5): halfway in log2 T
    assert b[0] == pytest.approx(2.0**-0.5)
    assert b[1] == np.inf and np.isnan(b[2])
    with pytest.raises(ValueError, match="temperature"):
        phase.signal_to_noise_boundary(frac, temps[::-1], 0.7)


# ------------------------------------------------------------------------------------------------
# labels
# ------------------------------------------------------------------------------------------------


def test_critical_feature_correlation():
    # E[tanh(z)^2] for z ~ N(0, 1/2), against plain Monte Carlo
    z = np.random.default_rng(0).normal(0.0, math.sqrt(0.5), 400_000)
    v = np.tanh(z) ** 2
    assert abs(boundaries.CRITICAL_FEATURE_CORRELATION - v.mean()) < 4 * v.std() / math.sqrt(z.size)
    critical = boundaries.CRITICAL_FEATURE_CORRELATION
    assert phase.PhaseThresholds().jamming_correlation_min == critical


def test_classify_phases_synthetic():
    n = 9
    loss = np.empty((2, 2, n))
    corr = np.empty((2, 2, n))
    loss[0, 0], corr[0, 0] = 1e-5, 0.9  # low loss wins: ordered
    loss[0, 1], corr[0, 1] = 1e-1, 0.8  # high loss, memory: jamming
    loss[1, 0], corr[1, 0] = 1e-2, 0.05  # high loss, memory erased: high temperature
    loss[1, 1], corr[1, 1] = 1e-5, 0.0
    div = np.zeros((2, 2, n), bool)
    div[1, 1, :5] = True  # most of the ensemble diverged
    labels = phase.classify_phases(loss, corr, div)
    assert labels.tolist() == [["ordered", "jamming"], ["high-temperature", "diverged"]]
    # a minority diverging counts as infinite loss in the median
    div2 = np.zeros_like(div)
    div2[0, 0, :4] = True
    assert phase.classify_phases(loss, corr, div2)[0, 0] == "ordered"
    div2[0, 0, :5] = True
    th = phase.PhaseThresholds(diverged_fraction_min=0.9)
    assert phase.classify_phases(loss, corr, div2, th)[0, 0] == "jamming"
    # thresholds at their edges
    th = phase.PhaseThresholds(ordered_loss_max=1e-2, jamming_correlation_min=0.05)
    assert phase.classify_phases(loss, corr, thresholds=th)[1, 0] == "ordered"
    th = phase.PhaseThresholds(ordered_loss_max=1e-6, jamming_correlation_min=0.05)
    assert phase.classify_phases(loss, corr, thresholds=th)[1, 0] == "jamming"
    np.testing.assert_array_equal(phase.phase_codes(labels), [[0, 2], [1, 3]])


def test_phase_thresholds_refuse_bad_values():
    with pytest.raises(ValueError, match="ordered_loss_max"):
        phase.PhaseThresholds(ordered_loss_max=-1.0)
    with pytest.raises(ValueError, match="jamming_correlation_min"):
        phase.PhaseThresholds(jamming_correlation_min=1.5)
    with pytest.raises(ValueError, match="same shape"):
        phase.classify_phases(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="labels must be among"):
        phase.phase_codes(["ordered", "glass"])


def test_figure6_points_are_labelled_right_after_a_short_run():
    """The three points of figure 6, trained 2 epochs (2000 SGD steps), 6 seeds, float32.

    Measured (3 base seeds x {5, 20} seeds x float32/float64): with n_data = 4000 the labels are
    right from the first epoch on; the ordered cell's median loss is 10^-3.6 at 2 epochs
    against the 10^-3 threshold, the high-temperature cell's 10^-1.7 with G = 0.00, the jamming
    cell's G = 0.99 against 0.27.
    """
    res = train_ensemble(temperature=[2.0**-5, 4.0], sigma_w=[0.125, 256.0], n_seeds=6,
                         epochs=2, dtype=torch.float32, progress=False)
    s = phase.phase_summary(res)
    labels = phase.classify_phases(s["test_loss"], s["feature_correlation"], s["diverged"])
    assert labels[0, 0] == "ordered"
    assert labels[1, 0] == "high-temperature"
    assert labels[0, 1] == "jamming"
    for key in ("test_loss", "feature_correlation", "alignment", "gradient_norm", "rate",
                "preactivation_ratio", "diverged"):
        assert s[key].shape == (2, 2, 6), key
    assert s["diverged_fraction"].shape == (2, 2)
    np.testing.assert_allclose(s["test_loss_release"], 2 * s["test_loss"])
    np.testing.assert_allclose(s["alignment_release"], s["alignment"] / 128)
    # G(0, 0) of the jamming cell is the self-overlap of saturated features
    assert np.all(s["initial_feature_correlation"][:, 1] > 0.95)
    # guidance on this little grid: at sigma_W = 1/8 the largest ordered T is 2^-5
    g = guidance.guidance(0.125, labels, res.temperature, res.sigma_w)
    assert g["max_ordered_temperature"] == 2.0**-5
    assert g["transition_temperature"] == 4.0
    assert g["recommended"] == {"temperature": 2.0**-5, "sigma_w": 0.125,
                                "ordered_sigma_w": [0.125]}
    assert g["ordered_side_of_symmetry_line"]


def test_guidance_from_grid_fraction_and_signal_to_noise():
    temps = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    sig = np.array([0.125, 1.0, 16.0])
    o, h, j = "ordered", "high-temperature", "jamming"
    labels = np.array([[o, o, j], [o, o, j], [o, h, j], [h, h, j], [h, h, h]])
    frac = np.array([[1, 1, 0.5], [0.9, 0.9, 0.5], [0.8, 0.1, 0.5], [0.1, 0.0, 0.5],
                     [0.0, 0.0, 0.1]])
    g = guidance.guidance(0.1, labels, temps, sig, fraction=frac)
    assert g["grid_sigma_w"] == 0.125
    assert g["max_ordered_temperature"] == 1.0 and g["transition_temperature"] == 2.0
    assert g["recommended"]["sigma_w"] == 0.125
    assert 1.0 < g["signal_to_noise_temperature"] < 2.0
    g = guidance.guidance(16.0, labels, temps, sig)
    assert g["max_ordered_temperature"] is None and not g["ordered_side_of_symmetry_line"]
    assert "jamming side" in g["advice"]
    # (4.15) with a measured signal-to-noise ratio: T* makes the inequality an equality
    g = guidance.guidance(0.5, signal_to_noise=3.0)
    t_star = g["signal_to_noise_temperature"]
    assert boundaries.signal_to_noise_threshold(t_star, 0.5) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="sigma_w_grid"):
        guidance.guidance(0.5, labels)


def test_spacing_coefficients_for_picks_the_convention():
    from types import SimpleNamespace

    st = SimpleNamespace(k_s=1.0, v_s=2.0, k_s_release=3.0, v_s_release=4.0)
    assert phase.spacing_coefficients_for(st, "paper") == (1.0, 2.0)
    assert phase.spacing_coefficients_for(st, "release") == (3.0, 4.0)
    with pytest.raises(ValueError, match="convention"):
        phase.spacing_coefficients_for(st, "mine")
