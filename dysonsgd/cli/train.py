"""``dysonsgd train``: a teacher-student ensemble over a temperature x sigma_W grid.

    dysonsgd train --temperature T [T ...] --sigma-w S [S ...] --seeds N --epochs E --out PATH
                   [--device cpu|cuda] [--dtype float32|float64] [--activation tanh|relu|identity]
                   [--n-data 4000] [--batch-size 4 [B ...]] [--data-order fixed|shuffled]
                   [--snapshots 21] [--seed 0] [--backend auto|numba|torch] [--no-progress] [--json]

Several ``--batch-size`` values make the batch size a grid axis at fixed T (lr = T |B|): one
run per |B|, written to ``NAME.b{B}.nc`` beside ``--out`` (``runs.config.batch_size_path``).
``--paper-grid`` fills in the paper's 12 x 12 grid (T = 2^-5..2^6, 1/sigma_W = 2^-8..2^3) for
whichever of --temperature / --sigma-w is not given. The result is written as netCDF4
(``.nc``, compressed, dtypes kept; :func:`dysonsgd.runs.files.save_result`); read it back with
:func:`dysonsgd.runs.files.load_result`. ``.npz`` is no longer written (the message says how to
convert an old one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dysonsgd._checks import InputError
from dysonsgd.cli._output import emit_json, emit_table
from dysonsgd.model.activations import ACTIVATIONS
from dysonsgd.theory.paper import PAPER_SIGMA_W, PAPER_TEMPERATURES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a teacher-student ensemble over a T x sigma_W grid (section 3)"
    )
    p.add_argument("--temperature", type=float, nargs="+", help="T = lr / batch_size (> 0)")
    p.add_argument("--sigma-w", type=float, nargs="+", help="sigma_W of W2(0), not squared (> 0)")
    p.add_argument("--paper-grid", action="store_true",
                   help="use the paper's 12 values for whichever axis is not given")
    p.add_argument("--seeds", type=int, default=1, help="replicas (teachers) per cell (1)")
    p.add_argument("--epochs", type=int, required=True, help="epochs of n_data/batch_size steps")
    p.add_argument("--out", type=Path, required=True, help="output file, .nc (netCDF4)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:k] (cpu)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--activation", choices=ACTIVATIONS, default="tanh")
    p.add_argument("--n-data", type=int, default=4000, help="training inputs per model (4000)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[4],
                   help="batch size (4); several: one run per |B| at the same T")
    p.add_argument("--data-order", choices=("fixed", "shuffled"), default="fixed")
    p.add_argument("--snapshots", type=int, default=21, help="snapshots incl. the initial (21)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the SeedSequence (0)")
    p.add_argument("--backend", choices=("auto", "numba", "torch"), default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from dysonsgd.model.config import TeacherStudentConfig
    from dysonsgd.runs.files import result_summary, save_result
    from dysonsgd.train import train_ensemble

    temps = args.temperature
    sigmas = args.sigma_w
    if args.paper_grid:
        temps = temps or list(PAPER_TEMPERATURES)
        sigmas = sigmas or list(PAPER_SIGMA_W)
    if not temps:
        raise InputError("temperature: give --temperature values (or --paper-grid)")
    if not sigmas:
        raise InputError("sigma_w: give --sigma-w values (or --paper-grid)")
    from dysonsgd.runs.config import batch_size_path
    from dysonsgd.runs.paths import check_output_file

    check_output_file("--out", args.out, suffixes=(".nc",))
    for b in args.batch_size if len(args.batch_size) > 1 else ():
        check_output_file("--out", batch_size_path(args.out, b))
    config = TeacherStudentConfig(activation=args.activation, n_data=args.n_data,
                                  batch_size=args.batch_size[0], data_order=args.data_order)
    several = len(args.batch_size) > 1
    result = train_ensemble(
        config,
        temperature=temps,
        sigma_w=sigmas,
        n_seeds=args.seeds,
        epochs=args.epochs,
        snapshots=args.snapshots,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        progress=not args.no_progress,
        backend=args.backend,
        batch_size=args.batch_size if several else args.batch_size[0],
    )
    if not several:
        summary = result_summary(result, save_result(result, args.out))
        if args.json:
            emit_json(summary)
        else:
            emit_table("dysonsgd train", summary)
        return 0
    runs = {b: result_summary(r, save_result(r, batch_size_path(args.out, b)))
            for b, r in result.items()}
    if args.json:
        emit_json({"batch_size": list(runs), "runs": list(runs.values())})
    for b, summary in ([] if args.json else runs.items()):
        emit_table(f"dysonsgd train (batch size {b})", summary)
    return 0
