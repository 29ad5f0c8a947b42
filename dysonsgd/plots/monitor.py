"""Figures of a :class:`~dysonsgd.monitor.SpectrumMonitor`'s records, and the report of
``dysonsgd monitor report``.

From one or more record sets (``xarray.Dataset`` of :func:`dysonsgd.monitor.open_store`):

- :func:`figure_spectrum`: the eigenvalues of X = W W^T of each layer through training (as
  figure 6), with the fitted Marchenko-Pastur edge x_+ (4.2);
- :func:`figure_spacing`: the mean level spacing S(t) (4.5) and the mean spacing ratio <r~>(t)
  against its GOE and Poisson values;
- :func:`figure_signal_to_noise`: -K_S / V_S of each probed record against the temperature
  T, with the (4.15) line (n2 - 1) T / (4 sqrt(r) sigma_W^2) above which the spacing
  converges (filled: converged by (4.15) at the last probed record of a run).

Matplotlib ``Figure`` objects, saved as PNG and PDF by
:func:`dysonsgd.plots.figures.save_figure`; no pyplot state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from dysonsgd._checks import InputError
from dysonsgd.monitor.store import open_store
from dysonsgd.monitor.summary import last_probed, layer_dataset, layer_info, layer_summary
from dysonsgd.plots.figures import save_figure
from dysonsgd.theory.boundaries import signal_to_noise_threshold

__all__ = ["figure_signal_to_noise", "figure_spacing", "figure_spectrum", "monitor_report"]


def _plain_ticks(axis) -> None:
    """Plain-text tick labels (``0.01``, not mathtext ``10^-2``) and no minor ticks on a log or
    symlog axis: laying out the mathtext labels of many ticks is most of a figure's time."""
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(ticker.NullLocator())


def _label(ds, k: int) -> str:
    t = layer_summary(ds)
    temps = {round(v["temperature"], 12) for v in t.values()}
    return f"run {k}" if len(temps) != 1 else f"T = {temps.pop():.3g}"


def figure_spectrum(ds, title: str = "") -> Figure:
    """Eigenvalues of each layer along training, one panel per layer (as figure 6)."""
    info = layer_info(ds)
    fig = Figure(figsize=(4.2 * len(info), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(info)))
    step = np.asarray(ds["step"])
    for ax, la in zip(axes, info, strict=True):
        sub = layer_dataset(ds, la["name"])
        x = np.asarray(sub["eigenvalues"])
        ax.plot(step, x, "-", lw=0.6, alpha=0.7, color="tab:blue")
        ax.plot(step, np.asarray(sub["mp_edge"]), "--", lw=1.0, color="k",
                label=r"MP edge $x_+$ of the bulk fit")
        if np.nanmin(x) > 0 and np.nanmax(x) / np.nanmin(x) > 100:
            ax.set_yscale("log")
            _plain_ticks(ax.yaxis)
        shape = f"{la['n_rows']} x {la['n_cols']}" + (" (W^T)" if la["transposed"] else "")
        ax.set_title(f"{la['name']}  [{shape}]", fontsize=9)
        ax.set_xlabel("step")
    axes[0].set_ylabel(r"eigenvalues $x_i$ of $X = W W^T$")
    axes[0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title)
    return fig


def figure_spacing(datasets: Sequence, labels: Sequence[str] | None = None) -> Figure:
    """S(t) (top) and <r~>(t) (bottom) of every layer, one column per layer."""
    datasets = list(datasets)
    labels = list(labels) if labels is not None else [_label(d, k) for k, d in
                                                      enumerate(datasets)]
    names = [la["name"] for la in layer_info(datasets[0])]
    fig = Figure(figsize=(4.2 * len(names), 6.0), layout="constrained")
    axes = fig.subplots(2, len(names), squeeze=False)
    goe = datasets[0].attrs.get("ratio_mean_goe", 0.5307)
    poisson = datasets[0].attrs.get("ratio_mean_poisson", 0.3863)
    for col, name in enumerate(names):
        top, bottom = axes[0, col], axes[1, col]
        for k, (ds, label) in enumerate(zip(datasets, labels, strict=True)):
            if name not in [la["name"] for la in layer_info(ds)]:
                continue
            sub = layer_dataset(ds, name)
            step = np.asarray(ds["step"])
            top.plot(step, np.asarray(sub["level_spacing"]), color=f"C{k}", label=label)
            bottom.plot(step, np.asarray(sub["ratio_mean"]), color=f"C{k}", label=label)
        bottom.axhline(goe, ls="--", color="k", lw=0.8, label=f"GOE {goe:.4f}")
        bottom.axhline(poisson, ls=":", color="k", lw=0.8, label=f"Poisson {poisson:.4f}")
        top.set_yscale("log")
        _plain_ticks(top.yaxis)
        top.set_title(name, fontsize=9)
        top.set_ylabel("mean level spacing S (4.5)")
        bottom.set_ylabel(r"mean spacing ratio $\langle\tilde r\rangle$")
        bottom.set_xlabel("step")
        bottom.set_ylim(0.0, 1.0)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7, loc="upper right")
    return fig


