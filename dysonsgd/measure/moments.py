"""The complete eigenvalue SDE of X = W W^T: gradient moments and the coefficients they give.

One SGD step W' = W - lr Delta_B moves X = W W^T by E = -lr (W Delta_B^T + Delta_B W^T) +
lr^2 Delta_B Delta_B^T. Second-order perturbation theory in the eigenbasis U of X,
x_i' - x_i = E'_ii + sum_{j != i} E'_ij^2 / (x_i - x_j) with E' = U^T E U, and the minibatch
statistics E[Delta_B] = mu, Cov[Delta_B] = f Cov_a[Delta_a] / |B| (sampling without replacement
from n points, f = (n - |B|)/(n - 1)) give, per unit time t = lr * steps with T = lr / |B|,

    dx_i = [K_i + T q_i + lr m_i + sum_{j != i} (T V_ij + lr P_ij) / (x_i - x_j)] dt
           + sqrt(T) dB_i,        Cov(dB_i, dB_j) = C_ij dt.

The printed (4.3) keeps K_i and T sum V_ij/(x_i - x_j) with independent noises of variance
T V_ii: it lacks the Ito drift T q_i (which keeps X >= 0), the correlation of the eigenvalue
noises and the finite-learning-rate terms lr m_i, lr P_ij (which do not vanish in the paper's
grid, where |B| = 4 and lr = 4 T).

Everything is written in the singular basis W = U S Vt^T (s_i = sqrt(x_i), Vt of shape
(M, N)), with G_a = U^T Delta_a Vt (N, N) and H_a = U^T Delta_a (N, M). Then
U^T (W Delta^T + Delta W^T) U = S G^T + G S, and the coefficients are functions of the state s
with fixed gradient moments (:class:`SingularMoments`):

    K_i  = -2 s_i g_ii                         g = E[G] (the mean gradient)
    C_ij = 4 s_i s_j Sigma_ij                  Sigma_ij = Cov(G_ii, G_jj)
    V_ij = x_i v_ji + x_j v_ij + 2 s_i s_j c_ij  v_ij = Var(G_ij), c_ij = Cov(G_ij, G_ji)
    P_ij = (s_i g_ji + s_j g_ij)^2
    q_i  = sum_k Var(H_ik) = (U^T Q U)_ii      Q_ab = sum_k Cov(Delta_ak, Delta_bk)
    m_i  = sum_k E[H_ik]^2 = (U^T mu mu^T U)_ii

At the measured state V equals the variance of the rotated update of (4.4)
(:func:`dysonsgd.measure.gradstats.drift_and_noise`) and C_ii = V_ii. For i.i.d. gradient
entries of variance sigma^2 this is the Wishart (Bru) process,
dx_i = T sigma^2 [M + sum (x_i + x_j)/(x_i - x_j)] dt + 2 sigma sqrt(T x_i) dB_i. Holding the
moments fixed while s varies is what makes the noise of x_1 vanish like s_1 at the wall, where
the drift is T (Sigma_11 + the variance outside the span of Vt) >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from dysonsgd._checks import InputError, check_array, check_int, check_positive
from dysonsgd.measure.spectrum import eigensystem
from dysonsgd.theory import rmt

__all__ = [
    "VARIANTS",
    "EigenCoefficients",
    "SingularMoments",
    "coefficients_at",
    "coulomb_force",
    "epoch_start_weights",
    "increment_moments",
    "mean_moments",
    "singular_moments",
    "singular_system",
    "spacing_coefficients_complete",
]

#: which eigenvalue SDE: every term; without the finite-lr terms (lr -> 0 at fixed T); the
#: paper's (4.3) as printed
VARIANTS = ("complete", "continuum", "paper")


def singular_system(w, *, eigenvectors=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Singular values (ascending) and paired singular vectors of W, W = U diag(s) Vt^T.

    From the eigensystem of X = W W^T (:func:`dysonsgd.measure.spectrum.eigensystem`), refined
    by one-sided Jacobi on the rows of U^T W (:func:`dysonsgd.measure._singular.
    refine_singular_system`): as accurate as an SVD, several times faster for a batch of small
    matrices, and U keeps the eigenvectors' signs (each pair (u_i, v_i) is defined up to one
    common sign; every coefficient of :func:`coefficients_at` is invariant under it). A matrix
    with a zero singular value takes LAPACK's SVD.

    Parameters
    ----------
    w : array_like, shape (..., N, M), N <= M
    eigenvectors : array_like, shape (..., N, N), optional
        The eigenvectors of X = W W^T (ascending eigenvalues) if already computed.

    Returns
    -------
    s : (..., N) ascending, s_i^2 = x_i the eigenvalues of X = W W^T (4.1)
    u : (..., N, N) columns the eigenvectors of X in the same order
    vt : (..., M, N) columns the right singular vectors paired with ``u``
    """
    from dysonsgd.measure import _singular

    w = check_array("w", w, min_ndim=2)
    if w.shape[-2] > w.shape[-1]:
        raise InputError(f"w must have shape (..., N, M) with N <= M, got {w.shape}")
    lead, (n, m) = w.shape[:-2], w.shape[-2:]
    u = eigensystem(w)[1] if eigenvectors is None else np.asarray(eigenvectors, dtype=float)
    if u.shape != (*lead, n, n):
        raise InputError(f"eigenvectors must have shape {(*lead, n, n)}, got {u.shape}")
    s, u, vt, ok = _singular.refine_singular_system(w.reshape(-1, n, m), u.reshape(-1, n, n))
    if not ok.all():  # a zero singular value: the SVD completes Vt
        uu, ss, vh = np.linalg.svd(w.reshape(-1, n, m)[~ok], full_matrices=False)
        s[~ok], u[~ok] = ss[..., ::-1], uu[..., ::-1]
        vt[~ok] = np.swapaxes(vh, -1, -2)[..., ::-1]
    return s.reshape(*lead, n), u.reshape(*lead, n, n), vt.reshape(*lead, m, n)


