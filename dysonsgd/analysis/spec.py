"""What ``dysonsgd validate`` checks, as typed values: the target of a config's ``[validate]`` and
``[expect]`` tables.

:func:`dysonsgd.runs.validation_config.load_validation_config` reads a TOML file into these
once, refusing every bad key with a :class:`~dysonsgd.runs.config.ConfigError`;
:mod:`dysonsgd.analysis.validation` takes them as they are. They live here, in the analysis
layer, because the checks read them and ``runs`` sits above ``analysis``.

ValidationSpec
    Tolerances of the checks (levels and margins), options of the forecasts, known findings.
Finding
    A known disagreement of a check, declared in ``[expect] findings``.
ExpectedPhases
    The cells to check, ``(i_T, i_S) -> phase``.
DiagramSpec, Box, Transition
    The qualitative checks of a whole (T, 1/sigma_W) diagram (``[expect.diagram]``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from dysonsgd.analysis.phase import PHASES as _LABELS

__all__ = [
    "CHECKS",
    "DEFAULT_OPTIONS",
    "DEFAULT_TOLERANCES",
    "FINDING_EXPECTATIONS",
    "FINDING_KEYS",
    "FORECASTS",
    "GRID_CHECKS",
    "PHASES",
    "Box",
    "DiagramSpec",
    "ExpectedPhases",
    "Finding",
    "Transition",
    "ValidationSpec",
]

#: every tolerance of the checks, with its default, declared before any run (docs/validate.md)
DEFAULT_TOLERANCES: Mapping[str, float] = MappingProxyType({
    # family-wise significance level of each family of tests of one forecast (Holm within it)
    "alpha": 0.05,
    # equivalence margin of mean S(t_f) predicted / observed: [1/m, m]; 1.25 is the 80-125 %
    # rule of bioequivalence, a forecast within 25 % of the observed mean
    "equivalence_margin": 1.25,
    # not a tolerance but the definition of "observed to converge": S(t_f) / S(t_f / 2) - 1 <=
    # this, S grew by at most 15 % over the second half of training
    "growth_threshold": 0.15,
})

#: the checks of one cell per forecast, in report order (:mod:`dysonsgd.analysis.scoring`)
CHECKS = ("phase", "positivity", "calibration_spacing", "calibration_levels", "calibration_sde",
          "spacing_mean")
#: the checks of the whole run
GRID_CHECKS = ("convergence_verdict",)

#: phases a cell may be expected in: the labels of :func:`dysonsgd.analysis.phase.classify_phases`
#: but 'diverged'
PHASES = tuple(p for p in _LABELS if p != "diverged")

#: the forecasts validate can score (:mod:`dysonsgd.analysis.forecasts`)
FORECASTS = ("replay", "cross-fitted", "closed-loop")

#: options of the prediction, with defaults
DEFAULT_OPTIONS: Mapping[str, Any] = MappingProxyType({
    "start_snapshot": 1,
    # >= 50 paths per model: each model's observation is ranked among its own paths
    "paths_per_model": 50,
    "steps_per_interval": 20,
    "drift": "training",
    "seed": 0,
    # the eigenvalue SDE: 'complete' (issue 11), 'continuum' (no finite-lr terms) or 'paper'
    "variant": "complete",
    "forecasts": FORECASTS,
    # the negative and positive controls (analysis.theories), on the replay forecast, with
    # this many paths per model (a control's verdict needs less resolution than a forecast's)
    "controls": True,
    "control_paths": 20,
    # the closed-loop Langevin forecast (2.29): how many models per cell, paths per model, the
    # horizon in SGD steps (the observation there is the run replayed from W2(0)), and the
    # interval in SGD steps between recomputations of the gradient moments (1: every step)
    "closed_loop_models": 10,
    "closed_loop_paths": 5,
    "closed_loop_steps": 100,
    "closed_loop_interval": 1,
})

#: the keys a finding may name
FINDING_KEYS = ("check", "forecast", "phase", "temperature", "inv_sigma_w", "expected", "reason")
#: what a finding may expect: a FAIL, or either verdict (documented as not stable across seeds)
FINDING_EXPECTATIONS = ("FAIL", "either")


@dataclass(frozen=True)
class Finding:
    """A known disagreement (``[expect] findings``): the check is expected to FAIL.

    It covers the cells of ``phase`` (or the one cell at ``temperature``, ``inv_sigma_w``, or
    every checked cell when neither is given) and the forecast named (every forecast if None).
    ``expected = "either"`` declares a check whose verdict is documented as not stable across
    training seeds at the config's scale (its reason says why): neither verdict is a surprise.
    """

    check: str
    reason: str
    expected: str = "FAIL"
    forecast: str | None = None
    phase: str | None = None
    temperature: float | None = None
    inv_sigma_w: float | None = None

    def covers(self, check: str, forecast: str, phase: str, at: tuple[float, float]) -> bool:
        if check != self.check or (self.forecast is not None and forecast != self.forecast):
            return False
        if self.phase is not None and phase != self.phase:
            return False
        if self.temperature is not None and not math.isclose(at[0], self.temperature):
            return False
        return self.inv_sigma_w is None or math.isclose(at[1], self.inv_sigma_w)


#: the cells to check and the phase each should be in, ``(i_T, i_S) -> label``
ExpectedPhases = Mapping[tuple[int, int], str]


class ValidationSpec(NamedTuple):
    """A ``[validate]`` table and the findings of ``[expect]``.

    ``tolerances`` and ``options`` are read-only mappings keyed as :data:`DEFAULT_TOLERANCES`
    and :data:`DEFAULT_OPTIONS` (every key present); ``findings`` the known disagreements.
    """

    tolerances: Mapping[str, float] = DEFAULT_TOLERANCES
    options: Mapping[str, Any] = DEFAULT_OPTIONS
    findings: tuple[Finding, ...] = ()

    @classmethod
    def make(cls, tolerances: Mapping[str, float] | None = None,
             options: Mapping[str, Any] | None = None,
             findings=()) -> ValidationSpec:
        """The defaults, updated with the (already checked) values given."""
        return cls(MappingProxyType({**DEFAULT_TOLERANCES, **(tolerances or {})}),
                   MappingProxyType({**DEFAULT_OPTIONS, **(options or {})}), tuple(findings))

    def expected(self, check: str, forecast: str, phase: str, at: tuple[float, float]) -> str:
        """The expectation of the finding that covers the check ('FAIL' or 'either'), else
        'PASS'."""
        for f in self.findings:
            if f.covers(check, forecast, phase, at):
                return f.expected
        return "PASS"


@dataclass(frozen=True)
class Box:
    """A rectangle of the (T, 1/sigma_W) plane, bounds included (open sides are infinite)."""

    temperature_min: float = -math.inf
    temperature_max: float = math.inf
    inv_sigma_w_min: float = -math.inf
    inv_sigma_w_max: float = math.inf

    def mask(self, temperature: np.ndarray, inv_sigma_w: np.ndarray) -> np.ndarray:
        """(nT, nS) bool: the grid cells ``temperature (nT,) x inv_sigma_w (nS,)`` inside."""
        t, v = np.asarray(temperature)[:, None], np.asarray(inv_sigma_w)[None, :]
        return ((t >= self.temperature_min) & (t <= self.temperature_max)
                & (v >= self.inv_sigma_w_min) & (v <= self.inv_sigma_w_max))


@dataclass(frozen=True)
class Transition:
    """Along the row ``inv_sigma_w``: ordered for T <= ``between[0]``, high-temperature for
    T >= ``between[1]``."""

    inv_sigma_w: float
    between: tuple[float, float]


@dataclass(frozen=True)
class DiagramSpec:
    """An ``[expect.diagram]`` table; what each key checks is
    :func:`dysonsgd.analysis.validation.diagram_checks`. Absent keys are None."""

    ordered_corner: Box | None = None
    loss_ratio_min: float | None = None
    transition: Transition | None = None
    jamming_region: Box | None = None
    feature_correlation_min: float | None = None
    signal_to_noise_level: float | None = None
    signal_to_noise_alpha: float | None = None
    separation_min: float = 1.0
