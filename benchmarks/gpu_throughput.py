"""GPU throughput of the fused Triton training kernel against the plain torch path, model-steps/s.

A model-step is one SGD step of one model (paper widths 3-32-16-1, batch 4, 4000 inputs,
float32 unless ``--dtype float64``). Both engines run on the same plans, built here from the
package's draws (:func:`dysonsgd.model.draws.replica_draws`, models = cells x seeds, seed
index = teacher group, as ``train_ensemble`` lays them out):

- ``paper``: the paper's 12 x 12 grid x 100 seeds, 14,400 models of 100 teachers;
- ``distinct``: one cell x 2,000 seeds, every model its own teacher (its features are read from
  device memory, not shared in the cache).

For each the script prints the Triton engine's training rate (model-steps / the time of its
SGD launches, two snapshots: the start and the end) and end to end (the engine call: features,
upload, compilation on the first run, snapshot 0, training, copy back), and the plain batched
torch path (:mod:`dysonsgd.train._torch`, one epoch) on the same plan, with the ratio.

The peak is measured, not quoted: :func:`fma_peak` runs independent chains of float32 (or
float64) FMAs in a Triton kernel on every SM, best of three (about 0.2 s each), and it is
converted to model-steps/s by the multiply-adds of a model-step
(``train_throughput.fmas_per_model_step``, 4,736 at the paper's widths, the same count the CPU
benchmark uses). The datasheet rate, SMs x 128 FP32 lanes x clock, is printed beside it where
torch reports the clock. Without a CUDA device (or without Triton) the script says so and exits
with status 0, having measured nothing.

    python benchmarks/gpu_throughput.py [--json] [--dtype float32|float64] [--epochs 50]
        [--sweep]    # also time every (lanes, num_warps) of SWEEP on the paper layout
        [--smoke]    # tiny sizes on the CPU in Triton's interpreter (TRITON_INTERPRET=1)
    python benchmarks/gpu_throughput.py --compile-report [--arch 90]   # no GPU needed

``--compile-report`` compiles the kernel for ``sm_<arch>`` without a device (Triton's bundled
``ptxas``, ``nvdisasm`` and ``cuobjdump``) and prints, per launch config of SWEEP and per
specialisation (training, and an epoch that records a snapshot), the registers, the spill
instructions of the step loop and its instructions per model-step, with the issue-rate bound
they imply (SMs x 4 schedulers x 32 lanes x clock, H100/H200 SXM by default): the numbers of
docs/gpu.md, reproducible on any machine with Triton.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: (temperatures, sigma_w values, seeds) of the layouts; temperatures in the ordered phase, so
#: that no model diverges and every model trains every step
LAYOUTS = {
    "paper": (2.0 ** np.linspace(-5, -3, 12), 2.0 ** np.arange(-3, 9), 100),
    "distinct": (np.array([2.0**-4]), np.array([1.0]), 2000),
    "smoke": (np.array([2.0**-4, 2.0**-3]), np.array([0.5]), 3),
}

#: launch configurations of ``--sweep``: (lanes per program, warps per program)
SWEEP = [(2, 1), (4, 1), (8, 1), (4, 2), (8, 2), (16, 2)]


#: triton.language, bound by :func:`fma_peak` (the script runs, and says why not, without Triton)
tl = None


def _fma_chains(x_ptr, y_ptr, n_iter, BLOCK: tl.constexpr):
    """8 independent FMA chains per element (``x <- a x + c``, converging to ``c / (1 - a)``),
    ``n_iter`` steps each, their sum stored to ``y``."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a = tl.load(x_ptr + offs)
    c = a * 0.5
    x0, x1, x2, x3 = a + 0.1, a + 0.2, a + 0.3, a + 0.4
    x4, x5, x6, x7 = a + 0.5, a + 0.6, a + 0.7, a + 0.8
    for _ in range(n_iter):
        x0, x1, x2, x3 = x0 * a + c, x1 * a + c, x2 * a + c, x3 * a + c
        x4, x5, x6, x7 = x4 * a + c, x5 * a + c, x6 * a + c, x7 * a + c
    tl.store(y_ptr + offs, x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7)


