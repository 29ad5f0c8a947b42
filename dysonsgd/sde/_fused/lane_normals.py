"""The fused engine's grid normals for L paths at once, one path per SIMD lane.

The same numbers as :func:`dysonsgd.sde._fused.step._fill_normals` (normal j of path p, step s
is word j % 2 of Philox4x32-10 at the counter (j // 2, p, s, 0), through the 256-layer ziggurat
of :mod:`dysonsgd.sde._fused.philox`), computed for the L = 8 paths of a block of
:mod:`dysonsgd.sde._fused.lanes` with one vector instruction per operation: the counter words
(j // 2, s, 0) and the round keys are the same in every lane, the path index is the lane's.
Philox's 32 x 32 -> 64-bit products are ``vpmuludq`` (both factors masked to 32 bits), the
ziggurat's layer tables are gathered lane by lane, and the sign is the word's bit 8 moved to
the sign bit (-(a w) = (-1.0) (a w) exactly). A draw that misses the ziggurat's rectangle (about
1.5% of them) is finished after the others, their first fresh words again L at a time.

The output is laid out Z[(q n + j) L + lane] (step q of the sub-block, component j), so that the
increments of a step are contiguous vectors of the lane kernel.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from dysonsgd.sde._fused.philox import (
    _M0,
    _M1,
    _W0,
    _W1,
    _uniform,
    _ziggurat_from,
    _ziggurat_slow,
)
from dysonsgd.sde._fused.step import SUB_STEPS, _fill_normals
from dysonsgd.train._numba.simd import SimdVec, vload, vmul, vsplat, vstore

__all__ = ["fill_lane_normals", "lane_normals", "miss_buffer"]

_LO32 = 0xFFFFFFFF
_MANTISSA = 0x000FFFFFFFFFFFFF


def _int_binary(op):
    @intrinsic
    def _impl(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return a(a, b), codegen

    return _impl


_iand = _int_binary("and_")
_ixor = _int_binary("xor")
_ior = _int_binary("or_")
_ishr = _int_binary("lshr")
_ishl = _int_binary("shl")


@intrinsic
def _high(typingctx, a):
    """Lane-wise: the high 32-bit word of each 64-bit lane in its low word (and its high word:
    a 32-bit shuffle, where a shift would take the multiplier's port)."""

    def codegen(context, builder, sig, args):
        width = args[0].type.count
        words = ir.VectorType(ir.IntType(32), 2 * width)
        half = builder.bitcast(args[0], words)
        pick = ir.Constant(ir.VectorType(ir.IntType(32), 2 * width),
                           [2 * (k // 2) + 1 for k in range(2 * width)])
        return builder.bitcast(builder.shuffle_vector(half, half, pick), args[0].type)

    return a(a), codegen


@intrinsic
def _mul32(typingctx, a, b):
    """Lane-wise (a mod 2**32) (b mod 2**32) as 64-bit products (``vpmuludq``)."""

    def codegen(context, builder, sig, args):
        vty = args[0].type
        mask = ir.Constant(vty, [ir.Constant(vty.element, _LO32)] * vty.count)
        return builder.mul(builder.and_(args[0], mask), builder.and_(args[1], mask))

    return a(a, b), codegen


@intrinsic
def _to_float(typingctx, a):
    """Lane-wise int64 -> float64 (exact below 2**53)."""
    vt = SimdVec(types.float64, a.width)

    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], context.get_value_type(vt))

    return vt(a), codegen


@intrinsic
def _flip(typingctx, x, bits):
    """Lane-wise x with its sign bit xor-ed with bit 63 of ``bits`` (an int64 vector)."""

    def codegen(context, builder, sig, args):
        ity = args[1].type
        return builder.bitcast(builder.xor(builder.bitcast(args[0], ity), args[1]), args[0].type)

    return x(x, bits), codegen


#: LLVM 17 on has opaque pointers only, which the masked gather intrinsic's name mangles as p0
_GATHER = llvm.llvm_version_info[0] >= 17


@intrinsic
def _gather(typingctx, table, idx):
    """Lane-wise table[idx] (idx in range): a vector of ``table``'s dtype (one ``vgatherqpd``
    where LLVM's masked gather is at hand by its opaque-pointer name, else lane by lane)."""
    vt = SimdVec(table.dtype, idx.width)

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        vty = context.get_value_type(vt)
        width = idx.width
        i32, i64 = ir.IntType(32), ir.IntType(64)
        if _GATHER:
            ivec = ir.VectorType(i64, width)
            base = builder.insert_element(ir.Constant(ivec, ir.Undefined),
                                          builder.ptrtoint(arr.data, i64), ir.Constant(i32, 0))
            base = builder.shuffle_vector(base, base, ir.Constant(ir.VectorType(i32, width),
                                                                  [0] * width))
            size = context.get_abi_sizeof(vty.element)
            offsets = builder.mul(args[1], ir.Constant(ivec, [size] * width))
            pvec = ir.VectorType(arr.data.type, width)
            ptrs = builder.inttoptr(builder.add(base, offsets), pvec)
            mvec = ir.VectorType(ir.IntType(1), width)
            kind = f"i{vty.element.width}" if isinstance(vty.element, ir.IntType) else "f64"
            name = f"llvm.masked.gather.v{width}{kind}.v{width}p0"
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [pvec, i32, mvec, vty]), name)
            return builder.call(fn, [ptrs, ir.Constant(i32, size), ir.Constant(mvec, [1] * width),
                                     ir.Constant(vty, ir.Undefined)])
        out = ir.Constant(vty, ir.Undefined)
        for lane in range(width):
            pos = ir.Constant(i32, lane)
            ptr = builder.gep(arr.data, [builder.extract_element(args[1], pos)])
            out = builder.insert_element(out, builder.load(ptr), pos)
        return out

    return vt(table, idx), codegen


