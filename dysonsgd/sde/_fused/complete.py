"""The fused kernel of the complete eigenvalue SDE (:class:`dysonsgd.sde.complete.EigenvalueSDE`).

    dx_i = [K_i + T q_i + lr (m_i - g_ii^2) + sum_{j != i} W_ij / (x_i - x_j)] dt
           + 2 sqrt(T) s_i (L dB)_i,       W_ij = T V_ij + lr P_ij,  s_i = sqrt(max(x_i, 0)),

with K_i = -2 s_i g_ii, V_ij = x_i v_ji + x_j v_ij + 2 s_i s_j c_ij and
P_ij = (s_i g_ji + s_j g_ij)^2 (i != j) evaluated at the current state of every step (and of
every refined half-step), from gradient moments that are linear in t between knots, like the
Cholesky factor L of Sigma (as :meth:`EigenvalueSDE._at` interpolates them); see
:func:`dysonsgd.measure.moments.coefficients_at`. The steps are the solvers' schemes as in
:mod:`dysonsgd.sde._fused.step` (Euler-Maruyama, the drift-implicit Coulomb step with
:func:`~dysonsgd.sde._fused.implicit.implicit_step` on the weights W, Brownian-bridge
refinement of a rejected step), so the fused engine takes the general engine's steps; only the
random numbers differ: normal j of step s of path p (bridge node m) is the counter-based normal
labelled (seed, p, s, m, j) of :mod:`dysonsgd.sde._fused.philox`, the same labels as the
Dyson Brownian motion kernel's.

    complete.py        MomentKnots (the equation's side), knot_moments, the driver
                       integrate_complete: blocks of steps, chunks of paths on threads
    complete_lanes.py  the explicit step of L = 8 paths per SIMD vector (N >= 2), each pair's
                       weight and division once for the L paths
    complete_step.py   the per-path step: moments interpolated at a time, the implicit Coulomb
                       step, the Brownian-bridge refinement (and N = 1)

A path's arithmetic does not depend on the other paths, so its trajectory is bitwise the same
whatever the thread count, the paths it shares a vector with, or the split of paths into chunks
and of steps into blocks.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from dysonsgd.sde._fused.complete_lanes import complete_lane_block
from dysonsgd.sde._fused.complete_step import complete_block
from dysonsgd.sde._fused.driver import WORK, chunk_edges, run_chunks
from dysonsgd.sde._fused.philox import ZIGGURAT
from dysonsgd.sde._fused.plan import FusedForm, FusedScheme
from dysonsgd.sde._fused.step import SUB_STEPS

__all__ = ["MomentKnots", "integrate_complete", "knot_moments"]


class MomentKnots(NamedTuple):
    """The complete SDE's moments on knots, for the kernel (the equation's fused side).

    Attributes
    ----------
    knots : ndarray, shape (nc,)
        Times of the moments (nc = 1: constant); linear in t between them, constant outside.
    moments : tuple of ndarray
        (g, m, q, v, c, L): the fields mean, mean_square, ito, variance, cross of
        :class:`~dysonsgd.measure.moments.SingularMoments` and the lower Cholesky factor L of
        Sigma; the matrices flattened row-major to (nc, Pm, N^2), m and q (nc, Pm, N);
        C-contiguous float64 (:func:`knot_moments`). Pm is 1 (shared) or the number of paths
        (one model per path).
    temperature, learning_rate : float
        T and lr (0: the continuum limit).
    form : FusedForm
        The domain (``wall``: x_1 > 0) and the implicit step's Newton settings.
    """

    knots: np.ndarray
    moments: tuple
    temperature: float
    learning_rate: float
    form: FusedForm

    def integrate(self, x0, times, steps_per_interval, keys, scheme: FusedScheme, *,
                  block: int | None = None):
        """:func:`integrate_complete` with these moments (the fused driver's entry)."""
        return integrate_complete(x0, times, steps_per_interval, keys, self, scheme,
                                  block=block)


def knot_moments(mean, mean_square, ito, variance, cross, factor) -> tuple:
    """:attr:`MomentKnots.moments` from arrays (nc, Pm, N, N) (mean, variance, cross, factor)
    and (nc, Pm, N) (mean_square, ito): views, copies only of arrays that are not contiguous.
    """
    n = mean.shape[-1]

    def flat(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=float).reshape(*a.shape[:-2], n * n)

    return (flat(mean), np.ascontiguousarray(mean_square, dtype=float),
            np.ascontiguousarray(ito, dtype=float), flat(variance), flat(cross), flat(factor))


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def integrate_complete(x0: np.ndarray, times: np.ndarray, steps_per_interval: np.ndarray,
                       keys: np.ndarray, coefficients: MomentKnots, scheme: FusedScheme, *,
                       block: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate all paths of the complete SDE over the grid of ``times`` in blocks of steps.

    Parameters
    ----------
    x0 : (P, N) initial states
    times : (n_times,) output times; steps_per_interval : (n_times - 1,) int
    keys : (4,) uint64, :func:`dysonsgd.sde._fused.philox.keys_from_seed`
    coefficients : MomentKnots; scheme : FusedScheme
    block : steps per kernel call (default: about 2**21 trajectory-steps per call)

    Returns
    -------
    out : (n_times, P, N); dead : (P,) the step at which each path failed, or -1;
    done : (n_times,) the number of steps completed at each output time
    (as :func:`dysonsgd.sde._fused.driver.integrate_fused`)
    """
    n_paths, n = x0.shape
    knots = np.ascontiguousarray(coefficients.knots, dtype=float)
    moments = coefficients.moments
    temperature, lr = float(coefficients.temperature), float(coefficients.learning_rate)
    form = coefficients.form
    counts = np.asarray(steps_per_interval, dtype=np.int64)
    done = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty((times.size, n_paths, n))
    out[0] = x0
    x = np.array(x0, dtype=float, order="C")
    dead = np.full(n_paths, -1, dtype=np.int64)
    if block is None:
        block = max(SUB_STEPS, WORK // max(n_paths, 1))
    threads = max(1, min(nb.get_num_threads(), n_paths))
    # L paths per vector (complete_lanes.py) for N >= 2, chunks of paths as the Dyson Brownian
    # motion driver's
    kernel = complete_lane_block if n >= 2 else complete_block
    edges = chunk_edges(n_paths, threads)
    ki, wi, fi = ZIGGURAT
    spans = np.diff(times)
    for s0 in range(0, int(done[-1]), block):
        s = np.arange(s0, min(s0 + block, int(done[-1])), dtype=np.int64)
        k = np.searchsorted(done, s, side="right") - 1  # the interval of each step
        h = spans[k] / counts[k]
        t = times[k] + (s - done[k]) * h  # as the general engine's clock
        rec = np.where(s + 1 == done[k + 1], k + 1, -1).astype(np.int64)
        run_chunks(kernel, edges, threads, (x, dead, out, rec, s0, h, t, knots, moments,
                                            temperature, lr, keys, ki, wi, fi, scheme, form))
    return out, dead, done
