"""The fused engine's driver: blocks of steps, chunks of paths on threads.

:func:`dysonsgd.sde.integrate` comes here with a :class:`~dysonsgd.sde._fused.plan.FusedPlan`
(the equation's coefficients on knots and the solver's scheme). Whole blocks of steps then run
in one compiled call per chunk of paths (:func:`dysonsgd.sde._fused.lanes.lane_block`, L paths
per vector, for Dyson Brownian motion; :func:`dysonsgd.sde._fused.step.fused_block`, one path at
a time, for the spacing SDE); normal j of step s of path p is a function of (seed, p, s, j)
only, so the result does not depend on the thread count or on how the paths and steps are split
into blocks. The kernel releases the GIL
and chunks of paths run on ``numba.get_num_threads()`` Python threads (a serial kernel
compiles in a fraction of the time of numba's ``parallel=True``).

K, A = T V and sqrt(D) are evaluated once per step: shared coefficients that vary in time are
interpolated for a block of steps here, per-path ones in the kernel into a buffer.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from dysonsgd.sde._fused.lanes import LANES, lane_block
from dysonsgd.sde._fused.philox import ZIGGURAT
from dysonsgd.sde._fused.plan import FusedPlan
from dysonsgd.sde._fused.step import SUB_STEPS, fused_block

__all__ = ["WORK", "chunk_edges", "integrate_fused", "run_chunks"]

#: target number of trajectory-steps per kernel call
WORK = 2**21


#: worker threads, one pool per thread count, kept between calls (starting threads costs
#: milliseconds per call)
_POOLS: dict[int, ThreadPoolExecutor] = {}


def chunk_edges(n_paths: int, threads: int) -> np.ndarray:
    """Edges (n_chunks + 1,) of the chunks of paths that the threads share: many per thread
    (they balance the paths that need implicit steps or die early, and the threads' shares of
    a busy machine), on whole blocks of lanes (any split gives the same numbers)."""
    n_chunks = min(-(-n_paths // LANES), 16 * threads) if threads > 1 else 1
    return np.minimum(LANES * np.ceil(np.linspace(0, n_paths, n_chunks + 1) / LANES),
                      n_paths).astype(np.int64)


def run_chunks(kernel, edges: np.ndarray, threads: int, tail: tuple) -> None:
    """``kernel(lo, hi, *tail)`` for each chunk [lo, hi) of ``edges``, on ``threads`` threads
    (the kernels release the GIL)."""
    chunks = [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]
    if threads <= 1 or len(chunks) <= 1:
        for lo, hi in chunks:
            kernel(lo, hi, *tail)
        return
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS.setdefault(threads, ThreadPoolExecutor(threads, "dysonsgd-sde"))
    for run in [pool.submit(kernel, lo, hi, *tail) for lo, hi in chunks]:
        run.result()


def _interpolation(knots: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row index and weight of the next row for each time t (held constant outside)."""
    if knots.size == 1:
        return np.zeros(t.size, dtype=np.int64), np.zeros(t.size)
    k = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, knots.size - 2)
    w = (t - knots[k]) / (knots[k + 1] - knots[k])
    below, above = t <= knots[0], t >= knots[-1]
    k = np.where(above, knots.size - 1, k)
    w = np.where(below | above, 0.0, w)
    return k.astype(np.int64), w


def integrate_fused(
    x0: np.ndarray,
    times: np.ndarray,
    steps_per_interval: np.ndarray,
    keys: np.ndarray,
    plan: FusedPlan,
    *,
    block: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate all paths over the grid of ``times`` in blocks of steps.

    Parameters
    ----------
    x0 : (P, N) initial states
    times : (n_times,) output times; steps_per_interval : (n_times - 1,) int
    keys : (4,) uint64, :func:`dysonsgd.sde._fused.philox.keys_from_seed`
    plan : FusedPlan
        The coefficients K (nc, Pk, N), A (nc, Pv, N, N), D (nc, Pv, N) on the knots (nc,) and
        the scheme (see :mod:`dysonsgd.sde._fused.plan`)
    block : steps per kernel call (default: about 2**21 trajectory-steps per call)

    Returns
    -------
    out : (n_times, P, N); dead : (P,) the step at which each path failed, or -1;
    done : (n_times,) the number of steps completed at each output time
    """
    own = getattr(plan.coefficients, "integrate", None)
    if own is not None:  # an equation with its own kernel (EigenvalueSDE: _fused/complete.py)
        return own(x0, times, steps_per_interval, keys, plan.scheme, block=block)
    n_paths, n = x0.shape
    knots, kk, tv, dd, form = plan.coefficients
    scheme = plan.scheme
    counts = np.asarray(steps_per_interval, dtype=np.int64)
    done = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty((times.size, n_paths, n))
    out[0] = x0
    x = np.array(x0, dtype=float, order="C")
    dead = np.full(n_paths, -1, dtype=np.int64)
    shared = kk.shape[1] == 1 and tv.shape[1] == 1 and knots.size > 1
    if block is None:
        block = max(SUB_STEPS, WORK // max(n_paths, 1))
        if shared:
            block = min(block, max(SUB_STEPS, 2**20 // (n * n)))
    threads = max(1, min(numba.get_num_threads(), n_paths))
    # the pairwise form steps L paths per vector (lanes.py); the spacing one path at a time
    kernel = fused_block if form.spacing or n < 2 else lane_block
    edges = chunk_edges(n_paths, threads)
    ki, wi, fi = ZIGGURAT
    gg = np.sqrt(dd)
    spans = np.diff(times)
    for s0 in range(0, int(done[-1]), block):
        s = np.arange(s0, min(s0 + block, int(done[-1])), dtype=np.int64)
        k = np.searchsorted(done, s, side="right") - 1  # the interval of each step
        h = spans[k] / counts[k]
        t = times[k] + (s - done[k]) * h
        rec = np.where(s + 1 == done[k + 1], k + 1, -1).astype(np.int64)
        ci, cw = _interpolation(knots, t)
        if shared:  # the same coefficients for every path: interpolate once per step here
            u, w = (1.0 - cw)[:, None, None], cw[:, None, None]
            nxt = np.minimum(ci + 1, knots.size - 1)
            bk = u * kk[ci] + w * kk[nxt]
            bt = u[..., None] * tv[ci] + w[..., None] * tv[nxt]
            bd = u * dd[ci] + w * dd[nxt]
            args = (bk, bt, np.sqrt(bd), bd)
            ci, cw = np.arange(s.size, dtype=np.int64), np.zeros(s.size)
        else:
            args = (kk, tv, gg, dd)
        run_chunks(kernel, edges, threads,
                   (x, dead, out, rec, s0, h, ci, cw, *args, keys, ki, wi, fi, scheme, form))
    return out, dead, done
