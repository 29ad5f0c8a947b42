"""Figures of runs that train more than W2 (issue 16): diagrams side by side, spectra per layer.

Each function takes arrays (the study or the analysis layer computes them) and returns a
:class:`matplotlib.figure.Figure`; :func:`dysonsgd.plots.figures.save_figure` writes it as PNG
and PDF. No pyplot global state.

- :func:`diagram_comparison`: the (T, 1/sigma_W) diagrams of the paper's four observables (final
  test loss, G(t_f, 0), alignment, rate) for several runs, one row each, and a last row of the
  paired differences between the first two (the runs share their seeds).
- :func:`layer_spectra`: the eigenvalues of ``X_l = W_l W_l^T`` of every layer along training
  (figure 6 for each weight matrix), one row per layer, one column per cell, several runs
  overlaid.
- :func:`layer_spacing`: the mean level spacing (4.5) of each layer relative to its initial
  value, mean and standard error over seeds, one panel per cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure

from dysonsgd._checks import InputError
from dysonsgd.plots.figures import G_RANGE, LOSS_RANGE, grid_heatmap, rate_range

__all__ = ["diagram_comparison", "layer_spacing", "layer_spectra"]

#: the observables of :func:`diagram_comparison`, in column order: key, colour scale, label
OBSERVABLES = ("test_loss", "feature_correlation", "alignment", "rate")
RUN_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple")


def _norm(key: str, epochs: float):
    if key == "test_loss":
        return colors.LogNorm(*LOSS_RANGE), "final test loss (2.6)"
    if key == "feature_correlation":
        return colors.Normalize(*G_RANGE), r"$G(t_f, 0)$ (3.4)"
    if key == "alignment":
        return colors.Normalize(0.0, 0.6), "alignment (3.5)"
    return colors.Normalize(*rate_range(epochs)), r"$\bar\lambda(t_f)$ of $W_2$ per epoch"


def diagram_comparison(medians: Mapping[str, Mapping[str, np.ndarray]], temperature, sigma_w,
                       epochs: float, differences: Mapping[str, np.ndarray] | None = None
                       ) -> Figure:
    """The four observables' diagrams of several runs, and their paired differences.

    Parameters
    ----------
    medians : run label -> observable -> (nT, nS) cell values (NaN: not shown, grey)
        Observables ``test_loss``, ``feature_correlation``, ``alignment``, ``rate``.
    temperature : (nT,); sigma_w : (nS,)
    epochs : float
        Training time t_f (the rate's colour scale).
    differences : observable -> (nT, nS), optional
        Paired differences first run minus second (of log10 for the test loss), drawn as a last
        row on a diverging scale symmetric about 0.

    Returns
    -------
    Figure
    """
    if not medians:
        raise InputError("medians must hold at least one run")
    n_rows = len(medians) + (differences is not None)
    fig = Figure(figsize=(20, 4.2 * n_rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n_rows, len(OBSERVABLES)))
    for row, (run, values) in enumerate(medians.items()):
        for ax, key in zip(axes[row], OBSERVABLES, strict=True):
            norm, label = _norm(key, epochs)
            grid_heatmap(ax, values[key], temperature, sigma_w, norm, label)
            ax.set_facecolor("lightgrey")
            ax.set_title(f"{run}: {label}", fontsize=9)
    if differences is not None:
        names = list(medians)
        diff_of = f"{names[0]} - {names[1]}" if len(names) > 1 else "difference"
        for ax, key in zip(axes[-1], OBSERVABLES, strict=True):
            d = np.asarray(differences[key], float)
            scale = float(np.nanmax(np.abs(d))) if np.any(np.isfinite(d)) else 1.0
            label = (r"$\Delta \log_{10}$ test loss" if key == "test_loss"
                     else r"$\Delta$ " + _norm(key, epochs)[1])
            grid_heatmap(ax, d, temperature, sigma_w,
                         colors.Normalize(-scale, scale), label, cmap="RdBu_r")
            ax.set_facecolor("lightgrey")
            ax.set_title(f"{diff_of} (paired by seed): {label}", fontsize=9)
    return fig


def _log_axis(ax, values: np.ndarray) -> None:
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and v.max() / v.min() > 100:
        ax.set_yscale("log")


def layer_spectra(epochs, spectra: Sequence[Sequence[Mapping[str, np.ndarray]]],
                  titles: Sequence[str], layer_names: Sequence[str],
                  targets: Sequence[Sequence[np.ndarray | None]] | None = None) -> Figure:
    """Eigenvalues of ``X_l = W_l W_l^T`` along training: rows are layers, columns cells.

    Parameters
    ----------
    epochs : (n_snap,)
    spectra : per layer, per cell: run label -> (nR, n_snap, k) eigenvalues (every model's
        levels, one line each; :func:`dysonsgd.measure.spectrum.layer_eigenvalues`)
    titles : per cell (column titles)
    layer_names : per layer (row labels)
    targets : per layer, per cell, (nR, k) the teacher's eigenvalues (dashed), or None

    Returns
    -------
    Figure
    """
    n_rows, n_cols = len(spectra), len(titles)
    if len(layer_names) != n_rows or any(len(row) != n_cols for row in spectra):
        raise InputError("spectra must hold one row per layer and one entry per title")
    fig = Figure(figsize=(4.8 * n_cols, 3.4 * n_rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    e = np.asarray(epochs, dtype=float)
    for r, (row, name) in enumerate(zip(spectra, layer_names, strict=True)):
        for c, runs in enumerate(row):
            ax = axes[r, c]
            shown = []
            for n, ((run, eig), colour) in enumerate(zip(runs.items(), RUN_COLOURS,
                                                         strict=False)):
                x = np.asarray(eig, dtype=float)
                lines = np.moveaxis(x, -1, 1).reshape(-1, x.shape[1])  # (nR k, n_snap)
                for i, y in enumerate(lines):  # the first run on top
                    ax.plot(e, y, "-", lw=0.5, alpha=0.45, color=colour, zorder=3 + len(runs) - n,
                            label=run if i == 0 else None)
                if not lines.size:
                    ax.plot([], [], "-", color=colour, label=f"{run} (none: all diverged)")
                shown.append(x)
            tgt = None if targets is None else targets[r][c]
            if tgt is not None:
                for y in np.ravel(tgt):
                    ax.axhline(y, ls="--", lw=0.5, alpha=0.5, color="k")
            _log_axis(ax, np.concatenate([s.ravel() for s in shown]))
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"eigenvalues of {name}")
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if (r == 0 and c == 0) or not all(np.size(v) for v in runs.values()):
                ax.legend(fontsize=7)
    return fig


def layer_spacing(epochs, series: Sequence[Mapping[str, tuple[np.ndarray, np.ndarray]]],
                  titles: Sequence[str]) -> Figure:
    """Per-layer level spacing relative to t = 0, mean +- standard error over seeds.

    Parameters
    ----------
    epochs : (n_snap,)
    series : per cell: line label (say ``"W1, all layers"``) -> (mean, se), each (n_snap,),
        of ``log10 S_l(t) / S_l(0)`` (or of ``||W3||^2`` for a single level); lines whose
        label starts with the same layer share a colour, runs differ in line style
    titles : per cell

    Returns
    -------
    Figure
    """
    if len(series) != len(titles):
        raise InputError("series must hold one entry per title")
    fig = Figure(figsize=(5.0 * len(titles), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(titles)))
    e = np.asarray(epochs, dtype=float)
    for ax, lines, title in zip(axes, series, titles, strict=True):
        layers: list[str] = []
        runs: list[str] = []
        for label in lines:
            layer, _, run = label.partition(", ")
            layers += [layer] if layer not in layers else []
            runs += [run] if run not in runs else []
        for label, (mean, se) in lines.items():
            layer, _, run = label.partition(", ")
            colour = RUN_COLOURS[layers.index(layer) % len(RUN_COLOURS)]
            style = ("-", "--", ":", "-.")[runs.index(run) % 4]
            m, s = np.asarray(mean, float), np.asarray(se, float)
            ax.plot(e, m, style, color=colour, lw=1.4, label=label)
            ax.fill_between(e, m - s, m + s, color=colour, alpha=0.2, lw=0)
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel(r"$\log_{10} S_l(t) / S_l(0)$")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    return fig
