"""``dysonsgd monitor report``: the figures and per-layer summary of monitor stores.

    dysonsgd monitor report STORE [STORE ...] --out DIR [--format png pdf] [--dpi 150] [--json]

Each STORE is a Zarr store written by :class:`dysonsgd.monitor.SpectrumMonitor` (a killed run's
store holds its completed records). The figures (:func:`dysonsgd.plots.monitor.monitor_report`):
the spectrum of each layer through training (as figure 6), S(t) and <r>(t), and the
signal-to-noise ratio -K_S/V_S against T with the (4.15) line; several stores (runs at several
temperatures) share the last two.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dysonsgd.cli._output import emit_json, emit_table

#: per-layer numbers printed in the table
COLUMNS = ("step", "temperature", "level_spacing", "ratio_mean", "n_spikes", "signal_to_noise",
           "threshold", "converged")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("monitor", help="reports of SpectrumMonitor stores")
    sub = p.add_subparsers(dest="monitor_command", metavar="ACTION", required=True)
    r = sub.add_parser("report", help="figures and per-layer summary of monitor stores")
    r.add_argument("stores", type=Path, nargs="+", metavar="STORE",
                   help="Zarr stores written by SpectrumMonitor")
    r.add_argument("--out", type=Path, required=True, help="output directory")
    r.add_argument("--format", nargs="+", choices=("png", "pdf", "svg"), default=["png", "pdf"],
                   dest="formats", help="file formats (png pdf)")
    r.add_argument("--dpi", type=int, default=150, help="resolution of PNG files (150)")
    r.add_argument("--json", action="store_true", help="machine-readable summary")
    r.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from dysonsgd._checks import check_int
    from dysonsgd.plots.monitor import monitor_report
    from dysonsgd.runs.paths import check_output_dir

    check_int("--dpi", args.dpi, minimum=10)
    check_output_dir("--out", args.out)
    payload = monitor_report(args.stores, args.out, formats=args.formats, dpi=args.dpi)
    if args.json:
        emit_json(payload)
        return 0
    emit_table("dysonsgd monitor report: figures",
               {name: ", ".join(paths) for name, paths in payload["written"].items()})
    for store, layers in payload["runs"].items():
        for name, row in layers.items():
            emit_table(f"{store}: {name}", {k: row[k] for k in COLUMNS})
    return 0
