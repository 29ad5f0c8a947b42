"""The all-layer study of issue 16: W1, W2 and W3 trained against W2 alone.

Reads the two sweep stores of validation/all-layers.toml (all three matrices trained) and
validation/all-layers-w2only.toml (W2 alone, the paper's case): the same 8 x 8 (T, 1/sigma_W)
grid, 16 seeds, 200 epochs, float32, the same seeds, teachers, inputs and initial student (W2(0)
from the grid, W1(0) and W3(0) the teacher's). So model r of a cell in one store is paired with
model r of the same cell in the other: they differ only in whether W1 and W3 train.

Measured per model on the release's 128 test inputs (dysonsgd.analysis.phase.phase_summary,
which reads the student's W1 and W3 where they train): the final test loss (2.6), G(t_f, 0)
(3.4), the alignment (3.5) (h (2.25) with the student's readout W3) and the rate (4.7) of W2's
spectrum; per layer l the eigenvalues of X_l = W_l W_l^T (dysonsgd.measure.spectrum.
layer_eigenvalues: the min(n_l, n_{l-1}) squared singular values: 3 for W1, 16 for W2, 1 for
W3), the mean level spacing S_l (4.5) (W3: its single level ||W3||^2) and the relative
displacement ||W_l(t_f) - W_l(0)||_F / ||W_l(0)||_F.

Divergence: per model, the readout bound lr lambda_max(E[phi phi^T]) > 2 (the Hessian block of
the loss in W3 is E[phi phi^T] exactly; a principal block bounds the Hessian from below) at t = 0,
and on the paired W2-alone model's features at every snapshot (what the noise does to W2 when W3
does not train), against the all-layer model's divergence; and a control at T = 1/2 with no
divergence threshold.

Statistics: seeds are independent models; every number is a mean +- standard error over the 16
seeds of one cell, of a per-seed quantity (a paired difference is taken per seed first), never
pooling two cells of one seed. Diverged models are left out (the count is given).

Writes docs/figures/beyond/all_layers_{diagram,spectra,spacing}.{png,pdf} and
all_layers.json. Run from the repository root after the two sweeps::

    nice -n 10 .venv/bin/dysonsgd sweep validation/all-layers.toml --out all-layers.zarr
    nice -n 10 .venv/bin/dysonsgd sweep validation/all-layers-w2only.toml \\
        --out all-layers-w2only.zarr
    nice -n 10 .venv/bin/python docs/studies/all_layers.py --all all-layers.zarr \\
        --w2 all-layers-w2only.zarr
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from dysonsgd.analysis.describe import mean_se
from dysonsgd.analysis.phase import PhaseThresholds, classify_summary, phase_summary
from dysonsgd.measure import observables as ob
from dysonsgd.measure.spectrum import layer_eigenvalues, mean_level_spacing
from dysonsgd.model import network
from dysonsgd.plots.figures import save_figure
from dysonsgd.plots.layers import diagram_comparison, layer_spacing, layer_spectra
from dysonsgd.plots.paper import figure6_cells
from dysonsgd.runs.config import find_config, load_config
from dysonsgd.runs.files import load_result
from dysonsgd.train import train_ensemble

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "figures" / "beyond"
RUNS = ("all layers", "W2 only")
KEYS = ("test_loss", "feature_correlation", "alignment", "rate")
#: cells reported in the table beyond figure 6's three: the transition row and the boundary
EXTRA_CELLS = ((0.5, 8.0), (2.0, 8.0), (2.0**-5, 1.0), (2.0**-5, 0.25))


def observe(res) -> dict[str, np.ndarray]:
    """Per-model observables (nT, nS, nR), NaN where the model diverged."""
    s = phase_summary(res)
    div = s["diverged"]
    out = {k: np.where(div, np.nan, s[k]) for k in KEYS}
    out["log10_test_loss"] = np.log10(out["test_loss"])
    out["diverged"] = div
    out["labels"] = classify_summary(s, PhaseThresholds.for_activation("tanh"))
    return out


def layer_series(res) -> dict[int, dict[str, np.ndarray]]:
    """Per layer: eigenvalues (nT, nS, nR, n_snap, k), log10 S_l(t)/S_l(0), displacement."""
    out = {}
    for k, w in enumerate(_student_series(res), start=1):
        eig = layer_eigenvalues(w)
        level = eig[..., 0] if eig.shape[-1] == 1 else mean_level_spacing(eig, assume_sorted=True)
        w0 = w[..., :1, :, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k] = {"eigenvalues": eig,
                      "log10_spacing_ratio": np.log10(level / level[..., :1]),
                      "displacement": (np.linalg.norm(w - w0, axis=(-2, -1))
                                       / np.linalg.norm(w0, axis=(-2, -1))),
                      "teacher": layer_eigenvalues(res.teacher_matrices()[k - 1])}
    return out


def _student_series(res) -> tuple[np.ndarray, ...]:
    """Every layer's snapshots, (nT, nS, nR, n_snap, n_l, n_{l-1}), float64 (the teacher's,
    repeated, where a layer is not recorded)."""
    n_snap = len(res.snapshot_epochs)
    teacher = res.teacher_matrices()
    out = []
    for k in range(1, res.config.n_layers + 1):
        if k == 2 or k in res.layer_w:
            w = res.snapshots(k)[0]
        else:
            w = np.repeat(teacher[k - 1][..., None, :, :], n_snap, axis=-3)
        out.append(np.asarray(w, float))
    return tuple(out)


def cell_index(res, t: float, inv: float) -> tuple[int, int]:
    i = int(np.argmin(np.abs(np.log2(res.temperature) - math.log2(t))))
    j = int(np.argmin(np.abs(np.log2(1.0 / res.sigma_w) - math.log2(inv))))
    return i, j


def cell_median(v: np.ndarray, diverged: np.ndarray) -> np.ndarray:
    """Median over seeds, NaN where at least half the models diverged (as the phase rule)."""
    with np.errstate(all="ignore"):
        med = np.nanmedian(v, axis=-1)
    return np.where(diverged.mean(axis=-1) >= 0.5, np.nan, med)


def analyse(res_by, obs, lay) -> dict:
    a, b = (obs[r] for r in RUNS)
    res = res_by[RUNS[0]]
    out: dict = {"temperature": res.temperature.tolist(),
                 "inv_sigma_w": (1.0 / res.sigma_w).tolist(),
                 "epochs": float(res.snapshot_epochs[-1])}
    # phases per cell
    labels = {r: obs[r]["labels"] for r in RUNS}
    out["phases"] = {r: labels[r].tolist() for r in RUNS}
    out["phase_counts"] = {r: {p: int((labels[r] == p).sum())
                               for p in ("ordered", "high-temperature", "jamming", "diverged")}
                           for r in RUNS}
    changed = np.argwhere(labels[RUNS[0]] != labels[RUNS[1]])
    out["phase_changes"] = [{"temperature": float(res.temperature[i]),
                             "inv_sigma_w": float(1.0 / res.sigma_w[j]),
                             RUNS[0]: str(labels[RUNS[0]][i, j]),
                             RUNS[1]: str(labels[RUNS[1]][i, j])} for i, j in changed]
    out["diverged_fraction"] = {r: obs[r]["diverged"].mean(axis=-1).tolist() for r in RUNS}
    # cells: figure 6's three and a few more
    cells = [(c["temperature"], c["inv_sigma_w"], c["name"]) for c in figure6_cells(res)]
    cells += [(t, v, "") for t, v in EXTRA_CELLS]
    table = {}
    keys = ("log10_test_loss", "feature_correlation", "alignment", "rate")
    for t, v, name in cells:
        i, j = cell_index(res, t, v)
        key = f"T={res.temperature[i]:g}, 1/sigma_W={1.0 / res.sigma_w[j]:g}"
        entry: dict = {"name": name}
        for k in keys:
            entry[k] = {r: mean_se(obs[r][k][i, j]) for r in RUNS}
            entry[k]["difference"] = mean_se(a[k][i, j] - b[k][i, j])  # paired by seed
        entry["diverged"] = {r: int(obs[r]["diverged"][i, j].sum()) for r in RUNS}
        entry["layers"] = {}
        for layer in (1, 2, 3):
            entry["layers"][f"W{layer}"] = {}
            for r in RUNS:
                d = lay[r][layer]
                keep = ~obs[r]["diverged"][i, j]
                entry["layers"][f"W{layer}"][r] = {
                    "log10_spacing_ratio_tf": mean_se(d["log10_spacing_ratio"][i, j, keep, -1]),
                    "rate_per_epoch": mean_se(d["log10_spacing_ratio"][i, j, keep, -1]
                                              * math.log(10) / out["epochs"]),
                    "displacement_tf": mean_se(d["displacement"][i, j, keep, -1]),
                    "relative_distance_to_teacher_tf": mean_se(
                        np.linalg.norm(d["eigenvalues"][i, j, keep, -1] - d["teacher"][i, j, keep],
                                       axis=-1)
                        / np.linalg.norm(d["teacher"][i, j, keep], axis=-1)),
                }
        table[key] = entry
    out["cells"] = table
    # diagram-wide, per seed: the mean over the cells with no divergence in either run of the
    # paired difference of log10 test loss, then mean +- SE over seeds
    ok = ~(a["diverged"] | b["diverged"]).any(axis=-1)  # (nT, nS) cells without divergence
    per_seed = np.nanmean((a["log10_test_loss"] - b["log10_test_loss"])[ok], axis=0)
    out["diagram_mean_log10_loss_difference"] = mean_se(per_seed)
    out["cells_without_divergence"] = int(ok.sum())
    return out


def readout_curvature_along(res) -> np.ndarray:
    """lambda_max(E[phi phi^T]) at every snapshot, (nT, nS, nR, n_snap) (as below, any time)."""
    x = ob.test_inputs(128, res.config.widths[0], 42)
    teacher_w1 = res.teacher()[0]
    out = np.empty(res.w2.shape[:4])
    for i, j in np.ndindex(*res.w2.shape[:2]):  # one cell at a time (memory)
        w1 = np.asarray(teacher_w1[i, j], float)[:, None, :, :]
        phi = network.features(x, w1, np.asarray(res.w2[i, j], float), res.config.activation)
        cov = np.nan_to_num(np.swapaxes(phi, -1, -2) @ phi / phi.shape[-2])
        out[i, j] = np.linalg.eigvalsh(cov)[..., -1]
    return out


def noise_growth_test(res_w2, div_all) -> dict:
    """Would W3 have been stable on the features W2 alone reaches? Per model: the readout bound
    lr max_t lambda_max(E[phi(t) phi(t)^T]) > 2 on the W2-only run's features, against the
    paired all-layer model's divergence."""
    lam = readout_curvature_along(res_w2)  # (nT, nS, nR, n_snap)
    lr = np.asarray(res_w2.learning_rate)[:, None, None]
    at0 = lr * lam[..., 0] > 2.0
    ever = lr * lam.max(axis=-1) > 2.0
    def table(pred):
        return {"predicted_and_diverged": int((pred & div_all).sum()),
                "predicted_not_diverged": int((pred & ~div_all).sum()),
                "not_predicted_and_diverged": int((~pred & div_all).sum()),
                "not_predicted_not_diverged": int((~pred & ~div_all).sum())}
    return {"at_t0": table(at0), "at_any_snapshot_of_w2_alone": table(ever),
            "inv_sigma_w_8_lambda_max_tf_w2_alone_by_temperature": [
                mean_se(lam[i, int(np.argmin(res_w2.sigma_w)), :, -1])
                for i in range(lam.shape[0])]}


