"""Does the stochastic theory predict what training does? The checks behind ``dysonsgd validate``.

Given a trained run, :func:`evaluate` measures K and V along training, integrates Dyson Brownian
motion (4.3) and the spacing SDE (4.8) per model from the measured coefficients
(:mod:`dysonsgd.analysis.predict`), and compares prediction with observation, cell by cell:

``spacing_ks``
    KS test (two-sample) of the predicted against the observed distribution of the mean level
    spacing S (4.5) at the last snapshot (DBM prediction); PASS when p >= ``ks_alpha``. The KS
    distance and the Wasserstein distance (in units of the observed spread) at every snapshot
    are reported alongside.
``spacing_mean``
    Ratio of predicted to observed mean S at the last snapshot; PASS when the DBM ratio lies
    within [1/r, r], ``r = spacing_mean_ratio_max``, and the ratio of the one-particle SDE
    (4.8) within [1/r', r'], ``r' = sde_mean_ratio_max``.
``eigenvalue_mean``, ``eigenvalue_spread``
    The ensemble mean of every eigenvalue x_i(t) against the observed one, relative to the
    observed width of the spectrum x_N - x_1: max over i and snapshots <= ``trajectory_mean_max``;
    and the spread (standard deviation over paths / over models) of the largest eigenvalue,
    which carries S: sd_pred / sd_obs within [1/r, r], ``r = spread_ratio_max``, at every
    snapshot. (The smallest levels are compared in the report, not checked: (4.3) as printed has
    no term keeping X = W W^T >= 0, and its small levels go negative at T >= 2^-2; the fraction
    of paths with x_1 < 0 is reported as ``negative_fraction``.)
``convergence_verdict``
    (4.15) against the observed behaviour of S: observed converged when S grew by at most
    ``growth_threshold`` over the second half of training. PASS when the fraction of the
    cell's models converged by (4.15) is within ``verdict_fraction_tolerance`` of the fraction
    observed to converge (figure 8 works with these fractions); the per-model agreement is
    reported alongside.
``phase``
    The label of :func:`dysonsgd.analysis.phase.classify_phases` against the expected one.

Every check and its tolerance comes from the config's ``[validate]`` table, typed as a
:class:`~dysonsgd.analysis.spec.ValidationSpec` (defaults in
:data:`~dysonsgd.analysis.spec.DEFAULT_TOLERANCES`); which cells each check applies to is
configurable by phase (``[validate.applies]``), because the theory is not claimed to be equally
accurate in every phase: see docs/validate.md for what was measured. :func:`diagram_checks` adds
the checks of a whole diagram (``[expect.diagram]``).

:func:`evaluate` runs the pipeline (:func:`measure`, then :func:`predict_cell` per checked cell)
and one function per family of checks (:func:`phase_check`, :func:`spacing_checks`,
:func:`trajectory_checks`, :func:`verdict_check`, :func:`diagram_checks`); it returns an
:class:`Outcome`. Numbers only: reading configs is :mod:`dysonsgd.runs.validation_config`, the
report :mod:`dysonsgd.plots.report`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from dysonsgd._checks import InputError, grid_index
from dysonsgd.analysis import phase, predict
from dysonsgd.analysis.spec import PHASES, DiagramSpec, ExpectedPhases, ValidationSpec
from dysonsgd.measure.spectrum import mean_level_spacing

__all__ = [
    "CellPrediction",
    "Check",
    "Outcome",
    "RunMeasurements",
    "diagram_checks",
    "evaluate",
    "measure",
    "observed_convergence",
    "phase_check",
    "predict_cell",
    "spacing_checks",
    "spacing_traces",
    "trajectory_checks",
    "verdict_check",
]

#: where a check was made: (T, 1/sigma_W) of its cell, NaN for the whole diagram
Where = tuple[float, float]


@dataclass(frozen=True)
class Check:
    """One check on one cell: its metric, the tolerance and the verdict."""

    name: str
    temperature: float
    inv_sigma_w: float
    metric: float
    tolerance: str
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "temperature": self.temperature,
                "inv_sigma_w": self.inv_sigma_w, "metric": self.metric,
                "tolerance": self.tolerance, "verdict": "PASS" if self.passed else "FAIL",
                **self.details}


def _check(name: str, at: Where, metric: float, tolerance: str, passed: bool,
           **details: Any) -> Check:
    return Check(name, at[0], at[1], float(metric), tolerance, bool(passed), details)


@dataclass(frozen=True)
class Outcome:
    """What :func:`evaluate` found.

    Attributes
    ----------
    checks : tuple of Check
        In report order: per cell ``phase``, ``spacing_ks``, ``spacing_mean``,
        ``eigenvalue_mean``, ``eigenvalue_spread``, ``convergence_verdict`` (those that apply to
        its phase), then the diagram's.
    cells : tuple of dict
        Per checked cell: T, 1/sigma_W, expected and found phase, medians, spacing statistics,
        (4.15) and observed converged fractions (plain numbers, ready for JSON).
    traces : mapping (T, 1/sigma_W) -> dict
        :func:`spacing_traces` of every predicted cell, for the report's figure.
    options, tolerances, applies : mappings
        The :class:`~dysonsgd.analysis.spec.ValidationSpec` the checks used.
    """

    checks: tuple[Check, ...]
    cells: tuple[dict[str, Any], ...]
    traces: Mapping[Where, dict[str, Any]]
    options: Mapping[str, Any]
    tolerances: Mapping[str, float]
    applies: Mapping[str, tuple[str, ...]]

    @property
    def passed(self) -> bool:
        """Every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def n_failed(self) -> int:
        return sum(not c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``--json`` (the traces left out)."""
        return {"passed": self.passed, "checks": [c.as_dict() for c in self.checks],
                "cells": [dict(c) for c in self.cells], "options": dict(self.options),
                "tolerances": dict(self.tolerances),
                "applies": {k: list(v) for k, v in self.applies.items()}}


# ------------------------------------------------------------------------------------------------
# the pipeline: measure the run once, predict cell by cell
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunMeasurements:
    """What the checks of every cell read from a run, measured once.

    Attributes
    ----------
    epochs : (n_snap,) snapshot epochs
    coeffs : MeasuredCoefficients
        K, V and the eigenvalues at every snapshot (:func:`dysonsgd.analysis.predict.measure_run`).
    summary : dict
        :func:`dysonsgd.analysis.phase.phase_summary`.
    labels : (nT, nS) str
        :func:`dysonsgd.analysis.phase.classify_phases`.
    converged_415, fraction_415 : (nT, nS, nR) bool, (nT, nS)
        (4.15) per model at the last snapshot and the converged fraction per cell
        (:func:`dysonsgd.analysis.phase.signal_to_noise_convergence`).
    observed_converged : (nT, nS, nR) bool
        :func:`observed_convergence` of S.
    """

    epochs: np.ndarray
    coeffs: predict.MeasuredCoefficients
    summary: dict[str, np.ndarray]
    labels: np.ndarray
    converged_415: np.ndarray
    fraction_415: np.ndarray
    observed_converged: np.ndarray


def _quiet(message: str) -> None:
    return None


def measure(result, spec: ValidationSpec, progress: Callable[[str], None] | None = None
            ) -> RunMeasurements:
    """K and V along training, the phases, (4.15) and the observed convergence of a run."""
    say = progress or _quiet
    say("measuring K and V along training")
    coeffs = predict.measure_run(result, drift=spec.options["drift"])
    say("classifying phases")
    summary = phase.phase_summary(result)
    labels = phase.classify_phases(summary["test_loss"], summary["feature_correlation"],
                                   summary["diverged"])
    converged, fraction = phase.signal_to_noise_convergence(result, spec.options["convention"],
                                                            stats=coeffs.last)
    observed = observed_convergence(coeffs.spacing, spec.tolerances["growth_threshold"])
    return RunMeasurements(np.asarray(result.snapshot_epochs), coeffs, summary, labels,
                           converged, fraction, observed)


@dataclass(frozen=True)
class CellPrediction:
    """One cell's predictions next to its observations, from the start snapshot on.

    ``R`` counts the cell's models that did not diverge, ``P`` the predicted paths.

    Attributes
    ----------
    epochs : (n_t,) snapshot epochs
    x_pred : masked (n_t, P, N)
        Eigenvalues by Dyson Brownian motion (4.3).
    x_obs : (R, n_t, N) observed eigenvalues
    s_dbm : masked (n_t, P)
        Mean level spacing S (4.5) of the (4.3) paths.
    s_sde : masked (n_t, P)
        S by the spacing SDE (4.8).
    s_obs : (R, n_t) observed S
    paths_per_model : int
        Paths are model-major: path p belongs to the model p // paths_per_model.
    variant : the eigenvalue SDE of x_pred, s_dbm, s_sde (:data:`predict.VARIANTS`)
    paper : CellPrediction or None
        The same cell by (4.3) and (4.8) as printed, when ``variant`` is another one.
    """

    epochs: np.ndarray
    x_pred: np.ma.MaskedArray
    x_obs: np.ndarray
    s_dbm: np.ma.MaskedArray
    s_sde: np.ma.MaskedArray
    s_obs: np.ndarray
    paths_per_model: int = 1
    variant: str = "paper"
    paper: CellPrediction | None = None


def predict_cell(run: RunMeasurements, cell: tuple[int, int],
                 options: Mapping[str, Any], *, variant: str | None = None) -> CellPrediction:
    """Integrate the eigenvalue SDE and the spacing SDE for the models of one cell.

    ``variant`` (default ``options["variant"]``, see :data:`predict.VARIANTS`); for a variant
    other than 'paper' the paper's (4.3) and (4.8) are predicted too (``.paper``).
    """
    i_t, i_s = cell
    variant = options["variant"] if variant is None else variant
    start = options["start_snapshot"]
    kw = {"start": start, "paths_per_model": options["paths_per_model"],
          "steps_per_interval": options["steps_per_interval"], "seed": options["seed"],
          "variant": variant}
    _, x_pred, _ = predict.predict_eigenvalues(run.coeffs, cell, **kw)
    _, s_pred, _ = predict.predict_spacing(run.coeffs, cell, **kw)
    keep = ~run.coeffs.diverged[i_t, i_s]
    paper = None if variant == "paper" else predict_cell(run, cell, options, variant="paper")
    return CellPrediction(epochs=run.epochs[start:], x_pred=x_pred,
                          x_obs=run.coeffs.eigenvalues[i_t, i_s, keep, start:],
                          s_dbm=mean_level_spacing(x_pred, assume_sorted=True),
                          s_sde=s_pred[..., 0], s_obs=run.coeffs.spacing[i_t, i_s, keep, start:],
                          paths_per_model=int(options["paths_per_model"]), variant=variant,
                          paper=paper)


def evaluate(result, expected_phases: ExpectedPhases, spec: ValidationSpec | None = None, *,
             diagram: DiagramSpec | None = None,
             progress: Callable[[str], None] | None = None) -> Outcome:
    """Run every check of the module docstring on ``result``.

    Parameters
    ----------
    result : dysonsgd.train.ensemble.EnsembleResult
    expected_phases : mapping (i_T, i_S) -> phase label
        The cells to check and the phase each should be in (cells absent are not checked).
    spec : ValidationSpec, optional
        Tolerances, applies and prediction options (default: the defaults).
    diagram : DiagramSpec, optional
        Checks of the whole phase diagram (:func:`diagram_checks`).
    progress : callable, optional
        Called with a short message before each stage (the CLI prints it).
    """
    spec = ValidationSpec() if spec is None else spec
    tol, applies, options = spec
    say = progress or _quiet
    n_snap = len(result.snapshot_epochs)
    if not options["start_snapshot"] < n_snap - 1:
        raise InputError(f"[validate] start_snapshot: must be < {n_snap - 1} (the run has "
                         f"{n_snap} snapshots), got {options['start_snapshot']}")
    for cell, label in expected_phases.items():
        if label not in PHASES:
            raise InputError(f"expected phase of cell {cell}: must be one of {PHASES}, got "
                             f"{label!r}")
    run = measure(result, spec, say)
    checks: list[Check] = []
    cells: list[dict[str, Any]] = []
    traces: dict[Where, dict[str, Any]] = {}
    for (i_t, i_s), expected in expected_phases.items():
        at = (float(result.temperature[i_t]), float(1.0 / result.sigma_w[i_s]))
        keep = ~run.coeffs.diverged[i_t, i_s]
        info: dict[str, Any] = {
            "temperature": at[0], "inv_sigma_w": at[1], "expected_phase": expected,
            "phase": str(run.labels[i_t, i_s]), "diverged_fraction": float(1 - keep.mean()),
            "test_loss_median": float(np.nanmedian(run.summary["test_loss"][i_t, i_s])),
            "feature_correlation_median":
                float(np.nanmedian(run.summary["feature_correlation"][i_t, i_s])),
        }
        cells.append(info)
        found = [phase_check(run.labels[i_t, i_s], expected, at)]
        if keep.any():
            say(f"integrating (4.3) and (4.8) at T = {at[0]:g}, 1/sigma_W = {at[1]:g}")
            pred = predict_cell(run, (i_t, i_s), options)
            info["variant"] = pred.variant
            for family in (spacing_checks, trajectory_checks):
                metrics, more = family(pred, tol, at)
                info.update(metrics)
                found += more
                if pred.paper is not None:
                    paper, _ = family(pred.paper, tol, at)
                    info.update({f"{k}_paper": paper[k] for k in PAPER_KEYS if k in paper})
            traces[at] = spacing_traces(pred.epochs, pred.s_obs, pred.s_dbm, pred.s_sde)
            metrics, verdict = verdict_check(run.converged_415[i_t, i_s, keep],
                                             run.observed_converged[i_t, i_s, keep], tol, at)
            info.update(metrics)
            found.append(verdict)
        checks += [c for c in found if expected in applies[c.name]]
    if diagram is not None:
        fraction = np.where(run.coeffs.diverged.all(axis=-1), np.nan, run.fraction_415)
        checks += diagram_checks(diagram, result.temperature, 1.0 / result.sigma_w, run.labels,
                                 run.summary["test_loss"], run.summary["feature_correlation"],
                                 fraction)
    return Outcome(tuple(checks), tuple(cells), traces, options, tol, applies)


# ------------------------------------------------------------------------------------------------
# the checks of one cell, family by family
# ------------------------------------------------------------------------------------------------


#: the metrics of the paper's (4.3), (4.8) reported beside those of the complete equation
PAPER_KEYS = ("spacing_dbm_mean", "spacing_sde_mean", "spacing_dbm_ratio",
              "spacing_dbm_ratio_ci95", "spacing_ks_pvalue", "broken_paths", "negative_fraction",
              "trajectory_mean_worst", "top_spread_ratio_worst")


def phase_check(label: str, expected: str, at: Where) -> Check:
    """``phase``: the label of :func:`dysonsgd.analysis.phase.classify_phases` is the expected
    one."""
    return _check("phase", at, float(label == expected), f"== {expected}", label == expected,
                  observed=str(label))


def _compare_spacing(pred: np.ndarray, obs: np.ndarray) -> tuple[float, float, float]:
    """KS distance, KS p-value, and Wasserstein distance in units of the observed spread."""
    ks = stats.ks_2samp(pred, obs)
    wasserstein = stats.wasserstein_distance(pred, obs) / max(obs.std(), 1e-300)
    return float(ks.statistic), float(ks.pvalue), float(wasserstein)


#: bootstrap resamples (over models) of the interval of spacing_dbm_mean / spacing_observed_mean
BOOTSTRAP_RESAMPLES = 2000


def spacing_ratio_interval(predicted: np.ma.MaskedArray, observed: np.ndarray,
                           paths_per_model: int, *, level: float = 0.95, seed: int = 0
                           ) -> tuple[float, float]:
    """Bootstrap interval of mean S predicted / mean S observed, resampling MODELS.

    The paths of one model share its coefficients and start, so they are not independent: a
    resample draws models with replacement and takes all of each model's paths (and its
    observed S) with it. Percentile interval at ``level`` from :data:`BOOTSTRAP_RESAMPLES`.

    Parameters
    ----------
    predicted : masked (R * paths_per_model,), model-major; observed : (R,)
    """
    r = observed.size
    values = np.ma.filled(predicted.astype(float), np.nan).reshape(r, paths_per_model)
    ok = np.isfinite(values)
    sums, counts = np.where(ok, values, 0.0).sum(axis=1), ok.sum(axis=1)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, r, size=(BOOTSTRAP_RESAMPLES, r))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (sums[pick].sum(1) / counts[pick].sum(1)) / observed[pick].mean(1)
    lo, hi = np.nanquantile(ratio, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def spacing_checks(pred: CellPrediction, tolerances: Mapping[str, float], at: Where
                   ) -> tuple[dict[str, Any], list[Check]]:
    """``spacing_ks`` and ``spacing_mean``: the distribution and the mean of S (4.5).

    Returns
    -------
    metrics : dict for the cell's row (KS and Wasserstein distances at every snapshot after
        the start, the means of S at the last one, the number of broken paths)
    checks : [spacing_ks, spacing_mean]
    """
    by_snap = [_compare_spacing(np.ma.compressed(pred.s_dbm[k]), pred.s_obs[:, k])
               for k in range(1, pred.s_obs.shape[1])]
    ks_d, ks_p, wass = by_snap[-1]
    s_dbm = np.ma.compressed(pred.s_dbm[-1])
    s_sde = np.ma.compressed(pred.s_sde[-1])
    s_obs = pred.s_obs[:, -1]
    ratio_dbm = float(s_dbm.mean() / s_obs.mean())
    ratio_sde = float(s_sde.mean() / s_obs.mean())
    metrics = {
        "spacing_epochs": [int(e) for e in pred.epochs[1:]],
        "spacing_ks_by_snapshot": [d for d, _, _ in by_snap],
        "spacing_wasserstein_by_snapshot": [w for _, _, w in by_snap],
        "spacing_observed_mean": float(s_obs.mean()),
        "spacing_dbm_mean": float(s_dbm.mean()), "spacing_sde_mean": float(s_sde.mean()),
        "spacing_dbm_ratio": ratio_dbm,
        "spacing_dbm_ratio_ci95": list(spacing_ratio_interval(pred.s_dbm[-1], s_obs,
                                                              pred.paths_per_model)),
        "spacing_ks_distance": ks_d, "spacing_ks_pvalue": ks_p,
        "spacing_wasserstein_over_sd": wass,
        "broken_paths": int(np.ma.getmaskarray(pred.x_pred)[-1].any(-1).sum()),
        "paths": int(pred.x_pred.shape[1]),
    }
    alpha = tolerances["ks_alpha"]
    r, r_sde = tolerances["spacing_mean_ratio_max"], tolerances["sde_mean_ratio_max"]
    worst_dbm = max(ratio_dbm, 1 / ratio_dbm)
    worst_sde = max(ratio_sde, 1 / ratio_sde)
    return metrics, [
        _check("spacing_ks", at, ks_p, f"p >= {alpha:g}", ks_p >= alpha, ks_distance=ks_d,
               wasserstein_over_sd=wass),
        _check("spacing_mean", at, worst_dbm, f"<= {r:g} (DBM), <= {r_sde:g} (4.8)",
               worst_dbm <= r and worst_sde <= r_sde, dbm_ratio=ratio_dbm, sde_ratio=ratio_sde),
    ]


def trajectory_checks(pred: CellPrediction, tolerances: Mapping[str, float], at: Where
                      ) -> tuple[dict[str, Any], list[Check]]:
    """``eigenvalue_mean`` and ``eigenvalue_spread``: the eigenvalue trajectories x_i(t).

    The ensemble mean of every level against the observed one relative to the observed width
    x_N - x_1, and the spread of the largest level, at every snapshot after the start (which
    is shared by construction).

    Returns
    -------
    metrics : dict (worst relative mean error, worst spread ratio, fraction of paths with
        x_1 < 0 at the end, the final relative error of each level)
    checks : [eigenvalue_mean, eigenvalue_spread]
    """
    mean_obs, sd_obs = pred.x_obs.mean(axis=0), pred.x_obs.std(axis=0)  # (n_t, N)
    mean_pred = pred.x_pred.mean(axis=1).filled(np.nan)
    sd_pred = pred.x_pred.std(axis=1).filled(np.nan)
    later = slice(1, None)
    width = mean_obs[later, -1] - mean_obs[later, 0]
    rel = np.abs(mean_pred[later] - mean_obs[later]) / np.maximum(width, 1e-300)[:, None]
    mean_worst = float(np.nanmax(rel))
    top = sd_pred[later, -1] / np.maximum(sd_obs[later, -1], 1e-300)
    spread_worst = float(np.nanmax(np.maximum(top, 1 / top)))
    negative = float(np.mean(np.ma.filled(pred.x_pred[-1, :, 0], np.nan) < 0))
    metrics = {"trajectory_mean_worst": mean_worst, "top_spread_ratio_worst": spread_worst,
               "negative_fraction": negative, "level_mean_error_final": rel[-1].tolist()}
    m, s = tolerances["trajectory_mean_max"], tolerances["spread_ratio_max"]
    return metrics, [_check("eigenvalue_mean", at, mean_worst, f"<= {m:g}", mean_worst <= m),
                     _check("eigenvalue_spread", at, spread_worst, f"<= {s:g}",
                            spread_worst <= s)]


def observed_convergence(spacing: np.ndarray, growth_threshold: float) -> np.ndarray:
    """Per model: did S (4.5) stop growing? S(t_f) / S(t_half) - 1 <= ``growth_threshold``.

    Parameters
    ----------
    spacing : ndarray, shape (..., n_snap)
        S at the snapshots; the middle snapshot is ``n_snap // 2``.
    """
    spacing = np.asarray(spacing, dtype=float)
    half = spacing.shape[-1] // 2
    return spacing[..., -1] / spacing[..., half] - 1.0 <= growth_threshold


def verdict_check(converged_415: np.ndarray, observed: np.ndarray,
                  tolerances: Mapping[str, float], at: Where) -> tuple[dict[str, Any], Check]:
    """``convergence_verdict``: the fraction of a cell's models converged by (4.15) against the
    fraction observed to converge (:func:`observed_convergence`), both (R,) bool."""
    agree = float(np.mean(converged_415 == observed))
    gap = float(abs(converged_415.mean() - observed.mean()))
    metrics = {"converged_415_fraction": float(converged_415.mean()),
               "observed_converged_fraction": float(observed.mean()),
               "verdict_agreement": agree}
    tol = tolerances["verdict_fraction_tolerance"]
    return metrics, _check("convergence_verdict", at, gap, f"<= {tol:g}", gap <= tol,
                           converged_415=float(converged_415.mean()),
                           observed_converged=float(observed.mean()), per_model_agreement=agree)


# ------------------------------------------------------------------------------------------------
# the whole diagram
# ------------------------------------------------------------------------------------------------


def diagram_checks(spec: DiagramSpec, temperature, inv_sigma_w, labels: np.ndarray,
                   test_loss: np.ndarray, feature_correlation: np.ndarray,
                   converged_fraction: np.ndarray) -> list[Check]:
    """Qualitative checks of a whole (T, 1/sigma_W) diagram, as stated in the paper.

    ``loss_ratio_min`` with ``ordered_corner``: the median test loss of the corner's cells is at
    least this factor below the median over the cells labelled high-temperature, and below that
    over the cells labelled jamming (cell values are ensemble medians).
    ``transition = {inv_sigma_w, between = [lo, hi]}``: along that row every cell with
    T <= lo is ordered and every cell with T >= hi is high-temperature.
    ``jamming_region`` with ``feature_correlation_min``: G(t_f, 0) stays high there.
    ``signal_to_noise_level`` with ``separation_min``: on rows with an ordered cell, the (4.15)
    converged fraction is >= the level on ordered cells and < it on high-temperature cells, for
    at least the fraction ``separation_min`` of those cells.

    Arrays are (nT, nS) cell values, except ``test_loss`` and ``feature_correlation`` (nT, nS,
    nR) per model. Checks are reported at T = 1/sigma_W = NaN (they concern the whole grid).
    """
    temperature = np.asarray(temperature, dtype=float)
    inv = np.asarray(inv_sigma_w, dtype=float)
    loss = np.nanmedian(test_loss, axis=-1)
    g = np.nanmedian(feature_correlation, axis=-1)
    out: list[Check] = []
    nan = float("nan")
    if spec.loss_ratio_min is not None and spec.ordered_corner is not None:
        corner = spec.ordered_corner.mask(temperature, inv)
        regions = [loss[labels == name] for name in ("high-temperature", "jamming")]
        regions = [r for r in regions if r.size]
        if corner.any() and regions:
            ratio = float(min(np.nanmedian(r) for r in regions) / np.nanmedian(loss[corner]))
            out.append(Check("diagram_loss_ratio", nan, nan, ratio,
                             f">= {spec.loss_ratio_min:g}", ratio >= spec.loss_ratio_min,
                             {"corner_cells": int(corner.sum())}))
    if spec.transition is not None:
        row = grid_index(inv, spec.transition.inv_sigma_w)
        lo, hi = spec.transition.between
        if row is not None:
            col = labels[:, row]
            ok = bool(np.all(col[temperature <= lo] == "ordered")
                      and np.all(col[temperature >= hi] == "high-temperature"))
            out.append(Check("diagram_transition", nan, float(spec.transition.inv_sigma_w),
                             float(ok), f"ordered at T <= {lo:g}, high-temperature at T >= "
                             f"{hi:g}", ok, {"labels": [str(x) for x in col]}))
    if spec.jamming_region is not None and spec.feature_correlation_min is not None:
        box = spec.jamming_region.mask(temperature, inv)
        if box.any():
            low = float(np.nanmin(g[box]))
            out.append(Check("diagram_jamming_memory", nan, nan, low,
                             f">= {spec.feature_correlation_min:g}",
                             low >= spec.feature_correlation_min, {"cells": int(box.sum())}))
    if spec.signal_to_noise_level is not None:
        level = spec.signal_to_noise_level
        rows = np.any(labels == "ordered", axis=0)
        ordered = (labels == "ordered") & rows[None, :]
        hot = (labels == "high-temperature") & rows[None, :]
        right = np.sum(converged_fraction[ordered] >= level) + np.sum(
            converged_fraction[hot] < level)
        total = int(ordered.sum() + hot.sum())
        if total:
            frac = float(right / total)
            need = spec.separation_min
            out.append(Check("diagram_signal_to_noise", nan, nan, frac, f">= {need:g}",
                             frac >= need, {"level": level, "cells": total}))
    return out


def spacing_traces(epochs, observed: np.ndarray, dbm, sde) -> dict[str, Any]:
    """Mean and standard deviation of S(t) over models (observed) and paths (predictions).

    Parameters
    ----------
    epochs : (n_t,); observed : (R, n_t); dbm, sde : masked arrays (n_t, P)
    """
    return {
        "epochs": np.asarray(epochs, dtype=float),
        "observed": (observed.mean(axis=0), observed.std(axis=0)),
        "dbm": (np.ma.filled(dbm.mean(axis=1), np.nan), np.ma.filled(dbm.std(axis=1), np.nan)),
        "sde": (np.ma.filled(sde.mean(axis=1), np.nan), np.ma.filled(sde.std(axis=1), np.nan)),
    }
