"""dysonsgd: the stochastic-equation theory of SGD training.

The curated public API. Everything below is importable from the top level
(``dysonsgd.train_ensemble``, ``dysonsgd.integrate``, ...) and loaded on first use, so
``import dysonsgd`` itself costs nothing; each name has one home in a layer of the package
(docs/architecture.md), shown by ``dysonsgd.where(name)``::

    theory    marchenko_pastur, wigner_surmise, symmetry_breaking_line, convergence_criterion,
              ito_eigenvalue_equation, ito_spacing_equation, bru_equation
    model     TeacherStudentConfig, replica_draws
    train     train_ensemble, EnsembleResult, BatchResults, snapshot_epochs,
              release_snapshot_epochs
    measure   eigenvalues, mean_level_spacing, gradient_statistics, gradient_statistics_series,
              GradientStatistics,
              singular_moments, SingularMoments, coefficients_at, increment_moments, epoch_drift,
              largest_curvature
    sde       integrate, EigenvalueSDE, DysonBrownianMotion, LevelSpacingSDE, LangevinSGD,
              piecewise_linear,
              EulerMaruyama, Platen, DriftImplicit, Adaptive, choose_engine,
              langevin_sgd_discrete
    analysis  measure_run, predict_eigenvalues, predict_spacing, classify_phases, classify_summary,
              PhaseThresholds, Outcome,
              evaluate, Theory, NEGATIVE_CONTROLS, closed_loop, ClosedLoopForecast
    monitor   SpectrumMonitor, open_monitor_store (any torch model while it trains)
    runs      load_config, load_validation_config, bundled_configs, run_sweep, load_result,
              save_result, convert_run, load_sweep, verify_sweep, validate
    plots     paper_figures, monitor_report
    errors    InputError, ConfigError

Equation numbers in docstrings refer to Park, Lucini and Aarts (2025), "Phase diagram and
eigenvalue dynamics of stochastic gradient descent in multilayer neural networks",
Mach. Learn.: Sci. Technol. 6 045048.
"""

from __future__ import annotations

import importlib
from typing import Any

from dysonsgd._checks import InputError
from dysonsgd._version import __version__

