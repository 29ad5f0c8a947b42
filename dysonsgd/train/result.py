"""The result of a training run, :class:`EnsembleResult`, its labelled xarray form, and
:class:`BatchResults`, the runs of one grid at several batch sizes.

The paper's run holds one trained matrix, ``W2`` (``w2``, ``grad``). A run of the general path
(:mod:`dysonsgd.train.general`: other trained matrices, other depths) keeps ``W2`` there too and
holds every other recorded matrix ``W_l`` (trained, or not started at the teacher's, see
:attr:`~dysonsgd.model.config.TeacherStudentConfig.recorded_layers`) in
:attr:`EnsembleResult.layer_w` and :attr:`EnsembleResult.layer_grad`;
:meth:`EnsembleResult.student` gives the student's matrices at a snapshot.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from dysonsgd._checks import InputError
from dysonsgd.model.config import TeacherStudentConfig

__all__ = ["BatchResults", "EnsembleResult", "layer_dims"]


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
        were given per model); ``teacher_w3`` is None for one hidden layer
    group : (nT, nS, nR) int64
    seed, replica_offset : the base entropy and the offset of the spawn keys
        ``(replica_offset + r,)``
    layer_w, layer_grad : dict ``l -> (nT, nS, nR, n_snap, n_l, n_{l-1})``
        The snapshots and epoch-mean minibatch gradients of every recorded matrix but ``W2``
        (empty for the paper's set-up), with the conventions of ``w2`` and ``grad``.
    teacher_layers : dict ``l -> (n_groups, n_l, n_{l-1})``
        The teacher's matrices ``W_l`` for ``l >= 4`` (more than two hidden layers).
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
    teacher_w3: np.ndarray | None
    group: np.ndarray
    seed: int
    replica_offset: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    backend: str = "numba"
    wall_time: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    layer_w: dict[int, np.ndarray] = field(default_factory=dict)
    layer_grad: dict[int, np.ndarray] = field(default_factory=dict)
    teacher_layers: dict[int, np.ndarray] = field(default_factory=dict)

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
    def time(self) -> np.ndarray:
        """Continuous time ``t = lr x steps`` of each snapshot, (nT, n_snap) float64.

        With ``steps = epochs n_data / |B|`` this is ``T x epochs x n_data``: the same for every
        batch size at fixed ``T`` (the time of the SDE (2.29)-(2.30), (4.3)).
        """
        steps = self.snapshot_epochs * self.config.steps_per_epoch
        return self.learning_rate[:, None] * steps[None, :].astype(np.float64)

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

    def teacher_matrices(self) -> tuple[np.ndarray, ...]:
        """Per-model teacher ``(W_1, ..., W_L)`` of any depth, (nT, nS, nR, n_l, n_{l-1})."""
        mats = {1: self.teacher_w1, 2: self.teacher_w2, 3: self.teacher_w3,
                **self.teacher_layers}
        return tuple(mats[k][self.group] for k in range(1, self.config.n_layers + 1))

    def snapshots(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """``(W_layer, its gradient)`` at every snapshot, (nT, nS, nR, n_snap, n_l, n_{l-1})
        each, for a recorded matrix (``W2``: ``w2`` and ``grad``).

        Raises
        ------
        InputError
            If ``layer`` is not recorded (it is the teacher's throughout).
        """
        if layer == 2:
            return self.w2, self.grad
        if layer not in self.layer_w:
            raise InputError(f"layer must be a recorded matrix, one of "
                             f"{sorted({2, *self.layer_w})}, got {layer!r} (the others are the "
                             "teacher's throughout: teacher_matrices())")
        return self.layer_w[layer], self.layer_grad[layer]

    def student(self, snapshot: int = -1) -> tuple[np.ndarray, ...]:
        """The student's ``(W_1, ..., W_L)`` at ``snapshot``, (nT, nS, nR, n_l, n_{l-1}) each:
        the recorded matrices' snapshots, the teacher's matrix elsewhere."""
        teacher = self.teacher_matrices()
        out = []
        for k in range(1, self.config.n_layers + 1):
            w = self.w2 if k == 2 else self.layer_w.get(k)
            out.append(teacher[k - 1] if w is None else w[..., snapshot, :, :])
        return tuple(out)

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
        }
        if self.teacher_w3 is not None:
            data["teacher_w3"] = (("group", "output", "row"), self.teacher_w3)
        for k, w in self.layer_w.items():
            dims = (*grid, "snapshot", *layer_dims(k))
            data[f"w{k}"] = (dims, w)
            data[f"grad_w{k}"] = (dims, self.layer_grad[k])
        for k, w in self.teacher_layers.items():
            data[f"teacher_w{k}"] = (("group", *layer_dims(k)), w)
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
        for k in self.layer_w:
            ds[f"grad_w{k}"].attrs["long_name"] = f"epoch-mean minibatch gradient of W{k}"
        return ds

    @classmethod
    def from_xarray(cls, ds) -> EnsembleResult:
        """Inverse of :meth:`to_xarray` (e.g. after ``xarray.load_dataset``)."""
        cfg = json.loads(ds.attrs["config"])
        cfg["widths"] = tuple(cfg["widths"])
        cfg["trained_layers"] = tuple(cfg["trained_layers"])
        if cfg.get("sigma_w_layers") is not None:
            cfg["sigma_w_layers"] = tuple(cfg["sigma_w_layers"])
        names = list(getattr(ds, "data_vars", getattr(ds, "_arrays", ())))
        layers = sorted(int(m[1]) for n in names if (m := re.fullmatch(r"w(\d+)", n)))
        extra = sorted(int(m[1]) for n in names if (m := re.fullmatch(r"teacher_w(\d+)", n))
                       and int(m[1]) > 3)
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
            teacher_w3=ds["teacher_w3"].values if "teacher_w3" in names else None,
            group=ds["group"].values.astype(np.int64),
            seed=int(ds.attrs["seed"]),
            replica_offset=int(ds.attrs["replica_offset"]),
            dtype=str(ds.attrs["dtype"]),
            device=str(ds.attrs["device"]),
            backend=str(ds.attrs["backend"]),
            wall_time=float(ds.attrs["wall_time_s"]),
            layer_w={k: ds[f"w{k}"].values for k in layers if k != 2},
            layer_grad={k: ds[f"grad_w{k}"].values for k in layers if k != 2},
            teacher_layers={k: ds[f"teacher_w{k}"].values for k in extra},
        )


def layer_dims(layer: int) -> tuple[str, str]:
    """The dims of ``W_layer`` (n_l, n_{l-1}) in datasets and stores, for the matrices other than
    ``W2`` (whose dims are ``row``, ``col``): ``w{l}_row``, ``w{l}_col``."""
    return f"w{layer}_row", f"w{layer}_col"


#: variables of :meth:`EnsembleResult.to_xarray` that differ between batch sizes (and
#: ``w{l}``, ``grad_w{l}`` of the other recorded matrices)
_PER_RUN = ("w2", "grad", "loss", "diverged", "diverged_epoch", "diverged_step")


def _but_batch(config: TeacherStudentConfig) -> dict:
    """The config's fields except ``batch_size``."""
    return {k: v for k, v in asdict(config).items() if k != "batch_size"}


class BatchResults(Mapping):
    """Runs of one ``temperature x sigma_w x seed`` grid at several batch sizes ``|B|``.

    A read-only mapping ``|B| -> EnsembleResult`` in the order the batch sizes were given, as
    :func:`~dysonsgd.train.ensemble.train_ensemble` returns for ``batch_size=[...]``. Each value
    is an ordinary run whose ``config.batch_size`` is its key, so every function taking an
    :class:`EnsembleResult` (measure, predict, validate, store) takes ``runs[b]`` unchanged. The
    runs share the temperatures (``T = lr / |B|`` is held fixed, ``lr = T |B|`` varies), the
    ``sigma_W``, the seeds (the same teachers, data and ``W2(0)``: common random numbers across
    batch sizes) and the snapshot epochs; with the epochs fixed, every batch size reaches the
    same continuous time ``t_f = T x epochs x n_data``.

    Parameters
    ----------
    runs : mapping or sequence of (|B|, EnsembleResult)
    """

    def __init__(self, runs) -> None:
        items = list(runs.items() if isinstance(runs, Mapping) else runs)
        if not items:
            raise InputError("runs must hold at least one (batch_size, EnsembleResult)")
        first = items[0][1]
        seen: dict[int, EnsembleResult] = {}
        for b, res in items:
            if not isinstance(res, EnsembleResult):
                raise InputError(f"runs[{b!r}] must be an EnsembleResult, got "
                                 f"{type(res).__name__}")
            if b != res.config.batch_size or int(b) in seen:
                raise InputError(f"runs: key {b!r} must be its run's config.batch_size "
                                 f"({res.config.batch_size}), each once")
            same = (_but_batch(res.config) == _but_batch(first.config)
                    and res.diverged.shape == first.diverged.shape
                    and np.array_equal(res.temperature, first.temperature)
                    and np.array_equal(res.sigma_w, first.sigma_w)
                    and np.array_equal(res.snapshot_epochs, first.snapshot_epochs)
                    and res.seed == first.seed and res.replica_offset == first.replica_offset)
            if not same:
                raise InputError(f"runs[{b}]: every run must share the grid, model (but "
                                 "batch_size), seeds and snapshots")
            seen[int(b)] = res
        self._runs = seen

    def __getitem__(self, batch_size: int) -> EnsembleResult:
        return self._runs[batch_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def __repr__(self) -> str:
        first = next(iter(self._runs.values()))
        return (f"BatchResults(batch_size={list(self._runs)}, grid={first.diverged.shape}, "
                f"epochs={first.epochs})")

    @property
    def batch_size(self) -> np.ndarray:
        """``|B|`` of each run, (nB,) int64, in the mapping's order."""
        return np.array(list(self._runs), dtype=np.int64)

    @property
    def temperature(self) -> np.ndarray:
        """The shared ``T = lr / |B|``, (nT,)."""
        return next(iter(self._runs.values())).temperature

    @property
    def sigma_w(self) -> np.ndarray:
        """The shared ``sigma_W``, (nS,)."""
        return next(iter(self._runs.values())).sigma_w

    @property
    def learning_rate(self) -> np.ndarray:
        """``lr = T |B|``, (nB, nT)."""
        return self.batch_size[:, None] * self.temperature[None, :]

    def stack(self, name: str) -> np.ndarray:
        """The runs' attribute ``name`` (``w2``, ``loss``, ``diverged``, ...) stacked on a new
        leading batch-size axis: (nB, nT, nS, nR, ...)."""
        return np.stack([getattr(r, name) for r in self._runs.values()])

    def to_xarray(self):
        """One ``xarray.Dataset`` with a leading ``batch_size`` dimension.

        The runs' datasets (:meth:`EnsembleResult.to_xarray`) concatenated along
        ``batch_size``: the training arrays (``w2``, ``grad``, ``loss``, the divergence
        records) gain the dimension, ``learning_rate`` becomes a (batch_size, temperature)
        coordinate, the shared teacher matrices keep their dims, and attributes that differ
        between the runs (``config``, ``model_steps``, ``wall_time_s``) are dropped (each run
        keeps its own).
        """
        import pandas as pd
        import xarray as xr

        first = next(iter(self._runs.values()))
        return xr.concat([r.to_xarray() for r in self._runs.values()],
                         dim=pd.Index(self.batch_size, name="batch_size"),
                         data_vars=[*_PER_RUN, *(f"{p}{k}" for k in first.layer_w
                                                  for p in ("w", "grad_w"))],
                         coords="different",
                         combine_attrs="drop_conflicts", compat="equals")
