"""The fused kernel of the complete eigenvalue SDE (dysonsgd/sde/_fused/complete.py).

Oracles: the general engine on the same equation (two-sample tests, independent seeds); the
Wishart (Bru) process, whose trace is a scaled noncentral chi-square (scipy.stats.ncx2, an
implementation independent of this package); the exact one-step law of the Euler step,
N(drift dt, T C dt), with the drift and C assembled in the test from
measure.moments.coefficients_at; the closed-form mean of the trace for per-path, time-varying
moments. Tolerances are stated significance levels (Bonferroni over the statistics of a test).
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np
import pytest
from scipy import stats

from dysonsgd.measure.moments import SingularMoments, coefficients_at, coulomb_force
from dysonsgd.measure.moments import singular_moments as measured_moments
from dysonsgd.sde import Adaptive, choose_engine, integrate
from dysonsgd.sde._fused.philox import keys_from_seed
from dysonsgd.sde.complete import EigenvalueSDE

#: family-wise significance level of every test below
ALPHA = 1e-3


def _bonferroni(count: int) -> float:
    """|z| bound of ``count`` two-sided z-tests at family-wise level ALPHA."""
    return float(stats.norm.isf(ALPHA / (2 * count)))


def _wishart(n, m, x0, sigma2=1.0) -> SingularMoments:
    """i.i.d. gradient entries of variance sigma2 (theory.ito_special.wishart_moments)."""
    return SingularMoments(np.sqrt(x0), np.zeros((n, n)), np.zeros(n), np.full(n, m * sigma2),
                           sigma2 * np.eye(n), np.full((n, n), sigma2), sigma2 * np.eye(n))


def _toy(levels=(0.1, 0.7, 0.8, 1.2), seed=11, m=7, d=40) -> SingularMoments:
    """Measured moments at two knots of W with singular values ``levels`` (W grows by 10% from
    one knot to the next) and random gradients with a mean: correlated noise, every term of
    the complete equation nonzero. The default levels put x_1 = 0.01 near the wall and a
    close pair (0.49, 0.64)."""
    rng = np.random.default_rng(seed)
    n = len(levels)
    u, v = stats.ortho_group.rvs(n, random_state=rng), stats.ortho_group.rvs(m, random_state=rng)
    w = u @ np.diag(levels) @ v[:n]
    grads = 0.5 * rng.normal(size=(2, d, n, m)) + 0.3 * rng.normal(size=(2, 1, n, m))
    return measured_moments(np.stack([w, 1.1 * w]), grads)


def _end(x) -> np.ndarray:
    """The intact paths at the last time, (P', N)."""
    keep = ~np.ma.getmaskarray(x)[-1, :, 0]
    return np.asarray(x[-1])[keep]


def test_auto_picks_the_fused_engine_and_a_redefined_step_does_not():
    moments = _toy()
    x0 = moments.singular_values[0] ** 2
    eq = EigenvalueSDE(moments, 0.25, learning_rate=1.0, times=[0.0, 1.0])
    for solver in (None, "euler", "implicit"):
        assert choose_engine(eq, x0, [0.0, 0.1], solver=solver).engine == "fused"
    assert choose_engine(eq, x0, [0.0, 0.1], solver="platen").engine == "general"

    class Shifted(EigenvalueSDE):
        def _regular(self, t, x, rows=None):
            return super()._regular(t, x, rows) + 1.0

    choice = choose_engine(Shifted(moments, 0.25, times=[0.0, 1.0]), x0, [0.0, 0.1])
    assert choice.engine == "general" and "_regular" in choice.reason


def test_one_step_increment_has_the_complete_drift_and_covariance():
    """One default step from x0 at a time between two knots (every field interpolated, lr > 0).

    At this state and dt the step is explicit (no gap can shrink by half: its noise is < 1/20
    of the smallest gap), so dx ~ N(drift dt, T C dt) exactly, with the drift
    K + T q + lr (m - g_ii^2) + sum_j (T V + lr P)_ij/(x_i - x_j) and C = 4 s s^T (L L^T) of the
    moments and factor L interpolated at t, assembled here from coefficients_at. Mean:
    sum z^2 ~ chi^2_4, not rejected at ALPHA; its power: leaving out the Ito term or the
    finite-lr terms shifts the mean by a noncentrality > 40 (computed first). Covariance: 10
    entries as z-scores of the sample products, Bonferroni at ALPHA.
    """
    moments = _toy(levels=(0.5, 1.0, 1.5, 2.0))
    temperature, lr, paths, dt, t0, w = 0.25, 1.0, 40_000, 2e-3, 0.3, 0.3
    eq = EigenvalueSDE(moments, temperature, learning_rate=lr, times=[0.0, 1.0])
    at = moments.map(lambda a: (1 - w) * a[0] + w * a[1])
    x0 = moments.singular_values[0] ** 2
    c = coefficients_at(at, x0)
    g_ii = np.diag(at.mean)
    weights = temperature * c.noise + lr * c.finite_lr
    regular = c.k + temperature * c.ito + lr * (c.mean_square - g_ii**2)
    drift = regular + coulomb_force(x0, weights)
    factor = np.linalg.cholesky(moments.diagonal_covariance)
    chol = (1 - w) * factor[0] + w * factor[1]
    s = np.sqrt(x0)
    cov = temperature * 4 * np.outer(s, s) * (chol @ chol.T) * dt
    # the step stays explicit: each gap (and x_1) is > 20 sds of its change plus its drift, and
    # no pair is stiff (dt W_{i,i+1} < gap^2 / 2)
    gap, move = np.diff(x0), np.diff(drift) * dt
    gap_sd = np.sqrt(np.diag(cov)[1:] + np.diag(cov)[:-1] - 2 * np.diag(cov, 1))
    assert np.all(gap - np.abs(move) > 20 * gap_sd) and x0[0] > 20 * np.sqrt(cov[0, 0])
    assert np.all(dt * np.diag(weights, 1) < gap**2 / 2)
    x = integrate(eq, x0, [t0, t0 + dt], n_paths=paths, seed=5)
    dx = np.asarray(x[-1]) - x0
    se = np.sqrt(np.diag(cov) / paths)
    for without in (temperature * c.ito, lr * (c.mean_square - g_ii**2)):
        assert (((without * dt) / se) ** 2).sum() > 40
    z = (dx.mean(0) - drift * dt) / se
    assert stats.chi2.sf((z**2).sum(), 4) > ALPHA
    centred = dx - dx.mean(0)
    prod = centred[:, :, None] * centred[:, None, :]
    z_cov = (prod.mean(0) - cov) / (prod.std(0, ddof=1) / np.sqrt(paths))
    assert np.abs(z_cov[np.triu_indices(4)]).max() < _bonferroni(10)


def _engines_agree(paths: int) -> None:
    moments = _toy()
    x0 = moments.singular_values[0] ** 2
    mid = moments.map(lambda a: np.stack([a[0], 0.5 * (a[0] + a[1]), a[1]]))
    times = np.array([0.0, 0.25, 0.5])
    eq = EigenvalueSDE(mid, 0.25, learning_rate=1.0, times=times)
    dt = 1e-2
    fused = integrate(eq, x0, times, n_paths=paths, dt=dt, seed=1)
    general = integrate(eq, x0, times, n_paths=paths, dt=dt, seed=2, engine="general")
    a, b = _end(fused), _end(general)
    assert a.shape[0] == b.shape[0] == paths
    z_mean = (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0) / paths + b.var(0) / paths)

    def var_se(y):
        centred = y - y.mean(0)
        return np.sqrt(((centred**4).mean(0) - y.var(0) ** 2) / y.shape[0])

    z_var = (a.var(0) - b.var(0)) / np.hypot(var_se(a), var_se(b))
    assert np.abs(np.concatenate([z_mean, z_var])).max() < _bonferroni(8)
    euler = integrate(eq, x0, times, n_paths=paths, dt=dt, seed=1, solver="euler")
    assert np.ma.getmaskarray(euler)[-1, :, 0].mean() > 0.05