#: public name -> (module, attribute) of its one home
_API: dict[str, tuple[str, str]] = {
    # theory
    "marchenko_pastur": ("dysonsgd.theory.rmt", "marchenko_pastur"),
    "wigner_surmise": ("dysonsgd.theory.rmt", "wigner_surmise"),
    "symmetry_breaking_line": ("dysonsgd.theory.boundaries", "symmetry_breaking_line"),
    "convergence_criterion": ("dysonsgd.theory.boundaries", "convergence_criterion"),
    "ito_eigenvalue_equation": ("dysonsgd.theory.ito", "eigenvalue_equation"),
    "ito_spacing_equation": ("dysonsgd.theory.ito", "spacing_equation"),
    "bru_equation": ("dysonsgd.theory.ito_special", "bru_equation"),
    # model
    "TeacherStudentConfig": ("dysonsgd.model.config", "TeacherStudentConfig"),
    "replica_draws": ("dysonsgd.model.draws", "replica_draws"),
    # train
    "train_ensemble": ("dysonsgd.train.ensemble", "train_ensemble"),
    "EnsembleResult": ("dysonsgd.train.result", "EnsembleResult"),
    "BatchResults": ("dysonsgd.train.result", "BatchResults"),
    "snapshot_epochs": ("dysonsgd.train.ensemble", "snapshot_epochs"),
    "release_snapshot_epochs": ("dysonsgd.train.ensemble", "release_snapshot_epochs"),
    # measure
    "eigenvalues": ("dysonsgd.measure.spectrum", "eigenvalues"),
    "mean_level_spacing": ("dysonsgd.measure.spectrum", "mean_level_spacing"),
    "gradient_statistics": ("dysonsgd.measure.gradstats", "measure"),
    "gradient_statistics_series": ("dysonsgd.measure.gradstats", "measure_series"),
    "GradientStatistics": ("dysonsgd.measure.gradstats", "GradientStatistics"),
    "singular_moments": ("dysonsgd.measure.moments", "singular_moments"),
    "SingularMoments": ("dysonsgd.measure.moments", "SingularMoments"),
    "coefficients_at": ("dysonsgd.measure.moments", "coefficients_at"),
    "increment_moments": ("dysonsgd.measure.moments", "increment_moments"),
    "epoch_drift": ("dysonsgd.measure.epoch_drift", "epoch_drift"),
    "largest_curvature": ("dysonsgd.measure.curvature", "largest_curvature"),
    # sde
    "integrate": ("dysonsgd.sde.integration", "integrate"),
    "choose_engine": ("dysonsgd.sde.integration", "choose_engine"),
    "langevin_sgd_discrete": ("dysonsgd.sde.integration", "langevin_sgd_discrete"),
    "DysonBrownianMotion": ("dysonsgd.sde.equations", "DysonBrownianMotion"),
    "LevelSpacingSDE": ("dysonsgd.sde.equations", "LevelSpacingSDE"),
    "LangevinSGD": ("dysonsgd.sde.equations", "LangevinSGD"),
    "EigenvalueSDE": ("dysonsgd.sde.complete", "EigenvalueSDE"),
    "piecewise_linear": ("dysonsgd.sde.coefficients", "piecewise_linear"),
    "EulerMaruyama": ("dysonsgd.sde.solvers", "EulerMaruyama"),
    "Platen": ("dysonsgd.sde.solvers", "Platen"),
    "DriftImplicit": ("dysonsgd.sde.solvers", "DriftImplicit"),
    "Adaptive": ("dysonsgd.sde.solvers", "Adaptive"),
    # analysis
    "measure_run": ("dysonsgd.analysis.predict", "measure_run"),
    "predict_eigenvalues": ("dysonsgd.analysis.predict", "predict_eigenvalues"),
    "predict_spacing": ("dysonsgd.analysis.predict", "predict_spacing"),
    "classify_phases": ("dysonsgd.analysis.phase", "classify_phases"),
    "classify_summary": ("dysonsgd.analysis.phase", "classify_summary"),
    "PhaseThresholds": ("dysonsgd.analysis.phase", "PhaseThresholds"),
    "Outcome": ("dysonsgd.analysis.validation", "Outcome"),
    "evaluate": ("dysonsgd.analysis.validation", "evaluate"),
    "Theory": ("dysonsgd.analysis.theories", "Theory"),
    "NEGATIVE_CONTROLS": ("dysonsgd.analysis.theories", "NEGATIVE_CONTROLS"),
    "closed_loop": ("dysonsgd.analysis.closed_loop", "closed_loop"),
    "ClosedLoopForecast": ("dysonsgd.analysis.closed_loop", "ClosedLoopForecast"),
    # monitor
    "SpectrumMonitor": ("dysonsgd.monitor.spectrum_monitor", "SpectrumMonitor"),
    "open_monitor_store": ("dysonsgd.monitor.store", "open_store"),
    # runs
    "load_config": ("dysonsgd.runs.config", "load_config"),
    "bundled_configs": ("dysonsgd.runs.config", "bundled_configs"),
    "ConfigError": ("dysonsgd.runs.config", "ConfigError"),
    "load_validation_config": ("dysonsgd.runs.validation_config", "load_validation_config"),
    "run_sweep": ("dysonsgd.runs.sweep", "run_sweep"),
    "load_result": ("dysonsgd.runs.files", "load_result"),
    "save_result": ("dysonsgd.runs.files", "save_result"),
    "convert_run": ("dysonsgd.runs.files", "convert_run"),
    "load_sweep": ("dysonsgd.runs.store", "load_sweep"),
    "verify_sweep": ("dysonsgd.runs.store", "verify_sweep"),
    "validate": ("dysonsgd.runs.validate", "validate"),
    # plots
    "paper_figures": ("dysonsgd.plots.paper", "paper_figures"),
    "monitor_report": ("dysonsgd.plots.monitor", "monitor_report"),
}

__all__ = ["InputError", "__version__", "where", *sorted(_API)]


def where(name: str) -> str:
    """The module that is the home of the public ``name`` (e.g. ``'dysonsgd.sde.integration'``)."""
    if name not in _API:
        raise InputError(f"name must be one of dysonsgd's public names {sorted(_API)}, "
                         f"got {name!r}")
    return _API[name][0]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attribute = _API[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module 'dysonsgd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
