"""The Triton training backend: the fused SGD kernel of :mod:`dysonsgd.train._triton_kernel`.

One launch runs a chunk of epochs of every model: programs of ``BM`` lanes keep their models'
``W2`` and ``W3`` in registers across all the steps of the chunk and read only the current
batch's features (docs/gpu.md). Per run:

1. the layer-1 features ``phi1 = phi(W1 x)`` (2.3) of every teacher group, float64 on the
   device in slices of :data:`~dysonsgd.train.plan.FEATURE_SLICE` groups, rounded to the working
   precision (as the other backends), and the targets, stay on the device;
2. models are packed into blocks of lanes sorted by group (lanes of one block then read the
   same feature rows; any assignment gives the same numbers), ``W2(0)``, ``W3`` and ``-T`` in
   the kernel's lane layout;
3. snapshot 0 is one launch without update over all the data (the full-data gradient and
   loss); every epoch that ends with a snapshot is a launch of its own that accumulates the
   gradient and the loss (``RECORD``); the epochs between are launched in chunks of about half
   a second (the progress bar moves between them), with the per-epoch data orders of
   ``data_order='shuffled'``/``'replacement'`` uploaded per chunk;
4. the snapshots are copied back once; the gradient of a diverging batch is rebuilt on the host
   from the errors the kernel stored and that batch's features.

On a CUDA plan the kernel is compiled. A CPU plan runs only in a process started with
``TRITON_INTERPRET=1``, in Triton's interpreter (NumPy, about 50 ms per program and step, some
80 model-steps/s: for the tests, never for training). Triton is imported on use: the package
imports without it (:func:`triton_available`).
"""

from __future__ import annotations

import importlib.util
import math
import time
from functools import cache

import numpy as np

from dysonsgd._checks import InputError
from dysonsgd.model import network
from dysonsgd.model.activations import lookup
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.train.plan import (
    FEATURE_SLICE,
    EngineOutput,
    TrainPlan,
    allocate_outputs,
    progress_bar,
)

__all__ = ["LAUNCH", "interpreted", "run_triton", "triton_available", "triton_device_bytes"]

#: per working precision: (lanes per program ``BM``, warps per program), powers of two; chosen
#: from the sm_90 compilation without a GPU (docs/gpu.md, ``gpu_throughput.py
#: --compile-report``): the most models per warp with no register spill in any specialisation
LAUNCH = {"float32": (4, 1), "float64": (2, 1)}

#: activation codes of :mod:`dysonsgd.model.activations` the kernel implements
_ACT_CODES = (0, 1, 2, 3)

#: bytes of per-epoch data orders uploaded per launch (shuffled and replacement orders)
_ORDER_BUDGET = 2**28

#: integer arguments of the kernel that Triton must not specialise on
_RUNTIME_INTS = ("n_lanes", "epoch0", "n_epochs", "n_steps", "n_data", "n_order_groups")

#: seconds per launch between snapshots, once the epoch time is known
_CHUNK_SECONDS = 0.5


