"""measure.curvature: the Hessian of the training loss in W2 and its largest eigenvalue.

Oracles, all independent of the package's forward pass and gradient:
- torch.autograd.functional.hessian of the loss written out here in plain torch;
- the analytic Hessian of the identity-activation model, H = (W3^T W3) kron mean(phi1 phi1^T),
  whose extreme eigenvalues are products of those of the two factors;
- full-batch gradient descent on that (quadratic) loss, trained by train_ensemble, which
  converges for lr lambda_max < 2 and diverges above.
Tolerances: float64 rounding of sums over the data (relative 1e-12 on entries of size ~|H|) and
of the small eigenproblems (1e-10), far above the ~1e-15 observed and far below any effect.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dysonsgd._checks import InputError
from dysonsgd.measure.curvature import (
    hessian_vector_product,
    largest_curvature,
    result_largest_curvature,
)
from dysonsgd.measure.gradstats import training_inputs
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.train import train_ensemble

ACT = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z}


def _model(seed: int, widths=(3, 5, 4, 2), n_points: int = 7, models: int = 2):
    n0, n1, n2, n3 = widths
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((models, n_points, n0)), rng.standard_normal((models, n_points,
                                                                                n3)),
            rng.standard_normal((models, n1, n0)), rng.standard_normal((models, n2, n1)),
            rng.standard_normal((models, n3, n2)))


def _autograd_hessian(x, y, w1, w2, w3, activation: str) -> np.ndarray:
    """The Hessian of (1/P) sum_a 1/2 |y_a - W3 phi(W2 phi(W1 x_a))|^2 in vec(W2), row-major."""
    phi = ACT[activation]
    x, y, w1, w3 = (torch.tensor(a) for a in (x, y, w1, w3))

    def loss(w2):
        out = phi(phi(x @ w1.T) @ w2.T) @ w3.T
        return 0.5 * ((out - y) ** 2).sum(-1).mean()

    d = w2.size
    return torch.autograd.functional.hessian(loss, torch.tensor(w2), vectorize=True).reshape(
        d, d).numpy()


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
def test_hessian_vector_product_equals_autograd_hessian(activation):
    x, y, w1, w2, w3 = _model(1)
    v = np.random.default_rng(2).standard_normal(w2.shape)
    got = hessian_vector_product(x, y, w1, w2, w3, v, activation)
    for m in range(2):
        h = _autograd_hessian(x[m], y[m], w1[m], w2[m], w3[m], activation)
        np.testing.assert_allclose(got[m].ravel(), h @ v[m].ravel(), rtol=0,
                                   atol=1e-12 * np.abs(h).max())


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_full_krylov_lanczos_gives_the_exact_extreme_eigenvalues(activation):
    x, y, w1, w2, w3 = _model(3, models=3)
    got = largest_curvature(x, y, w1, w2, w3, activation, iterations=20)  # n2 n1 = 20
    for m in range(3):
        ev = np.linalg.eigvalsh(_autograd_hessian(x[m], y[m], w1[m], w2[m], w3[m], activation))
        scale = np.abs(ev).max()
        assert abs(got.largest[m] - ev[-1]) < 1e-10 * scale
        assert abs(got.smallest[m] - ev[0]) < 1e-10 * scale
    assert got.iterations == 20 and np.all(got.residual < 1e-10 * np.abs(got.largest))


def test_identity_model_is_the_analytic_kronecker_hessian():
    # phi = identity: l is quadratic in W2 and H = (W3^T W3) kron C, C = mean_a phi1 phi1^T, of
    # rank n3 * n0 = 6 out of 48 (so the Krylov space breaks down and Lanczos must restart)
    x, y, w1, w2, w3 = _model(4, widths=(3, 8, 6, 2), n_points=50, models=2)
    v = np.random.default_rng(5).standard_normal(w2.shape)
    got = largest_curvature(x, y, w1, w2, w3, "identity", iterations=48)
    hv = hessian_vector_product(x, y, w1, w2, w3, v, "identity")
    for m in range(2):
        phi1 = x[m] @ w1[m].T
        gram, cov = w3[m].T @ w3[m], phi1.T @ phi1 / 50
        h = np.kron(gram, cov)
        np.testing.assert_allclose(hv[m].ravel(), h @ v[m].ravel(), rtol=0,
                                   atol=1e-12 * np.abs(h).max())
        top = np.linalg.eigvalsh(gram)[-1] * np.linalg.eigvalsh(cov)[-1]
        assert abs(got.largest[m] - top) < 1e-10 * top
        assert abs(got.smallest[m]) < 1e-10 * top  # positive semi-definite, singular


def test_paper_student_converges_in_the_default_iterations():
    # the paper's widths (512 parameters), 200 of a trained model's points: the default 40
    # Lanczos steps give lambda_max to 1e-8 relative (a margin far below the percent-level
    # comparisons of lr lambda_max with 2); the Ritz value is a lower bound (interlacing)
    res = train_ensemble(TeacherStudentConfig(n_data=200), temperature=[2.0**-5, 2.0],
                         sigma_w=0.125, epochs=5, snapshots=2, seed=6, dtype=torch.float64,
                         progress=False)
    got = result_largest_curvature(res)
    xs = training_inputs(res)[0, 0, 0]  # the inputs of the run's seed streams
    w1, w2t, w3 = res.teacher_w1[0], res.teacher_w2[0], res.teacher_w3[0]
    y = (np.tanh(np.tanh(xs @ w1.T) @ w2t.T) @ w3.T)
    for t in range(2):
        ev = np.linalg.eigvalsh(_autograd_hessian(xs, y, w1, res.w2[t, 0, 0, -1], w3, "tanh"))
        assert got.largest[t, 0, 0] <= ev[-1] * (1 + 1e-12)
        assert abs(got.largest[t, 0, 0] - ev[-1]) < 1e-8 * ev[-1]
    assert got.largest.shape == (2, 1, 1)


@pytest.mark.parametrize(("factor", "converges"), [(1.9, True), (2.1, False)])
def test_gradient_descent_is_stable_exactly_below_lr_lambda_max_two(factor, converges):
    # identity activation: L(W2) is quadratic, so full-batch GD (|B| = n_data) multiplies the
    # error along the top eigenvector by |1 - lr lambda_max| = 0.9 or 1.1 per step; over 200
    # steps that is 5e-19 or 4e16 in the loss's top component, no statistics involved
    cfg = TeacherStudentConfig(activation="identity", n_data=40, batch_size=40,
                               divergence_threshold=float("inf"))
    probe = train_ensemble(cfg, temperature=1.0, sigma_w=1.0, epochs=1, snapshots=2, seed=8,
                           dtype=torch.float64, progress=False, backend="torch")
    lam = result_largest_curvature(probe, 0).largest[0, 0, 0]
    lr = factor / lam
    res = train_ensemble(cfg, temperature=lr / 40, sigma_w=1.0, epochs=200, snapshots=3,
                         seed=8, dtype=torch.float64, progress=False, backend="torch")
    loss = res.loss[0, 0, 0]
    if converges:
        assert loss[-1] < loss[1] < loss[0]
    else:
        assert not np.isfinite(loss[-1]) or loss[-1] > 1e6 * loss[0]


def test_bad_input_is_refused():
    x, y, w1, w2, w3 = _model(9)
    with pytest.raises(InputError, match="iterations"):
        largest_curvature(x, y, w1, w2, w3, iterations=0)
    with pytest.raises(InputError, match="inconsistent shapes"):
        largest_curvature(x, y[..., :1], w1, w2, w3)
    res = train_ensemble(TeacherStudentConfig(n_data=8), temperature=1.0, sigma_w=1.0,
                         epochs=1, snapshots=2, progress=False, backend="torch")
    with pytest.raises(InputError, match="snapshot"):
        result_largest_curvature(res, 2)
