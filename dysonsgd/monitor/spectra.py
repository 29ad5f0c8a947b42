"""The spectrum of one layer at one record: S (4.5), <r>, a Marchenko-Pastur fit, spikes.

Pure functions of the ascending eigenvalues x (N,) of X = W W^T and the layer's shape (N, M);
the eigenvalues and S come from :mod:`dysonsgd.measure.spectrum`, the spacing ratios and the
Marchenko-Pastur law (4.2) from :mod:`dysonsgd.theory.rmt`.

Marchenko-Pastur fit of the bulk
--------------------------------
With r = N/M fixed by the layer's shape, the one free scale is sigma^2 (entries of variance
sigma^2 / M). It is fitted by the method of moments on the bulk: the mean of the MP law is
sigma^2 (4.2), so sigma^2 = mean of the eigenvalues that are not spikes, and a spike is an
eigenvalue above where the largest eigenvalue of a pure MP matrix of this shape lies with
probability 0.99: Johnstone's (2001) finite-size centring and scale of the Tracy-Widom (beta =
1) law of the largest eigenvalue, at its 99% point 2.0234 (Tracy and Widom 1996; the table of
Bejan 2005). Starting from the mean of all eigenvalues, spikes are removed and sigma^2
re-estimated until the spike count stops changing; it never decreases, so this ends within N
rounds. A pure MP matrix thus shows a spike in about 1% of records; the Kolmogorov-Smirnov
distance of the bulk to the fitted law says how MP the bulk is (its p-value would not hold
with sigma^2 fitted, so none is given).

Heavy-tail exponent
-------------------
Through the maintained ``powerlaw`` package (Alstott, Bullmore and Plenz 2014), as
WeightWatcher does, when it is installed: :func:`heavy_tail_exponent`.
"""

from __future__ import annotations

import importlib.util
import math
from typing import NamedTuple

import numpy as np

from dysonsgd._checks import InputError, check_array, check_int
from dysonsgd.measure.spectrum import mean_level_spacing
from dysonsgd.theory import rmt

__all__ = [
    "TRACY_WIDOM_99",
    "MarchenkoPasturFit",
    "SpectrumStatistics",
    "heavy_tail_available",
    "heavy_tail_exponent",
    "marchenko_pastur_fit",
    "spectrum_statistics",
    "spike_threshold",
]

#: 99% point of the Tracy-Widom law of beta = 1 (Bejan 2005, table 1)
TRACY_WIDOM_99 = 2.0234


def spike_threshold(sigma2: float, n_rows: int, n_cols: int,
                    quantile: float = TRACY_WIDOM_99) -> float:
    """Where the largest eigenvalue of a pure MP matrix of this shape lies below w.p. 0.99.

    X = W W^T with W (N, M) of i.i.d. entries of variance sigma^2 / M is sigma^2 / M times a
    white Wishart matrix of M samples of N variables, whose largest eigenvalue is
    mu + sigma TW_1 with mu = (sqrt(M - 1) + sqrt(N))^2, sigma = (sqrt(M - 1) + sqrt(N))
    (1/sqrt(M - 1) + 1/sqrt(N))^(1/3) (Johnstone 2001). Tends to the MP edge x_+ of (4.2).
    """
    a, b = math.sqrt(n_cols - 1), math.sqrt(n_rows)
    mu = (a + b) ** 2
    scale = (a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0)
    return sigma2 * (mu + quantile * scale) / n_cols


class MarchenkoPasturFit(NamedTuple):
    """sigma2: the fitted sigma^2; edge: the MP upper edge x_+ = sigma^2 (1 + sqrt r)^2 (4.2);
    n_spikes: eigenvalues above :func:`spike_threshold`; ks: Kolmogorov-Smirnov distance of the
    bulk (the other eigenvalues) to the fitted law."""

    sigma2: float
    edge: float
    n_spikes: int
    ks: float


