"""Descriptive statistics of a forecast next to its observations (no verdicts).

:func:`describe_cell` gives the per-cell numbers of the ``dysonsgd validate`` report and of
``--json`` (the keys the cells have always had); the verdicts are :mod:`.scoring`'s. Where a
two-sample statistic is given, it takes ONE predicted path per model against the R observed
models, so that both samples are independent across models as the statistic assumes (the paths
of one model are not independent draws of the ensemble).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from dysonsgd.analysis import calibration as cal
from dysonsgd.analysis.forecasts import ForecastPaths

__all__ = ["describe_cell", "mean_se", "spacing_traces"]


def mean_se(values) -> dict[str, float | int]:
    """Mean, standard error (ddof 1) and count of the finite entries of ``values``, any shape,
    each entry one independent unit (a seed, a model; never several paths of one model).

    Returns
    -------
    dict
        ``mean``, ``se`` (NaN below two entries; ``mean`` NaN with none) and ``n``.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return {"mean": float(v.mean()) if v.size else math.nan, "se": math.nan, "n": int(v.size)}
    return {"mean": float(v.mean()), "se": float(v.std(ddof=1) / math.sqrt(v.size)),
            "n": int(v.size)}


def _one_path(s: np.ma.MaskedArray) -> np.ndarray:
    """The first valid path of every model: (R, P) -> (R',) (models without one left out)."""
    filled = np.ma.filled(s.astype(float), np.nan)
    out = []
    for row in filled:
        ok = np.flatnonzero(np.isfinite(row))
        if ok.size:
            out.append(row[ok[0]])
    return np.asarray(out)


def _compare(pred: np.ndarray, obs: np.ndarray) -> tuple[float, float, float]:
    if pred.size < 1 or obs.size < 1:
        return float("nan"), float("nan"), float("nan")
    ks = stats.ks_2samp(pred, obs)
    wasserstein = stats.wasserstein_distance(pred, obs) / max(float(obs.std()), 1e-300)
    return float(ks.statistic), float(ks.pvalue), float(wasserstein)


def describe_cell(fp: ForecastPaths, sde_final: np.ma.MaskedArray | None = None,
                  *, seed: int = 0) -> dict[str, Any]:
    """Spacing and trajectory statistics of one cell's forecast.

    Parameters
    ----------
    fp : ForecastPaths
    sde_final : masked (R, P), optional: S(t_f) by the spacing SDE (4.8)

    Returns
    -------
    dict: ``spacing_observed_mean``, ``spacing_dbm_mean`` (of the eigenvalue SDE's paths),
    ``spacing_sde_mean``, ``spacing_dbm_ratio`` and its bootstrap interval over models
    ``spacing_dbm_ratio_ci95``, KS distance and p-value and the Wasserstein distance in units
    of the observed spread (one path per model against the observations) at t_f and at every
    snapshot, ``broken_paths``, ``paths``, ``negative_fraction`` (paths with x_1 < 0 at t_f),
    ``trajectory_mean_worst`` (the largest error of the ensemble mean of a level, in units of
    the observed width x_N - x_1, over snapshots), ``top_spread_ratio_worst`` (sd of x_N over
    paths against over models, worst over snapshots) and ``level_mean_error_final``.
    """
    s = fp.spacing  # (n_t, R, P)
    s_obs = fp.observed_spacing  # (R, n_t)
    by_snap = [_compare(_one_path(s[k]), s_obs[:, k]) for k in range(1, s.shape[0])]
    ks_d, ks_p, wass = by_snap[-1] if by_snap else (np.nan, np.nan, np.nan)
    final = np.ma.compressed(s[-1])
    rng = np.random.default_rng(seed)
    ratio, ratio_ci = cal.ratio_interval(s[-1], s_obs[:, -1], rng)
    x = fp.eigenvalues  # (n_t, R, P, N)
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    mean_pred = flat.mean(axis=1).filled(np.nan)
    sd_pred = flat.std(axis=1).filled(np.nan)
    mean_obs, sd_obs = fp.observed.mean(axis=0), fp.observed.std(axis=0)  # (n_t, N)
    later = slice(1, None)
    width = mean_obs[later, -1] - mean_obs[later, 0]
    rel = np.abs(mean_pred[later] - mean_obs[later]) / np.maximum(width, 1e-300)[:, None]
    top = sd_pred[later, -1] / np.maximum(sd_obs[later, -1], 1e-300)
    with np.errstate(invalid="ignore"):
        negative = float(np.mean(np.ma.filled(flat[-1, :, 0], np.nan) < 0))
    out = {
        "spacing_snapshots": [int(k) for k in fp.snapshots[1:]],
        "spacing_ks_by_snapshot": [d for d, _, _ in by_snap],
        "spacing_wasserstein_by_snapshot": [w for _, _, w in by_snap],
        "spacing_observed_mean": float(s_obs[:, -1].mean()),
        "spacing_dbm_mean": float(final.mean()) if final.size else float("nan"),
        "spacing_dbm_ratio": ratio, "spacing_dbm_ratio_ci95": list(ratio_ci),
        "spacing_ks_distance": ks_d, "spacing_ks_pvalue": ks_p,
        "spacing_wasserstein_over_sd": wass,
        "broken_paths": int(fp.broken().sum()), "paths": int(fp.broken().size),
        "negative_fraction": negative,
        "trajectory_mean_worst": float(np.nanmax(rel)) if rel.size else float("nan"),
        "top_spread_ratio_worst": float(np.nanmax(np.maximum(top, 1 / top)))
        if top.size else float("nan"),
        "level_mean_error_final": rel[-1].tolist() if rel.size else [],
    }
    if sde_final is not None:
        sde = np.ma.compressed(sde_final)
        out["spacing_sde_mean"] = float(sde.mean()) if sde.size else float("nan")
    return out


def spacing_traces(epochs, observed: np.ndarray, dbm, sde=None) -> dict[str, Any]:
    """Mean and standard deviation of S(t) over models (observed) and paths (predictions).

    Parameters
    ----------
    epochs : (n_t,); observed : (R, n_t); dbm, sde : masked arrays (n_t, paths), sde optional
    """
    def moments(s):
        return (np.ma.filled(s.mean(axis=1), np.nan), np.ma.filled(s.std(axis=1), np.nan))

    out = {"epochs": np.asarray(epochs, dtype=float),
           "observed": (observed.mean(axis=0), observed.std(axis=0)), "dbm": moments(dbm)}
    if sde is not None:
        out["sde"] = moments(sde)
    return out
