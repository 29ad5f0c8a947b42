"""Issue 17 item 5: the paper's training length, t = 1e5 epochs (1e8 SGD steps per model).

Reads the sweep stores of ``validation/replication.toml`` (T = 2^-5, 4, 64 at 1/sigma_W = 8,
the figure-6 ordered and high-temperature points and footnote 5's cell) and
``validation/replication-jamming.toml`` (T = 2^-5, 1/sigma_W = 2^-8, figure 6's jamming point),
20 seeds each, and compares them with the numbers the paper prints (reference notes, "Numbers to
check against"):

- the final mean test loss of the ordered corner, ~1e-7 (the release's convention of figure 2:
  the mean over the 128 test inputs of (y_teacher - y_student)^2, no factor 1/2);
- footnote 5 (T = 64, 1/sigma_W = 8): (n2 - 1) S(0) ~ 0.04, (n2 - 1) S(t_f) ~ 1e6 and the
  time-averaged rate (4.7) lambda-bar(t_f) ~ 2e-4 per epoch.

(n2 - 1) S is the width of the spectrum x_N - x_1 of X = W2 W2^T (S the mean level spacing).
Every number is a mean over the 20 independent seeds of a cell with its standard error, and the
per-seed median and range (the seeds are independent replicas; cells of one seed share its
draws, so nothing is pooled across cells). The paper gives orders of magnitude ("~"), so the
comparison is on log10: a value matches when its log10 is within 0.5 of the paper's (a factor
sqrt(10) either way), the margin declared before the run.

Train (about 40 min of 2 cores for the first, 15 for the second) and report::

    dysonsgd sweep validation/replication.toml --out replication.zarr
    dysonsgd sweep validation/replication-jamming.toml --out replication-jamming.zarr
    .venv/bin/python docs/studies/replication.py replication.zarr replication-jamming.zarr

Writes docs/figures/replication/replication.{png,pdf} and replication.json.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dysonsgd.analysis.phase import phase_summary
from dysonsgd.measure.spectrum import eigenvalues, mean_level_spacing
from dysonsgd.plots.figures import save_figure
from dysonsgd.runs.store import load_sweep, store_attrs

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "figures" / "replication"

#: the paper's printed numbers (reference notes) and the declared log10 margin
PAPER = {"ordered_loss": 1e-7, "spread_0": 0.04, "spread_tf": 1e6, "rate": 2e-4}
LOG10_MARGIN = 0.5


def summary(values) -> dict:
    """Mean, SE, median, min, max and count of the finite per-seed values of one cell."""
    v = np.asarray(values, float)
    n_all = v.size
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "n_all": n_all}
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return {"mean": float(v.mean()), "se": se, "median": float(np.median(v)),
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size), "n_all": n_all}


def cells(store: Path) -> list[dict]:
    """Per cell of one store: the per-seed observables and their summaries."""
    res = load_sweep(store, partial=False)
    s = phase_summary(res)
    n2 = res.w2.shape[-2]
    x = eigenvalues(res.w2)                          # (nT, nS, nR, n_snap, n2)
    spread = (n2 - 1) * mean_level_spacing(x)        # x_N - x_1, (nT, nS, nR, n_snap)
    out = []
    for i, t in enumerate(s["temperature"]):
        for j, inv in enumerate(s["inv_sigma_w"]):
            div = s["diverged"][i, j]
            keep = ~div

            def live(a, keep=keep):
                return np.where(keep, a, np.nan)

            out.append({
                "temperature": float(t), "inv_sigma_w": float(inv),
                "seeds": int(div.size), "diverged": int(div.sum()),
                "epochs": int(s["epochs"][-1]),
                "test_loss_release": summary(live(s["test_loss_release"][i, j])),
                "training_loss": summary(live(res.loss[i, j, :, -1])),
                "spread_0": summary(spread[i, j, :, 0]),
                "spread_tf": summary(live(spread[i, j, :, -1])),
                "rate": summary(live(s["rate"][i, j])),
                "spread_series": np.nanmean(np.where(keep[:, None], spread[i, j], np.nan),
                                            axis=0).tolist(),
                "snapshot_epochs": [int(e) for e in s["epochs"]],
            })
    return out


def matches(value: float, paper: float) -> bool:
    """``|log10(value / paper)| <= LOG10_MARGIN`` (the declared order-of-magnitude margin)."""
    return bool(value > 0 and abs(math.log10(value / paper)) <= LOG10_MARGIN)


def compare(all_cells: list[dict]) -> list[dict]:
    """The paper's four numbers against the measured cell means."""
    def cell(t, inv):
        return next(c for c in all_cells if c["temperature"] == t and c["inv_sigma_w"] == inv)

    ordered, hot = cell(2.0**-5, 8.0), cell(64.0, 8.0)
    rows = [("final mean test loss, ordered corner (T = 2^-5, 1/sigma_W = 8)",
             ordered["test_loss_release"]["mean"], PAPER["ordered_loss"]),
            ("(n2 - 1) S(0), T = 64, 1/sigma_W = 8", hot["spread_0"]["mean"], PAPER["spread_0"]),
            ("(n2 - 1) S(t_f), T = 64, 1/sigma_W = 8", hot["spread_tf"]["mean"],
             PAPER["spread_tf"]),
            ("rate (4.7) per epoch, T = 64, 1/sigma_W = 8", hot["rate"]["mean"], PAPER["rate"])]
    return [{"quantity": q, "measured": m, "paper": p, "log10_ratio": math.log10(m / p),
             "matches": matches(m, p)} for q, m, p in rows]


def figure(all_cells: list[dict]) -> Figure:
    """Mean spectrum width (n2 - 1) S against epochs, one line per cell."""
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for c in all_cells:
        e = np.asarray(c["snapshot_epochs"], float)
        y = np.asarray(c["spread_series"], float)
        ax.plot(np.maximum(e, 1.0), y, marker="o", ms=3,
                label=f"T = {c['temperature']:g}, 1/sigma_W = {c['inv_sigma_w']:g}")
    ax.set(xscale="log", yscale="log", xlabel="epochs (t = 0 drawn at 1)",
           ylabel="(n2 - 1) S = x_N - x_1", title="spectrum width, 1e5 epochs, 20 seeds")
    ax.legend(fontsize=8)
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stores", nargs="+", type=Path)
    args = p.parse_args(argv)
    all_cells, provenance = [], []
    for store in args.stores:
        all_cells += cells(store)
        provenance.append({"store": str(store), "attrs": {
            k: v for k, v in store_attrs(store).items() if isinstance(v, (str, int, float))}})
    result = {"cells": all_cells, "comparison": compare(all_cells),
              "log10_margin": LOG10_MARGIN, "stores": provenance}
    OUT.mkdir(parents=True, exist_ok=True)
    save_figure(figure(all_cells), OUT, "replication")
    (OUT / "replication.json").write_text(json.dumps(result, indent=1))
    for row in result["comparison"]:
        print(f"{row['quantity']}: measured {row['measured']:.3g}, paper {row['paper']:.3g}, "
              f"log10 ratio {row['log10_ratio']:+.2f}, {'matches' if row['matches'] else 'MISS'}")
    for c in all_cells:
        print(f"T = {c['temperature']:g}, 1/sigma_W = {c['inv_sigma_w']:g}: diverged "
              f"{c['diverged']}/{c['seeds']}, test loss {c['test_loss_release'].get('mean')}, "
              f"spread {c['spread_0'].get('mean')} -> {c['spread_tf'].get('mean')}, "
              f"rate {c['rate'].get('mean')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