def test_fused_and_general_engines_agree_in_distribution():
    """Same equation (time-varying moments, lr > 0, x_1 = 0.01 near the wall, a close pair),
    same default scheme, independent seeds: every level's mean and variance at t = 0.5, as
    two-sample z-scores (variance: standard error from the sample fourth moment), 8 statistics
    Bonferroni at ALPHA, 3000 paths each. The regime needs the safety: plain Euler breaks
    > 5% of the paths in it (about 15%), the default none."""
    _engines_agree(3000)


@pytest.mark.slow
def test_fused_and_general_engines_agree_in_distribution_large():
    """As above with 40000 paths per engine (standard errors 3.7x smaller)."""
    _engines_agree(40_000)


@pytest.mark.parametrize(("m", "x0"), [(5, (1e-4, 0.3, 0.6)), (3, (1e-4,))])
def test_wishart_trace_is_the_noncentral_chi_square_near_the_wall(m, x0):
    """Bru's process from x_1 = 1e-4 (wall dimension M - N + 1 = 3): tr X(t) = |W0 + B(t)|^2
    ~ t chi'^2_{NM}(tr X0 / t) (T sigma^2 = 1). Kolmogorov-Smirnov against scipy's ncx2 at
    ALPHA for the 4000 paths (the Euler bias of the law is O(dt) = 1e-3, far below the KS
    resolution ~0.03); every path stays ordered with x_1 > 0 at every output time and none
    breaks. N = 3 runs the vector kernel, N = 1 (a squared Bessel process) the per-path one."""
    x0 = np.array(x0)
    n, t1, paths = x0.size, 0.5, 4000
    eq = EigenvalueSDE(_wishart(n, m, x0), 1.0)
    x = integrate(eq, x0, np.linspace(0.0, t1, 11), n_paths=paths, dt=1e-3, seed=7)
    assert not np.ma.getmaskarray(x).any()
    xs = np.asarray(x)
    assert np.all(xs[..., 0] > 0) and np.all(np.diff(xs, axis=-1) > 0)
    law = stats.ncx2(df=n * m, nc=x0.sum() / t1, scale=t1)
    assert stats.kstest(xs[-1].sum(-1), law.cdf).pvalue > ALPHA


