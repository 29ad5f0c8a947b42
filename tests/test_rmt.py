"""Tests of dysonsgd.theory.rmt against exact formulas, quadrature, scikit-rmt (stored reference
values, tests/oracles/scikit_rmt_reference.py) and matrix simulation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import integrate, stats

from dysonsgd.measure import spectrum
from dysonsgd.theory import rmt
from dysonsgd.theory.rmt import marchenko_pastur, wigner_surmise

ratios = st.floats(min_value=0.02, max_value=1.0)
scales = st.floats(min_value=1e-6, max_value=1e6)


def _mp_expect(ratio, sigma2, func):
    """E[func(x)] under (4.2) by quadrature in the angle x = x_- + 2h cos^2(theta/2).

    With h = (x_+ - x_-)/2 the square root becomes h sin(theta) and the integrand is smooth on
    [0, pi], also at the hard edge x_- = 0 of ratio = 1; independent of the closed-form cdf.
    """
    lo, hi = rmt.marchenko_pastur_edges(ratio, sigma2)
    h = 0.5 * (hi - lo)

    def integrand(theta):
        x = lo + 2 * h * math.cos(theta / 2) ** 2
        return h * h * math.sin(theta) ** 2 * func(x) / (2 * np.pi * sigma2 * ratio * x)

    val, _ = integrate.quad(
        integrand, 0.0, np.pi, epsabs=0, epsrel=1e-12, limit=400, points=_edge_points(lo, h)
    )
    return val


def _edge_points(lo, h):
    """Break points near theta = pi, where x - x_- ~ x_- and the density has a feature of
    width sqrt(x_- / h) in theta when x_- << h (ratio close to 1)."""
    width = math.sqrt(lo / h) if h > 0 else 0.0
    return [math.pi - c * width for c in (1.0, 10.0, 100.0) if 0 < c * width < math.pi]


# --------------------------------------------------------------------------------------------
# One shared battery for every distribution, driven by a parameter list (as scipy's distcont)
# --------------------------------------------------------------------------------------------

DISTRIBUTIONS = [
    ("marchenko_pastur", marchenko_pastur, (0.5, 1 / 64)),
    ("marchenko_pastur", marchenko_pastur, (1.0, 2.0)),
    ("marchenko_pastur", marchenko_pastur, (0.03, 5e3)),
    ("wigner_surmise", wigner_surmise, ()),
]


@pytest.mark.parametrize(("name", "dist", "args"), DISTRIBUTIONS)
def test_battery_normalisation_and_cdf(name, dist, args):
    frozen = dist(*args)
    lo, hi = frozen.support()
    hi_eff = hi if np.isfinite(hi) else frozen.isf(1e-15)
    total, _ = integrate.quad(frozen.pdf, lo, hi_eff, limit=200, epsrel=1e-10)
    assert total == pytest.approx(1.0, abs=1e-7)
    x = np.linspace(lo, hi_eff, 9)[1:-1]
    by_quad = [integrate.quad(frozen.pdf, lo, xi, limit=200, epsrel=1e-10)[0] for xi in x]
    np.testing.assert_allclose(frozen.cdf(x), by_quad, atol=1e-7)
    np.testing.assert_allclose(frozen.sf(x), 1 - frozen.cdf(x), atol=1e-14)


@pytest.mark.parametrize(("name", "dist", "args"), DISTRIBUTIONS)
def test_battery_ppf_inverts_cdf(name, dist, args):
    frozen = dist(*args)
    q = np.array([1e-6, 0.01, 0.25, 0.5, 0.75, 0.99, 1 - 1e-9])
    np.testing.assert_allclose(frozen.cdf(frozen.ppf(q)), q, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("name", "dist", "args"), DISTRIBUTIONS)
def test_battery_moments_match_quadrature(name, dist, args):
    frozen = dist(*args)
    lo, hi = frozen.support()
    hi_eff = hi if np.isfinite(hi) else frozen.isf(1e-18)
    scale = frozen.mean()
    for n in (1, 2, 3, 4):
        exact = frozen.moment(n)
        quad, _ = integrate.quad(
            lambda x, n=n: (x / scale) ** n * frozen.pdf(x), lo, hi_eff, limit=200, epsrel=1e-11
        )
        assert exact / scale**n == pytest.approx(quad, rel=1e-6)
    mean, var, skew, kurt = frozen.stats(moments="mvsk")
    m = [frozen.moment(k) for k in range(1, 5)]
    assert mean == pytest.approx(m[0], rel=1e-12)
    assert var == pytest.approx(m[1] - m[0] ** 2, rel=1e-10)
    c3 = m[2] - 3 * m[0] * m[1] + 2 * m[0] ** 3
    c4 = m[3] - 4 * m[0] * m[2] + 6 * m[0] ** 2 * m[1] - 3 * m[0] ** 4
    assert skew == pytest.approx(c3 / var**1.5, rel=1e-8)
    assert kurt == pytest.approx(c4 / var**2 - 3, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize(("name", "dist", "args"), DISTRIBUTIONS)
def test_battery_rvs_follow_cdf(name, dist, args):
    sample = dist(*args).rvs(size=4000, random_state=np.random.default_rng(20251118))
    assert stats.kstest(sample, dist(*args).cdf).pvalue > 0.01


# --------------------------------------------------------------------------------------------
# Marchenko-Pastur: hypothesis properties over the whole parameter range
# --------------------------------------------------------------------------------------------


@given(ratio=ratios, sigma2=scales)
@example(ratio=0.99999, sigma2=1.0)  # nearly hard edge: x_- = 2.5e-11
@example(ratio=1.0, sigma2=1.0)
def test_mp_pdf_integrates_to_one(ratio, sigma2):
    assert _mp_expect(ratio, sigma2, lambda x: 1.0) == pytest.approx(1.0, abs=1e-9)
    # the implemented pdf itself, in the angle variable where its sqrt edges are smooth
    mp = marchenko_pastur(ratio=ratio, sigma2=sigma2)
    lo, hi = mp.support()
    h = 0.5 * (hi - lo)

    def integrand(theta):
        return mp.pdf(lo + 2 * h * math.cos(theta / 2) ** 2) * h * math.sin(theta)

    total, _ = integrate.quad(
        integrand, 0.0, np.pi, epsabs=0, epsrel=1e-12, limit=400, points=_edge_points(lo, h)
    )
    assert total == pytest.approx(1.0, abs=1e-9)


@given(ratio=ratios, sigma2=scales)
def test_mp_cdf_monotone_with_edges(ratio, sigma2):
    mp = marchenko_pastur(ratio=ratio, sigma2=sigma2)
    lo, hi = mp.support()
    assert mp.cdf(lo) == 0.0
    assert mp.cdf(hi) == 1.0
    x = np.linspace(lo, hi, 401)
    c = mp.cdf(x)
    assert np.all(np.diff(c) >= 0)
    assert np.all(np.diff(c)[1:-1] > 0)  # strictly increasing inside the support


@given(ratio=ratios, sigma2=scales, q=st.floats(min_value=1e-8, max_value=1 - 1e-8))
@example(ratio=1.0, sigma2=1.0, q=1e-8)  # hard edge: cdf ~ sqrt(x)
@example(ratio=1.0, sigma2=1.0, q=5.960464477539063e-08)
@example(ratio=0.5, sigma2=1.0, q=1 - 1e-8)
def test_mp_ppf_inverts_cdf(ratio, sigma2, q):
    mp = marchenko_pastur(ratio=ratio, sigma2=sigma2)
    assert mp.cdf(mp.ppf(q)) == pytest.approx(q, rel=1e-9, abs=1e-12)


@given(ratio=ratios, sigma2=scales)
def test_mp_mean_and_variance_match_quadrature(ratio, sigma2):
    mp = marchenko_pastur(ratio=ratio, sigma2=sigma2)
    mean = _mp_expect(ratio, sigma2, lambda x: x)
    second = _mp_expect(ratio, sigma2, lambda x: x * x)
    assert mp.mean() == pytest.approx(mean, rel=1e-9)
    assert mp.mean() == pytest.approx(sigma2, rel=1e-14)
    assert mp.var() == pytest.approx(second - mean**2, rel=1e-7)
    assert mp.var() == pytest.approx(sigma2**2 * ratio, rel=1e-14)


def test_mp_wishart_eigenvalues_pass_ks():
    n2, n1, sigma2 = 200, 400, 0.7
    rng = np.random.default_rng(1234)
    w = rng.normal(scale=math.sqrt(sigma2 / n1), size=(n2, n1))
    eig = np.linalg.eigvalsh(w @ w.T)
    result = stats.kstest(eig, marchenko_pastur(ratio=n2 / n1, sigma2=sigma2).cdf)
    assert result.pvalue > 0.01
    # and a wrong scale is rejected by the same test: the test has power
    wrong = stats.kstest(eig, marchenko_pastur(ratio=n2 / n1, sigma2=1.5 * sigma2).cdf)
    assert wrong.pvalue < 0.01


SCIKIT_RMT = json.loads(
    (Path(__file__).resolve().parent / "data" / "scikit_rmt_marchenko_pastur.json").read_text()
)


@pytest.mark.parametrize(
    "case", SCIKIT_RMT["cases"], ids=lambda c: f"ratio={c['ratio']}-sigma={c['sigma']}"
)
def test_mp_pdf_agrees_with_scikit_rmt(case):
    """Against scikit-rmt's MarchenkoPasturDistribution, whose values were generated once by
    tests/oracles/scikit_rmt_reference.py in its own environment (scikit-rmt pins numpy 1.x)
    and stored. Both sides are closed forms evaluated in float64, so the tolerances are rounding
    margins: 1e-12 relative on the edges, 1e-10 relative on the pdf, 1e-9 absolute on the cdf
    (the oracle's cdf adds arctan terms of order 1 that cancel to O(cdf))."""
    assert len(SCIKIT_RMT["cases"]) == 24  # the grid of the script: 6 ratios x 4 sigmas
    mp = marchenko_pastur(ratio=case["ratio"], sigma2=case["sigma"] ** 2)
    lo, hi = mp.support()
    assert (lo, hi) == pytest.approx((case["lambda_minus"], case["lambda_plus"]), rel=1e-12)
    x = np.array(case["x"])
    np.testing.assert_allclose(mp.pdf(x), case["pdf"], rtol=1e-10)
    np.testing.assert_allclose(mp.cdf(x), case["cdf"], atol=1e-9)


def test_mp_support_matches_paper_numbers():
    x_plus = marchenko_pastur(ratio=0.5, sigma2=1 / 64).support()[1]
    assert x_plus == pytest.approx(0.0455, abs=5e-5)
    assert marchenko_pastur(ratio=0.5, sigma2=256.0**2).support()[1] == pytest.approx(
        1.91e5, rel=5e-3
    )


@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.03])
def test_mp_tails_have_relative_accuracy(ratio):
    """cdf near x_- and sf near x_+ against high-precision quadrature (mpmath)."""
    import mpmath

    mpmath.mp.dps = 40
    a = (1 - mpmath.sqrt(ratio)) ** 2
    b = (1 + mpmath.sqrt(ratio)) ** 2

    def density(x):
        return mpmath.sqrt((b - x) * (x - a)) / (2 * mpmath.pi * ratio * x)

    mp = marchenko_pastur(ratio=ratio, sigma2=1.0)
    for offset in (1e-12, 1e-6, 1e-2):
        low = float(a) + offset
        high = float(b) - offset
        exact_cdf = mpmath.quad(density, [a, low])
        exact_sf = mpmath.quad(density, [high, b])
        assert mp.cdf(low) == pytest.approx(float(exact_cdf), rel=1e-9)
        assert mp.sf(high) == pytest.approx(float(exact_sf), rel=1e-9)
        assert mp.cdf(low) + mp.sf(low) == pytest.approx(1.0, abs=4e-16)


