"""Statistics of ``dysonsgd validate``: calibration ranks, equivalence, Holm, Cohen's kappa.

A forecast gives each model P predicted paths; the observation of that model is one more draw
from the same law if the forecast is right. Everything here respects that structure: the
paths of one model are never pooled with another model's as independent samples; only the R
models of a cell (independent replicas: own teacher, data and initialisation) are.

Calibration (the probability integral transform)
    Per model, the rank of the observed value among the model's P valid predicted paths, with
    ties broken at random: PIT = (#{pred < obs} + V (#{pred == obs} + 1)) / (P + 1), V ~ U(0, 1).
    If the observation is exchangeable with the paths, PIT is exactly U(0, 1) (for any P), and
    the PITs of the R models are independent. Uniformity over the models is tested with the
    Cramer-von Mises test (:func:`scipy.stats.cramervonmises`, exact-distribution p-value),
    which sees both a bias (PITs piled at one end) and a wrong spread (PITs piled in the middle:
    the forecast too wide; at both ends: too narrow). :func:`pit_summary` adds the mean PIT
    (1/2 when calibrated) and its standard deviation (1/sqrt(12) = 0.289), with percentile
    bootstrap intervals over models.
Equivalence
    :func:`ratio_equivalence`: two one-sided tests (TOST) that mean(predicted) / mean(observed)
    lies in [1/margin, margin], by the percentile bootstrap over models (each model's paths
    travel with it); PASS when the TOST p-value is below the level.
Multiplicity
    :func:`holm`: Holm's step-down procedure over a family of p-values.
Agreement of two verdicts
    :func:`cohen_kappa` with a bootstrap interval over models (:func:`kappa_interval`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from scipy import stats

from dysonsgd._checks import InputError

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "cohen_kappa",
    "holm",
    "kappa_interval",
    "min_uniformity_pvalue",
    "pit_summary",
    "randomized_pit",
    "ratio_equivalence",
    "ratio_interval",
    "uniformity_pvalue",
    "uniformity_pvalues",
]

#: bootstrap resamples (over models) of every interval and equivalence test
BOOTSTRAP_RESAMPLES = 2000


def randomized_pit(predicted, observed, rng: np.random.Generator) -> np.ndarray:
    """Randomised rank of each model's observation among its predicted paths, in (0, 1).

    Parameters
    ----------
    predicted : array_like, shape (R, P)
        Predicted values per model; NaN (or masked) marks a broken path, which is left out.
    observed : array_like, shape (R,)
    rng : numpy.random.Generator
        Draws the tie-breaking V ~ U(0, 1), one per model.

    Returns
    -------
    ndarray, shape (R,): NaN for a model without a valid path or a non-finite observation.
    """
    pred = np.ma.filled(np.ma.asarray(predicted, dtype=float), np.nan)
    obs = np.asarray(observed, dtype=float)
    if pred.ndim != 2 or obs.shape != pred.shape[:1]:
        raise InputError(f"predicted must be (R, P) and observed (R,), got {pred.shape} and "
                         f"{obs.shape}")
    valid = np.isfinite(pred)
    less = np.sum(valid & (pred < obs[:, None]), axis=1)
    ties = np.sum(valid & (pred == obs[:, None]), axis=1)
    n = valid.sum(axis=1)
    v = rng.random(obs.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        pit = (less + v * (ties + 1)) / (n + 1)
    return np.where((n > 0) & np.isfinite(obs), pit, np.nan)


def uniformity_pvalue(pit) -> float:
    """Cramer-von Mises p-value of H0: the PITs are i.i.d. U(0, 1) (NaN ignored).

    NaN when fewer than two finite values remain.
    """
    u = np.asarray(pit, dtype=float)
    u = u[np.isfinite(u)]
    if u.size < 2:
        return float("nan")
    return float(stats.cramervonmises(u, "uniform").pvalue)


def uniformity_pvalues(pits) -> np.ndarray:
    """:func:`uniformity_pvalue` of every row of ``pits`` (k, R), the rows without NaN in one
    vectorised call (the same statistic and p-value, element by element).

    Returns
    -------
    ndarray, shape (k,)
    """
    u = np.asarray(pits, dtype=float)
    if u.ndim != 2:
        raise InputError(f"pits must be (k, R), got shape {u.shape}")
    out = np.full(u.shape[0], np.nan)
    full = np.isfinite(u).all(axis=1)
    if u.shape[1] >= 2 and full.any():
        out[full] = stats.cramervonmises(u[full], "uniform", axis=1).pvalue
        rest = np.flatnonzero(~full)
    else:
        rest = np.arange(u.shape[0])
    for i in rest:
        out[i] = uniformity_pvalue(u[i])
    return out


@lru_cache(maxsize=256)
def min_uniformity_pvalue(n_models: int) -> float:
    """The smallest p-value :func:`uniformity_pvalue` can give with ``n_models`` values.

    The Cramer-von Mises statistic is largest when every value sits at one end; a test whose
    smallest attainable p-value is not below the level cannot fail ("no power").
    """
    if n_models < 2:
        return 1.0
    return float(stats.cramervonmises(np.zeros(n_models), "uniform").pvalue)


def _bootstrap_index(r: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, r, size=(BOOTSTRAP_RESAMPLES, r))


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def pit_summary(pit, rng: np.random.Generator, *, level: float = 0.95) -> dict[str, object]:
    """Mean and standard deviation of the PITs of a cell, with bootstrap intervals over models.

    Returns
    -------
    dict with ``pit_mean``, ``pit_mean_ci`` (calibrated: 1/2), ``pit_sd``, ``pit_sd_ci``
    (calibrated: 1/sqrt(12) = 0.289; smaller: forecast too wide, larger: too narrow) and
    ``models`` (the finite PITs).
    """
    u = np.asarray(pit, dtype=float)
    u = u[np.isfinite(u)]
    out: dict[str, object] = {"models": int(u.size)}
    if u.size < 2:
        return {**out, "pit_mean": float("nan"), "pit_mean_ci": [np.nan, np.nan],
                "pit_sd": float("nan"), "pit_sd_ci": [np.nan, np.nan]}
    boot = u[_bootstrap_index(u.size, rng)]
    return {**out, "pit_mean": float(u.mean()),
            "pit_mean_ci": list(_percentile(boot.mean(axis=1), level)),
            "pit_sd": float(u.std()), "pit_sd_ci": list(_percentile(boot.std(axis=1), level))}


def _ratio_bootstrap(predicted, observed, rng: np.random.Generator
                     ) -> tuple[float, np.ndarray | None]:
    """mean over models of (mean of a model's valid paths) / mean observed, and its
    :data:`BOOTSTRAP_RESAMPLES` resamples over models (None with fewer than two models)."""
    pred = np.ma.filled(np.ma.asarray(predicted, dtype=float), np.nan)
    obs = np.asarray(observed, dtype=float)
    ok = np.isfinite(pred)
    sums, counts = np.where(ok, pred, 0.0).sum(axis=1), ok.sum(axis=1)
    keep = (counts > 0) & np.isfinite(obs)
    sums, counts, obs = sums[keep], counts[keep], obs[keep]
    if obs.size < 2:
        return float("nan"), None
    model_means = sums / counts
    pick = _bootstrap_index(obs.size, rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = model_means[pick].mean(axis=1) / obs[pick].mean(axis=1)
    return float(model_means.mean() / obs.mean()), boot


def ratio_interval(predicted, observed, rng: np.random.Generator, *, level: float = 0.95
                   ) -> tuple[float, tuple[float, float]]:
    """mean(predicted) / mean(observed) and its percentile bootstrap interval over models.

    As :func:`ratio_equivalence` (the same estimate and resamples), without a margin.
    """
    ratio, boot = _ratio_bootstrap(predicted, observed, rng)
    return ratio, ((np.nan, np.nan) if boot is None else _percentile(boot, level))


def ratio_equivalence(predicted, observed, margin: float, rng: np.random.Generator, *,
                      level: float = 0.95) -> dict[str, float | list[float]]:
    """TOST of mean(predicted) / mean(observed) in [1/margin, margin], bootstrapping models.

    Parameters
    ----------
    predicted : array_like, shape (R, P)
        Paths per model (NaN or masked: broken, left out of that model's mean).
    observed : array_like, shape (R,)
    margin : float > 1
        The equivalence margin, declared before the run.
    level : float
        Level of the reported percentile interval.

    Returns
    -------
    dict: ``ratio`` (the point estimate, pooled over the paths of each model first),
    ``ratio_ci`` (percentile interval at ``level``), ``pvalue`` (the larger of the two
    one-sided bootstrap p-values P*(ratio <= 1/margin), P*(ratio >= margin), floored at
    1/(resamples + 1)), ``resolvable`` (the interval is narrower than [1/margin, margin], so
    a right forecast could show equivalence: the test has power) and ``outside`` (the whole
    interval lies outside the margin).
    """
    if not margin > 1.0:
        raise InputError(f"margin must be > 1, got {margin}")
    ratio, boot = _ratio_bootstrap(predicted, observed, rng)
    if boot is None:
        return {"ratio": float("nan"), "ratio_ci": [np.nan, np.nan], "pvalue": 1.0,
                "resolvable": False, "outside": False}
    floor = 1.0 / (BOOTSTRAP_RESAMPLES + 1)
    p = max(float(np.mean(boot <= 1.0 / margin)), float(np.mean(boot >= margin)), floor)
    lo, hi = _percentile(boot, level)
    return {"ratio": ratio, "ratio_ci": [lo, hi], "pvalue": p,
            # the interval is narrower than the margin: a right forecast could show equivalence
            "resolvable": bool(np.log(hi / lo) < 2.0 * np.log(margin)) if lo > 0 else False,
            # the whole interval lies outside the margin: non-equivalence shown either way
            "outside": bool(lo > margin or hi < 1.0 / margin)}


def holm(pvalues, alpha: float) -> np.ndarray:
    """Holm's step-down rejections of a family of p-values at family-wise level ``alpha``.

    NaN p-values are never rejected and do not count towards the family size.

    Returns
    -------
    bool ndarray of the shape of ``pvalues``: rejected.
    """
    p = np.asarray(pvalues, dtype=float)
    flat = p.ravel()
    finite = np.flatnonzero(np.isfinite(flat))
    rejected = np.zeros(flat.size, dtype=bool)
    m = finite.size
    for k, i in enumerate(finite[np.argsort(flat[finite], kind="stable")]):
        if flat[i] > alpha / (m - k):
            break
        rejected[i] = True
    return rejected.reshape(p.shape)


def cohen_kappa(a, b) -> float:
    """Cohen's kappa of two boolean verdicts over the same items (NaN if undefined)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.size == 0:
        return float("nan")
    observed = np.mean(a == b)
    pa, pb = a.mean(), b.mean()
    chance = pa * pb + (1 - pa) * (1 - pb)
    if chance >= 1.0:
        return float("nan")
    return float((observed - chance) / (1.0 - chance))


def kappa_interval(a, b, rng: np.random.Generator, *, level: float = 0.95,
                   statistic: Callable[[np.ndarray, np.ndarray], float] = cohen_kappa
                   ) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(a, b)`` resampling the items (models)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.size < 2:
        return float("nan"), float("nan")
    pick = _bootstrap_index(a.size, rng)
    values = np.array([statistic(a[i], b[i]) for i in pick])
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    return _percentile(values, level)
