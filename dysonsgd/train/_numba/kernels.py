"""Fused CPU kernels for :func:`dysonsgd.train.ensemble.train_ensemble` (numba).

Design
------
One SGD step of one teacher-student model (paper widths 3-32-16-1, batch 4) is about 4,000
multiply-adds and 64 activations: far too little work to vectorise *within* a model. The kernels
here vectorise *across* models instead: models are packed in blocks of ``L`` lanes (``L = 16`` for
float32, ``L = 8`` for float64, one 64-byte vector either way) and every array is stored with the
lane index innermost, e.g. ``W2[block][i][j][lane]``. Each SIMD instruction then advances the same
arithmetic for ``L`` models, and the per-model code is plain scalar algebra with no shuffles.

Vectors are a small numba extension type (:class:`SimdVec`, an LLVM ``<L x float>``) with
intrinsics for load, store, FMA, select, ...; this keeps the inner loops in registers, which
numba's auto-vectoriser does not manage for this loop nest (it cannot prove that the arrays do not
alias). The step kernel is generated from a template with the batch loop unrolled, so the
``batch_size`` accumulators of the forward pass and the update stay in registers.

Each block keeps its ``W2`` hot in L1 for a whole call (many epochs), and streams the layer-1
features ``phi1 = act(W1 x)`` of its lanes from a per-block scratch array (``n_data x n1 x L``,
8 MB at the paper's sizes) gathered once per call by :func:`fill_kernel` from features computed
once per teacher (:func:`group_features`, float64, then rounded). Waves of few blocks keep that
scratch in the last-level cache.

Activation accuracy: ``phi1`` is exact (float64, rounded to the working precision). In the step,
float64 kernels use ``math.tanh`` (libm), exact to rounding; float32 kernels use a clamped
rational approximation of ``tanh`` (odd degree-13 over even degree-6 polynomial, the form used
by Eigen/XLA) whose maximum absolute and relative error on the real line is 4.0e-7 (about 3.3
float32 epsilons): below the rounding noise of a float32 SGD trajectory.

All kernels are pure functions of their array arguments; which block runs on which thread has no
effect on any number, so results do not depend on the number of threads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

__all__ = [
    "ACTIVATION_CODES",
    "fill_kernel",
    "lanes_for",
    "run_numba",
    "tanh_fast_f32",
    "train_kernel",
]

#: activation name -> integer code baked into the generated kernels
ACTIVATION_CODES = {"tanh": 0, "relu": 1, "identity": 2}

#: fastmath flags for the scalar code: contraction and reassociation, but NaN and infinity
#: stay meaningful (the divergence test ``not (loss <= threshold)`` must see a NaN)
_FASTMATH = {"contract", "reassoc", "nsz", "arcp", "afn"}

# Eigen / XLA rational approximation of tanh on [-7.905, 7.905] (float32)
_TANH_CLAMP = 7.90531110763549805
_TANH_P = (
    4.89352455891786e-03,
    6.37261928875436e-04,
    1.48572235717979e-05,
    5.12229709037114e-08,
    -8.60467152213735e-11,
    2.00018790482477e-13,
    -2.76076847742355e-16,
)
_TANH_Q = (
    4.89352518554385e-03,
    2.26843463243900e-03,
    1.18534705686654e-04,
    1.19825839466702e-06,
)


def lanes_for(dtype) -> int:
    """Number of models per SIMD block: one 64-byte vector (16 float32 or 8 float64)."""
    return 64 // np.dtype(dtype).itemsize


def tanh_fast_f32(x: np.ndarray) -> np.ndarray:
    """NumPy reference of the float32 kernel's rational ``tanh`` (same coefficients, same order).

    Parameters
    ----------
    x : array_like
        Arguments, converted to float32.

    Returns
    -------
    numpy.ndarray
        float32 approximation of ``tanh(x)``, maximum error 4.0e-7.
    """
    f = np.float32
    x = np.clip(np.asarray(x, dtype=f), f(-_TANH_CLAMP), f(_TANH_CLAMP))
    x2 = x * x
    p = f(_TANH_P[-1])
    for c in _TANH_P[-2::-1]:
        p = p * x2 + f(c)
    q = f(_TANH_Q[-1])
    for c in _TANH_Q[-2::-1]:
        q = q * x2 + f(c)
    return (x * p) / q


# ------------------------------------------------------------------------------------------------
# a minimal SIMD vector type for numba
# ------------------------------------------------------------------------------------------------


class SimdVec(types.Type):
    """numba type of an LLVM vector ``<width x dtype>`` held in registers."""

    def __init__(self, dtype, width: int) -> None:
        self.dtype = dtype
        self.width = width
        super().__init__(name=f"SimdVec({dtype}, {width})")


@register_model(SimdVec)
class _SimdVecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.width))


def _vec_type(arr) -> SimdVec:
    return SimdVec(arr.dtype, 64 // (arr.dtype.bitwidth // 8))


def _elem_ptr(context, builder, arrty, arr, off, offty):
    a = context.make_array(arrty)(context, builder, arr)
    off = context.cast(builder, off, offty, types.intp)
    return builder.gep(a.data, [off])


@intrinsic
def vload(typingctx, arr, off):
    """Load ``arr[off : off + L]`` as a vector (unaligned load)."""
    vt = _vec_type(arr)

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vty = context.get_value_type(vt)
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=4)

    return vt(arr, off), codegen


@intrinsic
def vstore(typingctx, arr, off, v):
    """Store vector ``v`` into ``arr[off : off + L]``."""

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(args[2], builder.bitcast(ptr, args[2].type.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(arr, off, v), codegen


@intrinsic
def vsplat(typingctx, arr, x):
    """Vector of ``L`` copies of the scalar ``x`` in the dtype of ``arr``."""
    vt = _vec_type(arr)

    def codegen(context, builder, sig, args):
        s = context.cast(builder, args[1], sig.args[1], sig.args[0].dtype)
        vty = context.get_value_type(vt)
        idx0 = ir.Constant(ir.IntType(32), 0)
        v = builder.insert_element(ir.Constant(vty, ir.Undefined), s, idx0)
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.width), [0] * vt.width)
        return builder.shuffle_vector(v, v, mask)

    return vt(arr, x), codegen


def _binary(op):
    @intrinsic
    def _impl(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return a(a, b), codegen

    return _impl


vadd = _binary("fadd")
vsub = _binary("fsub")
vmul = _binary("fmul")
vdiv = _binary("fdiv")


@intrinsic
def vfma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (``llvm.fma``)."""

    def codegen(context, builder, sig, args):
        vty = args[0].type
        bits = 32 if isinstance(vty.element, ir.FloatType) else 64
        name = f"llvm.fma.v{vty.count}f{bits}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), name)
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def vwhere(typingctx, cond, a, b):
    """Lane-wise ``a if cond != 0 else b`` (``cond`` a vector of 1.0 / 0.0 flags)."""

    def codegen(context, builder, sig, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered("one", args[0], zero), args[1], args[2])

    return a(cond, a, b), codegen


