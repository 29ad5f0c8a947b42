"""``dysonsgd validate``: does the stochastic theory predict what training does?

dysonsgd validate [CONFIG] [--run RUN] [--out DIR] [--json] [--quiet]

Trains the config's grid (or reads ``--run``: a run file or a sweep store), measures K and V
along training, integrates (4.3) and (4.8) from them, and checks prediction against observation
with the tolerances of the config's ``[validate]`` table (:mod:`dysonsgd.analysis.validation`).
Prints a
PASS/FAIL table, writes ``report.md`` with figures into DIR, and exits 1 on any FAIL. Without
CONFIG it runs the embedded default, ``validation/quick.toml``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from dysonsgd._checks import InputError
from dysonsgd.cli._output import emit_json


def default_config() -> Path:
    """The embedded default: ``validation/quick.toml`` of the checkout the package runs from."""
    path = Path(__file__).resolve().parents[2] / "validation" / "quick.toml"
    if not path.exists():
        raise InputError("config: the embedded validation/quick.toml was not found; give CONFIG")
    return path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate", help="compare the SDE predictions with real training (PASS/FAIL report)"
    )
    p.add_argument("config", nargs="?", type=Path,
                   help="a validation config (TOML); default validation/quick.toml")
    p.add_argument("--run", type=Path, help="use this run (.nc, .npz or sweep store) instead "
                                            "of training")
    p.add_argument("--out", type=Path, default=Path("validate-report"),
                   help="directory for report.md and figures (validate-report)")
    p.add_argument("--save-run", type=Path,
                   help="also write the trained run (.nc or .npz) for later --run")
    p.add_argument("--json", action="store_true", help="every metric and verdict as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(handler=_run)


def _train(config, progress: bool):
    from dysonsgd.train.ensemble import train_ensemble

    return train_ensemble(config.model, temperature=list(config.temperature),
                          sigma_w=list(config.sigma_w), n_seeds=config.seeds,
                          epochs=config.epochs, snapshots=config.snapshots, seed=config.seed,
                          dtype=config.dtype, progress=progress)


def _check_run_matches(result, config, path: Path) -> None:
    import numpy as np

    same = (np.allclose(result.temperature, config.temperature)
            and np.allclose(result.sigma_w, config.sigma_w)
            and result.config == config.model
            and len(result.snapshot_epochs) == config.snapshots
            and int(result.snapshot_epochs[-1]) == config.epochs)
    if not same:
        raise InputError(f"run: {str(path)!r} was not made by this config (grid, model, epochs "
                         "or snapshots differ); train it with `dysonsgd sweep CONFIG`")


def _run(args: argparse.Namespace) -> int:
    from dysonsgd.analysis import validation
    from dysonsgd.plots.report import write_report
    from dysonsgd.runs.config import load_config

    start = time.perf_counter()
    path = args.config or default_config()
    if args.save_run is not None and args.save_run.suffix not in (".nc", ".npz"):
        raise InputError(f"save-run must end in .nc or .npz, got {str(args.save_run)!r}")
    config = load_config(path)
    where = f"{path.name}: [expect]"
    expected = validation.parse_expect_phases(config.expect, config.temperature,
                                              config.sigma_w, where=where)
    if not expected:
        raise InputError(f"{path.name}: [expect] phases: no cells to check")
    validation.parse_validate_table(config.validate, where=f"{path.name}: [validate]")
    diagram = (config.expect or {}).get("diagram")
    if diagram is not None:
        validation.parse_diagram_table(diagram, where=f"{path.name}: [expect.diagram]")
    say = (lambda msg: None) if args.quiet or args.json else (
        lambda msg: print(f"dysonsgd validate: {msg}", file=sys.stderr, flush=True))
    if args.run is not None:
        from dysonsgd.runs.store import load_result

        say(f"reading {args.run}")
        result = load_result(args.run)
        _check_run_matches(result, config, args.run)
    else:
        say(f"training {config.model_steps():,} model-steps ({len(config.cells())} cells x "
            f"{config.seeds} seeds x {config.epochs} epochs)")
        result = _train(config, progress=not (args.quiet or args.json))
        if args.save_run is not None:
            from dysonsgd.runs.store import save_result

            save_result(result, args.save_run)
    outcome = validation.evaluate(result, expected, config.validate, progress=say,
                                  diagram=diagram)
    wall = time.perf_counter() - start
    report = write_report(outcome, args.out, config.name or path.stem, wall)
    summary: dict[str, Any] = {
        "config": str(path), "passed": outcome["passed"], "wall_time_s": wall,
        "train_wall_time_s": float(result.wall_time), "report": str(report),
        "checks": [c.as_dict() for c in outcome["checks"]], "cells": outcome["cells"],
        "options": outcome["options"], "tolerances": outcome["tolerances"],
        "applies": outcome["applies"],
    }
    if args.json:
        emit_json(summary)
    else:
        _print_table(outcome, wall, report)
    return 0 if outcome["passed"] else 1


def _print_table(outcome: dict[str, Any], wall: float, report: Path) -> None:
    rows = [("check", "T", "1/sigma_W", "metric", "tolerance", "verdict")]
    for c in outcome["checks"]:
        rows.append((c.name, f"{c.temperature:g}", f"{c.inv_sigma_w:g}", f"{c.metric:.4g}",
                     c.tolerance, "PASS" if c.passed else "FAIL"))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    n_fail = sum(not c.passed for c in outcome["checks"])
    verdict = "PASS" if not n_fail else f"FAIL ({n_fail} of {len(outcome['checks'])})"
    print(f"\n{verdict} in {wall:.1f} s; report: {report}")