def marchenko_pastur_fit(x, n_cols: int) -> MarchenkoPasturFit:
    """Fit the Marchenko-Pastur law (4.2) to the bulk of x and count the spikes (module doc).

    Parameters
    ----------
    x : (N,) ascending eigenvalues of X = W W^T, N >= 2
    n_cols : M >= N, the columns of W

    Returns
    -------
    MarchenkoPasturFit (NaN fields, 0 spikes, when the bulk has no positive scale)
    """
    x = check_array("x", x)
    n = x.shape[-1]
    m = check_int("n_cols", n_cols, minimum=max(n, 2))
    ratio = n / m
    k = 0
    sigma2 = float(np.mean(x))
    for _ in range(n):
        if not sigma2 > 0:
            return MarchenkoPasturFit(math.nan, math.nan, 0, math.nan)
        k_new = min(int(np.count_nonzero(x > spike_threshold(sigma2, n, m))), n - 2)
        if k_new == k:
            break
        k = k_new
        sigma2 = float(np.mean(x[: n - k]))
    bulk = x[: n - k]
    edge = rmt.marchenko_pastur_edges(ratio, sigma2)[1]
    # the one-sample KS distance sup |F_n - F| at the sorted points; the closed-form cdf of
    # the law itself, as the shapes are valid here (the public cdf adds 0.3 ms of checks)
    f = rmt.marchenko_pastur._cdf(bulk, ratio, sigma2)
    i = np.arange(1, bulk.size + 1)
    ks = float(max(np.max(i / bulk.size - f), np.max(f - (i - 1) / bulk.size)))
    return MarchenkoPasturFit(sigma2, edge, k, ks)


class SpectrumStatistics(NamedTuple):
    """Per layer and record: S (4.5); the mean spacing ratio <r~> = mean min(r_i, 1/r_i)
    (GOE 0.5307, Poisson 0.3863, :func:`dysonsgd.theory.rmt.spacing_ratio_mean`; NaN for N < 3);
    the Marchenko-Pastur fit."""

    level_spacing: float
    ratio_mean: float
    mp: MarchenkoPasturFit


def spectrum_statistics(x, n_cols: int) -> SpectrumStatistics:
    """S (4.5), <r~> and the MP fit of ascending eigenvalues x (N,) of an (N, n_cols) layer."""
    x = check_array("x", x)
    s = float(mean_level_spacing(x, assume_sorted=True))
    if x.shape[-1] >= 3:
        with np.errstate(invalid="ignore"):
            ratios = rmt.spacing_ratios(x, tilde=True)
        r = float(np.nanmean(ratios)) if np.any(np.isfinite(ratios)) else math.nan
    else:
        r = math.nan
    return SpectrumStatistics(s, r, marchenko_pastur_fit(x, n_cols))


def heavy_tail_available() -> bool:
    """Whether the optional ``powerlaw`` package is installed."""
    return importlib.util.find_spec("powerlaw") is not None


def heavy_tail_exponent(x) -> tuple[float, float, float]:
    """Power-law exponent alpha of the tail of the eigenvalue density, with ``powerlaw``.

    ``powerlaw.Fit`` picks x_min by the KS criterion of Clauset, Shalizi and Newman (2009) and
    fits alpha by maximum likelihood above it, as WeightWatcher does on the same eigenvalues.

    Parameters
    ----------
    x : (N,) eigenvalues (positive ones are used)

    Returns
    -------
    alpha, x_min, sigma (the standard error of alpha)

    Raises
    ------
    InputError
        ``powerlaw`` is not installed (``pip install powerlaw``).
    """
    if not heavy_tail_available():
        raise InputError("heavy_tail=True needs the optional package 'powerlaw' "
                         "(pip install powerlaw), which is not installed")
    import warnings

    import powerlaw

    x = check_array("x", x)
    x = x[x > 0]
    if x.size < 3:
        return math.nan, math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(x, verbose=False)
    law = fit.power_law
    return float(law.alpha), float(law.xmin), float(law.sigma)