@intrinsic
def vclamp(typingctx, a, lo, hi):
    """Lane-wise ``min(max(a, lo), hi)``."""

    def codegen(context, builder, sig, args):
        x, low, high = args
        x = builder.select(builder.fcmp_ordered("olt", x, low), low, x)
        return builder.select(builder.fcmp_ordered("ogt", x, high), high, x)

    return a(a, lo, hi), codegen


@intrinsic
def vpos(typingctx, a):
    """Lane-wise step function: 1.0 where ``a > 0`` else 0.0 (the derivative of relu)."""

    def codegen(context, builder, sig, args):
        vty = args[0].type
        one = ir.Constant(vty, [ir.Constant(vty.element, 1.0)] * vty.count)
        zero = ir.Constant(vty, None)
        return builder.select(builder.fcmp_ordered("ogt", args[0], zero), one, zero)

    return a(a), codegen


@njit(inline="always")
def _vtanh_fast(x, ref):
    """Rational tanh on a float32 vector (``ref`` is any float32 array, for the type)."""
    x = vclamp(x, vsplat(ref, -_TANH_CLAMP), vsplat(ref, _TANH_CLAMP))
    x2 = vmul(x, x)
    p = vfma(vsplat(ref, _TANH_P[6]), x2, vsplat(ref, _TANH_P[5]))
    p = vfma(p, x2, vsplat(ref, _TANH_P[4]))
    p = vfma(p, x2, vsplat(ref, _TANH_P[3]))
    p = vfma(p, x2, vsplat(ref, _TANH_P[2]))
    p = vfma(p, x2, vsplat(ref, _TANH_P[1]))
    p = vfma(p, x2, vsplat(ref, _TANH_P[0]))
    q = vfma(vsplat(ref, _TANH_Q[3]), x2, vsplat(ref, _TANH_Q[2]))
    q = vfma(q, x2, vsplat(ref, _TANH_Q[1]))
    q = vfma(q, x2, vsplat(ref, _TANH_Q[0]))
    return vdiv(vmul(x, p), q)


