"""The closed-loop forecast: one step of (2.29) against autograd moments, (2.30)'s interval, the
replay of one path, divergence, bad input.

Every statistical check is a z-test of an exactly Gaussian quantity: one step of the forecast
from a fixed W2 is W2' = W2 - lr mu - lr xi with xi exactly Gaussian, so over S independent
paths the sample mean of dW = W2' - W2 has standard error sqrt(C_ii / S) and the sample
covariance entry C_ij has variance (C_ii C_jj + C_ij^2) / (S - 1) (Wishart). The expected
moments come from torch autograd on the network written out here (not the package's
backprop), one sample at a time. Each family of z's is tested at the family-wise level
ALPHA = 1e-3 with Bonferroni over its entries; the seeds are fixed, so the test is deterministic.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from dysonsgd._checks import InputError
from dysonsgd.analysis import closed_loop as cl
from dysonsgd.analysis.closed_loop import (
    closed_loop,
    finite_population_factor,
    langevin_w2,
)
from dysonsgd.measure.spectrum import eigenvalues
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.draws import replica_draws
from dysonsgd.model.network import layer1_features, outputs
from dysonsgd.train import train_ensemble

ALPHA = 1e-3
#: n = 32 points, |B| = 4: f = 28/31, so a forgotten f moves every variance by 10.7%,
#: ~10.7 standard errors at S = 20000 (sqrt(S / 2) = 100 per unit relative error)
CONFIG = TeacherStudentConfig(widths=(3, 8, 4, 1), n_data=32, batch_size=4)
S = 20000


def _crit(k: int) -> float:
    """Two-sided Bonferroni critical |z| for k tests at family-wise level ALPHA."""
    return NormalDist().inv_cdf(1.0 - ALPHA / (2 * k))


def autograd_moments(x, w1, w2_teacher, w3, w2):
    """Mean and population covariance (1/n) of the per-sample gradients dl/dW2, flattened,
    l = 1/2 |W3 tanh(W2* tanh(W1 x)) - W3 tanh(W2 tanh(W1 x))|^2, by autograd per sample."""
    t = [torch.tensor(np.asarray(a, dtype=float)) for a in (x, w1, w2_teacher, w3)]
    xs, a1, a2, a3 = t
    w = torch.tensor(np.asarray(w2, dtype=float), requires_grad=True)
    grads = []
    for xa in xs:
        y = a3 @ torch.tanh(a2 @ torch.tanh(a1 @ xa))
        loss = 0.5 * ((a3 @ torch.tanh(w @ torch.tanh(a1 @ xa)) - y) ** 2).sum()
        (g,) = torch.autograd.grad(loss, w)
        grads.append(g.numpy().ravel())
    g = np.array(grads)
    return g.mean(axis=0), np.cov(g.T, bias=True)


def gaussian_z(dw, mean, cov):
    """z-scores of the sample mean (D,) and of the sample covariance (i <= j) of dw (S, D)
    against the exact moments of a Gaussian."""
    n = dw.shape[0]
    d = np.diag(cov)
    z_mean = (dw.mean(axis=0) - mean) / np.sqrt(d / n)
    se = np.sqrt((np.outer(d, d) + cov**2) / (n - 1))
    iu = np.triu_indices(len(d))
    z_cov = (np.cov(dw.T) - cov)[iu] / se[iu]
    return z_mean, z_cov


def assert_moments(dw, mean, cov):
    z_mean, z_cov = gaussian_z(dw, mean, cov)
    assert np.abs(z_mean).max() < _crit(z_mean.size), np.abs(z_mean).max()
    assert np.abs(z_cov).max() < _crit(z_cov.size), np.abs(z_cov).max()


def _model(seed: int = 3, sigma_w: float = 0.8):
    """A student of CONFIG from the seed design: its data, teacher and a W2 (float64)."""
    d = replica_draws(CONFIG, seed, 0)
    w2 = sigma_w * d["z"] / math.sqrt(CONFIG.widths[1])
    return d["x"], d["w1"], d["w2_teacher"], d["w3"], w2


def _run_arrays(x, w1, w2t, w3):
    """The array inputs of langevin_w2 for one model (R = 1)."""
    y = outputs(x, w1, w2t, w3, "tanh")
    return layer1_features(x, w1, "tanh")[None], y[None], w3[None]


def _streams(n: int, seed: int = 0):
    return [[np.random.default_rng([seed, p]) for p in range(n)]]


def test_one_step_full_noise_has_the_autograd_mean_and_covariance():
    """One step of (2.29): E[dW] = -lr mu, Cov[dW] = lr^2 f Cov_a[g_a] / |B| (full matrix)."""
    x, w1, w2t, w3, w2 = _model()
    lr, f = 0.3, finite_population_factor(32, 4, "fixed")
    phi1, y, w3r = _run_arrays(x, w1, w2t, w3)
    out, div = langevin_w2(w2[None], phi1, y, w3r, lr, 4, [0, 1], _streams(S),
                           finite_population=f)
    assert not (div >= 0).any()
    dw = (out[1, 0] - out[0, 0]).reshape(S, -1)
    mu, cov = autograd_moments(x, w1, w2t, w3, w2)
    mean, step_cov = -lr * mu, lr**2 * f * cov / 4
    # not vacuous: a flipped mean gradient would miss by 2 lr |mu| / se >> the critical z
    se = np.sqrt(np.diag(step_cov) / S)
    assert np.max(2 * lr * np.abs(mu) / se) > 10 * _crit(mu.size)
    assert_moments(dw, mean, step_cov)
    # not vacuous for the covariance either: the diagonal noise (zero off-diagonal) would
    # miss entry ij by about |rho_ij| sqrt(S) standard errors
    sd = np.sqrt(np.diag(step_cov))
    rho = step_cov / np.outer(sd, sd) - np.eye(len(sd))
    assert np.abs(rho).max() * math.sqrt(S) > 10 * _crit(rho.size)


def test_diagonal_noise_has_the_elementwise_variance():
    """noise='diagonal' is (2.29) as printed: independent elements, variance
    lr^2 f Var_a[g_a,ij] / |B|; the same mean."""
    x, w1, w2t, w3, w2 = _model(seed=4)
    lr, f = 0.3, finite_population_factor(32, 4, "shuffled")
    phi1, y, w3r = _run_arrays(x, w1, w2t, w3)
    out, _ = langevin_w2(w2[None], phi1, y, w3r, lr, 4, [0, 1], _streams(S, 1),
                         finite_population=f, noise="diagonal")
    dw = (out[1, 0] - out[0, 0]).reshape(S, -1)
    mu, cov = autograd_moments(x, w1, w2t, w3, w2)
    assert_moments(dw, -lr * mu, np.diag(lr**2 * f * np.diag(cov) / 4))


@pytest.fixture(scope="module")
def runs():
    """Tiny float64 runs: snapshots every epoch (8 SGD steps), two temperatures, two seeds."""
    out = {}
    for order in ("fixed", "replacement"):
        config = TeacherStudentConfig(widths=(3, 8, 4, 1), n_data=32, batch_size=4,
                                      data_order=order)
        out[order] = train_ensemble(config, [0.02, 0.1], [0.8], n_seeds=2, epochs=2,
                                    snapshots=3, seed=5, dtype=torch.float64, progress=False)
    return out


@pytest.mark.parametrize("order", ["fixed", "replacement"])
def test_closed_loop_takes_the_runs_model_lr_and_sampling(runs, order):
    """closed_loop from a run, one Euler-Maruyama step per epoch (interval = 8): from the
    run's W2(0) of model 1 in cell (1, 0) (lr = 0.1 x 4), dW has mean -8 lr mu and covariance
    8 lr^2 f Cov / |B| with f = 28/31 ('fixed') or 1 ('replacement'); the oracle takes the
    model's teacher and data from the seed design (replica_draws) and autograd."""
    run = runs[order]
    fc = closed_loop(run, (1, 0), models=[1], paths=S, snapshots=[0, 1], interval=8,
                     keep_w2=True)
    lr = 0.1 * 4
    assert fc.learning_rate == pytest.approx(lr) and fc.interval == 8
    np.testing.assert_array_equal(fc.steps, [0, 8])
    np.testing.assert_allclose(fc.times, [0.0, 8 * lr])
    w0 = run.w2[1, 0, 1, 0]
    np.testing.assert_allclose(fc.eigenvalues[0, 0], np.broadcast_to(eigenvalues(w0), (S, 4)),
                               rtol=1e-12)
    np.testing.assert_allclose(fc.observed[0], eigenvalues(run.w2[1, 0, 1, :2]), rtol=1e-12)
    d = replica_draws(run.config, run.seed, int(run.spawn_keys[1]))
    mu, cov = autograd_moments(d["x"], d["w1"], d["w2_teacher"], d["w3"], w0)
    f = 1.0 if order == "replacement" else 28 / 31
    dw = (fc.w2[1, 0] - fc.w2[0, 0]).reshape(S, -1)
    assert_moments(dw, -8 * lr * mu, 8 * lr**2 * f * cov / 4)


