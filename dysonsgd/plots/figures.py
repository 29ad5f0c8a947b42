"""The paper's figures 1-9 as matplotlib Figures, from arrays.

Every function takes plain arrays (cell values ``[nT, nS]``, per-model values ``[..., nR]``)
and returns a :class:`matplotlib.figure.Figure` built without pyplot (no global state, no
display; PNG through Agg, PDF through matplotlib's PDF backend). :func:`save_figure` writes
PNG and PDF. Reading a run, computing the observables and choosing what to draw lives in
:mod:`dysonsgd.plots.paper`; the figures of ``dysonsgd validate`` in :mod:`dysonsgd.plots.report`.

Axes and colour scales follow the paper: the grid figures have 1/sigma_W across and T up, both
on log2 axes (the ordered corner is bottom right), with a sequential colour map in which a
darker colour means a smaller value. Fixed colour ranges:

- test loss (figures 2, 9): log scale 1e-7 .. 1e-1, the range the paper reports;
- G(t_f, 0) (figures 5, 8, 9): 0 .. 1;
- alignment (figures 5, 8, 9): (3.5) as printed, 0.064 .. 0.32, which is the release's colour
  range 0.5e-3 .. 2.5e-3 times its extra division by the 128 test points;
- time-averaged rate (figures 7, 9): 0 .. 20 / epochs, i.e. log(S(t_f)/S(0)) from 0 to 20
  (the paper's 2e-4 per epoch at 1e5 epochs, footnote 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure

from dysonsgd._checks import InputError, check_array
from dysonsgd.analysis import phase
from dysonsgd.theory import boundaries, disorder

__all__ = [
    "ALIGNMENT_RANGE",
    "CMAP",
    "G_RANGE",
    "LOSS_RANGE",
    "figure1",
    "figure2",
    "figure3",
    "figure4",
    "figure5",
    "figure6",
    "figure7",
    "figure8",
    "figure9",
    "grid_heatmap",
    "rate_range",
    "save_figure",
]

#: colour map of the grid figures: darker is smaller
CMAP = "viridis"
LOSS_RANGE = (1e-7, 1e-1)
G_RANGE = (0.0, 1.0)
ALIGNMENT_RANGE = (0.5e-3 * 128, 2.5e-3 * 128)
#: line styles of the 1, 2, 3 sigma contours: the dimmest is 1 sigma (figure 8)
LEVEL_STYLES = ({"colors": "white", "alpha": 0.45, "linewidths": 1.2, "linestyles": "-."},
                {"colors": "white", "alpha": 0.75, "linewidths": 1.4, "linestyles": "-."},
                {"colors": "white", "alpha": 1.0, "linewidths": 1.6, "linestyles": "-."})


def rate_range(epochs: float) -> tuple[float, float]:
    """Colour range of the time-averaged rate (4.7): log-growth of S from 0 to 20 per run."""
    return (0.0, 20.0 / float(epochs))


def save_figure(fig: Figure, out_dir, name: str, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.<fmt>`` for each format; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        if fmt not in ("png", "pdf", "svg"):
            raise InputError(f"formats must be among png, pdf, svg, got {fmt!r}")
        path = out / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _edges(centres_log2: np.ndarray) -> np.ndarray:
    c = np.asarray(centres_log2, dtype=float)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def _grid(values, temperature, sigma_w):
    """Cell values sorted to ascending log2 T (rows) and log2 1/sigma_W (columns)."""
    t = check_array("temperature", temperature)
    s = check_array("sigma_w", sigma_w)
    v = np.asarray(values, dtype=float)
    if v.shape != (t.size, s.size):
        raise InputError(f"values must have shape ({t.size}, {s.size}), got {v.shape}")
    it = np.argsort(t)
    inv = 1.0 / s
    js = np.argsort(inv)
    return np.log2(t[it]), np.log2(inv[js]), v[np.ix_(it, js)]


def _log2_ticks(ax, axis: str, values: np.ndarray) -> None:
    lo, hi = int(np.floor(values.min())), int(np.ceil(values.max()))
    step = max(1, (hi - lo) // 6)
    ticks = np.arange(lo, hi + 1, step)
    labels = [f"$2^{{{k}}}$" for k in ticks]
    if axis == "x":
        ax.set_xticks(ticks, labels)
    else:
        ax.set_yticks(ticks, labels)


def grid_heatmap(ax, values, temperature, sigma_w, norm, label: str, cmap: str = CMAP):
    """Cell values on the (log2 1/sigma_W, log2 T) plane; returns the QuadMesh.

    The mesh's array (``get_array()``) holds the values with rows in ascending T and columns
    in ascending 1/sigma_W.
    """
    lt, lv, v = _grid(values, temperature, sigma_w)
    mesh = ax.pcolormesh(_edges(lv), _edges(lt), np.ma.masked_invalid(v), norm=norm, cmap=cmap)
    ax.set_xlabel(r"$1/\sigma_W$")
    ax.set_ylabel(r"$T = \epsilon/|\mathcal{B}|$")
    _log2_ticks(ax, "x", lv)
    _log2_ticks(ax, "y", lt)
    ax.figure.colorbar(mesh, ax=ax, label=label)
    return mesh


def _contours(ax, fraction, temperature, sigma_w, levels: Sequence[float], styles=LEVEL_STYLES):
    """The (4.15) converged-fraction contours at ``levels`` (1, 2, 3 sigma); list of sets."""
    lt, lv, f = _grid(fraction, temperature, sigma_w)
    if lt.size < 2 or lv.size < 2:
        return []
    out = []
    for level, style in zip(levels, styles, strict=False):
        out.append(ax.contour(lv, lt, f, levels=[level], **style))
    return out


def _symmetry_lines(ax, line: boundaries.SymmetryBreakingLine | None, estimates=("paper",
                    "input_average", "measured")) -> list:
    if line is None:
        return []
    styles = {"paper": ("--", "white", 1.0), "input_average": (":", "white", 0.9),
              "gaussian": (":", "lightgrey", 0.7), "measured": ((0, (1, 3)), "orange", 0.9)}
    out = []
    for name in estimates:
        if name in line.inv_sigma_w:
            ls, colour, alpha = styles[name]
            out.append(ax.axvline(np.log2(line.inv_sigma_w[name]), ls=ls, color=colour,
                                  alpha=alpha, lw=1.5, label=f"symmetry breaking ({name})"))
    return out


# ------------------------------------------------------------------------------------------------
# the figures
# ------------------------------------------------------------------------------------------------


def figure1(sigma_z2: Sequence[float] = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
            n_points: int = 801) -> Figure:
    """Figure 1: the soft-spin density p(phi) (2.21) for several sigma_z^2 (left), tanh (right)."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    phi = np.linspace(-1, 1, n_points)[1:-1]
    for s2 in sigma_z2:
        p = disorder.soft_spin_density(phi, s2)
        style = "--" if s2 == disorder.critical_variance() else "-"
        left.plot(phi, p, style, label=rf"$\sigma_z^2 = {s2:g}$")
    left.set_xlabel(r"$\phi$")
    left.set_ylabel(r"$p(\phi)$")
    left.set_ylim(0, 3.0)
    left.legend(fontsize=8)
    z = np.linspace(-4, 4, 401)
    right.plot(z, np.tanh(z), "k-")
    right.axvspan(-1, 1, color="tab:blue", alpha=0.15, label="linear regime")
    right.set_xlabel("$z$")
    right.set_ylabel(r"$\phi(z) = \tanh z$")
    right.legend(fontsize=8, loc="lower right")
    return fig


