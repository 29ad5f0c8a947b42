"""Trajectory-steps/s of dysonsgd.sde.integrate against sdeint on the same Dyson Brownian motion.

Problem: N = 16 eigenvalues, constant K = linspace(-0.5, 0.5) and V with beta = 1 structure
(V_ii = 2 V_ij = 2), T = 0.01, started from linspace(0, 1), dt = 1e-3. This is a
collision-heavy regime: the eigenvalues diffuse by about their spacing over the run, so plain
Euler-Maruyama breaks (reorders) most paths, and the default solver takes the implicit
Coulomb step on some 9% of path-steps. dysonsgd integrates all trajectories at once (every
solver: "euler", "platen", "implicit" and the default, collision-safe adaptive scheme);
sdeint (itoEuler, itoSRI2) integrates one trajectory per call, so it is timed on a subset and
reported per trajectory-step. Each figure is the best of ``--repeats`` rounds in which every
method runs once in turn (after an untimed run that compiles the kernels), so that a change in
the load of the machine hits all of them; the load average is reported with them.

    python benchmarks/sde_throughput.py [--json] [--paths 10000] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numba
import numpy as np
import sdeint

from dysonsgd.sde import DysonBrownianMotion, integrate

SOLVERS = {"euler": "euler", "platen": "platen", "implicit": "implicit", "adaptive": None}


def problem(n: int = 16, temperature: float = 0.01):
    k = np.linspace(-0.5, 0.5, n)
    v = np.ones((n, n)) + np.eye(n)
    return k, v, temperature, np.linspace(0.0, 1.0, n)


def dysonsgd_runner(solver, paths: int, steps: int, dt: float, **problem_args):
    """(a function timing one run -> (trajectory-steps/s, broken fraction), engine)."""
    k, v, temperature, x0 = problem(**problem_args)
    eq = DysonBrownianMotion(k, v, temperature)
    engine = "fused"
    try:  # compiles the kernels
        integrate(eq, x0, [0.0, 2 * dt], n_paths=8, dt=dt, solver=solver, engine="fused")
    except ValueError:
        engine = "general"

    times = [0.0, steps * dt]

    def run():
        start = time.perf_counter()
        out = integrate(eq, x0, times, n_paths=paths, dt=dt, solver=solver, engine=engine)
        rate = paths * steps / (time.perf_counter() - start)
        return rate, float(out.mask[-1, :, 0].mean())

    run()  # warm-up
    return run, engine


def sdeint_runner(method: str, paths: int, steps: int, dt: float, **problem_args):
    """A function timing ``paths`` calls of an sdeint integrator -> trajectory-steps/s."""
    k, v, temperature, x0 = problem(**problem_args)
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

    def run():
        start = time.perf_counter()
        for _ in range(paths):
            integrator(f, g, x0, tspan, generator=rng)
        return paths * steps / (time.perf_counter() - start), None

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--paths", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sdeint-paths", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.01)
    args = parser.parse_args(argv)
    dt = 1e-3
    load_before = os.getloadavg()
    runners, engines = {}, {}
    for name, solver in SOLVERS.items():
        key = f"dysonsgd_{name}"
        runners[key], engines[key] = dysonsgd_runner(
            solver, args.paths, args.steps, dt, temperature=args.temperature
        )
    for method in ("itoEuler", "itoSRI2"):
        runners[f"sdeint_{method}"] = sdeint_runner(
            method, args.sdeint_paths, args.steps, dt, temperature=args.temperature
        )
    # rounds of every method in turn, the best of each: a change of load hits all of them
    rates, broken = dict.fromkeys(runners, 0.0), {}
    for _ in range(args.repeats):
        for key, run in runners.items():
            rate, fraction = run()
            rates[key] = max(rates[key], rate)
            if fraction is not None:
                broken[key] = fraction
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
        "temperature": args.temperature,
        "default_solver": "dysonsgd_adaptive",
        "numba_threads": numba.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "trajectory_steps_per_s": rates,
        "broken_path_fraction": broken,
        "engine": engines,
        "ratios": ratios,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"N = 16, {args.paths} paths x {args.steps} steps, T = {args.temperature}, "
            f"{report['numba_threads']} threads; load average {load_before[0]:.2f} before, "
            f"{report['loadavg_after'][0]:.2f} after"
        )
        for name, rate in rates.items():
            extra = ""
            if name in broken:
                extra = f"  ({engines[name]} engine, {broken[name]:.1%} of paths broken)"
            print(f"{name:22s} {rate:14,.0f} trajectory-steps/s{extra}")
        for name, ratio in ratios.items():
            print(f"{name:45s} x{ratio:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
