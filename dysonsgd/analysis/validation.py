"""Does the stochastic theory predict what training does? The checks behind ``dysonsgd validate``.

:func:`evaluate` measures a trained run once (K, V and the gradient moments at every snapshot,
the phases, (4.15) and the observed convergence), then scores forecasts of every checked cell
(:mod:`dysonsgd.analysis.forecasts`: ``replay``, ``cross-fitted``, ``closed-loop``) with the
statistical checks of :mod:`dysonsgd.analysis.scoring` (per-model calibration ranks, an
equivalence test of the mean level spacing, positivity), each family Holm-corrected at the
declared level ``alpha``.

Controls (``options["controls"]``, on the replay forecast)
    Every negative control of :data:`~dysonsgd.analysis.theories.NEGATIVE_CONTROLS` (T x 4,
    T / 4, no Coulomb term, V = 0, K sign-flipped, the printed (4.3)) is scored like the theory
    and must FAIL at least one of the checks it targets; the positive control (the observations
    replaced by one more path of the theory per model) must PASS: its calibration tests may not
    reject more often than alpha says (one-sided binomial test at alpha). A
    check's *power* is the fraction of (negative control, cell) pairs aimed at it that it
    FAILs; a statistical check that no control aimed at it could fail in a cell says
    "NO POWER" there instead of PASS, as does a test with too few models to reach the level.
Expectations
    A check is expected to PASS unless ``[expect] findings`` declares a known disagreement
    (:class:`~dysonsgd.analysis.spec.Finding`); :attr:`Outcome.passed` (exit 0) means every
    verdict was the expected one (or had no power) and every control behaved as expected.
``phase``
    The label of :func:`dysonsgd.analysis.phase.classify_phases` against the expected one.
``convergence_verdict`` (the whole run)
    The (4.15) verdict per model (the paper's convention, K_S, V_S of (B.7) from the training
    drift that the forecasts integrate) against the observed convergence of S, as Cohen's kappa
    over all models of the checked cells with a bootstrap interval; PASS when the interval lies
    above 0 (better than chance). Reported beside the kappa of a trivial baseline: converged
    iff T / sigma_W^2 < c, with c fitted on the other half of the seeds.

Numbers only: configs are read by :mod:`dysonsgd.runs.validation_config`, the report drawn by
:mod:`dysonsgd.plots.report`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from dysonsgd._checks import InputError
from dysonsgd.analysis import calibration as cal
from dysonsgd.analysis import forecasts, phase, predict, scoring
from dysonsgd.analysis.checks import Check
from dysonsgd.analysis.describe import describe_cell, spacing_traces
from dysonsgd.analysis.diagram import diagram_checks
from dysonsgd.analysis.spec import FORECASTS, PHASES, DiagramSpec, ExpectedPhases, ValidationSpec
from dysonsgd.analysis.theories import NEGATIVE_CONTROLS, POSITIVE_CONTROL, Theory
from dysonsgd.theory.boundaries import convergence_criterion

__all__ = [
    "Check",
    "Outcome",
    "RunMeasurements",
    "diagram_checks",
    "evaluate",
    "measure",
    "observed_convergence",
    "spacing_traces",
]

Where = tuple[float, float]


@dataclass(frozen=True)
class Outcome:
    """What :func:`evaluate` found.

    Attributes
    ----------
    checks : tuple of Check
        Per cell ``phase``, then per forecast its checks; then the run's and the diagram's.
    controls : tuple of dict
        Per control: ``name``, ``expected`` ('FAIL' or 'PASS'), ``verdict``, ``forecast``,
        ``targets`` and the cells in which each check FAILed it.
    power : dict
        Per statistical check: its power over the negative controls and its rejection rate
        under the positive control (the test's size, about alpha at most).
    cells : tuple of dict
        Per checked cell: T, 1/sigma_W, phases, medians, descriptive spacing and trajectory
        statistics of the replay forecast (``_paper``: of the printed (4.3)).
    traces : mapping (T, 1/sigma_W) -> dict
        :func:`spacing_traces` of every predicted cell, for the report's figure.
    options, tolerances : mappings; findings : the declared known disagreements
    """

    checks: tuple[Check, ...]
    controls: tuple[dict[str, Any], ...]
    power: dict[str, dict[str, Any]]
    cells: tuple[dict[str, Any], ...]
    traces: Mapping[Where, dict[str, Any]]
    options: Mapping[str, Any]
    tolerances: Mapping[str, float]
    findings: tuple = ()

    @property
    def passed(self) -> bool:
        """Every check gave its expected verdict (or had no power), every control too."""
        return (all(c.as_expected for c in self.checks)
                and all(c["verdict"] == c["expected"] for c in self.controls))

    @property
    def n_failed(self) -> int:
        """Checks and controls whose verdict was not the expected one."""
        return (sum(not c.as_expected for c in self.checks)
                + sum(c["verdict"] != c["expected"] for c in self.controls))

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``--json`` (the traces left out)."""
        return {"passed": self.passed, "checks": [c.as_dict() for c in self.checks],
                "controls": [dict(c) for c in self.controls], "power": self.power,
                "cells": [dict(c) for c in self.cells], "options": _plain(self.options),
                "tolerances": dict(self.tolerances),
                "findings": [f.__dict__ for f in self.findings]}


def _plain(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


# ------------------------------------------------------------------------------------------------
# measuring the run once
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunMeasurements:
    """What the checks of every cell read from a run, measured once.

    Attributes
    ----------
    epochs : (n_snap,) snapshot epochs
    coeffs : MeasuredCoefficients (:func:`dysonsgd.analysis.predict.measure_run`)
    summary : dict (:func:`dysonsgd.analysis.phase.phase_summary`)
    labels : (nT, nS) str (:func:`dysonsgd.analysis.phase.classify_phases`)
    converged_415 : (nT, nS, nR) bool, (4.15) per model at the last snapshot
    observed_converged : (nT, nS, nR) bool, :func:`observed_convergence` of S
    """

    epochs: np.ndarray
    coeffs: predict.MeasuredCoefficients
    summary: dict[str, np.ndarray]
    labels: np.ndarray
    converged_415: np.ndarray
    observed_converged: np.ndarray

    @property
    def fraction_415(self) -> np.ndarray:
        """(nT, nS) converged fraction by (4.15) (diverged models count as not converged)."""
        return phase.converged_fraction(self.converged_415, self.coeffs.diverged)


def observed_convergence(spacing: np.ndarray, growth_threshold: float) -> np.ndarray:
    """Per model: did S (4.5) stop growing? S(t_f) / S(t_half) - 1 <= ``growth_threshold``.

    Parameters
    ----------
    spacing : ndarray, shape (..., n_snap); the middle snapshot is ``n_snap // 2``.
    """
    spacing = np.asarray(spacing, dtype=float)
    half = spacing.shape[-1] // 2
    return spacing[..., -1] / spacing[..., half] - 1.0 <= growth_threshold


def measure(result, spec: ValidationSpec, progress: Callable[[str], None] | None = None
            ) -> RunMeasurements:
    """K, V and the moments along training, the phases, (4.15) and the observed convergence."""
    say = progress or (lambda message: None)
    say("measuring K, V and the gradient moments along training")
    coeffs = predict.measure_run(result, drift=spec.options["drift"])
    say("classifying phases")
    summary = phase.phase_summary(result)
    # the rule derived for the run's activation and depth (the paper's for tanh at depth 2)
    rule = phase.PhaseThresholds.for_activation(result.config.activation,
                                                depth=len(result.config.widths) - 2,
                                                task=result.config.task)
    labels = phase.classify_summary(summary, rule)
    temps, sigma_w = coeffs.temperature, coeffs.sigma_w
    converged = convergence_criterion(coeffs.k_s[..., -1], coeffs.v_s[..., -1],
                                      temps[:, None, None], sigma_w[None, :, None],
                                      widths=result.config.widths,
                                      convention=phase.VALIDATION_CONVENTION)
    observed = observed_convergence(coeffs.spacing, spec.tolerances["growth_threshold"])
    return RunMeasurements(np.asarray(result.snapshot_epochs), coeffs, summary, labels,
                           converged & ~coeffs.diverged, observed)


# ------------------------------------------------------------------------------------------------
# forecasts of one cell, scored
# ------------------------------------------------------------------------------------------------


def _sde_paths(coeffs, cell, theory: Theory, options, seed: int, paths: int | None = None
               ) -> np.ma.MaskedArray:
    """S(t) by the spacing SDE (4.8) under ``theory``, (n_t, R * P) model-major."""
    _, s, _ = predict.predict_spacing(theory.apply(coeffs.cell(*cell)), (0, 0),
                                      start=options["start_snapshot"],
                                      paths_per_model=paths or options["paths_per_model"],
                                      steps_per_interval=options["steps_per_interval"],
                                      seed=seed, variant=theory.variant)
    return s[..., 0]


def _final(s: np.ma.MaskedArray, r: int) -> np.ma.MaskedArray:
    """(n_t, R * P) -> (R, P) at the last time."""
    return s[-1].reshape(r, -1)


def _forecast(name: str, result, run: RunMeasurements, cell, theory: Theory, options,
              seed: int, *, paths: int | None = None):
    kw = {"start": options["start_snapshot"], "paths": paths or options["paths_per_model"],
          "steps_per_interval": options["steps_per_interval"], "seed": seed}
    if name == "replay":
        return forecasts.replay(run.coeffs, cell, theory, **kw)
    if name == "cross-fitted":
        return forecasts.cross_fitted(run.coeffs, cell, theory, **kw)
    return _closed_loop(result, cell, options, seed)


def _closed_loop(result, cell, options, seed: int) -> forecasts.ForecastPaths:
    """The closed-loop forecast of one cell: the run and the options alone (no measurement)."""
    from dysonsgd.analysis.closed_loop import closed_loop

    keep = np.flatnonzero(~np.asarray(result.diverged, dtype=bool)[cell])
    models = keep[:options["closed_loop_models"]]
    out = closed_loop(result, cell, models=models, paths=options["closed_loop_paths"],
                      steps=options["closed_loop_steps"],
                      interval=options["closed_loop_interval"], seed=seed)
    return forecasts.from_closed_loop(out)


def _closed_loop_started(result, expected_phases: ExpectedPhases, options) -> dict:
    """The closed-loop forecasts of every checked cell, started on a background thread.

    They need neither the measured coefficients nor any other forecast, so they run while the
    run is measured and the eigenvalue SDEs are integrated (compiled kernels and LAPACK that
    release the GIL), on the cores those leave idle; each path's numbers are those of a run
    on its own (the paths do not depend on the threads, ``closed_loop``). Returns the futures
    by cell (empty if the forecast is not wanted).
    """
    wanted = [f for f in FORECASTS if f in options["forecasts"]]
    if "closed-loop" not in wanted:
        return {}
    k_f = wanted.index("closed-loop")
    diverged = np.asarray(result.diverged, dtype=bool)
    pool = ThreadPoolExecutor(1, thread_name_prefix="closed-loop")
    futures = {cell: pool.submit(_closed_loop, result, cell, options,
                                 forecasts.stream_seed(options["seed"], *cell, k_f, 0))
               for cell in expected_phases if (~diverged[cell]).any()}
    pool.shutdown(wait=False)  # the thread ends after the last forecast
    return futures


def _score(fp, where, tolerances, seed, *, sde=None) -> list[scoring.Test]:
    rng = np.random.default_rng(forecasts.stream_seed(seed, 7))
    return scoring.score_cell(fp, where, tolerances, rng, sde_spacing=sde)


def _controls(result, run, cells, theory, spec, say) -> tuple[list[dict], dict, dict]:
    """Score the replay forecast under every control; the controls' verdicts, the cells where
    each (check, control) failed, and the positive control's failures."""
    tol, options = spec.tolerances, spec.options
    failed: dict[tuple[str, str], set[Where]] = {}
    out: list[dict] = []
    paper_metrics: dict[Where, dict] = {}
    for k, control in enumerate(NEGATIVE_CONTROLS, start=1):
        say(f"negative control {k}/{len(NEGATIVE_CONTROLS)}: {control.theory.name}")
        tests = []
        for cell, where, _ in cells:
            seed = forecasts.stream_seed(options["seed"], *cell, 0, k)
            fp = _forecast("replay", result, run, cell, control.theory, options, seed,
                           paths=options["control_paths"])
            sde = _final(_sde_paths(run.coeffs, cell, control.theory, options, seed,
                                    options["control_paths"]), fp.models.size)
            tests += _score(fp, where, tol, seed, sde=sde)
            if control.theory.variant == "paper" and not control.theory.changed:
                paper_metrics[where] = describe_cell(fp, sde)
        scoring.resolve(tests, tol["alpha"])
        hits = {t: sorted({x.where for x in tests if x.name == t and x.verdict == "FAIL"})
                for t in control.targets}
        for t in tests:
            if t.verdict == "FAIL":
                failed.setdefault((t.name, control.theory.name), set()).add(t.where)
        out.append({"name": control.theory.name, "kind": "negative", "expected": "FAIL",
                    "verdict": "FAIL" if any(hits.values()) else "PASS", "forecast": "replay",
                    "targets": list(control.targets), "reason": control.reason,
                    "failed_cells": {t: [list(w) for w in v] for t, v in hits.items()}})
    say(f"positive control: {POSITIVE_CONTROL}")
    tests = []
    for cell, where, _ in cells:
        seed = forecasts.stream_seed(options["seed"], *cell, 0, 99)
        fp = forecasts.split_observation(_forecast("replay", result, run, cell, theory,
                                                   options, seed,
                                                   paths=options["control_paths"] + 1))
        tests += [t for t in _score(fp, where, tol, seed) if t.family != "deterministic"]
    scoring.resolve(tests, tol["alpha"])
    positive_fail = {t.name: sorted({x.where for x in tests if x.name == t.name
                                     and x.verdict == "FAIL"}) for t in tests}
    n_cells = {t.name: len({x.where for x in tests if x.name == t.name}) for t in tests}
    # under the positive control every calibration test's null is true: each rejects with
    # probability alpha (before Holm). The control fails when the tests reject more often than
    # that (one-sided binomial test at alpha), not on the one family-wise FAIL in 1/alpha runs
    # that the level itself allows
    calib = [t for t in tests if t.family == "calibration" and np.isfinite(t.pvalue)]
    rejected = sum(t.pvalue < tol["alpha"] for t in calib)
    excess = float(stats.binomtest(rejected, len(calib), tol["alpha"],
                                   alternative="greater").pvalue) if calib else 1.0
    out.append({"name": POSITIVE_CONTROL, "kind": "positive", "expected": "PASS",
                "verdict": "FAIL" if excess < tol["alpha"] else "PASS",
                "forecast": "replay", "targets": sorted(n_cells),
                "rejections": [int(rejected), len(calib)], "excess_rejection_pvalue": excess,
                "failed_cells": {k: [list(w) for w in v] for k, v in positive_fail.items()}})
    return out, {"failed": failed, "positive": positive_fail, "positive_cells": n_cells}, \
        paper_metrics


def _power(control_info: dict, cells) -> tuple[dict, dict]:
    """Per check: power over the negative controls; per (check, cell): any control failed it."""
    failed = control_info["failed"]
    power: dict[str, dict[str, Any]] = {}
    able: dict[tuple[str, Where], bool] = {}
    for check in scoring.FAMILIES:
        aimed = [c for c in NEGATIVE_CONTROLS if check in c.targets]
        pairs = hits = 0
        for _, where, _ in cells:
            got = [where in failed.get((check, c.theory.name), set()) for c in aimed]
            pairs += len(got)
            hits += sum(got)
            able[(check, where)] = any(got)
        size_cells = control_info["positive_cells"].get(check, 0)
        power[check] = {
            "controls": [c.theory.name for c in aimed],
            "power": hits / pairs if pairs else None,
            "failed_pairs": hits, "pairs": pairs,
            "positive_control_rejection_rate":
                len(control_info["positive"].get(check, [])) / size_cells if size_cells
                else None,
        }
    return power, able


def _kappa_check(run: RunMeasurements, cells, rng, expected: str) -> Check:
    """``convergence_verdict``: Cohen's kappa of (4.15) against the observed convergence."""
    rows = [(cell, ~run.coeffs.diverged[cell]) for cell, _, _ in cells]
    pred = np.concatenate([run.converged_415[c][k] for c, k in rows])
    obs = np.concatenate([run.observed_converged[c][k] for c, k in rows])
    ratio = np.concatenate([np.full(k.sum(), run.coeffs.temperature[c[0]]
                                    / run.coeffs.sigma_w[c[1]] ** 2) for c, k in rows])
    seeds = np.concatenate([np.flatnonzero(k) for _, k in rows])
    base = _baseline(ratio, obs, seeds % 2 == 0)
    kappa = cal.cohen_kappa(pred, obs)
    lo, hi = cal.kappa_interval(pred, obs, rng)
    k_base = cal.cohen_kappa(base, obs)
    nan = float("nan")
    details = {"kappa_ci95": [lo, hi], "baseline_kappa": k_base,
               "baseline_kappa_ci95": list(cal.kappa_interval(base, obs, rng)),
               "agreement": float(np.mean(pred == obs)), "models": int(obs.size),
               "converged_415_fraction": float(pred.mean()),
               "observed_converged_fraction": float(obs.mean()),
               "convention": phase.VALIDATION_CONVENTION, "drift": "training"}
    if not np.isfinite(kappa) or not np.isfinite(lo):
        verdict = "NO POWER"
    else:
        verdict = "PASS" if lo > 0 else "FAIL"
    return Check("convergence_verdict", nan, nan, kappa, "kappa 95% interval > 0", verdict,
                 expected=expected, details=details)


def _baseline(ratio: np.ndarray, observed: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Converged iff T / sigma_W^2 < c, c fitted (best agreement) on the other half."""
    out = np.zeros(observed.size, dtype=bool)
    for fit in (half, ~half):
        cands = np.unique(np.concatenate([ratio[fit], [np.inf]]))
        if not fit.any():
            continue
        scores = [np.mean((ratio[fit] < c) == observed[fit]) for c in cands]
        c = cands[int(np.argmax(scores))]
        out[~fit] = ratio[~fit] < c
    return out


def evaluate(result, expected_phases: ExpectedPhases, spec: ValidationSpec | None = None, *,
             diagram: DiagramSpec | None = None, theory: Theory | None = None,
             progress: Callable[[str], None] | None = None) -> Outcome:
    """Run every check of the module docstring on ``result``.

    Parameters
    ----------
    result : dysonsgd.train.result.EnsembleResult
    expected_phases : mapping (i_T, i_S) -> phase label
        The cells to check and the phase each should be in.
    spec : ValidationSpec, optional
        Levels, margins, forecast options and findings (default: the defaults).
    diagram : DiagramSpec, optional
        Checks of the whole phase diagram (:func:`diagram_checks`).
    theory : Theory, optional
        The theory to test (default: ``Theory(variant=options["variant"])``); a deliberately
        wrong one is how a user checks that validate can fail it.
    progress : callable, optional
        Called with a short message before each stage.

    Notes
    -----
    The closed-loop forecasts need neither the measurement nor the other forecasts: they start
    on a background thread at once and are scored in their turn (the same numbers as computed
    then); while they run, torch's thread count is 1 (``closed_loop``), restored afterwards.
    """
    spec = ValidationSpec() if spec is None else spec
    options = spec.options
    theory = Theory(name=options["variant"], variant=options["variant"]) if theory is None \
        else theory
    if not isinstance(theory, Theory):
        raise InputError(f"theory must be a Theory, got {type(theory).__name__}")
    say = progress or (lambda message: None)
    n_snap = len(result.snapshot_epochs)
    if not options["start_snapshot"] < n_snap - 1:
        raise InputError(f"[validate] start_snapshot: must be < {n_snap - 1} (the run has "
                         f"{n_snap} snapshots), got {options['start_snapshot']}")
    for cell, label in expected_phases.items():
        if label not in PHASES:
            raise InputError(f"expected phase of cell {cell}: must be one of {PHASES}, got "
                             f"{label!r}")
    background = _closed_loop_started(result, expected_phases, options)
    try:
        return _evaluate(result, expected_phases, spec, diagram, theory, say, background)
    finally:
        for future in background.values():
            future.cancel()


def _evaluate(result, expected_phases, spec, diagram, theory, say, background) -> Outcome:
    """:func:`evaluate` with its arguments checked and the closed loop started."""
    tol, options = spec.tolerances, spec.options
    run = measure(result, spec, say)
    checks: list[Check] = []
    infos: list[dict[str, Any]] = []
    traces: dict[Where, dict[str, Any]] = {}
    cells = []
    for (i_t, i_s), expected in expected_phases.items():
        at = (float(result.temperature[i_t]), float(1.0 / result.sigma_w[i_s]))
        keep = ~run.coeffs.diverged[i_t, i_s]
        label = str(run.labels[i_t, i_s])
        infos.append({
            "temperature": at[0], "inv_sigma_w": at[1], "expected_phase": expected,
            "phase": label, "diverged_fraction": float(1 - keep.mean()),
            "test_loss_median": float(np.nanmedian(run.summary["test_loss"][i_t, i_s])),
            "feature_correlation_median":
                float(np.nanmedian(run.summary["feature_correlation"][i_t, i_s])),
            "variant": theory.variant, "models": int(keep.sum()),
            "converged_415_fraction": float(run.converged_415[i_t, i_s, keep].mean())
            if keep.any() else None,
            "observed_converged_fraction": float(run.observed_converged[i_t, i_s, keep].mean())
            if keep.any() else None,
        })
        checks.append(Check.of("phase", at, float(label == expected), f"== {expected}",
                               label == expected, observed=label))
        if keep.any():
            cells.append(((i_t, i_s), at, label))
    wanted = [f for f in FORECASTS if f in options["forecasts"]]
    tests: list[scoring.Test] = []
    for k_f, name in enumerate(wanted):
        part = []
        for cell, where, _ in cells:
            if name == "cross-fitted" and (~run.coeffs.diverged[cell]).sum() < 4:
                continue
            say(f"{name} forecast at T = {where[0]:g}, 1/sigma_W = {where[1]:g}")
            seed = forecasts.stream_seed(options["seed"], *cell, k_f, 0)
            fp = (background[cell].result() if name == "closed-loop" else
                  _forecast(name, result, run, cell, theory, options, seed))
            sde = None
            if name == "replay":
                series = _sde_paths(run.coeffs, cell, theory, options, seed)
                sde = _final(series, fp.models.size)
                traces[where] = spacing_traces(run.epochs[fp.snapshots],
                                               fp.observed_spacing,
                                               fp.spacing.reshape(fp.snapshots.size, -1),
                                               series)
                _cell_info(infos, where).update(describe_cell(fp, sde))
            part += _score(fp, where, tol, seed, sde=sde)
        tests += scoring.resolve(part, tol["alpha"])
    controls: list[dict] = []
    able: dict = {}
    power: dict = {}
    if options["controls"] and cells:
        controls, info, paper = _controls(result, run, cells, theory, spec, say)
        power, able = _power(info, cells)
        for where, metrics in paper.items():
            _cell_info(infos, where).update(
                {f"{k}_paper": v for k, v in metrics.items() if k in _PAPER_KEYS})
    phases = {where: label for _, where, label in cells}
    for t in tests:
        verdict = t.verdict
        if verdict == "PASS" and t.family != "deterministic" and (
                not t.power or (able and not able.get((t.name, t.where), False))):
            verdict = "NO POWER"
        if verdict == "FAIL" and t.family == "equivalence" and not t.power:
            verdict = "NO POWER"  # too few models to show equivalence, none against it
        checks.append(Check(t.name, t.where[0], t.where[1], float(t.metric), t.tolerance,
                            verdict, forecast=t.forecast,
                            expected=spec.expected(t.name, t.forecast, phases[t.where],
                                                   t.where),
                            pvalue=float(t.pvalue), details=t.details))
    if cells:
        rng = np.random.default_rng(forecasts.stream_seed(options["seed"], 415))
        checks.append(_kappa_check(run, cells, rng, spec.expected(
            "convergence_verdict", "none", "", (np.nan, np.nan))))
    if diagram is not None:
        fraction = np.where(run.coeffs.diverged.all(axis=-1), np.nan, run.fraction_415)
        checks += diagram_checks(diagram, result.temperature, 1.0 / result.sigma_w, run.labels,
                                 run.summary["test_loss"], run.summary["feature_correlation"],
                                 fraction, run.converged_415)
    return Outcome(tuple(checks), tuple(controls), power, tuple(infos), traces, options, tol,
                   spec.findings)


#: the replay metrics of the printed (4.3) reported beside the theory's with the suffix _paper
_PAPER_KEYS = ("spacing_dbm_mean", "spacing_sde_mean", "spacing_dbm_ratio",
               "spacing_dbm_ratio_ci95", "broken_paths", "negative_fraction",
               "trajectory_mean_worst", "top_spread_ratio_worst")


def _cell_info(infos: list[dict[str, Any]], where: Where) -> dict[str, Any]:
    for info in infos:
        if (info["temperature"], info["inv_sigma_w"]) == where:
            return info
    raise KeyError(where)  # pragma: no cover - every scored cell has its info
