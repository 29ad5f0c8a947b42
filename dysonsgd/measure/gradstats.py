"""Drift K and noise V of the eigenvalues of X = W2 W2^T from per-sample gradients, eq. (4.4).

For a model and a data set, the per-sample gradient Delta_a of W2 (2.28) moves X by
Delta^X_a = W2 Delta_a^T + Delta_a W2^T (4.4); K_ij = -E_a[Delta^X_ij] and
V_ij = Var_a[Delta^X_ij] (element-wise, population variance over the data). Rotated into the
eigenbasis of X (eigenvalues ascending), their diagonal and full matrix give the coefficients of
Dyson Brownian motion (4.3), and through (B.7), (B.9) the K_S, V_S, D_S of the spacing SDE (4.8).

The per-sample gradients come from :func:`dysonsgd.model.network.per_sample_gradients`, the
teacher's targets from :func:`dysonsgd.model.network.outputs` and the eigenbasis of X from
:func:`dysonsgd.measure.spectrum.eigensystem`.

Conventions
-----------
- K_S, V_S, D_S are (B.7) as printed (:func:`dysonsgd.theory.rmt.spacing_coefficients`).
- :func:`spacing_coefficients_release` is the release notebook's variant, for comparison: its
  Coulomb sum takes V[N, N-k+1] where (B.7) has V[N, N-k] (so the k = 1 term is the diagonal
  V_NN), and its K_S is the difference of the *absolute* diagonal entries of the rotated K;
  :func:`measure` feeds it the release's rotation U^T V U.
- V in the eigenbasis is the variance of the rotated update U^T Delta^X U (non-negative, as a
  noise must be), not U^T V U as in appendix B and the release, which can be negative on the
  diagonal; the latter is kept as ``v_paper_rotation``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dysonsgd._checks import InputError, check_array, check_index, check_int
from dysonsgd.measure.moments import SingularMoments, singular_moments
from dysonsgd.measure.observables import test_inputs
from dysonsgd.measure.spectrum import eigensystem
from dysonsgd.model.draws import replica_draws
from dysonsgd.model.network import outputs, per_sample_gradients
from dysonsgd.theory import rmt

__all__ = [
    "GradientStatistics",
    "drift_and_noise",
    "measure",
    "spacing_coefficients_release",
    "training_inputs",
]


def drift_and_noise(w2, grads, basis=None) -> tuple[np.ndarray, np.ndarray]:
    """K and V of eq. (4.4) from per-sample gradients, optionally in a rotated basis.

    Parameters
    ----------
    w2 : array_like, shape (..., n2, n1)
    grads : array_like, shape (..., D, n2, n1)
        Per-sample gradients Delta_a of the loss with respect to W2.
    basis : array_like, shape (..., n2, n2), optional
        Orthogonal U (columns: eigenvectors of X); each Delta^X_a is rotated to U^T Delta^X_a U
        before the mean and variance are taken, so V holds true variances in that basis.

    Returns
    -------
    K, V : ndarray, shape (..., n2, n2)
        K = -mean_a Delta^X_a, V = var_a Delta^X_a (element-wise, ddof = 0); symmetric, V >= 0.
    """
    dx = _delta_x(w2, grads)
    if basis is not None:
        dx = _rotate(dx, check_array("basis", basis, min_ndim=2))
    return _symmetric(-dx.mean(axis=-3)), _symmetric(dx.var(axis=-3))


def _symmetric(a: np.ndarray) -> np.ndarray:
    """(A + A^T)/2: K and V are symmetric by definition (4.4), but the rotation U^T Delta^X U
    leaves rounding-level asymmetry (~N eps max|A|, which element-wise can exceed 1e-10 on the
    small entries); symmetrising here makes every downstream check see an exact symmetric matrix."""
    return 0.5 * (a + np.swapaxes(a, -1, -2))


def _delta_x(w2, grads) -> np.ndarray:
    """Delta^X_a = W2 Delta_a^T + Delta_a W2^T (4.4), shape (..., D, n2, n2)."""
    w2 = check_array("w2", w2, min_ndim=2)
    grads = check_array("grads", grads, min_ndim=3)
    if grads.shape[-2:] != w2.shape[-2:]:
        raise InputError(
            f"grads must have shape (..., D, {w2.shape[-2]}, {w2.shape[-1]}), got {grads.shape}"
        )
    half = np.einsum("...ik,...ajk->...aij", w2, grads)  # W2 Delta^T
    return half + np.swapaxes(half, -1, -2)


def _rotate(dx: np.ndarray, u: np.ndarray) -> np.ndarray:
    """U^T Delta^X_a U for every sample a; u has shape (..., n2, n2)."""
    u = u[..., None, :, :]
    return np.swapaxes(u, -1, -2) @ dx @ u


def spacing_coefficients_release(k_rot, v_rot):
    """The release notebook's K_S, V_S, D_S (see the module docstring), for comparison.

    K_S = (|K_NN| - |K_11|)/(N - 1); V_S = 2 V_N1/(N - 1)^2 + 1/(N - 1) sum_{k=1}^{N-2}
    (V_{N,N-k+1} + V_{1,k+1})/k (1-based); D_S as (B.9).
    """
    k_rot = check_array("k_rot", k_rot, min_ndim=2)
    v_rot = check_array("v_rot", v_rot, min_ndim=2)
    n = v_rot.shape[-1]
    diag = np.abs(np.diagonal(k_rot, axis1=-2, axis2=-1))
    k_s = (diag[..., -1] - diag[..., 0]) / (n - 1)
    d_s = (v_rot[..., 0, 0] + v_rot[..., -1, -1]) / (2.0 * (n - 1) ** 2)
    k = np.arange(1, n - 1)
    coulomb = np.sum((v_rot[..., n - 1, n - k] + v_rot[..., 0, k]) / k, axis=-1)
    v_s = 2.0 * v_rot[..., n - 1, 0] / (n - 1) ** 2 + coulomb / (n - 1)
    return k_s, v_s, d_s


def training_inputs(result, n_points: int | None = None) -> np.ndarray:
    """Each replica's training inputs, regenerated from its seed stream.

    Parameters
    ----------
    result : dysonsgd.train.EnsembleResult
    n_points : int, optional
        Keep the first ``n_points`` inputs (default all ``n_data``); the inputs are i.i.d., so
        this is a random subsample.

    Returns
    -------
    ndarray, shape (1, 1, nR, n_points, n0): pass as ``x`` to :func:`measure`.
    """
    n_data = result.config.n_data
    n_points = n_data if n_points is None else check_int("n_points", n_points, minimum=1)
    if n_points > n_data:
        raise InputError(f"n_points must be <= n_data = {n_data}, got {n_points}")
    xs = [replica_draws(result.config, result.seed, int(r))["x"][:n_points]
          for r in result.spawn_keys]
    return np.stack(xs)[None, None]


@dataclass(frozen=True)
class GradientStatistics:
    """K, V and the spacing coefficients of every model of a run at one snapshot.

    Arrays carry the run's grid axes (temperature, sigma_w, seed) first.
    """

    snapshot: int
    eigenvalues: np.ndarray  # (..., n2) ascending
    k: np.ndarray  # (..., n2, n2) in the eigenbasis of X
    v: np.ndarray  # (..., n2, n2) variance of the rotated update: symmetric, >= 0
    v_paper_rotation: np.ndarray  # U^T V U of the unrotated variance (appendix B, release)
    k_s: np.ndarray
    v_s: np.ndarray
    d_s: np.ndarray
    k_s_release: np.ndarray
    v_s_release: np.ndarray
    moments: SingularMoments | None = None  # the complete SDE's moments (measure.moments)


def measure(result, snapshot: int = -1, *, x=None, chunk: int = 256) -> GradientStatistics:
    """Measure K and V (4.4) on a trained ensemble at one snapshot, vectorised over models.

    Parameters
    ----------
    result : dysonsgd.train.EnsembleResult
    snapshot : int
        Snapshot index (negative counts from the end).
    x : array_like, shape (D, n0) or (nT, nS, nR, D, n0) (or broadcastable), optional
        Data for the expectation, shared or per model (e.g. :func:`training_inputs`); default
        the release's 128 test inputs (numpy seed 42).
    chunk : int
        Models per batch (bounds the memory of the per-sample gradients).
    """
    chunk = check_int("chunk", chunk)
    snapshot = check_index("snapshot", snapshot, len(result.snapshot_epochs))
    widths = result.config.widths
    x = (
        test_inputs(128, widths[0], 42)
        if x is None
        else check_array("x", x, min_ndim=2, shape_tail=(None, widths[0]))
    )
    w1, w2t, w3 = (np.asarray(a, dtype=float) for a in result.teacher())
    w2 = np.asarray(result.w2[..., snapshot, :, :], dtype=float)
    grid = w2.shape[:-2]
    if x.ndim > 2:  # per-model data
        try:
            x = np.broadcast_to(x, (*grid, *x.shape[-2:]))
        except ValueError as exc:
            raise InputError(f"x must broadcast to {(*grid, None, widths[0])}, got {x.shape}"
                             ) from exc
        x_flat = x.reshape(-1, *x.shape[-2:])
    flat = [a.reshape(-1, *a.shape[len(grid) :]) for a in (w1, w2t, w3, w2)]
    n_models = flat[0].shape[0]
    n2 = w2.shape[-2]
    eig, u = eigensystem(w2)
    u_flat = u.reshape(-1, n2, n2)
    k_all, v_all, v_plain = (np.empty((n_models, n2, n2)) for _ in range(3))
    moments = []
    for a in range(0, n_models, chunk):
        b1, bt, b3, bs = (arr[a : a + chunk] for arr in flat)
        bx = x if x.ndim == 2 else x_flat[a : a + chunk]
        y = outputs(bx, b1, bt, b3, result.config.activation, engine="torch")
        grads, _ = per_sample_gradients(bx, y, b1, bs, b3, result.config.activation)
        moments.append(singular_moments(bs, grads))
        dx = _delta_x(bs, grads)  # once per chunk: the plain variance, then the rotated moments
        v_plain[a : a + chunk] = dx.var(axis=-3)
        dx = _rotate(dx, u_flat[a : a + chunk])
        k_all[a : a + chunk], v_all[a : a + chunk] = -dx.mean(axis=-3), dx.var(axis=-3)
    k_rot = _symmetric(k_all.reshape(*grid, n2, n2))
    v_rot = _symmetric(v_all.reshape(*grid, n2, n2))
    ut = np.swapaxes(u, -1, -2)
    v_paper = _symmetric(ut @ v_plain.reshape(*grid, n2, n2) @ u)
    k_s, v_s, d_s = rmt.spacing_coefficients(k_rot, v_rot)
    k_s_rel, v_s_rel, _ = spacing_coefficients_release(k_rot, v_paper)
    joined = SingularMoments.join(moments, np.concatenate).map(
        lambda a: a.reshape(*grid, *a.shape[1:]))
    return GradientStatistics(snapshot, eig, k_rot, v_rot, v_paper, k_s, v_s, d_s, k_s_rel, v_s_rel,
                              joined)