def readout_curvature(res) -> np.ndarray:
    """lambda_max of the loss's Hessian block in W3 at t = 0, per model (nT, nS, nR).

    For the one linear output, d^2 L / dW3^2 = E[phi phi^T] exactly (phi the last hidden
    features (2.5)), here on the release's 128 test inputs (the training inputs are Gaussian
    too). A principal block bounds the whole Hessian's largest eigenvalue from below, so
    ``lr lambda_max > 2``, i.e. ``T > 1 / (|B| lambda_max / 2)``, makes SGD unstable at t = 0.
    """
    x = ob.test_inputs(128, res.config.widths[0], 42)
    w1, w2, _ = res.student(0)
    phi = network.features(x, w1, w2, res.config.activation)  # (..., P, n2)
    cov = np.swapaxes(phi, -1, -2) @ phi / phi.shape[-2]
    return np.linalg.eigvalsh(cov)[..., -1]


def divergence(res_all, obs_all) -> dict:
    """The all-layer run's divergence against the W3-block stability bound, per model."""
    lam = readout_curvature(res_all)
    lr = np.asarray(res_all.learning_rate)  # (nT,) lr = T |B|
    unstable = lr[:, None, None] * lam > 2.0
    div = obs_all["diverged"]
    epochs = np.asarray(res_all.diverged_epoch)
    t_bound = 2.0 / (res_all.config.batch_size * lam[0])  # (nS, nR): T where lr lambda = 2
    inv = 1.0 / res_all.sigma_w
    temps = np.asarray(res_all.temperature)
    columns = []
    for j in range(len(inv)):
        frac = div[:, j].mean(axis=-1)
        stable = temps[frac < 0.5]
        columns.append({"inv_sigma_w": float(inv[j]),
                        "lambda_max_w3_block": mean_se(lam[0, j]),
                        "bound_temperature": mean_se(t_bound[j]),
                        "largest_T_with_half_surviving": float(stable.max()) if stable.size
                        else math.nan,
                        "diverged_fraction": frac.tolist()})
    return {"table": {"unstable_and_diverged": int((unstable & div).sum()),
                      "unstable_not_diverged": int((unstable & ~div).sum()),
                      "stable_and_diverged": int((~unstable & div).sum()),
                      "stable_not_diverged": int((~unstable & ~div).sum())},
            "diverged_in_epoch_0": float(np.mean(epochs[div] == 0)) if div.any() else math.nan,
            "diverged_epoch_median": float(np.median(epochs[div])) if div.any() else math.nan,
            "columns": columns}


