"""Validation configs: the ``[expect]``, ``[expect.diagram]`` and ``[validate]`` tables, typed.

A validation config is a sweep config (:mod:`dysonsgd.runs.config`, whose grid and training
tables it shares) plus the cells to check and how. :func:`load_validation_config` reads the
whole file once, before any training, into a :class:`ValidationConfig` holding the typed values
of :mod:`dysonsgd.analysis.spec`; every problem is a :class:`~dysonsgd.runs.config.ConfigError`
naming the file, the table, the key and the reason, e.g.
``quick.toml: [expect] phases[2].inv_sigma_w: 2 is not in the grid [8.0, 0.00390625]``.
What the keys mean is docs/validate.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np

from dysonsgd._checks import grid_index
from dysonsgd.analysis import predict
from dysonsgd.analysis.spec import (
    CHECKS,
    DEFAULT_OPTIONS,
    DEFAULT_TOLERANCES,
    FINDING_EXPECTATIONS,
    FINDING_KEYS,
    FORECASTS,
    GRID_CHECKS,
    PHASES,
    Box,
    DiagramSpec,
    ExpectedPhases,
    Finding,
    Transition,
    ValidationSpec,
)
from dysonsgd.runs.config import (
    TOP,
    SweepConfig,
    _Errors,
    _is_number,
    _kind,
    _read_toml,
    parse_config,
)

__all__ = [
    "DIAGRAM_KEYS",
    "ValidationConfig",
    "load_validation_config",
    "parse_diagram_table",
    "parse_expect_phases",
    "parse_findings",
    "parse_validate_table",
    "parse_validation_config",
]


@dataclass(frozen=True, eq=False)
class ValidationConfig:
    """A parsed validation config: the sweep to train and what to check on it.

    Attributes
    ----------
    sweep : SweepConfig
        The grid and its training (its raw ``expect`` and ``validate`` tables included).
    spec : ValidationSpec
        Levels, margins and forecast options (``[validate]``) and the known findings
        (``[expect] findings``).
    expected_phases : mapping (i_T, i_S) -> phase
        The cells to check (``[expect] phases``), never empty.
    diagram : DiagramSpec or None
        The checks of the whole diagram (``[expect.diagram]``), if the file has them.
    """

    sweep: SweepConfig
    spec: ValidationSpec
    expected_phases: ExpectedPhases
    diagram: DiagramSpec | None = None

    @property
    def name(self) -> str:
        return self.sweep.name


def load_validation_config(path: str | Path | Traversable) -> ValidationConfig:
    """Read and check a validation config: every table, before any training.

    Raises
    ------
    ConfigError
        As :func:`load_config`, and for any problem of ``[expect]``, ``[expect.diagram]`` and
        ``[validate]``: an unknown key, a wrong type, a value out of range, a cell that is not in
        the grid, no cell to check.
    """
    data, path = _read_toml(path)
    return parse_validation_config(data, source=path)


def parse_validation_config(mapping: Mapping[str, Any], *,
                            source: str | Path | Traversable | None = None) -> ValidationConfig:
    """:func:`parse_config`, then ``[expect]`` and ``[validate]`` into typed values."""
    sweep = parse_config(mapping, source=source)
    err = _Errors(source)
    if len(sweep.batch_sizes) > 1:
        raise err("grid", "batch_size", f"validate checks one batch size, got "
                                        f"{list(sweep.batch_sizes)} (sweep them with `dysonsgd "
                                        "sweep`, or validate one: SweepConfig.for_batch_size)")
    if sweep.model.task != "teacher":
        raise err("training", "task", f"validate checks the teacher-student task (its phase rule "
                                      f"and forecasts are derived for a teacher), got "
                                      f"{sweep.model.task!r}; use `dysonsgd sweep` and "
                                      f"`dysonsgd figures` for it")
    phases = parse_expect_phases(sweep.expect, sweep.temperature, sweep.sigma_w, source=source)
    if not phases:
        raise err("expect", "phases", "no cells to check")
    findings = parse_findings(sweep.expect.get("findings", []), source=source)
    spec = parse_validate_table(sweep.validate, source=source, snapshots=sweep.snapshots,
                                findings=findings)
    diagram = None
    if "diagram" in sweep.expect:
        diagram = parse_diagram_table(sweep.expect["diagram"], source=source)
        inv = 1.0 / np.asarray(sweep.sigma_w)
        if diagram.transition and grid_index(inv, diagram.transition.inv_sigma_w) is None:
            raise err("expect.diagram", "transition", f"inv_sigma_w = "
                      f"{diagram.transition.inv_sigma_w:g} is not in the grid {inv.tolist()}")
    return ValidationConfig(sweep, spec, phases, diagram)


#: checks of each tolerance of ``[validate]``: (the rule in words, the test)
_TOLERANCE_RULES = {
    "alpha": ("lie in (0, 0.5)", lambda v: 0 < v < 0.5),
    "equivalence_margin": ("be > 1", lambda v: v > 1),
    "growth_threshold": ("be > 0", lambda v: v > 0),
}


def parse_validate_table(table: Mapping[str, Any] | None, *,
                         source: str | Path | Traversable | None = None,
                         snapshots: int | None = None, findings=()) -> ValidationSpec:
    """Levels, margins and forecast options from a ``[validate]`` table.

    Parameters
    ----------
    table : mapping or None
        Keys of :data:`~dysonsgd.analysis.spec.DEFAULT_TOLERANCES` and
        :data:`~dysonsgd.analysis.spec.DEFAULT_OPTIONS`; absent keys keep their defaults.
    source : str, Path or Traversable, optional
        The file, for messages.
    snapshots : int, optional
        Snapshots of the run to check: ``start_snapshot`` must
        leave a later one / lie in the run.
    findings : sequence of Finding
        The known disagreements of ``[expect] findings`` (:func:`parse_findings`).
    """
    err = _Errors(source)
    table = {} if table is None else table
    if not isinstance(table, Mapping):
        raise err(TOP, "validate", f"must be a table, got {_kind(table)}")
    tolerances: dict[str, float] = {}
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key in DEFAULT_TOLERANCES:
            if not _is_number(value):
                raise err("validate", key, f"must be a number, got {value!r}")
            rule, ok = _TOLERANCE_RULES[key]
            if not ok(float(value)):
                raise err("validate", key, f"must {rule}, got {float(value)}")
            tolerances[key] = float(value)
        elif key in DEFAULT_OPTIONS:
            options[key] = _option(err, key, value)
        else:
            allowed = ", ".join([*DEFAULT_TOLERANCES, *DEFAULT_OPTIONS])
            raise err("validate", key, f"unknown key (allowed: {allowed})")
    start = options.get("start_snapshot", DEFAULT_OPTIONS["start_snapshot"])
    if snapshots is not None and not start < snapshots - 1:
        raise err("validate", "start_snapshot", f"must be < {snapshots - 1} (the run has "
                                                f"{snapshots} snapshots), got {start}")
    closed = options.get("closed_loop_steps", DEFAULT_OPTIONS["closed_loop_steps"])
    interval = options.get("closed_loop_interval", DEFAULT_OPTIONS["closed_loop_interval"])
    if closed % interval:
        raise err("validate", "closed_loop_interval", f"must divide closed_loop_steps "
                                                      f"({closed}), got {interval}")
    return ValidationSpec.make(tolerances, options, findings)


def _option(err: _Errors, key: str, value: Any) -> Any:
    default = DEFAULT_OPTIONS[key]
    if key == "forecasts":
        if (not isinstance(value, list) or not value
                or any(v not in FORECASTS for v in value) or len(set(value)) < len(value)):
            raise err("validate", key, f"must be a non-empty list of distinct forecasts from "
                                       f"{FORECASTS}, got {value!r}")
        return tuple(value)
    expected = type(default)
    if (isinstance(value, bool) != isinstance(default, bool)) or not isinstance(value, expected):
        raise err("validate", key, f"must be of type {expected.__name__}, got {value!r}")
    if key == "drift" and value not in predict.DRIFT_SOURCES:
        raise err("validate", key, f"must be one of {predict.DRIFT_SOURCES}, got {value!r}")
    if key == "variant" and value not in predict.VARIANTS:
        raise err("validate", key, f"must be one of {predict.VARIANTS}, got {value!r}")
    if key == "control_paths" and value < 2:
        raise err("validate", key, f"must be >= 2, got {value}")
    if key in ("steps_per_interval", "closed_loop_models", "closed_loop_paths",
               "closed_loop_interval", "closed_loop_steps") and value < 1:
        raise err("validate", key, f"must be >= 1, got {value}")
    if key == "paths_per_model" and value < 50:
        raise err("validate", key, f"must be >= 50 (each model's observation is ranked among "
                                   f"its own paths), got {value}")
    if key == "start_snapshot" and value < 0:
        raise err("validate", key, f"must be >= 0, got {value}")
    return value


def parse_findings(entries: Any, *, source: str | Path | Traversable | None = None
                   ) -> tuple[Finding, ...]:
    """The known disagreements of ``[expect] findings``: a list of tables {check, reason,
    forecast?, phase? | temperature? and inv_sigma_w?}, each expecting its check to FAIL.
    ``check`` and ``forecast`` may be lists (one finding per combination)."""
    err = _Errors(source)
    if not isinstance(entries, list):
        raise err("expect", "findings", "must be an array of tables")
    out = []
    for k, entry in enumerate(entries):
        here = f"findings[{k}]"
        if not isinstance(entry, Mapping):
            raise err("expect", here, "must be a table {check, reason, forecast, phase}")
        extra = set(entry) - set(FINDING_KEYS)
        if extra:
            raise err("expect", f"{here}.{sorted(extra)[0]}",
                      f"unknown key (allowed: {', '.join(FINDING_KEYS)})")
        checks = _one_or_list(entry.get("check"))
        if not checks or any(c not in (*CHECKS, *GRID_CHECKS) for c in checks):
            raise err("expect", f"{here}.check", f"must be one of {(*CHECKS, *GRID_CHECKS)} "
                                                 f"or a list of them, got {entry.get('check')!r}")
        if not isinstance(entry.get("reason"), str) or not entry["reason"].strip():
            raise err("expect", f"{here}.reason", "must say why the disagreement is expected")
        forecasts = _one_or_list(entry["forecast"]) if "forecast" in entry else [None]
        if not forecasts or any(f is not None and f not in FORECASTS for f in forecasts):
            raise err("expect", f"{here}.forecast", f"must be one of {FORECASTS} or a list of "
                                                    f"them, got {entry['forecast']!r}")
        if "phase" in entry and entry["phase"] not in PHASES:
            raise err("expect", f"{here}.phase", f"must be one of {PHASES}, got "
                                                 f"{entry['phase']!r}")
        for key in ("temperature", "inv_sigma_w"):
            if key in entry and not (_is_number(entry[key]) and entry[key] > 0):
                raise err("expect", f"{here}.{key}", f"must be a number > 0, got "
                                                     f"{entry[key]!r}")
        expected = entry.get("expected", "FAIL")
        if expected not in FINDING_EXPECTATIONS:
            raise err("expect", f"{here}.expected", f"must be one of {FINDING_EXPECTATIONS}, "
                                                    f"got {expected!r}")
        out += [Finding(check=c, reason=entry["reason"], forecast=f, phase=entry.get("phase"),
                        expected=expected,
                        temperature=_float_or_none(entry.get("temperature")),
                        inv_sigma_w=_float_or_none(entry.get("inv_sigma_w")))
                for c in checks for f in forecasts]
    return tuple(out)


def _one_or_list(value) -> list:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _float_or_none(value) -> float | None:
    return None if value is None else float(value)


def parse_expect_phases(expect: Mapping[str, Any] | None, temperature, sigma_w, *,
                        source: str | Path | Traversable | None = None) -> ExpectedPhases:
    """The expected phase of each checked cell from an ``[expect]`` table.

    ``phases = [{temperature = T, inv_sigma_w = v, phase = "ordered"}, ...]``; each
    (T, 1/sigma_W) must be a cell of the grid ``temperature x sigma_w`` (``sigma_w = s`` may
    replace ``inv_sigma_w``). The other keys are ``diagram`` (:func:`parse_diagram_table`) and
    ``findings`` (:func:`parse_findings`).

    Returns
    -------
    dict (i_T, i_S) -> phase label
    """
    err = _Errors(source)
    expect = {} if expect is None else expect
    for key in expect:
        if key not in ("phases", "diagram", "findings"):
            raise err("expect", key, "unknown key (allowed: phases, diagram, findings)")
    entries = expect.get("phases", [])
    if not isinstance(entries, list):
        raise err("expect", "phases", "must be an array of tables")
    temperature = np.asarray(temperature, dtype=float)
    sigma_w = np.asarray(sigma_w, dtype=float)
    out: dict[tuple[int, int], str] = {}
    for k, entry in enumerate(entries):
        here = f"phases[{k}]"
        if not isinstance(entry, Mapping):
            raise err("expect", here, "must be a table {temperature, inv_sigma_w, phase}")
        extra = set(entry) - {"temperature", "inv_sigma_w", "sigma_w", "phase"}
        if extra:
            raise err("expect", f"{here}.{sorted(extra)[0]}", "unknown key (allowed: "
                      "temperature, inv_sigma_w, sigma_w, phase)")
        if entry.get("phase") not in PHASES:
            raise err("expect", f"{here}.phase",
                      f"must be one of {PHASES}, got {entry.get('phase')!r}")
        if ("inv_sigma_w" in entry) == ("sigma_w" in entry):
            raise err("expect", here, "give exactly one of inv_sigma_w and sigma_w")
        axis = "inv_sigma_w" if "inv_sigma_w" in entry else "sigma_w"
        values = (entry.get("temperature"), entry[axis])
        if not all(_is_number(v) and v > 0 for v in values):
            raise err("expect", here, f"temperature and {axis} must be numbers > 0, got "
                                      f"{values[0]!r} and {values[1]!r}")
        t = float(values[0])
        s = 1.0 / float(values[1]) if axis == "inv_sigma_w" else float(values[1])
        i_t, i_s = grid_index(temperature, t), grid_index(sigma_w, s)
        if i_t is None:
            raise err("expect", f"{here}.temperature",
                      f"{t:g} is not in the grid {temperature.tolist()}")
        if i_s is None:
            raise err("expect", f"{here}.inv_sigma_w",
                      f"{1 / s:g} is not in the grid {(1 / sigma_w).tolist()}")
        out[(i_t, i_s)] = str(entry["phase"])
    return out


DIAGRAM_KEYS = ("ordered_corner", "loss_ratio_min", "transition", "jamming_region",
                "feature_correlation_min", "signal_to_noise_level", "separation_min",
                "signal_to_noise_alpha")
_BOX_KEYS = ("temperature_min", "temperature_max", "inv_sigma_w_min", "inv_sigma_w_max")


def parse_diagram_table(table: Mapping[str, Any], *,
                        source: str | Path | Traversable | None = None) -> DiagramSpec:
    """Check an ``[expect.diagram]`` table (the keys of
    :func:`dysonsgd.analysis.validation.diagram_checks`) and type it."""
    err = _Errors(source)
    if not isinstance(table, Mapping):
        raise err("expect", "diagram", f"must be a table, got {_kind(table)}")
    for key in table:
        if key not in DIAGRAM_KEYS:
            raise err("expect.diagram", key, f"unknown key (allowed: {', '.join(DIAGRAM_KEYS)})")
    boxes = {}
    for key in ("ordered_corner", "jamming_region"):
        box = table.get(key)
        if box is None:
            continue
        if (not isinstance(box, Mapping) or set(box) - set(_BOX_KEYS)
                or not all(_is_number(v) for v in box.values())):
            raise err("expect.diagram", key,
                      "must be a table of temperature_min/max, inv_sigma_w_min/max")
        boxes[key] = Box(**{k: float(v) for k, v in box.items()})
    transition = None
    if "transition" in table:
        tr = table["transition"]
        between = tr.get("between") if isinstance(tr, Mapping) else None
        if (not isinstance(between, list) or len(between) != 2
                or not all(_is_number(v) for v in between) or not between[0] < between[1]
                or not _is_number(tr.get("inv_sigma_w"))):
            raise err("expect.diagram", "transition", "must be {inv_sigma_w = v, between = "
                                                      "[T_lo, T_hi]} with T_lo < T_hi")
        transition = Transition(float(tr["inv_sigma_w"]), (float(between[0]), float(between[1])))
    levels = {}
    if "signal_to_noise_alpha" in table:
        value = table["signal_to_noise_alpha"]
        if not _is_number(value) or not 0 < value < 0.5:
            raise err("expect.diagram", "signal_to_noise_alpha", f"must lie in (0, 0.5), got "
                                                                 f"{value!r}")
    for key in ("loss_ratio_min", "feature_correlation_min", "signal_to_noise_level",
                "signal_to_noise_alpha",
                "separation_min"):
        if key in table:
            if not _is_number(table[key]) or table[key] <= 0:
                raise err("expect.diagram", key, f"must be a positive number, got "
                                                 f"{table[key]!r}")
            levels[key] = float(table[key])
    return DiagramSpec(**boxes, transition=transition, **levels)
