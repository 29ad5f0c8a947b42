"""``dysonsgd sde``: integrate (4.3) or (4.8) with the coefficients measured on a trained run.

dysonsgd sde dyson|spacing --from RUN [--snapshot START] [--temperature T ...] [--sigma-w S ...]
                          [--paths-per-model 10] [--steps-per-interval 100] [--solver NAME]
                          [--drift training|test] [--seed 0] [--out FILE.nc|.npz] [--json]

For every selected cell, each non-diverged model's trajectories start from its own eigenvalues
(or spacing) at snapshot START and follow its own K(t), V(t), linear in t between the measured
snapshots (:mod:`dysonsgd.analysis.predict`). The output holds the predicted trajectories next to
the observed ones, on the run's snapshot times (t = lr * SGD steps).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from dysonsgd._checks import InputError, grid_index
from dysonsgd.cli._output import emit_json, emit_table

KINDS = ("dyson", "spacing")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sde", help="integrate Dyson Brownian motion (4.3) or the spacing SDE (4.8) from a run"
    )
    p.add_argument("kind", choices=KINDS, help="dyson: eigenvalues (4.3); spacing: S (4.8)")
    p.add_argument("--from", dest="run", type=Path, required=True, help="a run (.nc, .npz)")
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
    p.add_argument("--drift", choices=("training", "test"), default="training",
                   help="K from the recorded training gradient (default) or the test set (4.4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Brownian paths (0)")
    p.add_argument("--out", type=Path, help="write trajectories to .nc or .npz")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(handler=_run)


def _indices(name: str, wanted, grid: np.ndarray) -> list[int]:
    if not wanted:
        return list(range(grid.size))
    out = []
    for w in wanted:
        i = grid_index(grid, w)
        if i is None:
            raise InputError(f"{name}: {w} is not in the run's grid {grid.tolist()}")
        out.append(i)
    return out


def _validate_args(args: argparse.Namespace) -> None:
    if args.paths_per_model < 1:
        raise InputError(f"paths-per-model must be >= 1, got {args.paths_per_model}")
    if args.steps_per_interval < 1:
        raise InputError(f"steps-per-interval must be >= 1, got {args.steps_per_interval}")
    if args.out is not None:
        if args.out.suffix not in (".nc", ".npz"):
            raise InputError(f"out must end in .nc or .npz, got {str(args.out)!r}")
        if not args.out.parent.exists():
            raise InputError(f"out: directory {str(args.out.parent)!r} does not exist")
    if args.solver is not None:
        from dysonsgd.sde import SOLVERS

        if args.solver not in SOLVERS:
            raise InputError(f"solver must be one of {sorted(SOLVERS)}, got {args.solver!r}")


def _run(args: argparse.Namespace) -> int:
    from scipy import stats

    from dysonsgd.analysis import predict
    from dysonsgd.runs.store import load_result

    _validate_args(args)
    result = load_result(args.run)
    n_snap = len(result.snapshot_epochs)
    if not 0 <= args.snapshot < n_snap - 1:
        raise InputError(f"snapshot must lie in [0, {n_snap - 2}] (a later snapshot must "
                         f"follow), got {args.snapshot}")
    i_ts = _indices("temperature", args.temperature, result.temperature)
    i_ss = _indices("sigma-w", args.sigma_w, result.sigma_w)
    coeffs = predict.measure_run(result, drift=args.drift)
    fn = predict.predict_eigenvalues if args.kind == "dyson" else predict.predict_spacing
    cells: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for i_t in i_ts:
        for i_s in i_ss:
            label = f"T{i_t}_S{i_s}"
            if coeffs.diverged[i_t, i_s].all():
                cells.append({"temperature": float(result.temperature[i_t]),
                              "sigma_w": float(result.sigma_w[i_s]), "skipped": "all diverged"})
                continue
            times, pred, models = fn(coeffs, (i_t, i_s), start=args.snapshot,
                                     paths_per_model=args.paths_per_model,
                                     steps_per_interval=args.steps_per_interval,
                                     solver=args.solver, seed=args.seed)
            broken = np.ma.getmaskarray(pred)[-1].any(axis=-1)
            kept = np.unique(models)
            obs_full = (coeffs.eigenvalues if args.kind == "dyson" else coeffs.spacing[..., None])
            observed = obs_full[i_t, i_s, kept, args.snapshot:]
            last = pred[-1]  # (paths, N): S itself, or the eigenvalues whose spread gives S
            final = np.ma.compressed(last[:, 0] if args.kind == "spacing"
                                     else (last[:, -1] - last[:, 0]) / (last.shape[-1] - 1))
            obs_s = coeffs.spacing[i_t, i_s, kept, -1]
            cells.append({
                "temperature": float(result.temperature[i_t]),
                "sigma_w": float(result.sigma_w[i_s]),
                "models": int(kept.size),
                "paths": int(models.size),
                "broken_paths": int(broken.sum()),
                "final_spacing_predicted_mean": float(final.mean()) if final.size else None,
                "final_spacing_observed_mean": float(obs_s.mean()),
                "final_spacing_ks": float(stats.ks_2samp(final, obs_s).statistic)
                if final.size else None,
            })
            arrays[f"{label}_times"] = times
            arrays[f"{label}_predicted"] = np.ma.filled(pred.astype(float), np.nan)
            arrays[f"{label}_observed"] = observed
            arrays[f"{label}_models"] = models
    summary = {"kind": args.kind, "run": str(args.run), "start_snapshot": args.snapshot,
               "drift": args.drift, "solver": args.solver or "adaptive", "seed": args.seed,
               "cells": cells, "out": str(args.out) if args.out else None}
    if args.out is not None:
        _write(args.out, arrays, summary)
    if args.json:
        emit_json(summary)
    else:
        for c in cells:
            emit_table(f"dysonsgd sde {args.kind}: T = {c['temperature']:g}, "
                       f"sigma_W = {c['sigma_w']:g}", c)
        if args.out is not None:
            print(f"trajectories written to {args.out}")
    return 0


def _write(path: Path, arrays: dict[str, np.ndarray], summary: dict[str, Any]) -> None:
    import json

    if path.suffix == ".npz":
        np.savez_compressed(path, summary=np.array(json.dumps(summary)), **arrays)
        return
    import xarray as xr

    data = {}
    for name, arr in arrays.items():
        label, _, what = name.rpartition("_")
        if what == "times":
            dims: tuple[str, ...] = (f"{label}_time",)
        elif what == "models":
            dims = (f"{label}_path",)
        elif what == "predicted":
            dims = (f"{label}_time", f"{label}_path", "level")
        else:
            dims = (f"{label}_model", f"{label}_time", "level")
        data[name] = (dims, arr)
    xr.Dataset(data, attrs={"summary": json.dumps(summary)}).to_netcdf(path, engine="scipy")