# ------------------------------------------------------------------------------------------------
# kernel source generation
# ------------------------------------------------------------------------------------------------

_FILL_SRC = '''
def fill(P, Y, phig, yg, lane_group, order, n_data, n1, n3):
    """Gather phi1 = act(W1 x) and targets of each lane's group, lane-interleaved, in the
    epoch's data order (order: one row shared by all lanes, or one row per lane)."""
    nbw = lane_group.shape[0] // L
    psz = n_data * n1 * L
    ysz = n_data * n3 * L
    per_lane_order = order.shape[0] > 1
    flat = phig.reshape(-1)
    yflat = yg.reshape(-1)
    for blk in prange(nbw):
        po = blk * psz
        yo = blk * ysz
        base = np.empty(L, np.int64)
        ybase = np.empty(L, np.int64)
        for a in range(n_data):
            for l in range(L):
                g = lane_group[blk * L + l]
                row = order[blk * L + l if per_lane_order else 0, a]
                base[l] = (g * n_data + row) * n1
                ybase[l] = (g * n_data + row) * n3
            for j in range(n1):
                out = po + (a * n1 + j) * L
                for l in range(L):
                    P[out + l] = flat[base[l] + j]
            for k in range(n3):
                out = yo + (a * n3 + k) * L
                for l in range(L):
                    Y[out + l] = yflat[ybase[l] + k]
'''

_TRAIN_HEAD = '''
def train(W2, G, P, Y, W3, cneg, mask, lsum, div_epoch, div_step, end_grad,
          out_w2, out_g, out_loss, rec, epoch0, n_epochs, n_steps, thr, mode,
          n1, n2, n3, n_data):
    """Run n_epochs epochs (mode 0: SGD; mode 1: evaluate the data-mean gradient, no update)."""
    nbw = cneg.shape[0] // L
    wsz = n2 * n1 * L
    psz = n_data * n1 * L
    ysz = n_data * n3 * L
    w3sz = n3 * n2 * L
    n_snap = out_loss.shape[0] // (nbw * L)
    update = mode == 0
    for blk in prange(nbw):
        wo = blk * wsz
        po = blk * psz
        yo = blk * ysz
        w3o = blk * w3sz
        lo = blk * L
        Z = np.empty(B * n2 * L, W2.dtype)
        D = np.empty(B * n2 * L, W2.dtype)
        E = np.empty(B * n3 * L, W2.dtype)
        lb = np.empty(L, W2.dtype)
        zero = vsplat(W2, 0.0)
        mk = vload(mask, lo)
        cn = vwhere(mk, vload(cneg, lo), zero)
        if not update:  # evaluation: W2 + 0 * g leaves W2 exactly as it is
            cn = zero
        any_off = False
        for l in range(L):
            if mask[lo + l] == 0.0:
                any_off = True
        for ep in range(n_epochs):
            k = rec[ep]
            record = k >= 0
            for l in range(L):
                lsum[lo + l] = 0.0
            for s in range(n_steps):
'''

