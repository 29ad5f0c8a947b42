"""The complete eigenvalue SDE (dysonsgd.theory.ito, ito_special) against independent oracles.

Oracles: the series of the exact eigenvalues (closed form for N = 2, characteristic polynomial
for N = 3), Ito's formula on the closed-form eigenvalues of a 2 x M matrix, the Wishart (Bru)
process, the printed derivation of (B.7)-(B.9), a direct application of the ansatz (B.5), and
numpy eigenvalues of explicit SGD steps (a random N = 4 matrix; every minibatch of a small data
set enumerated), with tolerances from a rigorous bound on the perturbation remainder.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import sympy as sp

from dysonsgd._checks import InputError
from dysonsgd.theory import ito, ito_special, symbolic
from dysonsgd.theory.ito import batch, fpc, lr, sigma
from dysonsgd.theory.symbolic import S, T


def _zero(expr) -> bool:
    """expr == 0 identically: cancel (fast, rational expressions), else simplify."""
    return sp.cancel(sp.expand(expr)) == 0 or sp.simplify(expr) == 0


# --------------------------------------------------------------------------------------------
# symbolic identities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
def test_second_order_formula_is_the_series_of_the_exact_eigenvalues(n):
    p = ito.eigenvalue_perturbation(n)
    assert p.method == ("closed form" if n == 2 else "characteristic polynomial")
    assert all(r == 0 for r in p.residuals())
    # the formula is not trivially the series: the Coulomb term is there and is of order eps^2
    coulomb = p.formula[0].coeff(ito.eps, 2) - p.a2[0, 0]
    assert _zero(coulomb - sum(p.a1[0, j] ** 2 / (p.x[0] - p.x[j]) for j in range(1, n)))


@pytest.mark.parametrize(("n", "m"), [(2, 3), (3, 4)])
def test_minibatch_moments_give_the_complete_drift_and_covariance(n, m):
    km = ito.one_step_moments(n, m)
    eq = ito.eigenvalue_equation(n)
    drift, diffusion = eq.in_moments()
    pop = ito.population_moments(km.population)
    state = {x: s**2 for x, s in zip(eq.x, km.step.s, strict=True)}
    t_f = lr * fpc / batch  # T_f = lr f / b
    for i in range(n):  # E[dx_i] = lr * drift_i with T -> T_f, to O(lr^2)
        assert _zero(lr * drift[i].subs(pop).subs(state).subs(T, t_f) - km.mean[i])
    for i in range(n):  # Cov(dx_i, dx_j) = lr T_f C_ij = lr^2 (f/b) C_ij per step
        for j in range(n):
            expected = lr * diffusion[i, j].subs(pop).subs(state).subs(T, t_f)
            assert _zero(expected - km.cov[i, j])
            assert _zero(km.cov[i, j].coeff(lr, 3))  # not lr^3: derivation.md's typo


@pytest.mark.parametrize("n", [2, 3, 4])
def test_general_n_form_gives_the_explicit_equation(n):
    gen = ito.general_eigenvalue_equation()
    eq = ito.eigenvalue_equation(n)
    drift, diffusion = eq.in_moments()
    for i in range(1, n + 1):
        assert _zero(ito.explicit(gen["drift"], n, i) - drift[i - 1])
        for j in range(1, n + 1):
            assert _zero(ito.explicit(gen["C"], n, i, j) * T - diffusion[i - 1, j - 1])
            if i < j:
                v = eq.coefficients[sp.Symbol(f"V_{i}_{j}", positive=True)]
                assert _zero(ito.explicit(gen["V"], n, i, j) - v)


def test_ito_formula_on_exact_eigenvalues_gives_the_continuum_equation():
    # M = 3 > N: the column outside the span of Vt enters q_i (Ito drift) but not V or C
    drift, diffusion, pop = ito_special.ito_two_eigenvalues(3)
    eq = ito.eigenvalue_equation(2, variant="continuum")
    f_drift, f_diffusion = eq.in_moments()
    moments = ito.population_moments(pop)
    s1, s2 = sp.symbols("s_1:3", positive=True)
    state = {eq.x[0]: s1**2, eq.x[1]: s2**2}
    for k in range(2):
        assert _zero(drift[k] - f_drift[k].subs(moments).subs(state))
    assert sp.simplify(diffusion - f_diffusion.subs(moments).subs(state)) == sp.zeros(2, 2)
    # the correlation is real: the Ito oracle has C_12 = 4 s_1 s_2 Cov(G_11, G_22) off-diagonal
    assert _zero(diffusion[0, 1] - 4 * T * s1 * s2 * pop.cov[((0, 0), (1, 1))])


def test_variants_drop_exactly_their_terms():
    n = 3
    complete = ito.eigenvalue_equation(n)
    paper = ito.eigenvalue_equation(n, variant="paper")
    assert paper.dropped == ito.TERMS and complete.dropped == ()
    # 'paper' is (B.1) as printed: K_i + T sum V_ij/(x_i - x_j), noise T V_ii, independent
    k = sp.symbols(f"K_1:{n + 1}", real=True)
    v = symbolic.level_spacing_equation(n).noise_matrix
    x = paper.x
    for i in range(n):
        b1 = k[i] + T * sum(v[i, j] / (x[i] - x[j]) for j in range(n) if j != i)
        assert _zero(paper.drift[i] - b1)
    assert paper.diffusion == sp.diag(*[T * v[i, i] for i in range(n)])
    # complete - continuum is lr (m_i + sum P_ij/(x_i - x_j)); continuum - paper is T q_i
    cont = ito.eigenvalue_equation(n, variant="continuum")
    assert _zero(cont.drift[0] - paper.drift[0] - T * sp.Symbol("q_1", nonnegative=True))
    assert _zero((complete.drift[0] - cont.drift[0]).subs(lr, 0))
    ablation = ito.eigenvalue_equation(n, variant="continuum", drop=("correlation",))
    assert ablation.dropped == ("finite_lr", "correlation")
    assert ablation.diffusion == paper.diffusion


@pytest.mark.parametrize("n", [3, 4, 5])
def test_spacing_equation_against_printed_and_direct_derivation(n):
    printed = symbolic.level_spacing_equation(n)
    paper = ito.spacing_equation(n, variant="paper")
    assert _zero(paper.k_s - printed.k_s) and _zero(paper.v_s - printed.v_s)
    assert _zero(paper.d_s - printed.d_s)
    sc = ito.spacing_equation(n)
    eq = sc.equation
    # direct: drift of (x_N - x_1)/(N - 1) under the ansatz x_j = x_1 + (j - 1) S (B.5),
    # with the coefficients held as constants (as in appendix B)
    x = eq.x
    ansatz = {x[j]: x[0] + j * S for j in range(n)}
    direct = sp.expand(sp.simplify(((eq.drift[-1] - eq.drift[0]) / (n - 1)).subs(ansatz)))
    assert _zero(direct - (sc.k_s + sc.v_s * T / S))
    q, m = sp.symbols(f"q_1:{n + 1}", nonnegative=True), sp.symbols(f"m_1:{n + 1}",
                                                                     nonnegative=True)
    shift = (T * (q[-1] - q[0]) + lr * (m[-1] - m[0])) / (n - 1)
    assert _zero(sc.k_s - printed.k_s - shift)
    # D_S = (C_11 + C_NN - 2 C_1N)/(2 (N - 1)^2), C_ii = V_ii: (B.9) less the correlation
    c1n = sp.Symbol(f"C_1_{n}", real=True)
    assert _zero(sc.d_s - printed.d_s + c1n / (n - 1) ** 2)


@pytest.mark.parametrize(("n", "m"), [(2, 3), (3, 5), (4, 6)])
def test_wishart_is_the_bru_process(n, m):
    drift, diffusion = ito.eigenvalue_equation(n).in_moments()
    wm = ito_special.wishart_moments(n, m)
    bru_drift, bru_diffusion = ito_special.bru_equation(n, m)
    assert all(_zero(a.subs(wm) - b) for a, b in zip(drift, bru_drift, strict=True))
    assert all(_zero(e) for e in diffusion.subs(wm) - bru_diffusion)
    # squared-Bessel dimension M - N + 1 at the wall (Feller: never reaches 0 iff M >= N + 1)
    assert _zero(ito_special.wall_dimension(n).subs(wm) - (m - n + 1))


def test_bru_from_ito_formula_at_a_generic_matrix():
    drift, diffusion, (x_minus, x_plus), radicand = ito_special.bru_ito(2)
    bru_drift, bru_diffusion = ito_special.bru_equation(2, 2)
    x1, x2 = sp.symbols("x_1:3", positive=True)
    at = {x1: x_minus, x2: x_plus}
    residuals = [a - b.subs(at) for a, b in zip(drift, bru_drift, strict=True)]
    residuals += list(diffusion - bru_diffusion.subs(at))
    assert all(ito_special.vanishes_with_root(r, radicand) for r in residuals)
    # the reduction is not vacuous: a wrong dimension M is detected
    assert not ito_special.vanishes_with_root(residuals[0] + T * sigma**2, radicand)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (3, 5)])
def test_wall_drift_is_nonnegative_and_the_printed_one_is_not(n, m):
    pop = ito.minibatch_population(n, m)
    moments = ito.population_moments(pop)
    outside = range(n, m)  # columns outside the span of Vt
    expected = (T * (pop.cov[((0, 0), (0, 0))] + sum(pop.cov[((0, k), (0, k))] for k in outside))
                + lr * (pop.mean[0, 0] ** 2 + sum(pop.mean[0, k] ** 2 for k in outside)))
    assert _zero(ito_special.wall_drift(n).subs(moments) - expected)
    paper = ito_special.wall_drift(n, variant="paper").subs(moments)
    assert _zero(paper + T * sum(pop.cov[((0, j), (0, j))] for j in range(1, n)))


def test_finite_lr_terms_are_the_curvature_of_the_gradient_flow():
    curvature, pop = ito_special.flow_curvature_two(3)
    eq = ito.eigenvalue_equation(2)
    moments = ito.population_moments(pop)
    s1, s2 = sp.symbols("s_1:3", positive=True)
    state = {eq.x[0]: s1**2, eq.x[1]: s2**2}
    for i in range(2):
        lr_part = sp.expand(eq.drift[i]).coeff(lr, 1)  # m_i + P_12 / (x_i - x_j)
        assert _zero(curvature[i] - lr_part.subs(eq.coefficients).subs(moments).subs(state))
    g = ito.moment_symbols(3).g
    assert ito_special.frozen_moment_correction(3) == tuple(g[i, i] ** 2 for i in range(3))


def test_bad_input_raises():
    with pytest.raises(InputError, match="variant"):
        ito.eigenvalue_equation(3, variant="printed")
    with pytest.raises(InputError, match="drop"):
        ito.eigenvalue_equation(3, drop=("coulomb",))
    with pytest.raises(InputError, match="n must"):
        ito.eigenvalue_equation(1)
    with pytest.raises(InputError, match="n must"):
        ito.eigenvalue_perturbation(5)
    with pytest.raises(InputError, match="m must"):
        ito.sgd_step(3, 2)


# --------------------------------------------------------------------------------------------
# numeric oracles: numpy eigenvalues of explicit SGD steps
# --------------------------------------------------------------------------------------------


def _remainder_bound(x, i, norm1, norm2, e, order):
    """Bound on |x_i(e) - (Taylor polynomial of degree ``order``)| for diag(x) + e A1 + e^2 A2.

    Bauer-Fike (diag(x) is normal): for complex |e| <= rho with rho ||A1|| + rho^2 ||A2|| =
    gap_i / 2 the eigenvalue stays in a disc of radius gap_i / 2 around x_i, disjoint from the
    others, so it is simple and analytic there, bounded by gap_i / 2. Cauchy's estimate then
    bounds the Taylor remainder by (gap_i/2) (e/rho)^(order+1) / (1 - e/rho).
    """
    gap = np.min(np.abs(np.delete(x, i) - x[i]))
    rho = (-norm1 + np.sqrt(norm1**2 + 2 * norm2 * gap)) / (2 * norm2)
    ratio = e / rho
    assert ratio < 0.5
    return gap / 2 * ratio ** (order + 1) / (1 - ratio)


def _singular_basis(w):
    u, s, vh = np.linalg.svd(w)  # full: vh is M x M
    order = np.argsort(s)
    n = w.shape[0]
    v_full = np.concatenate([vh[:n][order], vh[n:]]).T  # first N columns paired with u
    return u[:, order], s[order], v_full


def test_second_order_increment_of_a_random_n4_step():
    n, m = 4, 6
    step = ito.sgd_step(n, m)
    f = sp.lambdify((lr, *step.s, *step.delta), step.increment, "numpy")
    rng = np.random.default_rng(20250611)
    w = rng.normal(size=(n, m))
    delta = rng.normal(size=(n, m))
    u, s, v_full = _singular_basis(w)
    x = s**2
    d_rot = u.T @ delta @ v_full  # the gradient in the singular basis (sgd_step's `delta`)
    norm1 = np.linalg.norm(w @ delta.T + delta @ w.T, 2)
    norm2 = np.linalg.norm(delta, 2) ** 2
    for e in (1e-5, 1e-6):  # e / rho ~ 5e-4, 5e-5 (rho ~ 0.02 for this matrix)
        w_new = w - e * delta
        exact = np.linalg.eigvalsh(w_new @ w_new.T) - x
        formula = np.array(f(e, *s, *d_rot.ravel()))
        first = -e * 2 * s * np.diag(d_rot[:, :n])
        for i in range(n):
            bound = _remainder_bound(x, i, norm1, norm2, e, order=2)
            rounding = 64 * np.finfo(float).eps * np.linalg.norm(w_new @ w_new.T, 2)
            assert abs(exact[i] - formula[i]) <= bound + rounding
            # sensitive: the O(e^2) part of the formula is far above the allowed miss
            assert abs(formula[i] - first[i]) > 10 * (bound + rounding)


def test_every_minibatch_enumerated_against_the_drift_and_covariance():
    n, m, n_data, b = 3, 4, 8, 2
    rng = np.random.default_rng(7)
    rot_n, _ = np.linalg.qr(rng.normal(size=(n, n)))
    rot_m, _ = np.linalg.qr(rng.normal(size=(m, m)))
    w = rot_n @ np.diag([1.0, 1.5, 2.0]) @ rot_m[:n]  # x = 1, 2.25, 4: gaps >= 1.25
    grads = rng.normal(size=(n_data, n, m)) + 0.5 * rng.normal(size=(n, m))
    u, s, v_full = _singular_basis(w)
    x = s**2
    d = np.einsum("ab,pbk,kl->pal", u.T, grads, v_full)  # (n_data, N, M) in the singular basis
    mean = d.mean(0)
    cen = d - mean
    moments = {"m": (mean**2).sum(1), "q": (cen**2).mean(0).sum(1)}
    diag = np.einsum("pii->pi", cen[:, :, :n])
    moments["Sigma"] = diag.T @ diag / n_data
    moments["v"] = (cen[:, :, :n] ** 2).mean(0)
    moments["c"] = np.einsum("pij,pji->ij", cen[:, :, :n], cen[:, :, :n]) / n_data
    moments["g"] = mean[:, :n]
    ms = ito.moment_symbols(n)
    values = {}
    for i in range(n):
        values[ms.m[i]], values[ms.q[i]] = moments["m"][i], moments["q"][i]
        for j in range(n):
            values[ms.g[i, j]], values[ms.sigma[i, j]] = moments["g"][i, j], moments["Sigma"][i, j]
            if i != j:
                values[ms.v[i, j]], values[ms.c[i, j]] = moments["v"][i, j], moments["c"][i, j]
    assert np.allclose(moments["Sigma"].diagonal(), moments["v"].diagonal())
    drift, diffusion = ito.eigenvalue_equation(n).in_moments()
    f_pop = (n_data - b) / (n_data - 1)
    e = 3e-5  # e / rho ~ 1e-3
    t_f = e * f_pop / b
    state = dict(zip(sp.symbols(f"x_1:{n + 1}", positive=True), x, strict=True))
    num = {**values, **state, T: t_f, lr: e}
    drift_num = np.array([float(dr.subs(num)) for dr in drift])
    cov_num = np.array(diffusion.subs(num).tolist(), dtype=float)
    increments, first, bounds1, bounds2 = [], [], [], []
    for batch_idx in combinations(range(n_data), b):
        delta = grads[list(batch_idx)].mean(0)
        w_new = w - e * delta
        increments.append(np.linalg.eigvalsh(w_new @ w_new.T) - x)
        first.append(-e * 2 * s * np.diag(u.T @ delta @ v_full[:, :n]))
        norm1 = np.linalg.norm(w @ delta.T + delta @ w.T, 2)
        norm2 = np.linalg.norm(delta, 2) ** 2
        bounds1.append([_remainder_bound(x, i, norm1, norm2, e, 1) for i in range(n)])
        bounds2.append([_remainder_bound(x, i, norm1, norm2, e, 2) for i in range(n)])
    increments, first = np.array(increments), np.array(first)
    bounds1, bounds2 = np.array(bounds1), np.array(bounds2)
    assert len(increments) == 28
    # mean over all C(8, 2) batches: E[dx] = lr * drift up to the mean O(lr^3) remainder
    rounding = 64 * np.finfo(float).eps * np.max(x)
    miss = np.abs(increments.mean(0) - e * drift_num)
    assert np.all(miss <= bounds2.mean(0) + rounding)
    assert np.all(np.abs(e * drift_num - first.mean(0)) > 10 * (bounds2.mean(0) + rounding))
    # covariance: Cov(dx) = lr T_f C + O(lr^3); with dx = a + r, |r| <= bounds1 (first-order
    # remainder), |Cov(dx) - Cov(a)| <= sd(a_i) R_j + sd(a_j) R_i + R_i R_j, R = max |r|
    cov_exact = np.cov(increments.T, bias=True)
    assert np.allclose(np.cov(first.T, bias=True), e * cov_num, rtol=1e-10)  # Cov(a) = lr T_f C
    big_r = bounds1.max(0) + rounding
    sd = first.std(0)
    allowed = np.outer(sd, big_r) + np.outer(big_r, sd) + np.outer(big_r, big_r)
    assert np.all(np.abs(cov_exact - e * cov_num) <= allowed)
    # and the finite-population factor matters at this precision: f = 6/7 is detected
    assert np.all(np.abs(e * cov_num.diagonal() * (1 / f_pop - 1)) > 10 * allowed.diagonal())


def test_state_following_drift_needs_the_modified_equation_not_lr_m():
    steps = ito_special.scalar_modified_equation()
    w, a = sp.symbols("w a", real=True)
    c = sp.Symbol("c", positive=True)
    assert _zero(steps["modified"] - steps["sgd"])  # the SME reproduces the step to O(lr^2)
    # the continuum flow misses (lr^2/2) dx/dw (mu mu') = lr^2 c^2 w (w - a) per step ...
    assert _zero(steps["continuum"] - steps["sgd"] - lr**2 * c**2 * w * (w - a))
    # ... and adding lr m = lr mu^2 counts the flow's own curvature a second time
    assert _zero(steps["complete"] - steps["continuum"] - lr**2 * c**2 * (w - a) ** 2)