def test_interval_m_agrees_with_m_steps_at_small_lr():
    """m = 4 steps of (2.29) against one Euler-Maruyama step of length 4 lr, at lr = 1e-5: the
    difference of the two laws is O(m^2 lr^2 lambda mu) in the mean, below 1e-3 of a standard
    error here (|H mu| <~ |mu|), so both must pass two-sample z-tests (Bonferroni, ALPHA) on
    the mean and the covariance; a noise scaled by m instead of sqrt(m) would miss by ~3x."""
    x, w1, w2t, w3, w2 = _model(seed=6)
    lr, f, m = 1e-5, 28 / 31, 4
    phi1, y, w3r = _run_arrays(x, w1, w2t, w3)
    steps, _ = langevin_w2(w2[None], phi1, y, w3r, lr, 4, [0, m], _streams(S, 2),
                           finite_population=f)
    em, _ = langevin_w2(w2[None], phi1, y, w3r, lr, 4, [0, m], _streams(S, 3),
                        finite_population=f, interval=m)
    a = (steps[1, 0] - steps[0, 0]).reshape(S, -1)
    b = (em[1, 0] - em[0, 0]).reshape(S, -1)
    _, cov = autograd_moments(x, w1, w2t, w3, w2)
    c = m * lr**2 * f * cov / 4  # the common covariance under the null
    d = np.diag(c)
    z_mean = (a.mean(0) - b.mean(0)) / np.sqrt(2 * d / S)
    iu = np.triu_indices(len(d))
    se = np.sqrt(2 * (np.outer(d, d) + c**2) / (S - 1))
    z_cov = (np.cov(a.T) - np.cov(b.T))[iu] / se[iu]
    assert np.abs(z_mean).max() < _crit(z_mean.size)
    assert np.abs(z_cov).max() < _crit(z_cov.size)
    # each also matches the autograd law itself
    assert_moments(b, -m * lr * autograd_moments(x, w1, w2t, w3, w2)[0], c)


