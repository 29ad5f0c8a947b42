"""Architecture and training protocol of the teacher-student model (section 3.1).

The paper's network has two hidden layers, ``widths = (n0, n1, n2, n3)``, and trains the middle
matrix ``W2`` only. A config may also name any number of hidden layers (``widths = (n0, n_1,
..., n_{L-1}, n_L)``: ``L`` weight matrices ``W1 .. WL``, ``Wl`` of shape ``(n_l, n_{l-1})``),
any non-empty set of trained matrices, and how each student matrix starts
(``sigma_w_layers``, (2.11) per layer):

- ``"grid"``: ``Wl(0) = sigma_W Z_l / sqrt(n_{l-1})`` with the grid's ``sigma_W`` (the paper's
  init of ``W2``; entry 2 is always ``"grid"``, so the ``sigma_w`` axis keeps its meaning);
- ``"teacher"``: ``Wl(0)`` is the teacher's ``Wl`` (the paper's student shares ``W1`` and
  ``W3`` with its teacher, section 3.1);
- a number ``s > 0``: ``Wl(0) = s Z_l / sqrt(n_{l-1})``, the same ``s`` in every cell.

The default, ``None``, is the paper's: ``"grid"`` for ``W2``, ``"teacher"`` for every other
matrix, whether it trains or not. The noise ``Z_l`` comes from the replica's stream
(:func:`dysonsgd.model.layers.replica_layer_draws`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from dysonsgd._checks import InputError, check_int
from dysonsgd.model.activations import ACTIVATIONS, lookup
from dysonsgd.model.tasks import TASKS, _check_task_config

__all__ = ["ACTIVATIONS", "DATA_ORDERS", "INIT_RULES", "PARAMETRISATIONS", "TASKS",
           "TeacherStudentConfig"]

#: how the training data are visited each epoch
DATA_ORDERS = ("fixed", "shuffled", "replacement")

#: how the output matrix scales with width (:class:`TeacherStudentConfig`)
PARAMETRISATIONS = ("standard", "mean-field")

#: the named entries of ``sigma_w_layers`` (besides a number > 0)
INIT_RULES = ("grid", "teacher")

#: the matrix whose init scale is the grid's sigma_W axis (2.11)
GRID_LAYER = 2


@dataclass(frozen=True)
class TeacherStudentConfig:
    """Architecture and training protocol of one teacher-student model (section 3.1).

    Parameters
    ----------
    widths : tuple of at least 3 ints
        ``(n0, n_1, ..., n_L)``: inputs, the hidden layers, outputs; ``L = len(widths) - 1``
        weight matrices. Default ``(3, 32, 16, 1)`` (the paper's two hidden layers).
    activation : str
        ``phi`` on every hidden layer, one of :data:`~dysonsgd.model.activations.ACTIVATIONS`
        (the release's three choices, 'tanh', 'relu', 'identity', and 'gelu'). Default ``'tanh'``.
    trained_layers : tuple of int, or 'all'
        Which weight matrices train (1-based, ``1 .. L``), a non-empty set; ``'all'`` is every
        one. Kept sorted. Default ``(2,)``: the middle matrix ``W2``, as in the paper.
    sigma_w_layers : tuple, optional
        One entry per weight matrix: ``'grid'``, ``'teacher'`` or a number > 0 (see the module
        docstring); entry 2 must be ``'grid'``. ``None`` (default): the paper's init.
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
    task : {'teacher', 'digits'}
        Where the data come from (:mod:`dysonsgd.model.tasks`): ``'teacher'`` (default) the
        paper's teacher per replica; ``'digits'`` the standardised scikit-learn digits with
        one-hot labels, the same for every model (needs ``widths = (64, ..., 10)`` and
        ``n_data <= 1500``).
    parametrisation : {'standard', 'mean-field'}
        ``'standard'`` (default, the paper): every matrix ``N(0, 1/fan_in)``. ``'mean-field'``:
        the 1/n readout of the mean-field limit (muP's scaling of the output matrix for SGD):
        the replica's output matrix ``W_L`` (teacher and student) is the standard draw divided
        once more by ``sqrt(n_{L-1})``, ``W_L ~ N(0, 1/n_{L-1}^2)``; every other draw and
        ``lr = T |B|`` unchanged (docs/beyond.md, "Width scaling": SGD at ``T`` in it is the
        standard parametrisation's at ``T / n_{L-1}``, losses divided by ``n_{L-1}``).
    """

    widths: tuple[int, ...] = (3, 32, 16, 1)
    activation: str = "tanh"
    trained_layers: tuple[int, ...] = (2,)
    n_data: int = 4000
    batch_size: int = 4
    data_order: str = "fixed"
    divergence_threshold: float = 100.0
    sigma_w_layers: tuple[float | str, ...] | None = None
    task: str = "teacher"
    parametrisation: str = "standard"

    def __post_init__(self) -> None:
        try:
            widths = tuple(self.widths)
        except TypeError:
            widths = ()
        if len(widths) < 3:
            raise InputError(f"widths must be at least 3 layer sizes (n0, hidden..., n_out), got "
                             f"{self.widths!r}")
        for k, w in enumerate(widths):
            check_int(f"widths[{k}]", w, minimum=1)
        object.__setattr__(self, "widths", tuple(int(w) for w in widths))
        lookup(self.activation)
        object.__setattr__(self, "trained_layers", _trained(self.trained_layers, self.n_layers))
        object.__setattr__(self, "sigma_w_layers", _inits(self.sigma_w_layers, self.n_layers))
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
        if self.task not in TASKS:
            raise InputError(f"task must be one of {TASKS}, got {self.task!r}")
        _check_task_config(self)
        if self.parametrisation not in PARAMETRISATIONS:
            raise InputError(f"parametrisation must be one of {PARAMETRISATIONS}, got "
                             f"{self.parametrisation!r}")

    def output_divisor(self) -> float:
        """The output matrix's draw is divided by this once more: 1 (standard),
        ``sqrt(n_{L-1})`` (mean-field)."""
        return 1.0 if self.parametrisation == "standard" else math.sqrt(self.widths[-2])

    @property
    def steps_per_epoch(self) -> int:
        """SGD steps per epoch, ``n_data / batch_size`` (1000 in the paper)."""
        return self.n_data // self.batch_size

    @property
    def n_layers(self) -> int:
        """``L``, the number of weight matrices (3 in the paper)."""
        return len(self.widths) - 1

    @property
    def depth(self) -> int:
        """Hidden layers, ``L - 1`` (2 in the paper)."""
        return len(self.widths) - 2

    def layer_shape(self, layer: int) -> tuple[int, int]:
        """``(n_l, n_{l-1})``, the shape of ``W_layer`` (1-based)."""
        return self.widths[layer], self.widths[layer - 1]

    def init_rule(self, layer: int) -> float | str:
        """How the student's ``W_layer`` starts: ``'grid'``, ``'teacher'`` or a fixed
        ``sigma`` (see the module docstring)."""
        if self.sigma_w_layers is not None:
            return self.sigma_w_layers[layer - 1]
        return "grid" if layer == GRID_LAYER else "teacher"

    @property
    def recorded_layers(self) -> tuple[int, ...]:
        """The matrices whose snapshots a run holds: the trained ones, ``W2`` (always, the
        paper's observables read it) and any whose init is not the teacher's."""
        return tuple(sorted({*self.trained_layers, GRID_LAYER}
                            | {k for k in range(1, self.n_layers + 1)
                               if self.init_rule(k) != "teacher"}))

    @property
    def is_paper_case(self) -> bool:
        """Two hidden layers, ``W2`` alone trained, the other matrices the teacher's: the
        set-up of section 3.1 that the fused W2 kernels train."""
        return (self.n_layers == 3 and self.trained_layers == (GRID_LAYER,)
                and all(self.init_rule(k) == "teacher" for k in (1, 3)))


def _trained(value, n_layers: int) -> tuple[int, ...]:
    """``trained_layers`` checked and sorted: a non-empty set of integers in 1..L, or 'all'."""
    allowed = f"a non-empty set of integers in 1..{n_layers} (the weight matrices), or 'all'"
    if isinstance(value, str):
        if value != "all":
            raise InputError(f"trained_layers must be {allowed}, got {value!r}")
        return tuple(range(1, n_layers + 1))
    try:
        layers = tuple(value)
    except TypeError:
        raise InputError(f"trained_layers must be {allowed}, got {value!r}") from None
    if not layers:
        raise InputError(f"trained_layers must be {allowed}, got {value!r}")
    for k in layers:
        integral = isinstance(k, numbers.Integral) and not isinstance(k, bool)
        if not integral or not 1 <= int(k) <= n_layers:
            raise InputError(f"trained_layers: layer {k!r} does not exist; must be {allowed}")
    if len(set(int(k) for k in layers)) != len(layers):
        raise InputError(f"trained_layers: duplicate layer in {value!r}")
    return tuple(sorted(int(k) for k in layers))


def _inits(value, n_layers: int) -> tuple[float | str, ...] | None:
    """``sigma_w_layers`` checked: None, or L entries 'grid' / 'teacher' / a number > 0, entry 2
    'grid'. Numbers become floats."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    try:
        entries = tuple(value)
    except TypeError:
        entries = (value,)
    if len(entries) != n_layers:
        raise InputError(f"sigma_w_layers must have one entry per weight matrix ({n_layers} for "
                         f"these widths), got {len(entries)}: {value!r}")
    out: list[float | str] = []
    for k, v in enumerate(entries, start=1):
        if isinstance(v, str):
            if v not in INIT_RULES:
                raise InputError(f"sigma_w_layers[{k - 1}] (W{k}) must be one of {INIT_RULES} "
                                 f"or a number > 0, got {v!r}")
            out.append(v)
        elif isinstance(v, bool) or not isinstance(v, numbers.Real) \
                or not math.isfinite(v) or v <= 0:
            raise InputError(f"sigma_w_layers[{k - 1}] (W{k}) must be one of {INIT_RULES} or a "
                             f"finite number > 0, got {v!r}")
        else:
            out.append(float(v))
    if out[GRID_LAYER - 1] != "grid":
        raise InputError(f"sigma_w_layers[{GRID_LAYER - 1}] (W{GRID_LAYER}) must be 'grid': the "
                         f"grid's sigma_w axis is the init scale of W{GRID_LAYER} (2.11), got "
                         f"{out[GRID_LAYER - 1]!r}")
    return tuple(out)