def test_mp_closed_form_moments():
    mp = marchenko_pastur(ratio=0.25, sigma2=3.0)
    r, s = 0.25, 3.0
    assert mp.moment(3) == pytest.approx(s**3 * (1 + 3 * r + r**2), rel=1e-14)
    assert mp.moment(4) == pytest.approx(s**4 * (1 + 6 * r + 6 * r**2 + r**3), rel=1e-14)
    _, _, skew, kurt = mp.stats(moments="mvsk")
    assert skew == pytest.approx(0.5)
    assert kurt == pytest.approx(-0.75)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"ratio": 0.0, "sigma2": 1.0}, "ratio"),
        ({"ratio": -0.1, "sigma2": 1.0}, "ratio"),
        ({"ratio": 1.01, "sigma2": 1.0}, "ratio"),
        ({"ratio": float("nan"), "sigma2": 1.0}, "ratio"),
        ({"ratio": 0.5, "sigma2": 0.0}, "sigma2"),
        ({"ratio": 0.5, "sigma2": -2.0}, "sigma2"),
        ({"ratio": 0.5, "sigma2": float("inf")}, "sigma2"),
        ({"ratio": 0.5}, "sigma2"),
    ],
)
def test_mp_bad_parameters_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        marchenko_pastur(**kwargs)
    if len(kwargs) == 2:
        with pytest.raises(ValueError, match=name):
            rmt.marchenko_pastur_edges(**kwargs)


