"""Tests of dysonsgd.sde against direct matrix simulation, sdeint and exact solutions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sdeint
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dysonsgd._checks import InputError
from dysonsgd.sde import (
    Adaptive,
    DriftImplicit,
    DysonBrownianMotion,
    EulerMaruyama,
    FusedScheme,
    LangevinSGD,
    LevelSpacingSDE,
    choose_engine,
    integrate,
    langevin_sgd_discrete,
    piecewise_linear,
)
from dysonsgd.sde._fused import implicit as _sde_kernels
from dysonsgd.sde._fused import philox as _sde_philox
from dysonsgd.sde._fused.driver import integrate_fused
from dysonsgd.sde._fused.plan import fused_plan
from dysonsgd.theory import symbolic


def _random_index_sample(eigs, rng):
    """One eigenvalue per matrix, at a random index: i.i.d. draws of the mean spectral law."""
    idx = rng.integers(0, eigs.shape[1], eigs.shape[0])
    return eigs[np.arange(eigs.shape[0]), idx]


# --------------------------------------------------------------------------------------------
# against direct matrix simulation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["fused", "general"])
def test_dbm_reproduces_symmetric_matrix_brownian_motion(engine):
    """beta = 1: V_ii = 2 V_ij = 2, K = 0, T = 1 is the spectrum of H0 + GOE Brownian motion."""
    n, paths, t = 6, 1000, 0.5
    x0 = np.linspace(-1.0, 1.0, n)
    eq = DysonBrownianMotion(np.zeros(n), np.ones((n, n)) + np.eye(n), temperature=1.0)
    result = integrate(eq, x0, [0.0, t], n_paths=paths, dt=1e-3, seed=1, engine=engine)
    assert result.mask.sum() == 0
    rng = np.random.default_rng(2)
    a = rng.normal(scale=math.sqrt(t), size=(paths, n, n))
    direct = np.linalg.eigvalsh(np.diag(x0) + (a + np.swapaxes(a, 1, 2)) / math.sqrt(2))
    sample_rng = np.random.default_rng(3)
    p = stats.ks_2samp(
        _random_index_sample(result[-1].data, sample_rng), _random_index_sample(direct, sample_rng)
    ).pvalue
    assert p > 0.01


def test_dbm_reproduces_wishart_process():
    """X = W W^T, W Brownian (N x M): K_i = M, V_ij = x_i + x_j, V_ii = 4 x_i, T = 1."""
    n, m, t, paths = 4, 8, 0.5, 1000
    rng = np.random.default_rng(5)
    w0 = 0.5 * rng.normal(size=(n, m))
    x0 = np.linalg.eigvalsh(w0 @ w0.T)

    def noise(time, x):
        v = x[:, :, None] + x[:, None, :]
        return v + np.einsum("pi,ij->pij", 2 * x, np.eye(x.shape[1]))

    eq = DysonBrownianMotion(lambda time: np.full(n, float(m)), noise, 1.0, positive=True)
    result = integrate(eq, x0, [0.0, t], n_paths=paths, dt=1e-3, seed=7)
    assert result.mask.sum() == 0
    w = w0 + math.sqrt(t) * rng.normal(size=(paths, n, m))
    direct = np.linalg.eigvalsh(w @ np.swapaxes(w, 1, 2))
    for k in (0, n - 1):  # smallest (near the wall) and largest eigenvalue
        assert stats.ks_2samp(result[-1].data[:, k], direct[:, k]).pvalue > 0.01 / 2


def test_plain_euler_breaks_paths_and_they_are_masked():
    n = 6
    eq = DysonBrownianMotion(np.zeros(n), np.ones((n, n)) + np.eye(n), temperature=1.0)
    result = integrate(eq, np.linspace(-1, 1, n), [0.0, 0.5], n_paths=300, dt=1e-3, solver="euler")
    broken = result.mask[-1, :, 0]
    assert broken.sum() > 30  # crossings at this step size are common
    mean = np.ma.mean(result[-1], axis=0)
    assert np.all(np.isfinite(mean.data)) and not np.ma.is_masked(mean)


# --------------------------------------------------------------------------------------------
# against sdeint
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["itoEuler", "itoSRI2"])
def test_dbm_moments_match_sdeint(method):
    paths, t_end, steps, temperature = 300, 0.2, 20, 0.3
    x0 = np.array([-1.0, 0.2, 1.5])
    k = np.array([0.5, -0.3, 0.1])
    v = np.array([[2.0, 0.8, 0.5], [0.8, 1.5, 0.6], [0.5, 0.6, 1.0]])
    eq = DysonBrownianMotion(k, v, temperature)
    ours = integrate(eq, x0, np.linspace(0, t_end, steps + 1), n_paths=paths, seed=11)[-1].data

    def f(x, t):
        gaps = x[:, None] - x[None, :]
        np.fill_diagonal(gaps, np.inf)
        return k + temperature * np.sum(v / gaps, axis=1)

    def g(x, t):
        return np.diag(np.sqrt(temperature * np.diag(v)))

    tspan = np.linspace(0, t_end, steps + 1)
    rng = np.random.default_rng(12)
    integrator = getattr(sdeint, method)
    theirs = np.array([integrator(f, g, x0, tspan, generator=rng)[-1] for _ in range(paths)])
    se_mean = np.sqrt(ours.var(0) / paths + theirs.var(0) / paths)
    assert np.all(np.abs(ours.mean(0) - theirs.mean(0)) < 4 * se_mean)

    def var_se(sample):
        c = sample - sample.mean(0)
        return np.sqrt((np.mean(c**4, 0) - np.var(sample, 0) ** 2) / paths)

    se_var = np.sqrt(var_se(ours) ** 2 + var_se(theirs) ** 2)
    assert np.all(np.abs(ours.var(0) - theirs.var(0)) < 4 * se_var)


# --------------------------------------------------------------------------------------------
# level-spacing SDE (4.8)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["fused", "general"])
def test_spacing_stationary_density_default_solver_passes_euler_fails(engine):
    eq = LevelSpacingSDE(-1.0, 0.5, 1.0, temperature=1.0)
    law = eq.stationary_distribution()
    assert law.mean() == pytest.approx(1.5)  # T (V_S + D_S) / (-K_S)
    run = {"n_paths": 1000, "dt": 1e-3, "seed": 3, "engine": engine}
    good = integrate(eq, 1.0, [0.0, 8.0], **run)[-1, :, 0]
    assert good.mask.sum() == 0
    assert stats.kstest(good.compressed(), law.cdf).pvalue > 0.01
    euler = integrate(eq, 1.0, [0.0, 8.0], solver="euler", **run)[-1, :, 0]
    survivors = euler.compressed()
    fails = survivors.size < 500 or stats.kstest(survivors, law.cdf).pvalue < 0.01
    assert fails


def test_stationary_density_derivation_matches_gamma():
    derived = symbolic.spacing_stationary_density()
    assert derived.flux == 0
    kappa, v, d = (derived.symbols[name] for name in ("kappa", "v", "d"))
    f = sp.lambdify((symbolic.S, kappa, v, d, symbolic.T), derived.density, "numpy")
    eq = LevelSpacingSDE(-0.7, 0.4, 0.9, temperature=1.3)
    grid = np.linspace(0.01, 8, 50)
    np.testing.assert_allclose(
        f(grid, 0.7, 0.4, 0.9, 1.3), eq.stationary_distribution().pdf(grid), rtol=1e-12
    )


def test_deterministic_part_converges_or_diverges():
    k_s, v_s, temperature = -1.0, 0.5, 1.0
    eq = LevelSpacingSDE(k_s, v_s, 0.0, temperature)
    s_star = eq.fixed_point()
    assert s_star == pytest.approx(0.5)
    for s0 in (0.05, 3.0):
        path = integrate(eq, s0, [0.0, 30.0], dt=1e-2, solver="implicit")[-1, 0, 0]
        assert path == pytest.approx(s_star, rel=1e-6)
    # (4.10): the drift is <= 0 exactly when T/S <= -K_S/V_S
    for s in np.geomspace(0.05, 5, 21):
        assert eq.converges(s) == (temperature / s <= -k_s / v_s)
    grow = LevelSpacingSDE(0.5, 0.5, 0.0, temperature)
    assert grow.fixed_point() == np.inf
    end = integrate(grow, 1.0, [0.0, 20.0], dt=1e-2)[-1, 0, 0]
    assert end > 1.0 + 0.5 * 20  # diverges at least linearly
    with pytest.raises(ValueError, match="k_s"):
        grow.stationary_distribution()


# --------------------------------------------------------------------------------------------
# Langevin SGD (2.29), (2.30): the linear scaling rule
# --------------------------------------------------------------------------------------------


def test_langevin_linear_scaling_rule():
    a, var, paths = 1.0, 1.0, 4000

    def stationary_variance(lr, batch):
        w = langevin_sgd_discrete(
            np.zeros(1),
            lambda w: a * w,
            var,
            lr,
            batch,
            n_steps=int(8 / lr),
            n_paths=paths,
            seed=int(lr * 1e4) + batch,
        )
        return w[-1, :, 0].var(), lr / batch

    for lr, batch in ((0.01, 1), (0.04, 4), (0.16, 16)):
        got, temperature = stationary_variance(lr, batch)
        exact = temperature * var / (a * (2 - lr * a))  # AR(1) of (2.29)
        assert abs(got - exact) < 4 * exact * math.sqrt(2 / paths)
        assert temperature == pytest.approx(0.01)
    hot, _ = stationary_variance(0.04, 1)  # 4x the temperature: 4x the variance
    assert abs(hot / 0.04 - 1 / 1.98) < 4 * math.sqrt(2 / paths) / 1.98
    eq = LangevinSGD(lambda t, w: a * w, np.array([var]), temperature=0.01)
    cont = integrate(eq, 0.0, [0.0, 8.0], n_paths=paths, dt=1e-2, solver="euler")[-1, :, 0]
    assert abs(cont.var() - 0.005) < 4 * 0.005 * math.sqrt(2 / paths)


# --------------------------------------------------------------------------------------------
# kernels, interpolation, per-path coefficients, bad input
# --------------------------------------------------------------------------------------------


@settings(max_examples=30)
@given(n=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_kernels_against_numpy(n, seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.normal(size=(5, n)), axis=1)
    a = rng.uniform(0.1, 1, size=(5, n, n))
    v = a + np.swapaxes(a, 1, 2)
    gaps = x[:, :, None] - x[:, None, :]
    np.einsum("pii->pi", gaps)[...] = np.inf
    np.testing.assert_allclose(_sde_kernels.coulomb_sum(x, v), np.sum(v / gaps, -1), rtol=1e-12)
    c = x + rng.normal(scale=0.3, size=x.shape)  # crossings in c are allowed
    gaps = x[:, :, None] - x[:, None, :]
    np.einsum("pii->pi", gaps)[...] = np.inf
    xn = c + 0.01 * np.sum(v / gaps, -1)  # the explicit proposal: the start of Newton
    z, ok = _sde_kernels.implicit_window(x, xn, c, v, 0.01, 0.0, 1e-10, 100)
    assert ok.all() and np.all(np.diff(z, axis=1) > 0)
    zg = z[:, :, None] - z[:, None, :]
    np.einsum("pii->pi", zg)[...] = np.inf
    residual = z - c - 0.01 * np.sum(v / zg, -1)
    assert np.max(np.abs(residual)) < 1e-8


def test_implicit_window_solves_only_the_flagged_levels():
    """DriftImplicit's window: the levels of the pairs that failed the criterion are solved
    for, the others stay at the explicit proposal xn (all levels if the start is not ordered)."""
    n, paths, a_dt = 12, 200, 0.01
    rng = np.random.default_rng(2)
    x = np.sort(rng.normal(size=(paths, n)), axis=1)
    a = rng.uniform(0.1, 1, size=(paths, n, n))
    v = a + np.swapaxes(a, 1, 2)
    c = x + rng.normal(scale=0.05, size=x.shape)
    gaps = x[:, :, None] - x[:, None, :]
    np.einsum("pii->pi", gaps)[...] = np.inf
    xn = c + a_dt * np.sum(v / gaps, -1)
    zw, ok = _sde_kernels.implicit_window(x, xn, c, v, a_dt, 0.5, 1e-10, 100)
    assert ok.all() and np.all(np.diff(zw, axis=1) > 0)
    g, gn = np.diff(x, axis=1), np.diff(xn, axis=1)
    flagged = (gn < 0.5 * g) | (a_dt * np.diagonal(v, 1, 1, 2) > 0.5 * g * g)
    zp = zw[:, :, None] - zw[:, None, :]
    np.einsum("pii->pi", zp)[...] = np.inf
    residual = np.abs(zw - c - a_dt * np.sum(v / zp, -1))
    windowed = 0
    for p in range(paths):
        pairs = np.flatnonzero(flagged[p])
        window = np.zeros(n, dtype=bool)
        window[pairs.min() : pairs.max() + 2] = True
        if np.array_equal(zw[p, ~window], xn[p, ~window]):
            windowed += not window.all()
            assert np.max(residual[p, window]) < 1e-8
        else:  # fell back to solving for all levels
            assert np.max(residual[p]) < 1e-8
    assert windowed > paths // 4


def test_piecewise_linear_and_per_path_drift():
    f = piecewise_linear([0.0, 1.0, 3.0], np.array([[0.0, 2.0], [1.0, 2.0], [3.0, 0.0]]))
    np.testing.assert_allclose(f(0.5), [0.5, 2.0])
    np.testing.assert_allclose(f(2.0), [2.0, 1.0])
    np.testing.assert_allclose(f(9.0), [3.0, 0.0])
    k = np.array([[1.0, 1.0], [-1.0, -1.0]])  # one drift per path
    eq = DysonBrownianMotion(k, np.full((2, 2), 1e-12), temperature=1e-6)
    out = integrate(eq, [0.0, 10.0], [0.0, 2.0], n_paths=2, dt=0.1)[-1].data
    np.testing.assert_allclose(out, [[2.0, 12.0], [-2.0, 8.0]], atol=1e-3)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: DysonBrownianMotion(np.zeros(2), np.eye(2), temperature=-1.0), "temperature"),
        (lambda: DysonBrownianMotion(np.zeros(2), [[1.0, 0.5], [0.2, 1.0]], 1.0), "symmetric"),
        (lambda: DysonBrownianMotion(np.zeros(2), [[1.0, -0.5], [-0.5, 1.0]], 1.0), ">= 0"),
        (lambda: DysonBrownianMotion(np.zeros(3), np.eye(2), 1.0), "drift"),
        (lambda: LevelSpacingSDE(-1.0, -0.5, 1.0, 1.0), "v_s"),
        (lambda: LevelSpacingSDE(-1.0, 0.5, 1.0, 0.0), "temperature"),
        (
            lambda: integrate(LevelSpacingSDE(-1, 1, 1, 1), 1.0, [0.0, 1.0, 0.5]),
            "times",
        ),
        (lambda: integrate(LevelSpacingSDE(-1, 1, 1, 1), -1.0, [0.0, 1.0]), "y0"),
        (
            lambda: integrate(DysonBrownianMotion(np.zeros(2), np.eye(2), 1.0), [1.0, 0.0], [0, 1]),
            "y0",
        ),
        (lambda: integrate(LevelSpacingSDE(-1, 1, 1, 1), 1.0, [0, 1], solver="rk45"), "solver"),
        (lambda: integrate(LevelSpacingSDE(-1, 1, 1, 1), 1.0, [0, 1], engine="gpu"), "engine"),
        (  # a callable of t cannot be fused
            lambda: integrate(LevelSpacingSDE(abs, 1, 1, 1), 1.0, [0, 1], engine="fused"),
            "engine",
        ),
        (  # V must be a variance at every knot, not only at t = 0
            lambda: integrate(
                DysonBrownianMotion(
                    np.zeros(2),
                    piecewise_linear([0.0, 1.0], [np.eye(2), [[1.0, -0.1], [-0.1, 1.0]]]),
                    1.0,
                ),
                [0.0, 1.0],
                [0.0, 1.0],
            ),
            "noise",
        ),
    ],
)
def test_bad_input_names_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# --------------------------------------------------------------------------------------------
# the fused engine: counter-based normals, agreement with the general engine, determinism
# --------------------------------------------------------------------------------------------


def test_philox_known_answers():
    """Philox4x32-10 against the known-answer vectors of Random123 (kat_vectors)."""
    cases = [
        ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        (
            [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
            [0xA4093822, 0x299F31D0],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
        ),
    ]
    for counter, key, expected in cases:
        got = _sde_philox.philox4x32(
            np.array([counter], dtype=np.uint64), np.array(key, dtype=np.uint64)
        )
        assert got[0].tolist() == expected


def test_counter_normals_are_independent_standard_normals():
    keys = _sde_philox.keys_from_seed(2024)
    z = _sde_philox.standard_normals(keys, 400, 125, 16, 0, *_sde_philox.ZIGGURAT)
    x = z.ravel()  # 800,000 draws
    m = x.size
    assert abs(x.mean()) < 4 / math.sqrt(m)
    assert abs(x.var() - 1) < 4 * math.sqrt(2 / m)
    assert stats.kstest(x, "norm").pvalue > 0.01
    # the ziggurat's slow paths: wedges and the tail beyond r = 3.654 (Marsaglia's method)
    for cut in (1.0, 3.0, _sde_philox._ZIG_R, 4.5):
        expected = 2 * stats.norm.sf(cut)
        assert abs(np.mean(np.abs(x) > cut) - expected) < 4 * math.sqrt(expected / m) + 1 / m
    # no correlation between components, steps, paths (and a different node is another stream)
    for a, b in ((z[:, :, 0], z[:, :, 1]), (z[:, :-1], z[:, 1:]), (z[:-1], z[1:])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 4 / math.sqrt(a.size)
    other = _sde_philox.standard_normals(keys, 400, 125, 16, 1, *_sde_philox.ZIGGURAT)
    assert abs(np.corrcoef(x, other.ravel())[0, 1]) < 4 / math.sqrt(m)


def _dbm3():
    k = np.array([0.5, -0.3, 0.1])
    v = np.array([[2.0, 0.8, 0.5], [0.8, 1.5, 0.6], [0.5, 0.6, 1.0]])
    return DysonBrownianMotion(k, v, 0.3), np.array([-1.0, 0.2, 1.5])


@pytest.mark.parametrize("solver", [None, "euler", "implicit"])
def test_fused_and_general_engines_agree_in_distribution(solver):
    eq, x0 = _dbm3()
    paths = 4000
    run = {"n_paths": paths, "solver": solver, "dt": 0.01}
    a = integrate(eq, x0, [0.0, 0.2], seed=5, engine="fused", **run)[-1].data
    b = integrate(eq, x0, [0.0, 0.2], seed=6, engine="general", **run)[-1].data
    se = np.sqrt((a.var(0) + b.var(0)) / paths)
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < 4 * se)
    assert np.all(np.abs(a.var(0) / b.var(0) - 1) < 4 * math.sqrt(4 / paths))


def test_fused_is_deterministic_across_threads_blocks_and_path_counts():
    import numba

    eq, x0 = _dbm3()
    run = {"solver": None, "dt": 0.01, "seed": 9}
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = integrate(eq, x0, [0.0, 0.1, 0.3], n_paths=64, **run)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = integrate(eq, x0, [0.0, 0.1, 0.3], n_paths=64, **run)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one.data, two.data)
    np.testing.assert_array_equal(one.mask, two.mask)
    few = integrate(eq, x0, [0.0, 0.1, 0.3], n_paths=5, **run)  # path p is path p of any run
    np.testing.assert_array_equal(few.data, one.data[:, :5])
    # blocks of 7 steps instead of one call for all 30
    plan = {"n_paths": 64, "solver": None, "seed": 9}
    y = np.broadcast_to(x0, (64, 3)).copy()
    steps = np.array([10, 20])
    fused = fused_plan(eq, Adaptive(), 64, 3, 30)
    keys = _sde_philox.keys_from_seed(plan["seed"])
    times = np.array([0.0, 0.1, 0.3])
    small, _, _ = integrate_fused(y, times, steps, keys, fused, block=7)
    np.testing.assert_array_equal(small, one.data)


def test_fused_time_dependent_coefficients_match_general_engine():
    """Coulomb-only dynamics (V_ii = 0: no noise) with K(t), V(t) linear between knots.

    Both engines then compute the same deterministic Euler steps (coefficients at the step's
    start), shared by all paths (interpolated per block) or one per path (in the kernel).
    """
    knots = np.array([0.0, 0.3, 1.0])
    k = np.array([[0.0, 0.5, 1.0], [1.0, 0.0, -1.0], [0.3, 0.3, 0.3]])
    off = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 2.0], [0.5, 2.0, 0.0]])
    v = np.stack([off, 2 * off, 0.5 * off])
    x0 = np.array([-1.0, 0.0, 0.8])
    per_path_k = np.stack([k, 2 * k], axis=1)  # (knots, 2 paths, N)
    cases = [
        (piecewise_linear(knots, k), piecewise_linear(knots, v)),
        (piecewise_linear(knots, per_path_k), piecewise_linear(knots, v)),
        (per_path_k[0], piecewise_linear(knots[:2], v[:2])),
    ]
    for drift, noise in cases:
        eq = DysonBrownianMotion(drift, noise, temperature=0.1)
        for solver in ("euler", None):
            run = {"n_paths": 2, "dt": 0.01, "solver": solver}
            a = integrate(eq, x0, [0.0, 0.5, 1.2], engine="fused", **run)
            b = integrate(eq, x0, [0.0, 0.5, 1.2], engine="general", **run)
            np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-9)
            assert not np.allclose(a.data[-1], a.data[0])


def test_fused_adaptive_refinement_resolves_crossings():
    """Adaptive(EulerMaruyama(), safety) refines in the kernel along the Brownian bridge.

    beta = 2 (V_ii = V_ij = 1, T = 1): the spectrum of H0 + Hermitian Brownian motion. (For
    beta = 1 an explicit base fails on a third of these paths at any depth, in both engines:
    the gaps come too close, which is why the default is drift-implicit.)
    """
    n, paths, t = 4, 1000, 0.25
    x0 = np.linspace(-0.5, 0.5, n)
    eq = DysonBrownianMotion(np.zeros(n), np.ones((n, n)), temperature=1.0)
    solver = Adaptive(EulerMaruyama(), safety=0.5)
    result = integrate(eq, x0, [0.0, t], n_paths=paths, dt=1e-2, seed=4, solver=solver)
    assert result.mask[-1, :, 0].sum() <= paths // 100
    rng = np.random.default_rng(8)
    a = rng.normal(scale=math.sqrt(t), size=(paths, n, n, 2)) @ np.array([1.0, 1.0j])
    direct = np.linalg.eigvalsh(np.diag(x0) + (a + np.conj(np.swapaxes(a, 1, 2))) / 2)
    for k in range(n):
        assert stats.ks_2samp(result[-1, :, k].compressed(), direct[:, k]).pvalue > 0.01 / n
    shallow = Adaptive(EulerMaruyama(), safety=0.5, max_depth=1)  # not deep enough: flagged
    flagged = integrate(eq, x0, [0.0, t], n_paths=paths, dt=1e-2, seed=4, solver=shallow)
    assert 0 < flagged.mask[-1, :, 0].sum() < paths
    assert np.all(np.isfinite(np.ma.mean(flagged[-1], axis=0)))


# --------------------------------------------------------------------------------------------
# which engine runs: what the solver and the equation declare
# --------------------------------------------------------------------------------------------


def test_solvers_declare_their_fused_schemes():
    assert EulerMaruyama().fused_scheme() == FusedScheme(False, 0.0, False, 0.0, 0)
    assert DriftImplicit(0.25).fused_scheme() == FusedScheme(True, 0.25, False, 0.0, 0)
    assert Adaptive().fused_scheme() == FusedScheme(True, 0.5, False, 0.0, 24)
    adaptive = Adaptive(EulerMaruyama(), safety=0.5, max_depth=3).fused_scheme()
    assert adaptive == FusedScheme(False, 0.0, True, 0.5, 3)
    eq, x0 = _dbm3()
    choice = choose_engine(eq, x0, [0.0, 0.1])
    assert choice.engine == "fused" and "max_depth=24" in choice.reason
    assert choose_engine(eq, x0, [0.0, 0.1], engine="general").engine == "general"


class _ShiftedEuler(EulerMaruyama):
    """Changes the step: must not run Euler-Maruyama's fused kernel."""

    def step(self, equation, t, y, dt, dw, path, rows):
        y_new, ok = super().step(equation, t, y, dt, dw, path, rows)
        return y_new + dt, ok


