"""Source generation, compilation and disk cache of the fused numba training kernels.

Design
------
One SGD step of one teacher-student model (paper widths 3-32-16-1, batch 4) is about 4,000
multiply-adds and 64 activations: far too little work to vectorise *within* a model. The kernels
vectorise *across* models instead: models are packed in blocks of ``L`` lanes (one 64-byte
vector, :func:`~dysonsgd.train.plan.lanes_for`) and every array is stored with the lane
index innermost, e.g. ``W2[block][i][j][lane]``. Each SIMD instruction
(:mod:`dysonsgd.train._numba.simd`) then advances the same arithmetic for ``L`` models, and the
per-model code is plain scalar algebra with no shuffles.

The step kernel is generated from a template with the batch loop unrolled, so the
``batch_size`` accumulators of the forward pass and the update stay in registers. The
activation of layer 2 is the form named by its row of :mod:`dysonsgd.model.activations`. Each
block keeps its ``W2`` hot in L1 for a whole call (many epochs), and streams the layer-1
features ``phi1`` of its lanes from a per-block scratch array (``n_data x n1 x L``) gathered by
the fill kernel.

Generated sources are written to ``$DYSONSGD_CACHE_DIR/kernels`` (default
``~/.cache/dysonsgd/kernels``) under a name holding a digest of the source and of the generator
(this module and the simd module), so that numba caches their machine code and any change of
the generator compiles afresh. All kernels are pure functions of their array arguments; which
block runs on which thread has no effect on any number.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

from dysonsgd.model.activations import Activation, lookup
from dysonsgd.train._numba import simd
from dysonsgd.train.plan import lanes_for

__all__ = ["fill_kernel", "train_kernel"]

#: fastmath flags for the scalar code: contraction and reassociation, but NaN and infinity
#: stay meaningful (the divergence test ``not (loss <= threshold)`` must see a NaN)
_FASTMATH = {"contract", "reassoc", "nsz", "arcp", "afn"}

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
def train(W2, G, P, Y, W3, tneg, mask, lsum, div_epoch, div_step, end_grad,
          out_w2, out_g, out_loss, rec, epoch0, n_epochs, n_steps, thr, mode,
          n1, n2, n3, n_data):
    """Run n_epochs epochs (mode 0: SGD; mode 1: evaluate the data-mean gradient, no update)."""
    nbw = tneg.shape[0] // L
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
        cn = vwhere(mk, vload(tneg, lo), zero)
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
    """g[i, j] = sum_b delta[b, i] phi1[b, j]; W2 += tneg * g (tneg = -T); optionally G += g."""
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


def _step_source(batch: int, act: Activation, fast: bool) -> list[str]:
    """One SGD step of ``B`` samples for all ``L`` lanes of a block (the body of the step loop).

    ``fast`` (float32) kernels apply the activation's vector form; float64 kernels its exact
    scalar form where it has one (tanh: libm), else the vector form (exact: relu, identity).
    """
    s = [f"pr{b} = po + (s * B + {b}) * n1 * L" for b in range(batch)]
    s += _row_blocked(lambda r: _forward_rows(batch, r), 0)
    # activation of layer 2 (Z <- act(z), D <- act'(z))
    if act.scalar is not None and not fast:
        s += [
            "for q in range(B * n2 * L):",
            "    h, d = ACT_SCALAR(Z[q])",
            "    Z[q] = h",
            "    D[q] = d",
        ]
    else:
        s += [
            "for q in range(0, B * n2 * L, L):",
            "    h, d = ACT_VEC(vload(Z, q), Z)",
            "    vstore(Z, q, h)",
            "    vstore(D, q, d)",
        ]
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
        "    cn = vwhere(mk, vload(tneg, lo), zero)",
        "if any_off:",
        "    for q in range(0, B * n2 * L, L):",
        "        vstore(D, q, vwhere(mk, vload(D, q), zero))",
        "if record:",
    ]
    s += _row_blocked(lambda r: _update_rows(batch, r, True, True), 1, UROWS)
    s += ["else:"]
    s += _row_blocked(lambda r: _update_rows(batch, r, True, False), 1, UROWS)
    return s



_HEADER = """# generated by dysonsgd.train._numba.codegen: do not edit (regenerated on change)
import numpy as np
from numba import njit, prange

from dysonsgd.train._numba.simd import (
    vadd, vfma, vload, vmul, vsplat, vstore, vsub, vwhere,
)

L = {lanes}
B = {batch}
FASTMATH = set({fastmath})
"""

_ACT_HEADER = """
# activation {name!r}, code {code} of dysonsgd.model.activations
from dysonsgd.train._numba.simd import {vec} as ACT_VEC
{scalar_import}
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


@cache
def _generator_bytes() -> bytes:
    """The generator's own source (this module and the simd module), part of every digest."""
    return Path(__file__).read_bytes() + Path(simd.__file__).read_bytes()


def _build(body: str, func: str, lanes: int, batch: int, act: Activation | None, label: str):
    """Compile generated ``body`` defining ``func``; cached on disk when a cache dir is usable."""
    src = _HEADER.format(lanes=lanes, batch=batch, fastmath=sorted(_FASTMATH))
    if act is not None:
        scalar = f"from dysonsgd.train._numba.simd import {act.scalar} as ACT_SCALAR"
        src += _ACT_HEADER.format(name=act.name, code=act.code, vec=act.simd,
                                  scalar_import=scalar if act.scalar else "")
    src += body
    src += f"\n{func} = njit(parallel=True, fastmath=FASTMATH, nogil=True, cache=CACHE)({func})\n"
    digest = hashlib.sha1(_generator_bytes() + src.encode()).hexdigest()[:16]
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

    float32 uses the activation's vector form (tanh: the rational
    :func:`~dysonsgd.train._numba.simd.tanh_fast_f32`), float64 its exact scalar form where it
    has one (tanh: ``math.tanh``). The returned function is ``train(W2, G, P, Y, W3, tneg, mask,
    lsum, div_epoch, div_step, end_grad, out_w2, out_g, out_loss, rec, epoch0, n_epochs,
    n_steps, thr, mode, n1, n2, n3, n_data)`` with ``tneg`` minus the temperature of each lane;
    see :mod:`dysonsgd.train._numba.engine` for the array layouts.
    """
    act = lookup(activation)
    fast = np.dtype(dtype) == np.float32
    body = _TRAIN_HEAD + "\n".join(_ind(_step_source(batch, act, fast), 4)) + "\n" + _TRAIN_TAIL
    return _build(body, "train", lanes_for(dtype), batch, act,
                  f"train_{activation}_{np.dtype(dtype).name}_b{batch}")


@cache
def fill_kernel(dtype: str):
    """Compiled kernel gathering per-group features and targets into the lane layout."""
    return _build(_FILL_SRC, "fill", lanes_for(dtype), 1, None, f"fill_{np.dtype(dtype).name}")
