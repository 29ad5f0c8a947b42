"""Training teacher-student ensembles by SGD (section 3.1), batched over the whole grid.

:func:`train_ensemble` (the driver, :mod:`dysonsgd.train.ensemble`) resolves its arguments into
a :class:`~dysonsgd.train.plan.TrainPlan` and runs one of two backends, the fused numba SIMD
kernels (:mod:`dysonsgd.train._numba`) or batched torch products (:mod:`dysonsgd.train._torch`);
the result is an :class:`EnsembleResult` (:mod:`dysonsgd.train.result`). The network itself,
its activations and random draws are in :mod:`dysonsgd.model`.
"""

from dysonsgd.train.ensemble import release_snapshot_epochs, snapshot_epochs, train_ensemble
from dysonsgd.train.result import EnsembleResult

__all__ = ["EnsembleResult", "release_snapshot_epochs", "snapshot_epochs", "train_ensemble"]