def figure2(loss_mean, temperature, sigma_w, loss_range: tuple[float, float] = LOSS_RANGE
            ) -> Figure:
    """Figure 2: mean final test loss (3.2) in the T - 1/sigma_W plane (colour range
    ``loss_range``, the paper's by default)."""
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    grid_heatmap(ax, loss_mean, temperature, sigma_w, colors.LogNorm(*loss_range),
                 r"$\mathbb{E}_\mathcal{S}[\mathcal{L}]$")
    ax.set_title("mean test loss")
    return fig


def figure3(loss_mean, grad_mean, temperature, sigma_w) -> Figure:
    """Figure 3: mean final loss (left) and gradient (right) against T, a line per 1/sigma_W."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    lt, lv, loss = _grid(loss_mean, temperature, sigma_w)
    _, _, grad = _grid(grad_mean, temperature, sigma_w)
    shades = np.linspace(0.0, 0.9, lv.size)
    for ax, data, name in zip(axes, (loss, grad), ("mean loss", "mean gradient"), strict=True):
        for j in range(lv.size):
            ax.plot(2.0**lt, data[:, j], "o-", ms=3, color=_cmap_colour(shades[j]),
                    label=rf"$1/\sigma_W = 2^{{{lv[j]:g}}}$")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(r"$\epsilon/|\mathcal{B}|$")
        ax.set_ylabel(name)
    axes[1].legend(fontsize=6, ncol=2)
    return fig


def _cmap_colour(x: float):
    from matplotlib import colormaps

    return colormaps[CMAP](x)


def figure4(temperature, loss, grad, inv_sigma_w_column: float, sigma_w=None,
            initial_grad=None, temperature_row: float | None = None) -> Figure:
    """Figure 4: loss and gradient against T at one 1/sigma_W (mean and standard deviation
    over the ensemble), and the gradient at initialisation against 1/sigma_W at the lowest T.

    Parameters
    ----------
    temperature : (nT,) array
        The temperatures T of the column.
    loss, grad : (nT, nR) arrays
        Final test loss and gradient norm (3.3) per model in the column.
    inv_sigma_w_column : float
        The column's 1/sigma_W (the title).
    sigma_w : (nS,) array, optional
        sigma_W of the right panel.
    initial_grad : (nS, nR) array, optional
        The gradient norm at initialisation per model (right panel).
    temperature_row : float, optional
        The T of the right panel (its title).
    """
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    t = check_array("temperature", temperature)
    it = np.argsort(t)
    for ax, data, name in zip(axes[:2], (loss, grad), ("mean loss", "mean gradient"),
                              strict=True):
        d = np.asarray(data, dtype=float)[it]
        ax.errorbar(t[it], d.mean(axis=-1), yerr=d.std(axis=-1), fmt="o-", ms=3, capsize=2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(r"$\epsilon/|\mathcal{B}|$")
        ax.set_ylabel(name)
        ax.set_title(rf"$1/\sigma_W = {inv_sigma_w_column:g}$")
    right = axes[2]
    if sigma_w is not None and initial_grad is not None and np.size(sigma_w) > 1:
        inv = 1.0 / check_array("sigma_w", sigma_w)
        js = np.argsort(inv)
        g0 = np.asarray(initial_grad, dtype=float)[js]
        right.errorbar(inv[js], g0.mean(axis=-1), yerr=g0.std(axis=-1), fmt="o-", ms=3,
                       capsize=2)
        right.set_xscale("log", base=2)
        right.set_yscale("log")
        right.set_xlabel(r"$1/\sigma_W$")
        right.set_ylabel("mean gradient at initialisation")
        if temperature_row is not None:
            right.set_title(rf"$\epsilon/|\mathcal{{B}}| = {temperature_row:g}$")
    else:
        right.text(0.5, 0.5, "needs at least two values of sigma_W", ha="center",
                   transform=right.transAxes)
        right.set_axis_off()
    return fig


def figure5(g_mean, alignment_mean, temperature, sigma_w) -> Figure:
    """Figure 5: G(t_f, 0) (3.4) (left) and the alignment (3.5) (right) in the T - 1/sigma_W
    plane."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    grid_heatmap(left, g_mean, temperature, sigma_w, colors.Normalize(*G_RANGE),
                 r"$G(t_f, 0)$")
    grid_heatmap(right, alignment_mean, temperature, sigma_w,
                 colors.Normalize(*ALIGNMENT_RANGE), r"$\mathbb{E}_\mathcal{S}[h\phi]$ (3.5)")
    left.set_title("time correlation of features")
    right.set_title("feature alignment")
    return fig


