"""Architecture and training protocol of the teacher-student model (section 3.1)."""

from __future__ import annotations

from dataclasses import dataclass

from dysonsgd._checks import InputError, check_int
from dysonsgd.model.activations import ACTIVATIONS, lookup

__all__ = ["ACTIVATIONS", "DATA_ORDERS", "TeacherStudentConfig"]

#: how the training data are visited each epoch
DATA_ORDERS = ("fixed", "shuffled", "replacement")


@dataclass(frozen=True)
class TeacherStudentConfig:
    """Architecture and training protocol of one teacher-student model (section 3.1).

    Parameters
    ----------
    widths : tuple of 4 ints
        ``(n0, n1, n2, n3)``: inputs, the two hidden layers, outputs. Default ``(3, 32, 16, 1)``.
    activation : str
        ``phi`` on both hidden layers, one of :data:`~dysonsgd.model.activations.ACTIVATIONS`
        (the release's three choices, 'tanh', 'relu', 'identity', and 'gelu'). Default ``'tanh'``.
    trained_layers : tuple of int
        Which weight matrices train. Only ``(2,)`` (the middle matrix ``W2``, as in the paper) is
        implemented; anything else raises ``InputError``.
    n_data : int
        Training inputs per model (4000).
    batch_size : int
        ``|B|`` (4); must divide ``n_data``. Temperature ``T = lr / |B|``.
    data_order : {'fixed', 'shuffled', 'replacement'}
        ``'fixed'``: the same consecutive batches every epoch (the release); ``'shuffled'``: a
        new permutation of the data each epoch (both visit every point once per epoch: sampling
        without replacement, whose noise sums to zero over an epoch at fixed W);
        ``'replacement'``: every batch drawn uniformly with replacement (i.i.d. batches, the
        white noise the SDEs (2.30), (4.3) assume).
    divergence_threshold : float
        A model stops when a batch loss (batch mean of (2.6)) exceeds this (100, the release), or
        is NaN. ``math.inf`` disables the rule (NaN still stops a model).
    """

    widths: tuple[int, int, int, int] = (3, 32, 16, 1)
    activation: str = "tanh"
    trained_layers: tuple[int, ...] = (2,)
    n_data: int = 4000
    batch_size: int = 4
    data_order: str = "fixed"
    divergence_threshold: float = 100.0

    def __post_init__(self) -> None:
        widths = tuple(self.widths)
        if len(widths) != 4:
            raise InputError(f"widths must be 4 layer sizes (n0, n1, n2, n3), got {self.widths!r}")
        for k, w in enumerate(widths):
            check_int(f"widths[{k}]", w, minimum=1)
        object.__setattr__(self, "widths", tuple(int(w) for w in widths))
        lookup(self.activation)
        layers = tuple(self.trained_layers)
        if layers != (2,):
            raise InputError(
                f"trained_layers: only (2,) (the middle matrix W2, as in the paper) is "
                f"implemented, got {self.trained_layers!r}"
            )
        object.__setattr__(self, "trained_layers", layers)
        check_int("n_data", self.n_data, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        if self.n_data % self.batch_size:
            raise InputError(
                f"batch_size must divide n_data, got batch_size={self.batch_size}, "
                f"n_data={self.n_data}"
            )
        if self.data_order not in DATA_ORDERS:
            raise InputError(f"data_order must be one of {DATA_ORDERS}, got {self.data_order!r}")
        thr = self.divergence_threshold
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not thr > 0:
            raise InputError(f"divergence_threshold must be > 0 (inf allowed), got {thr!r}")
        object.__setattr__(self, "divergence_threshold", float(thr))

    @property
    def steps_per_epoch(self) -> int:
        """SGD steps per epoch, ``n_data / batch_size`` (1000 in the paper)."""
        return self.n_data // self.batch_size
