"""``dysonsgd validate``: does the stochastic theory predict what training does?

    dysonsgd validate [CONFIG] [--run RUN] [--seed N] [--out DIR] [--save-run FILE]
                      [--json] [--quiet]

CONFIG is a validation config (a TOML file, or the name of a bundled one: ``quick``,
``paper-small``, ``paper``; default ``quick``), read with
:func:`dysonsgd.runs.validation_config.load_validation_config`, which refuses every bad key before
any training. :func:`dysonsgd.runs.validate.validate` trains the config's grid or reads ``--run``
(a run file or a sweep store) and checks the predictions of (4.3) and (4.8) against it
(:func:`dysonsgd.analysis.validation.evaluate`: forecasts, controls, calibration); the command
prints the verdicts, writes ``report.md`` with figures into DIR
(:func:`dysonsgd.plots.report.write_report`) and exits 1 when a verdict is not the one the
config expects (a declared finding is expected to FAIL).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dysonsgd.cli._output import emit_json
from dysonsgd.runs.config import DEFAULT_VALIDATION as DEFAULT_CONFIG
from dysonsgd.runs.config import bundled_configs

if TYPE_CHECKING:
    from dysonsgd.analysis.validation import Outcome

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate", help="compare the SDE predictions with real training (PASS/FAIL report)"
    )
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG,
                   help="a validation config: a TOML file or the name of a bundled one ("
                        f"{', '.join(bundled_configs())}; default {DEFAULT_CONFIG})")
    p.add_argument("--run", type=Path, help="use this run (.nc, .npz or sweep store) instead "
                                            "of training")
    p.add_argument("--out", type=Path, default=Path("validate-report"),
                   help="directory for report.md and figures (validate-report)")
    p.add_argument("--save-run", type=Path,
                   help="also write the trained run (.nc) for later --run")
    p.add_argument("--seed", type=int, help="train with this base seed instead of the "
                                            "config's (independent models: are the verdicts "
                                            "stable?)")
    p.add_argument("--json", action="store_true", help="every metric and verdict as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from dysonsgd.plots.report import write_report
    from dysonsgd.runs.files import save_result
    from dysonsgd.runs.paths import check_output_dir, check_output_file
    from dysonsgd.runs.validate import validate

    start = time.perf_counter()
    check_output_dir("--out", args.out)
    if args.save_run is not None:
        check_output_file("--save-run", args.save_run, suffixes=(".nc",))
    quiet = args.quiet or args.json
    say = (lambda msg: None) if quiet else (
        lambda msg: print(f"dysonsgd validate: {msg}", file=sys.stderr, flush=True))
    done = validate(args.config, run=args.run, seed=args.seed, progress=say,
                    progress_bar=not quiet)
    if args.run is None and args.save_run is not None:
        save_result(done.result, args.save_run)
    outcome = done.outcome
    wall = time.perf_counter() - start
    report = write_report(outcome, args.out, done.config.name or Path(done.source).stem, wall)
    if args.json:
        emit_json({"config": done.source, "passed": outcome.passed, "wall_time_s": wall,
                   "train_wall_time_s": float(done.result.wall_time), "report": str(report),
                   **outcome.to_dict()})
    else:
        _print_table(outcome, wall, report)
    return 0 if outcome.passed else 1


def _print_table(outcome: Outcome, wall: float, report: Path) -> None:
    rows = [("check", "forecast", "T", "1/sigma_W", "metric", "verdict", "expected")]
    for c in outcome.checks:
        rows.append((c.name, c.forecast, f"{c.temperature:g}", f"{c.inv_sigma_w:g}",
                     f"{c.metric:.4g}", c.verdict + ("" if c.as_expected else " !"),
                     c.expected))
    for ctl in outcome.controls:
        rows.append((f"control: {ctl['name']}", ctl["forecast"], "", "", "",
                     ctl["verdict"] + ("" if ctl["verdict"] == ctl["expected"] else " !"),
                     ctl["expected"]))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    n_off = outcome.n_failed
    verdict = "every verdict as expected" if not n_off else f"{n_off} verdicts not as expected"
    print(f"\n{verdict} in {wall:.1f} s; report: {report}")