def figure6(epochs, eigenvalues: Sequence[np.ndarray], targets: Sequence[np.ndarray | None],
            titles: Sequence[str]) -> Figure:
    """Figure 6: eigenvalues of X = W2 W2^T (4.1) along training, one panel per cell.

    Parameters
    ----------
    epochs : (n_snap,)
    eigenvalues : per panel (nR, n_snap, n2) (every model's eigenvalues, one line each)
    targets : per panel (nR, n2) eigenvalues of the teacher's W2* W2*^T (dashed), or None
    titles : per panel
    """
    n = len(eigenvalues)
    fig = Figure(figsize=(4.5 * n, 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    e = np.asarray(epochs, dtype=float)
    for ax, eig, tgt, title in zip(axes, eigenvalues, targets, titles, strict=True):
        x = np.asarray(eig, dtype=float)
        lines = np.moveaxis(x, -1, 1).reshape(-1, x.shape[1])  # (nR * n2, n_snap)
        for y in lines:
            ax.plot(e, y, "-", lw=0.4, alpha=0.5, color="tab:blue")
        if tgt is not None:
            for y in np.ravel(tgt):
                ax.axhline(y, ls="--", lw=0.4, alpha=0.4, color="k")
            lo, hi = np.nanmin(x), np.nanmax(x)
            ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        ax.set_xlabel("epoch")
        ax.set_ylabel(r"eigenvalues $x_i$ of $X$")
        ax.set_title(title)
    return fig


def figure7(rate_mean, temperature, sigma_w, epochs: float) -> Figure:
    """Figure 7: the time-averaged rate (4.7) at the end of training, per epoch."""
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    grid_heatmap(ax, rate_mean, temperature, sigma_w, colors.Normalize(*rate_range(epochs)),
                 r"$\bar\lambda(t_f)$ per epoch")
    ax.set_title("time-averaged rate")
    return fig


def figure8(fraction, temperature, sigma_w, g_mean, alignment_mean,
            levels: Sequence[float] | None = None) -> Figure:
    """Figure 8: the (4.15) boundaries.

    Left: the converged fraction against T at the smallest sigma_W, with the 1 sigma crossing
    as a vertical dash-dotted line. Centre and right: the 1, 2, 3 sigma contours of the
    fraction over G(t_f, 0) and the alignment.
    """
    levels = tuple(boundaries.sigma_levels() if levels is None else levels)
    fig = Figure(figsize=(16, 4.5), layout="constrained")
    left, centre, right = fig.subplots(1, 3)
    t = check_array("temperature", temperature)
    s = check_array("sigma_w", sigma_w)
    frac = np.asarray(fraction, dtype=float)
    it = np.argsort(t)
    j = int(np.argmin(s))
    left.plot(t[it], frac[it, j], "o-", ms=3, color="k", label="converged fraction (4.15)")
    for level in levels:
        left.axhline(level, ls=":", lw=0.8, color="grey")
    t_c = phase.signal_to_noise_boundary(frac[it], t[it], levels[0])[j]
    if np.isfinite(t_c):
        left.axvline(t_c, ls="-.", color="tab:red", label=rf"$1\sigma$: $T = {t_c:.3g}$")
    left.set_xscale("log", base=2)
    left.set_ylim(-0.02, 1.02)
    left.set_xlabel(r"$\epsilon/|\mathcal{B}|$")
    left.set_ylabel("fraction converged")
    left.set_title(rf"$1/\sigma_W = {1.0 / s[j]:g}$")
    left.legend(fontsize=8)
    grid_heatmap(centre, g_mean, t, s, colors.Normalize(*G_RANGE), r"$G(t_f, 0)$")
    _contours(centre, frac, t, s, levels)
    grid_heatmap(right, alignment_mean, t, s, colors.Normalize(*ALIGNMENT_RANGE),
                 r"$\mathbb{E}_\mathcal{S}[h\phi]$ (3.5)")
    _contours(right, frac, t, s, levels)
    return fig


def figure9(loss_mean, g_mean, alignment_mean, rate_mean, fraction, temperature, sigma_w,
            epochs: float, line: boundaries.SymmetryBreakingLine | None = None,
            level: float | None = None,
            loss_range: tuple[float, float] = LOSS_RANGE) -> Figure:
    """Figure 9: loss, G(t_f, 0), alignment and rate with the two phase boundaries.

    Dashed vertical: the symmetry-breaking line at 1/sigma_W = sqrt(2) (the paper); dotted:
    the refined line sqrt(2 rho) (and the measured one, orange, when ``line`` has it);
    dash-dotted: the 1 sigma (4.15) contour of ``fraction``.
    """
    level = boundaries.sigma_levels()[0] if level is None else level
    line = boundaries.symmetry_breaking_line() if line is None else line
    fig = Figure(figsize=(11, 9), layout="constrained")
    axes = fig.subplots(2, 2)
    panels = [
        (loss_mean, colors.LogNorm(*loss_range), "final test loss"),
        (g_mean, colors.Normalize(*G_RANGE), r"$G(t_f, 0)$"),
        (alignment_mean, colors.Normalize(*ALIGNMENT_RANGE), "feature alignment (3.5)"),
        (rate_mean, colors.Normalize(*rate_range(epochs)), r"$\bar\lambda(t_f)$ per epoch"),
    ]
    for ax, (values, norm, label) in zip(axes.ravel(), panels, strict=True):
        grid_heatmap(ax, values, temperature, sigma_w, norm, label)
        _symmetry_lines(ax, line)
        _contours(ax, fraction, temperature, sigma_w, [level], styles=(LEVEL_STYLES[2],))
    axes[0, 0].legend(fontsize=7, loc="upper left")
    return fig