def figure_signal_to_noise(datasets: Sequence, labels: Sequence[str] | None = None
                           ) -> Figure | None:
    """-K_S / V_S against T per layer with the (4.15) line; None if no record was probed."""
    datasets = [d for d in datasets if last_probed(d) is not None]
    if not datasets:
        return None
    labels = list(labels) if labels is not None else [_label(d, k) for k, d in
                                                      enumerate(datasets)]
    info = layer_info(datasets[0])
    fig = Figure(figsize=(4.2 * len(info), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(info)))
    for ax, la in zip(axes, info, strict=True):
        name = la["name"]
        temps = []
        for k, (ds, label) in enumerate(zip(datasets, labels, strict=True)):
            if name not in [x["name"] for x in layer_info(ds)]:
                continue
            sub = layer_dataset(ds, name)
            probed = np.asarray(ds["probed"]) == 1.0
            t = np.asarray(sub["temperature"])[probed]
            snr = np.asarray(sub["signal_to_noise"])[probed]
            ax.plot(t, snr, ".", ms=3, alpha=0.35, color=f"C{k}")
            j = last_probed(ds)
            converged = float(sub["converged"].values[j]) == 1.0
            ax.plot(sub["temperature"].values[j], sub["signal_to_noise"].values[j],
                    "o", ms=7, color=f"C{k}", mfc=f"C{k}" if converged else "none",
                    label=f"{label} (step {int(ds['step'].values[j])})")
            temps.extend(t[np.isfinite(t) & (t > 0)].tolist())
        if temps:
            grid = np.geomspace(min(temps) / 2, max(temps) * 2, 50)
            widths = (1, la["n_cols"], la["n_rows"], 1)
            line = signal_to_noise_threshold(grid, np.sqrt(la["sigma2_reference"]), widths)
            ax.plot(grid, line, "k--", lw=1.0, label="(4.15): converges above")
            ax.set_xscale("log")
            _plain_ticks(ax.xaxis)
        ax.set_yscale("symlog", linthresh=1e-3)
        _plain_ticks(ax.yaxis)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("temperature T = lr/|B|")
    axes[0].set_ylabel(r"signal to noise $-K_S / V_S$")
    axes[0].legend(fontsize=7)
    return fig


def monitor_report(stores: Sequence, out_dir, *, formats: Sequence[str] = ("png", "pdf"),
                   dpi: int = 150) -> dict:
    """Write the figures of one or more monitor stores into ``out_dir``; return a summary.

    Parameters
    ----------
    stores : paths of monitor stores (several runs of one model, e.g. at several T)
    out_dir : directory (created)

    Returns
    -------
    dict: ``written`` figure name -> paths; ``runs`` store -> per-layer
    :func:`dysonsgd.monitor.summary.layer_summary`
    """
    stores = [Path(s) for s in stores]
    if not stores:
        raise InputError("stores must name at least one monitor store")
    datasets = [open_store(s) for s in stores]
    for s, ds in zip(stores, datasets, strict=True):
        if ds.sizes["record"] == 0:
            raise InputError(f"store {str(s)!r} holds no completed record")
    labels = [_label(d, k) for k, d in enumerate(datasets)]
    written = {}
    for k, (ds, label) in enumerate(zip(datasets, labels, strict=True)):
        name = "spectrum" if len(datasets) == 1 else f"spectrum-{k}"
        fig = figure_spectrum(ds, title=f"{stores[k].name}: {label}")
        written[name] = [str(p) for p in save_figure(fig, out_dir, name, formats, dpi)]
    written["spacing"] = [str(p) for p in save_figure(figure_spacing(datasets, labels),
                                                      out_dir, "spacing", formats, dpi)]
    fig = figure_signal_to_noise(datasets, labels)
    if fig is not None:
        written["signal_to_noise"] = [str(p) for p in save_figure(fig, out_dir,
                                                                  "signal-to-noise", formats,
                                                                  dpi)]
    return {"written": written,
            "runs": {str(s): layer_summary(ds) for s, ds in zip(stores, datasets, strict=True)}}