_TRAIN_TAIL = '''
            if record:
                inv = 1.0 / (B * n_steps)
                for l in range(L):
                    m = lo + l
                    out_loss[m * n_snap + k] = lsum[m] / n_steps
                    base = (m * n_snap + k) * n2 * n1
                    for q in range(n2 * n1):
                        out_w2[base + q] = W2[wo + q * L + l]
                        out_g[base + q] = G[wo + q * L + l] * inv
                for q in range(wsz):
                    G[wo + q] = 0.0
'''


def _ind(lines: list[str], depth: int) -> list[str]:
    return ["    " * depth + ln for ln in lines]


def _forward_rows(batch: int, rows: int) -> list[str]:
    """Forward product z[b, i] = sum_j W2[i, j] phi1[b, j] for ``rows`` consecutive rows."""
    out = []
    for r in range(rows):
        out.append(f"w{r}o = wo + (i + {r}) * n1 * L")
        out += [f"a{r}_{b} = zero" for b in range(batch)]
    out.append("for j in range(n1):")
    body = ["jL = j * L"]
    body += [f"w{r} = vload(W2, w{r}o + jL)" for r in range(rows)]
    body += [f"p{b} = vload(P, pr{b} + jL)" for b in range(batch)]
    body += [f"a{r}_{b} = vfma(w{r}, p{b}, a{r}_{b})" for r in range(rows) for b in range(batch)]
    out += _ind(body, 1)
    out += [
        f"vstore(Z, ({b} * n2 + i + {r}) * L, a{r}_{b})" for r in range(rows) for b in range(batch)
    ]
    return out


def _update_rows(batch: int, rows: int, update: bool, accumulate: bool) -> list[str]:
    """g[i, j] = sum_b delta[b, i] phi1[b, j]; W2 += cneg * g; optionally G += g."""
    out = []
    for r in range(rows):
        out.append(f"w{r}o = wo + (i + {r}) * n1 * L")
        out += [f"d{r}_{b} = vload(D, ({b} * n2 + i + {r}) * L)" for b in range(batch)]
    out.append("for j in range(n1):")
    body = ["jL = j * L"]
    body += [f"p{b} = vload(P, pr{b} + jL)" for b in range(batch)]
    for r in range(rows):
        body.append(f"g{r} = vmul(d{r}_0, p0)")
        body += [f"g{r} = vfma(d{r}_{b}, p{b}, g{r})" for b in range(1, batch)]
        if update:
            body.append(f"vstore(W2, w{r}o + jL, vfma(cn, g{r}, vload(W2, w{r}o + jL)))")
        if accumulate:
            body.append(f"vstore(G, w{r}o + jL, vadd(vload(G, w{r}o + jL), g{r}))")
    out += _ind(body, 1)
    return out


#: rows of W2 per register block: ROWS * batch accumulators must fit the 32 vector registers
ROWS = 2
UROWS = 2


def _row_blocked(make, depth: int, rows: int = ROWS) -> list[str]:
    """Rows in blocks of ``rows``, then the remaining rows one by one."""
    out = ["i = 0", f"while i + {rows - 1} < n2:"]
    out += _ind(make(rows), 1)
    out += [f"    i += {rows}", "while i < n2:"]
    out += _ind(make(1), 1)
    out += ["    i += 1"]
    return _ind(out, depth)


