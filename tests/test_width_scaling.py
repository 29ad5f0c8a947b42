"""The width-scaling study's pure functions (docs/studies/width_scaling.py) and its identity:
the 1/n2 readout (W3 / sqrt(n2) in teacher and student) trains W2 exactly as the standard
parametrisation at T / n2."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dysonsgd.model import network
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.draws import replica_draws
from dysonsgd.train import train_ensemble

_PATH = Path(__file__).resolve().parents[1] / "docs" / "studies" / "width_scaling.py"
_SPEC = importlib.util.spec_from_file_location("width_scaling", _PATH)
ws = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ws)


def test_mean_field_readout_is_standard_at_temperature_over_n2():
    """Scaling the shared W3 by c = n2^-1/2 scales outputs and targets by c and the W2 gradient
    by c^2 = 1/n2, so SGD at T_b is SGD at T_b / n2 step for step (docs/beyond.md, "Width
    scaling"). float64: the two runs differ by rounding only; 1e-10 relative is the project's
    float64 path-agreement level (issue 16), ~1e5 times the rounding of these short runs."""
    n2 = 8
    cfg = TeacherStudentConfig(widths=(3, 2 * n2, n2, 1), n_data=200)
    seeds, t_b = 2, 0.5
    draws = [replica_draws(cfg, 3, r) for r in range(seeds)]
    teacher = (np.stack([d["w1"] for d in draws]), np.stack([d["w2_teacher"] for d in draws]),
               ws.mean_field_readout(np.stack([d["w3"] for d in draws])))
    # the torch backend: the same algorithm as the numba kernels (tested against them), and no
    # kernel compilation in the fast suite
    kw = dict(sigma_w=0.125, n_seeds=seeds, epochs=4, snapshots=3, seed=3, dtype=torch.float64,
              progress=False, backend="torch")
    mf = train_ensemble(cfg, temperature=t_b, teacher_weights=teacher, **kw)
    sp = train_ensemble(cfg, temperature=t_b / n2, **kw)
    assert np.allclose(teacher[2][:, 0] ** 2 * n2, np.stack([d["w3"] for d in draws])[:, 0] ** 2)
    scale = np.abs(sp.w2).max()
    assert np.abs(mf.w2 - sp.w2).max() <= 1e-10 * scale
    assert np.abs(mf.w2[..., -1, :, :] - mf.w2[..., 0, :, :]).max() > 1e-3 * scale  # it moved
    np.testing.assert_allclose(mf.loss * n2, sp.loss, rtol=1e-10)


def test_gauss_newton_lambda_against_the_dense_gauss_newton_matrix():
    """|W3|^2 lambda_max(Phi1^T Phi1 / P) against the top eigenvalue of J^T J / P, J the exact
    per-sample output gradients d yhat / d W2 (network.per_sample_gradients with residual 1),
    at sigma_W = 1e-3, where tanh'(h2) = 1 - O(1e-6): declared tolerance 1e-4 relative, far
    above that correction and far below the O(1) misses of a wrong factor."""
    rng = np.random.default_rng(7)
    n0, n1, n2, p = 3, 12, 6, 300
    w1 = rng.standard_normal((n1, n0)) / math.sqrt(n0)
    w3 = rng.standard_normal((1, n2)) / math.sqrt(n2)
    w2 = 1e-3 * rng.standard_normal((n2, n1)) / math.sqrt(n1)
    x = rng.standard_normal((p, n0))
    yhat = network.outputs(x, w1, w2, w3)
    jac, _ = network.per_sample_gradients(x, yhat - 1.0, w1, w2, w3)
    jac = jac.reshape(p, -1)
    dense = np.linalg.eigvalsh(jac.T @ jac / p)[-1]
    got = ws.gauss_newton_lambda(network.layer1_features(x, w1), w3)
    assert abs(got / dense - 1.0) < 1e-4


def test_crossing_first_upward_after_the_minimum():
    t = np.arange(-3.0, 4.0)
    r = np.array([-1.0, -2.0, -3.0, -2.5, -1.2, -0.5, -0.4])
    tc, slope, status = ws.crossing(t, r, -1.5)
    # the downward crossing between -3 and -2 is ignored; upward between t = 0 and 1
    assert status == "ok"
    assert tc == pytest.approx(1.0 / 1.3, rel=1e-12)
    assert slope == pytest.approx(1.3, rel=1e-12)
    assert ws.crossing(t, r + 2.0, -1.5)[2] == "never_ordered"
    assert ws.crossing(t, r - 2.0, -1.5)[:1] == (math.inf,)
    r_div = r.copy()
    r_div[4:] = np.inf  # diverged models lie above every level
    tc, slope, status = ws.crossing(t, r_div, -1.5)
    assert (tc, status) == (0.5, "ok") and math.isnan(slope)


def test_power_fit_slope_and_its_standard_error():
    """Equal SEs s: the weighted fit is ordinary least squares, slope SE s / sqrt(Sxx)."""
    x = np.log2([16, 32, 64, 128, 256])
    y = 1.0 - 0.8 * x
    s = np.full(5, 0.3)
    fit = ws.power_fit(x, y, s)
    assert fit["slope"] == pytest.approx(-0.8, abs=1e-12)
    assert fit["slope_se"] == pytest.approx(0.3 / math.sqrt(np.sum((x - x.mean()) ** 2)))
    assert fit["chi2"] == pytest.approx(0.0, abs=1e-20)


def test_collapse_recovers_a_planted_exponent():
    """Curves f(log2 T + a0 log2 n) sampled on half-octave ladders collapse at a0 = 0.70: the
    fit is within 0.02 (two steps of the 0.01 grid; piecewise-linear interpolation of a smooth
    sigmoid on a 0.5 grid shifts the minimum by less than that)."""
    widths = np.array([16, 32, 64, 128, 256])
    ln = np.log2(widths)
    a0 = 0.7
    curves = []
    for k, n in enumerate(ln):
        t = np.arange(-9.0, 4.0, 0.5) + 0.25 * (k % 2)
        curves.append((t, -3.0 + 2.5 / (1.0 + np.exp(-1.7 * (t + a0 * n - 3.0)))))
    a, costs = ws.fit_collapse(curves, ln)
    assert abs(a - a0) <= 0.02
    assert np.nanmin(costs) < 1e-3 * np.nanmax(costs)


def test_sharpening_collapse_recovers_a_planted_exponent():
    """Curves g((log2 T - c) n^k0), c = 0.5, k0 = 0.3, on 0.05-octave ladders: the sharpening
    form of fit_collapse (centre given) finds k0 within 0.02 (two grid steps)."""
    widths = np.array([16, 32, 64, 128, 256])
    ln = np.log2(widths)
    curves = []
    for n in ln:
        t = np.arange(-1.0, 2.0, 0.05)
        curves.append((t, 1.0 / (1.0 + np.exp(1.5 * 2.0 ** (0.3 * n) * (t - 0.5)))))
    kappa, _ = ws.fit_collapse(curves, ln, band=(0.2, 0.8), centre=0.5)
    assert abs(kappa - 0.3) <= 0.02
    # the shift form cannot collapse curves that only sharpen: its cost stays far above
    _, costs = ws.fit_collapse(curves, ln, band=(0.2, 0.8))
    assert ws.collapse_cost(curves, ln, kappa, (0.2, 0.8), centre=0.5) < 0.01 * np.nanmin(costs)
