"""Tests of dysonsgd.theory.disorder: the loss as a Hamiltonian, pre-activation moments, soft
spins."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate

from dysonsgd.theory import disorder, functions

# --------------------------------------------------------------------------------------------
# (2.7) = (2.6)
# --------------------------------------------------------------------------------------------


@given(
    n_out=st.integers(1, 4),
    n_hidden=st.integers(1, 8),
    n_data=st.integers(1, 12),
    batch=st.integers(1, 3),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**32 - 1),
)
def test_hamiltonian_equals_mse(n_out, n_hidden, n_data, batch, scale, seed):
    rng = np.random.default_rng(seed)
    w = scale * rng.normal(size=(batch, n_out, n_hidden))
    phi = rng.uniform(-1, 1, size=(batch, n_hidden, n_data))
    y = scale * rng.normal(size=(batch, n_out, n_data))
    coupling, field, const = disorder.couplings(w, y)
    mse = disorder.mse_loss(w, phi, y)
    ham = disorder.hamiltonian_loss(coupling, field, phi, const)
    # the two forms differ by cancellation of terms of size ~ |y|^2 + |W phi|^2: relative to
    # that scale the agreement is at machine precision
    magnitude = 0.5 * np.mean(np.sum(y**2, axis=-2) + np.sum((w @ phi) ** 2, axis=-2), axis=-1)
    np.testing.assert_array_less(np.abs(ham - mse), 1e-12 * magnitude + 1e-300)
    np.testing.assert_allclose(ham, mse, rtol=1e-12, atol=1e-12 * magnitude.max())
    # (2.9) drops C
    np.testing.assert_allclose(
        disorder.hamiltonian_loss(coupling, field, phi), ham - const, rtol=1e-12, atol=1e-9
    )


def test_couplings_by_hand():
    w = np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])  # n_L = 2, n_{L-1} = 3
    y = np.array([[1.0, -1.0], [2.0, 0.5]])  # D = 2
    coupling, field, const = disorder.couplings(w, y)
    np.testing.assert_allclose(coupling, w.T @ w)
    np.testing.assert_allclose(coupling, coupling.T)
    assert np.all(np.linalg.eigvalsh(coupling) > -1e-12)
    np.testing.assert_allclose(field[:, 0], 1.0 * w[0] + 2.0 * w[1])
    assert const == pytest.approx((1 + 1 + 4 + 0.25) / 4)


def test_hamiltonian_zero_residual_loss_equals_zero():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(2, 5))
    phi = rng.uniform(-1, 1, size=(5, 9))
    y = w @ phi  # a perfect student
    assert disorder.mse_loss(w, phi, y) == pytest.approx(0.0, abs=1e-15)
    assert disorder.hamiltonian_loss(*disorder.couplings(w, y)[:2], phi) == pytest.approx(
        -disorder.couplings(w, y)[2]
    )


def test_couplings_shape_errors():
    with pytest.raises(ValueError, match="y"):
        disorder.couplings(np.zeros((2, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="phi"):
        disorder.mse_loss(np.zeros((2, 3)), np.zeros((4, 5)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="coupling"):
        disorder.hamiltonian_loss(np.zeros((3, 2)), np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="w_last"):
        disorder.couplings(np.zeros(3), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="phi"):
        disorder.mse_loss(np.zeros((2, 3)), np.full((3, 5), np.nan), np.zeros((2, 5)))


# --------------------------------------------------------------------------------------------
# Pre-activation moments (2.13)-(2.19)
# --------------------------------------------------------------------------------------------


def test_preactivation_kernel_matches_weight_average():
    """(2.13): average z_ia z_jb over W ~ N(0, sigma2/n) at fixed previous-layer activations."""
    rng = np.random.default_rng(21)
    n_prev, n_next, n_data, sigma2, samples = 6, 3, 4, 2.5, 50000
    prev = np.tanh(rng.normal(size=(n_prev, n_data)))
    w = rng.normal(scale=math.sqrt(sigma2 / n_prev), size=(samples, n_next, n_prev))
    z = w @ prev  # (samples, n_next, D)
    products = np.einsum("sia,sjb->sijab", z, z)
    mc = products.mean(axis=0)
    se = products.std(axis=0, ddof=1) / math.sqrt(samples)
    kernel = disorder.preactivation_kernel(prev, sigma2)
    expected = np.einsum("ij,ab->ijab", np.eye(n_next), kernel)
    np.testing.assert_array_less(np.abs(mc - expected), 4 * se + 1e-12)
    # (2.18): bounded by sigma2 for tanh features
    assert np.all(np.abs(kernel) <= disorder.preactivation_bound(sigma2) + 1e-12)


def test_standardised_kernel_matches_data_average():
    """(2.16): averaging (2.14) over standard-normal inputs gives sigma2 delta_ab."""
    rng = np.random.default_rng(22)
    n0, n_data, sigma2, samples = 3, 3, 0.8, 40000
    x = rng.normal(size=(samples, n0, n_data))
    kernels = disorder.preactivation_kernel(x, sigma2)
    mc = kernels.mean(axis=0)
    se = kernels.std(axis=0, ddof=1) / math.sqrt(samples)
    np.testing.assert_array_less(np.abs(mc - disorder.standardised_kernel(sigma2, n_data)), 4 * se)


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
def test_preactivation_variances_match_simulation(activation):
    """The variance map (2.13)/(2.19) against a wide random network (all layers at init)."""
    rng = np.random.default_rng(23)
    sigma2s = [1.0, 2.0, 0.7]
    widths = [3, 512, 512, 512]
    n_data, n_nets = 64, 40
    act = functions.ACTIVATIONS[activation]
    x = rng.normal(size=(n_nets, widths[0], n_data))
    h = x
    variances = []
    for layer, s2 in enumerate(sigma2s):
        w = rng.normal(
            scale=math.sqrt(s2 / widths[layer]), size=(n_nets, widths[layer + 1], h.shape[1])
        )
        z = w @ h
        variances.append(np.mean(z**2, axis=(1, 2)))  # one estimate per network
        h = act(z)
    predicted = disorder.preactivation_variances(sigma2s, activation=activation, input_dim=3)
    for layer in range(3):
        est = variances[layer]
        se = est.std(ddof=1) / math.sqrt(n_nets)
        assert abs(est.mean() - predicted[layer]) < 4 * se + 0.01 * predicted[layer]


def test_preactivation_variances_closed_forms():
    # identity: q_l = prod sigma^2; relu: q_l = sigma_l^2 q_{l-1} / 2
    np.testing.assert_allclose(
        disorder.preactivation_variances([2.0, 3.0, 0.5], "identity"), [2.0, 6.0, 3.0]
    )
    np.testing.assert_allclose(
        disorder.preactivation_variances([2.0, 3.0], "relu"), [2.0, 3.0], rtol=1e-12
    )
    q = disorder.preactivation_variances([1.0, 1.0], "tanh")
    assert q[1] == pytest.approx(0.394294, abs=1e-6)  # E[tanh(z)^2], z ~ N(0, 1)
    # Gaussian inputs: the norm average does not change linear layers, and changes tanh
    np.testing.assert_allclose(
        disorder.preactivation_variances([2.0, 3.0], "identity", input_dim=3), [2.0, 6.0]
    )
    q3 = disorder.preactivation_variances([1.0, 1.0], "tanh", input_dim=3)
    assert q3[0] == pytest.approx(1.0, rel=1e-12)
    assert q3[1] == pytest.approx(0.343747, abs=1e-5)  # paper's teacher: sigma_z^2 / sigma_W^2
    # many inputs: |x|^2 / n0 concentrates and the Gaussian assumption (2.19) becomes exact
    q_many = disorder.preactivation_variances([1.0, 1.0], "tanh", input_dim=4000)
    assert q_many[1] == pytest.approx(q[1], rel=1e-3)
    assert np.all(disorder.preactivation_variances([5.0, 7.0, 9.0])[1:] <= [7.0, 9.0])
    with pytest.raises(ValueError, match="activation"):
        disorder.preactivation_variances([1.0], "sigmoid")
    with pytest.raises(ValueError, match="sigma2s"):
        disorder.preactivation_variances([1.0, -1.0])


# --------------------------------------------------------------------------------------------
# Soft spins (2.19)-(2.22)
# --------------------------------------------------------------------------------------------


@given(sigma_z2=st.floats(0.02, 4.0))
def test_soft_spin_density_normalised(sigma_z2):
    total, _ = integrate.quad(
        disorder.soft_spin_density, -1, 1, args=(sigma_z2,), limit=400, epsrel=1e-10
    )
    assert total == pytest.approx(1.0, abs=1e-8)


@given(sigma_z2=st.floats(1e-3, 1e4), phi=st.floats(-0.999999, 0.999999))
def test_soft_spin_density_is_pushforward_of_gaussian(sigma_z2, phi):
    """p(phi) (1 - phi^2) is the N(0, sigma_z2) density at z = atanh(phi): the Jacobian (2.21)."""
    z = math.atanh(phi)
    lhs = disorder.soft_spin_density(phi, sigma_z2) * (1 - phi * phi)
    rhs = math.exp(-(z * z) / (2 * sigma_z2)) / math.sqrt(2 * math.pi * sigma_z2)
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-300)


def test_soft_spin_density_matches_histogram():
    rng = np.random.default_rng(31)
    sigma_z2 = 1.3
    phi = np.tanh(rng.normal(scale=math.sqrt(sigma_z2), size=200000))
    counts, edges = np.histogram(phi, bins=40, range=(-1, 1))
    probs = np.array(
        [
            integrate.quad(disorder.soft_spin_density, a, b, args=(sigma_z2,))[0]
            for a, b in itertools.pairwise(edges)
        ]
    )
    expected = probs * phi.size
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected) + 1)


def test_potential_is_minus_log_density():
    phi = np.linspace(-0.99, 0.99, 41)
    for s2 in (0.2, 0.5, 3.0):
        log_ratio = np.log(disorder.soft_spin_density(phi, s2) / disorder.soft_spin_density(0, s2))
        np.testing.assert_allclose(-log_ratio, disorder.soft_spin_potential(phi, s2), atol=1e-12)
    assert disorder.soft_spin_potential(1.0, 0.5) == np.inf
    assert disorder.soft_spin_density(-1.0, 0.5) == 0.0


@given(sigma_z2=st.floats(0.05, 20.0))
def test_potential_coefficients_reproduce_the_potential(sigma_z2):
    c = disorder.potential_coefficients(sigma_z2, order=24)
    assert c[2] == pytest.approx(1 / (2 * sigma_z2) - 1)
    assert c[4] == pytest.approx(1 / (3 * sigma_z2) - 0.5)
    assert np.all(c[1::2] == 0)
    phi = np.linspace(-0.3, 0.3, 13)
    series = np.polynomial.polynomial.polyval(phi, c)
    np.testing.assert_allclose(series, disorder.soft_spin_potential(phi, sigma_z2), atol=1e-11)


def test_extrema_solve_tanh_equation_and_are_minima():
    for s2 in (0.5000001, 0.51, 0.6, 1.0, 3.0, 50.0, 1e6):
        ext = disorder.potential_extrema(s2)
        assert ext.size == 3
        p = ext[2]
        assert p == pytest.approx(math.tanh(2 * s2 * p), abs=1e-14)
        assert ext[0] == -p and ext[1] == 0.0
        # p is a minimum of V and 0 a maximum
        v = disorder.soft_spin_potential(np.array([0.0, p]), s2)
        assert v[1] < v[0]
    # small-phi* law: phi*^2 ~ 3 (g - 1) / g^3, g = 2 sigma_z2
    g = 2 * 0.5001
    assert disorder.potential_extrema(0.5001)[2] ** 2 == pytest.approx(3 * (g - 1) / g**3, rel=1e-3)


@given(sigma_z2=st.floats(1e-3, 1e3))
def test_mode_moves_exactly_at_critical_variance(sigma_z2):
    modes = disorder.density_modes(sigma_z2)
    grid = np.linspace(-0.999, 0.999, 20001)
    argmax = grid[np.argmax(disorder.soft_spin_density(grid, sigma_z2))]
    if sigma_z2 <= disorder.critical_variance():
        np.testing.assert_array_equal(modes, [0.0])
        assert abs(argmax) <= 1e-4 + math.sqrt(max(sigma_z2 - 0.49, 0.0)) * 1.5
    else:
        assert modes.size == 2 and modes[1] > 0 and modes[0] == -modes[1]
        assert abs(abs(argmax) - modes[1]) < 2e-4 or modes[1] > 0.999


def test_critical_variance_at_transition():
    assert disorder.critical_variance() == 0.5
    np.testing.assert_array_equal(disorder.density_modes(0.5), [0.0])
    assert disorder.density_modes(0.5 + 1e-9).size == 2
    # the curvature at 0 changes sign there
    c_below = disorder.potential_coefficients(0.5 - 1e-6)[2]
    c_above = disorder.potential_coefficients(0.5 + 1e-6)[2]
    assert c_below > 0 > c_above


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: disorder.soft_spin_density(0.1, 0.0), "sigma_z2"),
        (lambda: disorder.soft_spin_density(np.nan, 1.0), "phi"),
        (lambda: disorder.soft_spin_potential(0.1, -1.0), "sigma_z2"),
        (lambda: disorder.potential_extrema(float("nan")), "sigma_z2"),
        (lambda: disorder.potential_coefficients(1.0, order=1), "order"),
        (lambda: disorder.preactivation_kernel(np.zeros(3), 1.0), "previous"),
        (lambda: disorder.preactivation_kernel(np.zeros((3, 2)), 0.0), "sigma2"),
    ],
)
def test_bad_input_names_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
