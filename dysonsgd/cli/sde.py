"""``dysonsgd sde``: integrate (4.3) or (4.8) with the coefficients measured on a trained run.

    dysonsgd sde dyson|spacing --from RUN [--snapshot START] [--temperature T ...] [--sigma-w S ...]
                              [--paths-per-model 10] [--steps-per-interval 100] [--solver NAME]
                              [--drift training|test] [--seed 0] [--out FILE.nc] [--json]

For every selected cell, each non-diverged model's trajectories start from its own eigenvalues
(or spacing) at snapshot START and follow its own K(t), V(t), linear in t between the measured
snapshots (:func:`dysonsgd.analysis.predict.predict_run`). The output holds the predicted
trajectories next to the observed ones, on the run's snapshot times (t = lr * SGD steps), written
by :func:`dysonsgd.runs.files.save_dataset` with this summary as the attribute ``summary``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dysonsgd._checks import check_int
from dysonsgd.cli._output import emit_json, emit_table

#: the two kinds of :func:`dysonsgd.analysis.predict.predict_run`
KINDS = ("dyson", "spacing")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sde", help="integrate Dyson Brownian motion (4.3) or the spacing SDE (4.8) from a run"
    )
    p.add_argument("kind", choices=KINDS, help="dyson: eigenvalues (4.3); spacing: S (4.8)")
    p.add_argument("--from", dest="run", type=Path, required=True, help="a run (.nc, .npz, store)")
    p.add_argument("--snapshot", type=int, default=0,
                   help="snapshot index to start from (0 = initialisation)")
    p.add_argument("--temperature", type=float, nargs="+",
                   help="cells to integrate: temperatures of the run's grid (default all)")
    p.add_argument("--sigma-w", type=float, nargs="+",
                   help="cells to integrate: sigma_W values of the run's grid (default all)")
    p.add_argument("--paths-per-model", type=int, default=10, help="trajectories per model (10)")
    p.add_argument("--steps-per-interval", type=int, default=100,
                   help="time steps between consecutive snapshots (100)")
    p.add_argument("--solver", default=None,
                   help="euler, platen, implicit or adaptive (default: collision-safe adaptive)")
    p.add_argument("--drift", choices=("training", "test", "epoch"), default="training",
                   help="K from the recorded training gradient (default), the test set (4.4) "
                        "or the replayed epoch after each snapshot (docs/sde.md)")
    p.add_argument("--variant", choices=("complete", "continuum", "paper"), default="complete",
                   help="the complete eigenvalue SDE (default), without its finite-lr terms, "
                        "or (4.3)/(4.8) as printed")
    p.add_argument("--seed", type=int, default=0, help="seed of the Brownian paths (0)")
    p.add_argument("--out", type=Path, help="write trajectories to .nc (netCDF4)")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(handler=_run)


def _validate_args(args: argparse.Namespace) -> None:
    check_int("--paths-per-model", args.paths_per_model)
    check_int("--steps-per-interval", args.steps_per_interval)
    if args.out is not None:
        from dysonsgd.runs.paths import check_output_file

        check_output_file("--out", args.out, suffixes=(".nc",))


def _run(args: argparse.Namespace) -> int:
    from dysonsgd.analysis.predict import predict_run
    from dysonsgd.runs.files import load_result, save_dataset

    _validate_args(args)
    result = load_result(args.run)
    dataset, cells = predict_run(result, args.kind, temperature=args.temperature,
                                 sigma_w=args.sigma_w, start=args.snapshot,
                                 paths_per_model=args.paths_per_model,
                                 steps_per_interval=args.steps_per_interval, solver=args.solver,
                                 drift=args.drift, seed=args.seed, variant=args.variant)
    summary = {"kind": args.kind, "run": str(args.run), "start_snapshot": args.snapshot,
               "variant": args.variant,
               "drift": args.drift, "solver": args.solver or "adaptive", "seed": args.seed,
               "cells": cells, "out": str(args.out) if args.out else None}
    if args.out is not None:
        save_dataset(dataset.assign_attrs(summary=json.dumps(summary)), args.out)
    if args.json:
        emit_json(summary)
    else:
        for c in cells:
            emit_table(f"dysonsgd sde {args.kind}: T = {c['temperature']:g}, "
                       f"sigma_W = {c['sigma_w']:g}", c)
        if args.out is not None:
            print(f"trajectories written to {args.out}")
    return 0