def test_per_path_moments_give_each_group_its_own_statistics():
    """Two groups of paths, one model each: Wishart sigma^2 = 1 constant, and sigma^2 rising
    linearly from 1 to 3 over [0, 1]. E tr X(t) = tr X0 + T N M int_0^t sigma^2 (the Coulomb
    terms cancel in the trace), for each group at t = 0.5 and 1: 4 z-scores, Bonferroni at
    ALPHA; the groups differ by far more than that (their closed forms differ by > 20 standard
    errors at t = 1)."""
    n, m, per_group, temperature = 3, 5, 2000, 0.5
    x0 = np.array([0.5, 1.0, 2.0])
    low, high = _wishart(n, m, x0), _wishart(n, m, x0, 3.0)
    knots = [SingularMoments.join([low] * per_group + [low] * per_group),
             SingularMoments.join([low] * per_group + [high] * per_group)]
    eq = EigenvalueSDE(SingularMoments.join(knots), temperature, times=[0.0, 1.0])
    x = integrate(eq, x0, [0.0, 0.5, 1.0], n_paths=2 * per_group, dt=2e-3, seed=3)
    assert not np.ma.getmaskarray(x).any()
    trace = np.asarray(x).sum(-1)
    z = []
    for k, t in ((1, 0.5), (2, 1.0)):
        integral = {"low": t, "high": t + t * t}  # int_0^t (1 + 2 s) ds
        for g, name in enumerate(("low", "high")):
            y = trace[k, g * per_group : (g + 1) * per_group]
            expect = x0.sum() + temperature * n * m * integral[name]
            z.append((y.mean() - expect) / (y.std(ddof=1) / np.sqrt(per_group)))
    assert np.abs(z).max() < _bonferroni(4)
    gap = temperature * n * m * 1.0  # high - low at t = 1
    se = trace[2].reshape(2, per_group).std(1, ddof=1).max() / np.sqrt(per_group)
    assert gap / se > 20


