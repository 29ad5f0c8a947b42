"""Cost of ``SpectrumMonitor`` on the digits MLP of docs/monitor.md, and of its probe.

1. Overhead as a fraction of training time: the MLP 64-64-32-10 trained with plain SGD
   (|B| = 16, lr = 0.1, 93 steps per epoch) for ``--epochs`` epochs, with the monitor at
   ``every = 100`` writing a Zarr store, against the same loop without it:

   - ``spectra``: spectra only (no probe);
   - ``probe@100``: the probe (P = 256 points) at every record;
   - ``probe@1000``: spectra every 100 steps, the probe every 1000.

   Runs are interleaved (plain, spectra, probe@100, ... repeated ``--repeats`` times) so that
   a change in the load of the machine hits every mode alike; the overhead is the median over
   repeats of time(mode) / time(plain) - 1, with the spread (min, max) of those ratios, in
   wall time and in the process's CPU time (all threads), and the monitor's own time (spent
   in its step hook, ``SpectrumMonitor.hook_seconds``) over the plain loop's wall time, which
   a busy shared host perturbs least.
2. The per-sample gradients of the probe (P points, all three layers) by ``torch.func``
   (``vmap(grad)``, :func:`dysonsgd.monitor.probe.per_sample_gradients`) against a naive loop
   of P single-point backward passes, and the numpy terms of a probe record
   (:func:`dysonsgd.monitor.probe.probe_terms`: K, V, the complete SDE's moments).

3. The least-disturbed estimate: the least time of one record (spectra in memory, with the
   store, with the probe) over the least time of 100 plain steps, each the minimum over
   repeats (what other load on the host perturbs least).

    python benchmarks/monitor_overhead.py [--epochs 10] [--repeats 5] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dysonsgd.measure.spectrum import eigensystem
from dysonsgd.monitor import SpectrumMonitor
from dysonsgd.monitor.digits import DigitsMLP, digits_data, train_digits
from dysonsgd.monitor.probe import per_sample_gradients, probe_terms

MODES = {"plain": None, "spectra": {"probe_size": None},
         "probe@100": {"probe_size": 256}, "probe@1000": {"probe_size": 256,
                                                           "probe_every": 1000}}


def overhead(epochs: int, repeats: int) -> dict:
    walls = {m: [] for m in MODES}
    cpus = {m: [] for m in MODES}
    hooks = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            for mode, kw in MODES.items():
                if kw is None:
                    run = train_digits(0.1, epochs=epochs, monitor=False)
                else:
                    run = train_digits(0.1, epochs=epochs, every=100,
                                       store=Path(tmp) / f"{mode}-{rep}.zarr", **kw)
                walls[mode].append(run.wall_time)
                cpus[mode].append(run.cpu_time)
                hooks[mode].append(run.hook_time)
    steps = epochs * (1500 // 16)
    out = {"steps": steps, "repeats": repeats}
    for clock, times in (("wall", walls), ("cpu", cpus)):
        plain = np.array(times["plain"])
        out[clock] = {"plain_s": float(np.median(plain)), "plain_min_s": float(plain.min()),
                      "plain_us_per_step": float(np.median(plain) / steps * 1e6)}
        for mode in list(MODES)[1:]:
            ratio = np.array(times[mode]) / plain - 1.0
            out[clock][mode] = {"overhead": float(np.median(ratio)), "min": float(ratio.min()),
                                "max": float(ratio.max()), "s": float(np.median(times[mode]))}
    # the monitor's own time (in its hook) against the plain loop's wall time, per repeat
    plain = np.array(walls["plain"])
    out["in_hook"] = {mode: {"fraction": float(np.median(np.array(hooks[mode]) / plain)),
                             "s": float(np.median(hooks[mode]))} for mode in list(MODES)[1:]}
    return out


def record_cost(repeats: int = 50) -> dict:
    """The least time of one record (min over ``repeats``: the run least disturbed by other
    load): spectra only in memory, spectra with the Zarr append, spectra and the probe."""
    x, y, _, _ = digits_data()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, kw in (("spectra_memory_s", {}),
                          ("spectra_store_s", {"store": Path(tmp) / "r.zarr"}),
                          ("probe_store_s", {"store": Path(tmp) / "p.zarr",
                                             "probe": (x[:256], y[:256]),
                                             "loss_fn": nn.CrossEntropyLoss()})):
            torch.manual_seed(0)
            model = DigitsMLP()
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            mon = SpectrumMonitor(model, opt, batch_size=16, **kw)
            t = []
            for _ in range(repeats if "probe" not in label else max(3, repeats // 10)):
                start = time.perf_counter()
                mon.record()
                t.append(time.perf_counter() - start)
            mon.close(record_final=False)
            out[label] = float(np.min(t))
    return out


def probe_cost(repeats: int, n_points: int = 256) -> dict:
    x, y, _, _ = digits_data()
    x, y = x[:n_points], y[:n_points]
    torch.manual_seed(0)
    model = DigitsMLP()
    loss_fn = nn.CrossEntropyLoss()
    names = ["fc1.weight", "fc2.weight", "fc3.weight"]
    params = dict(model.named_parameters())

    def naive():
        out = {n: [] for n in names}
        model.eval()
        for a in range(n_points):
            grads = torch.autograd.grad(loss_fn(model(x[a:a + 1]), y[a:a + 1]),
                                        [params[n] for n in names])
            for n, g in zip(names, grads, strict=True):
                out[n].append(g)
        model.train()
        return {n: torch.stack(v) for n, v in out.items()}

    def vectorised():
        return per_sample_gradients(model, names, x, y, loss_fn)[0]

    ref, got = naive(), vectorised()
    agree = max(float((ref[n] - got[n]).abs().max() / ref[n].abs().max()) for n in names)
    times = {}
    for label, fn in (("naive_loop_s", naive), ("torch_func_s", vectorised)):
        fn()
        t = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
        times[label] = float(np.median(t))
    # the numpy terms of one probe record, all layers
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = SpectrumMonitor(model, opt, batch_size=16, record_initial=False)
    t = []
    for _ in range(repeats):
        start = time.perf_counter()
        for la in mon.layers:
            w = la.matrix(params[la.name].detach()).double().numpy()
            g = la.matrix(got[la.name]).double().numpy()
            probe_terms(la, w, g, eigensystem(w)[1], temperature=0.1 / 16, learning_rate=0.1,
                        sigma2=1 / 3)
        t.append(time.perf_counter() - start)
    mon.close(record_final=False)
    return {"points": n_points, **times, "speedup": times["naive_loop_s"] / times["torch_func_s"],
            "max_relative_difference": agree, "numpy_terms_s": float(np.median(t))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "overhead": overhead(args.epochs, args.repeats),
              "record": record_cost(), "probe": probe_cost(args.repeats)}
    o, r = result["overhead"], result["record"]
    step_min = o["wall"]["plain_min_s"] / o["steps"]
    result["least_disturbed"] = {
        "plain_us_per_step": 1e6 * step_min,
        **{f"{k.removesuffix('_s')}_at_100": v / (100 * step_min) for k, v in r.items()}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    o = result["overhead"]
    for clock in ("wall", "cpu"):
        c = o[clock]
        print(f"digits MLP, {o['steps']} steps, torch threads {args.threads}, {clock} time: "
              f"plain {c['plain_s']:.2f} s ({c['plain_us_per_step']:.0f} us/step)")
        for mode in list(MODES)[1:]:
            m = c[mode]
            print(f"  every=100 {mode:11s} overhead {100 * m['overhead']:6.1f} % "
                  f"(min {100 * m['min']:.1f}, max {100 * m['max']:.1f}; {m['s']:.2f} s)")
    print("monitor's own time (in its hook) / plain loop time: " + ", ".join(
        f"{mode} {100 * v['fraction']:.1f} %" for mode, v in o["in_hook"].items()))
    ld = result["least_disturbed"]
    print(f"least disturbed (min over repeats): {ld['plain_us_per_step']:.0f} us/step; one record "
          f"costs " + ", ".join(f"{k.removesuffix('_at_100')} {100 * v:.1f} %" for k, v in
                                ld.items() if k.endswith("_at_100")) + " of 100 steps")
    p = result["probe"]
    print(f"probe of {p['points']} points, 3 layers: torch.func {1e3 * p['torch_func_s']:.1f} ms, "
          f"naive loop {1e3 * p['naive_loop_s']:.1f} ms (x{p['speedup']:.1f}; agree to "
          f"{p['max_relative_difference']:.1e}); numpy terms {1e3 * p['numpy_terms_s']:.1f} ms")


if __name__ == "__main__":
    main()