def test_mp_unfrozen_methods_follow_scipy_nan_convention():
    assert np.isnan(marchenko_pastur.pdf(0.1, 1.5, 1.0))
    assert marchenko_pastur.pdf(0.01, 0.5, 1 / 64) > 0


# --------------------------------------------------------------------------------------------
# Wigner surmise
# --------------------------------------------------------------------------------------------


def test_wigner_surmise_exact_for_2x2_goe():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(20000, 2, 2))
    h = (a + np.swapaxes(a, -1, -2)) / 2
    ev = np.linalg.eigvalsh(h)
    s = ev[:, 1] - ev[:, 0]
    s /= s.mean()
    assert stats.kstest(s, wigner_surmise.cdf).pvalue > 0.01
    assert stats.kstest(s, stats.expon.cdf).pvalue < 1e-6  # Poisson spacings are rejected


# --------------------------------------------------------------------------------------------
# Wishart moments (2.24)
# --------------------------------------------------------------------------------------------


def test_wishart_moments_match_monte_carlo():
    n_out, n_hidden, sigma2, samples = 3, 4, 1.7, 40000
    rng = np.random.default_rng(99)
    w = rng.normal(scale=math.sqrt(sigma2 / n_hidden), size=(samples, n_out, n_hidden))
    j = np.einsum("ski,skj->sij", w, w)
    mean, cov = rmt.wishart_moments(n_out, n_hidden, sigma2)
    se_mean = j.std(axis=0, ddof=1) / math.sqrt(samples)
    assert np.all(np.abs(j.mean(axis=0) - mean) < 4 * se_mean)
    flat = j.reshape(samples, -1)
    centred = flat - flat.mean(axis=0)
    products = centred[:, :, None] * centred[:, None, :]
    cov_mc = products.mean(axis=0)
    se_cov = products.std(axis=0, ddof=1) / math.sqrt(samples)
    np.testing.assert_array_less(np.abs(cov_mc - cov.reshape(cov_mc.shape)), 4 * se_cov + 1e-15)
    # the formula's non-zero pattern: Var J_ii = 2 n_out sigma^4 / n_hidden^2
    assert cov[1, 1, 1, 1] == pytest.approx(2 * n_out * sigma2**2 / n_hidden**2)
    assert cov[0, 1, 1, 0] == pytest.approx(n_out * sigma2**2 / n_hidden**2)
    assert cov[0, 1, 2, 3] == 0.0


