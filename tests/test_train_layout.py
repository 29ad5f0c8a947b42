"""The numba engine's lane layout does not change a number.

Models that share a teacher or the same teachers given per model (every block then mixes
groups); features of every group at once or per wave. Each pair must agree bit for bit: the
kernels keep every floating-point sum in one order whatever the layout (issue 17).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.train import train_ensemble
from dysonsgd.train._numba import engine

GRID = dict(temperature=[2.0**-5, 0.5, 2.0, 64.0], sigma_w=[0.25, 1.0, 4.0, 8.0, 16.0],
            n_seeds=2, epochs=2, snapshots=3, seed=3, progress=False)


def _arrays(res):
    return [res.w2, res.grad, res.loss, res.diverged_epoch, res.diverged_step]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("order", ["fixed", "shuffled"])
def test_one_group_blocks_equal_mixed_blocks(dtype, order):
    # 20 models per teacher: whole blocks of one group (broadcast features) plus a mixed
    # remainder; the same teachers given per model make every block mixed. A divergence
    # threshold of 1 (loss units) stops about a third of the models within the two epochs, so
    # that both branches of the kernel's divergence test are exercised
    cfg = TeacherStudentConfig(n_data=200, data_order=order, divergence_threshold=1.0)
    shared = train_ensemble(cfg, dtype=dtype, **GRID)
    assert shared.diverged.any() and not shared.diverged.all()  # both branches of the check
    rep = shared.group.reshape(-1)
    w1, w2t, w3 = (a[rep].reshape(4, 5, 2, *a.shape[1:])
                   for a in (shared.teacher_w1, shared.teacher_w2, shared.teacher_w3))
    mixed = train_ensemble(cfg, dtype=dtype, teacher_weights=(w1, w2t, w3), **GRID)
    assert mixed.teacher_w2.shape[0] == 40
    for a, b in zip(_arrays(shared), _arrays(mixed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_features_per_wave_equal_features_at_once(monkeypatch):
    # over the feature budget the engine builds each wave's groups' features; the data
    # orders must still be those of the models' replicas
    cfg = TeacherStudentConfig(n_data=200, data_order="shuffled")
    kw = dict(temperature=[0.05, 0.5], sigma_w=[0.5, 2.0], n_seeds=9, epochs=2, seed=4,
              progress=False)
    at_once = train_ensemble(cfg, **kw)
    monkeypatch.setattr(engine, "_FEATURE_BUDGET", 0)
    per_wave = train_ensemble(cfg, **kw)
    for a, b in zip(_arrays(at_once), _arrays(per_wave), strict=True):
        np.testing.assert_array_equal(a, b)