def triton_available() -> bool:
    """Whether Triton can be imported (it ships with CUDA builds of torch)."""
    return importlib.util.find_spec("triton") is not None


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _launch(dtype: str, lanes: int | None, num_warps: int | None) -> tuple[int, int]:
    bm, nw = LAUNCH[dtype]
    bm = bm if lanes is None else lanes
    nw = nw if num_warps is None else num_warps
    for name, v in (("lanes", bm), ("num_warps", nw)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 or v & (v - 1):
            raise InputError(f"{name} must be a power of two >= 1, got {v!r}")
    return int(bm), int(nw)


def triton_device_bytes(config: TeacherStudentConfig, n_models: int, n_groups: int,
                        n_snapshots: int, dtype: str, *, lanes: int | None = None) -> int:
    """Device bytes :func:`run_triton` allocates: per group the features and targets
    ``n_data (n1 + n3)``; per (padded) model the state ``W2``, ``W3``, the stored errors and the
    snapshots of ``W2`` and of the gradient, ``(2 n_snap + 1) N1 N2 + N3 N2 + BP N2`` values
    (widths rounded up to powers of two) and ``n_snap`` float64 losses; the float64 layer-1
    products of one slice of groups; one chunk of data orders (shuffled)."""
    n0, n1, n2, n3 = config.widths
    nd = config.n_data
    item = 4 if dtype == "float32" else 8
    bm, _ = _launch(dtype, lanes, None)
    mp = bm * math.ceil(n_models / bm)
    n1p, n2p, n3p, bp = (_pow2(v) for v in (n1, n2, n3, config.batch_size))
    per_model = ((2 * n_snapshots + 1) * n1p * n2p + n3p * n2p + bp * n2p) * item \
        + n_snapshots * 8 + 24
    features = n_groups * nd * (n1 + n3) * item
    setup = min(n_groups, FEATURE_SLICE) * nd * (n0 + 2 * n1) * 8
    orders = min(_ORDER_BUDGET, n_groups * nd * 4) if config.data_order != "fixed" else 0
    return int(mp * per_model + features + setup + orders)


@cache
def _kernel():
    """The kernel, wrapped by ``triton.jit``: compiled for CUDA, or run by Triton's interpreter
    when ``TRITON_INTERPRET=1`` was set before Triton was imported (Triton reads it then, for
    its own library functions too, so one process runs one mode)."""
    import triton

    from dysonsgd.train._triton_kernel import sgd_epochs

    # the integers vary between launches (epoch0, chunk lengths): specialising on their values
    # (== 1, divisible by 16) would compile the kernel again for some launches
    return triton.jit(sgd_epochs, do_not_specialize=_RUNTIME_INTS)


def interpreted() -> bool:
    """Whether the kernel runs in Triton's interpreter (NumPy on the CPU) in this process."""
    return type(_kernel()).__name__ == "InterpretedFunction"


def _to_lanes(a: np.ndarray, mp: int, shape: tuple[int, int]) -> np.ndarray:
    """(m, r, c) -> the kernel's flat ``[c][r][lane]``, zero-padded to ``shape = (R, C)`` and
    ``mp`` lanes (``W2`` as (m, n2, n1) gives ``[j][i][lane]``; ``W3`` is passed as
    (m, n2, n3))."""
    out = np.zeros((shape[1], shape[0], mp), a.dtype)
    out[:a.shape[2], :a.shape[1], :a.shape[0]] = np.transpose(a, (2, 1, 0))
    return out.reshape(-1)


def _from_lanes(a: np.ndarray, m: int, shape: tuple[int, int], used: tuple[int, int]):
    """flat ``[..., c][r][lane]`` (``shape = (R, C)``) -> (..., m, r, c) of the ``used`` rows
    and columns of the first ``m`` lanes; the inverse of :func:`_to_lanes`."""
    lead = a.shape[:-1]
    b = a.reshape(*lead, shape[1], shape[0], -1)[..., :used[1], :used[0], :m]
    return np.moveaxis(b, (-1, -2, -3), (-3, -2, -1))


def run_triton(plan: TrainPlan, *, lanes: int | None = None,
               num_warps: int | None = None) -> EngineOutput:
    """Run ``plan`` with the fused Triton kernel on ``plan.device``.

    Parameters
    ----------
    plan : TrainPlan
        On a CUDA device the kernel is compiled; a CPU plan needs Triton's interpreter
        (``TRITON_INTERPRET=1`` when the process imported Triton).
    lanes, num_warps : int, optional
        Models per program and warps per program, powers of two (default :data:`LAUNCH`).

    Returns
    -------
    EngineOutput
        With timings ``compile_s`` (the first launch's compilation and the upload),
        ``fill_s`` (features), ``initial_gradient_s`` and ``train_s``.

    Raises
    ------
    InputError
        Triton missing, a network other than the paper's (four widths, W2 trained), an
        activation the kernel lacks, a CPU plan outside the interpreter, or a plan too big for
        the device's free memory (all before anything is allocated).
    """
    if not triton_available():
        raise InputError("backend 'triton' needs Triton (pip install triton; CUDA builds of "
                         "torch ship it)")
    import torch

    config, dev = plan.config, plan.device
    if len(config.widths) != 4 or tuple(config.trained_layers) != (2,):
        raise InputError("backend 'triton' trains the paper's network: widths (n0, n1, n2, n3) "
                         f"with W2 alone, got widths {config.widths}, trained_layers "
                         f"{config.trained_layers}")
    act = lookup(config.activation)
    if act.code not in _ACT_CODES:
        raise InputError(f"activation {act.name!r} has no form in the Triton kernel")
    bm, nw = _launch(plan.dtype, lanes, num_warps)
    _, n1, n2, n3 = config.widths
    nd, bsz = config.n_data, config.batch_size
    steps = config.steps_per_epoch
    n1p, n2p, n3p, bp = (_pow2(v) for v in (n1, n2, n3, bsz))
    m, n_groups = plan.n_models, plan.x.shape[0]
    nb = math.ceil(m / bm)
    mp = nb * bm
    n_snap = len(plan.snapshots)
    npdt, tdt = plan.np_dtype, getattr(torch, plan.dtype)
    shuffled = plan.orders is not None
    if dev.type == "cuda":
        need = triton_device_bytes(config, m, n_groups, n_snap, plan.dtype, lanes=bm)
        free = torch.cuda.mem_get_info(dev)[0]
        if need > free:
            raise InputError(f"device: {dev} has {free / 2**30:.3g} GiB free, the Triton "
                             f"backend needs {need / 2**30:.3g} GiB for {m} models: fewer "
                             "models at a time")
    kern = _kernel()
    if dev.type != "cuda" and not interpreted():
        raise InputError("backend 'triton' runs on a CUDA device; on the CPU only in Triton's "
                         "interpreter (TRITON_INTERPRET=1 set before triton is imported)")
    t0 = time.perf_counter()

    def tt(a, dtype=None):
        t = torch.as_tensor(np.ascontiguousarray(a), device=dev)
        return t if dtype is None else t.to(dtype)

    # 1. features and targets of every group, on the device
    phi = torch.empty((n_groups, nd, n1), dtype=tdt, device=dev)
    for a in range(0, n_groups, FEATURE_SLICE):
        sl = slice(a, a + FEATURE_SLICE)
        phi[sl] = network.layer1_features(tt(plan.x[sl]), tt(plan.w1[sl]), act.name,
                                          engine="native").to(tdt)
    y = tt(plan.y, tdt)
    t_fill = time.perf_counter() - t0
    # 2. lanes sorted by group, padded to whole blocks (padding lanes: inactive, T = 0)
    lane_model = np.argsort(plan.group, kind="stable")
    gl = np.zeros(mp, np.int32)
    gl[:m] = plan.group[lane_model]
    tneg = np.zeros(mp)
    tneg[:m] = -plan.temperature[lane_model]
    W2 = tt(_to_lanes(plan.w2_init[lane_model], mp, (n2p, n1p)), tdt)
    W3 = tt(_to_lanes(np.swapaxes(plan.w3[plan.group[lane_model]], 1, 2), mp, (n2p, n3p)), tdt)
    gl_t, tneg_t = tt(gl), tt(tneg, tdt)
    active = tt((np.arange(mp) < m).astype(np.int32))
    d_epoch = torch.full((mp,), -1, dtype=torch.int32, device=dev)
    d_step = torch.full((mp,), -1, dtype=torch.int32, device=dev)
    end_delta = torch.zeros(bp * n2p * mp, dtype=tdt, device=dev)
    out_w2 = torch.zeros((n_snap, n1p * n2p * mp), dtype=tdt, device=dev)
    out_g = torch.zeros_like(out_w2)
    out_loss = torch.zeros((n_snap, mp), dtype=torch.float64, device=dev)
    no_order = torch.zeros(1, dtype=torch.int32, device=dev)
    thr = torch.full((1,), config.divergence_threshold, dtype=torch.float64, device=dev)
    all_groups = np.arange(n_groups)
    consts = dict(N1=n1, N2=n2, N3=n3, N1P=n1p, N2P=n2p, N3P=n3p, B=bsz, BP=bp, BM=bm,
                  ACT=act.code)
    opts = {"num_warps": nw, "enable_fp_fusion": True} if dev.type == "cuda" else {}

    def launch(e0: int, ne: int, n_steps: int, *, update: bool, slot: int | None) -> None:
        """``ne`` epochs from ``e0`` (or, without update, the full-data evaluation)."""
        order = no_order
        if shuffled and update:
            order = tt(np.stack([plan.orders(e0 + q, all_groups) for q in range(ne)]),
                       torch.int32)
        k = 0 if slot is None else slot
        kern[(nb,)](W2, W3, phi, y, gl_t, order, tneg_t, active, d_epoch, d_step, end_delta,
                    out_w2[k], out_g[k], out_loss[k], thr, mp, e0, ne, n_steps, nd, n_groups,
                    **consts,
                    UPDATE=update, RECORD=slot is not None, SHUFFLED=shuffled and update,
                    **opts)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    snap_rec = plan.record_index()
    rec_epochs = np.nonzero(snap_rec >= 0)[0]
    max_chunk = max(1, _ORDER_BUDGET // (4 * n_groups * nd)) if shuffled else plan.epochs
    bar = progress_bar(plan)
    t_compile = time.perf_counter() - t0 - t_fill
    t = time.perf_counter()
    try:
        # 3. snapshot 0 (the first launch also compiles the kernel), then the epochs
        launch(0, 1, nd // bsz, update=False, slot=0)
        t_eval = time.perf_counter() - t
        t = time.perf_counter()
        e, est = 0, None
        while e < plan.epochs:
            if snap_rec[e] >= 0:
                ne, slot = 1, int(snap_rec[e])
            else:
                nxt = rec_epochs[rec_epochs > e]
                ne = (int(nxt[0]) if nxt.size else plan.epochs) - e
                ne = min(ne, max_chunk, 1 if est is None else max(1, int(_CHUNK_SECONDS / est)))
                slot = None
            ts = time.perf_counter()
            launch(e, ne, steps, update=True, slot=slot)
            est = (time.perf_counter() - ts) / ne
            e += ne
            bar.update(m * ne * steps)
        t_train = time.perf_counter() - t
    finally:
        bar.close()
    # 4. back to the models' order
    out = allocate_outputs(plan)
    out.w2[lane_model] = np.moveaxis(
        _from_lanes(out_w2.cpu().numpy(), m, (n2p, n1p), (n2, n1)), 0, 1)
    out.grad[lane_model] = np.moveaxis(
        _from_lanes(out_g.cpu().numpy(), m, (n2p, n1p), (n2, n1)), 0, 1)
    out.loss[lane_model] = out_loss.cpu().numpy()[:, :m].T
    out.div_epoch[lane_model] = d_epoch.cpu().numpy()[:m]
    out.div_step[lane_model] = d_step.cpu().numpy()[:m]
    diverged = np.nonzero(out.div_epoch[lane_model] >= 0)[0]
    if diverged.size:
        delta = _from_lanes(end_delta.cpu().numpy(), m, (n2p, bp), (n2, bsz))  # (m, n2, B)
        for lane in diverged:
            model, g = lane_model[lane], int(gl[lane])
            e, s = int(out.div_epoch[model]), int(out.div_step[model])
            rows = np.arange(s * bsz, (s + 1) * bsz)
            if shuffled:
                rows = plan.orders(e, np.array([g]))[0][rows]
            p = phi[g, torch.as_tensor(rows, device=dev)].cpu().numpy()
            out.end_grad[model] = (delta[lane] @ p) / npdt(bsz)
    out.timings = {"compile_s": t_compile, "fill_s": t_fill, "initial_gradient_s": t_eval,
                   "train_s": t_train}
    return out
