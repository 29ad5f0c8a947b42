"""Guidance from a phase diagram: the largest ordered temperature at a given sigma_W, and the
paper's recommendation for fast training (just below the transition, small initial variance).

Layer: analysis; the labels come from :func:`dysonsgd.analysis.phase.classify_phases`, the
converged fractions from :func:`dysonsgd.analysis.phase.converged_fraction`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dysonsgd._checks import InputError, check_array, check_positive
from dysonsgd.analysis.phase import signal_to_noise_boundary
from dysonsgd.theory.boundaries import signal_to_noise_threshold, symmetry_breaking_line
from dysonsgd.theory.paper import PAPER_WIDTHS

__all__ = ["guidance"]



def guidance(sigma_w: float, labels=None, temperature=None, sigma_w_grid=None, fraction=None,
             level: float = 0.68, signal_to_noise: float | None = None,
             widths=PAPER_WIDTHS) -> dict[str, Any]:
    """Hyperparameter advice for one sigma_W, as section 5 draws it from the phase diagram.

    Parameters
    ----------
    sigma_w : float
        The initial scale sigma_W of interest.
    labels : (nT, nS) str, optional
        A labelled grid (:func:`classify_phases`) on ``temperature`` (nT, ascending) x
        ``sigma_w_grid`` (nS); the column nearest to ``sigma_w`` in log scale is used.
    fraction : (nT, nS), optional
        The (4.15) converged fraction on the same grid; its ``level`` crossing gives a second
        estimate of the transition temperature (:func:`signal_to_noise_boundary`).
    signal_to_noise : float, optional
        A measured -K_S / V_S at the end of training: (4.15) then gives the temperature at
        which the inequality becomes an equality, ``T* = 4 sqrt(r) sigma_W^2 snr / (n2 - 1)``.

    Returns
    -------
    dict with ``sigma_z2`` and ``ordered_side_of_symmetry_line`` (sigma_z^2 < 1/2 with the
    refined rho), ``max_ordered_temperature`` (largest T labelled ordered below the first
    high-temperature cell of the column), ``transition_temperature`` (that first
    high-temperature T), ``signal_to_noise_temperature`` (from ``fraction`` and/or
    ``signal_to_noise``), ``recommended`` (T just below the transition and the smallest
    sigma_W of the grid that is ordered there) and ``advice`` (a sentence).
    """
    sigma_w = check_positive("sigma_w", sigma_w)
    line = symmetry_breaking_line(widths)
    sigma_z2 = float(line.sigma_z2(sigma_w))
    out: dict[str, Any] = {
        "sigma_w": sigma_w, "inv_sigma_w": 1.0 / sigma_w, "sigma_z2": sigma_z2,
        "ordered_side_of_symmetry_line": sigma_z2 < line.sigma_c2,
        "symmetry_line_inv_sigma_w": line.inv_sigma_w["input_average"],
        "max_ordered_temperature": None, "transition_temperature": None,
        "signal_to_noise_temperature": None, "recommended": None,
    }
    if signal_to_noise is not None:
        snr = check_positive("signal_to_noise", signal_to_noise)
        out["signal_to_noise_temperature"] = float(
            snr / signal_to_noise_threshold(1.0, sigma_w, widths))
    if labels is not None:
        if temperature is None or sigma_w_grid is None:
            raise InputError("labels need temperature and sigma_w_grid")
        labels = np.asarray(labels)
        temps = check_array("temperature", temperature)
        grid = check_array("sigma_w_grid", sigma_w_grid)
        if labels.shape != (temps.size, grid.size):
            raise InputError(f"labels must have shape ({temps.size}, {grid.size}), got "
                             f"{labels.shape}")
        order = np.argsort(temps)
        temps, labels = temps[order], labels[order]
        j = int(np.argmin(np.abs(np.log(grid) - math.log(sigma_w))))
        col = labels[:, j]
        out["grid_sigma_w"] = float(grid[j])
        hot = np.flatnonzero(col == "high-temperature")
        stop = hot[0] if hot.size else col.size
        ordered = np.flatnonzero(col[:stop] == "ordered")
        if hot.size:
            out["transition_temperature"] = float(temps[hot[0]])
        if ordered.size:
            t_best = float(temps[ordered[-1]])
            out["max_ordered_temperature"] = t_best
            row = labels[ordered[-1]]
            ok = np.flatnonzero(row == "ordered")
            out["recommended"] = {"temperature": t_best,
                                  "sigma_w": float(np.min(grid[ok])),
                                  "ordered_sigma_w": sorted(float(s) for s in grid[ok])}
        if fraction is not None:
            frac = check_array("fraction", fraction, min_ndim=2)[order]
            t_snr = float(signal_to_noise_boundary(frac, temps, level)[j])
            out["signal_to_noise_temperature"] = t_snr
    out["advice"] = _advice(out)
    return out


def _advice(g: dict[str, Any]) -> str:
    parts = []
    if g["ordered_side_of_symmetry_line"]:
        parts.append(f"sigma_W = {g['sigma_w']:g} keeps sigma_z^2 = {g['sigma_z2']:.3g} below "
                     "sigma_c^2 = 1/2 (ordered side of the symmetry-breaking line)")
    else:
        parts.append(f"sigma_W = {g['sigma_w']:g} gives sigma_z^2 = {g['sigma_z2']:.3g} > 1/2: "
                     "features start in the double well (jamming side); take 1/sigma_W > "
                     f"{g['symmetry_line_inv_sigma_w']:.3g}")
    if g["max_ordered_temperature"] is not None:
        parts.append(f"largest ordered temperature T = {g['max_ordered_temperature']:g}")
    if g["transition_temperature"] is not None:
        parts.append(f"high-temperature from T = {g['transition_temperature']:g}")
    if g["signal_to_noise_temperature"] is not None:
        parts.append(f"(4.15) boundary at T = {g['signal_to_noise_temperature']:.3g}")
    if g["recommended"]:
        r = g["recommended"]
        parts.append(f"fastest training: T = {r['temperature']:g} (just below the transition) "
                     f"with a small initial variance, sigma_W = {r['sigma_w']:g}")
    return "; ".join(parts) + "."
