"""The loss as a disordered Hamiltonian and the soft-spin picture of section 2.

Contents
--------
couplings, mse_loss, hamiltonian_loss
    The couplings J, field h and constant C of eq. (2.8) and the two forms (2.6) and (2.7)/(2.9)
    of the mean-squared error, equal for any network whose output is linear in its last features.
preactivation_kernel, standardised_kernel, preactivation_bound, preactivation_variances
    Second moments of pre-activations at initialisation, eqs. (2.13)-(2.16), the bound (2.18),
    and the layer-to-layer variance map they imply for a Gaussian pre-activation (2.19).
soft_spin_density, soft_spin_potential, potential_coefficients, potential_extrema,
density_modes, critical_variance
    The soft-spin density (2.21), its potential, the expansion (2.22), the extrema
    phi = tanh(2 sigma_z^2 phi) and sigma_c^2 = 1/2.

Array conventions follow the paper: the data index alpha is the last axis, so features
``phi`` have shape (..., n_{L-1}, D) and targets ``y`` shape (..., n_L, D); leading axes are
batch axes (an ensemble of models).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import linalg, optimize

from dysonsgd._checks import InputError, check_array, check_int, check_positive
from dysonsgd.theory.functions import ACTIVATIONS

__all__ = [
    "couplings",
    "critical_variance",
    "density_modes",
    "hamiltonian_loss",
    "mse_loss",
    "potential_coefficients",
    "potential_extrema",
    "preactivation_bound",
    "preactivation_kernel",
    "preactivation_variances",
    "soft_spin_density",
    "soft_spin_potential",
    "standardised_kernel",
]


# --------------------------------------------------------------------------------------------
# Couplings and the two forms of the loss, eqs. (2.6)-(2.9)
# --------------------------------------------------------------------------------------------


def _check_last_layer(w_last, other, other_name: str) -> tuple[np.ndarray, np.ndarray]:
    w = check_array("w_last", w_last, min_ndim=2)
    o = check_array(other_name, other, min_ndim=2)
    return w, o


def couplings(w_last, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spin-glass couplings of the loss, eq. (2.8).

    J_ij = sum_k W_ki W_kj,   h_ja = sum_i y_ia W_ij,   C = 1/(2D) sum_a sum_i y_ia^2.

    Parameters
    ----------
    w_last : array_like, shape (..., n_L, n_{L-1})
        The last weight matrix W^(L).
    y : array_like, shape (..., n_L, D)
        Targets y_{i alpha} for the D data points.

    Returns
    -------
    J : ndarray, shape (..., n_{L-1}, n_{L-1})
        Symmetric, positive semi-definite coupling (2.23).
    h : ndarray, shape (..., n_{L-1}, D)
        External field (2.25).
    C : ndarray, shape (...)
        The network-independent constant.
    """
    w, y = _check_last_layer(w_last, y, "y")
    if y.shape[-2] != w.shape[-2]:
        raise InputError(
            f"y must have shape (..., n_L={w.shape[-2]}, D) to match w_last, got {y.shape}"
        )
    coupling = np.einsum("...ki,...kj->...ij", w, w)
    field = np.einsum("...ia,...ij->...ja", y, w)
    const = 0.5 * np.sum(y * y, axis=(-2, -1)) / y.shape[-1]
    return coupling, field, const


def hamiltonian_loss(coupling, field, phi, const=0.0) -> np.ndarray:
    """The loss in disordered-system form, eqs. (2.7) and (2.9).

    L = 1/(2D) sum_a sum_ij J_ij phi_ia phi_ja - 1/D sum_a sum_j h_ja phi_ja + C.

    With ``const=0`` this is (2.9); with the C of :func:`couplings` it is (2.7), equal to the
    mean-squared error (2.6).

    Parameters
    ----------
    coupling : array_like, shape (..., n, n)
    field : array_like, shape (..., n, D)
    phi : array_like, shape (..., n, D)
        Features phi_{j alpha} of the last hidden layer (2.5).
    const : array_like, shape (...)

    Returns
    -------
    ndarray, shape (...)
    """
    coupling = check_array("coupling", coupling, min_ndim=2)
    phi = check_array("phi", phi, min_ndim=2)
    field = check_array("field", field, min_ndim=2)
    n, d = phi.shape[-2:]
    if coupling.shape[-2:] != (n, n):
        raise InputError(f"coupling must have shape (..., {n}, {n}), got {coupling.shape}")
    if field.shape[-2:] != (n, d):
        raise InputError(f"field must have shape (..., {n}, {d}), got {field.shape}")
    quad = np.einsum("...ij,...ia,...ja->...", coupling, phi, phi)
    lin = np.einsum("...ja,...ja->...", field, phi)
    return 0.5 * quad / d - lin / d + np.asarray(const, dtype=float)


