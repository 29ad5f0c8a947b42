"""The digits study of issue 16: the (T, 1/sigma_W) diagram on real data, and per-layer spectra.

Trains validation/digits.toml (the scikit-learn digits, 64 standardised pixels (2.15) -> 32 ->
16 -> 10 one-hot labels, MSE (2.6), 1500 training images, |B| = 4, W2 only, W1 and W3 the
replica's random draws frozen; T = 2^-7 .. 2^4, 1/sigma_W = 2^-8 .. 2^3, 10 seeds, 400 epochs)
and validation/digits-all.toml (the same with all three matrices trained, T <= 1, 6 seeds,
100 epochs). See :mod:`dysonsgd.model.tasks` for the data and
:mod:`dysonsgd.measure.observables` for what the observables mean without a teacher.

Measured per model, on the 297 held-out images: the final test loss (2.6) against the one-hot
labels (with the 1/2; predicting 0 scores 0.5), the test accuracy (argmax of the outputs), the
normalised overlap G(t_f, 0) / sqrt(G(t_f, t_f) G(0, 0)) (3.4), the alignment (3.5) with the
labels' external field h = y W3, the rate (4.7) of W2's spectrum and, for the all-layer run,
the rate of each ``X_l = W_l W_l^T``, and the mean level spacing S_l(t) / S_l(0) of every layer
along the run. Cell values are medians over the seeds (independent replicas; cells of one seed
share its draws). Writes docs/figures/beyond/digits_{diagram,layers}.{png,pdf} and
digits.json. Run from the repository root::

    nice -n 10 .venv/bin/python docs/studies/digits.py           # ~3 min on 2 shared cores
    nice -n 10 .venv/bin/python docs/studies/digits.py --quick   # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure

from dysonsgd.analysis.describe import mean_se
from dysonsgd.analysis.phase import phase_summary
from dysonsgd.measure.spectrum import eigenvalues, mean_level_spacing
from dysonsgd.model import layers, tasks
from dysonsgd.plots.figures import grid_heatmap, save_figure
from dysonsgd.runs.config import load_config
from dysonsgd.runs.sweep import train_grid

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "figures" / "beyond"
CONFIGS = {"w2": ROOT / "validation" / "digits.toml",
           "all": ROOT / "validation" / "digits-all.toml"}


def observe(res) -> dict[str, np.ndarray]:
    """Per-model observables (nT, nS, nR); NaN where a model diverged."""
    s = phase_summary(res)
    x, y = tasks.task_test_set(res.config)
    yhat = layers.outputs(x, res.student(-1), res.config.activation)
    acc = np.mean(np.argmax(yhat, axis=-1) == np.argmax(y, axis=-1), axis=-1)
    out = {"test_loss": s["test_loss"], "accuracy": acc, "overlap": s["normalised_overlap"],
           "alignment": s["alignment"], "rate_w2": s["rate"],
           "initial_loss": res.loss[..., 0]}
    t_f = float(res.snapshot_epochs[-1])
    for k in sorted({2, *res.layer_w}):
        w = res.snapshots(k)[0]
        spacing = mean_level_spacing(eigenvalues(w))  # (nT, nS, nR, n_snap)
        out[f"spacing_w{k}"] = spacing / spacing[..., :1]
        out[f"rate_w{k}"] = np.log(spacing[..., -1] / spacing[..., 0]) / t_f
    dead = np.asarray(res.diverged)
    for name, v in out.items():
        if name != "initial_loss":
            v = np.array(v, dtype=float)
            v[dead] = np.nan
            out[name] = v
    out["diverged"] = dead.astype(float)
    return out


def median(v: np.ndarray) -> np.ndarray:
    """Cell medians over seeds; NaN where half the models or more diverged."""
    with np.errstate(all="ignore"):
        m = np.nanmedian(v, axis=2)
        m[np.mean(np.isnan(v), axis=2) >= 0.5] = np.nan
    return m


def diagram(runs: dict) -> Figure:
    """Rows: W2 only, all layers; columns: test loss, accuracy, overlap, alignment, rate."""
    panels = [("test_loss", "test loss (2.6)", colors.LogNorm(3e-2, 1.0)),
              ("accuracy", "test accuracy", colors.Normalize(0.0, 1.0)),
              ("overlap", r"$G(t_f,0)/\sqrt{G(t_f,t_f)G(0,0)}$", colors.Normalize(0.0, 1.0)),
              ("alignment", "alignment (3.5), h = y W3", colors.Normalize(0.0, 0.6)),
              ("rate_w2", "rate (4.7) of W2 / epoch", None)]
    fig = Figure(figsize=(4.2 * len(panels), 3.4 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), len(panels), squeeze=False)
    for row, (key, (res, obs)) in enumerate(runs.items()):
        for col, (name, label, norm) in enumerate(panels):
            v = median(obs[name])
            if norm is None:
                top = np.nanmax(np.abs(v)) if np.any(np.isfinite(v)) else 1.0
                norm = colors.TwoSlopeNorm(0.0, -top, top) if np.nanmin(v) < 0 \
                    else colors.Normalize(0.0, top)
            ax = axes[row, col]
            grid_heatmap(ax, v, res.temperature, res.sigma_w, norm, label,
                         cmap="RdBu_r" if name.startswith("rate") else "viridis")
            ax.set_title(f"{'W2 only' if key == 'w2' else 'all layers'}: {label}", fontsize=9)
    return fig


def layer_dynamics(runs: dict, inv_sigma: float) -> Figure:
    """S_l(t) / S_l(0) of every recorded layer at 1/sigma_W = ``inv_sigma``, several T."""
    res_all, obs_all = runs["all"]
    res_w2, obs_w2 = runs["w2"]
    recorded = sorted({2, *res_all.layer_w})
    fig = Figure(figsize=(4.2 * (len(recorded) + 1), 3.4), layout="constrained")
    axes = fig.subplots(1, len(recorded) + 1)
    cmap = colors.LinearSegmentedColormap.from_list("t", ["tab:blue", "tab:red"])
    for ax, (res, obs, k, title) in zip(axes, [(res_w2, obs_w2, 2, "W2 only: X2 = W2 W2^T")]
                                        + [(res_all, obs_all, k, f"all layers: X{k}")
                                           for k in recorded], strict=True):
        j = int(np.argmin(np.abs(1.0 / res.sigma_w - inv_sigma)))
        for i, t in enumerate(res.temperature):
            v = obs[f"spacing_w{k}"][i, j]  # (nR, n_snap)
            if np.mean(np.isnan(v[:, -1])) >= 0.5:
                continue
            ax.plot(res.snapshot_epochs, np.nanmedian(v, axis=0),
                    color=cmap((math.log2(t) + 7) / 11),  # T = 2^-7 .. 2^4 in both runs
                    label=f"T = 2^{round(math.log2(t))}")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(r"$S(t)/S(0)$")
        ax.set_title(f"{title}, 1/sigma_W = {inv_sigma:g}", fontsize=9)
    for ax in axes:
        ax.legend(fontsize=6, ncol=2)
    return fig


def summarise(runs: dict) -> dict:
    """The numbers the docs quote."""
    out: dict = {}
    for key, (res, obs) in runs.items():
        inv = 1.0 / res.sigma_w
        cells = {}
        for i, t in enumerate(res.temperature):
            for j, s in enumerate(inv):
                cells[f"T={t:g},inv_sigma_w={s:g}"] = {
                    name: mean_se(obs[name][i, j]) for name in obs if not name.startswith(
                        "spacing")} | {"diverged_fraction": float(obs["diverged"][i, j].mean())}
        best = np.unravel_index(np.nanargmin(median(obs["test_loss"])), median(
            obs["test_loss"]).shape)
        out[key] = {"cells": cells, "best_cell": {
            "temperature": float(res.temperature[best[0]]),
            "inv_sigma_w": float(inv[best[1]]),
            "test_loss": float(median(obs["test_loss"])[best]),
            "accuracy": float(median(obs["accuracy"])[best])},
            "wall_time_s": float(res.wall_time), "model_steps": int(res.model_steps)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (2 seeds, 4 epochs)")
    args = parser.parse_args()
    runs = {}
    for key, path in CONFIGS.items():
        cfg = load_config(path)
        if args.quick:
            cfg = dataclasses.replace(cfg, seeds=2, epochs=4, snapshots=3)
        t0 = time.perf_counter()
        res = train_grid(cfg)
        print(f"{key}: trained {res.n_models} models in {time.perf_counter() - t0:.1f} s")
        runs[key] = (res, observe(res))
    out = OUT if not args.quick else Path("/tmp/digits-quick")
    save_figure(diagram(runs), out, "digits_diagram")
    save_figure(layer_dynamics(runs, 8.0), out, "digits_layers")
    save_figure(layer_dynamics(runs, 0.0625), out, "digits_layers_wide")
    summary = summarise(runs)
    (out / "digits.json").write_text(json.dumps(summary, indent=1))
    for key, s in summary.items():
        print(key, s["best_cell"], f"{s['wall_time_s']:.1f} s")


if __name__ == "__main__":
    main()