def test_broken_paths_are_masked_and_as_frequent_as_in_the_general_engine():
    """Plain Euler breaks paths here; a broken path is masked from the first output after it
    broke, every unmasked state is valid, and the broken fraction equals the general engine's
    (two-proportion z-test at ALPHA, independent seeds)."""
    moments = _toy()
    x0 = moments.singular_values[0] ** 2
    eq = EigenvalueSDE(moments, 0.25, learning_rate=1.0, times=[0.0, 0.5])
    times, paths = np.linspace(0.0, 0.5, 6), 3000
    fused = integrate(eq, x0, times, n_paths=paths, dt=1e-2, seed=4, solver="euler")
    general = integrate(eq, x0, times, n_paths=paths, dt=1e-2, seed=6, solver="euler",
                        engine="general")
    mask = np.ma.getmaskarray(fused)[:, :, 0]
    assert np.all(mask[1:] >= mask[:-1])  # once masked, masked for good
    ok = ~mask
    xs = np.asarray(fused)
    assert np.all(xs[ok][:, 0] > 0) and np.all(np.diff(xs[ok], axis=-1) > 0)
    p1, p2 = mask[-1].mean(), np.ma.getmaskarray(general)[-1, :, 0].mean()
    pooled = 0.5 * (p1 + p2)
    assert 0.05 < p1 < 0.95
    assert abs(p1 - p2) / np.sqrt(2 * pooled * (1 - pooled) / paths) < _bonferroni(1)


def test_paths_do_not_depend_on_threads_lanes_or_calls():
    """A path is a function of (seed, its index, the step grid): bitwise the same with one
    thread or two, alone in its vector of lanes or in a full one, the grid split into one
    call or two; another seed gives other paths."""
    moments = _toy()
    x0 = moments.singular_values[0] ** 2
    eq = EigenvalueSDE(moments, 0.25, learning_rate=1.0, times=[0.0, 0.5])
    times = [0.0, 0.25, 0.5]
    kw = dict(dt=5e-3, seed=9)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = integrate(eq, x0, times, n_paths=64, **kw)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(np.ma.getdata(one), np.ma.getdata(integrate(
        eq, x0, times, n_paths=64, **kw)))
    np.testing.assert_array_equal(np.ma.getdata(one)[:, :3], np.ma.getdata(integrate(
        eq, x0, times, n_paths=3, **kw)))
    other = integrate(eq, x0, times, n_paths=64, **{**kw, "seed": 10})
    assert not np.array_equal(np.ma.getdata(one)[-1], np.ma.getdata(other)[-1])
    # the kernel's own entry, in blocks of 7 steps instead of all 100 at once
    knots = eq.coefficients_on_knots(64, 4)
    start = np.broadcast_to(x0, (64, 4)).copy()
    counts = np.array([50, 50])
    scheme = Adaptive().fused_scheme()
    blocks = [knots.integrate(start, np.array(times), counts, keys_from_seed(9), scheme,
                              block=block)[0] for block in (None, 7)]
    np.testing.assert_array_equal(blocks[0], np.ma.getdata(one))
    np.testing.assert_array_equal(blocks[1], np.ma.getdata(one))


def test_positive_false_and_shared_moments_run_fused():
    """Without the wall the domain is the ordered chamber only; with shared (time-constant)
    moments the kernel reads one model for every path."""
    moments = dataclasses.replace(_toy().map(lambda a: a[0]))
    x0 = moments.singular_values**2
    eq = EigenvalueSDE(moments, 0.25, positive=False)
    assert choose_engine(eq, x0, [0.0, 0.1], n_paths=8).engine == "fused"
    x = integrate(eq, x0, [0.0, 0.1], n_paths=8, dt=1e-2, seed=0)
    assert np.all(np.diff(np.asarray(x[-1]), axis=-1) > 0)