def mse_loss(w_last, phi, y) -> np.ndarray:
    """Mean-squared error (2.6) of a network whose output is W^(L) phi, eqs. (2.3) and (2.26).

    L = 1/D sum_a 1/2 sum_i (y_ia - sum_j W_ij phi_ja)^2.

    Parameters
    ----------
    w_last : array_like, shape (..., n_L, n_{L-1})
    phi : array_like, shape (..., n_{L-1}, D)
    y : array_like, shape (..., n_L, D)

    Returns
    -------
    ndarray, shape (...)
    """
    w, y = _check_last_layer(w_last, y, "y")
    phi = check_array("phi", phi, min_ndim=2)
    if phi.shape[-2] != w.shape[-1]:
        raise InputError(
            f"phi must have shape (..., n_{{L-1}}={w.shape[-1]}, D) to match w_last, "
            f"got {phi.shape}"
        )
    residual = y - np.einsum("...ij,...ja->...ia", w, phi)
    return 0.5 * np.sum(residual * residual, axis=(-2, -1)) / phi.shape[-1]


# --------------------------------------------------------------------------------------------
# Pre-activation moments at initialisation, eqs. (2.13)-(2.19)
# --------------------------------------------------------------------------------------------



def preactivation_kernel(previous, sigma2: float) -> np.ndarray:
    """E_W[z_ia z_jb] = delta_ij K_ab at initialisation, eqs. (2.13) and (2.14).

    K_ab = sigma2 / n_{l-1} sum_k prev_ka prev_kb, where ``prev`` is the previous layer's
    post-activations phi(z^(l-1)) for l > 1, or the inputs x for the first layer.

    Parameters
    ----------
    previous : array_like, shape (..., n_{l-1}, D)
    sigma2 : float
        sigma_W^2 of the weight matrix W^(l) ~ N(0, sigma2 / n_{l-1}), eq. (2.11).

    Returns
    -------
    ndarray, shape (..., D, D)
        The data-space kernel K_ab (the factor delta_ij over node indices is implied).
    """
    prev = check_array("previous", previous, min_ndim=2)
    sigma2 = check_positive("sigma2", sigma2)
    return sigma2 / prev.shape[-2] * np.einsum("...ka,...kb->...ab", prev, prev)


def standardised_kernel(sigma2: float, n_data: int) -> np.ndarray:
    """E_{W,D}[z_ia z_jb] / delta_ij = sigma2 delta_ab for standardised inputs, eq. (2.16).

    Returns
    -------
    ndarray, shape (n_data, n_data)
    """
    sigma2 = check_positive("sigma2", sigma2)
    return sigma2 * np.eye(check_int("n_data", n_data))


def preactivation_bound(sigma2: float) -> float:
    """Bound (2.18): |E_W[z_ia z_jb]| <= sigma2 for an activation bounded by 1 (tanh)."""
    return check_positive("sigma2", sigma2)