# --------------------------------------------------------------------------------------------
# Level spacings
# --------------------------------------------------------------------------------------------


@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=20, unique=True),
    data=st.data(),
)
def test_mean_level_spacing_order_and_axis(values, data):
    x = np.array(values)
    expected = (x.max() - x.min()) / (len(x) - 1)
    perm = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).permutation(len(x))
    spacing = spectrum.mean_level_spacing
    assert spacing(x[perm]) == pytest.approx(expected)
    assert spacing(np.sort(x), assume_sorted=True) == pytest.approx(expected)
    assert spacing(np.sort(x)[::-1], assume_sorted=True) == pytest.approx(expected)
    stacked = np.stack([x[perm], 2 * x[perm]], axis=1)  # eigenvalues along axis 0
    np.testing.assert_allclose(spacing(stacked, axis=0), [expected, 2 * expected])


def test_mean_spacing_of_mp_within_initial_bound():
    n2, n1, sigma2 = 16, 32, 1 / 64
    rng = np.random.default_rng(5)
    w = rng.normal(scale=math.sqrt(sigma2 / n1), size=(500, n2, n1))
    s = spectrum.mean_level_spacing(np.linalg.eigvalsh(w @ np.swapaxes(w, -1, -2)))
    bound = rmt.initial_spacing_bound(sigma2, n2 / n1, n2)
    assert bound == pytest.approx(4 * sigma2 * math.sqrt(0.5) / 15)
    assert np.mean(s <= bound) > 0.9
    # footnote 5: (n2 - 1) S(0) = x_+ - x_- ~ 0.04 at 1/sigma_W = 8
    assert 15 * bound == pytest.approx(0.0442, abs=5e-4)