def threshold_control(config_path: Path) -> dict:
    """All layers at T = 1/2 (where every model of the grid stops) with no divergence
    threshold: whether the loss blows up by itself."""
    cfg = load_config(find_config(str(config_path)))
    model = dataclasses.replace(cfg.model, divergence_threshold=math.inf)
    res = train_ensemble(model, temperature=[0.5], sigma_w=[1 / 8.0, 1.0], n_seeds=cfg.seeds,
                         epochs=cfg.epochs, snapshots=cfg.snapshots, seed=cfg.seed,
                         dtype=cfg.dtype, progress=False)
    loss = np.asarray(res.loss, float)
    return {"temperature": 0.5, "inv_sigma_w": [8.0, 1.0],
            "diverged_fraction": res.diverged.mean(axis=-1)[0].tolist(),
            "diverged_epoch_median": [float(np.median(res.diverged_epoch[0, j][res.diverged[0, j]]))
                                      if res.diverged[0, j].any() else math.nan
                                      for j in range(2)],
            "final_loss_finite": np.isfinite(loss[..., -1]).mean(axis=-1)[0].tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", type=Path, default=ROOT / "all-layers.zarr",
                        help="store of validation/all-layers.toml")
    parser.add_argument("--w2", type=Path, default=ROOT / "all-layers-w2only.zarr",
                        help="store of validation/all-layers-w2only.toml")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    t0 = time.perf_counter()
    res_by = {RUNS[0]: load_result(args.all), RUNS[1]: load_result(args.w2)}
    a, b = res_by.values()
    if not (np.array_equal(a.temperature, b.temperature) and np.array_equal(a.sigma_w, b.sigma_w)
            and a.diverged.shape == b.diverged.shape):
        raise SystemExit("the two stores must hold the same grid and seeds")
    if not np.array_equal(a.w2[..., 0, :, :], b.w2[..., 0, :, :]):
        raise SystemExit("the two stores must start from the same W2(0) (same seeds)")
    obs = {r: observe(res) for r, res in res_by.items()}
    lay = {r: layer_series(res) for r, res in res_by.items()}
    t_obs = time.perf_counter() - t0
    numbers = analyse(res_by, obs, lay)
    numbers["observables_s"] = t_obs
    numbers["divergence"] = divergence(a, obs[RUNS[0]])
    numbers["divergence"]["noise_growth"] = noise_growth_test(b, obs[RUNS[0]]["diverged"])
    t0 = time.perf_counter()
    numbers["threshold_control"] = threshold_control(ROOT / "validation" / "all-layers.toml")
    numbers["threshold_control_s"] = time.perf_counter() - t0
    epochs = float(a.snapshot_epochs[-1])
    medians = {r: {k: cell_median(obs[r][k], obs[r]["diverged"]) for k in KEYS} for r in RUNS}
    with np.errstate(all="ignore"):
        diffs = {k: np.nanmean((obs[RUNS[0]]["log10_test_loss"] - obs[RUNS[1]]["log10_test_loss"])
                               if k == "test_loss" else obs[RUNS[0]][k] - obs[RUNS[1]][k],
                               axis=-1) for k in KEYS}
    args.out.mkdir(parents=True, exist_ok=True)
    save_figure(diagram_comparison(medians, a.temperature, a.sigma_w, epochs, diffs), args.out,
                "all_layers_diagram")
    cells = figure6_cells(a)
    titles = [f"{c['name']}: $T = {c['temperature']:g}$, $1/\\sigma_W = {c['inv_sigma_w']:g}$"
              for c in cells]
    spectra, targets = [], []
    for layer in (1, 2, 3):
        spectra.append([{r: lay[r][layer]["eigenvalues"][c["index"]][
            ~obs[r]["diverged"][c["index"]]] for r in RUNS} for c in cells])
        # the teacher's levels of W2 in the ordered cell (figure 6: visible only there)
        targets.append([lay[RUNS[0]][layer]["teacher"][c["index"]]
                        if layer == 2 and k == 0 else None for k, c in enumerate(cells)])
    save_figure(layer_spectra(a.snapshot_epochs, spectra, titles,
                              [r"$W_1^T W_1$ (3 levels)", r"$W_2 W_2^T$ (16 levels)",
                               r"$W_3 W_3^T = \|W_3\|^2$"], targets), args.out,
                "all_layers_spectra")
    series = []
    for c in cells:
        lines = {}
        for layer in (1, 2, 3):
            for r in RUNS:
                if layer != 2 and r == RUNS[1]:
                    continue  # the teacher's throughout: S_l(t) / S_l(0) = 1
                keep = ~obs[r]["diverged"][c["index"]]
                v = lay[r][layer]["log10_spacing_ratio"][c["index"]][keep]
                n = max(int(keep.sum()), 1)
                lines[f"W{layer}, {r}"] = (np.nanmean(v, axis=0),
                                           np.nanstd(v, axis=0, ddof=1) / math.sqrt(n))
        series.append(lines)
    save_figure(layer_spacing(a.snapshot_epochs, series, titles), args.out, "all_layers_spacing")
    (args.out / "all_layers.json").write_text(json.dumps(numbers, indent=1, default=float))
    print(json.dumps({k: numbers[k] for k in ("phase_counts", "diagram_mean_log10_loss_difference",
                                                "divergence", "threshold_control",
                                                "observables_s")}, indent=1, default=float))


if __name__ == "__main__":
    main()
