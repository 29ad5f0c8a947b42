"""What the driver hands to a training backend, and what a backend hands back.

:func:`dysonsgd.train.ensemble.train_ensemble` resolves its arguments into one
:class:`TrainPlan` (models flattened to ``M = nT * nS * nR``, teachers and data per group) and
passes it to a backend (:mod:`dysonsgd.train._torch` or :mod:`dysonsgd.train._numba.engine`),
which returns an :class:`EngineOutput`. Both backends import from here; the driver imports the
backends; nothing here imports either.

Each SGD step (2.28) of model ``m`` is ``W2 <- W2 - T_m sum_{a in B} dl(x_a)/dW2`` with
``T_m = lr_m / |B|`` the model's temperature: the plan carries ``T`` and the backends use it as
the step coefficient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dysonsgd.model.config import TeacherStudentConfig

if TYPE_CHECKING:
    import torch

__all__ = [
    "EVAL_ROWS",
    "FEATURE_SLICE",
    "TORCH_CHUNK_BUDGET",
    "EngineOutput",
    "InitRows",
    "TrainPlan",
    "allocate_outputs",
    "lanes_for",
    "progress_bar",
]

#: bytes of one SIMD vector of the numba backend: its blocks hold this many bytes of one value
#: per model (16 float32 or 8 float64 models)
VECTOR_BYTES = 64


def lanes_for(dtype) -> int:
    """Number of models per SIMD block of the numba backend: one 64-byte vector (16 float32 or
    8 float64 models); sweeps pack cells to fill whole blocks."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


#: the torch backend holds at most this many bytes of per-model layer-1 features and targets at
#: once; bigger runs train in sequential chunks of models
TORCH_CHUNK_BUDGET = 2e9

#: models per slice of the torch backend's float64 layer-1 products; below this many models per
#: chunk it also runs single-threaded on CPU (an OpenMP team only adds barrier latency)
FEATURE_SLICE = 64

#: data rows per chunk of the initial full-data evaluation (snapshot 0) in the torch backend
EVAL_ROWS = 4096


class InitRows:
    """``W2(0)`` of model ``m`` is ``scale[m] * base[rows[m]]``, built on demand by slices.

    A 14,400-model grid would otherwise hold several 60 MB temporaries.

    Parameters
    ----------
    base : (K, n2, n1) float64
        Init noise per replica, or ``W2(0)`` per model.
    rows : (M,) int
        Row of ``base`` of each model.
    scale : (M,) float64
        ``sigma_W / sqrt(n1)`` per model (ones for a given ``W2(0)``).
    """

    def __init__(self, base: np.ndarray, rows: np.ndarray, scale: np.ndarray) -> None:
        self.base, self.rows, self.scale = base, rows, scale
        self.shape = (len(rows), *base.shape[1:])

    def __getitem__(self, sl) -> np.ndarray:
        return self.scale[sl, None, None] * self.base[self.rows[sl]]


@dataclass(frozen=True)
class TrainPlan:
    """One training run, models flattened: everything a backend needs.

    Attributes
    ----------
    config : TeacherStudentConfig
    x : (G, n_data, n0) float64, training inputs per group
    w1 : (G, n1, n0) float64, teacher's first layer per group (shared by the student)
    w3 : (G, n3, n2) float64, teacher's last layer per group (shared by the student)
    y : (G, n_data, n3) float64, the teacher's targets (2.3) per group
    group : (M,) int64, group (teacher and data) of each model
    w2_init : InitRows of shape (M, n2, n1), the students' ``W2(0)``
    temperature : (M,) float64, ``T`` per model: the step coefficient
    epochs : int
    snapshots : (n_snap,) int64, epoch counts of the snapshots, starting at 0
    orders : callable ``(epoch, groups) -> (len(groups), n_data) int64``, or None
        The data order of an epoch for the given groups (``data_order='shuffled'``); None: the
        fixed order.
    device : torch.device
    dtype : {'float32', 'float64'}, the working precision
    progress : bool, show a progress bar
    """

    config: TeacherStudentConfig
    x: np.ndarray
    w1: np.ndarray
    w3: np.ndarray
    y: np.ndarray
    group: np.ndarray
    w2_init: InitRows
    temperature: np.ndarray
    epochs: int
    snapshots: np.ndarray
    orders: Callable[[int, np.ndarray], np.ndarray] | None
    device: torch.device
    dtype: str
    progress: bool

    @property
    def n_models(self) -> int:
        """``M``, the number of models."""
        return self.w2_init.shape[0]

    @property
    def np_dtype(self) -> type[np.floating]:
        """The working precision as a numpy scalar type."""
        return np.float32 if self.dtype == "float32" else np.float64

    def record_index(self) -> np.ndarray:
        """Per epoch (0-based): the snapshot recorded at its end, or -1; (epochs,) int64."""
        rec = np.full(self.epochs, -1, np.int64)
        for k in range(1, len(self.snapshots)):
            rec[self.snapshots[k] - 1] = k
        return rec


@dataclass
class EngineOutput:
    """Per-model results of a backend, models in the plan's order.

    Attributes
    ----------
    w2, grad : (M, n_snap, n2, n1) working precision, ``W2`` and the epoch-mean minibatch
        gradient at each snapshot (snapshot 0: the full-data gradient at initialisation)
    loss : (M, n_snap) float64, epoch-mean training loss (snapshot 0: full-data loss)
    div_epoch, div_step : (M,) int64, epoch and step of the divergence, -1 for none
    end_grad : (M, n2, n1), the (batch-mean) gradient of the batch that diverged
    timings : seconds spent per phase
    """

    w2: np.ndarray
    grad: np.ndarray
    loss: np.ndarray
    div_epoch: np.ndarray
    div_step: np.ndarray
    end_grad: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


def allocate_outputs(plan: TrainPlan) -> EngineOutput:
    """Uninitialised outputs of a backend for ``plan`` (divergence epoch and step: -1)."""
    m, n_snap = plan.n_models, len(plan.snapshots)
    _, n1, n2, _ = plan.config.widths
    npdt = plan.np_dtype
    return EngineOutput(
        w2=np.empty((m, n_snap, n2, n1), npdt),
        grad=np.empty((m, n_snap, n2, n1), npdt),
        loss=np.empty((m, n_snap)),
        div_epoch=np.full(m, -1, np.int64),
        div_step=np.full(m, -1, np.int64),
        end_grad=np.zeros((m, n2, n1), npdt),
    )


def progress_bar(plan: TrainPlan) -> Any:
    """A tqdm bar over the plan's model-steps (disabled unless ``plan.progress``)."""
    from tqdm.auto import tqdm

    m = plan.n_models
    total = m * plan.epochs * plan.config.steps_per_epoch
    return tqdm(total=total, disable=not plan.progress, unit="model-step", unit_scale=True,
                desc=f"{m} models", smoothing=0.1, dynamic_ncols=True)