@dataclass(frozen=True)
class SingularMoments:
    """Gradient moments in the singular basis of W: the fixed part of the complete SDE.

    Every field has the leading axes of the models (and of time, where a series is stacked).

    Attributes
    ----------
    singular_values : (..., N) s_i ascending, s_i^2 = x_i
    mean : (..., N, N) g = U^T mu Vt
    mean_square : (..., N) m_i = (U^T mu mu^T U)_ii
    ito : (..., N) q_i = (U^T Q U)_ii
    diagonal_covariance : (..., N, N) Sigma_ij = Cov(G_ii, G_jj)
    variance : (..., N, N) v_ij = Var(G_ij)
    cross : (..., N, N) c_ij = Cov(G_ij, G_ji)
    """

    singular_values: np.ndarray
    mean: np.ndarray
    mean_square: np.ndarray
    ito: np.ndarray
    diagonal_covariance: np.ndarray
    variance: np.ndarray
    cross: np.ndarray

    def map(self, fn) -> SingularMoments:
        """The moments with ``fn`` applied to every field (indexing, stacking, repeating)."""
        return SingularMoments(*(fn(getattr(self, f.name)) for f in fields(self)))

    @staticmethod
    def join(items, how=np.stack) -> SingularMoments:
        """Join a sequence of moments field by field (``np.stack``, ``np.concatenate``)."""
        items = list(items)
        return SingularMoments(*(how([getattr(m, f.name) for m in items])
                                 for f in fields(SingularMoments)))


def mean_moments(u, vt, mean_gradient) -> tuple[np.ndarray, np.ndarray]:
    """g = U^T mu Vt and m_i = (U^T mu mu^T U)_ii of a mean gradient mu.

    Parameters
    ----------
    u : (..., N, N); vt : (..., M, N) from :func:`singular_system`
    mean_gradient : (..., N, M)

    Returns
    -------
    g : (..., N, N); m : (..., N)
    """
    mu = check_array("mean_gradient", mean_gradient, min_ndim=2)
    h = np.swapaxes(u, -1, -2) @ mu
    return h @ vt, np.sum(h * h, axis=-1)


def singular_moments(w, grads, *, mean_gradient=None) -> SingularMoments:
    """The moments of per-sample gradients in the singular basis of W (population, ddof 0).

    Parameters
    ----------
    w : array_like, shape (..., N, M)
    grads : array_like, shape (..., D, N, M)
        Per-sample gradients Delta_a of the loss in W (2.28), over the data SGD samples from.
    mean_gradient : array_like, shape (..., N, M), optional
        mu for ``mean`` and ``mean_square`` (e.g. the recorded training gradient); default the
        mean of ``grads``.

    Returns
    -------
    SingularMoments
    """
    grads = check_array("grads", grads, min_ndim=3)
    s, u, vt = singular_system(w)
    if grads.shape[-2:] != np.shape(w)[-2:]:
        raise InputError(f"grads must have shape (..., D, {np.shape(w)[-2]}, "
                         f"{np.shape(w)[-1]}), got {grads.shape}")
    h = np.swapaxes(u, -1, -2)[..., None, :, :] @ grads  # (..., D, N, M)
    h_c = h - h.mean(axis=-3, keepdims=True)
    g_c = h_c @ vt[..., None, :, :]  # centred G_a, (..., D, N, N)
    n_data = grads.shape[-3]
    diag = np.diagonal(g_c, axis1=-2, axis2=-1)  # (..., D, N)
    sigma = np.einsum("...ai,...aj->...ij", diag, diag) / n_data
    variance = np.mean(g_c * g_c, axis=-3)
    cross = np.mean(g_c * np.swapaxes(g_c, -1, -2), axis=-3)
    ito = np.sum(np.mean(h_c * h_c, axis=-3), axis=-1)
    mu = grads.mean(axis=-3) if mean_gradient is None else mean_gradient
    g, m = mean_moments(u, vt, mu)
    return SingularMoments(s, g, m, ito, sigma, variance, cross)



