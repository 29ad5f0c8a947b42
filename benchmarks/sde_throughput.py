"""Trajectory-steps/s of dysonsgd.sde against sdeint on the same Dyson Brownian motion.

Problem: N = 16 eigenvalues, constant K and V (beta = 1 structure, V_ii = 2 V_ij), T = 0.01,
started from a well separated spectrum, dt = 1e-3. dysonsgd integrates all trajectories at once;
sdeint (itoEuler, itoSRI2) integrates one trajectory per call, so it is timed on a subset and
reported per trajectory-step.

    python benchmarks/sde_throughput.py [--json] [--paths 10000] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import sdeint

from dysonsgd.sde import DysonBrownianMotion, integrate


def problem(n: int = 16):
    k = np.linspace(-0.5, 0.5, n)
    v = np.ones((n, n)) + np.eye(n)
    return k, v, 0.01, np.linspace(0.0, 1.0, n)


def time_dysonsgd(solver, paths: int, steps: int, dt: float) -> float:
    k, v, temperature, x0 = problem()
    eq = DysonBrownianMotion(k, v, temperature)
    integrate(eq, x0, [0.0, 2 * dt], n_paths=8, dt=dt, solver=solver)  # compile kernels
    start = time.perf_counter()
    integrate(eq, x0, [0.0, steps * dt], n_paths=paths, dt=dt, solver=solver)
    return paths * steps / (time.perf_counter() - start)


def time_sdeint(method: str, paths: int, steps: int, dt: float) -> float:
    k, v, temperature, x0 = problem()
    g_matrix = np.diag(np.sqrt(temperature * np.diag(v)))
    off = v - np.diag(np.diag(v))

    def f(x, t):
        gaps = x[:, None] - x[None, :]
        np.fill_diagonal(gaps, np.inf)
        return k + temperature * np.sum(off / gaps, axis=1)

    def g(x, t):
        return g_matrix

    tspan = np.linspace(0.0, steps * dt, steps + 1)
    rng = np.random.default_rng(0)
    integrator = getattr(sdeint, method)
    start = time.perf_counter()
    for _ in range(paths):
        integrator(f, g, x0, tspan, generator=rng)
    return paths * steps / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--paths", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sdeint-paths", type=int, default=20)
    args = parser.parse_args(argv)
    dt = 1e-3
    rates = {
        f"dysonsgd_{name}": time_dysonsgd(name, args.paths, args.steps, dt)
        for name in ("euler", "implicit", "adaptive")
    }
    for method in ("itoEuler", "itoSRI2"):
        rates[f"sdeint_{method}"] = time_sdeint(method, args.sdeint_paths, args.steps, dt)
    ratios = {
        f"{ours}_vs_{theirs}": rates[ours] / rates[theirs]
        for ours in rates
        if ours.startswith("dysonsgd")
        for theirs in ("sdeint_itoEuler", "sdeint_itoSRI2")
    }
    report = {
        "n": 16,
        "paths": args.paths,
        "steps": args.steps,
        "dt": dt,
        "trajectory_steps_per_s": rates,
        "ratios": ratios,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, rate in rates.items():
            print(f"{name:22s} {rate:14,.0f} trajectory-steps/s")
        for name, ratio in ratios.items():
            print(f"{name:45s} x{ratio:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
