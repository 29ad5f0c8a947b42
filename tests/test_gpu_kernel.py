"""The fused Triton SGD kernel (dysonsgd.train._triton) against independent oracles.

Without a GPU the kernel runs in Triton's interpreter: the same kernel source, executed by
NumPy. Triton reads ``TRITON_INTERPRET`` once, when it is imported (its own library functions
are wrapped then), so the interpreted runs happen in one subprocess started with the variable
set (this file run as a script), and nothing leaks into the other tests of the session. The
oracles are computed here: the per-model NumPy loop of ``benchmarks/numpy_baseline.py``
(float64, written independently of the package) for every model, and the numba backend on the
same plan (same contract, other code). On a CUDA machine the ``gpu`` tests run the compiled
kernel on the same cases, and on the paper's sizes.

Tolerances are rounding bounds, declared from the number of roundings, never from the observed
miss (:func:`rounding_bounds`): per weight and SGD step the kernel rounds ``B`` fused
multiply-adds and the reference one update, and the increment itself carries a few roundings,
so ``c = B + 2`` roundings of relative size ``u`` (2**-24 in float32, 2**-53 in float64) of
``max |W2|`` per step, accumulated over the ``S`` steps up to a snapshot without cancellation
(linear, the worst case) and propagated by the SGD map: the amplification of a perturbation of
``W2(0)`` through the same steps, measured on the float64 oracle itself (perturbed start), with
a declared factor 2 for perturbations entering later. Gradient sums add ``N u g_max`` (``N``
terms each at most the largest per-sample gradient entry ``g_max``, recursive summation);
losses the largest per-sample ``sum_ij |dl/dW2_ij|`` times the W2 bound (first order) plus
their own summation.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from dysonsgd.model import network
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.train.plan import InitRows, TrainPlan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from numpy_baseline import train_single

HAVE_TRITON = __import__("importlib.util").util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="needs triton")
needs_cuda = pytest.mark.skipif(not (HAVE_TRITON and torch.cuda.is_available()),
                                reason="needs CUDA and triton")

#: name -> (config, models, groups, temperatures, sigma_w, epochs, snapshots, dtype, lanes)
#: each small: the interpreter costs ~50 ms per program and step
CASES = {
    # 5 models in blocks of 4 lanes: the second block has 1 model and 3 padding lanes; epoch 2
    # ends without a snapshot (the launches between snapshots)
    "fixed64": (dict(n_data=48), 5, 2, [2**-6, 2**-5, 2**-4, 2**-5, 2**-4], 0.5, 3,
                [0, 1, 3], "float64", 4),
    "fixed32": (dict(n_data=48), 5, 2, [2**-6, 2**-5, 2**-4, 2**-5, 2**-4], 0.5, 3,
                [0, 1, 3], "float32", 4),
    # T = 16: the batch loss of the identity network explodes within epoch 0
    "diverge64": (dict(n_data=32, activation="identity"), 4, 2, [2**-6, 2**4, 2**-5, 2**4],
                  1.0, 3, [0, 1, 2, 3], "float64", 4),
    "diverge32": (dict(n_data=32, activation="identity"), 4, 2, [2**-6, 2**4, 2**-5, 2**4],
                  1.0, 3, [0, 1, 2, 3], "float32", 4),
    "shuffled64": (dict(n_data=32, data_order="shuffled"), 3, 2, [2**-4, 2**-3, 2**-4], 0.5, 3,
                   [0, 2, 3], "float64", 4),
    # widths that are not powers of two (padded), two outputs, batch 2, relu
    "widths64": (dict(widths=(3, 5, 3, 2), n_data=20, batch_size=2, activation="relu"), 3, 3,
                 [2**-3, 2**-2, 2**-3], 0.5, 2, [0, 1, 2], "float64", 4),
    "gelu64": (dict(n_data=24, activation="gelu"), 2, 1, [2**-4, 2**-3], 0.5, 2, [0, 2],
               "float64", 2),
}


def _orders(n_data: int):
    def orders(epoch: int, groups: np.ndarray) -> np.ndarray:
        return np.stack([np.random.default_rng((99, int(g), epoch)).permutation(n_data)
                         for g in groups]).astype(np.int64)

    return orders


def _draws(name: str) -> dict[str, np.ndarray]:
    """Teachers, data and the init noise of case ``name``, drawn here (numpy, seeded by name)."""
    cfg_kw, m, n_groups, *_ = CASES[name]
    n0, n1, n2, n3 = TeacherStudentConfig(**cfg_kw).widths
    rng = np.random.default_rng(sum(map(ord, name)))
    return {"w1": rng.normal(0, 1 / math.sqrt(n0), (n_groups, n1, n0)),
            "w2t": rng.normal(0, 1 / math.sqrt(n1), (n_groups, n2, n1)),
            "w3": rng.normal(0, 1 / math.sqrt(n2), (n_groups, n3, n2)),
            "x": rng.normal(0, 1, (n_groups, TeacherStudentConfig(**cfg_kw).n_data, n0)),
            "z": rng.normal(0, 1, (m, n2, n1))}


def build_plan(name: str, device: str = "cpu") -> TrainPlan:
    """The plan of case ``name`` (models alternate over the teacher groups)."""
    cfg_kw, m, n_groups, temps, sigma_w, epochs, snaps, dtype, _ = CASES[name]
    cfg = TeacherStudentConfig(**cfg_kw)
    d = _draws(name)
    return TrainPlan(
        config=cfg, x=d["x"], w1=d["w1"], w3=d["w3"],
        y=network.outputs(d["x"], d["w1"], d["w2t"], d["w3"], cfg.activation),
        group=np.arange(m) % n_groups,
        w2_init=InitRows(d["z"], np.arange(m), np.full(m, sigma_w / math.sqrt(cfg.widths[1]))),
        temperature=np.asarray(temps, float), epochs=epochs,
        snapshots=np.asarray(snaps, np.int64),
        orders=_orders(cfg.n_data) if cfg.data_order != "fixed" else None,
        device=torch.device(device), dtype=dtype, progress=False)


FIELDS = ("w2", "grad", "loss", "div_epoch", "div_step", "end_grad")


def run_cases(device: str, names=CASES) -> dict[str, np.ndarray]:
    from dysonsgd.train._triton import run_triton

    out = {}
    for name in names:
        res = run_triton(build_plan(name, device), lanes=CASES[name][-1])
        out.update({f"{name}/{f}": getattr(res, f) for f in FIELDS})
    return out


# ------------------------------------------------------------------------------------------------
# oracles and bounds
# ------------------------------------------------------------------------------------------------


#: activations of the NumPy loop; the others are checked against the numba backend's float64
NUMPY_LOOP_ACTIVATIONS = ("tanh", "relu", "identity")


@cache
def _numba_run(name: str, perturb: float):
    from dysonsgd.train._numba.engine import run_numba

    plan = build_plan(name)
    w2 = plan.w2_init
    return run_numba(dataclasses.replace(
        plan, dtype="float64", w2_init=InitRows(w2.base, w2.rows, w2.scale * (1 + perturb))))


def oracle(name: str, model: int, *, perturb: float = 0.0) -> dict:
    """Model ``model`` of case ``name`` in float64 by the per-model NumPy loop (W2(0) scaled by
    ``1 + perturb``, for the amplification), or by the numba backend for an activation the
    loop lacks (its snapshots after a divergence then hold the frozen W2 but the raw
    gradient sums; no such case diverges)."""
    plan = build_plan(name)
    cfg, g = plan.config, plan.group[model]
    if cfg.activation not in NUMPY_LOOP_ACTIVATIONS:
        out = _numba_run(name, perturb)
        return {"w2": out.w2[model], "grad": out.grad[model], "loss": out.loss[model],
                "diverged_epoch": out.div_epoch[model], "diverged_step": out.div_step[model]}
    order = None
    if plan.orders is not None:
        order = lambda e: plan.orders(e, np.array([g]))[0]  # noqa: E731
    return train_single(plan.x[g], plan.w1[g], _draws(name)["w2t"][g], plan.w3[g],
                        plan.w2_init[model:model + 1][0] * (1 + perturb),
                        lr=plan.temperature[model] * cfg.batch_size, epochs=plan.epochs,
                        batch_size=cfg.batch_size, activation=cfg.activation,
                        threshold=cfg.divergence_threshold, snapshot_epochs=plan.snapshots,
                        order=order)


def rounding_bounds(name: str, model: int, ref: dict, u: float) -> dict[str, np.ndarray]:
    """Per snapshot: bounds on |W2 - W2_ref|, |grad - grad_ref|, |loss - loss_ref| (see the
    module docstring), for a kernel of unit roundoff ``u`` against the float64 ``ref``."""
    plan = build_plan(name)
    cfg, g = plan.config, plan.group[model]
    c = cfg.batch_size + 2
    eps = 2.0**-30  # relative size of the perturbation that measures the amplification
    pert = oracle(name, model, perturb=eps)
    dw0 = eps * np.abs(ref["w2"][0]).max()
    amp_w = np.maximum(1.0, np.abs(pert["w2"] - ref["w2"]).max(axis=(1, 2)) / dw0)
    amp_g = np.abs(pert["grad"] - ref["grad"]).max(axis=(1, 2)) / dw0
    steps = plan.snapshots * cfg.steps_per_epoch
    w_scale = np.abs(ref["w2"]).max()
    tol_w = 2 * c * u * (steps + 1) * w_scale * amp_w
    grads, _ = network.per_sample_gradients(plan.x[g], plan.y[g], plan.w1[g], ref["w2"],
                                            plan.w3[g], cfg.activation)
    g_max = np.abs(grads).max(axis=(1, 2, 3))  # largest per-sample gradient entry
    g_l1 = np.abs(grads).sum(axis=(2, 3)).max(axis=1)  # largest per-sample sum_ij |dl/dW2_ij|
    # N = n_data terms per gradient sum (one epoch, or the full data at snapshot 0)
    tol_g = 2 * (c * u * (steps + 1) * w_scale * np.maximum(amp_g, 1.0) + cfg.n_data * u * g_max)
    l_max = np.nanmax(np.abs(ref["loss"]))
    tol_l = 2 * (g_l1 * tol_w + cfg.steps_per_epoch * u * l_max)
    return {"w2": tol_w, "grad": tol_g, "loss": tol_l}


def check_case(name: str, out: dict[str, np.ndarray]) -> None:
    """Every model of case ``name`` against :func:`oracle`, within :func:`rounding_bounds`."""
    plan = build_plan(name)
    u = 2.0**-24 if plan.dtype == "float32" else 2.0**-53
    for model in range(plan.n_models):
        ref = oracle(name, model)
        assert out[f"{name}/div_epoch"][model] == ref["diverged_epoch"], (name, model)
        assert out[f"{name}/div_step"][model] == ref["diverged_step"], (name, model)
        tol = rounding_bounds(name, model, ref, u)
        live = plan.snapshots < ref["diverged_epoch"] + 1 if ref["diverged_epoch"] >= 0 \
            else np.ones(len(plan.snapshots), bool)
        live[0] = True
        w2 = out[f"{name}/w2"][model]
        assert np.all(np.abs(w2 - ref["w2"]).max(axis=(1, 2)) <= tol["w2"]), (name, model)
        grad = out[f"{name}/grad"][model]
        err = np.abs(grad - ref["grad"]).max(axis=(1, 2))
        assert np.all(err[live] <= tol["grad"][live]), (name, model, err, tol["grad"])
        lerr = np.abs(out[f"{name}/loss"][model] - ref["loss"])
        assert np.all(lerr[live] <= tol["loss"][live]), (name, model, lerr, tol["loss"])
        if ref["diverged_epoch"] >= 0:  # the diverging batch's gradient, as the NumPy loop's
            np.testing.assert_allclose(out[f"{name}/end_grad"][model], ref["grad"][-1],
                                       rtol=0, atol=tol["grad"][-1])


# ------------------------------------------------------------------------------------------------
# the interpreted kernel (CPU, normal suite)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """Outputs of every case from one subprocess running the kernel in Triton's interpreter."""
    if not HAVE_TRITON:
        pytest.skip("needs triton")
    path = tmp_path_factory.mktemp("triton") / "out.npz"
    env = {**os.environ, "TRITON_INTERPRET": "1", "TRITON_DEFAULT_FP_FUSION": "1"}
    proc = subprocess.run([sys.executable, __file__, str(path)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(path) as f:
        return dict(f)


@needs_triton
@pytest.mark.parametrize("name", list(CASES))
def test_interpreted_kernel_matches_the_float64_oracle(interpreted, name):
    check_case(name, interpreted)


@needs_triton
@pytest.mark.parametrize("name", ["fixed64", "shuffled64", "diverge64"])
def test_interpreted_kernel_matches_numba_backend(interpreted, name):
    """The whole EngineOutput (models in the plan's order, divergence, the diverging batch's
    gradient) against the numba backend on the same plan. Bound: the sum of the two engines'
    rounding bounds against the NumPy loop, each at most the kernel's (numba rounds fewer
    times per step), so twice :func:`rounding_bounds`."""
    from dysonsgd.train._numba.engine import run_numba

    plan = build_plan(name)
    ref = run_numba(plan)
    np.testing.assert_array_equal(interpreted[f"{name}/div_epoch"], ref.div_epoch)
    np.testing.assert_array_equal(interpreted[f"{name}/div_step"], ref.div_step)
    for model in range(plan.n_models):
        loop = oracle(name, model)
        tol = rounding_bounds(name, model, loop, 2.0**-53)
        err = np.abs(interpreted[f"{name}/w2"][model] - ref.w2[model]).max(axis=(1, 2))
        assert np.all(err <= 2 * tol["w2"]), (name, model, err, tol["w2"])
        if ref.div_epoch[model] >= 0:
            err = np.abs(interpreted[f"{name}/end_grad"][model] - ref.end_grad[model]).max()
            assert err <= 2 * tol["grad"][-1], (name, model, err, tol["grad"][-1])


def test_run_triton_refuses_the_cpu_without_the_interpreter_and_unknown_layouts():
    pytest.importorskip("triton")
    from dysonsgd._checks import InputError
    from dysonsgd.train._triton import run_triton

    with pytest.raises(InputError, match="interpreter"):
        run_triton(build_plan("gelu64"))
    with pytest.raises(InputError, match="lanes"):
        run_triton(build_plan("gelu64"), lanes=3)


def test_the_package_imports_without_triton():
    code = ("import sys; sys.modules['triton'] = None\n"  # import triton raises ImportError
            "import dysonsgd, dysonsgd.train, dysonsgd.train._triton as t\n"
            "assert not t.triton_available()\n"
            "assert 'triton' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------------
# the compiled kernel (CUDA only)
# ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_compiled_kernel_matches_the_float64_oracle():
    out = run_cases("cuda")
    for name in CASES:
        check_case(name, out)


@pytest.mark.gpu
@needs_cuda
def test_compiled_kernel_on_the_papers_sizes_matches_numba():
    """Paper widths and data, 64 models of 16 teachers, 2 epochs, float32 on the GPU against
    numba float64: bound ``2 c u S max|W2|`` with the amplification allowance 4 of the
    low-temperature cells (T <= 2**-4)."""
    from dysonsgd.train._numba.engine import run_numba
    from dysonsgd.train._triton import run_triton

    cfg = TeacherStudentConfig()
    rng = np.random.default_rng(17)
    g, m = 16, 64
    n0, n1, n2, n3 = cfg.widths
    w1 = rng.normal(0, 1 / math.sqrt(n0), (g, n1, n0))
    w2t = rng.normal(0, 1 / math.sqrt(n1), (g, n2, n1))
    w3 = rng.normal(0, 1 / math.sqrt(n2), (g, n3, n2))
    x = rng.normal(0, 1, (g, cfg.n_data, n0))
    base = dict(config=cfg, x=x, w1=w1, w3=w3, y=network.outputs(x, w1, w2t, w3),
                group=np.arange(m) % g, w2_init=InitRows(rng.normal(0, 1, (m, n2, n1)),
                                                         np.arange(m), np.full(m, 0.125)),
                temperature=np.full(m, 2.0**-5), epochs=2, snapshots=np.array([0, 1, 2]),
                orders=None, progress=False)
    gpu = run_triton(TrainPlan(**base, device=torch.device("cuda"), dtype="float32"))
    ref = run_numba(TrainPlan(**base, device=torch.device("cpu"), dtype="float64"))
    steps = 2 * cfg.steps_per_epoch + 1
    tol = 2 * 4 * (cfg.batch_size + 2) * 2.0**-24 * steps * np.abs(ref.w2).max()
    assert np.abs(gpu.w2 - ref.w2).max() <= tol


if __name__ == "__main__":  # the interpreter worker: python tests/test_gpu_kernel.py OUT.npz
    np.savez(sys.argv[1], **run_cases("cpu"))
