"""The ReLU study of issue 16: the (T, 1/sigma_W) diagram with phi = relu, against tanh.

Trains validation/relu-small.toml (the paper's widths (3, 32, 16, 1), 4000 points, |B| = 4,
1/sigma_W = 2^-8 .. 2^3, T = 2^-5 .. 2^3, 16 seeds, 50 epochs, float32) and its tanh twin (the
same config with activation = "tanh": the same seeds, teachers' W1 and W3 draws, inputs and
W2(0) directions), plus a control: ReLU at sigma_W = 16, 64, 256, T = 2^-5 with the divergence
threshold raised from 100 to 1e12.

Measured per model, on the release's 128 test inputs: the final test loss (2.6), the
normalised feature overlap G(t_f, 0) / sqrt(G(t_f, t_f) G(0, 0)) (3.4) (for relu the raw
G(t_f, 0) scales as sigma_W^2, see dysonsgd.theory.relu), the alignment (3.5), the rate (4.7),
the fraction of dead units (last hidden nodes that are 0 on every test input) and the training
loss at t = 0 (full data, (2.6)). Cell statistics are over the 16 seeds, which are independent
replicas; different cells of one seed share its draws (common random numbers), so statements
across cells are per seed (paired) and never pool a seed twice.

Tests of dysonsgd.theory.relu's predictions:

- the expected initial loss v_x (sigma_W^2 - 2 sigma_W / pi + 1) / 8 against the column means
  of the measured initial training loss (z = (mean - prediction) / SE);
- divergence: a model stops in epoch 0 iff its initial loss exceeds the threshold (the table
  of both at T = 2^-5), and the column where half the models stop against divergence_line();
- the scaling L(t_f) ~ sigma_W^2 ell(t_f) for sigma_W >> 1: per seed, the least-squares slope
  of log L(t_f) on log sigma_W over sigma_W = 2 .. 16 at T = 2^-5 (predicted 2), mean and SE
  over seeds; the same for tanh (bounded features: no such law);
- the crossover: per seed, L(t_f) = a + b sigma_W^2 fitted in relative error over the columns
  that did not diverge; sigma_x = sqrt(a / b), mean and SE over seeds;
- memory: the normalised overlap against relu's erased level 1/pi, and the correlation c it
  implies (dysonsgd.theory.relu.overlap_correlation).

Writes docs/figures/beyond/relu_{diagram,scaling}.{png,pdf} and relu_diagram.json. Run from
the repository root::

    .venv/bin/python docs/studies/relu_diagram.py           # ~2 min on 2 shared cores
    .venv/bin/python docs/studies/relu_diagram.py --quick   # a smoke run (4 seeds, 10 epochs)
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
from dysonsgd.measure import observables as ob
from dysonsgd.model import network
from dysonsgd.plots.figures import G_RANGE, LOSS_RANGE, grid_heatmap, rate_range, save_figure
from dysonsgd.runs.config import find_config, load_config
from dysonsgd.runs.sweep import train_grid
from dysonsgd.theory import boundaries, relu
from dysonsgd.train import train_ensemble

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "figures" / "beyond"
CONFIG = ROOT / "validation" / "relu-small.toml"
THRESHOLD = 100.0  # the release's divergence threshold (the config's default)
SCALING_SIGMA_W = (2.0, 4.0, 8.0, 16.0)
CONTROL_SIGMA_W = (16.0, 64.0, 256.0)


def observe(res) -> dict[str, np.ndarray]:
    """Per-model observables (nT, nS, nR), NaN for diverged models except the initial loss."""
    s = phase_summary(res)
    x = ob.test_inputs(128, res.config.widths[0], 42)
    w1 = res.teacher()[0]
    act = res.config.activation
    phi_f = network.features(x, w1, res.w2[..., -1, :, :], act)
    phi_0 = network.features(x, w1, res.w2[..., 0, :, :], act)
    with np.errstate(invalid="ignore", divide="ignore"):
        overlap = (np.mean(phi_f * phi_0, axis=(-2, -1))
                   / np.sqrt(np.mean(phi_f**2, axis=(-2, -1)) * np.mean(phi_0**2, axis=(-2, -1))))
    dead = np.mean(np.all(phi_f == 0.0, axis=-2), axis=-1)
    dead_0 = np.mean(np.all(phi_0 == 0.0, axis=-2), axis=-1)
    div = s["diverged"]
    losses = np.stack([ob.result_test_loss(res, k, x, convention="paper")
                       for k in range(len(res.snapshot_epochs))], axis=-1)
    out = {"test_loss": s["test_loss"], "raw_overlap": s["feature_correlation"],
           "overlap": overlap, "alignment": s["alignment"], "rate": s["rate"], "dead": dead,
           "loss_t": losses}
    out = {k: np.where(div if v.ndim == 3 else div[..., None], np.nan, v) for k, v in out.items()}
    out["initial_loss"] = np.asarray(res.loss[..., 0], float)  # full training data, (2.6)
    out["dead_initial"] = dead_0
    out["diverged"] = div
    out["diverged_epoch"] = np.asarray(res.diverged_epoch)
    return out


def cell_median(v: np.ndarray, diverged: np.ndarray) -> np.ndarray:
    """Median over seeds, NaN where at least half the models diverged (as the phase rule)."""
    with np.errstate(all="ignore"):
        med = np.nanmedian(v, axis=-1)
    return np.where(diverged.mean(axis=-1) >= 0.5, np.nan, med)


def slope_per_seed(loss: np.ndarray, sigma_w: np.ndarray) -> np.ndarray:
    """Least-squares slope of log L on log sigma_W per seed; loss (nS', nR)."""
    ls = np.log(np.asarray(sigma_w, float))
    out = []
    for r in range(loss.shape[1]):
        y = np.log(loss[:, r])
        out.append(np.polyfit(ls, y, 1)[0] if np.all(np.isfinite(y)) else np.nan)
    return np.array(out)


def crossover_per_seed(loss: np.ndarray, sigma_w: np.ndarray) -> np.ndarray:
    """sigma_x = sqrt(a / b) of L = a + b sigma_W^2, least squares in relative error."""
    s2 = np.asarray(sigma_w, float) ** 2
    out = []
    for r in range(loss.shape[1]):
        ok = np.isfinite(loss[:, r])
        if ok.sum() < 3:
            out.append(np.nan)
            continue
        design = np.stack([np.ones(ok.sum()), s2[ok]], axis=1) / loss[ok, r][:, None]
        (a, b), *_ = np.linalg.lstsq(design, np.ones(ok.sum()), rcond=None)
        out.append(math.sqrt(a / b) if a > 0 and b > 0 else np.nan)
    return np.array(out)


def half_divergence_crossing(diverged: np.ndarray, inv_sigma_w: np.ndarray) -> float:
    """log2(1/sigma_W) where the diverged fraction (per column, one T) crosses 1/2."""
    order = np.argsort(inv_sigma_w)
    lv = np.log2(inv_sigma_w[order])
    f = diverged.mean(axis=-1)[order]
    for j in range(len(f) - 1):
        if f[j] >= 0.5 > f[j + 1]:
            return float(lv[j] + (f[j] - 0.5) / (f[j] - f[j + 1]) * (lv[j + 1] - lv[j]))
    return math.nan


def analyse(obs: dict, res_by: dict, control) -> dict:
    r = obs["relu"]
    temps = np.asarray(res_by["relu"].temperature, float)
    sw = np.asarray(res_by["relu"].sigma_w, float)
    inv = 1.0 / sw
    i0 = int(np.argmin(temps))  # T = 2^-5
    out: dict = {"temperature": temps.tolist(), "inv_sigma_w": inv.tolist()}
    # expected initial loss, column by column (one T row: the initial state does not depend on T)
    col = []
    for j, s in enumerate(sw):
        m = mean_se(r["initial_loss"][i0, j])
        pred = float(relu.initial_loss(s))
        col.append({"inv_sigma_w": float(inv[j]), "measured": m, "predicted": pred,
                    "z": (m["mean"] - pred) / m["se"]})
    out["initial_loss"] = col
    out["initial_loss_note"] = ("columns share each seed's teacher and W2(0) direction (common "
                                "random numbers): their z values are not independent")
    # divergence at T = 2^-5
    above = r["initial_loss"][i0] > THRESHOLD
    div = r["diverged"][i0]
    out["divergence"] = {
        "threshold": THRESHOLD, "predicted_inv_sigma_w": relu.divergence_line(THRESHOLD),
        "table": {"above_and_diverged": int((above & div).sum()),
                  "above_not_diverged": int((above & ~div).sum()),
                  "below_and_diverged": int((~above & div).sum()),
                  "below_not_diverged": int((~above & ~div).sum())},
        "diverged_in_epoch_0_given_above": float(np.mean(obs["relu"]["diverged_epoch"][i0][above]
                                                         == 0)) if above.any() else math.nan,
        "fraction_by_column": [{"inv_sigma_w": float(inv[j]),
                                "diverged": float(div[j].mean()),
                                "se": float(math.sqrt(div[j].mean() * (1 - div[j].mean())
                                                      / div.shape[-1])),
                                "initial_loss_above": float(above[j].mean())}
                               for j in range(len(sw))],
        "half_crossing_inv_sigma_w": 2.0 ** half_divergence_crossing(div, inv),
    }
    # bootstrap over seeds (independent) for the crossing
    rng = np.random.default_rng(0)
    boot = [half_divergence_crossing(div[:, rng.integers(0, div.shape[-1], div.shape[-1])], inv)
            for _ in range(2000)]
    boot = np.array(boot)
    out["divergence"]["half_crossing_log2_se"] = float(np.nanstd(boot, ddof=1))
    out["divergence"]["divergence_by_temperature"] = [
        {"temperature": float(t), "half_crossing_inv_sigma_w":
         2.0 ** half_divergence_crossing(r["diverged"][i], inv)} for i, t in enumerate(temps)]
    # scaling exponent, T = 2^-5, per seed: over sigma_W = 2 .. 16 (the grid) and over
    # sigma_W = 16, 64, 256 (relu's 64 and 256 from the control, whose models are the grid's
    # seeds: the same teacher and W2(0) direction; a model that does not diverge trains the same
    # under either threshold)
    cols = [int(np.argmin(np.abs(sw - s))) for s in SCALING_SIGMA_W]
    out["scaling_slope"] = {}
    for act in ("relu", "tanh"):
        lf = obs[act]["test_loss"][i0][cols]
        out["scaling_slope"][f"{act} sigma_W 2..16"] = mean_se(slope_per_seed(lf, sw[cols]))
    big = np.array(CONTROL_SIGMA_W)
    tanh_big = obs["tanh"]["test_loss"][i0][[int(np.argmin(np.abs(sw - v))) for v in big]]
    out["scaling_slope"]["tanh sigma_W 16..256"] = mean_se(slope_per_seed(tanh_big, big))
    if control is not None:
        c_obs, c_res = control
        out["scaling_slope"]["relu sigma_W 16..256 (threshold 1e12)"] = mean_se(
            slope_per_seed(c_obs["test_loss"][0], big))
        # the grid's sigma_W = 16 models that did not diverge are the control's, bit for bit
        j16 = int(np.argmin(np.abs(sw - 16.0)))
        kept = ~r["diverged"][i0, j16]
        same = np.array_equal(res_by["relu"].w2[i0, j16][kept], c_res.w2[0, 0][kept])
        out["control_equals_grid_where_not_diverged"] = bool(same)
    out["crossover_sigma_w"] = mean_se(crossover_per_seed(r["test_loss"][i0], sw))
    # L(t) / sigma_W^2 at t_f: collapse across sigma_W = 2 .. 16 and the control
    epochs = np.asarray(res_by["relu"].snapshot_epochs)
    out["collapse"] = {"epochs": epochs.tolist(), "log10_loss_over_sigma2": {}}
    for j in cols:
        per_seed = np.log10(r["loss_t"][i0, j] / sw[j] ** 2)  # (nR, n_snap)
        out["collapse"]["log10_loss_over_sigma2"][f"{sw[j]:g}"] = [
            mean_se(per_seed[:, k]) for k in range(len(epochs))]
    if control is not None:
        c_obs, c_res = control
        for j, s in enumerate(c_res.sigma_w):
            per_seed = np.log10(c_obs["loss_t"][0, j] / s**2)
            out["collapse"]["log10_loss_over_sigma2"][f"{s:g} (threshold 1e12)"] = [
                mean_se(per_seed[:, k]) for k in range(len(epochs))]
        out["control_diverged"] = c_obs["diverged"].mean(axis=-1).tolist()
    # memory: normalised overlap and dead units, selected cells
    cells = {}
    for t in (temps.min(), 0.25, 1.0):
        i = int(np.argmin(np.abs(temps - t)))
        for s_inv in (8.0, 1.0, 2.0**-4, 2.0**-8):
            j = int(np.argmin(np.abs(inv - s_inv)))
            key = f"T={temps[i]:g}, 1/sigma_W={inv[j]:g}"
            cells[key] = {}
            for act in ("relu", "tanh"):
                o = obs[act]
                ov = mean_se(o["overlap"][i, j])
                cells[key][act] = {
                    "log10_test_loss": mean_se(np.log10(o["test_loss"][i, j])),
                    "overlap": ov, "raw_overlap": mean_se(o["raw_overlap"][i, j]),
                    "alignment": mean_se(o["alignment"][i, j]),
                    "rate": mean_se(o["rate"][i, j]), "dead": mean_se(o["dead"][i, j]),
                    "diverged": float(o["diverged"][i, j].mean()),
                }
                if act == "relu" and np.isfinite(ov["mean"]):
                    cells[key][act]["implied_correlation"] = float(
                        relu.overlap_correlation(min(max(ov["mean"], 0.0), 1.0)))
    out["cells"] = cells
    out["erased_overlap"] = relu.ERASED_OVERLAP
    # dead units at t = 0: scale-free, so one cell holds every seed's value
    out["dead_at_init"] = mean_se(r["dead_initial"][i0, -1])
    return out


def diagram_figure(obs, res_by) -> Figure:
    fig = Figure(figsize=(20, 8.5), layout="constrained")
    axes = fig.subplots(2, 4)
    sb = boundaries.symmetry_breaking_line()
    for row, act in enumerate(("relu", "tanh")):
        o, res = obs[act], res_by[act]
        t, s = np.asarray(res.temperature), np.asarray(res.sigma_w)
        epochs = res.snapshot_epochs[-1]
        panels = [(o["test_loss"], colors.LogNorm(*LOSS_RANGE), "final test loss (2.6)"),
                  (o["overlap"], colors.Normalize(*G_RANGE),
                   r"$G(t_f,0)/\sqrt{G(t_f,t_f)G(0,0)}$"),
                  (o["alignment"], colors.Normalize(0.0, 0.45), "alignment (3.5)"),
                  (o["rate"], colors.Normalize(*rate_range(epochs)),
                   r"$\bar\lambda(t_f)$ per epoch")]
        for ax, (v, norm, label) in zip(axes[row], panels, strict=True):
            grid_heatmap(ax, cell_median(v, o["diverged"]), t, s, norm, label)
            ax.set_facecolor("lightgrey")
            ax.set_title(f"{act}: {label}", fontsize=9)
            if act == "relu":
                ax.axvline(math.log2(relu.divergence_line(THRESHOLD)), color="red", ls="--",
                           lw=1.5, label="E[L(0)] = threshold (divergence)")
                ax.axvline(0.0, color="white", ls=":", lw=1.5,
                           label=r"$\sigma_W = 1$: initial output = teacher's")
            else:
                ax.axvline(math.log2(sb.inv_sigma_w["paper"]), color="white", ls="--", lw=1.2,
                           label="symmetry breaking (paper)")
                ax.axvline(math.log2(sb.inv_sigma_w["input_average"]), color="white", ls=":",
                           lw=1.2, label="symmetry breaking (refined)")
        axes[row, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle("grey cells: at least half the models diverged (the release's rule); medians "
                 "over 16 seeds, 50 epochs", fontsize=10)
    return fig


def scaling_figure(obs, res_by, control, numbers) -> Figure:
    fig = Figure(figsize=(17, 4.6), layout="constrained")
    a, b, c = fig.subplots(1, 3)
    res = res_by["relu"]
    sw = np.asarray(res.sigma_w)
    temps = np.asarray(res.temperature)
    i0 = int(np.argmin(temps))
    epochs = np.asarray(res.snapshot_epochs)
    cmap = colors.LinearSegmentedColormap.from_list("s", ["tab:blue", "tab:red"])
    for k, s in enumerate(SCALING_SIGMA_W):
        j = int(np.argmin(np.abs(sw - s)))
        col = cmap(k / (len(SCALING_SIGMA_W) - 1))
        with np.errstate(all="ignore"):
            a.plot(epochs[1:], np.nanmedian(obs["relu"]["loss_t"][i0, j], 0)[1:] / s**2, "o-",
                   ms=3, color=col, label=rf"relu $\sigma_W = {s:g}$")
    if control is not None:
        c_obs, c_res = control
        for j, s in enumerate(c_res.sigma_w):
            with np.errstate(all="ignore"):
                a.plot(epochs[1:], np.nanmedian(c_obs["loss_t"][0, j], 0)[1:] / s**2, "k:",
                       marker="s", ms=3, label=rf"relu $\sigma_W = {s:g}$, threshold 1e12")
    a.set(xscale="log", yscale="log", xlabel="epochs", ylabel=r"median $L(t) / \sigma_W^2$",
          title=rf"$T = {temps[i0]:g}$: $L \approx \sigma_W^2\,\ell(t)$ for relu")
    a.legend(fontsize=6, ncol=2)
    for act, style in (("relu", "o-"), ("tanh", "s--")):
        with np.errstate(all="ignore"):
            med = np.nanmedian(obs[act]["test_loss"][i0], axis=-1)
        med = np.where(obs[act]["diverged"][i0].mean(-1) >= 0.5, np.nan, med)
        b.plot(sw, med, style, ms=4, label=act)
    if control is not None:
        with np.errstate(all="ignore"):
            b.plot(control[1].sigma_w, np.nanmedian(control[0]["test_loss"][0], axis=-1), "ko",
                   mfc="none", label="relu, threshold 1e12")
    guide = np.array([2.0, 256.0])
    if control is not None:  # through the control's sigma_W = 64, where the law is asymptotic
        with np.errstate(all="ignore"):
            base = np.nanmedian(control[0]["test_loss"][0, 1]) / control[1].sigma_w[1] ** 2
        b.plot(guide, base * guide**2, "k:", label=r"$\propto \sigma_W^2$")
    b.axvline(1.0 / relu.divergence_line(THRESHOLD), color="red", ls="--",
              label="divergence line (relu)")
    b.set(xscale="log", yscale="log", xlabel=r"$\sigma_W$", ylabel="median final test loss",
          title=rf"$T = {temps[i0]:g}$, {int(epochs[-1])} epochs")
    b.legend(fontsize=7)
    d = numbers["divergence"]["fraction_by_column"]
    inv = np.array([e["inv_sigma_w"] for e in d])
    c.errorbar(inv, [e["diverged"] for e in d], yerr=[e["se"] for e in d], fmt="o-", ms=4,
               label="diverged (SE over seeds)")
    c.plot(inv, [e["initial_loss_above"] for e in d], "s:", ms=4,
           label=r"initial loss $>$ threshold")
    c.axvline(relu.divergence_line(THRESHOLD), color="red", ls="--",
              label=r"$E[L(0)]$ = threshold")
    c.set(xscale="log", xlabel=r"$1/\sigma_W$", ylabel="fraction of models",
          title=rf"relu, $T = {temps[i0]:g}$")
    c.set_xscale("log", base=2)
    c.legend(fontsize=7)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 seeds, 10 epochs (smoke run)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cfg = load_config(find_config(str(CONFIG)))
    if args.quick:
        cfg = dataclasses.replace(cfg, seeds=4, epochs=10, snapshots=3)
    res_by, obs, timings = {}, {}, {}
    for act in ("relu", "tanh"):
        c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, activation=act))
        t0 = time.perf_counter()
        res_by[act] = train_grid(c)
        timings[f"train_{act}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        obs[act] = observe(res_by[act])
        timings[f"observe_{act}_s"] = time.perf_counter() - t0
        print(f"{act}: trained in {timings[f'train_{act}_s']:.1f} s", flush=True)
    t0 = time.perf_counter()
    model = dataclasses.replace(cfg.model, activation="relu", divergence_threshold=1e12)
    c_res = train_ensemble(model, temperature=min(cfg.temperature),
                           sigma_w=list(CONTROL_SIGMA_W), n_seeds=cfg.seeds, epochs=cfg.epochs,
                           snapshots=cfg.snapshots, seed=cfg.seed, dtype=cfg.dtype,
                           progress=False)
    control = (observe(c_res), c_res)
    timings["control_s"] = time.perf_counter() - t0
    numbers = analyse(obs, res_by, control)
    numbers["timings"] = timings
    numbers["scale"] = {"seeds": cfg.seeds, "epochs": cfg.epochs, "widths": cfg.model.widths,
                        "n_data": cfg.model.n_data, "batch_size": cfg.model.batch_size,
                        "dtype": cfg.dtype, "model_steps_per_activation":
                        len(cfg.temperature) * len(cfg.sigma_w) * cfg.seeds * cfg.epochs
                        * cfg.model.n_data // cfg.model.batch_size}
    args.out.mkdir(parents=True, exist_ok=True)
    save_figure(diagram_figure(obs, res_by), args.out, "relu_diagram")
    save_figure(scaling_figure(obs, res_by, control, numbers), args.out, "relu_scaling")
    (args.out / "relu_diagram.json").write_text(json.dumps(numbers, indent=1, default=float))
    print(json.dumps({k: numbers[k] for k in ("scaling_slope", "crossover_sigma_w", "divergence",
                                                "timings")}, indent=1, default=float))


if __name__ == "__main__":
    main()
