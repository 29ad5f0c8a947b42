"""Throughput of ``train_ensemble`` against the per-model NumPy loop, in model-steps/s.

A model-step is one SGD step of one model (paper widths 3-32-16-1, batch 4, 4000 inputs). Two
teacher layouts of 1,000 models:

- ``shared``: a 10 x 10 grid x 10 seeds, each teacher (and data set) shared by the 100 models of
  its seed index;
- ``distinct``: one cell x 1,000 seeds, 1,000 teachers, each model its own (every teacher's
  features and targets are built and streamed for one model);

and 14,400 models (the paper's 12 x 12 grid x 100 seeds). For each the script reports

- ``end_to_end``: model-steps / wall time of the whole ``train_ensemble`` call (drawing teachers
  and data, features, the initial full-data gradient, training, snapshots);
- ``training``: model-steps / time spent in the SGD epochs alone, with the default 21 snapshots
  (at 20 epochs every epoch records one: its epoch-mean gradient is accumulated at every step);
- ``long_run``: the same with 2 snapshots, so that only the last epoch accumulates its gradient:
  the steady rate that a long run approaches (the paper's 1e5 epochs record 20 of them);

and, in the same process, the tuned per-model NumPy loop of ``numpy_baseline.py`` (float64, as
the release) and optionally the plain batched torch path, with the ratios. The kernels are
compiled (or loaded from the cache) before timing.

The FMA peak is measured, not quoted: :func:`fma_peak` runs independent chains of vector FMAs
(the kernels' own SIMD type, 64-byte vectors of the working precision) on every numba thread at
once, for about a second, best of three; it is converted to model-steps/s by the kernel's
multiply-adds per model-step (:func:`fmas_per_model_step`: the forward product, the output
layer and its back-propagation, the gradient and the update; 4,736 at the paper's widths, the
activation and the bookkeeping not counted), and each training rate is reported as a fraction
of it. The load average is printed at the start and the end.

    python benchmarks/train_throughput.py [--json] [--dtype float32|float64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from numpy_baseline import measure as numpy_measure

from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.train import train_ensemble

GRIDS = {
    "shared": (2.0 ** np.arange(-5, 5), 2.0 ** np.arange(-3, 7), 10),
    "distinct": (np.array([0.125]), np.array([1.0]), 1000),
    "paper": (2.0 ** np.arange(-5, 7), 2.0 ** np.arange(-3, 9), 100),
}


def fmas_per_model_step(config: TeacherStudentConfig) -> int:
    """Multiply-adds of one SGD step of one model in the kernels: forward z = W2 phi1
    (n2 n1 B), output layer and back-propagated error (2 n3 n2 B), gradient sum_b delta phi1^T
    and update (n2 n1 (B + 1))."""
    _, n1, n2, n3 = config.widths
    b = config.batch_size
    return n2 * n1 * b + 2 * n3 * n2 * b + n2 * n1 * (b + 1)


def fma_peak(dtype, seconds: float = 1.0, repeats: int = 3) -> dict[str, float]:
    """Lane-FMAs/s of the machine: 16 independent chains of 64-byte vector FMAs (the kernels'
    SIMD type) per numba thread, all threads at once, best of ``repeats``."""
    from concurrent.futures import ThreadPoolExecutor

    import numba

    from dysonsgd.train._numba.simd import vfma, vload, vstore
    from dysonsgd.train.plan import lanes_for

    @numba.njit(nogil=True)
    def chains(a, n_iter):
        lanes = a.size // 16
        m = vload(a, 0)
        c = vload(a, lanes)
        x0, x1, x2, x3 = (vload(a, 2 * lanes), vload(a, 3 * lanes), vload(a, 4 * lanes),
                          vload(a, 5 * lanes))
        x4, x5, x6, x7 = (vload(a, 6 * lanes), vload(a, 7 * lanes), vload(a, 8 * lanes),
                          vload(a, 9 * lanes))
        y0, y1, y2, y3 = (vload(a, 10 * lanes), vload(a, 11 * lanes), vload(a, 12 * lanes),
                          vload(a, 13 * lanes))
        y4, y5 = vload(a, 14 * lanes), vload(a, 15 * lanes)
        for _ in range(n_iter):
            x0, x1, x2, x3 = vfma(x0, m, c), vfma(x1, m, c), vfma(x2, m, c), vfma(x3, m, c)
            x4, x5, x6, x7 = vfma(x4, m, c), vfma(x5, m, c), vfma(x6, m, c), vfma(x7, m, c)
            y0, y1, y2, y3 = vfma(y0, m, c), vfma(y1, m, c), vfma(y2, m, c), vfma(y3, m, c)
            y4, y5 = vfma(y4, m, c), vfma(y5, m, c)
        for k, v in enumerate((x0, x1, x2, x3, x4, x5, x6, x7, y0, y1, y2, y3, y4, y5)):
            vstore(a, (k + 2) * lanes, v)

    npdt = np.dtype(dtype)
    lanes = lanes_for(npdt)
    threads = numba.get_num_threads()
    arrays = [np.full(16 * lanes, 0.5, npdt) for _ in range(threads)]
    for a in arrays:
        a[:lanes] = 0.999
        chains(a, 10)
    n_iter = 1000
    while True:  # about `seconds` per run
        t = time.perf_counter()
        chains(arrays[0], n_iter)
        if time.perf_counter() - t > 0.05:
            break
        n_iter *= 4
    n_iter = int(n_iter * seconds / max(time.perf_counter() - t, 1e-9))
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(lambda a: chains(a, n_iter), arrays))
            best = max(best, threads * n_iter * 14 * lanes / (time.perf_counter() - t))
    return {"threads": threads, "lanes": lanes, "lane_fmas_per_s": best}


def run_grid(layout: str, epochs: int, dtype, backend: str = "auto",
             device: str = "cpu", snapshots: int = 21) -> dict[str, float]:
    temps, sigmas, seeds = GRIDS[layout]
    t = time.perf_counter()
    res = train_ensemble(TeacherStudentConfig(), temperature=temps, sigma_w=sigmas,
                         n_seeds=seeds, epochs=epochs, seed=0, dtype=dtype, progress=False,
                         backend=backend, device=device, snapshots=snapshots)
    wall = time.perf_counter() - t
    steps = res.model_steps
    return {
        "models": res.n_models,
        "epochs": epochs,
        "model_steps": steps,
        "wall_s": wall,
        "end_to_end": steps / wall,
        "training": steps / res.timings["train_s"],
        "timings": {k: round(v, 4) for k, v in res.timings.items()},
        "diverged": int(res.diverged.sum()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="train_ensemble throughput (model-steps/s)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--epochs-1000", type=int, default=20,
                        help="epochs for the two layouts of 1,000 models")
    parser.add_argument("--epochs-14400", type=int, default=4, help="epochs for 14,400 models")
    parser.add_argument("--torch", action="store_true",
                        help="also time the plain batched torch path (1,000 models, 1 epoch)")
    parser.add_argument("--device", default="cpu", help="device for the torch path (cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="the two layouts of 1,000 models only, 5 epochs")
    args = parser.parse_args(argv)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64

    # warm-up: compile or load the kernels
    train_ensemble(TeacherStudentConfig(n_data=8), temperature=0.1, sigma_w=1.0, epochs=1,
                   dtype=dtype, progress=False)
    out: dict = {
        "dtype": args.dtype,
        "cpu_count": os.cpu_count(),
        "numba_threads": __import__("numba").get_num_threads(),
        "load_average_start": os.getloadavg()[0],
    }
    peak = fma_peak(args.dtype)
    per_step = fmas_per_model_step(TeacherStudentConfig())
    out["fma_peak"] = {**peak, "fmas_per_model_step": per_step,
                       "model_steps_per_s": peak["lane_fmas_per_s"] / per_step}
    peak_rate = out["fma_peak"]["model_steps_per_s"]
    out["numpy_per_model"] = numpy_measure(epochs=2, repeats=3)
    base = out["numpy_per_model"]["model_steps_per_s"]
    e1000 = 5 if args.quick else args.epochs_1000
    runs = [("shared", e1000), ("distinct", e1000)]
    if not args.quick:
        runs.append(("paper", args.epochs_14400))
    for layout, e in runs:
        r = run_grid(layout, e, dtype)
        r["load_average"] = os.getloadavg()[0]
        r["ratio_end_to_end_vs_numpy"] = r["end_to_end"] / base
        r["ratio_training_vs_numpy"] = r["training"] / base
        r["training_fraction_of_fma_peak"] = r["training"] / peak_rate
        if layout != "paper":
            r["long_run"] = run_grid(layout, e, dtype, snapshots=2)["training"]
            r["long_run_fraction_of_fma_peak"] = r["long_run"] / peak_rate
        out[f"train_ensemble_{layout}_{r['models']}"] = r
    if args.torch:
        r = run_grid("shared", 1, dtype, backend="torch", device=args.device)
        r["ratio_training_vs_numpy"] = r["training"] / base
        out["torch_bmm_1000"] = r
    out["load_average_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"dtype {args.dtype}, {out['numba_threads']} threads, load average "
          f"{out['load_average_start']:.2f} -> {out['load_average_end']:.2f}")
    fp = out["fma_peak"]
    print(f"FMA peak: {fp['lane_fmas_per_s']:.3g} lane-FMA/s on {fp['threads']} threads = "
          f"{peak_rate:>14,.0f} model-steps/s at {fp['fmas_per_model_step']} FMA/model-step")
    print(f"numpy per-model loop (float64):  {base:>14,.0f} model-steps/s")
    for key, r in out.items():
        if not key.startswith(("train_ensemble", "torch")):
            continue
        print(f"{key:<32} end-to-end {r['end_to_end']:>14,.0f}   training {r['training']:>14,.0f}"
              f" model-steps/s  ({r['models']} models x {r['epochs']} epochs, "
              f"{r['wall_s']:.1f} s; x{r['training'] / base:,.0f} numpy; training "
              f"{r['training'] / peak_rate:.0%} of the FMA peak)")
        if "long_run" in r:
            print(f"{'':<32} long run (2 snapshots): training {r['long_run']:>14,.0f} "
                  f"model-steps/s ({r['long_run'] / peak_rate:.0%} of the FMA peak)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
