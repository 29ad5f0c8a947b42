"""Checks of a whole (T, 1/sigma_W) diagram (``[expect.diagram]``), as stated in the paper."""

from __future__ import annotations

import numpy as np
from scipy import stats

from dysonsgd._checks import grid_index
from dysonsgd.analysis.checks import Check
from dysonsgd.analysis.spec import DiagramSpec

__all__ = ["diagram_checks"]


def diagram_checks(spec: DiagramSpec, temperature, inv_sigma_w, labels: np.ndarray,
                   test_loss: np.ndarray, feature_correlation: np.ndarray,
                   converged_fraction: np.ndarray, converged: np.ndarray | None = None
                   ) -> list[Check]:
    """Qualitative checks of a whole (T, 1/sigma_W) diagram, as stated in the paper.

    ``loss_ratio_min`` with ``ordered_corner``: the median test loss of the corner's cells is at
    least this factor below the median over the cells labelled high-temperature, and below that
    over the cells labelled jamming (cell values are ensemble medians).
    ``transition = {inv_sigma_w, between = [lo, hi]}``: along that row every cell with
    T <= lo is ordered and every cell with T >= hi is high-temperature.
    ``jamming_region`` with ``feature_correlation_min``: G(t_f, 0) stays high there.
    ``signal_to_noise_level`` with ``separation_min``: on rows with an ordered cell, the (4.15)
    converged fraction is >= the level on ordered cells and < it on high-temperature cells, for
    at least the fraction ``separation_min`` of those cells.
    ``signal_to_noise_alpha``: on the same rows, the models of ordered cells converge by (4.15)
    more often than those of high-temperature cells: Fisher's exact test (one-sided) over the
    models (independent replicas), PASS when p < alpha. Needs ``converged`` (nT, nS, nR) bool.

    Arrays are (nT, nS) cell values, except ``test_loss`` and ``feature_correlation`` (nT, nS,
    nR) per model. Checks are reported at T = 1/sigma_W = NaN (they concern the whole grid).
    """
    temperature = np.asarray(temperature, dtype=float)
    inv = np.asarray(inv_sigma_w, dtype=float)
    loss = np.nanmedian(test_loss, axis=-1)
    g = np.nanmedian(feature_correlation, axis=-1)
    out: list[Check] = []
    nan = float("nan")
    if spec.loss_ratio_min is not None and spec.ordered_corner is not None:
        corner = spec.ordered_corner.mask(temperature, inv)
        regions = [loss[labels == name] for name in ("high-temperature", "jamming")]
        regions = [r for r in regions if r.size]
        if corner.any() and regions:
            ratio = float(min(np.nanmedian(r) for r in regions) / np.nanmedian(loss[corner]))
            out.append(Check.of("diagram_loss_ratio", (nan, nan), ratio,
                                f">= {spec.loss_ratio_min:g}", ratio >= spec.loss_ratio_min,
                                corner_cells=int(corner.sum())))
    if spec.transition is not None:
        row = grid_index(inv, spec.transition.inv_sigma_w)
        lo, hi = spec.transition.between
        if row is not None:
            col = labels[:, row]
            ok = bool(np.all(col[temperature <= lo] == "ordered")
                      and np.all(col[temperature >= hi] == "high-temperature"))
            out.append(Check.of("diagram_transition", (nan, float(spec.transition.inv_sigma_w)),
                                float(ok), f"ordered at T <= {lo:g}, high-temperature at T >= "
                                f"{hi:g}", ok, labels=[str(x) for x in col]))
    if spec.jamming_region is not None and spec.feature_correlation_min is not None:
        box = spec.jamming_region.mask(temperature, inv)
        if box.any():
            low = float(np.nanmin(g[box]))
            out.append(Check.of("diagram_jamming_memory", (nan, nan), low,
                                f">= {spec.feature_correlation_min:g}",
                                low >= spec.feature_correlation_min, cells=int(box.sum())))
    if spec.signal_to_noise_level is not None:
        level = spec.signal_to_noise_level
        rows = np.any(labels == "ordered", axis=0)
        ordered = (labels == "ordered") & rows[None, :]
        hot = (labels == "high-temperature") & rows[None, :]
        right = np.sum(converged_fraction[ordered] >= level) + np.sum(
            converged_fraction[hot] < level)
        total = int(ordered.sum() + hot.sum())
        if total:
            frac = float(right / total)
            need = spec.separation_min
            out.append(Check.of("diagram_signal_to_noise", (nan, nan), frac, f">= {need:g}",
                                frac >= need, level=level, cells=total))
    if spec.signal_to_noise_alpha is not None and converged is not None:
        rows = np.any(labels == "ordered", axis=0)
        c = np.asarray(converged, dtype=bool)
        ordered = c[(labels == "ordered") & rows[None, :]].ravel()
        hot = c[(labels == "high-temperature") & rows[None, :]].ravel()
        if ordered.size and hot.size:
            table = [[int(ordered.sum()), int((~ordered).sum())],
                     [int(hot.sum()), int((~hot).sum())]]
            p = float(stats.fisher_exact(table, alternative="greater").pvalue)
            alpha = spec.signal_to_noise_alpha
            out.append(Check("diagram_signal_to_noise_test", nan, nan, p,
                             f"Fisher p < {alpha:g}", "PASS" if p < alpha else "FAIL",
                             pvalue=p, details={
                                 "ordered_converged": float(ordered.mean()),
                                 "high_temperature_converged": float(hot.mean()),
                                 "models": [int(ordered.size), int(hot.size)]}))
    return out