def test_one_path_replays_alone(runs):
    """Path 3 of model 1 alone (its own stream) is the same path as in a batch of 2 models x 5
    paths, over two epochs (16 steps), for both noises; equal to rounding (the batched
    products round differently): 1e-10 relative. Other paths and other seeds differ."""
    run = runs["fixed"]
    for cell, noise in (((0, 0), "full"), ((1, 0), "diagonal")):
        batch = closed_loop(run, cell, models=[0, 1], paths=5, noise=noise, keep_w2=True)
        alone = closed_loop(run, cell, models=[1], paths=[3], noise=noise, keep_w2=True)
        np.testing.assert_allclose(alone.w2[:, 0, 0], batch.w2[:, 1, 3], rtol=1e-10,
                                   atol=1e-13)
        other = closed_loop(run, cell, models=[1], paths=[3], noise=noise, seed=1,
                            keep_w2=True)
        for w in (batch.w2[-1, 1, 2], other.w2[-1, 0, 0]):
            assert np.abs(w - batch.w2[-1, 1, 3]).max() > 1e-6


def test_threads_leave_every_path_unchanged(runs):
    """The models are independent: stepped in 1, 2 or 3 concurrent groups (uneven), every
    path is bitwise the same (the chunks of data are the whole batch's), and torch's thread
    count is restored."""
    run, before = runs["fixed"], torch.get_num_threads()
    kw = dict(models=[0, 1], paths=3, keep_w2=True)
    one = closed_loop(run, (1, 0), threads=1, **kw).w2
    for threads in (2, 3):
        np.testing.assert_array_equal(closed_loop(run, (1, 0), threads=threads, **kw).w2, one)
    assert torch.get_num_threads() == before


