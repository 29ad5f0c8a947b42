"""The width-scaling study of issue 16: the ordered -> high-temperature crossover against width.

n2 in {16, 32, 64, 128, 256} at n1 = 2 n2 (n0 = 3, n3 = 1, tanh, W2 trained, W1 and W3 the
teacher's, 4000 inputs, |B| = 4, fixed order, 1/sigma_W = 8, float32, 50 epochs), under

(a) the standard parametrisation: validation/width-standard-n{n2}.toml (every layer
    N(0, 1/fan_in), W2(0) = sigma_W Z / sqrt(n1), lr = T |B|), T = 2^-7 .. 2^3;
(b) the mean-field readout: the replica's own draws (dysonsgd.model.draws.replica_draws) with
    W3 -> W3 / sqrt(n2) for teacher and student (W3 ~ N(0, 1/n2^2), the 1/n2 readout) and
    lr = T |B| (muP's width-independent SGD rate for a hidden matrix), trained through
    train_ensemble(teacher_weights=...), on T_b = 2^-0.5 .. 2^8.5.

For this set-up (b) is (a) at T_a = T_b / n2 exactly: scaling the shared W3 by c scales the
outputs, residuals and targets by c and the W2 gradient by c^2 (docs/beyond.md, "Width
scaling"; tests/test_width_scaling.py checks it in float64). The two ladders interleave by
half an octave in T_a, so together they are one ladder per seed of 21 rungs.

Measured per model (128 release test inputs): the relative test loss r = L(t_f) / L_0, L_0 the
zero predictor's loss (2.6) for the model's teacher; the relative change of W2 in Frobenius and
spectral norm and of the pre-activations h2 = W2 phi1 on the test inputs; per replica the
Gauss-Newton curvature lambda = |W3|^2 lambda_max(Phi1^T Phi1 / P) on the training inputs and
the gradient-descent stability temperature T* = 2 / (|B| lambda).

Declared before the full run (docs/beyond.md): T_c per seed is the first upward crossing of
log10 r through LEVEL = -1.5 after the ladder's minimum (linear in log2 T between rungs); a
seed whose minimum is above the level has no T_c, one below it at every higher rung is
censored; the levels -1 and log10(0.0085) (the phase rule's ordered loss relative to 0.118)
are reported as a sensitivity check. Seeds are independent (each width its own base seed), cells
of one seed share its draws, so every statistic is per seed first, then mean +- SE over seeds;
widths are independent, so fits over widths weight each width's mean by its SE.

The main run also measures the coherent fraction of dW2 (its part along W3, 1 for the
lazy rank-one update). Looking at it showed a switch near T* (post hoc); a second run tests
it, declared after the main run and before this run (stage 'confirm'): (b) alone on
T_b = 2^(k/4), k = -4 .. 8, fresh seeds (base 1000 + n2), the same seeds per width and
epochs. Per seed T_coh is the first fall of the coherent fraction through 1/2 after its
maximum, linear in log2 T. Predictions, each with its criterion:
(C1) T_coh does not depend on width in mean-field units: the 95% interval (1.96 x the
     Birge-scaled SE) of the WLS exponent of T_coh,b in n2 contains 0 and excludes 1 (the
     value if T_coh stayed put in (a)'s units);
(C2) T_coh / T* lies in [2^-1, 2^0] at every width (log2 mean +- 2 SE inside [-1, 0]);
(C3) the switch sharpens with width: the exponent of the crossing slope d c / d log2 T is
     > 0 at one-sided z > 1.645 (Birge-scaled SE);
(C4) the sharpening collapse of the mean coherent fraction against (log2 T_b - centre)
     n2^kappa gives kappa within 2 combined SEs of (C3)'s exponent.

Writes docs/figures/beyond/width_{loss,transition,change,coherence}.{png,pdf} (figures in
width_scaling_figures.py), width_scaling.json and the per-model data width_scaling_raw.npz,
width_coherence_raw.npz (``--stage none`` rebuilds figures and json from them)::

    .venv/bin/python docs/studies/width_scaling.py           # ~16 min of CPU on 2 cores
    .venv/bin/python docs/studies/width_scaling.py --quick   # smoke run, to /tmp
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import time
from pathlib import Path

import numpy as np

from dysonsgd.analysis.describe import mean_se
from dysonsgd.measure import observables as ob
from dysonsgd.model import network
from dysonsgd.model.draws import replica_draws
from dysonsgd.runs.config import find_config, load_config
from dysonsgd.runs.sweep import train_grid
from dysonsgd.train import train_ensemble

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "figures" / "beyond"
WIDTHS = (16, 32, 64, 128, 256)
#: (b)'s ladder in mean-field units, half an octave off (a)'s rungs once divided by n2
MF_TEMPERATURE = tuple(2.0 ** (k + 0.5) for k in range(-1, 9))
LEVEL = -1.5  # declared: log10 of the relative loss at the crossover
SENSITIVITY_LEVELS = (-1.0, math.log10(1e-3 / 0.118))
#: the crossover band of log10 r used by the collapse fit (declared)
COLLAPSE_BAND = (-2.5, -0.5)
COLLAPSE_EXPONENTS = np.round(np.arange(0.0, 1.5001, 0.01), 2)
#: fixed-protocol temperatures of the relative-change check (declared)
FIXED_T_STANDARD = (2.0**-7, 2.0**-3)
FIXED_T_MEAN_FIELD = (2.0**0.5, 2.0**2.5)
N_BOOT = 200
CHANGES = ("frobenius", "spectral", "feature", "coherent")
#: the confirmatory run of the lazy -> non-lazy switch (declared after the main run, before
#: this run): (b) only, quarter octaves in T_b around T*_b ~ 2, fresh seeds (base 1000 + n2)
CONFIRM_TEMPERATURE = tuple(2.0 ** (k / 4) for k in range(-4, 9))
CONFIRM_SEED_OFFSET = 1000
COHERENCE_LEVEL = 0.5  # the switch: half of |dW2|_F^2 along W3
COHERENCE_BAND = (0.2, 0.8)  # of the coherent fraction, for the sharpening collapse


# ------------------------------------------------------------------------------------------------
# pure functions
# ------------------------------------------------------------------------------------------------


def mean_field_readout(w3: np.ndarray) -> np.ndarray:
    """W3 of the 1/n2 readout: the standard draw ``W3 ~ N(0, 1/n2)`` divided by ``sqrt(n2)``.

    w3 : (..., n3, n2) -> (..., n3, n2), ``W3 ~ N(0, 1/n2^2)``.
    """
    w3 = np.asarray(w3, float)
    return w3 / math.sqrt(w3.shape[-1])


def gauss_newton_lambda(phi1: np.ndarray, w3: np.ndarray) -> np.ndarray:
    """Largest eigenvalue of the Gauss-Newton matrix of W2 at small W2, per replica.

    For ``yhat = W3 tanh(W2 phi1)`` (2.3) with ``|W2 phi1| << 1``, ``d yhat / d W2 = W3^T
    phi1^T`` and ``E_x[grad grad^T] = (W3^T W3) (x) (Phi1^T Phi1 / P)``, whose top eigenvalue is
    ``|W3|^2 lambda_max(Phi1^T Phi1 / P)`` (n3 = 1). Gradient descent on the mean loss is
    stable for ``lr lambda < 2``, i.e. ``T < T* = 2 / (|B| lambda)``. At 1/sigma_W = 8 the
    neglected ``tanh'(h2) = 1 - O(h2^2)`` is a ~1% correction.

    phi1 : (..., P, n1) layer-1 features of the training inputs; w3 : (..., 1, n2).
    Returns (...,).
    """
    phi1 = np.asarray(phi1, float)
    gram = np.einsum("...pi,...pj->...ij", phi1, phi1) / phi1.shape[-2]
    return np.sum(np.asarray(w3, float) ** 2, axis=(-2, -1)) * np.linalg.eigvalsh(gram)[..., -1]


def relative_changes(w2_0: np.ndarray, w2_f: np.ndarray, phi1: np.ndarray,
                     w3: np.ndarray | None = None, *, spectral: bool = True) -> dict:
    """Relative change of W2 and of the pre-activations h2 = W2 phi1 (2.3).

    w2_0, w2_f : (..., n2, n1); phi1 : (..., P, n1). Returns (...,) arrays ``frobenius``
    ``|dW|_F / |W(0)|_F``, ``spectral`` ``|dW|_2 / |W(0)|_2`` and ``feature``
    ``|dW Phi1^T|_F / |W(0) Phi1^T|_F`` (RMS change of h2 over units and inputs over its
    initial RMS); with ``w3`` (..., 1, n2) also ``coherent``, the fraction
    ``|w3^T w3 dW|_F^2 / (|w3|^2 |dW|_F^2)`` of the change along the readout (1 for the
    rank-one update ``W3^T v^T`` of the linearised network, where every per-sample gradient's
    left factor ``W3^T * tanh'(h2)`` is ``W3^T``).
    """
    d = np.asarray(w2_f, float) - np.asarray(w2_0, float)
    w0 = np.asarray(w2_0, float)
    h0 = np.einsum("...ij,...pj->...pi", w0, phi1)
    dh = np.einsum("...ij,...pj->...pi", d, phi1)
    d_norm = np.linalg.norm(d, axis=(-2, -1))
    out = {"frobenius": d_norm / np.linalg.norm(w0, axis=(-2, -1)),
           "feature": np.linalg.norm(dh, axis=(-2, -1)) / np.linalg.norm(h0, axis=(-2, -1))}
    if spectral:  # an SVD per model
        out["spectral"] = (np.linalg.norm(d, ord=2, axis=(-2, -1))
                           / np.linalg.norm(w0, ord=2, axis=(-2, -1)))
    if w3 is not None:
        u = np.asarray(w3, float)[..., 0, :]
        u = u / np.linalg.norm(u, axis=-1, keepdims=True)
        along = np.linalg.norm(np.einsum("...i,...ij->...j", u, d), axis=-1)
        out["coherent"] = (along / d_norm) ** 2
    return out


def crossing(log2_t: np.ndarray, log10_r: np.ndarray, level: float) -> tuple[float, float, str]:
    """The first upward crossing of ``level`` after the minimum of one seed's curve.

    log2_t : (K,) increasing; log10_r : (K,), NaN or +inf where a model diverged (above any
    level). Returns ``(log2 T_c, slope, status)``: T_c linear in log2 T between the bracketing
    rungs, the slope d log10 r / d log2 T there; status 'ok', 'never_ordered' (the minimum is
    not below the level: NaN, NaN) or 'censored' (below the level up to the last rung: +inf).
    """
    t = np.asarray(log2_t, float)
    r = np.where(np.isfinite(log10_r), log10_r, np.inf)
    if np.any(np.diff(t) <= 0):
        raise ValueError("log2_t must increase")
    i0 = int(np.argmin(r))
    if not r[i0] < level:
        return math.nan, math.nan, "never_ordered"
    for j in range(i0, len(t) - 1):
        if r[j] < level <= r[j + 1]:
            if not np.isfinite(r[j + 1]):
                return float(0.5 * (t[j] + t[j + 1])), math.nan, "ok"
            slope = (r[j + 1] - r[j]) / (t[j + 1] - t[j])
            return float(t[j] + (level - r[j]) / slope), float(slope), "ok"
    return math.inf, math.nan, "censored"


def power_fit(log2_n: np.ndarray, mean: np.ndarray, se: np.ndarray) -> dict:
    """Weighted least squares ``mean = c + slope log2 n`` over independent widths.

    Returns slope, intercept, their SEs from the weights alone, chi2, dof and the SE scaled by
    sqrt(chi2 / dof) when that exceeds 1 (the Birge ratio: scatter beyond the stated SEs).
    """
    x, y, s = (np.asarray(v, float) for v in (log2_n, mean, se))
    ok = np.isfinite(y) & np.isfinite(s) & (s > 0)
    x, y, s = x[ok], y[ok], s[ok]
    if x.size < 3:
        return {k: math.nan for k in ("slope", "slope_se", "slope_se_scaled", "intercept",
                                      "intercept_se", "chi2", "dof")} | {"n": int(x.size)}
    design = np.stack([np.ones_like(x), x], 1) / s[:, None]
    coef, *_ = np.linalg.lstsq(design, y / s, rcond=None)
    cov = np.linalg.inv(design.T @ design)
    chi2 = float(np.sum(((y - coef[0] - coef[1] * x) / s) ** 2))
    dof = x.size - 2
    birge = math.sqrt(max(chi2 / dof, 1.0))
    return {"slope": float(coef[1]), "slope_se": float(math.sqrt(cov[1, 1])),
            "slope_se_scaled": float(math.sqrt(cov[1, 1]) * birge), "intercept": float(coef[0]),
            "intercept_se": float(math.sqrt(cov[0, 0])), "chi2": chi2, "dof": dof,
            "n": int(x.size)}


def collapse_cost(curves: list[tuple[np.ndarray, np.ndarray]], log2_n: np.ndarray, exponent:
                  float, band: tuple[float, float] = COLLAPSE_BAND, *,
                  centre: float | None = None) -> float:
    """Dispersion across widths of curves ``y(log2 T)`` against a scaling variable.

    curves : per width ``(log2_t increasing, mean y)``. The variable is ``x = log2 T + a log2 n``
    (a shift, ``T n^a``) or, with ``centre``, ``x = (log2 T - centre) n^a`` (a sharpening about
    a fixed crossover, the ``(T - T_c) n^(1/nu)`` form on a log-temperature axis). The curves
    are interpolated on 201 points of their common x range; the cost is the across-width
    variance averaged over the points where the across-width mean lies in ``band``; NaN if
    fewer than 5 points qualify.
    """
    if centre is None:
        xs = [np.asarray(t, float) + exponent * ln
              for (t, _), ln in zip(curves, log2_n, strict=True)]
    else:
        xs = [(np.asarray(t, float) - centre) * 2.0 ** (exponent * ln)
              for (t, _), ln in zip(curves, log2_n, strict=True)]
    lo, hi = max(x[0] for x in xs), min(x[-1] for x in xs)
    if not hi > lo:
        return math.nan
    grid = np.linspace(lo, hi, 201)
    ys = np.stack([np.interp(grid, x, y) for x, (_, y) in zip(xs, curves, strict=True)])
    mean = ys.mean(0)
    sel = (mean >= band[0]) & (mean <= band[1])
    if sel.sum() < 5:
        return math.nan
    return float(ys[:, sel].var(axis=0, ddof=1).mean())


def fit_collapse(curves, log2_n, exponents=COLLAPSE_EXPONENTS, band=COLLAPSE_BAND, *,
                 centre: float | None = None) -> tuple[float, np.ndarray]:
    """The exponent minimising :func:`collapse_cost` over ``exponents``; (a, costs)."""
    costs = np.array([collapse_cost(curves, log2_n, a, band, centre=centre) for a in exponents])
    if not np.any(np.isfinite(costs)):
        return math.nan, costs
    return float(exponents[int(np.nanargmin(costs))]), costs


# ------------------------------------------------------------------------------------------------
# training and observables (the edges)
# ------------------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def train_width(cfg, mf_temperature, *, standard: bool = True) -> tuple:
    """(a) from the config (unless not ``standard``), (b) from the replica's draws with the 1/n2
    readout on ``mf_temperature``; the draws and the timings."""
    draws = [replica_draws(cfg.model, cfg.seed, r) for r in range(cfg.seeds)]
    t0, c0 = time.perf_counter(), cpu_seconds()
    res_a = train_grid(cfg) if standard else None
    t1, c1 = time.perf_counter(), cpu_seconds()
    teacher = (np.stack([d["w1"] for d in draws]), np.stack([d["w2_teacher"] for d in draws]),
               mean_field_readout(np.stack([d["w3"] for d in draws])))
    res_b = train_ensemble(cfg.model, temperature=list(mf_temperature), sigma_w=list(cfg.sigma_w),
                           n_seeds=cfg.seeds, epochs=cfg.epochs, snapshots=cfg.snapshots,
                           seed=cfg.seed, dtype=cfg.dtype, progress=False,
                           teacher_weights=teacher)
    t2, c2 = time.perf_counter(), cpu_seconds()
    timing = {"standard_wall_s": t1 - t0, "standard_cpu_s": c1 - c0,
              "mean_field_wall_s": t2 - t1, "mean_field_cpu_s": c2 - c1}
    return res_a, res_b, draws, timing


def observe(res, x_test: np.ndarray, *, spectral: bool = True) -> dict:
    """Per model (nT, nR) at 1/sigma_W = 8: log10 r at every snapshot, the relative changes."""
    w1, w2t, w3 = res.teacher()
    y = network.outputs(x_test, w1, w2t, w3, res.config.activation)
    zero = 0.5 * np.mean(np.sum(y * y, axis=-1), axis=-1)
    div = np.asarray(res.diverged, bool)
    log10_r = np.stack([np.log10(ob.result_test_loss(res, k, x_test, convention="paper") / zero)
                        for k in range(len(res.snapshot_epochs))], axis=-1)
    log10_r = np.where(div[..., None], np.inf, log10_r)
    phi1 = network.layer1_features(x_test, w1)
    ch = relative_changes(res.w2[..., 0, :, :], res.w2[..., -1, :, :], phi1, w3,
                          spectral=spectral)
    out = {"log10_r": log10_r[:, 0], "diverged": div[:, 0]}
    out.update({k: np.where(div, np.nan, v)[:, 0] for k, v in ch.items()})
    return out


def per_seed_crossings(log2_t, log10_r, level) -> dict:
    """T_c, slope and status per seed; log10_r (K, nR) on the rungs log2_t (K,)."""
    order = np.argsort(log2_t)
    got = [crossing(np.asarray(log2_t)[order], log10_r[order, r], level)
           for r in range(log10_r.shape[1])]
    return {"log2_tc": np.array([g[0] for g in got]), "slope": np.array([g[1] for g in got]),
            "status": [g[2] for g in got]}


def summarise_tc(c: dict) -> dict:
    s = mean_se(c["log2_tc"])
    s["never_ordered"] = c["status"].count("never_ordered")
    s["censored"] = c["status"].count("censored")
    return s


# ------------------------------------------------------------------------------------------------
# analysis
# ------------------------------------------------------------------------------------------------


def analyse(data: dict) -> dict:
    widths = sorted(data)
    log2_n = np.log2(widths)
    out: dict = {"widths": widths, "level": LEVEL, "per_width": {}}
    tc = {p: {"mean": [], "se": []} for p in ("standard", "mean_field", "combined",
                                              "combined_mid")}
    sens = {lv: {"mean": [], "se": []} for lv in SENSITIVITY_LEVELS}
    curves, seeds_curves, slopes = [], [], {"mean": [], "se": []}
    for n in widths:
        d = data[n]
        la, lb = np.log2(d["t_standard"]), np.log2(d["t_mean_field"]) - math.log2(n)
        ra, rb = d["standard"]["log10_r"], d["mean_field"]["log10_r"]
        lab = np.concatenate([la, lb])
        order = np.argsort(lab)
        rab = np.concatenate([ra, rb])[order]  # (K, nR, n_snap)
        lab = lab[order]
        w: dict = {"seeds": int(ra.shape[1]), "timing": d["timing"]}
        c_a = per_seed_crossings(la, ra[..., -1], LEVEL)
        c_b = per_seed_crossings(np.log2(d["t_mean_field"]), rb[..., -1], LEVEL)
        c_ab = per_seed_crossings(lab, rab[..., -1], LEVEL)
        c_mid = per_seed_crossings(lab, rab[..., 1], LEVEL)
        w["log2_tc_standard"] = summarise_tc(c_a)
        w["log2_tc_mean_field"] = summarise_tc(c_b)
        w["log2_tc_combined"] = summarise_tc(c_ab)
        w["log2_tc_combined_mid_epochs"] = summarise_tc(c_mid)
        w["mean_field_minus_standard_log2"] = mean_se(c_b["log2_tc"] - math.log2(n)
                                                      - c_a["log2_tc"])
        w["final_minus_mid_log2"] = mean_se(c_ab["log2_tc"] - c_mid["log2_tc"])
        w["crossing_slope"] = mean_se(c_ab["slope"])
        w["log2_tc_per_seed_standard"] = c_a["log2_tc"].tolist()
        w["log2_tc_per_seed_mean_field"] = c_b["log2_tc"].tolist()
        for key, c in (("standard", c_a), ("mean_field", c_b), ("combined", c_ab),
                       ("combined_mid", c_mid)):
            s = mean_se(c["log2_tc"])
            tc[key]["mean"].append(s["mean"])
            tc[key]["se"].append(s["se"])
        for lv in SENSITIVITY_LEVELS:
            s = mean_se(per_seed_crossings(lab, rab[..., -1], lv)["log2_tc"])
            sens[lv]["mean"].append(s["mean"])
            sens[lv]["se"].append(s["se"])
            w[f"log2_tc_combined_level_{lv:.2f}"] = s
        sl = mean_se(np.log2(c_ab["slope"]))
        slopes["mean"].append(sl["mean"])
        slopes["se"].append(sl["se"])
        lam = d["lambda"]
        w["log2_t_star"] = mean_se(np.log2(2.0 / (4.0 * lam)))
        w["log2_tc_over_t_star"] = mean_se(c_ab["log2_tc"] - np.log2(2.0 / (4.0 * lam)))
        w["lambda_over_n1"] = mean_se(lam / (2 * n))
        with np.errstate(invalid="ignore"):
            curves.append((lab, np.mean(rab[..., -1], axis=1)))
        seeds_curves.append((lab, rab[..., -1]))
        w["changes"] = {}
        for name, p, temps in (("standard", "standard", FIXED_T_STANDARD),
                               ("mean_field", "mean_field", FIXED_T_MEAN_FIELD)):
            tt = d["t_standard"] if p == "standard" else d["t_mean_field"]
            for t in temps:
                i = int(np.argmin(np.abs(np.log2(tt) - math.log2(t))))
                w["changes"][f"{name} T={t:.4g}"] = {
                    k: mean_se(np.log2(d[p][k][i])) for k in CHANGES}
        out["per_width"][str(n)] = w
    out["tc_exponent"] = {k: power_fit(log2_n, v["mean"], v["se"]) for k, v in tc.items()}
    out["tc_exponent_levels"] = {f"{lv:.2f}": power_fit(log2_n, v["mean"], v["se"])
                                 for lv, v in sens.items()}
    out["crossing_slope_exponent"] = power_fit(log2_n, slopes["mean"], slopes["se"])
    out["t_star_exponent"] = power_fit(
        log2_n, [out["per_width"][str(n)]["log2_t_star"]["mean"] for n in widths],
        [out["per_width"][str(n)]["log2_t_star"]["se"] for n in widths])
    out["change_exponents"] = {}
    for key in out["per_width"][str(widths[0])]["changes"]:
        for k in CHANGES:
            m = [out["per_width"][str(n)]["changes"][key][k] for n in widths]
            out["change_exponents"][f"{key} {k}"] = power_fit(
                log2_n, [e["mean"] for e in m], [e["se"] for e in m])
    a, costs = fit_collapse(curves, log2_n)
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(N_BOOT):
        bc = []
        for lab, r in seeds_curves:
            pick = rng.integers(0, r.shape[1], r.shape[1])
            bc.append((lab, np.mean(r[:, pick], axis=1)))
        boot.append(fit_collapse(bc, log2_n)[0])
    out["collapse"] = {"exponent": a, "bootstrap_se": float(np.nanstd(boot, ddof=1)),
                       "bootstrap_n": int(np.isfinite(boot).sum()), "band": COLLAPSE_BAND,
                       "costs": costs.tolist(), "exponents": COLLAPSE_EXPONENTS.tolist()}
    return out


def coherence_analysis(data: dict) -> dict:
    """The lazy -> non-lazy switch: where the coherent fraction of dW2 falls through 1/2.

    Per seed on all its rungs (both parametrisations where present, in (a)'s units): T_coh by
    :func:`crossing` of ``1 - coherent`` through ``1 - COHERENCE_LEVEL``, the slope there (per
    octave), T_coh / T*. Over widths: the exponent of T_coh in mean-field units (0 if the switch
    sits at a fixed T_b), of the slope (> 0: the switch sharpens with width), and the
    sharpening collapse of the mean coherent fraction against (log2 T_b - centre) n2^kappa, the
    centre the inverse-variance mean of the widths' log2 T_coh,b; SEs by bootstrap over seeds.
    """
    widths = sorted(data)
    log2_n = np.log2(widths)
    per, curves, seeds_curves = {}, [], []
    fits = {k: {"mean": [], "se": []} for k in ("mf", "slope", "ratio")}
    for n in widths:
        d = data[n]
        parts = [(np.log2(d["t_standard"]), d["standard"]["coherent"])] if "standard" in d else []
        parts.append((np.log2(d["t_mean_field"]) - math.log2(n), d["mean_field"]["coherent"]))
        lab = np.concatenate([t for t, _ in parts])
        order = np.argsort(lab)
        lab, coh = lab[order], np.concatenate([c for _, c in parts])[order]
        got = per_seed_crossings(lab, 1.0 - coh, 1.0 - COHERENCE_LEVEL)
        t_star = np.log2(2.0 / (4.0 * np.asarray(d["lambda"])))
        w = {"log2_tcoh": summarise_tc(got),
             "log2_tcoh_mean_field": mean_se(got["log2_tc"] + math.log2(n)),
             "log2_tcoh_over_t_star": mean_se(got["log2_tc"] - t_star),
             "slope_per_octave": mean_se(got["slope"]),
             "log2_slope": mean_se(np.log2(got["slope"])),
             "log2_t_star_mean_field": mean_se(t_star + math.log2(n))}
        for key, name in (("mf", "log2_tcoh_mean_field"), ("slope", "log2_slope"),
                          ("ratio", "log2_tcoh_over_t_star")):
            fits[key]["mean"].append(w[name]["mean"])
            fits[key]["se"].append(w[name]["se"])
        per[str(n)] = w
        curves.append((lab + math.log2(n), np.mean(coh, axis=1)))
        seeds_curves.append((lab + math.log2(n), coh, got["log2_tc"] + math.log2(n)))
    out = {"per_width": per,
           "tcoh_mean_field_exponent": power_fit(log2_n, fits["mf"]["mean"], fits["mf"]["se"]),
           "slope_exponent": power_fit(log2_n, fits["slope"]["mean"], fits["slope"]["se"]),
           "ratio_exponent": power_fit(log2_n, fits["ratio"]["mean"], fits["ratio"]["se"])}

    def centre_of(tcs):
        m = np.array([np.nanmean(t) for t in tcs])
        v = np.array([np.nanvar(t, ddof=1) / np.isfinite(t).sum() for t in tcs])
        return float(np.sum(m / v) / np.sum(1 / v))

    centre = centre_of([t for *_, t in seeds_curves])
    kappa, costs = fit_collapse(curves, log2_n, band=COHERENCE_BAND, centre=centre)
    rng = np.random.default_rng(1)
    boot = []
    for _ in range(N_BOOT):
        bc, bt = [], []
        for lab, coh, tc in seeds_curves:
            pick = rng.integers(0, coh.shape[1], coh.shape[1])
            bc.append((lab, np.mean(coh[:, pick], axis=1)))
            bt.append(tc[pick])
        boot.append(fit_collapse(bc, log2_n, band=COHERENCE_BAND, centre=centre_of(bt))[0])
    out["collapse"] = {"kappa": kappa, "bootstrap_se": float(np.nanstd(boot, ddof=1)),
                       "centre_log2_t_b": centre, "band": COHERENCE_BAND,
                       "costs": costs.tolist()}
    out["criteria"] = criteria(out)
    return out


def criteria(c: dict) -> dict:
    """The verdicts (C1)-(C4) of the module docstring from :func:`coherence_analysis`."""
    e, s = c["tcoh_mean_field_exponent"], c["slope_exponent"]
    lo, hi = e["slope"] - 1.96 * e["slope_se_scaled"], e["slope"] + 1.96 * e["slope_se_scaled"]
    ratio = [c["per_width"][n]["log2_tcoh_over_t_star"] for n in c["per_width"]]
    z = s["slope"] / s["slope_se_scaled"]
    k = c["collapse"]
    gap = abs(k["kappa"] - s["slope"]) / math.hypot(k["bootstrap_se"], s["slope_se_scaled"])
    return {"C1": {"interval": [lo, hi], "pass": bool(lo <= 0.0 <= hi and hi < 1.0)},
            "C2": {"pass": bool(all(r["mean"] - 2 * r["se"] >= -1.0 and r["mean"] + 2 * r["se"]
                                    <= 0.0 for r in ratio))},
            "C3": {"z": z, "pass": bool(z > 1.645)},
            "C4": {"gap_in_se": gap, "pass": bool(gap <= 2.0)}}


def save_raw(data: dict, path: Path) -> None:
    """The per-model observables of every width, flat, for --reanalyse."""
    flat = {}
    for n, d in data.items():
        for k, v in d.items():
            if isinstance(v, dict) and k in ("standard", "mean_field"):
                flat.update({f"{n}/{k}/{q}": np.asarray(a) for q, a in v.items()})
            elif k == "timing":
                flat.update({f"{n}/timing/{q}": np.asarray(a) for q, a in v.items()})
            else:
                flat[f"{n}/{k}"] = np.asarray(v)
    np.savez_compressed(path, **flat)


def load_raw(path: Path) -> dict:
    data: dict = {}
    with np.load(path) as z:
        for key in z.files:
            parts = key.split("/")
            d = data.setdefault(int(parts[0]), {})
            if len(parts) == 3:
                v = z[key]
                d.setdefault(parts[1], {})[parts[2]] = float(v) if parts[1] == "timing" else v
            else:
                v = z[key]
                d[parts[1]] = v.tolist() if parts[1] in ("snapshot_epochs", "epochs") else v
    return data


def measure(widths, quick: bool, *, confirm: bool = False) -> tuple[dict, dict]:
    """Train at every width; per-model observables and timings. The main run: both
    parametrisations, base seed n2; ``confirm``: (b) alone on CONFIRM_TEMPERATURE, base seed
    1000 + n2, no spectral norms."""
    x_test = ob.test_inputs(128, 3, 42)
    data, t_start, c_start = {}, time.perf_counter(), cpu_seconds()
    for n in widths:
        cfg = load_config(find_config(str(ROOT / "validation" / f"width-standard-n{n}.toml")))
        if quick:
            cfg = dataclasses.replace(cfg, seeds=2, epochs=4)
        if confirm:
            cfg = dataclasses.replace(cfg, seed=CONFIRM_SEED_OFFSET + n)
        res_a, res_b, draws, timing = train_width(
            cfg, CONFIRM_TEMPERATURE if confirm else MF_TEMPERATURE, standard=not confirm)
        lam = np.array([gauss_newton_lambda(network.layer1_features(d["x"], d["w1"]), d["w3"])
                        for d in draws])
        t0, c0 = time.perf_counter(), cpu_seconds()
        data[n] = {"t_mean_field": np.asarray(res_b.temperature), "epochs": cfg.epochs,
                   "mean_field": observe(res_b, x_test, spectral=not confirm),
                   "lambda": lam, "snapshot_epochs": res_b.snapshot_epochs.tolist()}
        if res_a is not None:
            data[n].update(t_standard=np.asarray(res_a.temperature),
                           standard=observe(res_a, x_test))
        timing.update(observe_wall_s=time.perf_counter() - t0, observe_cpu_s=cpu_seconds() - c0)
        data[n]["timing"] = timing
        del res_a, res_b
        print(f"n2 = {n}{' (confirm)' if confirm else ''}: {json.dumps(timing, default=float)}",
              flush=True)
    return data, {"wall_s": time.perf_counter() - t_start, "cpu_s": cpu_seconds() - c_start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="n2 = 16, 32, 64; 2 seeds, 4 epochs; writes to /tmp unless --out")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--stage", choices=("all", "main", "confirm", "none"), default="all",
                        help="which runs to train (none: rebuild figures and json from the raw "
                             "npz files of the last runs)")
    args = parser.parse_args()
    import width_scaling_figures as figures  # the sibling module (sys.path[0] is this folder)

    out_dir = args.out or (Path("/tmp/width_scaling_quick") if args.quick else OUT)
    out_dir.mkdir(parents=True, exist_ok=True)
    widths = WIDTHS[:3] if args.quick else WIDTHS
    old = out_dir / "width_scaling.json"
    timing = json.loads(old.read_text()).get("timing", {}) if old.exists() else {}
    timing = {"main": timing} if "wall_s" in timing else timing  # a main-only run's record
    raws = {"main": out_dir / "width_scaling_raw.npz",
            "confirm": out_dir / "width_coherence_raw.npz"}
    data = {}
    for stage, path in raws.items():
        if args.stage in ("all", stage):
            data[stage], timing[stage] = measure(widths, args.quick, confirm=stage == "confirm")
            save_raw(data[stage], path)
        elif path.exists():
            data[stage] = load_raw(path)
    numbers = analyse(data["main"])
    numbers["timing"] = timing
    numbers["snapshot_epochs"] = data["main"][min(data["main"])]["snapshot_epochs"]
    numbers["mean_field_temperature"] = list(MF_TEMPERATURE)
    numbers["coherence_main_post_hoc"] = coherence_analysis(data["main"])
    if "confirm" in data:
        numbers["coherence_confirm"] = coherence_analysis(data["confirm"])
        numbers["confirm_temperature"] = list(CONFIRM_TEMPERATURE)
    figures.save_all(data, numbers, out_dir)
    old.write_text(json.dumps(numbers, indent=1, default=float))
    print(json.dumps({k: numbers[k] for k in ("tc_exponent", "timing")}, indent=1,
                     default=float)[:3000])


if __name__ == "__main__":
    main()
