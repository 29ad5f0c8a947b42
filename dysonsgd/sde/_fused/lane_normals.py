"""The fused engine's grid normals for L paths at once, one path per SIMD lane.

The same numbers as :func:`dysonsgd.sde._fused.step._fill_normals` (normal j of path p, step s
is word j % 2 of Philox4x32-10 at the counter (j // 2, p, s, 0), through the 256-layer ziggurat
of :mod:`dysonsgd.sde._fused.philox`), computed for the L = 8 paths of a block of
:mod:`dysonsgd.sde._fused.lanes` with one vector instruction per operation: the counter words
(j // 2, s, 0) and the round keys are the same in every lane, the path index is the lane's.
Philox's 32 x 32 -> 64-bit products are ``vpmuludq`` (both factors masked to 32 bits), the
ziggurat's layer tables are gathered lane by lane, and the sign is the word's bit 8 moved to
the sign bit (-(a w) = (-1.0) (a w) exactly). A draw that misses the ziggurat's rectangle (about
1.5% of them) is redone in :func:`dysonsgd.sde._fused.philox._ziggurat_slow` for its lane.

The output is laid out Z[(q n + j) L + lane] (step q of the sub-block, component j), so that the
increments of a step are contiguous vectors of the lane kernel.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from dysonsgd.sde._fused.philox import _M0, _M1, _W0, _W1, _ziggurat_slow
from dysonsgd.train._numba.simd import SimdVec, vload, vmul, vsplat, vstore

__all__ = ["lane_normals"]

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


@intrinsic
def _gather(typingctx, table, idx):
    """Lane-wise table[idx] (idx in range): a vector of ``table``'s dtype."""
    vt = SimdVec(table.dtype, idx.width)

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        vty = context.get_value_type(vt)
        out = ir.Constant(vty, ir.Undefined)
        for lane in range(idx.width):
            pos = ir.Constant(ir.IntType(32), lane)
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
    for _ in range(9):
        q0 = _mul32(m0, v0)
        q1 = _mul32(m1, v2)
        v0 = _ixor(_ixor(_ishr(q1, s32), v1), vsplat(iref, k0))
        v2 = _ixor(_ixor(_ishr(q0, s32), v3), vsplat(iref, k1))
        v1 = _iand(q1, lo)
        v3 = _iand(q0, lo)
        k0 = (k0 + _W0) & lo32
        k1 = (k1 + _W1) & lo32
    return _ior(_ishl(v0, s32), v1), _ior(_ishl(v2, s32), v3)


@nb.njit(inline="always", error_model="numpy")
def _ziggurat_lanes(word, ki, wi, iref):  # pragma: no cover - compiled
    """The ziggurat's first try on each lane's word: (normal, the lanes that missed, as bits)."""
    idx = _iand(word, vsplat(iref, 255))
    rabs = _iand(_ishr(word, vsplat(iref, 9)), vsplat(iref, _MANTISSA))
    sign = _iand(_ishl(word, vsplat(iref, 55)), vsplat(iref, 1 << 63))
    x = _flip(vmul(_to_float(rabs), _gather(wi, idx)), sign)
    return x, _at_least(rabs, _gather(ki, idx))


@nb.njit(cache=True, error_model="numpy")
def lane_normals(z, path0, step0, count, n, keys, ki, wi, fi, misses):  # pragma: no cover
    """z[(q n + j) L + lane] = the grid normal j of path path0 + lane, step step0 + q (q < count).

    The numbers of :func:`dysonsgd.sde._fused.step._fill_normals` (node 0), L = 8 paths per
    vector; z is a float64 array of at least count n L entries, misses a uint64 work array of
    as many (the words that missed the ziggurat's rectangle, finished after the others).
    """
    iref = np.zeros(1, dtype=np.uint64)
    lanes = 8
    k0, k1 = keys[0], keys[1]
    words = np.empty(lanes, dtype=np.uint64)
    for lane in range(lanes):
        words[lane] = np.uint64(path0 + lane)
    paths = vload(words, 0)
    where = np.empty(misses.size, dtype=np.int64)
    n_miss = 0
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
                                misses[n_miss] = words[lane]
                                where[n_miss] = off + lane
                                n_miss += 1
    for m in range(n_miss):
        e = where[m]
        lane = e % lanes
        j = (e // lanes) % n
        q = e // (lanes * n)
        z[e] = _ziggurat_slow(misses[m], keys, np.uint64(j), np.uint64(path0 + lane),
                              np.uint64(step0 + q), np.uint64(0), ki, wi, fi)
    return z
