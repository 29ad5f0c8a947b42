"""Tests of the activation registry (dysonsgd.model.activations) and of its compiled forms.

Oracles: torch's own functions with autograd (``torch.nn.functional.gelu``, exact), central
finite differences, scipy's normal cdf, and a per-model SGD loop written here with autograd.
tanh and relu training against the NumPy loop is tested in test_training.py; here the two
activations added for issue 16 (GELU, identity) are trained the same way.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numba import njit
from scipy.special import ndtr

from dysonsgd.model import activations
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.train import train_ensemble
from dysonsgd.train._numba.simd import gelu_exact, vgelu, vload, vstore

F64 = torch.float64
#: independent torch forms of each activation (autograd gives the derivative)
TORCH_FORMS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "identity": lambda z: z * 1.0,
    "gelu": lambda z: torch.nn.functional.gelu(z, approximate="none"),
}
#: grid over [-6, 6] that avoids relu's kink at 0
Z = np.linspace(-6.0, 6.0, 241) + 0.0125
EPS32 = float(np.finfo(np.float32).eps)


def test_registry_lists_four_activations_with_distinct_kernel_codes():
    assert activations.ACTIVATIONS == ("tanh", "relu", "identity", "gelu")
    codes = [activations.lookup(n).code for n in activations.ACTIVATIONS]
    assert sorted(codes) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"activation must be one of .*'gelu'"):
        activations.lookup("swish")
    with pytest.raises(ValueError, match="activation"):
        TeacherStudentConfig(activation="swish")


@pytest.mark.parametrize("name", activations.ACTIVATIONS)
def test_value_and_derivative_equal_torch_autograd(name):
    act = activations.lookup(name)
    t = torch.tensor(Z, requires_grad=True)
    ref = TORCH_FORMS[name](t)
    ref.sum().backward()
    phi, dphi = act.pair(Z)
    # different libraries' erf / tanh: a few ulps apart (rtol 1e-14 is 45 float64 epsilons)
    np.testing.assert_allclose(phi, ref.detach().numpy(), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dphi, t.grad.numpy(), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(act.value(Z), phi, rtol=1e-15, atol=0)
    tphi, tdphi = act.pair(torch.tensor(Z))
    np.testing.assert_allclose(tphi.numpy(), phi, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(tdphi.numpy(), dphi, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(act.inplace(torch.tensor(Z)).numpy(), phi, rtol=1e-14, atol=1e-15)


def test_gelu_is_z_times_the_normal_cdf_and_its_derivative_the_central_difference():
    act = activations.lookup("gelu")
    phi, dphi = act.pair(Z)
    np.testing.assert_allclose(phi, Z * ndtr(Z), rtol=1e-15, atol=0)
    # GELU's closed-form limits: gelu(0) = 0, gelu'(0) = 1/2, gelu(z) -> z and -> 0
    h0, d0 = act.pair(np.array([0.0, 40.0, -40.0]))
    assert h0[0] == 0.0 and d0[0] == 0.5 and h0[1] == 40.0 and d0[1] == 1.0
    assert abs(h0[2]) < 1e-300 and abs(d0[2]) < 1e-300
    # central differences with step h: truncation h^2/6 max|phi'''| <= 2e-11 (|phi'''| < 1.2),
    # rounding 6 eps max|phi| / h <= 1.6e-9 on |z| <= 6; tolerance 2e-9
    step = 1e-5
    slope = (act.value(Z + step) - act.value(Z - step)) / (2 * step)
    np.testing.assert_allclose(dphi, slope, rtol=0, atol=2e-9)


@njit
def _vector_form(z, h, d, lanes):
    for q in range(0, z.size, lanes):
        hv, dv = vgelu(vload(z, q), z)
        vstore(h, q, hv)
        vstore(d, q, dv)


@njit
def _scalar_form(z, h, d):
    for q in range(z.size):
        h[q], d[q] = gelu_exact(z[q])


@pytest.mark.parametrize(("dtype", "lanes"), [(np.float32, 16), (np.float64, 8)])
def test_gelu_kernel_vector_form_within_the_abramowitz_stegun_bound(dtype, lanes):
    z = np.linspace(-12.0, 12.0, 16 * 1001).astype(dtype)
    h, d = np.empty_like(z), np.empty_like(z)
    _vector_form(z, h, d, lanes)
    x = z.astype(np.float64)  # the reference at the same (representable) arguments
    cdf, density = ndtr(x), np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    # A&S 7.1.26: |erf error| <= 1.5e-7, so |cdf error| <= 7.5e-8; plus rounding of the ~16
    # operations, at most 16 ulps of max(1, |z|) in the lanes' dtype
    ulp = 16 * float(np.finfo(dtype).eps) * np.maximum(1.0, np.abs(x))
    assert np.all(np.abs(h - x * cdf) <= 7.5e-8 * np.abs(x) + ulp)
    assert np.all(np.abs(d - (cdf + x * density)) <= 7.5e-8 + ulp)  # the density is exact
    assert np.all(np.isfinite(h)) and np.all(np.isfinite(d))


def test_gelu_kernel_scalar_form_is_exact():
    z = np.linspace(-12.0, 12.0, 4001)
    h, d = np.empty_like(z), np.empty_like(z)
    _scalar_form(z, h, d)
    phi, dphi = activations.lookup("gelu").pair(z)
    # libm's erfc against scipy's ndtr: a few ulps of max(1, |z|)
    np.testing.assert_allclose(h, phi, rtol=0, atol=8 * 2.3e-16 * 12)
    np.testing.assert_allclose(d, dphi, rtol=0, atol=8 * 2.3e-16 * 12)


# ------------------------------------------------------------------------------------------------
# training with each new activation
# ------------------------------------------------------------------------------------------------


def _draws(seed: int, n_data: int, sigma_w: float, widths=(3, 32, 16, 1)):
    """Teacher, inputs and W2(0) drawn outside the package (its own generator)."""
    n0, n1, n2, n3 = widths
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1 / math.sqrt(n0), (n1, n0))
    w2t = rng.normal(0, 1 / math.sqrt(n1), (n2, n1))
    w3 = rng.normal(0, 1 / math.sqrt(n2), (n3, n2))
    x = rng.normal(0, 1, (n_data, n0))
    return x, w1, w2t, w3, rng.normal(0, sigma_w / math.sqrt(n1), (n2, n1))


def _autograd_sgd(x, w1, w2t, w3, w2_init, lr, epochs, name, batch=4):
    """Per-model SGD on W2 with the loss (2.6) and fixed batch order, by torch autograd."""
    act = TORCH_FORMS[name]
    x, w1, w2t, w3 = (torch.tensor(a) for a in (x, w1, w2t, w3))
    phi1 = act(x @ w1.T)
    y = act(phi1 @ w2t.T) @ w3.T
    w2 = torch.tensor(w2_init, requires_grad=True)
    out = [w2.detach().clone()]
    for _ in range(epochs):
        for s in range(0, x.shape[0], batch):
            err = act(phi1[s:s + batch] @ w2.T) @ w3.T - y[s:s + batch]
            loss = 0.5 * (err * err).sum() / batch
            (g,) = torch.autograd.grad(loss, w2)
            with torch.no_grad():
                w2 -= lr * g
        out.append(w2.detach().clone())
    return torch.stack(out).numpy()


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("name", ["gelu", "identity"])
def test_float64_matches_autograd_loop_after_2000_steps(name, backend):
    x, w1, w2t, w3, w2_init = _draws(11, 4000, sigma_w=0.5)
    temp = 2.0**-6
    res = train_ensemble(TeacherStudentConfig(activation=name), temperature=temp, sigma_w=0.5,
                         epochs=2, snapshots=3, seed=0, dtype=F64, progress=False,
                         teacher_weights=(w1, w2t, w3), inputs=x, student_init=w2_init,
                         backend=backend)
    ref = _autograd_sgd(x, w1, w2t, w3, w2_init, lr=4 * temp, epochs=2, name=name)
    assert res.model_steps == 2000 and not res.diverged.any()
    assert np.abs(ref[-1] - w2_init).max() > 1e-2  # it moved
    # float64 rounding of 2000 non-chaotic steps at low T (as in test_training)
    np.testing.assert_allclose(res.w2[0, 0, 0], ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["gelu", "identity"])
def test_tiny_ensemble_numba_and_torch_agree_in_both_dtypes(name):
    cfg = TeacherStudentConfig(activation=name, n_data=200)
    kw = dict(temperature=[2.0**-6, 2.0**-5], sigma_w=[0.125, 0.5], n_seeds=2, epochs=3,
              snapshots=4, seed=5, progress=False)
    k64 = train_ensemble(cfg, dtype=F64, backend="numba", **kw)
    t64 = train_ensemble(cfg, dtype=F64, backend="torch", **kw)
    k32 = train_ensemble(cfg, dtype=torch.float32, backend="numba", **kw)
    assert not k64.diverged.any()
    np.testing.assert_allclose(k64.w2, t64.w2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(k64.grad, t64.grad, rtol=0, atol=1e-12)
    # identity learns its linear teacher down to the rounding floor of the loss (~1e-32), so
    # losses are compared as sqrt(L), an RMS output error: Lipschitz in W2 with constant
    # ||W3|| ||phi1|| sqrt(n1 n2) < 100 at these widths, times the W2 tolerance
    np.testing.assert_allclose(np.sqrt(k64.loss), np.sqrt(t64.loss), rtol=0, atol=100 * 1e-12)
    # float32 (A&S cdf in the GELU kernel) against float64: rounding only, as for tanh
    scale = np.abs(k64.w2).max()
    assert np.abs(k32.w2 - k64.w2).max() < 2e-5 * scale
    np.testing.assert_allclose(np.sqrt(k32.loss), np.sqrt(k64.loss), rtol=0,
                               atol=100 * 2e-5 * scale)