def fma_peak(device, dtype: str, seconds: float = 0.2, repeats: int = 3) -> dict[str, float]:
    """FMA/s of the device: a Triton kernel of 8 independent FMA chains per element, 8 warps
    of 1,024 elements per program, 16 programs per SM, best of ``repeats``."""
    import torch
    import triton
    import triton.language

    global tl
    tl = triton.language
    kern = triton.jit(_fma_chains)
    block = 1024
    sms = torch.cuda.get_device_properties(device).multi_processor_count \
        if device.type == "cuda" else 1
    n = block * 16 * sms
    x = torch.full((n,), 0.999, dtype=getattr(torch, dtype), device=device)
    y = torch.empty_like(x)
    opts = {"num_warps": 8, "enable_fp_fusion": True} if device.type == "cuda" else {}

    def run(n_iter: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        kern[(n // block,)](x, y, n_iter, BLOCK=block, **opts)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    run(4)  # compile
    n_iter = 64
    while run(n_iter) < 0.02 and n_iter < 2**24:
        n_iter *= 4
    n_iter = max(1, int(n_iter * seconds / max(run(n_iter), 1e-9)))
    best = min(run(n_iter) for _ in range(repeats))
    return {"fmas_per_s": n * 8 * n_iter / best, "n_iter": n_iter, "sms": sms}


def datasheet_fp32_fmas(device) -> float | None:
    """SMs x 128 FP32 lanes x clock (Hopper, Ampere and Ada SMs have 128), where torch reports
    the clock; None otherwise."""
    import torch

    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "clock_rate", None)
    if not clock_khz:
        return None
    return props.multi_processor_count * 128 * clock_khz * 1e3


def _loop_mix(sass: str) -> dict[str, int]:
    """Instruction counts of the largest loop of a SASS listing (the SGD step loop)."""
    import collections
    import re

    lines = sass.splitlines()
    labels, best = {}, (0, 0, 0)
    for n, line in enumerate(lines):
        if m := re.match(r"^\.(L_x_\d+):", line):
            labels[m.group(1)] = n
        if (m := re.search(r"BRA `\(\.(L_x_\d+)\)", line)) and labels.get(m.group(1), n) < n:
            best = max(best, (n - labels[m.group(1)], labels[m.group(1)], n))
    ops: collections.Counter = collections.Counter()
    for line in lines[best[1]:best[2] + 1]:
        if m := re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_]+)", line):
            ops[m.group(1)] += 1
    return dict(ops)


def compile_report(arch: int, dtype: str, sms: int, clock_ghz: float) -> list[dict]:
    """Static costs of the kernel per launch config (see the module docstring)."""
    import os
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from dysonsgd.train._triton import _RUNTIME_INTS
    from dysonsgd.train._triton_kernel import sgd_epochs

    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    fp = "fp32" if dtype == "float32" else "fp64"
    ints = {"group_ptr", "order_ptr", "active_ptr", "div_epoch_ptr", "div_step_ptr"}
    ptrs = ["w2_ptr", "w3_ptr", "phi_ptr", "y_ptr", "group_ptr", "order_ptr", "tneg_ptr",
            "active_ptr", "div_epoch_ptr", "div_step_ptr", "end_delta_ptr", "out_w2_ptr",
            "out_g_ptr", "out_loss_ptr", "thr_ptr"]
    sig = {p: "*i32" if p in ints else "*fp64" if p in ("out_loss_ptr", "thr_ptr") else f"*{fp}"
           for p in ptrs}
    sig.update({a: "i32" for a in _RUNTIME_INTS})
    rows = []
    issue = sms * 4 * 32 * clock_ghz * 1e9
    for lanes, warps in SWEEP:
        for record in (False, True):
            cons = dict(N1=32, N2=16, N3=1, N1P=32, N2P=16, N3P=1, B=4, BP=4, BM=lanes, ACT=0,
                        UPDATE=True, RECORD=record, SHUFFLED=False)
            src = ASTSource(fn=triton.jit(sgd_epochs), signature={**sig, **dict.fromkeys(
                cons, "constexpr")}, constexprs=cons)
            k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                               options={"num_warps": warps, "enable_fp_fusion": True})
            with tempfile.TemporaryDirectory() as tmp:
                cubin = os.path.join(tmp, "k.cubin")
                Path(cubin).write_bytes(k.asm["cubin"])
                sass = subprocess.run([tools / "nvdisasm", "-c", cubin], capture_output=True,
                                      text=True, check=True).stdout
                usage = subprocess.run([tools / "cuobjdump", "--dump-resource-usage", cubin],
                                       capture_output=True, text=True, check=True).stdout
            mix = _loop_mix(sass)
            per_model = sum(mix.values()) * 32 * warps / lanes
            fp_ops = sum(v for op, v in mix.items() if op[1:] in ("FMA", "MUL", "ADD")
                         and op[0] in "FD")
            regs = int(usage.split("REG:")[1].split()[0]) if "REG:" in usage else -1
            rows.append({"lanes": lanes, "num_warps": warps, "record": record,
                         "registers": regs, "spills_per_step": mix.get("LDL", 0)
                         + mix.get("STL", 0), "instructions_per_model_step": per_model,
                         "fp_per_model_step": fp_ops * 32 * warps / lanes,
                         "issue_bound_model_steps_per_s": issue / per_model})
    return rows


