"""Random-matrix theory at initialisation: Marchenko-Pastur, Wishart moments, level spacings.

Contents
--------
marchenko_pastur
    The Marchenko-Pastur law (4.2) as a :mod:`scipy.stats` continuous distribution with shape
    parameters ``ratio`` (r = n2/n1) and ``sigma2`` (sigma_W^2), closed-form pdf, cdf and moments.
wigner_surmise
    The beta = 1 Wigner surmise for nearest-neighbour spacings (unit mean).
wishart_moments
    Mean and covariance of J = W^T W at initialisation, eq. (2.24).
initial_spacing_bound, spacing_ratios, spacing_coefficients
    The bound (4.14) on the average level spacing at initialisation (the spacing S (4.5)
    itself is :func:`dysonsgd.measure.spectrum.mean_level_spacing`), nearest-neighbour
    spacing ratios, and the coefficients K_S, V_S, D_S of the level-spacing equation
    (B.7)-(B.9).

All functions are pure: arrays in, arrays out, and every one checks its input first.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.special import comb

from dysonsgd._checks import InputError, check_array, check_in_range, check_int, check_positive

__all__ = [
    "initial_spacing_bound",
    "marchenko_pastur",
    "marchenko_pastur_edges",
    "marchenko_pastur_gen",
    "spacing_coefficients",
    "spacing_ratio_mean",
    "spacing_ratios",
    "wigner_surmise",
    "wigner_surmise_gen",
    "wishart_moments",
]


# --------------------------------------------------------------------------------------------
# Marchenko-Pastur law, eq. (4.2)
# --------------------------------------------------------------------------------------------


def _edges(ratio, sigma2):
    sq = np.sqrt(ratio)
    return sigma2 * (1.0 - sq) ** 2, sigma2 * (1.0 + sq) ** 2


def marchenko_pastur_edges(ratio: float, sigma2: float) -> tuple[float, float]:
    """Support edges x_-, x_+ = sigma2 (1 -/+ sqrt(ratio))^2 of the Marchenko-Pastur law (4.2).

    Parameters
    ----------
    ratio : float
        r = n2/n1 in (0, 1].
    sigma2 : float
        Variance scale sigma_W^2 > 0.

    Returns
    -------
    (x_minus, x_plus) : tuple of float
    """
    ratio = check_in_range("ratio", ratio, 0.0, 1.0, low_open=True)
    sigma2 = check_positive("sigma2", sigma2)
    lo, hi = _edges(ratio, sigma2)
    return float(lo), float(hi)


def _mp_unit_tail(u, ratio, upper: bool):
    """Lower tail F(u) (or, with ``upper``, 1 - F(u)) of the unit-scale law inside the support.

    With R(u) = (b - u)(u - a), m = (a + b)/2 = 1 + r, h = (b - a)/2 = 2 sqrt(r), the
    antiderivative of sqrt(R)/u is

        G(u) = sqrt(R) + m arcsin((u - m)/h) - sqrt(ab) arcsin((m u - ab)/(h u)),

    with sqrt(ab) = 1 - r and G(b) - G(a) = 2 pi r, so F(u) = (G(u) - G(a)) / (2 pi r).
    Both arcsin arguments tend to -1 at u = a and to +1 at u = b, where arcsin is
    ill-conditioned; the half-angle forms arcsin(y) + pi/2 = 2 arcsin(sqrt((1 + y)/2)) and
    pi/2 - arcsin(y) = 2 arcsin(sqrt((1 - y)/2)) use 1 + y = (u - a)/h, b (u - a)/(h u) and
    1 - y = (b - u)/h, a (b - u)/(h u), which carry no cancellation. This keeps full relative
    accuracy in the tail it measures, including the hard edge x_- = 0 of ratio = 1.
    """
    a, b = _edges(ratio, 1.0)
    m = 1.0 + ratio
    h = 2.0 * np.sqrt(ratio)
    rad = np.sqrt(np.clip((b - u) * (u - a), 0.0, None))
    if upper:
        gap, end = b - u, a
        sign = -1.0
    else:
        gap, end = u - a, b
        sign = 1.0
    gap = np.clip(gap, 0.0, None)
    t1 = 2.0 * np.arcsin(np.clip(np.sqrt(gap / (2.0 * h)), 0.0, 1.0))
    t2 = 2.0 * np.arcsin(np.clip(np.sqrt(end * gap / (2.0 * h * u)), 0.0, 1.0))
    g = sign * rad + m * t1 - (1.0 - ratio) * t2
    return np.clip(g / (2.0 * np.pi * ratio), 0.0, 1.0)


def _mp_unit_cdf(u, ratio, upper: bool = False):
    """CDF (or survival function) of the unit-scale law: each tail from its own formula.

    The lower form is exact near x_-, the upper near x_+; each side of the centre 1 + r uses
    the form of its own tail, so the cdf and the sf keep full relative accuracy in the tail
    where they are small, and 1 - cdf = sf to rounding everywhere.
    """
    lower_side = u < 1.0 + ratio
    near = _mp_unit_tail(u, ratio, upper=upper)
    far = 1.0 - _mp_unit_tail(u, ratio, upper=not upper)
    own_side = ~lower_side if upper else lower_side
    return np.where(own_side, near, far)


def _narayana_moment(n: int, ratio):
    """E[x^n] of the unit-scale law: the Narayana polynomial sum_k r^k/(k+1) C(n,k) C(n-1,k)."""
    k = np.arange(n)
    coef = comb(n, k) * comb(n - 1, k) / (k + 1.0)
    ratio = np.asarray(ratio, dtype=float)
    return np.sum(coef * ratio[..., None] ** k, axis=-1)


class marchenko_pastur_gen(stats.rv_continuous):
    r"""Marchenko-Pastur law of the eigenvalues of X = W W^T, eq. (4.2).

    For W of shape (n2, n1) with i.i.d. entries N(0, sigma2/n1) and ratio r = n2/n1 <= 1, the
    eigenvalue density of X tends, for large n1, n2 at fixed r, to

    .. math::

        P(x) = \frac{\sqrt{(x_+ - x)(x - x_-)}}{2\pi \sigma^2 r x}, \qquad
        x_\pm = \sigma^2 (1 \pm \sqrt r)^2 .

    Shape parameters
    ----------------
    ratio : float in (0, 1]
        r = n2/n1.
    sigma2 : float > 0
        The variance scale sigma_W^2.

    Notes
    -----
    The cdf and sf are closed form with full relative accuracy in both tails (see
    :func:`_mp_unit_cdf`); the raw moments are the Narayana
    polynomials, E[x^n] = sigma2^n sum_{k=0}^{n-1} r^k/(k+1) C(n,k) C(n-1,k), so that
    mean = sigma2, var = sigma2^2 r, skewness = sqrt(r) and excess kurtosis = r - 1.
    The ppf inverts the closed-form cdf by vectorised bisection in sqrt(x - x_-) (to
    machine precision, also at the hard edge of ratio = 1) and
    ``rvs`` draws exactly from the limiting law by inversion.

    Calling the distribution with invalid shape parameters (``marchenko_pastur(ratio=2, ...)``)
    raises ``ValueError`` naming the parameter; the unfrozen methods follow the scipy
    convention and return NaN.

    Examples
    --------
    >>> mp = marchenko_pastur(ratio=0.5, sigma2=1 / 64)
    >>> round(mp.support()[1], 4)
    0.0455
    """

    def _shape_info(self):
        return [
            stats._distn_infrastructure._ShapeInfo("ratio", False, (0, 1), (False, True)),
            stats._distn_infrastructure._ShapeInfo("sigma2", False, (0, np.inf), (False, False)),
        ]

    def _argcheck(self, ratio, sigma2):
        return (ratio > 0) & (ratio <= 1) & (sigma2 > 0) & np.isfinite(sigma2)

    def _get_support(self, ratio, sigma2):
        return _edges(ratio, sigma2)

    def _pdf(self, x, ratio, sigma2):
        lo, hi = _edges(ratio, sigma2)
        rad = np.sqrt(np.clip((hi - x) * (x - lo), 0.0, None))
        return rad / (2.0 * np.pi * sigma2 * ratio * x)

    def _cdf(self, x, ratio, sigma2):
        return _mp_unit_cdf(x / sigma2, ratio)

    def _sf(self, x, ratio, sigma2):
        return _mp_unit_cdf(x / sigma2, ratio, upper=True)

    def _ppf(self, q, ratio, sigma2):
        q, ratio, sigma2 = np.broadcast_arrays(q, ratio, sigma2)
        a, b = _edges(ratio, 1.0)
        # bisect in w = sqrt(u - a): near a hard edge (ratio -> 1) the cdf grows like sqrt(u),
        # and w resolves u there to relative, not absolute, precision; 100 halvings reach
        # double precision for any q >= 1e-300
        lo = np.zeros(q.shape)
        hi = np.array(np.sqrt(b - a), dtype=float)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            below = _mp_unit_cdf(a + mid * mid, ratio) < q
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        w = 0.5 * (lo + hi)
        return sigma2 * (a + w * w)

    def _munp(self, n, ratio, sigma2):
        return sigma2**n * _narayana_moment(int(n), ratio)

    def _stats(self, ratio, sigma2):
        mean = sigma2
        var = sigma2**2 * ratio
        skew = np.sqrt(ratio)
        kurt = ratio - 1.0
        return mean, var, skew, kurt

    def _rvs(self, ratio, sigma2, size=None, random_state=None):
        u = random_state.uniform(size=size)
        return self._ppf(u, ratio, sigma2)

    def freeze(self, *args, **kwds):
        _check_mp_shapes(*args, **kwds)
        return super().freeze(*args, **kwds)

    def __call__(self, *args, **kwds):
        return self.freeze(*args, **kwds)


def _check_mp_shapes(*args, **kwds):
    names = ("ratio", "sigma2")
    values = dict(zip(names, args, strict=False))
    values.update({k: v for k, v in kwds.items() if k in names})
    missing = [n for n in names if n not in values]
    if missing:
        raise InputError(f"marchenko_pastur needs the shape parameter(s) {', '.join(missing)}")
    check_in_range("ratio", values["ratio"], 0.0, 1.0, low_open=True)
    check_positive("sigma2", values["sigma2"])


marchenko_pastur = marchenko_pastur_gen(name="marchenko_pastur", shapes="ratio, sigma2")


# --------------------------------------------------------------------------------------------
# Wigner surmise (beta = 1)
# --------------------------------------------------------------------------------------------


class wigner_surmise_gen(stats.rv_continuous):
    r"""The beta = 1 (GOE) Wigner surmise for spacings with unit mean.

    .. math:: P(s) = \frac{\pi s}{2} e^{-\pi s^2/4}, \qquad F(s) = 1 - e^{-\pi s^2/4}.

    It is exact for the spacing of a 2x2 GOE matrix (scaled to unit mean) and a close
    approximation for large matrices. Mean 1, variance 4/pi - 1.
    """

    def _shape_info(self):
        return []

    def _get_support(self):
        return 0.0, np.inf

    def _pdf(self, s):
        return 0.5 * np.pi * s * np.exp(-0.25 * np.pi * s * s)

    def _cdf(self, s):
        return -np.expm1(-0.25 * np.pi * s * s)

    def _sf(self, s):
        return np.exp(-0.25 * np.pi * s * s)

    def _ppf(self, q):
        return np.sqrt(-4.0 * np.log1p(-q) / np.pi)

    def _isf(self, q):
        return np.sqrt(-4.0 * np.log(q) / np.pi)

    def _stats(self):
        mean = 1.0
        var = 4.0 / np.pi - 1.0
        skew = 2.0 * (np.pi - 3.0) * np.sqrt(np.pi) / (4.0 - np.pi) ** 1.5
        kurt = -(6.0 * np.pi**2 - 24.0 * np.pi + 16.0) / (4.0 - np.pi) ** 2
        return mean, var, skew, kurt

    def _munp(self, n):
        # E[s^n] = (4/pi)^(n/2) Gamma(1 + n/2)
        return (4.0 / np.pi) ** (0.5 * n) * math.gamma(1.0 + 0.5 * n)


wigner_surmise = wigner_surmise_gen(name="wigner_surmise", a=0.0)


# --------------------------------------------------------------------------------------------
# Wishart moments at initialisation, eq. (2.24)
# --------------------------------------------------------------------------------------------


def wishart_moments(n_out: int, n_hidden: int, sigma2: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the couplings J = W^T W at initialisation, eq. (2.24).

    W has shape (n_out, n_hidden) = (n_L, n_{L-1}) with entries N(0, sigma2 / n_hidden), so

        E[J_ij]          = n_out sigma2 / n_hidden delta_ij,
        Cov[J_ij, J_kl]  = n_out sigma2^2 / n_hidden^2 (delta_ik delta_jl + delta_il delta_jk).

    Parameters
    ----------
    n_out : int
        Rows of W (n_L, the width of the output layer).
    n_hidden : int
        Columns of W (n_{L-1}, the number of soft spins).
    sigma2 : float
        sigma_W^2 > 0.

    Returns
    -------
    mean : ndarray, shape (n_hidden, n_hidden)
    cov : ndarray, shape (n_hidden, n_hidden, n_hidden, n_hidden)
        ``cov[i, j, k, l] = Cov[J_ij, J_kl]``.
    """
    n_out = check_int("n_out", n_out)
    n_hidden = check_int("n_hidden", n_hidden)
    sigma2 = check_positive("sigma2", sigma2)
    eye = np.eye(n_hidden)
    mean = n_out * sigma2 / n_hidden * eye
    cov = (
        n_out
        * sigma2**2
        / n_hidden**2
        * (np.einsum("ik,jl->ijkl", eye, eye) + np.einsum("il,jk->ijkl", eye, eye))
    )
    return mean, cov