def _chi2_over_k_quadrature(k: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and probability weights for E[f(u / k)], u ~ chi^2_k.

    With u = 2t the chi-square density is the generalised Laguerre weight t^(k/2-1) e^(-t); the
    Golub-Welsch eigenproblem of its Jacobi matrix gives the nodes and, as squared first
    eigenvector components, weights that already sum to one (no Gamma function to overflow).
    """
    alpha = 0.5 * k - 1.0
    i = np.arange(order, dtype=float)
    diagonal = 2.0 * i + alpha + 1.0
    off = np.sqrt(i[1:] * (i[1:] + alpha))
    t, vectors = linalg.eigh_tridiagonal(diagonal, off)
    return 2.0 * t / k, vectors[0] ** 2


def preactivation_variances(
    sigma2s,
    activation: str = "tanh",
    input_variance: float = 1.0,
    input_dim: int | None = None,
    quadrature_order: int = 101,
) -> np.ndarray:
    """Pre-activation variances layer by layer at initialisation, eqs. (2.13)-(2.19).

    Wide-network recursion: z^(1) has variance q_1 = sigma_1^2 |x|^2 / n0, and for l > 1,
    q_l = sigma_l^2 E_{z ~ N(0, q_{l-1})}[phi(z)^2] (2.13), averaged over nodes. The
    expectation is Gauss-Hermite quadrature.

    With ``input_dim=None`` the input norm is replaced by its mean, q_1 = sigma_1^2
    input_variance (2.16): every pre-activation is then N(0, q_l), the paper's assumption
    (2.19). With ``input_dim=n0`` the inputs are standard normal vectors of that dimension,
    so |x|^2 / n0 ~ input_variance chi^2_{n0} / n0 varies from data point to data point and
    z^(l) is a Gaussian scale mixture; the returned value is its variance averaged over the
    data (generalised Gauss-Laguerre quadrature over the chi-square law). For few inputs the
    two differ noticeably: the paper's teacher (n0 = 3, sigma_1^2 = 1) gives
    q_2 = 0.344 sigma_W^2 with ``input_dim=3`` against 0.394 sigma_W^2 without.
    For tanh, q_l <= sigma_l^2, eq. (2.18).

    Parameters
    ----------
    sigma2s : array_like, shape (L',) or (..., L')
        sigma^2 of the weight matrices W^(1), ..., W^(L') along the last axis.
    activation : {"tanh", "relu", "identity"}
    input_variance : float
        Variance of each standardised input component (1 in the paper).
    input_dim : int, optional
        n0, to average over the norm of Gaussian inputs instead of assuming (2.19) exactly.
    quadrature_order : int
        Number of Gauss-Hermite (and Gauss-Laguerre) nodes.

    Returns
    -------
    ndarray, shape (..., L')
        q_1, ..., q_{L'}: the data-averaged variance of the pre-activations z^(l).

    Examples
    --------
    The variance sigma_z^2 of the last hidden layer's pre-activations for the paper's student
    W^(2) with variance sigma_W^2 is ``preactivation_variances([1.0, sigma_w**2],
    input_dim=3)[-1]``.
    """
    s2 = check_array("sigma2s", sigma2s)
    if np.any(s2 <= 0):
        raise InputError(f"sigma2s must all be > 0, got {sigma2s!r}")
    if activation not in ACTIVATIONS:
        raise InputError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    input_variance = check_positive("input_variance", input_variance)
    order = check_int("quadrature_order", quadrature_order, minimum=2)
    act = ACTIVATIONS[activation]
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    weights = weights / math.sqrt(2.0 * math.pi)
    if input_dim is None:
        norm2 = np.ones(1)  # |x|^2 / n0 at its mean
        norm_w = np.ones(1)
    else:
        norm2, norm_w = _chi2_over_k_quadrature(check_int("input_dim", input_dim), order)
    # per-data-point variances on the norm nodes: shape (..., n_norm)
    q = s2[..., :1] * input_variance * norm2
    out = np.empty_like(s2)
    out[..., 0] = q @ norm_w
    for layer in range(1, s2.shape[-1]):
        z = np.sqrt(q)[..., None] * nodes
        q = s2[..., layer : layer + 1] * np.sum(weights * act(z) ** 2, axis=-1)
        out[..., layer] = q @ norm_w
    return out


# --------------------------------------------------------------------------------------------
# Soft spins, eqs. (2.19)-(2.22)
# --------------------------------------------------------------------------------------------


def _check_phi(phi) -> np.ndarray:
    phi = np.asarray(phi, dtype=float)
    if np.any(np.isnan(phi)):
        raise InputError("phi must not contain NaN")
    return phi


def soft_spin_density(phi, sigma_z2) -> np.ndarray:
    """Normalised density of phi = tanh(z), z ~ N(0, sigma_z2), eq. (2.21).

    p(phi) = exp(-(arctanh phi)^2 / (2 sigma_z2)) / (sqrt(2 pi sigma_z2) (1 - phi^2))

    for |phi| < 1 and 0 outside: the Jacobian of the change of variables makes it exactly
    normalised, with no numerical constant.

    Parameters
    ----------
    phi : array_like
    sigma_z2 : float or array_like broadcasting with ``phi``
        Pre-activation variance sigma_z^2 > 0.
    """
    phi = _check_phi(phi)
    sigma_z2 = check_positive("sigma_z2", sigma_z2)
    inside = np.abs(phi) < 1.0
    p = np.where(inside, phi, 0.0)
    with np.errstate(over="ignore"):
        at = np.arctanh(p)
        dens = np.exp(-(at * at) / (2.0 * sigma_z2)) / (
            np.sqrt(2.0 * np.pi * sigma_z2) * (1.0 - p * p)
        )
    return np.where(inside, dens, 0.0)


def soft_spin_potential(phi, sigma_z2) -> np.ndarray:
    """Potential V(phi) = (arctanh phi)^2 / (2 sigma_z2) + ln(1 - phi^2), eq. (2.21).

    p(phi) is proportional to exp(-V(phi)); V(0) = 0. Defined for |phi| < 1 (+inf outside).
    """
    phi = _check_phi(phi)
    sigma_z2 = check_positive("sigma_z2", sigma_z2)
    inside = np.abs(phi) < 1.0
    p = np.where(inside, phi, 0.0)
    at = np.arctanh(p)
    v = at * at / (2.0 * sigma_z2) + np.log1p(-p * p)
    return np.where(inside, v, np.inf)


def potential_coefficients(sigma_z2, order: int = 4) -> np.ndarray:
    """Taylor coefficients of V(phi) around phi = 0, eq. (2.22), to ``phi**order``.

    Uses arctanh(phi)^2 = sum_n phi^(2n)/n sum_{k=1}^n 1/(2k - 1) and
    ln(1 - phi^2) = -sum_n phi^(2n)/n, so the coefficient of phi^(2n) is

        c_2n = (1 / (2 sigma_z2)) (1/n) sum_{k=1}^n 1/(2k - 1) - 1/n,

    giving c_2 = 1/(2 sigma_z2) - 1 and c_4 = 1/(3 sigma_z2) - 1/2 as in (2.22). Odd
    coefficients vanish. :func:`dysonsgd.theory.symbolic.potential_series` derives the same series.

    Parameters
    ----------
    sigma_z2 : float or array_like
    order : int
        Highest power kept (>= 2).

    Returns
    -------
    ndarray, shape (order + 1,) + shape(sigma_z2)
        ``c[p]`` multiplies phi**p.
    """
    sigma_z2 = np.asarray(check_positive("sigma_z2", sigma_z2), dtype=float)
    order = check_int("order", order, minimum=2)
    coef = np.zeros((order + 1, *sigma_z2.shape))
    for n in range(1, order // 2 + 1):
        odd_sum = sum(1.0 / (2 * k - 1) for k in range(1, n + 1))
        coef[2 * n] = odd_sum / (2.0 * n * sigma_z2) - 1.0 / n
    return coef


def critical_variance() -> float:
    """sigma_c^2 = 1/2: the pre-activation variance at which V(phi) turns into a double well.

    The curvature of the potential at phi = 0 is c_2 = 1/(2 sigma_z^2) - 1, eq. (2.22), which
    changes sign at sigma_z^2 = 1/2. :func:`dysonsgd.theory.symbolic.critical_variance` derives it.
    """
    return 0.5


def _nonzero_extremum(sigma_z2: float) -> float:
    """Positive root of phi = tanh(2 sigma_z2 phi) for sigma_z2 > 1/2."""
    g = 2.0 * sigma_z2

    def f(p):
        return math.tanh(g * p) - p

    # f > 0 just above 0 (slope g - 1 > 0) and f(1) = tanh(g) - 1 < 0 (= 0 only in float
    # overflow of tanh, when the root is 1 to double precision).
    hi = 1.0
    if f(hi) >= 0.0:  # the root is 1 to double precision: the largest phi inside (-1, 1)
        return float(np.nextafter(1.0, 0.0))
    # near g = 1 the root is phi ~ sqrt(3 (g - 1) / g^3): start the bracket below it
    estimate = math.sqrt(3.0 * (g - 1.0) / g**3)
    lo = min(1e-3, 0.5 * estimate)
    for _ in range(60):
        if f(lo) > 0.0:
            return optimize.brentq(f, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps)
        lo *= 0.5
    return estimate  # g - 1 below rounding: the leading-order root is exact to double precision


def potential_extrema(sigma_z2: float) -> np.ndarray:
    """Extrema of V(phi): solutions of phi = tanh(2 sigma_z2 phi), eq. (2.22) and below.

    V'(phi) = (arctanh(phi) - 2 sigma_z2 phi) / (sigma_z2 (1 - phi^2)), so the extrema solve
    arctanh(phi) = 2 sigma_z2 phi. For sigma_z2 <= 1/2 the only solution is 0 (a minimum);
    above, 0 becomes a maximum and two minima +-phi* appear.

    Returns
    -------
    ndarray
        ``[0.0]`` or ``[-phi*, 0.0, phi*]`` in ascending order.
    """
    sigma_z2 = check_positive("sigma_z2", sigma_z2)
    if sigma_z2 <= critical_variance():
        return np.array([0.0])
    p = _nonzero_extremum(sigma_z2)
    return np.array([-p, 0.0, p])


def density_modes(sigma_z2: float) -> np.ndarray:
    """Modes of p(phi) (minima of V): ``[0]`` for sigma_z2 <= 1/2, else ``[-phi*, phi*]``."""
    ext = potential_extrema(sigma_z2)
    return ext if ext.size == 1 else ext[[0, 2]]