def build_plan(layout: str, epochs: int, dtype: str, device, n_data: int = 4000):
    """The plan ``train_ensemble`` would hand to a backend for ``layout`` (fixed order)."""
    import torch

    from dysonsgd.model import network
    from dysonsgd.model.config import TeacherStudentConfig
    from dysonsgd.model.draws import replica_draws
    from dysonsgd.train.plan import InitRows, TrainPlan

    temps, sigmas, seeds = LAYOUTS[layout]
    cfg = TeacherStudentConfig(n_data=n_data)
    draws = [replica_draws(cfg, 0, r) for r in range(seeds)]
    w1, w2t, w3, x, z = (np.stack([d[k] for d in draws])
                         for k in ("w1", "w2_teacher", "w3", "x", "z"))
    cells = temps.size * sigmas.size
    rep = np.tile(np.arange(seeds), cells)
    scale = np.repeat(np.tile(sigmas, temps.size), seeds) / math.sqrt(cfg.widths[1])
    return TrainPlan(config=cfg, x=x, w1=w1, w3=w3,
                     y=network.outputs(x, w1, w2t, w3, engine="torch"), group=rep,
                     w2_init=InitRows(z, rep, scale),
                     temperature=np.repeat(temps, sigmas.size * seeds), epochs=epochs,
                     snapshots=np.array([0, epochs]), orders=None, device=torch.device(device),
                     dtype=dtype, progress=False)


