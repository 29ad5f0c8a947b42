"""Measurement throughput: K, V (4.4), the spacing coefficients and the moments of a whole run.

The run is the paper's 12 x 12 grid x 10 seeds (1,440 models, widths 3-32-16-1, float32) with
21 snapshots, as ``validate paper-small`` measures it (trained here for ``--epochs`` epochs, or
read with ``--run``). Timed, interleaved and best of ``--repeats``:

- ``fused``: :func:`dysonsgd.measure.gradstats.measure_series` at all 21 snapshots (the
  compiled kernel of :mod:`dysonsgd.measure._fused`, eigenvectors by LAPACK, the singular
  system by Jacobi refinement);
- ``baseline``: the numpy algorithm the package used before (per-sample gradients stacked as
  (D, N, M) arrays, numpy means and variances, LAPACK's batched SVD for the singular basis),
  kept below, at ``--baseline-snapshots`` snapshots (it takes ~10 s per snapshot), reported
  per model-snapshot.

Both are compared number by number on the baseline's snapshots (the largest difference of K,
V, U^T V U, K_S, V_S, D_S and the moments, relative to each matrix's largest entry). The load
average and the process CPU time are printed beside the wall times: on a shared 2-core machine
the wall time of one run can be several times its CPU time.

    python benchmarks/measure_throughput.py [--json] [--run RUN] [--epochs 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np

from dysonsgd.measure import gradstats
from dysonsgd.measure.observables import test_inputs
from dysonsgd.measure.spectrum import eigensystem
from dysonsgd.model.network import outputs, per_sample_gradients
from dysonsgd.theory import paper, rmt


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def baseline_snapshot(result, snapshot: int, chunk: int = 256) -> dict[str, np.ndarray]:
    """The numpy measurement of one snapshot as it was before the fused kernel (issue 17)."""
    x = test_inputs(128, result.config.widths[0], 42)
    w1, w2t, w3 = (np.asarray(a, dtype=float) for a in result.teacher())
    w2 = np.asarray(result.w2[..., snapshot, :, :], dtype=float)
    grid = w2.shape[:-2]
    flat = [a.reshape(-1, *a.shape[len(grid):]) for a in (w1, w2t, w3, w2)]
    n, n2 = flat[0].shape[0], w2.shape[-2]
    _, u = eigensystem(w2)
    u = u.reshape(-1, n2, n2)
    out = {k: [] for k in ("k", "v", "v_plain", "variance", "cross", "sigma", "ito")}
    for a in range(0, n, chunk):
        b1, bt, b3, bs = (arr[a:a + chunk] for arr in flat)
        y = outputs(x, b1, bt, b3, result.config.activation, engine="torch")
        grads, _ = per_sample_gradients(x, y, b1, bs, b3, result.config.activation)
        half = np.einsum("...ik,...ajk->...aij", bs, grads)
        dx = half + np.swapaxes(half, -1, -2)
        out["v_plain"].append(dx.var(axis=-3))
        ub = u[a:a + chunk, None]
        dx = np.swapaxes(ub, -1, -2) @ dx @ ub
        out["k"].append(-dx.mean(axis=-3))
        out["v"].append(dx.var(axis=-3))
        # singular-basis moments by LAPACK's SVD
        us, _, vh = np.linalg.svd(bs, full_matrices=False)
        us = np.ascontiguousarray(us[..., ::-1])
        vt = np.ascontiguousarray(np.swapaxes(vh, -1, -2)[..., ::-1])
        h = np.swapaxes(us, -1, -2)[..., None, :, :] @ grads
        h_c = h - h.mean(axis=-3, keepdims=True)
        g_c = h_c @ vt[..., None, :, :]
        diag = np.diagonal(g_c, axis1=-2, axis2=-1)
        out["sigma"].append(np.einsum("...ai,...aj->...ij", diag, diag) / grads.shape[-3])
        out["variance"].append(np.mean(g_c * g_c, axis=-3))
        out["cross"].append(np.mean(g_c * np.swapaxes(g_c, -1, -2), axis=-3))
        out["ito"].append(np.sum(np.mean(h_c * h_c, axis=-3), axis=-1))
    res = {k: np.concatenate(v).reshape(*grid, *v[0].shape[1:]) for k, v in out.items()}
    sym = {k: 0.5 * (res[k] + np.swapaxes(res[k], -1, -2)) for k in ("k", "v", "v_plain")}
    res.update(sym)
    u = u.reshape(*grid, n2, n2)
    res["v_paper"] = np.swapaxes(u, -1, -2) @ res["v_plain"] @ u
    res["k_s"], res["v_s"], res["d_s"] = rmt.spacing_coefficients(res["k"], res["v"])
    return res


def _difference(fused, base) -> dict[str, float]:
    """Largest |fused - baseline| relative to the largest |baseline| of each model's matrix."""
    pairs = {"k": (fused.k, base["k"]), "v": (fused.v, base["v"]),
             "v_paper": (fused.v_paper_rotation, base["v_paper"]),
             "k_s": (fused.k_s, base["k_s"]), "v_s": (fused.v_s, base["v_s"]),
             "d_s": (fused.d_s, base["d_s"]),
             "variance": (fused.moments.variance, base["variance"]),
             "cross": (fused.moments.cross, base["cross"]),
             "diagonal_covariance": (fused.moments.diagonal_covariance, base["sigma"]),
             "ito": (fused.moments.ito, base["ito"])}
    out = {}
    for name, (a, b) in pairs.items():
        axes = tuple(range(3, b.ndim))  # the model's own axes after (nT, nS, nR)
        scale = np.abs(b).max(axis=axes, keepdims=True) if axes else np.abs(b)
        out[name] = float(np.max(np.abs(a - b) / np.maximum(scale, 1e-300)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="K, V and moments of a run: fused vs numpy")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--run", help="a run file or sweep store (default: train one)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the trained run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (best of)")
    parser.add_argument("--baseline-snapshots", type=int, default=2,
                        help="snapshots the numpy baseline measures per repeat")
    args = parser.parse_args(argv)
    if args.run:
        from dysonsgd.runs.files import load_result

        result = load_result(args.run)
    else:
        import torch

        from dysonsgd.train import train_ensemble

        result = train_ensemble(None, paper.PAPER_TEMPERATURES, paper.PAPER_SIGMA_W, n_seeds=10,
                                epochs=args.epochs, snapshots=21, seed=0, dtype=torch.float32,
                                progress=False)
    n_models, n_snap = result.n_models, len(result.snapshot_epochs)
    base_snaps = np.linspace(0, n_snap - 1, args.baseline_snapshots).round().astype(int)
    gradstats.measure_series(result, [0])  # compile or load the kernels
    out: dict = {"models": n_models, "snapshots": n_snap, "cpu_count": os.cpu_count(),
                 "numba_threads": __import__("numba").get_num_threads(),
                 "load_average_start": os.getloadavg()[0], "repeats": []}
    fused = None
    for _ in range(args.repeats):
        rep = {}
        c, t = _cpu(), time.perf_counter()
        fused = gradstats.measure_series(result)
        rep["fused_wall_s"], rep["fused_cpu_s"] = time.perf_counter() - t, _cpu() - c
        c, t = _cpu(), time.perf_counter()
        base = [baseline_snapshot(result, int(s)) for s in base_snaps]
        rep["baseline_wall_s"], rep["baseline_cpu_s"] = time.perf_counter() - t, _cpu() - c
        rep["load_average"] = os.getloadavg()[0]
        out["repeats"].append(rep)
    best_f = min(r["fused_wall_s"] for r in out["repeats"])
    best_b = min(r["baseline_wall_s"] for r in out["repeats"])
    per_f = best_f / (n_models * n_snap)
    per_b = best_b / (n_models * len(base_snaps))
    out.update({
        "fused_best_wall_s": best_f,
        "fused_model_snapshots_per_s": 1.0 / per_f,
        "baseline_model_snapshots_per_s": 1.0 / per_b,
        "baseline_all_snapshots_estimate_s": per_b * n_models * n_snap,
        "ratio": per_b / per_f,
        "difference": {f"snapshot_{s}": _difference(fused[s], b)
                       for s, b in zip(base_snaps.tolist(), base, strict=True)},
        "load_average_end": os.getloadavg()[0],
    })
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{n_models} models x {n_snap} snapshots, {out['numba_threads']} threads, load average "
          f"{out['load_average_start']:.2f} -> {out['load_average_end']:.2f}")
    for i, r in enumerate(out["repeats"]):
        print(f"  repeat {i}: fused {r['fused_wall_s']:.2f} s (cpu {r['fused_cpu_s']:.2f} s), "
              f"baseline {len(base_snaps)} snapshots {r['baseline_wall_s']:.2f} s "
              f"(cpu {r['baseline_cpu_s']:.2f} s), load {r['load_average']:.2f}")
    print(f"fused, all {n_snap} snapshots: {best_f:.2f} s (best of {args.repeats}), "
          f"{out['fused_model_snapshots_per_s']:,.0f} model-snapshots/s")
    print(f"numpy baseline: {out['baseline_model_snapshots_per_s']:,.0f} model-snapshots/s "
          f"(all {n_snap} snapshots: ~{out['baseline_all_snapshots_estimate_s']:.0f} s); "
          f"ratio x{out['ratio']:.1f}")
    for key, diff in out["difference"].items():
        worst = max(diff, key=diff.get)
        print(f"  {key}: largest difference {diff[worst]:.1e} of the matrix scale ({worst})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