def _step_source(batch: int, act: int, fast: bool) -> list[str]:
    s = [f"pr{b} = po + (s * B + {b}) * n1 * L" for b in range(batch)]
    s += _row_blocked(lambda r: _forward_rows(batch, r), 0)
    # activation of layer 2 (Z <- act(z), D <- act'(z))
    if act == 0 and not fast:
        s += [
            "for q in range(B * n2 * L):",
            "    h = math.tanh(Z[q])",
            "    Z[q] = h",
            "    D[q] = 1.0 - h * h",
        ]
    else:
        s += ["for q in range(0, B * n2 * L, L):", "    z = vload(Z, q)"]
        if act == 0:
            s += ["    h = _vtanh_fast(z, Z)", "    vstore(Z, q, h)"]
            s += ["    vstore(D, q, vsub(vsplat(Z, 1.0), vmul(h, h)))"]
        elif act == 1:
            s += ["    vstore(Z, q, vmul(z, vpos(z)))", "    vstore(D, q, vpos(z))"]
        else:
            s += ["    vstore(D, q, vsplat(Z, 1.0))"]
    # output layer, error, loss, back-propagated delta
    s += [
        "lossv = zero",
        "for b in range(B):",
        "    yr = yo + (s * B + b) * n3 * L",
        "    for kk in range(n3):",
        "        acc = vsub(zero, vload(Y, yr + kk * L))",
        "        for i in range(n2):",
        "            w3v = vload(W3, w3o + (kk * n2 + i) * L)",
        "            acc = vfma(w3v, vload(Z, (b * n2 + i) * L), acc)",
        "        vstore(E, (b * n3 + kk) * L, acc)",
        "        lossv = vfma(acc, acc, lossv)",
        "    for i in range(n2):",
        "        dsum = zero",
        "        for kk in range(n3):",
        "            w3v = vload(W3, w3o + (kk * n2 + i) * L)",
        "            dsum = vfma(w3v, vload(E, (b * n3 + kk) * L), dsum)",
        "        vstore(D, (b * n2 + i) * L, vmul(dsum, vload(D, (b * n2 + i) * L)))",
        "vstore(lb, 0, vmul(lossv, vsplat(lb, 0.5 / B)))",
        # divergence check, before the update (as the release): the model stops with the W2
        # that produced the large batch loss and keeps that batch's gradient
        "changed = False",
        "for l in range(L):",
        "    v = lb[l]",
        "    if mask[lo + l] != 0.0:",
        "        if update and not (v <= thr):",
        "            mask[lo + l] = 0.0",
        "            div_epoch[lo + l] = epoch0 + ep",
        "            div_step[lo + l] = s",
        "            for i in range(n2):",
        "                for j in range(n1):",
        "                    g = 0.0",
        "                    for b in range(B):",
        "                        pv = P[po + ((s * B + b) * n1 + j) * L + l]",
        "                        g += D[(b * n2 + i) * L + l] * pv",
        "                    end_grad[wo + (i * n1 + j) * L + l] = g / B",
        "            changed = True",
        "        else:",
        "            lsum[lo + l] += v",
        "if changed:",
        "    any_off = True",
        "    mk = vload(mask, lo)",
        "    cn = vwhere(mk, vload(cneg, lo), zero)",
        "if any_off:",
        "    for q in range(0, B * n2 * L, L):",
        "        vstore(D, q, vwhere(mk, vload(D, q), zero))",
        "if record:",
    ]
    s += _row_blocked(lambda r: _update_rows(batch, r, True, True), 1, UROWS)
    s += ["else:"]
    s += _row_blocked(lambda r: _update_rows(batch, r, True, False), 1, UROWS)
    return s


@njit(inline="always")
def _relu_vec(z, ref):
    return vmul(z, vpos(z))


@njit(inline="always")
def _identity_vec(z, ref):
    return z


_HEADER = """# generated by dysonsgd.train._numba.kernels: do not edit (regenerated on change)
import math

import numpy as np
from numba import njit, prange

from dysonsgd.train._numba.kernels import (
    _FASTMATH, _identity_vec, _relu_vec, _vtanh_fast, vadd,
    vfma, vload, vmul, vpos, vsplat, vstore, vsub, vwhere,
)

L = {lanes}
B = {batch}
FAST = {fast}
ACT_VEC = {act_vec}
"""