def test_spacing_ratios_goe_and_poisson():
    rng = np.random.default_rng(11)
    a = rng.normal(size=(400, 60, 60))
    goe = np.linalg.eigvalsh(a + np.swapaxes(a, -1, -2))[:, 15:45]  # bulk
    r = rmt.spacing_ratios(goe, tilde=True).ravel()
    se = r.std(ddof=1) / math.sqrt(r.size)
    assert abs(r.mean() - rmt.spacing_ratio_mean("goe")) < 4 * se * 3  # ratios are correlated
    poisson = np.cumsum(rng.exponential(size=(400, 30)), axis=1)
    rp = rmt.spacing_ratios(poisson, tilde=True).ravel()
    sep = rp.std(ddof=1) / math.sqrt(rp.size)
    assert abs(rp.mean() - rmt.spacing_ratio_mean("poisson")) < 4 * sep
    assert rmt.spacing_ratios(np.array([0.0, 1.0, 3.0]))[0] == pytest.approx(2.0)


def test_spacing_coefficients_by_hand_n3():
    k = np.array([-1.0, 0.5, 2.0])
    v = np.array([[4.0, 1.0, 2.0], [1.0, 5.0, 3.0], [2.0, 3.0, 6.0]])
    k_s, v_s, d_s = rmt.spacing_coefficients(k, v)
    assert k_s == pytest.approx((2.0 - -1.0) / 2)
    # (B.7), N = 3: 2 V_31 / 4 + (V_32 + V_12) / 2
    assert v_s == pytest.approx(2 * 2.0 / 4 + (3.0 + 1.0) / 2)
    assert d_s == pytest.approx((4.0 + 6.0) / 8)
    # a matrix drift is reduced to its diagonal; leading axes broadcast
    out = rmt.spacing_coefficients(np.stack([np.diag(k)] * 2), np.stack([v] * 2))
    np.testing.assert_allclose(out[1], [v_s, v_s])
    # K_i over N snapshots has the trailing shape (N, N) too: the shape of V decides
    k_rows = np.stack([k, 2 * k, 3 * k])
    out = rmt.spacing_coefficients(k_rows, np.stack([v] * 3))
    np.testing.assert_allclose(out[0], [k_s, 2 * k_s, 3 * k_s])


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: rmt.initial_spacing_bound(-1.0, 0.5, 16), "sigma2"),
        (lambda: rmt.initial_spacing_bound(1.0, 0.0, 16), "ratio"),
        (lambda: rmt.initial_spacing_bound(1.0, 0.5, 1), "n"),
        (lambda: spectrum.mean_level_spacing([1.0]), "eigenvalues"),
        (lambda: spectrum.mean_level_spacing([1.0, np.nan]), "eigenvalues"),
        (lambda: rmt.spacing_coefficients(np.zeros(3), np.zeros((3, 4))), "noise"),
        (lambda: rmt.spacing_coefficients(np.zeros(4), np.zeros((3, 3))), "drift"),
        (lambda: rmt.wishart_moments(0, 3, 1.0), "n_out"),
        (lambda: rmt.wishart_moments(2, 3, np.nan), "sigma2"),
    ],
)
def test_bad_input_names_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