@intrinsic
def _at_least(typingctx, a, b):
    """The lanes with a >= b (signed) as the bits of an integer (lane l: bit l)."""

    def codegen(context, builder, sig, args):
        width = args[0].type.count
        bits = builder.bitcast(builder.icmp_signed(">=", args[0], args[1]), ir.IntType(width))
        return builder.zext(bits, ir.IntType(64))

    return types.int64(a, b), codegen


@nb.njit(inline="always", error_model="numpy")
def _philox_lanes(c0, paths, c2, k0, k1, iref):  # pragma: no cover - compiled
    """Philox4x32-10 of the counters (c0, paths[lane], c2, 0) under (k0, k1), L lanes.

    c0, c2, k0, k1 scalars (uint64 < 2**32), paths a vector; returns the two words of each lane
    as :func:`dysonsgd.sde._fused.philox._philox`. The first round, where only the path differs
    between the lanes, runs in scalars.
    """
    lo = vsplat(iref, _LO32)
    s32 = vsplat(iref, 32)
    m0 = vsplat(iref, _M0)
    m1 = vsplat(iref, _M1)
    lo32 = np.uint64(_LO32)
    # round 1: p0 = M0 c0, p1 = M1 c2 (and c3 = 0) are the same in every lane
    p0 = _M0 * c0
    p1 = _M1 * c2
    v0 = _ixor(vsplat(iref, (p1 >> np.uint64(32)) ^ k0), paths)
    v1 = vsplat(iref, p1 & lo32)
    v2 = vsplat(iref, (p0 >> np.uint64(32)) ^ k1)
    v3 = vsplat(iref, p0 & lo32)
    k0 = (k0 + _W0) & lo32
    k1 = (k1 + _W1) & lo32
    for _ in range(9):  # the words' high halves may hold anything: _mul32 and the end drop them
        q0 = _mul32(m0, v0)
        q1 = _mul32(m1, v2)
        v0 = _ixor(_ixor(_high(q1), v1), vsplat(iref, k0))
        v2 = _ixor(_ixor(_high(q0), v3), vsplat(iref, k1))
        v1 = q1
        v3 = q0
        k0 = (k0 + _W0) & lo32
        k1 = (k1 + _W1) & lo32
    return _ior(_ishl(v0, s32), _iand(v1, lo)), _ior(_ishl(v2, s32), _iand(v3, lo))


