"""Throughput of ``train_ensemble`` against the per-model NumPy loop, in model-steps/s.

A model-step is one SGD step of one model (paper widths 3-32-16-1, batch 4, 4000 inputs). For
1,000 models (a 10 x 10 grid x 10 seeds) and 14,400 models (the paper's 12 x 12 grid x 100 seeds)
the script reports

- ``end_to_end``: model-steps / wall time of the whole ``train_ensemble`` call (drawing teachers
  and data, features, the initial full-data gradient, training, snapshots);
- ``training``: model-steps / time spent in the SGD epochs alone (the steady rate that a long run
  approaches);

and, in the same process, the tuned per-model NumPy loop of ``numpy_baseline.py`` (float64, as
the release) and optionally the plain batched torch path, with the ratios. The kernels are
compiled (or loaded from the cache) before timing.

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
    1000: (2.0 ** np.arange(-5, 5), 2.0 ** np.arange(-3, 7), 10),
    14400: (2.0 ** np.arange(-5, 7), 2.0 ** np.arange(-3, 9), 100),
}


def run_grid(n_models: int, epochs: int, dtype, backend: str = "auto",
             device: str = "cpu") -> dict[str, float]:
    temps, sigmas, seeds = GRIDS[n_models]
    t = time.perf_counter()
    res = train_ensemble(TeacherStudentConfig(), temperature=temps, sigma_w=sigmas,
                         n_seeds=seeds, epochs=epochs, seed=0, dtype=dtype, progress=False,
                         backend=backend, device=device)
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
    parser.add_argument("--epochs-1000", type=int, default=20, help="epochs for 1,000 models")
    parser.add_argument("--epochs-14400", type=int, default=4, help="epochs for 14,400 models")
    parser.add_argument("--torch", action="store_true",
                        help="also time the plain batched torch path (1,000 models, 1 epoch)")
    parser.add_argument("--device", default="cpu", help="device for the torch path (cpu)")
    parser.add_argument("--quick", action="store_true", help="1,000 models only, 5 epochs")
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
    out["numpy_per_model"] = numpy_measure(epochs=2, repeats=3)
    base = out["numpy_per_model"]["model_steps_per_s"]
    runs = [(1000, 5 if args.quick else args.epochs_1000)]
    if not args.quick:
        runs.append((14400, args.epochs_14400))
    for n, e in runs:
        r = run_grid(n, e, dtype)
        r["ratio_end_to_end_vs_numpy"] = r["end_to_end"] / base
        r["ratio_training_vs_numpy"] = r["training"] / base
        out[f"train_ensemble_{n}"] = r
    if args.torch:
        r = run_grid(1000, 1, dtype, backend="torch", device=args.device)
        r["ratio_training_vs_numpy"] = r["training"] / base
        out["torch_bmm_1000"] = r
    out["load_average_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"dtype {args.dtype}, {out['numba_threads']} threads, load average "
          f"{out['load_average_start']:.2f} -> {out['load_average_end']:.2f}")
    print(f"numpy per-model loop (float64):  {base:>14,.0f} model-steps/s")
    for key, r in out.items():
        if not key.startswith(("train_ensemble", "torch")):
            continue
        print(f"{key:<32} end-to-end {r['end_to_end']:>14,.0f}   training {r['training']:>14,.0f}"
              f" model-steps/s  ({r['models']} models x {r['epochs']} epochs, "
              f"{r['wall_s']:.1f} s; x{r['training'] / base:,.0f} numpy)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
