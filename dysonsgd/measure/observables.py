"""Observables of section 3.2 and 4 on trained teacher-student ensembles.

Pure array functions, vectorised over any leading (ensemble) axes, plus thin wrappers taking an
:class:`dysonsgd.train.EnsembleResult`. Shapes use ``...`` for the ensemble axes (for a result:
``(nT, nS, nR)``), ``P`` for test points, ``n2 x n1`` for ``W2``. The network's features (2.5)
and outputs (2.3) come from :mod:`dysonsgd.model.network`, the spectrum of ``X`` (4.1) and its
level spacing (4.5) from :mod:`dysonsgd.measure.spectrum`.

Conventions (see ``reference-notes.md``, Analysis):

- test set: 128 inputs ``x ~ N(0, 1)^3`` drawn once with NumPy seed 42 as in the release, i.e.
  ``numpy.random.RandomState(42).standard_normal((128, 3))`` (identical to ``np.random.seed(42);
  np.random.normal(0, 1, (128, 3))``); shared by every model.
- :func:`test_loss_release` is the figures' test loss, the mean over points of
  ``sum_i (y_i - yhat_i)^2`` with no 1/2; :func:`test_loss_paper` is (2.6), with the 1/2.
- :func:`alignment` is (3.5)-(3.6); :func:`alignment_release` additionally divides by the number
  of test points, as the release's notebook (its colour scale 0.5e-3 .. 2.5e-3 comes from it).
- eigenvalues of ``X = W2 W2^T`` (4.1) are in ascending order (the notebook's SVD gives them
  largest first).

Fixed-data tasks (``config.task`` other than ``'teacher'``, :mod:`dysonsgd.model.tasks`): with
no teacher the wrappers read the task's held-out test set (for ``'digits'``: 297 standardised
images and their one-hot labels) and take its labels where a teacher's outputs stood:

- test loss: (2.6) of the student's outputs against the held-out one-hot labels (the release
  convention without the 1/2); predicting 0 scores 1 (1/2 with it);
- alignment (3.5)-(3.6): the external field of section 2.5, ``h_{j alpha} = sum_i
  y_i(x_alpha) W3_ij``, needs only targets and the readout, so it keeps its definition with
  ``y`` the test labels (and the student's ``W3``);
- ``G(t, t')`` (3.4), the gradient norm (3.3) and the rate (4.7) need no teacher and are
  unchanged (``G`` on the held-out images).

A task's test set is fixed: ``x_test`` must be None (or the task's own test inputs).
"""

from __future__ import annotations

import numpy as np

from dysonsgd._checks import InputError, check_array, check_index, check_int
from dysonsgd.measure.spectrum import eigenvalues, mean_level_spacing
from dysonsgd.model.network import features, outputs
from dysonsgd.model.tasks import task_test_set

__all__ = [
    "alignment",
    "alignment_release",
    "ensemble_mean",
    "external_field",
    "feature_correlation",
    "gradient_norm",
    "release_training_loss",
    "result_alignment",
    "result_eigenvalues",
    "result_feature_correlation",
    "result_gradient_norm",
    "result_rate",
    "result_test_inputs",
    "result_test_loss",
    "result_test_targets",
    "test_inputs",
    "test_loss_paper",
    "test_loss_release",
    "time_averaged_rate",
]


