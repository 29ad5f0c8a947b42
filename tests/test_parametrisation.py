"""The ``parametrisation = 'mean-field'`` key (issue 16, width scaling): the 1/n readout.

Dividing the shared output matrix by c^-1 = sqrt(n_{L-1}) in teacher and student scales the
outputs, the targets and the residual by c, the loss by c^2 and the gradient of every hidden
matrix by c^2, so SGD at T in the mean-field parametrisation is SGD at c^2 T = T / n_{L-1} in
the standard one, step for step, with the losses divided by n_{L-1} (docs/beyond.md, "Width
scaling"). float64: the two runs differ by rounding only; 1e-10 relative is the project's
float64 path-agreement level (issue 16).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dysonsgd._checks import InputError
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.draws import replica_draws
from dysonsgd.model.layers import replica_layer_draws
from dysonsgd.runs.config import parse_config
from dysonsgd.train import train_ensemble

KW = dict(sigma_w=0.125, n_seeds=2, epochs=4, snapshots=3, seed=3, dtype=torch.float64,
          progress=False)


@pytest.mark.parametrize(("widths", "trained", "backend"), [
    ((3, 16, 8, 1), (2,), "torch"),        # the W2 path
    ((3, 12, 8, 6, 1), (1, 2, 3), "auto"),  # the general path, every hidden matrix trained
])
def test_mean_field_at_t_is_standard_at_t_over_n(widths, trained, backend):
    n_last = widths[-2]
    common = dict(widths=widths, n_data=200, trained_layers=trained,
                  divergence_threshold=math.inf)
    mf_cfg = TeacherStudentConfig(parametrisation="mean-field", **common)
    sp_cfg = TeacherStudentConfig(**common)
    t_b = 0.5
    mf = train_ensemble(mf_cfg, temperature=t_b, backend=backend, **KW)
    sp = train_ensemble(sp_cfg, temperature=t_b / n_last, backend=backend, **KW)
    scale = np.abs(sp.w2).max()
    assert np.abs(mf.w2 - sp.w2).max() <= 1e-10 * scale
    assert np.abs(mf.w2[..., -1, :, :] - mf.w2[..., 0, :, :]).max() > 1e-3 * scale  # it moved
    np.testing.assert_allclose(mf.loss * n_last, sp.loss, rtol=1e-10)
    for layer, w in mf.layer_w.items():  # the other trained matrices, when recorded
        np.testing.assert_allclose(w, sp.layer_w[layer], rtol=0, atol=1e-10 * np.abs(w).max())


def test_mean_field_draw_has_variance_one_over_fan_in_squared():
    # the output matrix of 400 replicas, n2 = 64: E[w^2] = 1/n2^2, a relative standard error
    # of sqrt(2 / (400 x 64)) = 0.9% per mean of squares; 4 standard errors
    n2 = 64
    cfg = TeacherStudentConfig(widths=(3, 128, n2, 1), n_data=4, parametrisation="mean-field")
    w3 = np.stack([replica_draws(cfg, 0, r)["w3"] for r in range(400)])
    assert np.mean(w3**2) * n2**2 == pytest.approx(1.0, abs=4 * math.sqrt(2 / w3.size))
    # the general draws: the same replica's output matrix (the same stream, the same value)
    w3_layers = np.stack([replica_layer_draws(cfg, 0, r)["teacher"][-1] for r in range(400)])
    np.testing.assert_array_equal(w3_layers, w3)


def test_parametrisation_refused_and_parsed():
    with pytest.raises(InputError, match="parametrisation must be one of"):
        TeacherStudentConfig(parametrisation="muP")
    def mapping(value):
        return {"name": "x", "grid": {"temperature": [0.5], "inv_sigma_w": [8.0], "seeds": 2},
                "training": {"epochs": 2, "parametrisation": value}}

    cfg = parse_config(mapping("mean-field"))
    assert cfg.model.parametrisation == "mean-field"
    assert parse_config(mapping("standard")).fingerprint() != cfg.fingerprint()
    with pytest.raises(InputError, match="parametrisation"):
        parse_config(mapping("meanfield"))


def test_mean_field_key_replays_the_width_study_bitwise():
    # docs/studies/width_scaling.py trained (b) from the standard replica's draws with W3
    # divided by sqrt(n2) given as teacher_weights; the config key must give those numbers
    n2 = 8
    std = TeacherStudentConfig(widths=(3, 2 * n2, n2, 1), n_data=200)
    mf = TeacherStudentConfig(widths=(3, 2 * n2, n2, 1), n_data=200, parametrisation="mean-field")
    draws = [replica_draws(std, 3, r) for r in range(2)]
    teacher = (np.stack([d["w1"] for d in draws]), np.stack([d["w2_teacher"] for d in draws]),
               np.stack([d["w3"] for d in draws]) / math.sqrt(n2))
    kw = {**KW, "dtype": torch.float32}
    by_key = train_ensemble(mf, temperature=2.0, **kw)
    by_weights = train_ensemble(std, temperature=2.0, teacher_weights=teacher, **kw)
    np.testing.assert_array_equal(by_key.w2, by_weights.w2)
    np.testing.assert_array_equal(by_key.loss, by_weights.loss)