def epoch_start_weights(w_end, mean_gradient, learning_rate, steps) -> np.ndarray:
    """W at the start of a recorded epoch, W_0 = W_end + lr n G (exact for plain SGD).

    A run records, per snapshot, W at the end of an epoch and G, the mean of that epoch's n
    minibatch gradients, so W_end = W_0 - lr n G. The drift K = -(W G^T + G W^T) at W_end sees
    the epoch's own noise through W_end: in expectation it exceeds the drift at W_0 by
    2 lr n G G^T, about 2 T (U^T Q U) + 2 lr n (U^T mu mu^T U) in the eigenbasis, twice the
    Ito term, which an SDE that has the Ito term would then count three times. At W_0 the
    epoch's noise has not happened yet: K(W_0) with G is an unbiased gradient-flow drift.

    Parameters
    ----------
    w_end, mean_gradient : (..., N, M); learning_rate : broadcastable to (...);
    steps : broadcastable to (...), SGD steps of the epoch (0: G is a gradient at W itself)
    """
    scale = np.asarray(learning_rate, dtype=float) * np.asarray(steps, dtype=float)
    return np.asarray(w_end, dtype=float) + scale[..., None, None] * np.asarray(mean_gradient)


class EigenCoefficients(NamedTuple):
    """The complete SDE's coefficients at a state x (see the module docstring).

    k (..., N) K_i; ito (..., N) q_i; mean_square (..., N) m_i; noise (..., N, N) V_ij with
    V_ii = C_ii; finite_lr (..., N, N) P_ij (zero diagonal); covariance (..., N, N) C_ij.
    """

    x: np.ndarray
    k: np.ndarray
    ito: np.ndarray
    mean_square: np.ndarray
    noise: np.ndarray
    finite_lr: np.ndarray
    covariance: np.ndarray


def coefficients_at(moments: SingularMoments, x=None) -> EigenCoefficients:
    """K, q, m, V, P and C of the complete SDE at eigenvalues x (default: where measured).

    Parameters
    ----------
    moments : SingularMoments, fields of shape (..., N[, N])
    x : array_like, shape (..., N), optional
        Ascending eigenvalues; s_i = sqrt(max(x_i, 0)).
    """
    x = moments.singular_values**2 if x is None else np.asarray(x, dtype=float)
    s = np.sqrt(np.maximum(x, 0.0))
    g = moments.mean
    k = -2.0 * s * np.diagonal(g, axis1=-2, axis2=-1)
    n = x.shape[-1]
    fields = (g, moments.variance, moments.cross, moments.diagonal_covariance)
    if x.ndim > 1 and all(np.shape(a) == (*x.shape, n) for a in fields) and x.size >= 64 * n:
        # many items of one shape (a whole run): the compiled kernel, the same arithmetic
        from dysonsgd.measure import _singular

        flat = [np.ascontiguousarray(a, dtype=float).reshape(-1, n, n) for a in fields]
        noise, finite_lr, covariance = (a.reshape(*x.shape, n) for a in _singular.
                                        coefficients_matrices(np.ascontiguousarray(
                                            x, dtype=float).reshape(-1, n), *flat))
        return EigenCoefficients(x, k, moments.ito, moments.mean_square, noise, finite_lr,
                                 covariance)
    si, sj = s[..., :, None], s[..., None, :]
    v = moments.variance
    noise = (x[..., :, None] * np.swapaxes(v, -1, -2) + x[..., None, :] * v
             + 2.0 * si * sj * moments.cross)
    covariance = 4.0 * si * sj * moments.diagonal_covariance
    eye = np.eye(n, dtype=bool)
    noise = np.where(eye, covariance, noise)
    r_mu = si * np.swapaxes(g, -1, -2) + g * sj
    finite_lr = np.where(eye, 0.0, r_mu * r_mu)
    return EigenCoefficients(x, k, moments.ito, moments.mean_square, noise, finite_lr,
                             covariance)