class _RenamedEuler(EulerMaruyama):
    """Keeps the step: runs the same fused kernel."""


class _LouderDyson(DysonBrownianMotion):
    def diffusion(self, t, x, rows=None):
        return 2.0 * super().diffusion(t, x, rows)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda k, v: (DysonBrownianMotion(k, v, 0.3), "platen"), "Platen"),
        (lambda k, v: (DysonBrownianMotion(k, v, 0.3), _ShiftedEuler()), "redefines step"),
        (
            lambda k, v: (DysonBrownianMotion(k, v, 0.3), Adaptive(_ShiftedEuler(), safety=0.5)),
            "redefines step",
        ),
        (
            lambda k, v: (DysonBrownianMotion(k, v, 0.3), Adaptive(Adaptive())),
            "refines its steps itself",
        ),
        (lambda k, v: (DysonBrownianMotion(k, v, 0.3), Adaptive(max_depth=31)), "max_depth"),
        (lambda k, v: (_LouderDyson(k, v, 0.3), None), "diffusion"),
        (lambda k, v: (DysonBrownianMotion(lambda t: k, v, 0.3), None), "callable"),
    ],
)
def test_unfusable_problems_say_why(make, reason):
    """engine="auto" runs them on the general engine and says why; engine="fused" raises."""
    k = np.array([0.5, -0.3, 0.1])
    v = np.array([[2.0, 0.8, 0.5], [0.8, 1.5, 0.6], [0.5, 0.6, 1.0]])
    x0 = np.array([-1.0, 0.2, 1.5])
    equation, solver = make(k, v)
    choice = choose_engine(equation, x0, [0.0, 0.1], n_paths=3, solver=solver, dt=0.05)
    assert choice.engine == "general" and reason in choice.reason
    with pytest.raises(InputError, match=reason):
        integrate(equation, x0, [0.0, 0.1], n_paths=3, solver=solver, dt=0.05, engine="fused")
    auto = integrate(equation, x0, [0.0, 0.1], n_paths=3, solver=solver, dt=0.05, seed=2)
    general = integrate(
        equation, x0, [0.0, 0.1], n_paths=3, solver=solver, dt=0.05, seed=2, engine="general"
    )
    np.testing.assert_array_equal(auto.data, general.data)
    langevin = LangevinSGD(np.zeros(3), np.ones(3), 0.1)
    assert "coefficients_on_knots" in choose_engine(langevin, x0, [0.0, 0.1]).reason