@nb.njit(inline="always", error_model="numpy")
def _philox_any(c0, c1, c2, c3, k0, k1, iref):  # pragma: no cover - compiled
    """Philox4x32-10 of the counters (c0, c1, c2, c3)[lane] (vectors) under (k0, k1)."""
    lo = vsplat(iref, _LO32)
    s32 = vsplat(iref, 32)
    m0 = vsplat(iref, _M0)
    m1 = vsplat(iref, _M1)
    lo32 = np.uint64(_LO32)
    for _ in range(10):  # high halves as in _philox_lanes
        q0 = _mul32(m0, c0)
        q1 = _mul32(m1, c2)
        c0, c2 = (_ixor(_ixor(_high(q1), c1), vsplat(iref, k0)),
                  _ixor(_ixor(_high(q0), c3), vsplat(iref, k1)))
        c1 = q1
        c3 = q0
        k0 = (k0 + _W0) & lo32
        k1 = (k1 + _W1) & lo32
    return _ior(_ishl(c0, s32), _iand(c1, lo)), _ior(_ishl(c2, s32), _iand(c3, lo))


@nb.njit(cache=True, error_model="numpy")
def _finish_misses(z, misses, n_miss, keys, ki, wi, fi):  # pragma: no cover - compiled
    """z[e] = the ziggurat of the words that missed its rectangle: misses[:, m] = (word, e,
    the counter words (1 << 16 | j, path, step) of its first fresh pair).

    As :func:`dysonsgd.sde._fused.philox._ziggurat_slow`: the first fresh pair of words of
    each, under the second key, for L misses at a time in a vector; then the wedge test lane by
    lane, accepted (most), continued from the second word
    (:func:`~dysonsgd.sde._fused.philox._ziggurat_from`), or the tail (layer 0) redone.
    """
    lanes = 8
    iref = np.zeros(1, dtype=np.uint64)
    u1, u2 = np.empty(lanes, dtype=np.uint64), np.empty(lanes, dtype=np.uint64)
    zero = vsplat(iref, 0)
    one = np.uint64(1)
    low = np.uint64(0xFFFF)
    node = np.uint64(0)
    counters, paths, steps = misses[2], misses[3], misses[4]
    for g in range(0, n_miss, lanes):
        a, b = _philox_any(vload(counters, g), vload(paths, g), vload(steps, g), zero, keys[2],
                           keys[3], iref)
        vstore(u1, 0, a)
        vstore(u2, 0, b)
        for lane in range(min(lanes, n_miss - g)):
            m = g + lane
            word = misses[0, m]
            e = np.int64(misses[1, m])
            r = np.int64(word)
            idx = r & 255
            if idx == 0:
                z[e] = _ziggurat_slow(word, keys, counters[m] & low, paths[m], steps[m], node,
                                      ki, wi, fi)
                continue
            x = float((r >> 9) & _MANTISSA) * wi[idx]
            if (r >> 8) & 1:
                x = -x
            if (fi[idx - 1] - fi[idx]) * _uniform(u1[lane]) + fi[idx] < np.exp(-0.5 * x * x):
                z[e] = x
            else:
                z[e] = _ziggurat_from(u2[lane], one, keys, counters[m] & low, paths[m],
                                      steps[m], node, ki, wi, fi)


