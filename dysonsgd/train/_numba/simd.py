"""A minimal SIMD vector type for numba, its intrinsics and the kernels' activation forms.

Vectors are a small numba extension type (:class:`SimdVec`, an LLVM ``<L x float>`` of one
64-byte register: ``L = 16`` float32 or ``8`` float64 lanes, see
:func:`dysonsgd.train.plan.lanes_for`) with intrinsics for load, store, FMA, select, ...;
this keeps the generated kernels' inner loops in registers, which numba's auto-vectoriser
does not manage for their loop nest (it cannot prove that the arrays do not alias). The
intrinsics emit plain LLVM instructions without fast-math flags, so each one rounds exactly
once, as written.

The activation forms named in :mod:`dysonsgd.model.activations` (``simd`` and ``scalar``) live
here: each returns ``(phi(z), phi'(z))``. float32 kernels use a clamped rational approximation
of ``tanh`` (odd degree-13 over even degree-6 polynomial, the form used by Eigen/XLA) whose
maximum absolute and relative error on the real line is 4.0e-7 (about 3.3 float32 epsilons),
below the rounding noise of a float32 SGD trajectory; float64 kernels use libm's ``math.tanh``.
GELU's float32 form takes the normal cdf from Abramowitz and Stegun 7.1.26 (absolute error of
erf at most 1.5e-7) with libm's ``exp`` lane by lane; float64 kernels use ``math.erfc``.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from dysonsgd.train.plan import VECTOR_BYTES

__all__ = [
    "SimdVec",
    "gelu_exact",
    "tanh_exact",
    "tanh_fast_f32",
    "vadd",
    "vclamp",
    "vdiv",
    "vexp",
    "vfma",
    "vgelu",
    "videntity",
    "vload",
    "vmul",
    "vpos",
    "vrelu",
    "vsplat",
    "vstore",
    "vsub",
    "vtanh_fast",
    "vwhere",
]

#: bytes of one vector register (AVX-512 width; two AVX2 registers)

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
# the vector type
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
    return SimdVec(arr.dtype, VECTOR_BYTES // (arr.dtype.bitwidth // 8))


def _elem_ptr(context, builder, arrty, arr, off, offty):
    a = context.make_array(arrty)(context, builder, arr)
    off = context.cast(builder, off, offty, types.intp)
    return builder.gep(a.data, [off])


# ------------------------------------------------------------------------------------------------
# intrinsics
# ------------------------------------------------------------------------------------------------


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


@intrinsic
def vexp(typingctx, a):
    """Lane-wise ``exp`` (``llvm.exp``: libm's ``exp`` on each lane, no fast-math)."""

    def codegen(context, builder, sig, args):
        vty = args[0].type
        bits = 32 if isinstance(vty.element, ir.FloatType) else 64
        name = f"llvm.exp.v{vty.count}f{bits}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]), name)
        return builder.call(fn, args)

    return a(a), codegen


# ------------------------------------------------------------------------------------------------
# activation forms of the kernels: (phi(z), phi'(z)); ``ref`` is any array of the vector's dtype
# ------------------------------------------------------------------------------------------------


@njit(inline="always")
def _tanh_rational(x, ref):
    """Rational tanh on a float32 vector (:func:`tanh_fast_f32` lane by lane)."""
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


@njit(inline="always")
def vtanh_fast(z, ref):
    """``(tanh z, 1 - tanh^2 z)`` with the rational tanh (float32 kernels)."""
    h = _tanh_rational(z, ref)
    return h, vsub(vsplat(ref, 1.0), vmul(h, h))


@njit(inline="always")
def vrelu(z, ref):
    """``(relu z, step z)``: ``z * (z > 0)`` and its derivative."""
    return vmul(z, vpos(z)), vpos(z)


@njit(inline="always")
def videntity(z, ref):
    """``(z, 1)``."""
    return z, vsplat(ref, 1.0)


# Abramowitz and Stegun 7.1.26: erfc(x) = t (A1 + t (A2 + ...)) exp(-x^2), t = 1 / (1 + p x),
# x >= 0, absolute error <= 1.5e-7; here x = |z| / sqrt(2), so p / sqrt(2) multiplies |z|
_AS_P = 0.3275911 / math.sqrt(2.0)
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(inline="always")
def vgelu(z, ref):
    """``(z Phi(z), Phi(z) + z phi(z))``: GELU with the cdf of A&S 7.1.26 (float32 kernels)."""
    one = vsplat(ref, 1.0)
    g = vexp(vmul(vmul(z, z), vsplat(ref, -0.5)))  # exp(-z^2/2) = sqrt(2 pi) phi(z)
    pos = vpos(z)
    az = vwhere(pos, z, vsub(vsplat(ref, 0.0), z))
    t = vdiv(one, vfma(vsplat(ref, _AS_P), az, one))
    p = vfma(vsplat(ref, _AS_A[4]), t, vsplat(ref, _AS_A[3]))
    p = vfma(p, t, vsplat(ref, _AS_A[2]))
    p = vfma(p, t, vsplat(ref, _AS_A[1]))
    p = vfma(p, t, vsplat(ref, _AS_A[0]))
    tail = vmul(vmul(vmul(p, t), g), vsplat(ref, 0.5))  # Phi(-|z|)
    cdf = vwhere(pos, vsub(one, tail), tail)
    return vmul(z, cdf), vfma(vmul(z, g), vsplat(ref, _INV_SQRT_2PI), cdf)


@njit(inline="always")
def gelu_exact(z):
    """``(z Phi(z), Phi(z) + z phi(z))`` of a scalar with libm's ``erfc`` (float64 kernels)."""
    cdf = 0.5 * math.erfc(-z * 0.7071067811865476)
    return z * cdf, cdf + z * math.exp(-0.5 * z * z) * 0.3989422804014327


@njit(inline="always")
def tanh_exact(z):
    """``(tanh z, 1 - tanh^2 z)`` of a scalar with libm's ``tanh`` (float64 kernels)."""
    h = math.tanh(z)
    return h, 1.0 - h * h
