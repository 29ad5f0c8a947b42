"""The numba training backend: SIMD vector type (simd), kernel generation (codegen), driver
(engine)."""
