"""Teacher-student ensembles trained by SGD, batched over the whole hyperparameter grid.

The set-up is the paper's (section 3.1) and its released training script's (see
``reference-notes.md``): a network ``n0 -> n1 -> n2 -> n3`` without biases, activation ``phi`` on
both hidden layers and a linear output,

    yhat(x) = W3 phi(W2 phi(W1 x)),                                        (2.2)-(2.3)

a teacher with ``W1, W2*, W3 ~ N(0, 1/n_{l-1})`` (3.1), a student sharing the teacher's ``W1`` and
``W3`` whose middle matrix starts at ``W2(0) ~ N(0, sigma_W^2 / n1)`` (2.11) and is the only one
trained, by plain SGD (2.28) on the per-sample loss ``l = 1/2 sum_i (y_i - yhat_i)^2`` (2.6)::

    W2 <- W2 - lr * (1/|B|) sum_{a in B} dl(x_a)/dW2,   lr = T |B|.

Data order, divergence rule and snapshots follow the release: ``n_data`` inputs per model, fixed
for the run, visited in consecutive batches in the same order every epoch (``data_order='fixed'``;
``'shuffled'`` draws a fresh permutation per epoch instead); a model whose batch loss exceeds
``divergence_threshold`` stops, and its later snapshots repeat the last ``W2`` and the gradient of
that batch; snapshots hold ``W2``, the epoch-mean minibatch gradient and the epoch-mean training
loss, snapshot 0 being the initial state with the full-data gradient and loss.

Random numbers and reproducibility
----------------------------------
Replica ``r`` (the seed index) owns one stream ``numpy.random.SeedSequence(seed,
spawn_key=(replica_offset + r,))`` which draws, in this order, ``W1`` (n1 x n0), ``W2*`` (n2 x n1),
``W3`` (n3 x n2), the inputs ``x`` (n_data x n0) and the standard-normal init noise ``Z``
(n2 x n1); the student starts at ``W2(0) = sigma_W Z / sqrt(n1)``. Every grid cell therefore sees
the same teachers, data and init noise (common random numbers, as the release's per-seed jobs):
differences between cells reflect the hyperparameters, not the draws. With
``data_order='shuffled'`` the permutation of epoch ``e`` comes from
``SeedSequence(seed, spawn_key=(replica_offset + r, 1, e))``. A model's numbers thus depend only on
``(seed, its grid coordinates, seed index)``: not on how the grid is split into blocks, the order
of cells, the thread count or the backend beyond rounding. The result stores the entropy and
spawn keys, so :func:`replica_draws` replays any single model.

Backends
--------
``'numba'`` (CPU default) runs the fused kernels of :mod:`dysonsgd.train._numba.kernels`: SIMD
lanes are models, each block's ``W2`` stays in L1 over many epochs; float32 uses a rational ``tanh``
accurate to 4e-7, float64 is exact. ``'torch'`` is a plain batched ``torch.bmm`` loop on any
device (CUDA included) with exact activations. Both implement the same algorithm and agree to
rounding (tests check it).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from dysonsgd._checks import InputError, check_int, check_positive

__all__ = [
    "EnsembleResult",
    "TeacherStudentConfig",
    "activation_fn",
    "per_sample_gradients",
    "release_snapshot_epochs",
    "replica_draws",
    "snapshot_epochs",
    "teacher_forward",
    "train_ensemble",
]

ACTIVATIONS = ("tanh", "relu", "identity")
DATA_ORDERS = ("fixed", "shuffled")
BACKENDS = ("auto", "numba", "torch")


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherStudentConfig:
    """Architecture and training protocol of one teacher-student model (section 3.1).

    Parameters
    ----------
    widths : tuple of 4 ints
        ``(n0, n1, n2, n3)``: inputs, the two hidden layers, outputs. Default ``(3, 32, 16, 1)``.
    activation : {'tanh', 'relu', 'identity'}
        ``phi`` on both hidden layers (the release's three choices). Default ``'tanh'``.
    trained_layers : tuple of int
        Which weight matrices train. Only ``(2,)`` (the middle matrix ``W2``, as in the paper) is
        implemented; anything else raises ``ValueError``.
    n_data : int
        Training inputs per model (4000).
    batch_size : int
        ``|B|`` (4); must divide ``n_data``. Temperature ``T = lr / |B|``.
    data_order : {'fixed', 'shuffled'}
        ``'fixed'``: the same consecutive batches every epoch (the release); ``'shuffled'``: a
        new permutation of the data each epoch.
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
        if self.activation not in ACTIVATIONS:
            raise InputError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
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


# ------------------------------------------------------------------------------------------------
# the network, gradients, draws
# ------------------------------------------------------------------------------------------------


def activation_fn(name: str, z):
    """``(phi(z), phi'(z))`` for a numpy array or torch tensor ``z``."""
    if name == "tanh":
        h = np.tanh(z) if isinstance(z, np.ndarray) else torch.tanh(z)
        return h, 1.0 - h * h
    if name == "relu":
        pos = z > 0
        return z * pos, pos * 1.0
    if name == "identity":
        return z, z * 0.0 + 1.0
    raise InputError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def teacher_forward(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, w3: np.ndarray,
                    activation: str = "tanh") -> np.ndarray:
    """Network output (2.3), ``W3 phi(W2 phi(W1 x))``, batched over leading axes, float64.

    Parameters
    ----------
    x : (..., n_points, n0) array
    w1 : (..., n1, n0) array
    w2 : (..., n2, n1) array
    w3 : (..., n3, n2) array
    activation : str

    Returns
    -------
    (..., n_points, n3) array
    """
    x, w1, w2, w3 = (np.asarray(a, dtype=np.float64) for a in (x, w1, w2, w3))
    lead = np.broadcast_shapes(x.shape[:-2], w1.shape[:-2], w2.shape[:-2], w3.shape[:-2])
    x, w1, w2, w3 = (np.broadcast_to(a, lead + a.shape[-2:]).reshape(-1, *a.shape[-2:])
                     for a in (x, w1, w2, w3))
    out = np.empty((x.shape[0], x.shape[1], w3.shape[1]))
    # torch's vectorised float64 tanh (same values as numpy's to an ulp, many times faster), in
    # chunks so that the temporaries are recycled rather than freshly paged in
    step = max(1, 2**21 // max(1, x.shape[1] * w1.shape[1]))
    for a in range(0, x.shape[0], step):
        t = [torch.from_numpy(np.array(v[a:a + step])) for v in (x, w1, w2, w3)]
        h = _act_inplace(activation, t[0] @ t[1].transpose(-1, -2))
        h = _act_inplace(activation, h @ t[2].transpose(-1, -2))
        out[a:a + step] = (h @ t[3].transpose(-1, -2)).numpy()
    return out.reshape(*lead, *out.shape[1:])


def _act_inplace(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return z.tanh_()
    if name == "relu":
        return z.relu_()
    return z


def per_sample_gradients(x, y, w1, w2, w3, activation: str = "tanh"):
    """Per-sample gradient ``dl(x_a)/dW2`` of ``l = 1/2 sum_i (y_i - yhat_i)^2`` (2.6), (2.28).

    ``dl/dW2[i, j] = sum_k (yhat_k - y_k) W3[k, i] phi'(z2_i) phi(z1_j)``.

    Parameters
    ----------
    x : (..., n_points, n0); y : (..., n_points, n3)
    w1 : (..., n1, n0); w2 : (..., n2, n1); w3 : (..., n3, n2)
        numpy arrays or torch tensors (all of one kind).

    Returns
    -------
    grads : (..., n_points, n2, n1)
    loss : (..., n_points)
        the per-sample loss ``l``.
    """
    t = (lambda a: a.transpose(-1, -2)) if isinstance(x, torch.Tensor) else (
        lambda a: np.swapaxes(a, -1, -2))
    phi1, _ = activation_fn(activation, x @ t(w1))
    h2, dact = activation_fn(activation, phi1 @ t(w2))
    err = h2 @ t(w3) - y
    delta = (err @ w3) * dact
    grads = delta[..., :, None] * phi1[..., None, :]
    return grads, 0.5 * (err**2).sum(-1)


def replica_draws(config: TeacherStudentConfig, seed: int, replica: int) -> dict[str, np.ndarray]:
    """The draws of one replica (seed index): teacher, inputs and init noise, float64.

    Returns a dict with ``w1`` (n1, n0), ``w2_teacher`` (n2, n1), ``w3`` (n3, n2), ``x``
    (n_data, n0) and ``z`` (n2, n1), drawn in that order from
    ``SeedSequence(seed, spawn_key=(replica,))``; the student of cell ``sigma_W`` starts at
    ``sigma_W * z / sqrt(n1)``.
    """
    n0, n1, n2, n3 = config.widths
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(replica,))))
    w1 = rng.standard_normal((n1, n0)) / math.sqrt(n0)
    w2t = rng.standard_normal((n2, n1)) / math.sqrt(n1)
    w3 = rng.standard_normal((n3, n2)) / math.sqrt(n2)
    x = rng.standard_normal((config.n_data, n0))
    z = rng.standard_normal((n2, n1))
    return {"w1": w1, "w2_teacher": w2t, "w3": w3, "x": x, "z": z}


