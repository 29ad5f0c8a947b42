"""The linear scaling study of issue 11: the batch size as a grid axis at fixed T = lr / |B|.

On the paper's model (widths (3, 32, 16, 1), tanh, 1/sigma_W = 8, n_data = 4000, 100 epochs,
fixed data order) it trains T in {2^-5, 2^-2, 2} x |B| in {1, 2, 4, 8, 16, 32} with the same
seed streams for every |B| (common random numbers: each seed is one teacher, data set and W2(0)
for all batch sizes), so T is held fixed while lr = T |B| varies over 2^-5 .. 64. With the
epochs fixed every run ends at the same continuous time t_f = lr x steps = T x 100 x 4000.
If the continuum picture (2.29)-(2.30) held, nothing at t_f would depend on |B| at fixed T.

Measured per (T, |B|) cell, over the seeds that did not diverge:

- the mean level spacing S(t_f) (4.5) and the release's test loss: mean and standard error;
- the stability number lr x lambda_max of the Hessian of the training loss in W2
  (:mod:`dysonsgd.measure.curvature`), gradient descent being stable only below 2, at
  snapshots 0, 10 and 20 (epochs 0, 50, 100);
- the test of |B|-dependence: the paired difference S_B(t_f) - S_1(t_f) over seeds (paired,
  because the seeds are common to all |B|; the seeds are independent replicas), its t
  statistic d / SE(d) and two-sided p-value with n - 1 degrees of freedom; significant at
  alpha = 0.05 / 3 (Bonferroni over the three temperatures) for the stated |B| = 16 vs 1 test;
- when :func:`dysonsgd.analysis.predict.predict_run` takes ``variant=``: the predicted mean
  S(t_f) of the complete SDE and of its continuum limit (no finite-lr terms).

And over the paper's 12 x 12 grid (validation/paper-small.toml: |B| = 4, 10 seeds, 100 epochs),
lr x lambda_max cell by cell at snapshots 0, 1 (epoch 5) and 20 (t_f).

Writes docs/figures/scaling/{scaling,stability_grid}.{png,pdf} and linear_scaling.json.
Run from the repository root::

    .venv/bin/python docs/studies/linear_scaling.py            # ~6-10 min on 2 shared cores
    .venv/bin/python docs/studies/linear_scaling.py --quick    # a smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy import stats

from dysonsgd.measure.curvature import result_largest_curvature
from dysonsgd.measure.observables import result_test_loss
from dysonsgd.measure.spectrum import eigenvalues, mean_level_spacing
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.plots.figures import save_figure
from dysonsgd.runs.config import find_config, load_config
from dysonsgd.runs.sweep import train_grid
from dysonsgd.train import train_ensemble
from dysonsgd.train.result import BatchResults

TEMPERATURES = (2.0**-5, 2.0**-2, 2.0)
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
SIGMA_W = 1.0 / 8.0
SEEDS, EPOCHS = 32, 100
CURVATURE_SNAPSHOTS = (0, 10, 20)  # of 21: epochs 0, 50, 100 (first, middle, last)
GRID_SNAPSHOTS = (0, 1, 20)  # of 21: epochs 0, 5, 100 (first, second, last)
LANCZOS, GRID_LANCZOS = 24, 16  # steps; the JSON reports the largest relative Ritz residual
ALPHA = 0.05 / len(TEMPERATURES)  # Bonferroni over the temperatures
VARIANTS = ("complete", "continuum")  # drawn in the figure
PREDICTED = (*VARIANTS, "paper")
ROOT = Path(__file__).resolve().parents[2]


def mean_se(values: np.ndarray) -> tuple[float, float, int]:
    """Mean, standard error (ddof 1) and count of the finite entries."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    se = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), se, int(v.size)


def paired_test(a: np.ndarray, b: np.ndarray) -> dict:
    """The paired difference b - a over seeds where both are finite: mean, SE, t, p."""
    keep = np.isfinite(a) & np.isfinite(b)
    d = b[keep] - a[keep]
    n = d.size
    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(n))
    t = mean / se if se > 0 else float("inf") * np.sign(mean)
    p = float(2 * stats.t.sf(abs(t), n - 1))
    return {"difference": mean, "se": se, "t": float(t), "p": p, "seeds": int(n),
            "ratio_of_means": float(b[keep].mean() / a[keep].mean())}


def _snapshots(res, wanted) -> tuple[int, ...]:
    """``wanted`` of 21 snapshots, mapped onto the run's (a --quick run has fewer)."""
    n = len(res.snapshot_epochs)
    return tuple(round(s * (n - 1) / 20) if s > 1 else min(s, n - 1) for s in wanted)