@nb.njit(inline="always", error_model="numpy")
def _ziggurat_lanes(word, ki, wi, iref):  # pragma: no cover - compiled
    """The ziggurat's first try on each lane's word: (normal, the lanes that missed, as bits)."""
    idx = _iand(word, vsplat(iref, 255))
    rabs = _iand(_ishr(word, vsplat(iref, 9)), vsplat(iref, _MANTISSA))
    sign = _iand(_ishl(word, vsplat(iref, 55)), vsplat(iref, 1 << 63))
    x = _flip(vmul(_to_float(rabs), _gather(wi, idx)), sign)
    return x, _at_least(rabs, _gather(ki, idx))


@nb.njit(cache=True)
def miss_buffer(n):  # pragma: no cover - compiled
    """The work array of :func:`lane_normals` for N = n: (5, SUB_STEPS n L + L) uint64."""
    return np.zeros((5, SUB_STEPS * n * 8 + 8), dtype=np.uint64)


@nb.njit(cache=True, error_model="numpy")
def lane_normals(z, path0, step0, count, n, keys, ki, wi, fi, misses):  # pragma: no cover
    """z[(q n + j) L + lane] = the grid normal j of path path0 + lane, step step0 + q (q < count).

    The numbers of :func:`dysonsgd.sde._fused.step._fill_normals` (node 0), L = 8 paths per
    vector; z is a float64 array of at least count n L entries, misses a work array of
    :func:`miss_buffer` (the words that missed the ziggurat's rectangle, finished after the
    others).
    """
    iref = np.zeros(1, dtype=np.uint64)
    lanes = 8
    k0, k1 = keys[0], keys[1]
    words = np.empty(lanes, dtype=np.uint64)
    for lane in range(lanes):
        words[lane] = np.uint64(path0 + lane)
    paths = vload(words, 0)
    n_miss = 0
    fresh = np.uint64(1 << 16)  # the counter word of the first fresh pair, attempt 1
    for q in range(count):
        step = np.uint64(step0 + q)
        for pair in range((n + 1) // 2):
            a, b = _philox_lanes(np.uint64(pair), paths, step, k0, k1, iref)
            for half in range(2):
                j = 2 * pair + half
                if j < n:
                    word = a if half == 0 else b
                    x, miss = _ziggurat_lanes(word, ki, wi, iref)
                    off = (q * n + j) * lanes
                    vstore(z, off, x)
                    if miss:
                        vstore(words, 0, word)
                        for lane in range(lanes):
                            if (miss >> lane) & 1:
                                misses[0, n_miss] = words[lane]
                                misses[1, n_miss] = np.uint64(off + lane)
                                misses[2, n_miss] = fresh | np.uint64(j)
                                misses[3, n_miss] = np.uint64(path0 + lane)
                                misses[4, n_miss] = step
                                n_miss += 1
    _finish_misses(z, misses, n_miss, keys, ki, wi, fi)
    return z


@nb.njit(inline="always", error_model="numpy")
def fill_lane_normals(z, z1, words, misses, live, path0, step0, count, n, keys, ki, wi,
                      fi):  # pragma: no cover - compiled
    """The grid normals of the live lanes of a block (``live``, (L,) bool) as in
    :func:`lane_normals` (all L lanes at once, the failed paths' unused), or one path at a
    time (:func:`dysonsgd.sde._fused.step._fill_normals`, work arrays z1 (n, SUB_STEPS) and
    words) when at most a quarter of the lanes are live. Returns whether any lane is live."""
    lanes = 8
    n_live = 0
    for lane in range(lanes):
        n_live += live[lane]
    if 4 * n_live > lanes:
        lane_normals(z, path0, step0, count, n, keys, ki, wi, fi, misses)
    elif n_live > 0:
        for lane in range(lanes):
            if live[lane]:
                _fill_normals(z1, words, step0, count, n, np.uint64(path0 + lane), keys, ki,
                              wi, fi)
                for q in range(count):
                    for j in range(n):
                        z[(q * n + j) * lanes + lane] = z1[j, q]
    return n_live > 0
