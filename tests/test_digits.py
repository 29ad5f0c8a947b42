"""The digits task (issue 16, "Real data"): data, training against an autograd oracle, observables,
bad input, the sweep config's ``task`` key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dysonsgd import InputError
from dysonsgd.measure import observables as ob
from dysonsgd.model import tasks
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.layers import replica_layer_draws, student_init
from dysonsgd.runs.config import ConfigError, parse_config
from dysonsgd.train.ensemble import train_ensemble

WIDTHS = (64, 12, 8, 10)


def _config(**kw) -> TeacherStudentConfig:
    return TeacherStudentConfig(**{"widths": WIDTHS, "task": "digits", "n_data": 40,
                                   "batch_size": 4, **kw})


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def test_standardisation_mean_zero_variance_one():
    x, y, xt, yt = tasks.digits(1500)
    assert x.shape == (1500, 64) and y.shape == (1500, 10)
    assert xt.shape == (tasks.DIGITS_TEST, 64) and yt.shape == (tasks.DIGITS_TEST, 10)
    from sklearn.datasets import load_digits

    raw = load_digits()
    order = np.random.default_rng(tasks.DIGITS_ORDER_SEED).permutation(len(raw.target))
    train = raw.data[order][tasks.DIGITS_TEST:]
    constant = train.std(axis=0) == 0
    assert 0 < constant.sum() < 64  # the digits have pixels that are 0 in every image
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(x.var(axis=0)[~constant], 1.0, rtol=1e-12)
    assert np.all(x[:, constant] == 0) and np.all(xt[:, constant] == 0)
    # the test set is transformed with the training statistics (an independent recomputation)
    test = raw.data[order][: tasks.DIGITS_TEST]
    mu, sd = train.mean(axis=0), train.std(axis=0)
    np.testing.assert_allclose(xt[:, ~constant], ((test - mu) / np.where(sd > 0, sd, 1))[
        :, ~constant], rtol=1e-12, atol=1e-12)
    labels = raw.target[order]
    np.testing.assert_array_equal(y.argmax(axis=1), labels[tasks.DIGITS_TEST:])
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    np.testing.assert_array_equal(yt.argmax(axis=1), labels[: tasks.DIGITS_TEST])
    assert not x.flags.writeable


def test_fewer_training_points_are_standardised_over_themselves():
    x, y, xt, _ = tasks.digits(100)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-12)
    sd = x.std(axis=0)
    np.testing.assert_allclose(sd[sd > 0], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(y, tasks.digits(1500)[1][:100])
    assert xt.shape == (tasks.DIGITS_TEST, 64)


# ------------------------------------------------------------------------------------------------
# training against a per-model autograd loop
# ------------------------------------------------------------------------------------------------


def _oracle(config: TeacherStudentConfig, temps, sigmas, n_seeds: int, epochs: int):
    """Per-model torch autograd float64 loop of SGD (2.28) on the MSE (2.6) of the digits."""
    x, y = (torch.tensor(a) for a in tasks.task_data(config))
    nl = config.n_layers
    out = {}
    for it, temp in enumerate(temps):
        for js, sig in enumerate(sigmas):
            for r in range(n_seeds):
                d = replica_layer_draws(config, 0, r)
                ws = [torch.tensor(student_init(config, d, sig, k), requires_grad=True)
                      for k in range(1, nl + 1)]
                for _ in range(epochs):
                    for b0 in range(0, config.n_data, config.batch_size):
                        h = x[b0:b0 + config.batch_size]
                        for k, w in enumerate(ws):
                            h = h @ w.T if k == nl - 1 else torch.tanh(h @ w.T)
                        loss = 0.5 * ((y[b0:b0 + config.batch_size] - h) ** 2).sum()
                        grads = torch.autograd.grad(loss, ws)
                        with torch.no_grad():
                            for k, (w, g) in enumerate(zip(ws, grads, strict=True), start=1):
                                if k in config.trained_layers:
                                    w -= temp * g
                out[it, js, r] = [w.detach().numpy() for w in ws]
    return out


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_w2_only_matches_autograd(backend):
    config = _config()
    temps, sigmas = [0.05, 0.2], [1.0, 0.25]
    res = train_ensemble(config, temps, sigmas, n_seeds=2, epochs=3, snapshots=4,
                         dtype=torch.float64, progress=False, backend=backend)
    ref = _oracle(config, temps, sigmas, 2, 3)
    for (i, j, r), ws in ref.items():
        np.testing.assert_allclose(res.w2[i, j, r, -1], ws[1], rtol=0, atol=1e-10)
    assert res.backend == backend and np.all(np.isfinite(res.loss))


@pytest.mark.slow
def test_all_layers_match_autograd():
    config = _config(trained_layers="all")
    temps, sigmas = [0.05], [1.0, 0.25]
    res = train_ensemble(config, temps, sigmas, n_seeds=2, epochs=3, snapshots=4,
                         dtype=torch.float64, progress=False)
    ref = _oracle(config, temps, sigmas, 2, 3)
    for (i, j, r), ws in ref.items():
        got = res.student(-1)
        for k in range(3):
            np.testing.assert_allclose(got[k][i, j, r], ws[k], rtol=0, atol=1e-10)


def test_data_keyword_is_the_task():
    """``data=(x, y)`` on a teacher config trains the same models as ``task='digits'``."""
    config = _config()
    x, y = tasks.task_data(config)
    a = train_ensemble(config, 0.1, 1.0, n_seeds=2, epochs=2, snapshots=3, dtype=torch.float64,
                       progress=False)
    b = train_ensemble(TeacherStudentConfig(widths=WIDTHS, n_data=40, batch_size=4), 0.1, 1.0,
                       n_seeds=2, epochs=2, snapshots=3, dtype=torch.float64, progress=False,
                       data=(x, y))
    np.testing.assert_array_equal(a.w2, b.w2)
    np.testing.assert_array_equal(a.loss, b.loss)


# ------------------------------------------------------------------------------------------------
# observables without a teacher
# ------------------------------------------------------------------------------------------------


def test_observables_use_the_held_out_labels():
    config = _config()
    res = train_ensemble(config, [0.05, 0.2], 1.0, n_seeds=2, epochs=2, snapshots=3,
                         dtype=torch.float64, progress=False)
    xt, yt = tasks.task_test_set(config)
    w1, w2, w3 = res.student(-1)
    yhat = np.tanh(np.tanh(xt @ np.swapaxes(w1, -1, -2)) @ np.swapaxes(w2, -1, -2)) \
        @ np.swapaxes(w3, -1, -2)
    want = 0.5 * np.mean(np.sum((yhat - yt) ** 2, axis=-1), axis=-1)
    np.testing.assert_allclose(ob.result_test_loss(res, -1, convention="paper"), want,
                               rtol=1e-12)
    phi = np.tanh(np.tanh(xt @ np.swapaxes(w1, -1, -2)) @ np.swapaxes(w2, -1, -2))
    h = yt @ w3
    want = np.sum(h * phi, axis=(-2, -1)) / np.sqrt(np.sum(h * h, axis=(-2, -1))
                                                    * np.sum(phi * phi, axis=(-2, -1)))
    np.testing.assert_allclose(ob.result_alignment(res, -1), want, rtol=1e-12)
    assert np.all(np.isfinite(ob.result_feature_correlation(res, -1, 0)))
    np.testing.assert_allclose(ob.result_test_loss(res, -1, xt), ob.result_test_loss(res, -1))
    with pytest.raises(InputError, match="x_test"):
        ob.result_test_loss(res, -1, np.zeros((5, 64)))


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, match", [
    ({"task": "mnist"}, "task"),
    ({"widths": (3, 12, 8, 10)}, "widths"),
    ({"widths": (64, 12, 8, 1)}, "widths"),
    ({"n_data": 1600, "batch_size": 4}, "n_data"),
])
def test_bad_task_config_refused(kw, match):
    with pytest.raises(InputError, match=match):
        _config(**kw)


def test_bad_data_refused():
    config = TeacherStudentConfig(widths=WIDTHS, n_data=40, batch_size=4)
    x, y = np.zeros((40, 64)), np.zeros((40, 10))
    bad = [((x,), r"data must be a pair"),
           ((x[:30], y), r"data\[0\] \(x\) must have shape \(40, 64\)"),
           ((x, y[:, :3]), r"data\[1\] \(y\) must have shape \(40, 10\)"),
           ((x, np.full_like(y, np.nan)), r"data\[1\] \(y\) must be finite"),
           ((np.full_like(x, np.inf), y), r"data\[0\] \(x\) must be finite")]
    for data, match in bad:
        with pytest.raises(InputError, match=match):
            train_ensemble(config, 0.1, 1.0, epochs=1, progress=False, data=data)
    with pytest.raises(InputError, match="inputs"):
        train_ensemble(config, 0.1, 1.0, epochs=1, progress=False, data=(x, y),
                       inputs=np.zeros((40, 64)))


# ------------------------------------------------------------------------------------------------
# sweep config
# ------------------------------------------------------------------------------------------------


def _sweep(**training):
    return {"grid": {"temperature": [0.1], "inv_sigma_w": [1.0], "seeds": 2},
            "training": {"epochs": 2, "widths": list(WIDTHS), "n_data": 40, **training}}


def test_sweep_config_task_key():
    cfg = parse_config(_sweep(task="digits"))
    assert cfg.model.task == "digits"
    assert parse_config(cfg.to_dict()) == cfg
    teacher = parse_config(_sweep())
    assert "task" not in teacher.numerics()["model"]  # the paper's fingerprints unchanged
    assert cfg.fingerprint() != teacher.fingerprint()
    with pytest.raises(ConfigError, match=r"\[training\] task"):
        parse_config(_sweep(task="cifar"))
    with pytest.raises(ConfigError, match=r"\[training\] widths"):
        parse_config(_sweep(task="digits", widths=[3, 12, 8, 10]))
    with pytest.raises(ConfigError, match=r"\[training\] n_data"):
        parse_config(_sweep(task="digits", n_data=1600))


def test_bundled_digits_config():
    from dysonsgd.runs.config import bundled_config, load_config

    cfg = load_config(bundled_config("digits"))
    assert cfg.model.task == "digits" and cfg.model.widths[0] == 64
    assert cfg.model.widths[-1] == 10


def test_gradient_statistics_on_the_held_out_labels():
    """K and V (4.4) of a digits run against per-sample gradients taken by torch autograd on the
    held-out images with their labels as targets."""
    from dysonsgd.measure import gradstats
    from dysonsgd.measure.spectrum import eigensystem

    config = _config()
    res = train_ensemble(config, 0.1, 1.0, n_seeds=2, epochs=2, snapshots=3,
                         dtype=torch.float64, progress=False)
    stats = gradstats.measure(res, -1)
    xt, yt = (torch.tensor(a) for a in tasks.task_test_set(config))
    w1, w2, w3 = res.student(-1)
    for r in range(2):
        w = torch.tensor(w2[0, 0, r], requires_grad=True)
        grads = []
        for a in range(xt.shape[0]):
            out = torch.tensor(w3[0, 0, r]) @ torch.tanh(
                w @ torch.tanh(torch.tensor(w1[0, 0, r]) @ xt[a]))
            grads.append(torch.autograd.grad(0.5 * ((yt[a] - out) ** 2).sum(), w)[0].numpy())
        _, u = eigensystem(w2[0, 0, r])
        k, v = gradstats.drift_and_noise(w2[0, 0, r], np.stack(grads), basis=u)
        np.testing.assert_allclose(stats.k[0, 0, r], k, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(stats.v[0, 0, r], v, rtol=1e-8, atol=1e-12)
    with pytest.raises(InputError, match="x"):
        gradstats.measure(res, -1, x=np.zeros((5, 64)))
    with pytest.raises(InputError, match="result"):
        gradstats.training_inputs(res)


def test_task_survives_the_run_file(tmp_path):
    """A digits run written and read back keeps its task (its observables stay the labels')."""
    from dysonsgd.runs.files import load_result, save_result

    res = train_ensemble(_config(), 0.1, 1.0, n_seeds=2, epochs=1, snapshots=2,
                         dtype=torch.float64, progress=False)
    path = tmp_path / "digits.nc"
    save_result(res, path)
    back = load_result(path)
    assert back.config == res.config and back.config.task == "digits"
    np.testing.assert_array_equal(ob.result_test_loss(back), ob.result_test_loss(res))
