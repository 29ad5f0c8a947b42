"""The random draws of a replica: teacher (3.1), training inputs and the student's init noise.

Replica ``r`` owns one stream ``numpy.random.SeedSequence(seed, spawn_key=(r,))`` which draws, in
this order, ``W1`` (n1 x n0), ``W2*`` (n2 x n1), ``W3`` (n3 x n2), each ``~ N(0, 1/n_{l-1})``,
the inputs ``x`` (n_data x n0) ``~ N(0, 1)`` and the standard-normal init noise ``Z``
(n2 x n1); the student of the cell ``sigma_W`` starts at ``W2(0) = sigma_W Z / sqrt(n1)``
(2.11). With ``data_order='shuffled'`` the data order of epoch ``e`` comes from
``SeedSequence(seed, spawn_key=(r, 1, e))``. A model's draws thus depend on ``(seed, r)`` only.
"""

from __future__ import annotations

import math

import numpy as np

from dysonsgd.model.config import TeacherStudentConfig

__all__ = ["epoch_order", "epoch_permutation", "replica_draws"]


def replica_draws(config: TeacherStudentConfig, seed: int, replica: int) -> dict[str, np.ndarray]:
    """The draws of one replica (seed index): teacher, inputs and init noise, float64.

    Parameters
    ----------
    config : TeacherStudentConfig
    seed : int
        Base entropy of the ``SeedSequence``.
    replica : int
        Its spawn key (the run's ``replica_offset`` plus the seed index).

    Returns
    -------
    dict
        ``w1`` (n1, n0), ``w2_teacher`` (n2, n1), ``w3`` (n3, n2), ``x`` (n_data, n0) and ``z``
        (n2, n1), drawn in that order from ``SeedSequence(seed, spawn_key=(replica,))``; the
        student of cell ``sigma_W`` starts at ``sigma_W * z / sqrt(n1)``. With
        ``config.parametrisation == 'mean-field'``, ``w3`` is divided once more by ``sqrt(n2)``.
    """
    n0, n1, n2, n3 = config.widths
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(replica,))))
    w1 = rng.standard_normal((n1, n0)) / math.sqrt(n0)
    w2t = rng.standard_normal((n2, n1)) / math.sqrt(n1)
    w3 = rng.standard_normal((n3, n2)) / math.sqrt(n2)
    if config.parametrisation != "standard":  # the mean-field readout: N(0, 1/n2^2)
        w3 = w3 / config.output_divisor()
    x = rng.standard_normal((config.n_data, n0))
    z = rng.standard_normal((n2, n1))
    return {"w1": w1, "w2_teacher": w2t, "w3": w3, "x": x, "z": z}


def epoch_permutation(n_data: int, seed: int, replica: int, epoch: int) -> np.ndarray:
    """Data order of ``epoch`` (0-based) for ``data_order='shuffled'``: (n_data,) int64.

    Drawn from ``SeedSequence(seed, spawn_key=(replica, 1, epoch))``.
    """
    ss = np.random.SeedSequence(seed, spawn_key=(replica, 1, epoch))
    return np.random.Generator(np.random.PCG64(ss)).permutation(n_data)


def epoch_order(data_order: str, n_data: int, seed: int, replica: int, epoch: int) -> np.ndarray:
    """The data visited in ``epoch`` (0-based), in order, (n_data,) int64.

    ``'shuffled'``: :func:`epoch_permutation`; ``'replacement'``: n_data indices drawn
    uniformly with replacement from the same stream, so that consecutive batches are i.i.d.
    ``'fixed'`` has no per-epoch order (0, 1, ..., n_data - 1 every epoch).
    """
    if data_order == "shuffled":
        return epoch_permutation(n_data, seed, replica, epoch)
    if data_order == "replacement":
        ss = np.random.SeedSequence(seed, spawn_key=(replica, 1, epoch))
        return np.random.Generator(np.random.PCG64(ss)).integers(0, n_data, n_data)
    return np.arange(n_data, dtype=np.int64)
