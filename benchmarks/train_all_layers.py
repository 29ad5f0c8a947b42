"""Throughput of the general training path with every layer trained, against a per-model NumPy loop.

The paper's widths 3-32-16-1 with all three matrices trained (``trained_layers="all"``), batch
4, 4000 inputs, float32: ``train_ensemble`` runs the general SIMD kernel of
``dysonsgd.train._numba.general`` (lanes = models; per step the forward pass through all layers,
back-propagation and the update of W1, W2 and W3). A model-step is one SGD step of one model.
The grid is 10 temperatures x 10 sigma_W x 10 seeds (1,000 models, teachers shared by seed).
Reported:

- ``end_to_end``: model-steps / wall time of the whole call (draws, targets, the initial
  full-data gradient, training, snapshots);
- ``training``: model-steps / time in the SGD epochs alone;
- ``training_cpu``: model-steps per second of CPU time of the process, times the threads: what
  the epochs would reach with the cores to themselves (on a shared machine the wall-clock rates
  measure the share the process got);

and, in the same process, the per-model NumPy loop of the same algorithm (:func:`numpy_loop`:
one model at a time, one matrix product per layer and sample batch, float32 and float64), with
the ratios. The kernel is compiled (or loaded from its cache) before timing; the load average
is printed at the start and the end. Target of issue 16: ``training`` >= 2e6 model-steps/s on 2
cores.

    python benchmarks/train_all_layers.py [--json] [--epochs E] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.train import train_ensemble

TARGET = 2e6


def numpy_loop(x: np.ndarray, teacher: list[np.ndarray], start: list[np.ndarray],
               temperature: float, epochs: int, batch_size: int = 4,
               dtype=np.float64) -> list[np.ndarray]:
    """Plain SGD (2.28) of one tanh model with every matrix trained, NumPy, fixed batch order:
    per step the forward pass ``h_l = tanh(W_l h_{l-1})`` (linear output), the errors
    ``delta_L = yhat - y``, ``delta_l = (delta_{l+1} W_{l+1}) (1 - h_l^2)`` and
    ``W_l <- W_l - T delta_l^T h_{l-1}`` (the gradient summed over the batch). Returns the
    final weights."""
    x = np.asarray(x, dtype)
    h = x
    for k, w in enumerate(teacher):
        h = h @ w.T.astype(dtype)
        if k < len(teacher) - 1:
            h = np.tanh(h)
    y = h
    ws = [np.array(w, dtype) for w in start]
    n = len(ws)
    t = dtype(temperature)
    for _ in range(epochs):
        for s in range(x.shape[0] // batch_size):
            hs = [x[s * batch_size:(s + 1) * batch_size]]
            for k, w in enumerate(ws):
                z = hs[-1] @ w.T
                hs.append(np.tanh(z) if k < n - 1 else z)
            delta = hs[-1] - y[s * batch_size:(s + 1) * batch_size]
            grads = [None] * n
            for k in range(n - 1, -1, -1):
                grads[k] = delta.T @ hs[k]
                if k > 0:
                    delta = (delta @ ws[k]) * (1 - hs[k] * hs[k])
            for w, g in zip(ws, grads, strict=True):
                w -= t * g
    return ws


def measure_numpy(dtype, epochs: int = 1) -> dict[str, float]:
    """Model-steps/s of :func:`numpy_loop` on the paper's widths (best of 2)."""
    rng = np.random.default_rng(0)
    widths = (3, 32, 16, 1)
    teacher = [rng.normal(0, 1 / math.sqrt(widths[k - 1]), (widths[k], widths[k - 1]))
               for k in (1, 2, 3)]
    start = [teacher[0], rng.normal(0, 0.125 / math.sqrt(32), (16, 32)), teacher[2]]
    x = rng.normal(size=(4000, 3))
    best = math.inf
    for _ in range(2):
        t = time.perf_counter()
        numpy_loop(x, teacher, start, 2.0**-5, epochs, dtype=dtype)
        best = min(best, time.perf_counter() - t)
    return {"model_steps_per_s": epochs * 1000 / best, "seconds": best}


def measure_kernel(epochs: int) -> dict[str, float]:
    """The grid trained by ``train_ensemble`` (all layers, float32) for 1 and for ``epochs``
    epochs: the wall rates of the longer run, and the CPU rate of the epochs between the two
    (the difference of the process's CPU times, times the threads)."""
    import numba

    cfg = TeacherStudentConfig(trained_layers="all")
    kw = dict(temperature=2.0 ** np.arange(-5, 5), sigma_w=2.0 ** np.arange(-3, 7), n_seeds=10,
              seed=0, dtype=torch.float32, progress=False)
    train_ensemble(cfg, **{**kw, "n_seeds": 1}, epochs=1)  # compile or load the kernel
    runs = {}
    for e in (1, epochs):
        c, w = time.process_time(), time.perf_counter()
        res = train_ensemble(cfg, epochs=e, **kw)
        runs[e] = (time.process_time() - c, time.perf_counter() - w, res)
    cpu, wall, res = runs[epochs]
    extra = res.model_steps - runs[1][2].model_steps
    return {
        "models": res.n_models, "epochs": epochs, "model_steps": res.model_steps,
        "end_to_end": res.model_steps / wall,
        "training": res.model_steps / res.timings["train_s"],
        "training_cpu": numba.get_num_threads() * extra / (cpu - runs[1][0]),
        "cpu_s": cpu, "wall_s": wall,
        "timings": {k: round(v, 3) for k, v in res.timings.items()},
        "diverged": int(res.diverged.sum()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="numba threads (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import numba

    if args.threads:
        numba.set_num_threads(args.threads)
    out = {"load_start": os.getloadavg(), "threads": numba.get_num_threads(),
           "cpus": os.cpu_count()}
    out["kernel"] = measure_kernel(args.epochs)
    out["numpy_float32"] = measure_numpy(np.float32)
    out["numpy_float64"] = measure_numpy(np.float64)
    out["load_end"] = os.getloadavg()
    k = out["kernel"]
    for name in ("numpy_float32", "numpy_float64"):
        base = out[name]["model_steps_per_s"]
        out[name]["ratio_training"] = k["training"] / base
        out[name]["ratio_end_to_end"] = k["end_to_end"] / base
    out["target"] = TARGET
    out["meets_target"] = bool(k["training"] >= TARGET)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"load average at start {out['load_start']}, threads {out['threads']} of "
          f"{out['cpus']} cpus")
    print(f"all layers trained, 3-32-16-1, float32, {k['models']} models x {k['epochs']} epochs:")
    print(f"  training    {k['training']:>14,.0f} model-steps/s  (target {TARGET:,.0f})")
    print(f"  end to end  {k['end_to_end']:>14,.0f} model-steps/s")
    print(f"  per CPU     {k['training_cpu']:>14,.0f} model-steps/s with the cores to itself")
    for name in ("numpy_float32", "numpy_float64"):
        r = out[name]
        print(f"  {name:<11} {r['model_steps_per_s']:>14,.0f} model-steps/s; kernel "
              f"training / numpy = {r['ratio_training']:,.0f}x")
    print(f"load average at end {out['load_end']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