def curvature_table(res, snapshots, iterations: int) -> tuple[np.ndarray, float]:
    """lr x lambda_max per snapshot, (n_snap, nT, nS, nR), NaN for diverged models, and the
    largest Ritz residual relative to lambda_max."""
    out, worst = [], 0.0
    for k in snapshots:
        c = result_largest_curvature(res, k, iterations=iterations)
        out.append(c.stability(res.learning_rate[:, None, None]))
        worst = max(worst, float(np.nanmax(c.residual / np.abs(c.largest))))
    table = np.stack(out)
    table[:, res.diverged] = np.nan
    return table, worst


def scaling_runs(seeds: int, epochs: int, batch_sizes, temperatures) -> dict:
    t0 = time.perf_counter()
    runs = train_ensemble(TeacherStudentConfig(), temperature=list(temperatures),
                          sigma_w=SIGMA_W, n_seeds=seeds, epochs=epochs,
                          batch_size=list(batch_sizes), progress=False)
    t_train = time.perf_counter() - t0
    cells, spacing, worst = [], {}, 0.0
    for b, res in runs.items():
        keep = ~res.diverged[:, 0]  # (nT, nR)
        s_f = mean_level_spacing(eigenvalues(res.w2[:, 0, :, -1]))
        s_f[~keep] = np.nan
        loss = result_test_loss(res)[:, 0]
        loss[~keep] = np.nan
        snaps = _snapshots(res, CURVATURE_SNAPSHOTS)
        stab, w = curvature_table(res, snaps, LANCZOS)
        worst = max(worst, w)
        spacing[b] = s_f
        for i, t in enumerate(res.temperature):
            row = {"temperature": float(t), "batch_size": int(b),
                   "learning_rate": float(res.learning_rate[i]),
                   "t_f": float(res.time[i, -1]), "diverged": int((~keep[i]).sum()),
                   "seeds": int(keep.shape[1])}
            for name, v in (("spacing", s_f[i]), ("test_loss", loss[i])):
                row[name], row[f"{name}_se"], _ = mean_se(v)
            for k in range(len(snaps)):  # k-th of curvature_epochs
                v = stab[k, i, 0]
                row[f"lr_lambda_max_{k}"], row[f"lr_lambda_max_{k}_se"], _ = mean_se(v)
                row[f"lr_lambda_max_{k}_max"] = float(np.nanmax(v)) if keep[i].any() else None
                row[f"fraction_above_2_{k}"] = float(np.mean(v[keep[i]] > 2)) \
                    if keep[i].any() else None
            cells.append(row)
    tests = []
    for i, t in enumerate(temperatures):
        for b in batch_sizes[1:]:
            tests.append({"temperature": float(t), "batch_size": int(b), "against": 1,
                          **paired_test(spacing[batch_sizes[0]][i], spacing[b][i])})
    return {"runs": runs, "cells": cells, "tests": tests, "train_s": t_train,
            "curvature_epochs": [int(res.snapshot_epochs[s]) for s in snaps],
            "lanczos_worst_relative_residual": worst,
            "wall_s": time.perf_counter() - t0}


def predictions(runs) -> list[dict] | None:
    """The mean S(t_f) predicted by the level-spacing SDE (4.8) with the coefficients of the
    complete equation, of its continuum limit (no finite-lr terms) and of the paper's (B.7),
    (B.9), per (T, |B|) cell, with the options ``dysonsgd validate`` uses; None where
    :func:`~dysonsgd.analysis.predict.predict_spacing` has no ``variant=`` yet."""
    from dysonsgd.analysis import predict
    from dysonsgd.analysis.spec import DEFAULT_OPTIONS

    if "variant" not in inspect.signature(predict.predict_spacing).parameters:
        return None
    opts = {k: DEFAULT_OPTIONS[k] for k in ("paths_per_model", "steps_per_interval", "seed")}
    out = []
    for b, res in runs.items():
        coeffs = predict.measure_run(res, drift=DEFAULT_OPTIONS["drift"])  # once per |B|
        for i, t in enumerate(res.temperature):
            if coeffs.diverged[i, 0].all():
                continue
            for v in PREDICTED:
                _, s, models = predict.predict_spacing(
                    coeffs, (i, 0), start=DEFAULT_OPTIONS["start_snapshot"], variant=v, **opts)
                final = np.ma.filled(s[-1, :, 0].astype(float), np.nan)
                kept = np.unique(models)
                per_model = np.array([np.nanmean(final[models == m]) for m in kept])
                mean, se, _ = mean_se(per_model)  # models independent, paths of one are not
                observed = float(coeffs.spacing[i, 0, kept, -1].mean())
                out.append({"temperature": float(t), "batch_size": int(b), "variant": v,
                            "learning_rate": float(res.learning_rate[i]),
                            "predicted": mean, "predicted_se": se, "observed": observed,
                            "ratio": mean / observed,
                            "broken_paths": int(np.isnan(final).sum())})
    return out


