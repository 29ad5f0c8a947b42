"""``dysonsgd sweep``: train a config's grid into a resumable Zarr store.

    dysonsgd sweep CONFIG.toml [--out STORE] [--device cpu|cuda[:k]]
                   [--scheduler tcp://HOST:PORT | --cluster local [--workers N]]
                   [--pack CELLS] [--threads N] [--no-fsync] [--quiet] [--json]

CONFIG is a sweep or validation config, a TOML file or the name of a bundled one
(:func:`dysonsgd.runs.config.find_config`; ``[expect]`` and ``[validate]`` are ignored). Cells
already complete in STORE (default ``NAME.zarr``) are skipped, so an interrupted sweep is
resumed by running the same command again. A progress bar on stderr shows cells done,
model-steps/s and the ETA; ``--quiet`` hides it, ``--json`` prints a machine-readable summary.
Read the store with :func:`dysonsgd.runs.files.load_result` (any command's RUN argument).

``--verify STORE`` checks every complete cell against its checksum (``runs.store.verify_sweep``):
exit 0 if all match, else 1 naming the damaged cells. Ctrl-C or a full disk: one line saying
which cells are kept (``args.kept``); rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dysonsgd._checks import InputError
from dysonsgd.cli._output import emit_json, emit_table


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="train a TOML config's T x sigma_W grid into a resumable Zarr store"
    )
    p.add_argument("config", type=Path, nargs="?",
                   help="sweep or validation config: a TOML file or a bundled name (quick, ...)")
    p.add_argument("--verify", type=Path, metavar="STORE",
                   help="check every complete cell of STORE against its checksum, train nothing")
    p.add_argument("--out", type=Path, help="store directory (default NAME.zarr, NAME from "
                                            "the config)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:k] (cpu)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run cells on an existing dask.distributed scheduler "
                            "(tcp://HOST:PORT); workers must see the store's path")
    where.add_argument("--cluster", choices=("local",),
                       help="start a dask LocalCluster on this machine")
    p.add_argument("--workers", type=int, help="worker processes of --cluster local "
                                               "(default: half the CPUs)")
    p.add_argument("--pack", type=int, metavar="CELLS",
                   help="cells per training call (default: sized to the device)")
    p.add_argument("--threads", type=int, help="numba/torch threads per training call")
    p.add_argument("--no-fsync", action="store_true",
                   help="do not fsync cells before marking them complete (a killed process is "
                        "still safe, a crashed machine is not)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(handler=_run)


class _Progress:
    """tqdm bar over model-steps of the pending cells, with cells done / total."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.done = self.total = 0

    def start(self, info: dict[str, Any]) -> None:
        self.close()  # a batch-size axis sweeps one store per |B|, each starting anew
        self.done, self.total = info["cells_skipped"], info["cells_total"]
        for d in info["damaged"]:
            print(f"dysonsgd sweep: cell (T = {d['temperature']:g}, sigma_W = "
                  f"{d['sigma_w']:g}): {d['array']} {d['reason']}: recomputing it",
                  file=sys.stderr)
        if not self.enabled or not info["cells_pending"]:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=info["model_steps_pending"], unit="model-step", unit_scale=True,
                        desc=self._desc(), smoothing=0.05, dynamic_ncols=True, file=sys.stderr)

    def _desc(self) -> str:
        return f"cells {self.done}/{self.total}"

    def cell(self, summary: dict[str, Any]) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_description(self._desc(), refresh=False)
            self.bar.update(summary["model_steps"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _verify(args: argparse.Namespace) -> int:
    from dysonsgd.runs.store import verify_sweep

    if args.config is not None:
        raise InputError("--verify STORE checks a store: give no CONFIG with it")
    report = verify_sweep(args.verify)
    if args.json:
        emit_json(report)
    else:
        emit_table("dysonsgd sweep --verify", {k: v for k, v in report.items()
                                               if k not in ("damaged", "message")})
    if report["message"]:
        print(f"dysonsgd sweep: {report['message']}", file=sys.stderr)
    return 1 if report["message"] else 0


def _run(args: argparse.Namespace) -> int:
    from dysonsgd.runs.cluster import dask_client
    from dysonsgd.runs.config import batch_size_path, find_config, load_config
    from dysonsgd.runs.paths import check_output_dir
    from dysonsgd.runs.store import what_is_kept
    from dysonsgd.runs.sweep import run_sweep

    if args.verify is not None:
        return _verify(args)
    if args.config is None:
        raise InputError("config: give a CONFIG to sweep (or --verify STORE)")
    config = load_config(find_config(args.config))
    out = args.out if args.out is not None else Path(f"{config.name}.zarr")
    stores = [batch_size_path(out, b) for b in config.batch_size] or [out]
    args.kept = lambda: (f"{what_is_kept(stores)}; rerun the same command to resume "
                         "(complete cells are skipped)")
    for name in ("pack", "threads", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value}")
    if args.workers is not None and args.cluster is None:
        raise InputError("workers: --workers goes with --cluster local")
    check_output_dir("--out", out)
    progress = _Progress(enabled=not args.quiet)
    try:
        with dask_client(args.scheduler, args.cluster, args.workers) as client:
            summary = run_sweep(config, out, device=args.device, client=client,
                                pack_cells=args.pack, threads=args.threads,
                                durable=not args.no_fsync,
                                on_start=progress.start, on_cell=progress.cell)
    finally:
        progress.close()
    summary = {"config": str(args.config), "name": config.name, **summary}
    if args.json:
        emit_json(summary)
    elif not args.quiet:
        emit_table("dysonsgd sweep", summary)
    return 0
