"""Scoring forecasts against observations: the statistical checks of one cell, and verdicts.

:func:`score_cell` turns one cell's :class:`~dysonsgd.analysis.forecasts.ForecastPaths` into
raw :class:`Test` records (a p-value, or a count for the deterministic check);
:func:`resolve` applies Holm's procedure within each family of one (forecast, theory) and gives
PASS/FAIL verdicts. The checks, all at the last scored snapshot t_f:

``positivity`` (deterministic)
    No predicted path of the eigenvalue SDE broke, went below zero or reordered its levels at
    any snapshot: X = W W^T is positive and its eigenvalues are ordered. FAIL on any such path.
``calibration_spacing`` (family: calibration; FAIL when rejected)
    Cramer-von Mises test of uniformity of the per-model randomised ranks (PIT) of the
    observed S(t_f) among the model's predicted paths (:mod:`dysonsgd.analysis.calibration`).
``calibration_levels`` (family: calibration)
    The same for every level x_i(t_f); the check's p-value is Bonferroni's
    min(1, N min_i p_i) over the N levels (the levels of one model are dependent).
``calibration_sde`` (family: calibration; replay only)
    The same for S(t_f) by the one-particle spacing SDE (4.8).
``spacing_mean`` (family: equivalence; PASS when rejected)
    TOST that mean S(t_f) predicted / observed lies within the declared margin.

A test with too few models to ever reject at the level has "no power" (:attr:`Test.power`);
so has an equivalence test whose 95% interval is wider than the margin itself (even a right
forecast could not show equivalence) unless the whole interval lies outside the margin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dysonsgd.analysis import calibration as cal
from dysonsgd.analysis.forecasts import ForecastPaths

__all__ = ["FAMILIES", "Test", "resolve", "score_cell"]

#: each check's family: tests corrected together, and which way a rejection points
FAMILIES = {
    "positivity": "deterministic",
    "calibration_spacing": "calibration",
    "calibration_levels": "calibration",
    "calibration_sde": "calibration",
    "spacing_mean": "equivalence",
}

#: where T, 1/sigma_W of a cell
Where = tuple[float, float]


@dataclass
class Test:
    """One check of one forecast in one cell before and after the multiplicity correction.

    ``pvalue`` is NaN for the deterministic check; ``power`` False when the test cannot reach
    the level with the models at hand; ``verdict`` is set by :func:`resolve`.
    """

    name: str
    forecast: str
    theory: str
    where: Where
    metric: float
    pvalue: float
    tolerance: str
    power: bool = True
    verdict: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return FAMILIES[self.name]


def _final(fp: ForecastPaths) -> tuple[np.ma.MaskedArray, np.ndarray]:
    """Eigenvalues (R, P, N) of the paths and (R, N) observed at t_f."""
    return fp.eigenvalues[-1], fp.observed[:, -1]


def _bad_paths(fp: ForecastPaths) -> dict[str, int]:
    x = np.ma.filled(fp.eigenvalues.astype(float), np.nan)  # (n_t, R, P, N)
    broken = fp.broken()
    with np.errstate(invalid="ignore"):
        negative = np.any(x[..., 0] <= 0.0, axis=0)
        reordered = np.any(np.diff(x, axis=-1) <= 0.0, axis=(0, 3))
    bad = broken | negative | reordered
    return {"bad_paths": int(bad.sum()), "broken_paths": int(broken.sum()),
            "negative_paths": int(negative.sum()), "reordered_paths": int(reordered.sum()),
            "paths": int(bad.size)}


def _calibration(fp: ForecastPaths, where: Where, cases, rng: np.random.Generator,
                 alpha: float) -> list[Test]:
    """The calibration tests of ``cases`` ((name, predicted (R, P), observed (R,)), ...): the
    PITs and their summaries drawn from ``rng`` case by case, the p-values in one call."""
    pits, summaries = [], []
    for _, predicted, observed in cases:
        pits.append(cal.randomized_pit(predicted, observed, rng))
        summaries.append(cal.pit_summary(pits[-1], rng))
    pvalues = cal.uniformity_pvalues(np.stack(pits))
    return [Test(name, fp.forecast, fp.theory, where, p, p, "CvM p > alpha (Holm)",
                 power=cal.min_uniformity_pvalue(int(summary["models"])) <= alpha,
                 details=summary)
            for (name, _, _), p, summary in zip(cases, pvalues.tolist(), summaries, strict=True)]


def score_cell(fp: ForecastPaths, where: Where, tolerances, rng: np.random.Generator, *,
               sde_spacing: np.ma.MaskedArray | None = None) -> list[Test]:
    """The tests of one cell's forecast (module docstring), before Holm.

    Parameters
    ----------
    fp : ForecastPaths
    where : (T, 1/sigma_W)
    tolerances : mapping with ``alpha`` and ``equivalence_margin``
    rng : numpy.random.Generator (tie-breaking of ranks, bootstrap)
    sde_spacing : masked (R, P), optional
        S(t_f) by the spacing SDE (4.8) for the same models: adds ``calibration_sde``.
    """
    alpha, margin = tolerances["alpha"], tolerances["equivalence_margin"]
    x_pred, x_obs = _final(fp)
    s_pred, s_obs = fp.spacing[-1], fp.observed_spacing[:, -1]
    tests: list[Test] = []
    if fp.forecast != "closed-loop":
        bad = _bad_paths(fp)
        tests.append(Test("positivity", fp.forecast, fp.theory, where, bad["bad_paths"],
                          float("nan"), "== 0 broken, negative or reordered paths",
                          details=bad))
    n = x_pred.shape[-1]
    cases = [("calibration_spacing", s_pred, s_obs),
             *(("level", x_pred[..., i], x_obs[:, i]) for i in range(n))]
    if sde_spacing is not None:
        cases.append(("calibration_sde", sde_spacing, s_obs))
    spacing, *levels = _calibration(fp, where, cases, rng, alpha)
    sde = levels.pop() if sde_spacing is not None else None
    p_levels = np.array([t.pvalue for t in levels])
    finite = np.isfinite(p_levels)
    p = float(min(1.0, finite.sum() * p_levels[finite].min())) if finite.any() else np.nan
    tests += [spacing, Test(
        "calibration_levels", fp.forecast, fp.theory, where, p, p,
        "Bonferroni over levels of CvM p > alpha (Holm)",
        power=any(t.power for t in levels) and bool(finite.any()),
        details={"level_pvalues": p_levels.tolist(),
                 "level_pit_means": [t.details["pit_mean"] for t in levels]})]
    if sde is not None:
        tests.append(sde)
    eq = cal.ratio_equivalence(s_pred, s_obs, margin, rng)
    tests.append(Test("spacing_mean", fp.forecast, fp.theory, where, eq["ratio"],
                      eq["pvalue"], f"ratio in [{1 / margin:.3g}, {margin:g}] (TOST, Holm)",
                      power=eq["resolvable"] or eq["outside"],
                      details={"ratio_ci95": eq["ratio_ci"], "tost_pvalue": eq["pvalue"]}))
    return tests


def resolve(tests: list[Test], alpha: float) -> list[Test]:
    """Verdicts of the tests of one (forecast, theory): Holm within each family at ``alpha``.

    calibration: rejected (evidence of miscalibration) -> FAIL; equivalence: rejected
    (equivalence shown) -> PASS, else FAIL; deterministic: the count must be 0.
    """
    for family in ("calibration", "equivalence"):
        members = [t for t in tests if t.family == family]
        rejected = cal.holm([t.pvalue for t in members], alpha)
        for t, rej in zip(members, rejected, strict=True):
            if family == "calibration":
                t.verdict = "FAIL" if rej else "PASS"
            else:
                t.verdict = "PASS" if rej else "FAIL"
    for t in tests:
        if t.family == "deterministic":
            t.verdict = "PASS" if t.metric == 0 else "FAIL"
    return tests
