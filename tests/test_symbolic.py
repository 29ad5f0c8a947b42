"""The sympy derivations agree with the numeric closed forms (compared through lambdify)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dysonsgd.theory import disorder, rmt, symbolic
from dysonsgd.theory.symbolic import phi, ratio, sigma2, sigma_z2, x


def test_potential_matches_numeric():
    v = sp.lambdify((phi, sigma_z2), symbolic.soft_spin_potential(), "numpy")
    grid = np.linspace(-0.95, 0.95, 39)
    for s2 in (0.1, 0.5, 2.0):
        np.testing.assert_allclose(v(grid, s2), disorder.soft_spin_potential(grid, s2), atol=1e-13)


def test_potential_series_matches_paper_and_numeric():
    series = symbolic.potential_series(8)
    assert sp.simplify(series[2] - (1 / (2 * sigma_z2) - 1)) == 0  # (2.22)
    assert sp.simplify(series[4] - (1 / (3 * sigma_z2) - sp.Rational(1, 2))) == 0  # (2.22)
    assert set(series) == {2, 4, 6, 8}  # odd orders vanish
    for s2 in (0.05, 0.5, 0.7, 13.0):
        numeric = disorder.potential_coefficients(s2, order=8)
        for power, expr in series.items():
            assert float(expr.subs(sigma_z2, s2)) == pytest.approx(numeric[power], rel=1e-13)


def test_critical_variance_is_derived_half():
    sc = symbolic.critical_variance()
    assert sc == sp.Rational(1, 2)
    assert float(sc) == disorder.critical_variance()
    # at sigma_c the quartic term is positive: still a single well exactly at the transition
    assert symbolic.potential_series(4)[4].subs(sigma_z2, sc) == sp.Rational(1, 6)


def test_extremum_condition_matches_tanh_equation():
    cond = symbolic.extremum_condition()
    assert sp.simplify(cond - (sp.atanh(phi) - 2 * sigma_z2 * phi)) == 0
    f = sp.lambdify((phi, sigma_z2), cond, "math")
    for s2 in (0.6, 1.0, 4.0):
        p = disorder.potential_extrema(s2)[2]
        # atanh amplifies the rounding of p by its derivative 1 / (1 - p^2)
        assert abs(f(p, s2)) < 1e-14 / (1 - p * p)


@pytest.mark.parametrize(("n_out", "n_hidden", "n_data"), [(1, 1, 1), (1, 3, 2), (2, 3, 3)])
def test_mse_expansion_is_identity_and_matches_numeric(n_out, n_hidden, n_data):
    form = symbolic.mse_expansion(n_out, n_hidden, n_data)
    assert form.residual() == 0
    assert form.coupling == form.coupling.T
    symbols = [*form.w, *form.features, *form.targets]
    f_j = sp.lambdify(symbols, form.coupling, "numpy")
    f_h = sp.lambdify(symbols, form.field, "numpy")
    f_c = sp.lambdify(symbols, form.constant, "numpy")
    rng = np.random.default_rng(n_out * 100 + n_hidden * 10 + n_data)
    w = rng.normal(size=(n_out, n_hidden))
    feats = rng.uniform(-1, 1, size=(n_hidden, n_data))
    y = rng.normal(size=(n_out, n_data))
    values = [*w.ravel(), *feats.ravel(), *y.ravel()]
    coupling, field, const = disorder.couplings(w, y)
    np.testing.assert_allclose(np.array(f_j(*values), dtype=float), coupling, rtol=1e-13)
    np.testing.assert_allclose(np.array(f_h(*values), dtype=float), field, rtol=1e-13)
    assert float(f_c(*values)) == pytest.approx(float(const), rel=1e-13)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 8])
def test_spacing_coefficients_match_derivation(n):
    eq = symbolic.level_spacing_equation(n)
    evaluate = eq.lambdify()

    @settings(max_examples=15)
    @given(seed=st.integers(0, 2**32 - 1))
    def check(seed):
        rng = np.random.default_rng(seed)
        k = np.sort(rng.normal(size=n))  # any drift vector
        a = rng.normal(size=(n, n))
        v = a @ a.T + n * np.eye(n)  # random symmetric (positive) noise matrix
        expected = evaluate(k.tolist(), v.tolist())
        got = rmt.spacing_coefficients(k, v)
        np.testing.assert_allclose(got, expected, rtol=1e-12)

    check()


def test_spacing_equation_structure():
    eq = symbolic.level_spacing_equation(3)
    k1, _, k3 = eq.drift_symbols
    assert sp.simplify(eq.k_s - (k3 - k1) / 2) == 0
    v = eq.noise_matrix
    # (B.7) for N = 3: 2 V_31 / 4 + (V_32 + V_12) / 2
    assert sp.simplify(eq.v_s - (v[2, 0] / 2 + (v[2, 1] + v[0, 1]) / 2)) == 0
    assert sp.simplify(eq.d_s - (v[0, 0] + v[2, 2]) / 8) == 0


def test_mp_moments_match_numeric_and_quadrature():
    moments = symbolic.marchenko_pastur_moments(6)
    assert moments[0] == 1
    assert moments[1] == sigma2
    assert sp.expand(moments[2] - sigma2**2 * (1 + ratio)) == 0
    for r, s in [(0.5, 1 / 64), (1.0, 2.0), (0.1, 7.0)]:
        mp = rmt.marchenko_pastur(ratio=r, sigma2=s)
        for k, expr in enumerate(moments[1:], start=1):
            value = float(expr.subs({ratio: r, sigma2: s}))
            assert value == pytest.approx(mp.moment(k), rel=1e-12)


def test_mp_density_and_edges_match_numeric():
    density, (lo, hi) = symbolic.marchenko_pastur_density()
    f = sp.lambdify((x, ratio, sigma2), density, "numpy")
    for r, s in [(0.5, 1 / 64), (0.25, 3.0), (1.0, 1.0)]:
        mp = rmt.marchenko_pastur(ratio=r, sigma2=s)
        edges = (float(lo.subs({ratio: r, sigma2: s})), float(hi.subs({ratio: r, sigma2: s})))
        assert edges == pytest.approx(mp.support(), rel=1e-13, abs=1e-300)
        grid = np.linspace(*mp.support(), 25)[1:-1]
        np.testing.assert_allclose(f(grid, r, s), mp.pdf(grid), rtol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="n"):
        symbolic.level_spacing_equation(2)
    with pytest.raises(ValueError, match="order"):
        symbolic.potential_series(1)
    with pytest.raises(ValueError, match="n_hidden"):
        symbolic.mse_expansion(1, 0, 1)