def grid_curvature(quick: bool) -> dict:
    t0 = time.perf_counter()
    config = load_config(find_config("paper-small"))
    if quick:
        from dataclasses import replace

        config = replace(config, temperature=config.temperature[::4],
                         sigma_w=config.sigma_w[::4], seeds=2, epochs=10)
    res = train_grid(config)
    t_train = time.perf_counter() - t0
    snaps = _snapshots(res, GRID_SNAPSHOTS)
    stab, worst = curvature_table(res, snaps, GRID_LANCZOS)
    cells = []
    for i, t in enumerate(res.temperature):
        for j, s in enumerate(res.sigma_w):
            keep = ~res.diverged[i, j]
            row = {"temperature": float(t), "inv_sigma_w": float(1 / s),
                   "learning_rate": float(res.learning_rate[i]),
                   "diverged": int((~keep).sum()), "seeds": int(keep.size)}
            for k in range(len(snaps)):  # k-th of epochs_at_snapshots
                v = stab[k, i, j][keep]
                row[f"median_{k}"] = float(np.median(v)) if v.size else None
                row[f"max_{k}"] = float(v.max()) if v.size else None
                row[f"fraction_above_2_{k}"] = float(np.mean(v > 2)) if v.size else None
            cells.append(row)
    return {"cells": cells, "snapshots": list(snaps),
            "epochs_at_snapshots": [int(res.snapshot_epochs[s]) for s in snaps],
            "temperature": [float(t) for t in res.temperature],
            "inv_sigma_w": [float(1 / s) for s in res.sigma_w], "stability": stab,
            "diverged": res.diverged, "train_s": t_train,
            "lanczos_worst_relative_residual": worst, "wall_s": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------


def scaling_figure(study: dict, temperatures, preds) -> Figure:
    cells = study["cells"]
    fig = Figure(figsize=(13, 9.5), layout="constrained")
    axes = fig.subplots(3, len(temperatures), squeeze=False)
    for c, t in enumerate(temperatures):
        rows = [r for r in cells if r["temperature"] == t]
        lr = np.array([r["learning_rate"] for r in rows])
        bs = [r["batch_size"] for r in rows]
        ax = axes[0, c]
        ax.errorbar(lr, [r["spacing"] for r in rows], [r["spacing_se"] for r in rows],
                    fmt="o-", color="k", capsize=3, label="trained")
        for v, style in zip(VARIANTS, ("s--", "^:"), strict=True):
            p = [r for r in (preds or []) if r["variant"] == v and r["temperature"] == t]
            if p:
                ax.errorbar([r["learning_rate"] for r in p], [r["predicted"] for r in p],
                            [r["predicted_se"] for r in p], fmt=style, capsize=2,
                            label=f"SDE (4.8), {v}")
        for x, y, b in zip(lr, [r["spacing"] for r in rows], bs, strict=True):
            ax.annotate(f"|B|={b}", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        ax.set(xscale="log", yscale="log", title=f"T = 2^{int(np.log2(t))}",
               ylabel="mean S(t_f)  (4.5)")
        ax.legend(fontsize=8)
        ax = axes[1, c]
        ax.errorbar(lr, [r["test_loss"] for r in rows], [r["test_loss_se"] for r in rows],
                    fmt="o-", color="C3", capsize=3)
        ax.set(xscale="log", yscale="log", ylabel="test loss (release)")
        ax = axes[2, c]
        for k, epoch in enumerate(study["curvature_epochs"]):
            ax.errorbar(lr, [r[f"lr_lambda_max_{k}"] for r in rows],
                        [r[f"lr_lambda_max_{k}_se"] for r in rows], fmt="o-", color=f"C{k}",
                        capsize=3, label=f"epoch {epoch}")
        ax.axhline(2.0, color="k", ls="--", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="lr = T |B|", ylabel="lr x lambda_max")
        ax.legend(fontsize=8)
    fig.suptitle("Linear scaling at fixed T: paper's model, 1/sigma_W = 8, 100 epochs "
                 f"(mean +- SE over {cells[0]['seeds']} seeds)")
    return fig


def grid_figure(grid: dict) -> Figure:
    """Median lr x lambda_max over the seeds, cell by cell, from the JSON cells; the colour
    scale is centred on the threshold 2."""
    temps, inv = grid["temperature"], grid["inv_sigma_w"]
    log_t, log_s = np.log2(temps), np.log2(inv)
    cell = {(c["temperature"], c["inv_sigma_w"]): c for c in grid["cells"]}

    def table(key):
        return np.array([[np.nan if cell[t, v][key] is None else cell[t, v][key] for v in inv]
                         for t in temps], dtype=float)

    fig = Figure(figsize=(4.6 * len(grid["snapshots"]), 4.2), layout="constrained")
    axes = fig.subplots(1, len(grid["snapshots"]), squeeze=False)[0]
    div = table("diverged") / np.array([[cell[t, v]["seeds"] for v in inv] for t in temps])
    for k, ax in enumerate(axes):
        med = np.log2(table(f"median_{k}"))
        im = ax.pcolormesh(log_s, log_t, med, cmap="RdBu_r", vmin=-5, vmax=7, shading="nearest")
        if np.nanmax(med) > 1 > np.nanmin(med) and len(log_s) > 1 and len(log_t) > 1:
            ax.contour(log_s, log_t, med, levels=[1.0], colors="k")
        above = table(f"max_{k}") > 2
        for i in range(len(log_t)):
            for j in range(len(log_s)):
                label = (f"{div[i, j]:.0%}" if div[i, j] > 0 else "") + \
                    ("*" if above[i, j] else "")
                if label:
                    ax.text(log_s[j], log_t[i], label, ha="center", va="center", fontsize=6)
        ax.set(xlabel="log2 (1/sigma_W)", ylabel="log2 T",
               title=f"epoch {grid['epochs_at_snapshots'][k]}: median lr lambda_max")
    fig.colorbar(im, ax=axes, label="log2 (lr x lambda_max); white and black line: = 2")
    fig.suptitle("paper grid, |B| = 4: median over seeds; * some seed above 2, % diverged")
    return fig


def _plain(value):
    """JSON-ready: dicts and lists kept, the runs and arrays left out, NaN as null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()
                if not isinstance(v, (np.ndarray, BatchResults))}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (few seeds/epochs)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "scaling")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads of the Hessian products (1: robust on shared "
                             "cores; training uses numba's threads)")
    parser.add_argument("--no-predict", action="store_true", help="skip the SDE predictions")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the figures from OUT/linear_scaling.json")
    args = parser.parse_args()
    if args.replot:
        payload = json.loads((args.out / "linear_scaling.json").read_text())
        draw(payload, args.out)
        return
    torch.set_num_threads(args.torch_threads)
    t0 = time.perf_counter()
    seeds, epochs = (4, 10) if args.quick else (SEEDS, EPOCHS)
    batch_sizes = (1, 4, 16) if args.quick else BATCH_SIZES
    study = scaling_runs(seeds, epochs, batch_sizes, TEMPERATURES)
    print(f"scaling study: {study['wall_s']:.0f} s (training {study['train_s']:.0f} s)")
    t1 = time.perf_counter()
    preds = None if args.no_predict else predictions(study["runs"])
    print("predictions:", "skipped" if args.no_predict else "not available (no variant=)"
          if preds is None else f"{len(preds)} cells, {time.perf_counter() - t1:.0f} s")
    grid = grid_curvature(args.quick)
    print(f"paper grid: {grid['wall_s']:.0f} s (training {grid['train_s']:.0f} s)")
    wall = time.perf_counter() - t0
    payload = {
        "model": "widths (3, 32, 16, 1), tanh, n_data 4000, fixed data order, float32",
        "sigma_w": SIGMA_W, "epochs": epochs, "seeds": seeds, "batch_sizes": list(batch_sizes),
        "temperatures": list(TEMPERATURES), "lanczos_steps": [LANCZOS, GRID_LANCZOS],
        "bonferroni_alpha": ALPHA,
        "scaling": study, "predictions": preds, "paper_grid": grid, "wall_s": wall,
        "quick": bool(args.quick),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "linear_scaling.json"
    payload = _plain(payload)
    out.write_text(json.dumps(payload, indent=1))
    paths = draw(payload, args.out)
    print(f"wrote {out} and {', '.join(p.name for p in paths)} in {wall:.0f} s")


def draw(payload: dict, out: Path) -> list[Path]:
    """Both figures from the JSON payload, PNG and PDF."""
    fig = scaling_figure(payload["scaling"], payload["temperatures"], payload["predictions"])
    return (save_figure(fig, out, "scaling")
            + save_figure(grid_figure(payload["paper_grid"]), out, "stability_grid"))


if __name__ == "__main__":
    main()
