"""The lane kernels of the fused SDE engine (dysonsgd/sde/_fused/lanes.py, lane_normals.py).

Oracles: the per-path kernel (step._fill_normals, one path at a time in scalars, itself checked
against the Random123 known answers and the normal law in test_sde.py) for the vectorised
normals, which must be the same numbers bit for bit; the per-path kernel step.fused_block for
the lane kernel's steps (to the rounding of the Coulomb sum, as in test_sde.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from dysonsgd.sde import Adaptive, DysonBrownianMotion
from dysonsgd.sde._fused.lane_normals import lane_normals, miss_buffer
from dysonsgd.sde._fused.lanes import LANES, lane_block
from dysonsgd.sde._fused.philox import ZIGGURAT, keys_from_seed
from dysonsgd.sde._fused.plan import fused_plan
from dysonsgd.sde._fused.step import SUB_STEPS, _fill_normals, fused_block


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_lane_normals_are_the_per_path_normals_bit_for_bit(n):
    """Every normal of L paths over a partial sub-block of steps, vectorised, equals the
    per-path kernel's: the same Philox words through the same ziggurat, the ~1.5% of draws
    that miss its rectangle included (over 8 x 13 x 16 = 1,664 draws at n = 16, about 25)."""
    keys = keys_from_seed(7)
    count, path0, step0 = 13, 21, 1000
    z = np.empty(SUB_STEPS * n * LANES)
    misses = miss_buffer(n)
    lane_normals(z, path0, step0, count, n, keys, *ZIGGURAT, misses)
    got = z[: count * n * LANES].reshape(count, n, LANES).transpose(2, 1, 0)
    want = np.empty((LANES, n, SUB_STEPS))
    words = np.empty((2 * ((n + 1) // 2), SUB_STEPS), dtype=np.uint64)
    for lane in range(LANES):
        _fill_normals(want[lane], words, step0, count, n, np.uint64(path0 + lane), keys,
                      *ZIGGURAT)
    np.testing.assert_array_equal(got.view(np.int64), want[:, :, :count].view(np.int64))


def test_lane_kernel_with_a_rounding_asymmetric_noise_matrix():
    """V symmetric only up to rounding (the input check allows it): the lane kernel then takes
    both products A_ij r and A_ji r of a pair, and still takes the per-path kernel's steps to
    the rounding of the Coulomb sum (margins as in test_sde.py's lane test)."""
    n = 16
    k = np.linspace(-0.5, 0.5, n)
    v = np.ones((n, n)) + np.eye(n)
    v[3, 4] = np.nextafter(v[3, 4], 2.0)  # one ulp: V_34 != V_43
    eq = DysonBrownianMotion(k, v, 0.01)
    x0 = np.arange(n) / 15.0
    n_paths, steps = 21, 60
    plan = fused_plan(eq, Adaptive(), n_paths, n, steps)
    _, kk, tv, dd, form = plan.coefficients
    h = np.full(steps, 1e-3)
    rec = np.full(steps, -1, dtype=np.int64)
    rec[-1] = 0
    results = []
    for kernel in (lane_block, fused_block):
        x = np.broadcast_to(x0, (n_paths, n)).copy()
        dead = np.full(n_paths, -1, dtype=np.int64)
        out = np.zeros((1, n_paths, n))
        kernel(0, n_paths, x, dead, out, rec, 0, h, np.zeros(steps, dtype=np.int64),
               np.zeros(steps), kk, tv, np.sqrt(dd), dd, keys_from_seed(5), *ZIGGURAT,
               plan.scheme, form)
        results.append((out, dead))
    (a, dead_a), (b, dead_b) = results
    np.testing.assert_array_equal(dead_a, dead_b)
    assert (dead_a < 0).all()
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_missed_draws_finished_in_vectors_are_the_scalar_ziggurats():
    """The draws that miss the ziggurat's rectangle, finished L at a time (their first fresh
    Philox pair in a vector, then the wedge test, the continuation or the tail lane by lane),
    against the scalar ziggurat on the same labels: 2,800 random words that miss (in the
    layers where they fall) and 200 in the base layer (index 0, whose misses go to the tail
    beyond r), bit for bit."""
    from dysonsgd.sde._fused.lane_normals import _finish_misses
    from dysonsgd.sde._fused.philox import _ziggurat_slow

    ki = ZIGGURAT[0]
    rng = np.random.default_rng(3)
    words = rng.integers(0, 2**63, size=400_000, dtype=np.uint64) * np.uint64(2)
    words += rng.integers(0, 2, size=words.size, dtype=np.uint64)
    r = words.view(np.int64)
    missed = words[((r >> 9) & 0x000FFFFFFFFFFFFF) >= ki[r & 255]]
    layer0 = words[:20_000] & ~np.uint64(255)  # index 0: the base strip, its tail beyond r
    tail = layer0[((layer0.view(np.int64) >> 9) & 0x000FFFFFFFFFFFFF) >= ki[0]]
    chosen = np.concatenate([missed[:2800], tail[:200]])
    assert chosen.size == 3000
    m = chosen.size
    j = rng.integers(0, 16, m).astype(np.uint64)
    path = rng.integers(0, 10**6, m).astype(np.uint64)
    step = rng.integers(0, 10**5, m).astype(np.uint64)
    misses = np.zeros((5, m + LANES), dtype=np.uint64)
    misses[0, :m], misses[1, :m] = chosen, np.arange(m, dtype=np.uint64)
    misses[2, :m], misses[3, :m], misses[4, :m] = (np.uint64(1) << np.uint64(16)) | j, path, step
    keys = keys_from_seed(9)
    z = np.full(m, np.nan)
    _finish_misses(z, misses, m, keys, *ZIGGURAT)
    want = np.array([_ziggurat_slow(chosen[e], keys, j[e], path[e], step[e], np.uint64(0),
                                    *ZIGGURAT) for e in range(m)])
    np.testing.assert_array_equal(z.view(np.int64), want.view(np.int64))
