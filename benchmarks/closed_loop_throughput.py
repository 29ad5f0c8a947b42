"""Path-steps/s of the closed-loop forecast (dysonsgd.analysis.closed_loop) against NumPy loops.

One path-step is one step of (2.29) for one path: the full-data mean gradient and the exact
Gaussian noise of the minibatch gradient on the path's own W2, at the paper's widths
(3, 32, 16, 1) and n_data = 4000 (float64, noise='full'). The models are the paper's students
(seed design, sigma_W = 1/8, T = 2^-5, |B| = 4). Methods, on the same arrays in the same run:

- ``dysonsgd``: :func:`langevin_w2`, all paths of all models at once (torch, chunked data);
- ``numpy-loop``: the same algorithm (one weighted sum of per-sample gradients per step) in
  plain NumPy, one path at a time;
- ``numpy-naive``: one path at a time through the (n, n2, n1) per-sample gradients of
  :func:`dysonsgd.model.network.per_sample_gradients`, mean and noise as separate sums.

FLOPs per path-step (counted, not measured): the two products of the step, z2 = phi1 W2^T and
sum_a c_a delta_a phi1_a^T, are 2 n n1 n2 each, 4 n n1 n2 = 8.19 MFLOP; the element-wise work
(output, error, phi', weights, loss) is about 8 n n2 + 4 n n3 = 0.53 MFLOP, plus n n2 = 64,000
tanh. The fraction of peak is 4 n n1 n2 x rate over the machine's peak (``--peak``, GFLOP/s;
default cores x 32 double FLOP/cycle (two AVX-512 FMA units) x the clock of /proc/cpuinfo) and
over a large dgemm measured in the same run (the practical BLAS peak). Each figure is the best
of ``--repeats`` rounds in which every method runs once in turn, as wall-clock path-steps/s and
as path-steps per CPU-second of the process (less sensitive to other jobs on the machine); the
load average is reported.

    python benchmarks/closed_loop_throughput.py [--json] [--models 1 10] [--paths 1 10 50]
        [--threads 1] [--n-data 4000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

from dysonsgd.analysis.closed_loop import finite_population_factor, langevin_w2
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.draws import replica_draws
from dysonsgd.model.network import layer1_features, outputs, per_sample_gradients

CONFIG = TeacherStudentConfig()  # (3, 32, 16, 1), n_data 4000, |B| 4
LR = 2.0**-5 * CONFIG.batch_size
SIGMA_W = 0.125


class _Clock:
    """Wall and process CPU time from construction; ``rates(k)`` -> (k / wall, k / cpu)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rates(self, k: float) -> tuple[float, float]:
        return (k / (time.perf_counter() - self.wall), k / (time.process_time() - self.cpu))


def problem(n_models: int):
    """Teachers, data, layer-1 features, targets and W2(0) of ``n_models`` paper students."""
    draws = [replica_draws(CONFIG, 0, r) for r in range(n_models)]
    x, w1, w2t, w3, z = (np.stack([d[k] for d in draws])
                         for k in ("x", "w1", "w2_teacher", "w3", "z"))
    y = outputs(x, w1, w2t, w3, CONFIG.activation, engine="torch")
    phi1 = layer1_features(x, w1, CONFIG.activation)
    return x, w1, w3, y, phi1, SIGMA_W * z / math.sqrt(CONFIG.widths[1])


def streams(n_models: int, n_paths: int):
    return [[np.random.default_rng([r, p]) for p in range(n_paths)] for r in range(n_models)]


def run_dysonsgd(prob, n_paths: int, steps: int) -> float:
    """Path-steps/s of langevin_w2 over ``steps`` steps, everything included (the streams, the
    set-up and one final loss evaluation: about 1/steps of a step)."""
    _, _, w3, y, phi1, w0 = prob
    f = finite_population_factor(CONFIG.n_data, CONFIG.batch_size, CONFIG.data_order)
    s = streams(len(w0), n_paths)
    clock = _Clock()
    langevin_w2(w0, phi1, y, w3, LR, CONFIG.batch_size, [0, steps], s, finite_population=f)
    return clock.rates(len(w0) * n_paths * steps)


def run_numpy_loop(prob, n_paths: int, steps: int) -> float:
    """The same algorithm, one path at a time, plain NumPy float64."""
    _, _, w3, y, phi1, w0 = prob
    n, b = CONFIG.n_data, CONFIG.batch_size
    f = finite_population_factor(n, b, CONFIG.data_order)
    amp = LR * math.sqrt(f / b) / math.sqrt(n)
    clock = _Clock()
    for r in range(len(w0)):
        for p in range(n_paths):
            rng = np.random.default_rng([r, p])
            w = w0[r].copy()
            for _ in range(steps):
                h = np.tanh(phi1[r] @ w.T)
                err = h @ w3[r].T - y[r]
                delta = (err @ w3[r]) * (1.0 - h * h)
                z = rng.standard_normal(n)
                c = LR / n + amp * (z - z.mean())
                w -= (delta * c[:, None]).T @ phi1[r]
    return clock.rates(len(w0) * n_paths * steps)


def run_numpy_naive(prob, n_paths: int, steps: int) -> float:
    """Per-sample gradients materialised (network.per_sample_gradients), one path at a time."""
    x, w1, w3, y, _, w0 = prob
    n, b = CONFIG.n_data, CONFIG.batch_size
    f = finite_population_factor(n, b, CONFIG.data_order)
    clock = _Clock()
    for r in range(len(w0)):
        for p in range(n_paths):
            rng = np.random.default_rng([r, p])
            w = w0[r].copy()
            for _ in range(steps):
                g, _ = per_sample_gradients(x[r], y[r], w1[r], w, w3[r], CONFIG.activation)
                mu = g.mean(axis=0)
                z = rng.standard_normal(n)
                xi = math.sqrt(f / b / n) * np.tensordot(z, g - mu, axes=1)
                w -= LR * (mu + xi)
    return clock.rates(len(w0) * n_paths * steps)