def test_inputs(n_points: int = 128, n0: int = 3, seed: int = 42) -> np.ndarray:
    """The release's test inputs: ``RandomState(seed).standard_normal((n_points, n0))``.

    Returns
    -------
    (n_points, n0) float64
    """
    n_points = check_int("n_points", n_points, minimum=1)
    n0 = check_int("n0", n0, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    return np.random.RandomState(seed).standard_normal((n_points, n0))


def test_loss_release(x, w1, w2, w2_teacher, w3, activation: str = "tanh") -> np.ndarray:
    """Test loss of figures 2 and 9: ``mean_alpha sum_i (y_i - yhat_i)^2`` (no 1/2).

    Parameters
    ----------
    x : (P, n0) test inputs; w1 : (..., n1, n0); w2 : (..., n2, n1) student;
    w2_teacher : (..., n2, n1); w3 : (..., n3, n2)

    Returns
    -------
    (...) float64
    """
    err = outputs(x, w1, w2, w3, activation) - outputs(x, w1, w2_teacher, w3, activation)
    return np.mean(np.sum(err * err, axis=-1), axis=-1)


def test_loss_paper(x, w1, w2, w2_teacher, w3, activation: str = "tanh") -> np.ndarray:
    """The loss (2.6) on the test set: ``mean_alpha 1/2 sum_i (y_i - yhat_i)^2``; (...)."""
    return 0.5 * test_loss_release(x, w1, w2, w2_teacher, w3, activation)


def gradient_norm(grad: np.ndarray) -> np.ndarray:
    """Frobenius norm of the gradient of ``W2``, summand of (3.3): (..., n2, n1) -> (...)."""
    g = check_array("grad", grad, min_ndim=2)
    return np.sqrt(np.sum(g * g, axis=(-2, -1)))


def feature_correlation(phi_t: np.ndarray, phi_0: np.ndarray) -> np.ndarray:
    """Per-model summand of ``G(t, t')`` (3.4): mean over points and nodes of ``phi(t) phi(t')``.

    (..., P, n2) x (..., P, n2) -> (...). Average over the ensemble axis for (3.4) itself.
    """
    return np.mean(np.asarray(phi_t) * np.asarray(phi_0), axis=(-2, -1))


def external_field(y: np.ndarray, w3: np.ndarray) -> np.ndarray:
    """External field ``h_{j alpha} = sum_i y_i(x_alpha) W3_{ij}`` (section 2.5).

    y : (..., P, n3); w3 : (..., n3, n2) -> (..., P, n2).
    """
    return np.asarray(y, float) @ np.asarray(w3, float)


def alignment(h: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Alignment summand of (3.5)-(3.6): ``h . phi / (||h|| ||phi||)`` over (points, nodes).

    (..., P, n2) x (..., P, n2) -> (...), in [-1, 1].
    """
    h = np.asarray(h, float)
    phi = np.asarray(phi, float)
    num = np.sum(h * phi, axis=(-2, -1))
    return num / (np.sqrt(np.sum(h * h, axis=(-2, -1))) * np.sqrt(np.sum(phi * phi, axis=(-2, -1))))


def alignment_release(h: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """The release's alignment: (3.5) further divided by the number of test points ``P``."""
    return alignment(h, phi) / np.shape(h)[-2]


def time_averaged_rate(x_t: np.ndarray, x_0: np.ndarray, t) -> np.ndarray:
    """Time-averaged rate (4.7), ``log(S(t) / S(0)) / t``, with ``t`` in epochs.

    x_t, x_0 : (..., n2) eigenvalues at time t and 0; t > 0 (scalar or broadcastable).
    """
    t = np.asarray(t, float)
    if np.any(~(t > 0)):
        raise InputError(f"t must be > 0 (epochs), got {t!r}")
    return np.log(mean_level_spacing(x_t) / mean_level_spacing(x_0)) / t


def ensemble_mean(values: np.ndarray, axis: int = 2) -> np.ndarray:
    """Ensemble average (3.2) over the seed axis (axis 2 of a result's (nT, nS, nR) arrays)."""
    return np.mean(values, axis=axis)


# ------------------------------------------------------------------------------------------------
# wrappers on EnsembleResult
# ------------------------------------------------------------------------------------------------


def _snap(result, snapshot: int, name: str = "snapshot") -> int:
    return check_index(name, snapshot, len(result.snapshot_epochs))


def _student(result, snapshot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The student's ``(W1, W2, W3)`` at ``snapshot``: the recorded (trained) matrices' snapshots,
    the teacher's elsewhere; for the paper's case (W2 alone trained) W1 and W3 are the
    teacher's, as before. The observables of section 3.2 are those of two hidden layers."""
    if result.config.n_layers != 3:
        raise InputError(f"the observables of section 3.2 need two hidden layers (widths of 4 "
                         f"entries), got widths {tuple(result.config.widths)}")
    return result.student(snapshot)


def result_test_inputs(result, x_test=None, *, name: str = "x_test") -> np.ndarray:
    """The test inputs of a run's observables: ``x_test`` checked (``(..., P, n0)``), default
    the release's 128 test inputs (numpy seed 42); a fixed-data task's held-out inputs, which
    ``x_test`` must then be or leave out. ``name`` is the parameter named in errors."""
    task = task_test_set(result.config)
    if task is not None:
        if x_test is not None and not np.array_equal(np.asarray(x_test), task[0]):
            raise InputError(f"{name}: a run of the {result.config.task!r} task is measured on "
                             "the task's held-out test set (its labels are the targets); pass "
                             "none")
        return task[0]
    if x_test is None:
        return test_inputs(128, result.config.widths[0], 42)
    return check_array(name, x_test, min_ndim=2, shape_tail=(None, result.config.widths[0]))


def result_test_targets(result, x: np.ndarray) -> np.ndarray:
    """The targets on the test inputs ``x`` (P, n0): the teacher's outputs (2.3) per model,
    (nT, nS, nR, P, n3), or a task's held-out labels (P, n3) (``x`` its test inputs)."""
    task = task_test_set(result.config)
    if task is not None:
        return task[1]
    return outputs(x, *result.teacher(), result.config.activation)


def result_test_loss(result, snapshot: int = -1, x_test=None, convention: str = "release"):
    """Test loss per model at ``snapshot``, (nT, nS, nR); ``convention`` 'release' or 'paper'."""
    if convention not in ("release", "paper"):
        raise InputError(f"convention must be 'release' or 'paper', got {convention!r}")
    k = _snap(result, snapshot)
    w1, w2, w3 = _student(result, k)
    x = result_test_inputs(result, x_test)
    act = result.config.activation
    # the student's W1, W3 are the teacher's unless trained: then exactly test_loss_release
    err = outputs(x, w1, w2, w3, act) - result_test_targets(result, x)
    loss = np.mean(np.sum(err * err, axis=-1), axis=-1)
    return loss if convention == "release" else 0.5 * loss


def result_gradient_norm(result, snapshot: int = -1) -> np.ndarray:
    """Norm (3.3) of the recorded gradient at ``snapshot`` (0: full-data gradient at init)."""
    return gradient_norm(result.grad[..., _snap(result, snapshot), :, :])


def result_feature_correlation(result, snapshot: int = -1, reference: int = 0, x_test=None):
    """``G(t_f, 0)`` summand (3.4) per model on the test set, (nT, nS, nR): the student's
    features (2.5) at both times (with W1 at each time if W1 trains)."""
    x = result_test_inputs(result, x_test)
    act = result.config.activation
    w1_t, w2_t, _ = _student(result, _snap(result, snapshot))
    w1_0, w2_0, _ = _student(result, _snap(result, reference, "reference"))
    return feature_correlation(features(x, w1_t, w2_t, act), features(x, w1_0, w2_0, act))


def result_alignment(result, snapshot: int = -1, x_test=None, release: bool = False):
    """Alignment (3.5) per model, or the release's variant (divided by the number of points)."""
    x = result_test_inputs(result, x_test)
    act = result.config.activation
    y = result_test_targets(result, x)  # a task's labels: h = y W3 with the held-out labels
    w1, w2, w3 = _student(result, _snap(result, snapshot))
    phi = features(x, w1, w2, act)
    fn = alignment_release if release else alignment
    return fn(external_field(y, w3), phi)  # h (2.25) with the student's readout W3


def result_eigenvalues(result) -> np.ndarray:
    """Eigenvalues of ``X`` at every snapshot, ascending: (nT, nS, nR, n_snap, n2)."""
    return eigenvalues(result.w2)


def result_rate(result, snapshot: int = -1) -> np.ndarray:
    """Time-averaged rate (4.7) per model between snapshot 0 and ``snapshot`` (epochs)."""
    k = _snap(result, snapshot)
    t = result.snapshot_epochs[k]
    if t <= 0:
        raise InputError("snapshot must be after the initial state (epoch > 0)")
    x = eigenvalues(result.w2[..., [0, k], :, :])
    return time_averaged_rate(x[..., 1, :], x[..., 0, :], t)


def release_training_loss(result, fill: float = 100.0) -> np.ndarray:
    """Recorded training loss with the release's placeholder (100) after a divergence."""
    loss = np.array(result.loss, copy=True)
    loss[np.isnan(loss) & result.diverged[..., None]] = fill
    return loss