def test_subclass_keeping_the_step_runs_the_same_kernel():
    eq, x0 = _dbm3()
    run = {"n_paths": 4, "dt": 0.01, "seed": 3}
    renamed = integrate(eq, x0, [0.0, 0.1], solver=_RenamedEuler(), engine="fused", **run)
    euler = integrate(eq, x0, [0.0, 0.1], solver="euler", engine="fused", **run)
    np.testing.assert_array_equal(renamed.data, euler.data)


# --------------------------------------------------------------------------------------------
# the lane kernel (L paths per vector) against the per-path kernel, and the pair Newton solve
# --------------------------------------------------------------------------------------------


def _both_kernels(eq, x0, n_paths, steps, dt, solver, seed):
    """Run the same plan through lanes.lane_block and step.fused_block (same normals)."""
    from dysonsgd.sde._fused.lanes import lane_block
    from dysonsgd.sde._fused.philox import ZIGGURAT
    from dysonsgd.sde._fused.step import fused_block

    n = x0.size
    plan = fused_plan(eq, solver, n_paths, n, steps)
    _, kk, tv, dd, form = plan.coefficients
    keys = _sde_philox.keys_from_seed(seed)
    h = np.full(steps, dt)
    rec = np.full(steps, -1, dtype=np.int64)
    rec[steps // 2 - 1], rec[-1] = 1, 2
    ci = np.zeros(steps, dtype=np.int64)
    cw = np.zeros(steps)
    results = []
    for kernel in (lane_block, fused_block):
        x = np.broadcast_to(x0, (n_paths, n)).copy()
        dead = np.full(n_paths, -1, dtype=np.int64)
        out = np.zeros((3, n_paths, n))
        kernel(0, n_paths, x, dead, out, rec, 0, h, ci, cw, kk, tv, np.sqrt(dd), dd, keys,
               *ZIGGURAT, plan.scheme, form)
        results.append((out[1:], dead))
    return results


@pytest.mark.parametrize("n", [3, 16])
def test_lane_kernel_takes_the_per_path_kernels_steps(n):
    """Same normals, same scheme: the two kernels differ only by the rounding of the Coulomb
    sum (A_ij * (1 / d) against A_ij / d, ~1 ulp a term), so every path agrees to ~1e-13 over
    60 steps; a step decided differently (explicit against implicit, a criterion within
    rounding of its threshold) has probability ~1e-13 per step, so none is expected. 37 paths:
    a partial block of lanes; the spacing and T of sde_throughput.py (where about 9% of the
    path-steps at N = 16 take the implicit step)."""
    k = np.linspace(-0.5, 0.5, n)
    v = np.ones((n, n)) + np.eye(n)
    eq = DysonBrownianMotion(k, v, 0.01)
    x0 = np.arange(n) / 15.0  # the spacing of sde_throughput.py's problem
    (a, dead_a), (b, dead_b) = _both_kernels(eq, x0, 37, 60, 1e-3, Adaptive(), seed=3)
    np.testing.assert_array_equal(dead_a, dead_b)
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    # plain Euler breaks paths: the same paths at the same steps, the same frozen states
    (a, dead_a), (b, dead_b) = _both_kernels(eq, x0, 37, 60, 1e-3, EulerMaruyama(), seed=4)
    assert (dead_a >= 0).any()
    np.testing.assert_array_equal(dead_a, dead_b)
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_pair_newton_solves_the_implicit_pair_step():
    """newton_pair against newton_ws (the general window solve) on random close pairs: both
    converge to the unique minimiser of the convex energy, so they agree to the solve's
    rounding (~1e-15 relative; margin 1e-12), and the gradient vanishes there."""
    rng = np.random.default_rng(12)
    n, a = 6, 1e-3
    tol, max_iter = 1e-12, 100
    ws = np.empty((2 * n + 4, n))
    for _ in range(200):
        x = np.sort(rng.uniform(0, 1, n))
        lo = int(rng.integers(0, n - 1))
        x[lo + 1] = x[lo] + rng.uniform(1e-4, 1e-2)
        x = np.sort(x)
        v = rng.uniform(0.5, 2.0, (n, n))
        v = v + v.T
        c = x + rng.normal(scale=1e-3, size=n)
        z1 = x.copy()
        z2 = x.copy()
        assert _sde_kernels.newton_ws(z1, c, v, a, tol, max_iter, ws, lo, lo + 1)
        assert _sde_kernels.newton_pair(z2, c, v, a, tol, max_iter, lo)
        np.testing.assert_allclose(z2, z1, rtol=1e-12, atol=0)
        grad = z2 - c - a * np.sum(np.where(np.eye(n, dtype=bool), 0.0, v / np.where(
            np.eye(n, dtype=bool), 1.0, z2[:, None] - z2[None, :])), axis=1)
        assert np.all(np.abs(grad[lo:lo + 2]) <= 1e-10 * (np.abs(z2) + np.abs(c)).max())


def test_lane_reciprocal_is_within_two_ulps_of_the_quotient():
    """lanes._reciprocal (vrcp14pd and two Newton steps with AVX-512, else a division) against
    1/d over 25 decades and both signs: the second Newton step leaves a relative error below
    2**-53 plus its own rounding, i.e. at most 2 ulps from the rounded quotient."""
    import numba

    from dysonsgd.sde._fused import lanes
    from dysonsgd.train._numba.simd import vload, vsplat, vstore

    @numba.njit
    def reciprocals(d):
        out = np.empty_like(d)
        one = vsplat(d, 1.0)
        for s in range(0, d.size, lanes.LANES):
            vstore(out, s, lanes._reciprocal(vload(d, s), one))
        return out

    rng = np.random.default_rng(2)
    d = rng.choice([-1.0, 1.0], 80_000) * 10.0 ** rng.uniform(-12, 13, 80_000)
    got = reciprocals(d)
    ulps = np.abs(got - 1.0 / d) / np.spacing(np.abs(1.0 / d))
    assert ulps.max() <= 2