def dgemm_gflops(size: int = 1024, reps: int = 5) -> float:
    a = torch.randn(size, size, dtype=torch.float64)
    b = torch.randn(size, size, dtype=torch.float64)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


def nominal_peak() -> float:
    """cores x 32 double FLOP/cycle (two AVX-512 FMA units) x the clock, GFLOP/s."""
    mhz = 0.0
    try:
        with open("/proc/cpuinfo") as fh:
            mhz = next(float(line.split(":")[1]) for line in fh if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        pass
    return torch.get_num_threads() * 32 * mhz / 1e3


def _limit_threads(n: int):
    """threadpoolctl's limit of every BLAS/OpenMP pool to ``n`` threads (None without it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dev dependency
        return None
    return threadpool_limits(limits=n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--paths", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--steps", type=int, default=5, help="steps per timed run of dysonsgd")
    ap.add_argument("--baseline-steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--peak", type=float, default=None, help="peak GFLOP/s (default: nominal)")
    ap.add_argument("--n-data", type=int, default=4000, help="training points per model")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    global CONFIG
    CONFIG = TeacherStudentConfig(n_data=args.n_data)
    if args.threads:
        torch.set_num_threads(args.threads)
    # NumPy's OpenBLAS and torch's OpenMP pools on the same cores: spinning threads of one
    # slow the other down by up to 100x when they alternate; one limit for both
    limiter = _limit_threads(torch.get_num_threads())
    n, (_, n1, n2, n3) = CONFIG.n_data, CONFIG.widths
    flop = 4 * n * n1 * n2
    peak = args.peak or nominal_peak()
    load_before = os.getloadavg()
    rows = []
    methods = {"dysonsgd": lambda prob, p: run_dysonsgd(prob, p, args.steps),
               # the baselines are per path: timed on min(p, 2) paths, reported per path-step
               "numpy-loop": lambda prob, p: run_numpy_loop(prob, min(p, 2),
                                                            args.baseline_steps),
               "numpy-naive": lambda prob, p: run_numpy_naive(prob, min(p, 2), 1)}
    for r in args.models:
        prob = problem(r)
        run_dysonsgd(prob, 1, 1)  # warm-up
        for p in args.paths:
            wall = dict.fromkeys(methods, 0.0)
            cpu = dict.fromkeys(methods, 0.0)
            for _ in range(args.repeats):
                for name, method in methods.items():
                    w, c = method(prob, p)
                    wall[name], cpu[name] = max(wall[name], w), max(cpu[name], c)
            rows.append({"models": r, "paths": p, **{k: round(v, 1) for k, v in wall.items()},
                         **{f"{k}_per_cpu_s": round(v, 1) for k, v in cpu.items()}})
    gemm = dgemm_gflops()
    out = {
        "problem": {"widths": CONFIG.widths, "n_data": n, "noise": "full", "dtype": "float64",
                    "lr": LR, "flop_per_path_step": flop,
                    "flop_elementwise_per_path_step": 8 * n * n2 + 4 * n * n3,
                    "tanh_per_path_step": n * n2},
        "threads": torch.get_num_threads(), "peak_gflops": round(peak, 1),
        "dgemm_gflops": round(gemm, 1), "loadavg": [load_before, os.getloadavg()],
        "rows": [{**row, "dysonsgd_gflops": round(row["dysonsgd"] * flop / 1e9, 2),
                  "fraction_of_peak": round(row["dysonsgd"] * flop / 1e9 / peak, 4) if peak
                  else None,
                  "fraction_of_dgemm": round(row["dysonsgd"] * flop / 1e9 / gemm, 4),
                  "speedup_vs_numpy_loop": round(row["dysonsgd"] / row["numpy-loop"], 2)}
                 for row in rows],
    }
    if args.json:
        print(json.dumps(out, indent=1))
        del limiter
        return
    print(f"closed-loop (2.29), widths {CONFIG.widths}, n_data {n}, float64, noise 'full'; "
          f"{flop / 1e6:.2f} MFLOP + {n * n2} tanh per path-step; threads "
          f"{out['threads']}; peak {peak:.0f} GFLOP/s nominal, dgemm {gemm:.1f} GFLOP/s; "
          f"load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'models':>6} {'paths':>5} {'dysonsgd':>10} {'/cpu-s':>7} {'GFLOP/s':>8} "
          f"{'%peak':>6} {'%dgemm':>6} {'numpy-loop':>10} {'/cpu-s':>7} {'numpy-naive':>11} "
          f"{'speed-up':>8}")
    for row in out["rows"]:
        frac = row["fraction_of_peak"]
        print(f"{row['models']:>6} {row['paths']:>5} {row['dysonsgd']:>10.0f} "
              f"{row['dysonsgd_per_cpu_s']:>7.0f} {row['dysonsgd_gflops']:>8.2f} "
              f"{100 * frac if frac else float('nan'):>6.1f} "
              f"{100 * row['fraction_of_dgemm']:>6.1f} {row['numpy-loop']:>10.0f} "
              f"{row['numpy-loop_per_cpu_s']:>7.0f} {row['numpy-naive']:>11.0f} "
              f"{row['speedup_vs_numpy_loop']:>8.2f}")
    del limiter
    print(f"path-steps/s (wall) and per CPU-second (process time, all threads), best of "
          f"{args.repeats}")


if __name__ == "__main__":
    main()
