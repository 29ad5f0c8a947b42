"""``validate``: a validation config from name or path to its typed outcome, in one call.

The library form of ``dysonsgd validate``: read the config (a bundled name such as ``"quick"``
or a path), train its grid (or take a given run, checked against the config), and run the
checks of :func:`dysonsgd.analysis.validation.evaluate`. Writing the report is left to
:func:`dysonsgd.plots.report.write_report`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dysonsgd._checks import InputError, check_int
from dysonsgd.analysis.theories import Theory
from dysonsgd.analysis.validation import Outcome, evaluate
from dysonsgd.runs.config import DEFAULT_VALIDATION, find_config
from dysonsgd.runs.files import load_result
from dysonsgd.runs.sweep import train_grid
from dysonsgd.runs.validation_config import ValidationConfig, load_validation_config

if TYPE_CHECKING:
    from dysonsgd.train.result import EnsembleResult

__all__ = ["Validation", "validate"]


@dataclass(frozen=True)
class Validation:
    """What :func:`validate` did: the config, where it came from, the run and the outcome."""

    config: ValidationConfig
    source: str
    result: EnsembleResult
    outcome: Outcome

    @property
    def passed(self) -> bool:
        return self.outcome.passed


def validate(config: str | Path | ValidationConfig = DEFAULT_VALIDATION, *, run=None,
             seed: int | None = None, theory: Theory | None = None,
             progress: Callable[[str], None] | None = None,
             progress_bar: bool = False) -> Validation:
    """Compare the SDE predictions with training for a validation config.

    Parameters
    ----------
    config : str, path or ValidationConfig
        A bundled config's name (``"quick"``, the default; ``"paper-small"``, ``"paper"``), a
        TOML file, or a parsed :class:`~dysonsgd.runs.validation_config.ValidationConfig`.
    run : EnsembleResult, str or path, optional
        A trained run (or a run file or sweep store) of exactly this config's grid, model,
        epochs and snapshots, instead of training.
    seed : int, optional
        Train (or expect a run made) with this base seed instead of the config's ``[training]
        seed``: the same validation on independent models, to see which verdicts are stable.
    theory : Theory, optional
        The theory to test (default: the config's ``variant``); a deliberately wrong one
        (:class:`~dysonsgd.analysis.theories.Theory`) must FAIL.
    progress : callable, optional
        Called with a short message before each stage.
    progress_bar : bool
        Show the training progress bar.

    Returns
    -------
    Validation
        ``outcome`` holds every check and metric (:class:`~dysonsgd.analysis.validation.Outcome`).
    """
    say = progress or (lambda message: None)
    if isinstance(config, ValidationConfig):
        parsed, source = config, config.name or "<config>"
    else:
        path = find_config(config)
        parsed, source = load_validation_config(path), str(path)
    if seed is not None:
        check_int("seed", seed, minimum=0)
        parsed = replace(parsed, sweep=replace(parsed.sweep, seed=int(seed)))
    sweep = parsed.sweep
    if run is not None:
        if isinstance(run, str | Path):
            say(f"reading {run}")
            result, label = load_result(run), repr(str(run))
        else:
            result, label = run, "the given EnsembleResult"
        if not sweep.matches(result):
            raise InputError(f"run: {label} was not made by this config (grid, model, "
                             "epochs or snapshots differ); train it with `dysonsgd sweep CONFIG`")
    else:
        say(f"training {sweep.model_steps():,} model-steps ({len(sweep.cells())} cells x "
            f"{sweep.seeds} seeds x {sweep.epochs} epochs)")
        result = train_grid(sweep, progress=progress_bar)
    outcome = evaluate(result, parsed.expected_phases, parsed.spec, diagram=parsed.diagram,
                       theory=theory, progress=say)
    return Validation(parsed, source, result, outcome)