# --------------------------------------------------------------------------------------------
# Level spacings, eqs. (4.5), (4.14), (B.2), (B.7), (B.9)
# --------------------------------------------------------------------------------------------


def initial_spacing_bound(sigma2: float, ratio: float, n: int) -> float:
    """Bound (4.14) on the mean spacing at initialisation: 4 sigma2 sqrt(r) / (n - 1).

    This is (x_+ - x_-)/(n - 1) for the Marchenko-Pastur law, with n = n2 eigenvalues.

    Parameters
    ----------
    sigma2 : float
        sigma_W^2 > 0.
    ratio : float
        r = n2/n1 in (0, 1].
    n : int
        Number of eigenvalues n2 >= 2.
    """
    sigma2 = check_positive("sigma2", sigma2)
    ratio = check_in_range("ratio", ratio, 0.0, 1.0, low_open=True)
    n = check_int("n", n, minimum=2)
    return 4.0 * sigma2 * math.sqrt(ratio) / (n - 1)


def spacing_ratios(eigenvalues, axis: int = -1, tilde: bool = False) -> np.ndarray:
    """Nearest-neighbour spacing ratios r_i = s_i / s_{i-1} of sorted eigenvalues.

    No unfolding is needed, which makes them the standard diagnostic of level repulsion
    (Oganesyan and Huse 2007; Atas et al. 2013).

    Parameters
    ----------
    eigenvalues : array_like, shape (..., N, ...)
        N >= 3 eigenvalues along ``axis``, in any order (they are sorted here).
    tilde : bool
        Return r~_i = min(r_i, 1/r_i) in [0, 1] instead.

    Returns
    -------
    ndarray, shape (..., N - 2, ...)
    """
    x = check_array("eigenvalues", eigenvalues)
    if x.shape[axis] < 3:
        raise InputError(f"eigenvalues needs at least 3 entries along axis {axis}")
    s = np.diff(np.sort(x, axis=axis), axis=axis)
    s = np.moveaxis(s, axis, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = s[..., 1:] / s[..., :-1]
        if tilde:
            r = np.minimum(r, 1.0 / r)
    return np.moveaxis(r, -1, axis)


def spacing_ratio_mean(ensemble: str = "goe", tilde: bool = True) -> float:
    """Reference mean of r~ (``tilde=True``) for large matrices.

    ``"goe"``: 0.5307 (Atas et al. 2013, numerically exact for large N); ``"poisson"``:
    2 ln 2 - 1 = 0.3863. Only the tilde version has a finite mean for Poisson levels.
    """
    table = {"goe": 0.5307, "poisson": 2.0 * math.log(2.0) - 1.0}
    if not tilde:
        raise InputError("tilde must be True: the mean of the untilded ratio diverges (Poisson)")
    if ensemble not in table:
        raise InputError(f"ensemble must be one of {sorted(table)}, got {ensemble!r}")
    return table[ensemble]


def spacing_coefficients(drift, noise) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients K_S, V_S, D_S of the level-spacing equation (4.8), eqs. (B.7) and (B.9).

    With eigenvalues ordered x_1 < ... < x_N and the ansatz (B.5),

        K_S = (K_N - K_1)/(N - 1),
        V_S = 2 V_N1/(N - 1)^2 + 1/(N - 1) sum_{k=1}^{N-2} (V_{N,N-k} + V_{1,k+1})/k,
        D_S = (V_11 + V_NN) / (2 (N - 1)^2),

    with indices 1-based as in the paper. (B.7) is implemented as printed; the release
    notebook's variant is offered by :mod:`dysonsgd.measure.gradstats`.

    Parameters
    ----------
    drift : array_like, shape (..., N) or (..., N, N)
        K_i in the eigenbasis of X, in ascending order of the eigenvalues; a matrix (same
        shape as ``noise``) is replaced by its diagonal.
    noise : array_like, shape (..., N, N)
        V_ij in the same basis and order (symmetric).

    Returns
    -------
    k_s, v_s, d_s : ndarray, shape (...)
    """
    noise = check_array("noise", noise, min_ndim=2)
    n = noise.shape[-1]
    if noise.shape[-2] != n or n < 2:
        raise InputError(f"noise must have shape (..., N, N) with N >= 2, got {noise.shape}")
    drift = check_array("drift", drift)
    # a matrix K has the shape of V; a vector K_i that of V without its last axis (deciding by
    # the trailing (N, N) alone would misread K_i of shape (n_snap, N) with n_snap = N)
    if drift.shape == noise.shape:
        drift = np.diagonal(drift, axis1=-2, axis2=-1)
    elif drift.shape != noise.shape[:-1]:
        raise InputError(f"drift must have shape {noise.shape[:-1]} (K_i) or {noise.shape} "
                         f"(K_ij) to match noise, got {drift.shape}")
    k_s = (drift[..., -1] - drift[..., 0]) / (n - 1)
    d_s = (noise[..., 0, 0] + noise[..., -1, -1]) / (2.0 * (n - 1) ** 2)
    k = np.arange(1, n - 1)  # k = 1 .. N-2
    # 0-based: V_{N,N-k} -> [n-1, n-1-k]; V_{1,k+1} -> [0, k]
    coulomb = np.sum((noise[..., n - 1, n - 1 - k] + noise[..., 0, k]) / k, axis=-1)
    v_s = 2.0 * noise[..., n - 1, 0] / (n - 1) ** 2 + coulomb / (n - 1)
    return k_s, v_s, d_s
