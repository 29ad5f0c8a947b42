"""Counter-based Gaussian increments: Philox4x32-10 and a 256-layer ziggurat.

Every normal is a pure function of (key, path, step, component, bridge node): the fused
integrator (:mod:`dysonsgd.sde._fused.step`) draws the same numbers whatever the thread count,
the block of steps or the split of paths over threads. Philox4x32-10 is the counter-based
generator of Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC'11), which passes
BigCrush; it maps a 128-bit counter and a 64-bit key to 128 random bits. The ziggurat is
Marsaglia and Tsang's (J. Stat. Softw. 5, 2000) with 256 layers and 52-bit mantissas, as in
numpy's Generator.standard_normal: one 64-bit word per normal in 99.3% of draws, exact tail.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from dysonsgd.sde.brownian import seed_sequence

__all__ = ["ZIGGURAT", "keys_from_seed", "normals", "philox4x32", "standard_normals"]

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_LO32 = np.uint64(0xFFFFFFFF)
_S11 = np.uint64(11)
_S16 = np.uint64(16)
_S32 = np.uint64(32)
_ONE = np.uint64(1)
_INV53 = 1.0 / 9007199254740992.0
_ZIG_R = 3.6541528853610088
_ZIG_V = 0.00492867323399


def _ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer tables (ki, wi, fi) of the 256-layer ziggurat for exp(-x^2/2).

    Layer i > 0 spans [0, x_i] x [f(x_i), f(x_{i-1})] with x_255 = r and equal areas v; layer 0
    is the base strip with the tail beyond r. ki[i] = 2^52 x_{i-1}/x_i is the accept threshold
    of the inner rectangle, wi[i] = x_i / 2^52, fi[i] = f(x_i).
    """
    m1 = 2.0**52
    ki = np.zeros(256, dtype=np.int64)
    wi = np.zeros(256)
    fi = np.zeros(256)
    dn = tn = _ZIG_R
    q = _ZIG_V / np.exp(-0.5 * dn * dn)
    ki[0] = np.int64((dn / q) * m1)
    wi[0] = q / m1
    wi[255] = dn / m1
    fi[0] = 1.0
    fi[255] = np.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = np.sqrt(-2.0 * np.log(_ZIG_V / dn + np.exp(-0.5 * dn * dn)))
        ki[i + 1] = np.int64((dn / tn) * m1)
        tn = dn
        fi[i] = np.exp(-0.5 * dn * dn)
        wi[i] = dn / m1
    return ki, wi, fi


#: (ki, wi, fi) passed to the kernels as arguments (module globals would be frozen into the
#: on-disk cache of every kernel that reads them)
ZIGGURAT = _ziggurat_tables()