def time_engine(engine, plan, **kwargs) -> dict[str, float]:
    t = time.perf_counter()
    out = engine(plan, **kwargs)
    wall = time.perf_counter() - t
    steps = plan.n_models * plan.epochs * plan.config.steps_per_epoch
    return {"models": plan.n_models, "epochs": plan.epochs, "model_steps": steps,
            "end_to_end": steps / wall, "training": steps / out.timings["train_s"],
            "diverged": int((out.div_epoch >= 0).sum()),
            "timings": {k: round(v, 4) for k, v in out.timings.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Triton kernel vs torch path, model-steps/s")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--epochs", type=int, default=50, help="epochs of the Triton runs")
    parser.add_argument("--sweep", action="store_true", help="time every launch config")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run on the CPU in Triton's interpreter (checks the script)")
    parser.add_argument("--compile-report", action="store_true",
                        help="registers, spills and instructions from a compilation, no GPU")
    parser.add_argument("--arch", type=int, default=90, help="compute capability (report)")
    parser.add_argument("--sms", type=int, default=132, help="SMs of the device (report)")
    parser.add_argument("--clock-ghz", type=float, default=1.98, help="boost clock (report)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("triton") is None:
        print("gpu_throughput: Triton is not installed; nothing measured")
        return 0
    if args.compile_report:
        rows = compile_report(args.arch, args.dtype, args.sms, args.clock_ghz)
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"sm_{args.arch}, {args.dtype}, paper widths; issue bound at {args.sms} SMs x "
              f"{args.clock_ghz} GHz")
        for r in rows:
            print(f"lanes {r['lanes']:>2}, warps {r['num_warps']}, "
                  f"{'record' if r['record'] else 'train '}: {r['registers']:>3} registers, "
                  f"{r['spills_per_step']:>4} spill ops/step, "
                  f"{r['instructions_per_model_step']:>7,.0f} instructions/model-step "
                  f"({r['fp_per_model_step']:,.0f} FP), bound "
                  f"{r['issue_bound_model_steps_per_s']:.2e} model-steps/s")
        return 0
    import torch

    if args.smoke:
        device, layouts, epochs, torch_epochs, n_data = torch.device("cpu"), ["smoke"], 2, 1, 16
    elif torch.cuda.is_available():
        device, layouts, epochs, torch_epochs, n_data = (torch.device("cuda"),
                                                         ["paper", "distinct"], args.epochs, 1,
                                                         4000)
    else:
        print("gpu_throughput: no CUDA device; nothing measured (the figure stays 'not yet "
              "measured' in docs/sweeps.md)")
        return 0
    from train_throughput import fmas_per_model_step

    from dysonsgd.model.config import TeacherStudentConfig
    from dysonsgd.train._torch import train_torch
    from dysonsgd.train._triton import LAUNCH, run_triton

    out: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "dtype": args.dtype, "torch": torch.__version__,
                 "triton": __import__("triton").__version__, "launch": LAUNCH[args.dtype]}
    per_step = fmas_per_model_step(TeacherStudentConfig())
    peak = fma_peak(device, args.dtype)
    peak_steps = peak["fmas_per_s"] / per_step
    out["fma_peak"] = {**peak, "fmas_per_model_step": per_step, "model_steps_per_s": peak_steps}
    if device.type == "cuda":
        sheet = datasheet_fp32_fmas(device)
        out["datasheet_fp32_fmas_per_s"] = sheet
    for layout in layouts:
        plan = build_plan(layout, epochs, args.dtype, device, n_data)
        time_engine(run_triton, build_plan(layout, 1, args.dtype, device, n_data))  # compile
        r = time_engine(run_triton, plan)
        r["fraction_of_fma_peak"] = r["training"] / peak_steps
        t = time_engine(train_torch, build_plan(layout, torch_epochs, args.dtype, device,
                                                n_data))
        r["torch_path"] = t
        r["ratio_training_vs_torch"] = r["training"] / t["training"]
        out[layout] = r
    if args.sweep:
        plan = build_plan(layouts[0], max(2, epochs // 5), args.dtype, device, n_data)
        out["sweep"] = []
        for lanes, warps in SWEEP:
            time_engine(run_triton, build_plan(layouts[0], 1, args.dtype, device, n_data),
                        lanes=lanes, num_warps=warps)
            r = time_engine(run_triton, plan, lanes=lanes, num_warps=warps)
            out["sweep"].append({"lanes": lanes, "num_warps": warps, "training": r["training"],
                                 "fraction_of_fma_peak": r["training"] / peak_steps})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['device']}, {args.dtype}, torch {out['torch']}, triton {out['triton']}, "
          f"launch (lanes, warps) {out['launch']}")
    print(f"FMA peak (measured): {peak['fmas_per_s']:.3g} FMA/s = {peak_steps:,.0f} "
          f"model-steps/s at {per_step} FMA/model-step")
    if out.get("datasheet_fp32_fmas_per_s"):
        print(f"datasheet FP32 (SMs x 128 x clock): {out['datasheet_fp32_fmas_per_s']:.3g} FMA/s")
    for layout in layouts:
        r = out[layout]
        print(f"{layout:<9} {r['models']:>6} models x {r['epochs']} epochs: Triton training "
              f"{r['training']:>16,.0f} model-steps/s ({r['fraction_of_fma_peak']:.1%} of the "
              f"FMA peak), end to end {r['end_to_end']:>16,.0f}; torch path "
              f"{r['torch_path']['training']:>14,.0f} ({r['ratio_training_vs_torch']:.0f}x)")
    for s in out.get("sweep", []):
        print(f"  lanes {s['lanes']:>2}, warps {s['num_warps']}: {s['training']:>16,.0f} "
              f"model-steps/s ({s['fraction_of_fma_peak']:.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