def coulomb_force(x, weights) -> np.ndarray:
    """sum_{j != i} w_ij / (x_i - x_j), the Coulomb term of (4.3), shape (..., N).

    Parameters
    ----------
    x : (..., N) distinct eigenvalues; weights : (..., N, N) (the diagonal is ignored)
    """
    x = np.asarray(x, dtype=float)
    diff = x[..., :, None] - x[..., None, :]
    n = x.shape[-1]
    eye = np.eye(n, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(eye, 0.0, np.asarray(weights) / np.where(eye, 1.0, diff))
    return terms.sum(axis=-1)


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise InputError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return variant


def increment_moments(coefficients: EigenCoefficients, learning_rate: float, batch_size: int,
                      *, n_data: int | None = None, variant: str = "complete"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the eigenvalue increments of ONE SGD step (Kramers-Moyal).

        E[dx_i] = lr K_i + lr^2 m_i + lr T_f q_i + sum_{j != i} (lr^2 P_ij + lr T_f V_ij)
                  / (x_i - x_j),        Cov(dx_i, dx_j) = lr^2 (T_f / lr) C_ij,

    to second order in the update, with T_f = lr f / |B| and f = (n - |B|)/(n - 1) for a batch
    drawn without replacement from ``n_data`` points (f = 1 when ``n_data`` is None).
    ``variant='continuum'`` drops the lr^2 m and lr^2 P terms, ``'paper'`` is (4.3) as printed:
    lr K_i + lr T_f sum V_ij/(x_i - x_j) and independent noises of variance lr T_f V_ii.

    Parameters
    ----------
    coefficients : EigenCoefficients at the state of the step (:func:`coefficients_at`)
    learning_rate, batch_size : the step's lr and |B|
    n_data : int, optional
        The size of the data set the batch is drawn from without replacement.

    Returns
    -------
    mean : (..., N); covariance : (..., N, N)
    """
    lr = check_positive("learning_rate", learning_rate)
    b = check_int("batch_size", batch_size, minimum=1)
    _check_variant(variant)
    f = 1.0
    if n_data is not None:
        n = check_int("n_data", n_data, minimum=b)
        f = (n - b) / (n - 1) if n > 1 else 0.0
    t_f = lr * f / b
    c = coefficients
    if variant == "paper":
        mean = lr * (c.k + t_f * coulomb_force(c.x, c.noise))
        diag = np.diagonal(c.noise, axis1=-2, axis2=-1)
        cov = lr * t_f * (diag[..., :, None] * np.eye(diag.shape[-1]))
        return mean, cov
    weights = t_f * c.noise
    drift = c.k + t_f * c.ito
    if variant == "complete":
        weights = weights + lr * c.finite_lr
        drift = drift + lr * c.mean_square
    return lr * (drift + coulomb_force(c.x, weights)), lr * t_f * c.covariance


def spacing_coefficients_complete(coefficients: EigenCoefficients, temperature, learning_rate,
                                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K_S, V_S, D_S of the spacing SDE (4.8) from the complete eigenvalue SDE.

    With S = (x_N - x_1)/(N - 1) and the ansatz (B.5) as in (B.7):
    K_S = (B.7) + [T (q_N - q_1) + lr (m_N - m_1)]/(N - 1); V_S = (B.7) with the Coulomb
    weights V + (lr / T) P; D_S = (C_11 + C_NN - 2 C_1N) / (2 (N - 1)^2) instead of (B.9).
    ``learning_rate=0`` gives the continuum limit.

    Parameters
    ----------
    coefficients : EigenCoefficients, fields (..., N[, N])
    temperature, learning_rate : float or array broadcastable to (...)

    Returns
    -------
    k_s, v_s, d_s : (...)
    """
    c = coefficients
    t = np.asarray(temperature, dtype=float)
    lr = np.asarray(learning_rate, dtype=float)
    if np.any(t <= 0) or np.any(lr < 0):
        raise InputError("temperature must be > 0 and learning_rate >= 0")
    weights = c.noise + (lr / t)[..., None, None] * c.finite_lr
    k_s, v_s, _ = rmt.spacing_coefficients(c.k, weights)
    n = c.k.shape[-1]
    shift = (t * (c.ito[..., -1] - c.ito[..., 0])
             + lr * (c.mean_square[..., -1] - c.mean_square[..., 0])) / (n - 1)
    cov = c.covariance
    d_s = (cov[..., 0, 0] + cov[..., -1, -1] - 2.0 * cov[..., 0, -1]) / (2.0 * (n - 1) ** 2)
    return k_s + shift, v_s, d_s