@nb.njit(inline="always", error_model="numpy")
def _philox(c0, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Philox4x32-10 of the counter (c0, c1, c2, c3) under the key (k0, k1), all < 2^32.

    Returns the 128 output bits as two uint64 words (out0 << 32 | out1, out2 << 32 | out3).
    """
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        n0 = (p1 >> _S32) ^ c1 ^ k0
        n2 = (p0 >> _S32) ^ c3 ^ k1
        c1 = p1 & _LO32
        c3 = p0 & _LO32
        c0 = n0
        c2 = n2
        k0 = (k0 + _W0) & _LO32
        k1 = (k1 + _W1) & _LO32
    return (c0 << _S32) | c1, (c2 << _S32) | c3


@nb.njit(cache=True, error_model="numpy")
def philox4x32(counters, key):  # pragma: no cover - compiled
    """Philox4x32-10 of each row of ``counters`` (M, 4) under ``key`` (2,): (M, 4) uint64 words.

    For the known-answer tests of Random123 (``kat_vectors``).
    """
    m = counters.shape[0]
    out = np.empty((m, 4), dtype=np.uint64)
    for r in range(m):
        a, b = _philox(
            counters[r, 0], counters[r, 1], counters[r, 2], counters[r, 3], key[0], key[1]
        )
        out[r, 0] = a >> _S32
        out[r, 1] = a & _LO32
        out[r, 2] = b >> _S32
        out[r, 3] = b & _LO32
    return out


@nb.njit(inline="always", error_model="numpy")
def _uniform(word):  # pragma: no cover - compiled
    """The top 53 bits of a uint64 word as a double in [0, 1)."""
    return float(word >> _S11) * _INV53


@nb.njit(cache=True, error_model="numpy")
def _ziggurat_from(word, attempt, keys, j, path, step, node, ki, wi, fi):  # pragma: no cover
    """The ziggurat from ``word``, the draw after ``attempt`` fresh pairs of words (see
    :func:`_ziggurat_slow`, which starts at attempt 0)."""
    while True:
        r = np.int64(word)
        idx = r & 255
        rabs = (r >> 9) & 0x000FFFFFFFFFFFFF
        x = float(rabs) * wi[idx]
        if (r >> 8) & 1:
            x = -x
        if rabs < ki[idx]:
            return x
        attempt += _ONE
        u1, u2 = _philox((attempt << _S16) | j, path, step, node, keys[2], keys[3])
        if idx == 0:  # the tail beyond r (Marsaglia's method)
            while True:
                xx = -np.log1p(-_uniform(u1)) / _ZIG_R
                yy = -np.log1p(-_uniform(u2))
                if yy + yy > xx * xx:
                    return -(_ZIG_R + xx) if (rabs >> 8) & 1 else _ZIG_R + xx
                attempt += _ONE
                u1, u2 = _philox((attempt << _S16) | j, path, step, node, keys[2], keys[3])
        elif (fi[idx - 1] - fi[idx]) * _uniform(u1) + fi[idx] < np.exp(-0.5 * x * x):
            return x
        word = u2


@nb.njit(cache=True, error_model="numpy")
def _ziggurat_slow(word, keys, j, path, step, node, ki, wi, fi):  # pragma: no cover - compiled
    """The ziggurat after a first word failed the fast test: wedge, tail, fresh words.

    Fresh words come from Philox under the second key (keys[2], keys[3]) at the counter
    (attempt << 16 | j, path, step, node), so they are again a function of the normal's label.
    """
    return _ziggurat_from(word, np.uint64(0), keys, j, path, step, node, ki, wi, fi)


@nb.njit(inline="always", error_model="numpy")
def normals(z, n, keys, path, step, node, ki, wi, fi):  # pragma: no cover - compiled
    """z[:n] = the standard normals labelled (path, step, node, j) for j < n.

    Normal j uses word j % 2 of Philox(j // 2, path, step, node) under (keys[0], keys[1]):
    52 bits of mantissa, a sign bit and 8 bits of layer index (bits 9-60, 8, 0-7).
    """
    for lane in range((n + 1) // 2):
        a, b = _philox(np.uint64(lane), path, step, node, keys[0], keys[1])
        for half in range(2):
            j = 2 * lane + half
            if j < n:
                word = a if half == 0 else b
                r = np.int64(word)
                idx = r & 255
                rabs = (r >> 9) & 0x000FFFFFFFFFFFFF
                if rabs < ki[idx]:
                    x = float(rabs) * wi[idx]
                    z[j] = -x if (r >> 8) & 1 else x
                else:
                    z[j] = _ziggurat_slow(word, keys, np.uint64(j), path, step, node, ki, wi, fi)


@nb.njit(parallel=True, cache=True, error_model="numpy")
def standard_normals(keys, n_paths, n_steps, n, node, ki, wi, fi):  # pragma: no cover
    """The fused integrator's normals for paths < n_paths, steps < n_steps: (n_paths, n_steps, n).

    ``keys`` is the (4,) uint64 key array of :func:`keys_from_seed`.
    """
    out = np.empty((n_paths, n_steps, n))
    for p in nb.prange(n_paths):
        for s in range(n_steps):
            normals(out[p, s], n, keys, np.uint64(p), np.uint64(s), np.uint64(node), ki, wi, fi)
    return out


def keys_from_seed(seed) -> np.ndarray:
    """(4,) uint64: the two Philox keys (normals; ziggurat rejections) of a seed or SeedSequence."""
    return seed_sequence(seed).generate_state(4, np.uint32).astype(np.uint64)
