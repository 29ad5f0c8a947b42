"""Fixed-data tasks: the student learns labels instead of a teacher (issue 16, "Real data").

The paper's set-up (section 3.1) draws a teacher per replica and trains on its outputs. A *task*
other than ``'teacher'`` fixes the data instead: the same inputs and targets for every model of
the run, the rest of the machinery (the grid, the seeds design, the backends, the W2-only and the
general all-layer path) unchanged. One task ships:

``'digits'``
    The handwritten digits of scikit-learn (``sklearn.datasets.load_digits``: 1797 images of
    8 x 8 pixels with values 0..16, ten classes, bundled with the package, nothing is
    downloaded). The images are put in a fixed random order (``numpy.random.default_rng(0)``);
    the first :data:`DIGITS_TEST` = 297 are the held-out test set, the next ``n_data`` (at most
    :data:`DIGITS_TRAIN_MAX` = 1500) the training set. Inputs are the 64 pixels standardised per
    feature over the training set, as (2.15) assumes: ``x_i <- (x_i - mean_i) / std_i``, so each
    pixel has mean 0 and variance 1 over the training set (population variance, ``ddof=0``); the
    test set is transformed with the training statistics. A pixel constant over the training set
    (``std_i = 0``; three pixels of the digits are 0 in every image) carries no information and
    is set to 0 in both sets (divided by 1 after centring), so (2.15) holds for the other
    ``n_var`` pixels and ``E[x_i x_i] = 0`` for the constant ones: the first-layer pre-activation
    variance (2.16) is ``sigma_W^2 n_var / n0`` (61/64 at 1500 points) instead of ``sigma_W^2``.
    Targets are the one-hot vectors of the ten labels, ``y_i = 1`` for the label ``i``, 0
    otherwise, and the loss is the MSE (2.6) on them, ``1/2 sum_i (y_i - yhat_i)^2``. Widths are
    therefore ``(64, n_1, ..., 10)``.

Without a teacher the "teacher" draws of a replica (:func:`dysonsgd.model.draws.replica_draws`,
the stream kept as it is) are what the student's untrained matrices start from: ``W1 ~ N(0,
1/n0)`` and ``W3 ~ N(0, 1/n2)``, frozen random features and readout on the W2-only path, the
starting points of the all-layer path; the drawn ``W2*`` and inputs are not used.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dysonsgd._checks import InputError

__all__ = ["DIGITS_CLASSES", "DIGITS_PIXELS", "DIGITS_TEST", "DIGITS_TRAIN_MAX", "TASKS",
           "check_data", "digits", "one_hot", "standardise", "task_data", "task_test_set"]

#: the tasks of ``TeacherStudentConfig.task``
TASKS = ("teacher", "digits")

#: held-out test images of the digits task (the first of the fixed order)
DIGITS_TEST = 297
#: training images available (1797 - 297)
DIGITS_TRAIN_MAX = 1500
#: input width n0 and output width n_L of the digits task
DIGITS_PIXELS = 64
DIGITS_CLASSES = 10
#: the seed of the fixed order of the images
DIGITS_ORDER_SEED = 0


def standardise(x_train: np.ndarray, x_test: np.ndarray | None = None):
    """Per-feature standardisation (2.15) with the training statistics.

    Parameters
    ----------
    x_train : (P, n0) array
    x_test : (Q, n0) array, optional

    Returns
    -------
    (P, n0) float64, and (Q, n0) float64 if ``x_test`` is given
        ``(x - mean) / std`` with the training set's mean and population std per feature; a
        feature constant on the training set (std 0) becomes 0 in both.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    scale = np.where(std > 0, std, 1.0)

    def apply(a: np.ndarray) -> np.ndarray:
        out = (np.asarray(a, dtype=np.float64) - mean) / scale
        out[:, std == 0] = 0.0
        return out

    return apply(x_train) if x_test is None else (apply(x_train), apply(x_test))


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """One-hot targets of (2.6): (P,) integer labels in 0..n_classes-1 -> (P, n_classes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) \
            or (labels.size and (labels.min() < 0 or labels.max() >= n_classes)):
        raise InputError(f"labels must be a 1-d array of integers in 0..{n_classes - 1}")
    out = np.zeros((labels.size, n_classes))
    out[np.arange(labels.size), labels] = 1.0
    return out


@lru_cache(maxsize=8)
def _digits(n_data: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(DIGITS_ORDER_SEED).permutation(len(data.target))
    x, labels = data.data[order], data.target[order].astype(np.int64)
    test, train = slice(0, DIGITS_TEST), slice(DIGITS_TEST, DIGITS_TEST + n_data)
    x_train, x_test = standardise(x[train], x[test])
    out = (x_train, one_hot(labels[train], DIGITS_CLASSES), x_test,
           one_hot(labels[test], DIGITS_CLASSES))
    for a in out:
        a.setflags(write=False)
    return out


def digits(n_data: int = DIGITS_TRAIN_MAX):
    """The digits task: standardised pixels and one-hot labels (see the module docstring).

    Parameters
    ----------
    n_data : int
        Training images, 1 .. :data:`DIGITS_TRAIN_MAX`.

    Returns
    -------
    x_train (n_data, 64), y_train (n_data, 10), x_test (297, 64), y_test (297, 10)
        float64, read-only.
    """
    if isinstance(n_data, bool) or not isinstance(n_data, (int, np.integer)) \
            or not 1 <= n_data <= DIGITS_TRAIN_MAX:
        raise InputError(f"n_data: the digits task has 1..{DIGITS_TRAIN_MAX} training images "
                         f"(the other {DIGITS_TEST} are its test set), got {n_data!r}")
    return _digits(int(n_data))


def _check_task_config(config) -> None:
    """The widths and n_data a task needs (called by ``TeacherStudentConfig``)."""
    if config.task == "digits":
        if config.widths[0] != DIGITS_PIXELS or config.widths[-1] != DIGITS_CLASSES:
            raise InputError(f"widths: the digits task needs n0 = {DIGITS_PIXELS} inputs and "
                             f"n_out = {DIGITS_CLASSES} outputs, got {config.widths}")
        if config.n_data > DIGITS_TRAIN_MAX:
            raise InputError(f"n_data: the digits task has at most {DIGITS_TRAIN_MAX} training "
                             f"images, got {config.n_data}")


def task_data(config) -> tuple[np.ndarray, np.ndarray] | None:
    """The training ``(x, y)`` of ``config.task``, (n_data, n0) and (n_data, n_L); None for the
    teacher (its data are drawn per replica)."""
    if config.task == "teacher":
        return None
    x, y, _, _ = digits(config.n_data)
    return x, y


def task_test_set(config) -> tuple[np.ndarray, np.ndarray] | None:
    """The held-out ``(x_test, y_test)`` of ``config.task``; None for the teacher."""
    if config.task == "teacher":
        return None
    _, _, x, y = digits(config.n_data)
    return x, y


def check_data(data, n_data: int, n0: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``train_ensemble``'s ``data=(x, y)`` checked: finite, ``x`` (n_data, n0), ``y``
    (n_data, n_out); returned as float64 arrays.

    Raises
    ------
    InputError
        Naming ``data``, ``data[0]`` (x) or ``data[1]`` (y) and what is wrong.
    """
    try:
        x, y = data
    except (TypeError, ValueError):
        raise InputError("data must be a pair (x, y) of arrays (n_data, n0), (n_data, n_out)"
                         ) from None
    out = []
    for k, (a, tail) in enumerate(((x, (n_data, n0)), (y, (n_data, n_out)))):
        try:
            arr = np.asarray(a, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"data[{k}] must be a numeric array of shape {tail}") from None
        if arr.shape != tail:
            raise InputError(f"data[{k}] ({'xy'[k]}) must have shape {tail} (n_data, "
                             f"{'n0' if k == 0 else 'n_out'}) for this config, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise InputError(f"data[{k}] ({'xy'[k]}) must be finite")
        out.append(arr)
    return out[0], out[1]
