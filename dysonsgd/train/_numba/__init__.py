"""train/_numba"""
