"""Sweep and validation configs: one TOML schema for ``dysonsgd sweep`` and ``dysonsgd validate``.

A config names a grid of teacher-student ensembles (section 3.1 of the paper) and how to train
it; a *validation* config is a sweep config plus its expectations, the ``[expect]`` and
``[validate]`` tables. :func:`load_config` reads the sweep part into a :class:`SweepConfig` and
keeps those two tables as they are (a sweep ignores them);
:func:`dysonsgd.runs.validation_config.load_validation_config` reads the whole file, those tables
into the typed values of :mod:`dysonsgd.analysis.spec` that :mod:`dysonsgd.analysis.validation`
checks with. This module holds the schema's shared parts (:class:`ConfigError`, the value
checks, reading TOML)::

    name = "quick"                      # optional
    description = "..."                 # optional

    [grid]
    temperature = [0.03125, 0.25, 1.0]  # T = lr/|B| (2.30), each > 0, no duplicates
    inv_sigma_w = [8.0, 0.00390625]     # 1/sigma_W (the paper's axis) ... or sigma_w = [...]
    seeds = 10                          # replicas (teachers) per cell
    batch_size = [1, 4, 16]             # optional: |B| as a grid axis at fixed T (lr = T |B|);
                                        # then no [training] batch_size

    [training]                          # epochs required, the rest optional
    epochs = 100
    snapshots = 21
    seed = 0
    activation = "tanh"                 # tanh | relu | identity | gelu
    widths = [3, 32, 16, 1]             # n0, hidden layers..., n_out (at least 3 entries)
    trained_layers = [2]                # 1-based weight matrices, or "all" (default [2])
    sigma_w_layers = ["teacher", "grid", "teacher"]   # optional, one per matrix: W_l(0) from
                                        # "grid" (sigma_W of the grid, (2.11); W2 always),
                                        # "teacher" (the teacher's W_l) or a number sigma > 0
    n_data = 4000
    batch_size = 4                      # |B| of every cell (unless [grid] batch_size)
    data_order = "fixed"                # fixed | shuffled
    divergence_threshold = 100.0
    dtype = "float32"                   # float32 | float64
    task = "teacher"                    # teacher | digits (fixed real data, dysonsgd.model.tasks:
                                        # widths [64, ..., 10], n_data <= 1500)
    parametrisation = "standard"        # standard | mean-field (the output matrix, teacher's
                                        # and student's, divided once more by sqrt(n_{L-1}))

    [expect]                            # validation: the cells to check (free-form for a sweep)
    phases = [{temperature = 0.03125, inv_sigma_w = 8.0, phase = "ordered"}]
    [expect.diagram]                    # optional: checks of the whole diagram
    ordered_corner = {temperature_max = 0.0625, inv_sigma_w_min = 1.0}
    loss_ratio_min = 100                # and transition, jamming_region,
                                        # feature_correlation_min, signal_to_noise_level,
                                        # separation_min
    [validate]                          # validation: tolerances, prediction options
    ks_alpha = 0.01                     # ... every key of analysis.spec.DEFAULT_TOLERANCES
    paths_per_model = 5                 # ... and of DEFAULT_OPTIONS
    applies = {spacing_ks = ["ordered", "jamming"]}   # phases each check covers

Every problem is reported before any training as a :class:`ConfigError` naming the file, the
table, the key and the reason, e.g.
``quick.toml: [grid] temprature: unknown key (allowed: temperature, inv_sigma_w, sigma_w, seeds,
batch_size)``.

The configs of the folder ``validation/`` ship in the package as ``dysonsgd.configs``:
:func:`bundled_configs` lists them, :func:`bundled_config` gives one by name and
:func:`find_config` takes a path or a bundled name.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from dysonsgd._checks import InputError
from dysonsgd.model.config import (
    ACTIVATIONS,
    DATA_ORDERS,
    PARAMETRISATIONS,
    TASKS,
    TeacherStudentConfig,
)

__all__ = [
    "ConfigError",
    "SweepConfig",
    "batch_size_path",
    "bundled_config",
    "bundled_configs",
    "find_config",
    "load_config",
    "parse_config",
]

#: top-level keys and tables
TOP_LEVEL = ("name", "description", "grid", "training", "expect", "validate")
GRID_KEYS = ("temperature", "inv_sigma_w", "sigma_w", "seeds", "batch_size")
TRAINING_KEYS = ("epochs", "snapshots", "seed", "activation", "widths", "n_data", "batch_size",
                 "data_order", "divergence_threshold", "dtype", "trained_layers", "sigma_w_layers",
                 "task", "parametrisation")
DTYPES = ("float32", "float64")
#: section label of top-level keys in messages
TOP = "top level"


class ConfigError(InputError):
    """A config that cannot be used: ``"{file}: [{section}] {key}: {reason}"``.

    Attributes ``file``, ``section``, ``key`` and ``reason`` hold the parts of the message.
    """

    def __init__(self, message: str, *, file: str = "", section: str = "", key: str = "",
                 reason: str = "") -> None:
        super().__init__(message)
        self.file, self.section, self.key, self.reason = file, section, key, reason

    @classmethod
    def at(cls, file: str | Path | Traversable | None, section: str, key: str,
           reason: str) -> ConfigError:
        """The error for ``key`` in table ``[section]`` of ``file``."""
        name = _file_label(file)
        return cls(f"{name}: [{section}] {key}: {reason}", file=name, section=section, key=key,
                   reason=reason)


def _file_label(file: str | Path | Traversable | None) -> str:
    if file is None:
        return "<config>"
    return file if isinstance(file, str) else file.name


# ------------------------------------------------------------------------------------------------
# the config
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepConfig:
    """A parsed sweep (or validation) config.

    Attributes
    ----------
    name, description : str
    temperature : tuple of float
        The grid's ``T = lr / |B|`` (2.30), in the order given (cell index ``i_T``).
    sigma_w : tuple of float
        ``sigma_W`` of ``W2(0) ~ N(0, sigma_W^2 / n1)`` (2.11), not squared (cell index ``i_S``);
        ``1 / inv_sigma_w`` when the file gives the paper's axis.
    seeds : int
        Replicas per cell; replica ``r`` uses ``SeedSequence(seed, spawn_key=(r,))``.
    epochs, snapshots, seed : int
        As :func:`dysonsgd.train.ensemble.train_ensemble`.
    dtype : {'float32', 'float64'}
    model : TeacherStudentConfig
        Widths, activation, data size, batch size, data order, divergence threshold.
    expect, validate : dict
        The raw ``[expect]`` and ``[validate]`` tables (not interpreted here).
    source : Path, Traversable or None
        The file read, if any (a Traversable for a bundled config).
    sigma_axis : {'inv_sigma_w', 'sigma_w'}
        Which of the two the file gave (kept so that :meth:`to_dict` writes it back).
    batch_size : tuple of int
        The batch-size axis ``[grid] batch_size`` (empty: none, every cell trains at
        ``model.batch_size``). With an axis, ``model.batch_size`` is its first entry and
        :meth:`for_batch_size` gives the plain config of one ``|B|``; the temperatures are
        held fixed, so ``lr = T |B|`` varies along the axis.
    """

    name: str
    description: str
    temperature: tuple[float, ...]
    sigma_w: tuple[float, ...]
    seeds: int
    epochs: int
    snapshots: int = 21
    seed: int = 0
    dtype: str = "float32"
    model: TeacherStudentConfig = field(default_factory=TeacherStudentConfig)
    expect: dict = field(default_factory=dict, compare=False)
    validate: dict = field(default_factory=dict, compare=False)
    source: Path | Traversable | None = field(default=None, compare=False)
    sigma_axis: str = "inv_sigma_w"
    batch_size: tuple[int, ...] = ()

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """``(nT, nS, seeds)`` (of each batch size)."""
        return len(self.temperature), len(self.sigma_w), self.seeds

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The batch sizes trained: the axis, or ``(model.batch_size,)`` without one."""
        return self.batch_size or (self.model.batch_size,)

    def for_batch_size(self, batch_size: int) -> SweepConfig:
        """The config of one batch size of the axis, without an axis: its fingerprint, grid and
        models are those of the same file with ``[training] batch_size`` instead."""
        if batch_size not in self.batch_sizes:
            raise InputError(f"batch_size must be one of {list(self.batch_sizes)}, got "
                             f"{batch_size!r}")
        return replace(self, model=replace(self.model, batch_size=int(batch_size)),
                       batch_size=())

    def cells(self) -> list[tuple[int, int]]:
        """Grid cells ``(i_T, i_S)`` in row-major order (temperature outer)."""
        return [(i, j) for i in range(len(self.temperature)) for j in range(len(self.sigma_w))]

    def model_steps(self) -> int:
        """SGD steps over the whole grid (one step of one model counts 1)."""
        n_t, n_s, n_r = self.grid_shape
        return sum(n_t * n_s * n_r * self.epochs * (self.model.n_data // b)
                   for b in self.batch_sizes)

    def numerics(self) -> dict[str, Any]:
        """Everything that determines the trained numbers (what :meth:`fingerprint` hashes)."""
        model = asdict(self.model)
        model["widths"] = list(model["widths"])
        model["trained_layers"] = list(model["trained_layers"])
        if model["sigma_w_layers"] is None:  # the paper's init: fingerprints as before the key
            del model["sigma_w_layers"]
        else:
            model["sigma_w_layers"] = list(model["sigma_w_layers"])
        if model["task"] == "teacher":  # the paper's data: fingerprints as before the key
            del model["task"]
        if model["parametrisation"] == "standard":  # as before the key
            del model["parametrisation"]
        axis = {"batch_size": list(self.batch_size)} if self.batch_size else {}
        return {
            **axis,
            "schema": "dysonsgd-sweep/1",
            "temperature": [float(t) for t in self.temperature],
            "sigma_w": [float(s) for s in self.sigma_w],
            "seeds": self.seeds,
            "epochs": self.epochs,
            "snapshots": self.snapshots,
            "seed": self.seed,
            "dtype": self.dtype,
            "model": model,
        }

    def fingerprint(self) -> str:
        """SHA-256 (hex, 16 characters) of :meth:`numerics`.

        Two configs with the same fingerprint train bitwise the same models (on one device and
        dtype); ``name``, ``description``, ``expect`` and ``validate`` do not enter it, nor
        whether the grid was given as ``sigma_w`` or ``inv_sigma_w``.
        """
        text = json.dumps(self.numerics(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def matches(self, result) -> bool:
        """Whether ``result`` (an EnsembleResult) was trained from this config: the same grid,
        model, epochs, number of snapshots, seeds, base seed and dtype. With a batch-size axis:
        a mapping ``|B| -> EnsembleResult`` (a BatchResults) with exactly the axis' batch sizes,
        each matching :meth:`for_batch_size`."""
        if self.batch_size:
            return bool(isinstance(result, Mapping) and tuple(result) == self.batch_size
                        and all(self.for_batch_size(b).matches(result[b]) for b in result))
        if isinstance(result, Mapping):
            return False
        t, s = np.asarray(result.temperature), np.asarray(result.sigma_w)
        return bool(t.shape == (len(self.temperature),) and s.shape == (len(self.sigma_w),)
                    and np.allclose(t, self.temperature) and np.allclose(s, self.sigma_w)
                    and result.config == self.model
                    and len(result.snapshot_epochs) == self.snapshots
                    and int(result.snapshot_epochs[-1]) == self.epochs
                    and np.shape(result.diverged)[2] == self.seeds
                    and int(result.seed) == self.seed and str(result.dtype) == self.dtype)

    def to_dict(self) -> dict[str, Any]:
        """The TOML-equivalent mapping; ``parse_config(c.to_dict())`` equals ``c``."""
        if self.sigma_axis == "inv_sigma_w":
            axis = {"inv_sigma_w": [1.0 / s for s in self.sigma_w]}
        else:
            axis = {"sigma_w": list(self.sigma_w)}
        m = self.model
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "grid": {"temperature": list(self.temperature), **axis, "seeds": self.seeds},
            "training": {
                "epochs": self.epochs, "snapshots": self.snapshots, "seed": self.seed,
                "activation": m.activation, "widths": list(m.widths), "n_data": m.n_data,
                "batch_size": m.batch_size, "data_order": m.data_order,
                "divergence_threshold": m.divergence_threshold, "dtype": self.dtype,
            },
        }
        if m.trained_layers != TeacherStudentConfig().trained_layers:
            out["training"]["trained_layers"] = list(m.trained_layers)
        if m.sigma_w_layers is not None:
            out["training"]["sigma_w_layers"] = list(m.sigma_w_layers)
        if m.task != "teacher":
            out["training"]["task"] = m.task
        if m.parametrisation != "standard":
            out["training"]["parametrisation"] = m.parametrisation
        if self.batch_size:
            out["grid"]["batch_size"] = list(self.batch_size)
            del out["training"]["batch_size"]
        if self.expect:
            out["expect"] = self.expect
        if self.validate:
            out["validate"] = self.validate
        return out


def batch_size_path(path: str | Path, batch_size: int) -> Path:
    """Where the run of one ``|B|`` of a batch-size axis goes: ``NAME.b{B}SUFFIX`` beside
    ``path`` (``quick.zarr`` -> ``quick.b16.zarr``, ``run.nc`` -> ``run.b16.nc``), as
    ``dysonsgd sweep`` and ``dysonsgd train`` write them."""
    path = Path(path)
    return path.with_name(f"{path.stem}.b{int(batch_size)}{path.suffix}")


# ------------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------------


def _read_toml(path: str | Path | Traversable) -> tuple[dict[str, Any], Path | Traversable]:
    path = Path(path) if isinstance(path, str) else path
    if not path.is_file():
        raise ConfigError.at(path, TOP, "file", f"{str(path)!r} does not exist or is not a file")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh), path
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError.at(path, TOP, "syntax", f"not valid TOML ({exc})") from None


def load_config(path: str | Path | Traversable) -> SweepConfig:
    """Read and check a TOML config (see the module docstring for the schema).

    ``[expect]`` and ``[validate]`` are kept as given (:attr:`SweepConfig.expect`,
    :attr:`SweepConfig.validate`); :func:`load_validation_config` checks them too.

    Raises
    ------
    ConfigError
        If the file is missing, is not TOML, or any key is unknown, mistyped or out of range.
    """
    data, path = _read_toml(path)
    return parse_config(data, source=path)


def parse_config(mapping: Mapping[str, Any], *,
                 source: str | Path | Traversable | None = None) -> SweepConfig:
    """Check a config mapping (as :func:`tomllib.load` returns) and build a :class:`SweepConfig`.

    Parameters
    ----------
    mapping : mapping
        Top-level keys ``name``, ``description`` and tables ``grid``, ``training``, ``expect``,
        ``validate``.
    source : str, Path or Traversable, optional
        The file it came from, for messages and :attr:`SweepConfig.source`.
    """
    err = _Errors(source)
    if not isinstance(mapping, Mapping):
        raise err(TOP, "config", f"must be a table, got {type(mapping).__name__}")
    _unknown(err, TOP, mapping, TOP_LEVEL)
    name = mapping.get("name", PurePath(_file_label(source)).stem if source is not None
                       else "sweep")
    description = mapping.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise err(TOP, key, f"must be a string, got {_kind(value)}")
    if "grid" not in mapping:
        raise err(TOP, "grid", "missing table [grid] (temperature, inv_sigma_w or sigma_w, seeds)")
    if "training" not in mapping:
        raise err(TOP, "training", "missing table [training] (at least epochs)")
    for key in ("grid", "training", "expect", "validate"):
        if key in mapping and not isinstance(mapping[key], Mapping):
            raise err(TOP, key, f"must be a table, got {_kind(mapping[key])}")

    grid = mapping["grid"]
    _unknown(err, "grid", grid, GRID_KEYS)
    temperature = _positive_list(err, "grid", "temperature", grid)
    has_s, has_inv = "sigma_w" in grid, "inv_sigma_w" in grid
    if has_s == has_inv:
        which = "both" if has_s else "neither"
        raise err("grid", "sigma_w", f"give exactly one of sigma_w and inv_sigma_w ({which} "
                                     "given)")
    if has_inv:
        inv = _positive_list(err, "grid", "inv_sigma_w", grid)
        sigma_w, axis = tuple(1.0 / v for v in inv), "inv_sigma_w"
    else:
        sigma_w, axis = _positive_list(err, "grid", "sigma_w", grid), "sigma_w"
    if "seeds" not in grid:
        raise err("grid", "seeds", "missing (replicas per cell, an integer >= 1)")
    seeds = _integer(err, "grid", "seeds", grid["seeds"], 1)

    tr = mapping["training"]
    _unknown(err, "training", tr, TRAINING_KEYS)
    if "epochs" not in tr:
        raise err("training", "epochs", "missing (an integer >= 1)")
    epochs = _integer(err, "training", "epochs", tr["epochs"], 1)
    # the default, 21 snapshots, shrinks to one per epoch for short runs; an explicit number
    # that the run cannot record is refused below
    snapshots = _integer(err, "training", "snapshots", tr.get("snapshots", min(21, epochs + 1)),
                         2)
    seed = _integer(err, "training", "seed", tr.get("seed", 0), 0)
    dtype = _choice(err, "training", "dtype", tr.get("dtype", "float32"), DTYPES)
    defaults = TeacherStudentConfig()
    activation = _choice(err, "training", "activation", tr.get("activation", defaults.activation),
                         ACTIVATIONS)
    data_order = _choice(err, "training", "data_order", tr.get("data_order", defaults.data_order),
                         DATA_ORDERS)
    task = _choice(err, "training", "task", tr.get("task", defaults.task), TASKS)
    parametrisation = _choice(err, "training", "parametrisation",
                              tr.get("parametrisation", defaults.parametrisation),
                              PARAMETRISATIONS)
    widths = tr.get("widths", list(defaults.widths))
    if not isinstance(widths, list) or len(widths) < 3:
        raise err("training", "widths", f"must be a list of at least 3 layer sizes [n0, hidden "
                                        f"layers..., n_out], got {widths!r}")
    widths = tuple(_integer(err, "training", f"widths[{k}]", w, 1) for k, w in enumerate(widths))
    # what the analyses need of the spectrum of X = W2 W2^T: N = n2 >= 2 levels (a spacing)
    # and N <= M = n1 (no structural zero eigenvalues; the singular basis of the complete SDE)
    if not 2 <= widths[2] <= widths[1]:
        raise err("training", "widths", f"need 2 <= n2 <= n1 (the spectrum of X = W2 W2^T has "
                                        f"n2 levels and n1 >= n2 columns), got {list(widths)}")
    trained, inits = _layer_keys(err, tr, len(widths) - 1)
    if snapshots > epochs + 1:
        raise err("training", "snapshots", f"must be <= epochs + 1 = {epochs + 1} (one per "
                                           f"completed epoch, the initial state included), "
                                           f"got {snapshots}")
    n_data = _integer(err, "training", "n_data", tr.get("n_data", defaults.n_data), 1)
    axis_b = _batch_axis(err, grid, tr, n_data)
    batch_size = _integer(err, "training", "batch_size", tr.get("batch_size",
                                                                defaults.batch_size), 1)
    if n_data % batch_size:
        raise err("training", "batch_size", f"must divide n_data ({n_data}), got {batch_size}")
    batch_size = axis_b[0] if axis_b else batch_size
    thr = tr.get("divergence_threshold", defaults.divergence_threshold)
    if not _is_number(thr) or math.isnan(thr) or not thr > 0:
        raise err("training", "divergence_threshold", f"must be a number > 0 (inf allowed), got "
                                                      f"{thr!r}")
    try:
        model = TeacherStudentConfig(widths=widths, activation=activation, n_data=n_data,
                                     batch_size=batch_size, data_order=data_order,
                                     divergence_threshold=float(thr), trained_layers=trained,
                                     sigma_w_layers=inits, task=task,
                                     parametrisation=parametrisation)
    except InputError as exc:  # the layer keys' values and what a task needs (widths, n_data)
        key = next((k for k in ("trained_layers", "sigma_w_layers", "widths", "n_data")
                    if str(exc).startswith(k)), "model")
        raise err("training", key, str(exc)) from None
    expect = dict(mapping.get("expect", {}))
    validate = dict(mapping.get("validate", {}))
    return SweepConfig(name=name, description=description, temperature=temperature,
                       sigma_w=sigma_w, seeds=seeds, epochs=epochs, snapshots=snapshots,
                       seed=seed, dtype=dtype, model=model, expect=expect, validate=validate,
                       source=Path(source) if isinstance(source, str) else source,
                       sigma_axis=axis, batch_size=axis_b)


def _layer_keys(err: _Errors, tr: Mapping, n_layers: int):
    """``trained_layers`` (an array of integers or "all"; default [2]) and ``sigma_w_layers`` (an
    array, default absent: the paper's init) as given; their values are checked by
    TeacherStudentConfig, whose message names the key."""
    trained = tr.get("trained_layers", [2])
    if trained != "all" and not isinstance(trained, list):
        raise err("training", "trained_layers", f"must be an array of integers in 1..{n_layers} "
                                                f"or \"all\", got {_kind(trained)}")
    inits = tr.get("sigma_w_layers")
    if inits is not None and not isinstance(inits, list):
        raise err("training", "sigma_w_layers", f"must be an array of {n_layers} entries, "
                                                f"\"grid\", \"teacher\" or numbers > 0, got "
                                                f"{_kind(inits)}")
    return trained, inits


def _batch_axis(err: _Errors, grid: Mapping, tr: Mapping, n_data: int) -> tuple[int, ...]:
    """``[grid] batch_size``: integers >= 1 dividing ``n_data``, no duplicates; () if absent."""
    if "batch_size" not in grid:
        return ()
    if "batch_size" in tr:
        raise err("grid", "batch_size", "give the batch size either as the axis [grid] "
                                        "batch_size or as [training] batch_size, not both")
    values = grid["batch_size"]
    if not isinstance(values, list) or not values:
        raise err("grid", "batch_size", f"must be a non-empty array of integers >= 1, got "
                                        f"{_kind(values)}")
    out = []
    for k, b in enumerate(values):
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise err("grid", "batch_size", f"entry {k} must be an integer >= 1, got {_kind(b)}")
        if n_data % b:
            raise err("grid", "batch_size", f"entry {k} must divide n_data ({n_data}), got {b}")
        if b in out:
            raise err("grid", "batch_size", f"duplicate value {b!r}")
        out.append(int(b))
    return tuple(out)


class _Errors:
    def __init__(self, source) -> None:
        self.source = source

    def __call__(self, section: str, key: str, reason: str) -> ConfigError:
        return ConfigError.at(self.source, section, key, reason)


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    for typ, label in names.items():
        if type(value) is typ:
            return f"{label} ({value!r})" if typ in (bool, int, float, str) else label
    return type(value).__name__


def _unknown(err: _Errors, section: str, table: Mapping, allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            raise err(section, str(key), f"unknown key (allowed: {', '.join(allowed)})")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_list(err: _Errors, section: str, key: str, table: Mapping) -> tuple[float, ...]:
    if key not in table:
        raise err(section, key, "missing (a non-empty array of numbers > 0)")
    values = table[key]
    if not isinstance(values, list):
        raise err(section, key, f"must be an array of numbers > 0, got {_kind(values)}")
    if not values:
        raise err(section, key, "empty grid: give at least one value")
    out = []
    for k, v in enumerate(values):
        if not _is_number(v):
            raise err(section, key, f"entry {k} must be a number, got {_kind(v)}")
        if not math.isfinite(v) or v <= 0:
            raise err(section, key, f"entry {k} must be finite and > 0, got {v!r}")
        out.append(float(v))
    if len(set(out)) != len(out):
        dup = next(v for v in out if out.count(v) > 1)
        raise err(section, key, f"duplicate value {dup!r}")
    return tuple(out)


def _integer(err: _Errors, section: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise err(section, key, f"must be an integer >= {minimum}, got {_kind(value)}")
    if value < minimum:
        raise err(section, key, f"must be an integer >= {minimum}, got {value}")
    return int(value)


def _choice(err: _Errors, section: str, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise err(section, key, f"must be one of {', '.join(allowed)}, got {_kind(value)}")
    return value


# ------------------------------------------------------------------------------------------------
# the bundled configs (the folder validation/, shipped as the package dysonsgd.configs)
# ------------------------------------------------------------------------------------------------

#: the package whose ``*.toml`` files are the bundled configs
BUNDLED_PACKAGE = "dysonsgd.configs"
#: the bundled validation config that ``dysonsgd validate`` runs without CONFIG
DEFAULT_VALIDATION = "quick"


def bundled_configs() -> tuple[str, ...]:
    """Names of the bundled configs (``quick``, ``paper-small``, ...), sorted."""
    return tuple(sorted(p.name.removesuffix(".toml") for p in files(BUNDLED_PACKAGE).iterdir()
                        if p.name.endswith(".toml")))


def bundled_config(name: str) -> Traversable:
    """The bundled config ``name`` (with or without ``.toml``), found with importlib.resources,
    so that it works from an installed wheel; a Path in a source checkout."""
    stem = str(name).removesuffix(".toml")
    if stem not in bundled_configs():
        raise ConfigError.at(str(name), TOP, "file", f"no bundled config {stem!r} (bundled: "
                                                     f"{', '.join(bundled_configs())})")
    return files(BUNDLED_PACKAGE) / f"{stem}.toml"


def find_config(name_or_path: str | Path) -> Path | Traversable:
    """A config given as a path to a file, or else as the name of a bundled config."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.name == str(name_or_path) and path.name.removesuffix(".toml") in bundled_configs():
        return bundled_config(path.name)
    raise ConfigError.at(path, TOP, "file", f"{str(path)!r} does not exist or is not a file, nor "
                                            f"a bundled config ({', '.join(bundled_configs())})")