def epoch_permutation(n_data: int, seed: int, replica: int, epoch: int) -> np.ndarray:
    """Data order of ``epoch`` (0-based) for ``data_order='shuffled'``."""
    ss = np.random.SeedSequence(seed, spawn_key=(replica, 1, epoch))
    return np.random.Generator(np.random.PCG64(ss)).permutation(n_data)


def snapshot_epochs(epochs: int, snapshots: int = 21) -> np.ndarray:
    """Epoch counts of evenly spaced snapshots: ``round(k * epochs / n)``, ``k = 0..n``.

    ``n = min(snapshots - 1, epochs)``; entry 0 is the initial state, the last is the end of
    training.
    """
    n = min(snapshots - 1, epochs)
    return np.round(np.arange(n + 1) * (epochs / n)).astype(np.int64)


def release_snapshot_epochs(epochs: int) -> np.ndarray:
    """The release's schedule: after epochs ``1, I+1, 2I+1, ..., 19I+1`` (``I = epochs // 20``).

    The release saves inside epoch ``e`` (0-based) when ``e`` is one of
    ``linspace(0, epochs, 21)``, i.e. after ``e + 1`` epochs; its last snapshot is therefore at
    ``0.95 epochs + 1``, not at the end. Pass the result as ``snapshots=`` to reproduce it.
    """
    points = min(20, epochs)
    marks = set(np.linspace(0, epochs, points + 1).tolist())
    return np.array([0] + [e + 1 for e in range(epochs) if float(e) in marks], dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# result
# ------------------------------------------------------------------------------------------------


@dataclass
class EnsembleResult:
    """Output of :func:`train_ensemble`; arrays are indexed ``[temperature, sigma_w, seed, ...]``.

    Attributes
    ----------
    config : TeacherStudentConfig
    temperature : (nT,) float64, the grid's ``T = lr / |B|``
    sigma_w : (nS,) float64, initial scale ``sigma_W`` (not squared)
    snapshot_epochs : (n_snap,) int64, epochs completed at each snapshot (0 = initial state)
    w2 : (nT, nS, nR, n_snap, n2, n1), ``W2`` at each snapshot
    grad : (nT, nS, nR, n_snap, n2, n1), epoch-mean minibatch gradient of (2.28); snapshot 0 holds
        the full-data gradient at initialisation
    loss : (nT, nS, nR, n_snap) float64, epoch-mean training loss (2.6) (with the 1/2); snapshot
        0 the full-data loss at initialisation; NaN for snapshots after a divergence
    diverged : (nT, nS, nR) bool
    diverged_epoch, diverged_step : (nT, nS, nR) int64, 0-based epoch and step of the batch whose
        loss crossed the threshold, -1 when the model did not diverge
    teacher_w1, teacher_w2, teacher_w3 : (n_groups, ...) float64 teacher matrices; model
        ``(t, s, r)`` uses group ``group[t, s, r]`` (the seed index unless the teacher or the data
        were given per model)
    group : (nT, nS, nR) int64
    seed, replica_offset : the base entropy and the offset of the spawn keys
        ``(replica_offset + r,)``
    """

    config: TeacherStudentConfig
    temperature: np.ndarray
    sigma_w: np.ndarray
    snapshot_epochs: np.ndarray
    w2: np.ndarray
    grad: np.ndarray
    loss: np.ndarray
    diverged: np.ndarray
    diverged_epoch: np.ndarray
    diverged_step: np.ndarray
    teacher_w1: np.ndarray
    teacher_w2: np.ndarray
    teacher_w3: np.ndarray
    group: np.ndarray
    seed: int
    replica_offset: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    backend: str = "numba"
    wall_time: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        return int(np.prod(self.diverged.shape))

    @property
    def epochs(self) -> int:
        return int(self.snapshot_epochs[-1])

    @property
    def learning_rate(self) -> np.ndarray:
        """``lr = T |B|`` per temperature."""
        return self.temperature * self.config.batch_size

    @property
    def model_steps(self) -> int:
        """SGD steps taken over all models (one step of one model counts 1)."""
        return self.n_models * self.epochs * self.config.steps_per_epoch

    @property
    def initial_gradient(self) -> np.ndarray:
        """Full-data gradient at initialisation, (nT, nS, nR, n2, n1) (figure 4, right)."""
        return self.grad[..., 0, :, :]

    @property
    def spawn_keys(self) -> np.ndarray:
        """``SeedSequence`` spawn key of each replica, (nR,)."""
        return self.replica_offset + np.arange(self.diverged.shape[2])

    def teacher(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-model teacher ``(W1, W2*, W3)`` with shapes (nT, nS, nR, ...) (views by group)."""
        return (self.teacher_w1[self.group], self.teacher_w2[self.group],
                self.teacher_w3[self.group])

    def to_xarray(self):
        """Labelled ``xarray.Dataset`` (dims temperature, sigma_w, seed, snapshot, row, col).

        Coordinates are in the paper's units: ``temperature`` is ``T = lr/|B|``, ``sigma_w`` is
        ``sigma_W``, ``epoch`` (on ``snapshot``) counts completed epochs; ``learning_rate`` and
        ``inv_sigma_w`` = ``1/sigma_W`` are auxiliary coordinates. Teacher matrices are indexed
        by ``group`` (= seed unless given per model).
        """
        import xarray as xr

        grid = ("temperature", "sigma_w", "seed")
        coords = {
            "temperature": self.temperature,
            "sigma_w": self.sigma_w,
            "seed": np.arange(self.diverged.shape[2]),
            "snapshot": np.arange(len(self.snapshot_epochs)),
            "epoch": ("snapshot", self.snapshot_epochs),
            "learning_rate": ("temperature", self.learning_rate),
            "inv_sigma_w": ("sigma_w", 1.0 / self.sigma_w),
            "spawn_key": ("seed", self.spawn_keys),
        }
        data = {
            "w2": ((*grid, "snapshot", "row", "col"), self.w2),
            "grad": ((*grid, "snapshot", "row", "col"), self.grad),
            "loss": ((*grid, "snapshot"), self.loss),
            "diverged": (grid, self.diverged),
            "diverged_epoch": (grid, self.diverged_epoch),
            "diverged_step": (grid, self.diverged_step),
            "group": (grid, self.group),
            "teacher_w1": (("group", "hidden1", "input"), self.teacher_w1),
            "teacher_w2": (("group", "row", "col"), self.teacher_w2),
            "teacher_w3": (("group", "output", "row"), self.teacher_w3),
        }
        attrs = {
            "config": json.dumps(asdict(self.config)),
            "seed": int(self.seed),
            "replica_offset": int(self.replica_offset),
            "seed_scheme": "numpy SeedSequence(seed, spawn_key=(spawn_key,)): W1, W2*, W3, x, Z",
            "dtype": self.dtype,
            "device": self.device,
            "backend": self.backend,
            "wall_time_s": float(self.wall_time),
            "model_steps": int(self.model_steps),
            "loss_convention": "epoch mean of (2.6) with the 1/2; NaN after divergence",
        }
        ds = xr.Dataset(data, coords=coords, attrs=attrs)
        ds["loss"].attrs["long_name"] = "epoch-mean training loss (2.6)"
        ds["grad"].attrs["long_name"] = "epoch-mean minibatch gradient of W2 (2.28)"
        return ds

    @classmethod
    def from_xarray(cls, ds) -> EnsembleResult:
        """Inverse of :meth:`to_xarray` (e.g. after ``xarray.load_dataset``)."""
        cfg = json.loads(ds.attrs["config"])
        cfg["widths"] = tuple(cfg["widths"])
        cfg["trained_layers"] = tuple(cfg["trained_layers"])
        return cls(
            config=TeacherStudentConfig(**cfg),
            temperature=ds["temperature"].values.astype(np.float64),
            sigma_w=ds["sigma_w"].values.astype(np.float64),
            snapshot_epochs=ds["epoch"].values.astype(np.int64),
            w2=ds["w2"].values,
            grad=ds["grad"].values,
            loss=ds["loss"].values.astype(np.float64),
            diverged=ds["diverged"].values.astype(bool),
            diverged_epoch=ds["diverged_epoch"].values.astype(np.int64),
            diverged_step=ds["diverged_step"].values.astype(np.int64),
            teacher_w1=ds["teacher_w1"].values,
            teacher_w2=ds["teacher_w2"].values,
            teacher_w3=ds["teacher_w3"].values,
            group=ds["group"].values.astype(np.int64),
            seed=int(ds.attrs["seed"]),
            replica_offset=int(ds.attrs["replica_offset"]),
            dtype=str(ds.attrs["dtype"]),
            device=str(ds.attrs["device"]),
            backend=str(ds.attrs["backend"]),
            wall_time=float(ds.attrs["wall_time_s"]),
        )


# ------------------------------------------------------------------------------------------------
# argument handling
# ------------------------------------------------------------------------------------------------


def _grid_values(name: str, value) -> np.ndarray:
    arr = np.atleast_1d(check_positive(name, value)).astype(np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must be a positive number or a non-empty 1-d sequence")
    return arr


def _resolve_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device must be 'cpu' or 'cuda[:k]', got {device!r}") from exc
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device must be 'cpu' or 'cuda[:k]', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return dev


def _resolve_dtype(dtype) -> torch.dtype:
    table = {torch.float32: torch.float32, torch.float64: torch.float64, "float32": torch.float32,
             "float64": torch.float64, np.float32: torch.float32, np.float64: torch.float64}
    try:
        return table[dtype]
    except (KeyError, TypeError):
        raise InputError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}") from None


def _resolve_snapshots(snapshots, epochs: int) -> np.ndarray:
    if isinstance(snapshots, (int, np.integer)) and not isinstance(snapshots, bool):
        check_int("snapshots", snapshots, minimum=2)
        return snapshot_epochs(epochs, int(snapshots))
    try:
        arr = np.asarray(snapshots)
    except (TypeError, ValueError):
        arr = np.asarray([np.nan])
    if arr.ndim != 1 or arr.size < 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"snapshots must be an int >= 2 or a sequence of epoch counts, "
                         f"got {snapshots!r}")
    arr = arr.astype(np.int64)
    if arr[0] != 0 or np.any(np.diff(arr) <= 0) or arr[-1] > epochs:
        raise InputError(f"snapshots must increase strictly from 0 to at most epochs={epochs}, "
                         f"got {snapshots!r}")
    return arr


def _per_model(name: str, value, tail: tuple[int, ...], grid: tuple[int, int, int]):
    """Accept ``tail``, ``(nR, *tail)``, ``(M, *tail)`` or ``(nT, nS, nR, *tail)`` shapes.

    Returns ``(array, per_model)`` with the array shaped ``(nR, *tail)`` or ``(M, *tail)``.
    """
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite")
    n_t, n_s, n_r = grid
    m = n_t * n_s * n_r
    lead = arr.shape[: arr.ndim - len(tail)]
    if arr.ndim < len(tail) or arr.shape[arr.ndim - len(tail):] != tail:
        raise InputError(f"{name} must end with shape {tail}, got {arr.shape}")
    if lead == ():
        return np.broadcast_to(arr, (n_r, *tail)).copy(), False
    if lead == (n_r,):
        return arr.copy(), False
    if lead in ((m,), (n_t, n_s, n_r)):
        return arr.reshape(m, *tail).copy(), True
    raise InputError(f"{name}: leading shape {lead} is none of (), ({n_r},), ({m},), {grid}")


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------


def train_ensemble(
    config: TeacherStudentConfig | None = None,
    temperature=2.0**-5,
    sigma_w=0.125,
    n_seeds: int = 1,
    epochs: int = 1,
    snapshots=21,
    seed: int = 0,
    device="cpu",
    dtype=torch.float32,
    progress: bool = True,
    teacher_weights: Sequence[np.ndarray] | None = None,
    inputs: np.ndarray | None = None,
    student_init: np.ndarray | None = None,
    *,
    backend: str = "auto",
    replica_offset: int = 0,
) -> EnsembleResult:
    """Train the grid ``temperature x sigma_w x seed`` of teacher-student models in one run.

    Parameters
    ----------
    config : TeacherStudentConfig, optional
        Architecture and protocol (default: the paper's).
    temperature : float or sequence of float
        ``T = lr / |B|`` (2.30), each > 0; ``lr = T * batch_size``.
    sigma_w : float or sequence of float
        ``sigma_W`` > 0 of ``W2(0) ~ N(0, sigma_W^2 / n1)`` (2.11).
    n_seeds : int
        Replicas (teachers) per cell.
    epochs : int
        Epochs of ``n_data / batch_size`` steps each (the paper's ``t`` counts epochs).
    snapshots : int or sequence of int
        Number of evenly spaced snapshots including the initial state (21, see
        :func:`snapshot_epochs`), or explicit epoch counts starting at 0 (e.g.
        :func:`release_snapshot_epochs`).
    seed : int
        Base entropy of the ``SeedSequence`` of every replica (see the module docstring).
    device : str or torch.device
        ``'cpu'`` or ``'cuda[:k]'``.
    dtype : torch.float32 or torch.float64
        Arithmetic precision (the release uses float64).
    progress : bool
        Show a tqdm bar (models, model-steps/s, ETA).
    teacher_weights : (W1, W2*, W3), optional
        Teacher matrices, each shaped ``(n_l, n_{l-1})``, ``(n_seeds, ...)`` or per model
        ``(nT * nS * n_seeds, ...)`` / ``(nT, nS, n_seeds, ...)``; replaces the drawn teacher.
    inputs : array, optional
        Training inputs ``x`` with the same leading-axis options and trailing ``(n_data, n0)``.
    student_init : array, optional
        ``W2(0)`` itself (trailing ``(n2, n1)``), same leading-axis options; ``sigma_w`` then
        only labels the cells.
    backend : {'auto', 'numba', 'torch'}
        ``'auto'``: the fused numba kernel on CPU, torch on CUDA.
    replica_offset : int
        Spawn keys are ``(replica_offset + r,)``: runs split over seeds reproduce one big run.

    Returns
    -------
    EnsembleResult
    """
    t_start = time.perf_counter()
    config = TeacherStudentConfig() if config is None else config
    if not isinstance(config, TeacherStudentConfig):
        raise InputError(f"config must be a TeacherStudentConfig, got {type(config).__name__}")
    temps = _grid_values("temperature", temperature)
    sigmas = _grid_values("sigma_w", sigma_w)
    n_seeds = check_int("n_seeds", n_seeds, minimum=1)
    epochs = check_int("epochs", epochs, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    replica_offset = check_int("replica_offset", replica_offset, minimum=0)
    snaps = _resolve_snapshots(snapshots, epochs)
    dev = _resolve_device(device)
    tdtype = _resolve_dtype(dtype)
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "numba" if dev.type == "cpu" else "torch"
    if backend == "numba" and dev.type != "cpu":
        raise InputError("backend 'numba' runs on device 'cpu' only")
    n0, n1, n2, n3 = config.widths
    grid = (temps.size, sigmas.size, n_seeds)
    n_models = int(np.prod(grid))

    # ---- teacher, data, init (float64, per replica or per model) ----
    w1 = np.empty((n_seeds, n1, n0))
    w2t = np.empty((n_seeds, n2, n1))
    w3 = np.empty((n_seeds, n3, n2))
    x = np.empty((n_seeds, config.n_data, n0))
    z = np.empty((n_seeds, n2, n1))
    need_draws = teacher_weights is None or inputs is None or student_init is None
    if need_draws:
        for r in range(n_seeds):
            d = replica_draws(config, seed, replica_offset + r)
            w1[r], w2t[r], w3[r], x[r], z[r] = d["w1"], d["w2_teacher"], d["w3"], d["x"], d["z"]
    per_model = False
    if teacher_weights is not None:
        if len(teacher_weights) != 3:
            raise InputError("teacher_weights must be a sequence (W1, W2*, W3)")
        given = [_per_model(f"teacher_weights[{k}]", a, tail, grid) for k, (a, tail) in
                 enumerate(zip(teacher_weights, [(n1, n0), (n2, n1), (n3, n2)], strict=True))]
        per_model = any(p for _, p in given)
        w1, w2t, w3 = (a for a, _ in given)
    if inputs is not None:
        x, pm = _per_model("inputs", inputs, (config.n_data, n0), grid)
        per_model = per_model or pm
    if per_model:  # groups become models: expand whatever is still per replica
        rep = np.tile(np.arange(n_seeds), n_models // n_seeds)
        w1, w2t, w3, x = (a if a.shape[0] == n_models else a[rep] for a in (w1, w2t, w3, x))
        group = np.arange(n_models)
    else:
        group = np.tile(np.arange(n_seeds), n_models // n_seeds)
    rep = np.tile(np.arange(n_seeds), n_models // n_seeds)
    if student_init is not None:
        base, pm = _per_model("student_init", student_init, (n2, n1), grid)
        w2_init = _InitRows(base, np.arange(n_models) if pm else rep, np.ones(n_models))
    else:
        scale = np.repeat(np.tile(sigmas, temps.size), n_seeds) / math.sqrt(n1)
        w2_init = _InitRows(z, rep, scale)
    y = teacher_forward(x, w1, w2t, w3, config.activation)
    lr = np.repeat(temps, sigmas.size * n_seeds) * config.batch_size

    orders = None
    if config.data_order == "shuffled":

        def orders(epoch: int, groups: np.ndarray) -> np.ndarray:
            """(len(groups), n_data) data order of ``epoch`` for the given groups."""
            uniq, inv = np.unique(groups, return_inverse=True)
            perms = np.stack([epoch_permutation(config.n_data, seed,
                                                replica_offset + int(u) % n_seeds, epoch)
                              for u in uniq])
            return perms[inv].astype(np.int64)

    t_setup = time.perf_counter() - t_start
    if backend == "numba":
        from dysonsgd.train._numba.kernels import run_numba as engine
    else:
        engine = _train_torch
    out = engine(config, x, w1, w3, y, group, w2_init, lr, epochs, snaps, orders, dev, tdtype,
                 progress)
    t_total = time.perf_counter() - t_start

    n_snap = len(snaps)
    res = EnsembleResult(
        config=config,
        temperature=temps,
        sigma_w=sigmas,
        snapshot_epochs=snaps,
        w2=out["w2"].reshape(*grid, n_snap, n2, n1),
        grad=out["grad"].reshape(*grid, n_snap, n2, n1),
        loss=out["loss"].reshape(*grid, n_snap),
        diverged=(out["div_epoch"] >= 0).reshape(grid),
        diverged_epoch=out["div_epoch"].reshape(grid),
        diverged_step=out["div_step"].reshape(grid),
        teacher_w1=w1,
        teacher_w2=w2t,
        teacher_w3=w3,
        group=group.reshape(grid),
        seed=seed,
        replica_offset=replica_offset,
        dtype=str(tdtype).replace("torch.", ""),
        device=str(dev),
        backend=backend,
        wall_time=t_total,
        timings={"setup_s": t_setup, **out["timings"], "total_s": t_total},
    )
    _apply_divergence(res, out["end_grad"].reshape(*grid, n2, n1))
    return res


class _InitRows:
    """``W2(0)`` of model ``m`` is ``scale[m] * base[rows[m]]``, built on demand by slices
    (a 14,400-model grid would otherwise hold several 60 MB temporaries)."""

    def __init__(self, base: np.ndarray, rows: np.ndarray, scale: np.ndarray) -> None:
        self.base, self.rows, self.scale = base, rows, scale
        self.shape = (len(rows), *base.shape[1:])

    def __getitem__(self, sl: slice) -> np.ndarray:
        return self.scale[sl, None, None] * self.base[self.rows[sl]]


def _apply_divergence(res: EnsembleResult, end_grad: np.ndarray) -> None:
    """After a divergence in epoch e, snapshots at epoch counts >= e + 1 repeat the frozen W2
    (the kernels already froze it), take the diverging batch's gradient and a NaN loss."""
    idx = np.nonzero(res.diverged)
    for t, s, r in zip(*idx, strict=True):
        later = res.snapshot_epochs >= res.diverged_epoch[t, s, r] + 1
        later[0] = False
        res.grad[t, s, r, later] = end_grad[t, s, r]
        res.loss[t, s, r, later] = np.nan


def allocate_outputs(m: int, n_snap: int, n2: int, n1: int, npdt):
    """Per-model outputs of a training backend: W2 and gradient per snapshot, losses,
    divergence epoch and step (-1: none), and the gradient of the last batch."""
    return (
        np.empty((m, n_snap, n2, n1), npdt),
        np.empty((m, n_snap, n2, n1), npdt),
        np.empty((m, n_snap)),
        np.full(m, -1, np.int64),
        np.full(m, -1, np.int64),
        np.zeros((m, n2, n1), npdt),
    )


def snapshot_record_index(snaps: np.ndarray, epochs: int) -> np.ndarray:
    """Per epoch (0-based): the snapshot recorded at its end, or -1."""
    rec = np.full(epochs, -1, np.int64)
    for k in range(1, len(snaps)):
        rec[snaps[k] - 1] = k
    return rec


def progress_bar(enabled: bool, n_models: int, total_steps: int):
    from tqdm.auto import tqdm

    return tqdm(total=total_steps, disable=not enabled, unit="model-step", unit_scale=True,
                desc=f"{n_models} models", smoothing=0.1, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------
# torch backend
# ------------------------------------------------------------------------------------------------


def _train_torch(config, x, w1, w3, y, group, w2_init, lr, epochs, snaps, orders, dev, tdtype,
                 progress) -> dict[str, Any]:
    _, n1, n2, n3 = config.widths
    nd, bsz = config.n_data, config.batch_size
    steps = config.steps_per_epoch
    act = config.activation
    thr = config.divergence_threshold
    m = w2_init.shape[0]
    n_snap = len(snaps)
    npdt = np.float32 if tdtype == torch.float32 else np.float64
    snap_rec = snapshot_record_index(snaps, epochs)
    out_w2, out_g, out_loss, div_epoch, div_step, end_grad = allocate_outputs(
        m, n_snap, n2, n1, npdt
    )
    per_model_bytes = nd * (n1 + n3) * np.dtype(npdt).itemsize
    budget = 2e9
    chunk = max(1, min(m, int(budget // per_model_bytes)))
    bar = progress_bar(progress, m, m * epochs * steps)
    t_train = t_eval = 0.0
    threads = torch.get_num_threads()
    if dev.type == "cpu" and chunk < 64:
        # tiny products: an OpenMP team only adds barrier latency (milliseconds on a busy host)
        torch.set_num_threads(1)

    def tt(a):
        return torch.as_tensor(np.ascontiguousarray(a), device=dev)

    try:
        for c0 in range(0, m, chunk):
            c1 = min(m, c0 + chunk)
            g = group[c0:c1]
            # layer-1 features in float64, then cast (as the numba fill kernel); in slices, so
            # that no float64 copy of the whole chunk is ever paged in
            phi1_all = torch.empty((c1 - c0, nd, n1), dtype=tdtype, device=dev)
            for a in range(0, c1 - c0, 64):
                ga = g[a:a + 64]
                z1 = tt(x[ga]) @ tt(w1[ga]).transpose(1, 2)
                phi1_all[a:a + 64] = activation_fn(act, z1)[0].to(tdtype)
            y_all = tt(y[g]).to(tdtype)
            W3 = tt(w3[g]).to(tdtype)
            W3t = W3.transpose(1, 2)
            W2 = tt(w2_init[c0:c1]).to(tdtype)
            c = tt(lr[c0:c1] / bsz).to(tdtype)[:, None, None]
            mc = c1 - c0
            active = torch.ones(mc, dtype=torch.bool, device=dev)
            de = torch.full((mc,), -1, dtype=torch.int64, device=dev)
            dst = torch.full((mc,), -1, dtype=torch.int64, device=dev)
            eg = torch.zeros((mc, n2, n1), dtype=tdtype, device=dev)
            ar = torch.arange(mc, device=dev)[:, None]

            def batch_grad(P, Yb, W2=W2, W3=W3, W3t=W3t):
                h, dact = activation_fn(act, torch.bmm(P, W2.transpose(1, 2)))
                err = torch.bmm(h, W3t) - Yb
                loss = 0.5 * (err * err).sum(-1).mean(-1)
                delta = torch.bmm(err, W3) * dact
                return torch.bmm(delta.transpose(1, 2), P), loss

            # snapshot 0: full-data gradient and loss at initialisation
            t = time.perf_counter()
            gsum, lsum = torch.zeros_like(W2), torch.zeros(mc, dtype=torch.float64, device=dev)
            for s0 in range(0, nd, 4096):
                gb, lb = batch_grad(phi1_all[:, s0:s0 + 4096], y_all[:, s0:s0 + 4096])
                gsum += gb
                lsum += lb.double() * (min(nd, s0 + 4096) - s0)
            out_w2[c0:c1, 0] = W2.cpu().numpy()
            out_g[c0:c1, 0] = (gsum / nd).cpu().numpy()
            out_loss[c0:c1, 0] = (lsum / nd).cpu().numpy()
            t_eval += time.perf_counter() - t
            t = time.perf_counter()
            for e in range(epochs):
                if orders is not None:
                    perm = tt(orders(e, g))
                    phi1, ys = phi1_all[ar, perm], y_all[ar, perm]
                else:
                    phi1, ys = phi1_all, y_all
                k = snap_rec[e]
                record = k >= 0
                gacc = torch.zeros_like(W2)
                lacc = torch.zeros(mc, dtype=torch.float64, device=dev)
                for s in range(steps):
                    P = phi1[:, s * bsz:(s + 1) * bsz]
                    gb, loss = batch_grad(P, ys[:, s * bsz:(s + 1) * bsz], W2=W2)
                    bad = active & ~(loss <= thr)
                    eg = torch.where(bad[:, None, None], gb / bsz, eg)
                    de = torch.where(bad, e, de)
                    dst = torch.where(bad, s, dst)
                    active = active & ~bad
                    am = active[:, None, None]
                    W2 = torch.where(am, W2 - c * gb, W2)
                    lacc += torch.where(active, loss.double(), 0.0)
                    if record:
                        gacc += torch.where(am, gb, 0.0)
                if record:
                    out_w2[c0:c1, k] = W2.cpu().numpy()
                    out_g[c0:c1, k] = (gacc / (bsz * steps)).cpu().numpy()
                    out_loss[c0:c1, k] = (lacc / steps).cpu().numpy()
                bar.update(mc * steps)
            t_train += time.perf_counter() - t
            div_epoch[c0:c1] = de.cpu().numpy()
            div_step[c0:c1] = dst.cpu().numpy()
            end_grad[c0:c1] = eg.cpu().numpy()
    finally:
        bar.close()
        torch.set_num_threads(threads)
    return {"w2": out_w2, "grad": out_g, "loss": out_loss, "div_epoch": div_epoch,
            "div_step": div_step, "end_grad": end_grad,
            "timings": {"initial_gradient_s": t_eval, "train_s": t_train}}
