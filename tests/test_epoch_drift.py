"""The epoch drift: the replayed epoch is the run's own next epoch, its K is the mean drift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dysonsgd.measure import gradstats
from dysonsgd.measure.epoch_drift import _replay, epoch_drift
from dysonsgd.measure.spectrum import eigensystem
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.network import outputs, per_sample_gradients
from dysonsgd.train import train_ensemble

CONFIG = TeacherStudentConfig(widths=(3, 8, 4, 1), n_data=64, batch_size=4)


@pytest.mark.parametrize("order", ["fixed", "shuffled", "replacement"])
def test_replayed_epoch_reproduces_the_next_snapshot(order):
    """Oracle: the training engine itself. Snapshots every epoch; the replay of the epoch after
    snapshot k ends at the run's W2 of snapshot k + 1 (float64, different code: 1e-10)."""
    config = TeacherStudentConfig(widths=(3, 8, 4, 1), n_data=64, batch_size=4, data_order=order)
    run = train_ensemble(config, [0.05, 0.5], [0.5], n_seeds=2, epochs=3, snapshots=4, seed=1,
                         dtype=torch.float64, progress=False)
    for k in range(3):
        _, w_end = _replay(run, k, chunk=3)
        np.testing.assert_allclose(w_end, run.w2[..., k + 1, :, :], rtol=1e-10, atol=1e-12)


def test_small_learning_rate_gives_the_full_data_drift():
    """lr -> 0: an epoch visits every point once at (nearly) fixed W, so the epoch drift tends
    to K = -(W mu^T + mu W^T) of the full-data mean gradient mu (per_sample_gradients); the
    difference is O(lr), checked at T = 1e-7 to 1e-5 relative."""
    run = train_ensemble(CONFIG, [1e-7], [0.5], n_seeds=2, epochs=2, snapshots=3, seed=2,
                         dtype=torch.float64, progress=False)
    k = epoch_drift(run, -1)
    x = gradstats.training_inputs(run)[0, 0]
    w1, w2t, w3 = (np.asarray(a, float)[0, 0] for a in run.teacher())
    w2 = np.asarray(run.w2[0, 0, :, -1], float)
    y = outputs(x, w1, w2t, w3, "tanh")
    grads, _ = per_sample_gradients(x, y, w1, w2, w3, "tanh")
    mu = grads.mean(axis=1)
    _, u = eigensystem(w2)
    kx = -(w2 @ np.swapaxes(mu, -1, -2) + mu @ np.swapaxes(w2, -1, -2))
    expected = np.einsum("rji,rjk,rki->ri", u, kx, u)
    np.testing.assert_allclose(k[0, 0], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("order", ["shuffled", "replacement"])
def test_training_w2_replays_the_run_to_a_snapshot(order):
    """Replaying 100 SGD steps from W2(0) lands on the run's snapshot at epoch 2 (the run's
    kernel sums in another order: agreement to rounding amplified over 100 steps)."""
    from dysonsgd.measure.epoch_drift import training_w2

    run = train_ensemble(TeacherStudentConfig(n_data=200, batch_size=4, data_order=order),
                         temperature=[0.25, 2.0], sigma_w=[0.125], n_seeds=3, epochs=4,
                         snapshots=3, seed=3, progress=False, dtype="float64")
    w = training_w2(run, (1, 0), [0, 2], 2 * 50)
    ref = run.w2[1, 0, [0, 2], 1]
    assert np.abs(w - ref).max() < 1e-8 * np.abs(ref).max()
    assert np.abs(training_w2(run, (1, 0), [1], 0) - run.w2[1, 0, [1], 0]).max() == 0