def _cache_dir() -> Path | None:
    """Where generated kernel sources live, so that numba can cache their machine code."""
    root = os.environ.get("DYSONSGD_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "dysonsgd"
    path = base / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".probe"
        probe.write_text("")
        probe.unlink()
    except OSError:
        return None
    return path


def _build(body: str, func: str, lanes: int, batch: int, fast: bool, act: int, label: str):
    """Compile generated ``body`` defining ``func``; cached on disk when a cache dir is usable."""
    act_vec = {0: "_vtanh_fast", 1: "_relu_vec", 2: "_identity_vec"}[act]
    src = _HEADER.format(lanes=lanes, batch=batch, fast=fast, act_vec=act_vec) + body
    src += f"\n{func} = njit(parallel=True, fastmath=_FASTMATH, nogil=True, cache=CACHE)({func})\n"
    generator = Path(__file__).read_bytes()
    digest = hashlib.sha1(generator + src.encode()).hexdigest()[:16]
    folder = _cache_dir()
    if folder is not None:
        path = folder / f"{label}_{digest}.py"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write(src.replace("CACHE)", "True)"))
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(f"dysonsgd_kernel_{digest}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # numba's cache re-imports the module by name
        spec.loader.exec_module(module)
        return getattr(module, func)
    ns: dict = {"__name__": f"dysonsgd_kernel_{digest}"}
    exec(compile(src.replace("CACHE)", "False)"), f"<dysonsgd {label}>", "exec"), ns)
    return ns[func]


@cache
def train_kernel(dtype: str, batch: int, activation: str):
    """Compiled SGD kernel for ``dtype`` ('float32' or 'float64'), batch size and activation.

    float32 uses the rational tanh (:func:`tanh_fast_f32`), float64 the exact ``math.tanh``.
    The returned function is ``train(W2, G, P, Y, W3, cneg, mask, lsum, div_epoch, div_step,
    end_grad, out_w2, out_g, out_loss, rec, epoch0, n_epochs, n_steps, thr, mode, n1, n2, n3,
    n_data)``; see :mod:`dysonsgd.train.ensemble` for the array layouts.
    """
    act = ACTIVATION_CODES[activation]
    fast = np.dtype(dtype) == np.float32
    body = _TRAIN_HEAD + "\n".join(_ind(_step_source(batch, act, fast), 4)) + "\n" + _TRAIN_TAIL
    return _build(body, "train", lanes_for(dtype), batch, fast, act,
                  f"train_{activation}_{np.dtype(dtype).name}_b{batch}")


@cache
def fill_kernel(dtype: str):
    """Compiled kernel gathering per-group features and targets into the lane layout."""
    return _build(_FILL_SRC, "fill", lanes_for(dtype), 1, False, 2, f"fill_{np.dtype(dtype).name}")


def group_features(x: np.ndarray, w1: np.ndarray, activation: str, dtype) -> np.ndarray:
    """Layer-1 features ``phi(W1 x)`` per group, (G, n_data, n1), computed in float64 (torch's
    vectorised tanh, within an ulp of libm) and rounded to ``dtype``."""
    import torch

    out = np.empty((x.shape[0], x.shape[1], w1.shape[1]), dtype)
    for a in range(0, x.shape[0], 16):
        z = torch.from_numpy(np.ascontiguousarray(x[a:a + 16])) @ torch.from_numpy(
            np.ascontiguousarray(w1[a:a + 16])).transpose(1, 2)
        if activation == "tanh":
            z.tanh_()
        elif activation == "relu":
            z.relu_()
        out[a:a + 16] = z.numpy()
    return out


# ------------------------------------------------------------------------------------------------
# driver: waves of blocks, epoch chunks, snapshots
# ------------------------------------------------------------------------------------------------


def _to_lanes(a: np.ndarray, lanes: int, dtype) -> np.ndarray:
    """(n_blocks * L, *tail) -> flat [block][*tail][lane]."""
    nb = a.shape[0] // lanes
    tail = a.shape[1:]
    b = a.reshape(nb, lanes, -1).transpose(0, 2, 1)
    return np.ascontiguousarray(b, dtype=dtype).reshape(nb * int(np.prod(tail)) * lanes)


#: bytes of per-group features precomputed for the whole run (else per wave)
_FEATURE_BUDGET = 1e9

#: bytes of feature scratch per wave (a typical shared L3 is 16-32 MB)
_CACHE_BUDGET = 24e6


def _wave_plan(n_blocks: int, threads: int, max_wave: int) -> list[tuple[int, int]]:
    n_waves = max(1, math.ceil(n_blocks / max_wave))
    per = math.ceil(n_blocks / n_waves)
    per = min(max_wave, threads * math.ceil(per / threads))
    return [(b0, min(b0 + per, n_blocks)) for b0 in range(0, n_blocks, per)]


def run_numba(config, x, w1, w3, y, group, w2_init, lr, epochs, snaps, orders, dev, tdtype,
                 progress) -> dict[str, Any]:
    from dysonsgd.train.ensemble import allocate_outputs, progress_bar, snapshot_record_index

    npdt = np.float32 if str(tdtype) == "torch.float32" else np.float64
    dname = np.dtype(npdt).name
    lanes = lanes_for(npdt)
    _, n1, n2, n3 = config.widths
    nd, bsz = config.n_data, config.batch_size
    steps = config.steps_per_epoch
    m = w2_init.shape[0]
    nb = math.ceil(m / lanes)
    mp = nb * lanes
    pad = mp - m
    n_snap = len(snaps)
    t0 = time.perf_counter()
    fill = fill_kernel(dname)
    train = train_kernel(dname, bsz, config.activation)

    def padded(a, fill_value=0.0):
        if pad == 0:
            return a
        extra = np.full((pad, *a.shape[1:]), fill_value, dtype=a.dtype)
        return np.concatenate([a, extra])

    # lanes sorted by teacher group (models sharing a teacher are adjacent in a block, so the
    # feature gather streams one group's rows); any lane assignment gives the same numbers
    lane_model = np.argsort(group, kind="stable")
    lane_group = padded(group[lane_model].astype(np.int64), 0)
    w3_all = padded(w3[group[lane_model]])
    cneg_all = padded(-lr[lane_model] / bsz)  # padding lanes never move
    snap_rec = snapshot_record_index(snaps, epochs)
    out_w2, out_g, out_loss, div_epoch, div_step, end_grad = allocate_outputs(
        m, n_snap, n2, n1, npdt
    )
    fixed_order = np.arange(nd, dtype=np.int64)[None]
    threads = numba.get_num_threads()
    scratch_bytes = nd * (n1 + n3) * lanes * np.dtype(npdt).itemsize
    # a wave's feature scratch should stay in the last-level cache between the fill and the
    # epochs that stream it (about 8.5 MB per block at the paper's sizes): few blocks per wave
    max_wave = max(threads, min(8 * threads, int(_CACHE_BUDGET // max(scratch_bytes, 1))))
    plan = _wave_plan(nb, threads, max_wave)
    wmax = max(b1 - b0 for b0, b1 in plan)
    # scratch reused by every wave (fresh pages per wave would cost a page fault per 4 kB)
    p_buf = np.empty(wmax * nd * n1 * lanes, npdt)
    y_buf = np.empty(wmax * nd * n3 * lanes, npdt)
    ow_buf = np.empty(wmax * lanes * n_snap * n2 * n1, npdt)
    og_buf = np.empty_like(ow_buf)
    ol_buf = np.empty(wmax * lanes * n_snap)
    t_compile = time.perf_counter() - t0
    t = time.perf_counter()
    # features of all groups at once when they fit (teachers shared across cells: few groups)
    fits = x.shape[0] * nd * n1 * np.dtype(npdt).itemsize <= _FEATURE_BUDGET
    phig_all = group_features(x, w1, config.activation, npdt) if fits else None
    t_fill = time.perf_counter() - t
    t_eval = t_train = 0.0
    bar = progress_bar(progress, m, m * epochs * steps)
    est_epoch = None
    try:
        for b0, b1 in plan:
            nbw = b1 - b0
            ls, le = b0 * lanes, b1 * lanes
            P = p_buf[: nbw * nd * n1 * lanes]
            Y = y_buf[: nbw * nd * n3 * lanes]
            rows = w2_init[lane_model[ls:min(le, m)]]
            if len(rows) < le - ls:
                rows = np.concatenate([rows, np.zeros((le - ls - len(rows), n2, n1))])
            W2 = _to_lanes(rows, lanes, npdt)
            W3 = _to_lanes(w3_all[ls:le], lanes, npdt)
            G = np.zeros_like(W2)
            EG = np.zeros_like(W2)
            cneg = cneg_all[ls:le].astype(npdt)
            lsum = np.zeros(le - ls)
            de = np.full(le - ls, -1, np.int64)
            dst = np.full(le - ls, -1, np.int64)
            ow = ow_buf[: (le - ls) * n_snap * n2 * n1]
            og = og_buf[: (le - ls) * n_snap * n2 * n1]
            ol = ol_buf[: (le - ls) * n_snap]
            lg = lane_group[ls:le]

            if phig_all is None:  # features of this wave's groups only
                uniq, lg = np.unique(lg, return_inverse=True)
                lg = lg.astype(np.int64)
                phig, yg = group_features(x[uniq], w1[uniq], config.activation, npdt), y[uniq]
            else:
                phig, yg = phig_all, y

            def do_fill(order, P=P, Y=Y, lg=lg, phig=phig, yg=yg):
                nonlocal t_fill
                t = time.perf_counter()
                fill(P, Y, phig, yg, lg, order, nd, n1, n3)
                t_fill += time.perf_counter() - t

            def call(mask, rec, e0, ne, mode, *, P=P, Y=Y, W2=W2, W3=W3, G=G, EG=EG, cneg=cneg,
                     lsum=lsum, de=de, dst=dst, ow=ow, og=og, ol=ol):
                train(W2, G, P, Y, W3, cneg, mask, lsum, de, dst, EG, ow, og, ol, rec, e0, ne,
                      steps, config.divergence_threshold, mode, n1, n2, n3, nd)

            do_fill(fixed_order if orders is None else orders(0, lg))
            # snapshot 0: full-data loss and gradient at initialisation (no update)
            t = time.perf_counter()
            call(np.ones(le - ls, npdt), np.zeros(1, np.int64), 0, 1, 1)
            t_eval += time.perf_counter() - t
            mask = np.ones(le - ls, npdt)
            n_real = max(0, min(le, m) - ls)
            e = 0
            while e < epochs:
                if orders is not None:  # a fresh permutation per epoch: refill, one epoch
                    if e > 0:
                        do_fill(orders(e, lg))
                    ne = 1
                elif est_epoch is None:
                    ne = 1
                else:  # about half a second per call keeps the bar alive
                    ne = min(epochs - e, max(1, int(0.5 / max(est_epoch, 1e-9))))
                t = time.perf_counter()
                call(mask, snap_rec[e: e + ne], e, ne, 0)
                dt = time.perf_counter() - t
                t_train += dt
                est_epoch = dt / ne
                e += ne
                bar.update(n_real * ne * steps)
            idx = lane_model[ls:ls + n_real]
            out_w2[idx] = ow.reshape(-1, n_snap, n2, n1)[:n_real]
            out_g[idx] = og.reshape(-1, n_snap, n2, n1)[:n_real]
            out_loss[idx] = ol.reshape(-1, n_snap)[:n_real]
            div_epoch[idx] = de[:n_real]
            div_step[idx] = dst[:n_real]
            eg = EG.reshape(nbw, n2, n1, lanes).transpose(0, 3, 1, 2).reshape(-1, n2, n1)
            end_grad[idx] = eg[:n_real]
    finally:
        bar.close()
    return {
        "w2": out_w2[:m],
        "grad": out_g[:m],
        "loss": out_loss[:m],
        "div_epoch": div_epoch[:m],
        "div_step": div_step[:m],
        "end_grad": end_grad[:m],
        "timings": {"compile_s": t_compile, "fill_s": t_fill, "initial_gradient_s": t_eval,
                    "train_s": t_train},
    }