def test_divergence_is_recorded_per_path():
    """A linear network at lr lambda_max >> 2 blows up: the paths stop when the full-data loss
    crosses the run's threshold (100), are masked from that step on and finite before; a
    threshold below the initial loss stops every path at step 0. No exception."""
    config = TeacherStudentConfig(widths=(3, 8, 4, 1), n_data=32, batch_size=4,
                                  activation="identity")
    run = train_ensemble(config, [2.0], [4.0], n_seeds=2, epochs=3, snapshots=4, seed=0,
                         dtype=torch.float64, progress=False)
    assert run.diverged.all()
    with pytest.raises(InputError, match="models"):
        closed_loop(run, (0, 0))  # the default (non-diverged models) is empty
    fc = closed_loop(run, (0, 0), models=[0, 1], paths=3)
    assert fc.diverged.all() and (fc.diverged_step > 0).all()
    for r in range(2):
        for p in range(3):
            after = fc.steps >= fc.diverged_step[r, p]
            assert fc.eigenvalues.mask[after, r, p].all()
            assert not fc.eigenvalues.mask[~after, r, p].any()
            assert np.isfinite(fc.eigenvalues.data[~after, r, p]).all()
    assert fc.observed.mask[:, -1].all()  # the run froze after its divergence
    low = TeacherStudentConfig(widths=(3, 8, 4, 1), n_data=32, batch_size=4,
                               divergence_threshold=1e-9)
    run = train_ensemble(low, [0.01], [1.0], n_seeds=1, epochs=1, snapshots=2, seed=0,
                         dtype=torch.float64, progress=False)
    fc = closed_loop(run, (0, 0), models=[0], paths=2)
    assert (fc.diverged_step == 0).all() and fc.eigenvalues.mask.all()


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"cell": (2, 0)}, "cell"),
    ({"cell": 0}, "cell"),
    ({"models": [0, 0]}, "models"),
    ({"models": [5]}, "models"),
    ({"models": []}, "models"),
    ({"paths": 0}, "paths"),
    ({"paths": [1, 1]}, "paths"),
    ({"paths": [-1]}, "paths"),
    ({"snapshots": [1, 0]}, "snapshots"),
    ({"snapshots": [3]}, "snapshots"),
    ({"interval": 3}, "interval"),
    ({"interval": 0}, "interval"),
    ({"noise": "white"}, "noise"),
    ({"seed": -1}, "seed"),
    ({"keep_w2": 1}, "keep_w2"),
    ({"threads": 0}, "threads"),
    ({"progress": 3}, "progress"),
])
def test_bad_input_is_refused_before_any_work(runs, monkeypatch, kwargs, name):
    """InputError naming the parameter; the training inputs are never regenerated."""
    def no_work(*args, **kw):
        raise AssertionError("work started before the inputs were checked")

    monkeypatch.setattr(cl, "training_inputs", no_work)
    args = {"cell": (0, 0), **kwargs}
    with pytest.raises(InputError, match=name):
        closed_loop(runs["fixed"], args.pop("cell"), **args)


def test_langevin_w2_refuses_bad_arrays():
    x, w1, w2t, w3, w2 = _model()
    phi1, y, w3r = _run_arrays(x, w1, w2t, w3)
    ok = dict(finite_population=0.5)
    with pytest.raises(InputError, match="record_steps"):
        langevin_w2(w2[None], phi1, y, w3r, 0.1, 4, [0, 3], _streams(2), interval=2, **ok)
    with pytest.raises(InputError, match="phi1"):
        langevin_w2(w2[None], phi1[:, :, :4], y, w3r, 0.1, 4, [0, 1], _streams(2), **ok)
    with pytest.raises(InputError, match="finite_population"):
        langevin_w2(w2[None], phi1, y, w3r, 0.1, 4, [0, 1], _streams(2), finite_population=2)
    with pytest.raises(InputError, match="streams"):
        langevin_w2(w2[None], phi1, y, w3r, 0.1, 4, [0, 1], [], **ok)
