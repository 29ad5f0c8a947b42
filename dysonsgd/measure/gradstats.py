"""Drift K and noise V of the eigenvalues of X = W2 W2^T from per-sample gradients, eq. (4.4).

For a model and a data set, the per-sample gradient Delta_a of W2 (2.28) moves X by
Delta^X_a = W2 Delta_a^T + Delta_a W2^T (4.4); K_ij = -E_a[Delta^X_ij] and
V_ij = Var_a[Delta^X_ij] (element-wise, population variance over the data). Rotated into the
eigenbasis of X (eigenvalues ascending), their diagonal and full matrix give the coefficients of
Dyson Brownian motion (4.3), and through (B.7), (B.9) the K_S, V_S, D_S of the spacing SDE (4.8).

The per-sample gradients come from :func:`dysonsgd.model.network.per_sample_gradients` (in
:func:`measure`, as the outer products of :func:`dysonsgd.model.network.backprop`'s errors with
the layer-1 features, inside the compiled kernel of :mod:`dysonsgd.measure._fused`), the
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
from dysonsgd.measure.moments import SingularMoments, singular_system
from dysonsgd.measure.observables import result_test_inputs
from dysonsgd.measure.spectrum import eigensystem
from dysonsgd.model.draws import replica_draws
from dysonsgd.model.network import backprop, layer1_features, outputs
from dysonsgd.model.tasks import task_test_set
from dysonsgd.theory import rmt

__all__ = [
    "GradientStatistics",
    "drift_and_noise",
    "measure",
    "measure_series",
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
    if result.config.task != "teacher":
        raise InputError(f"result: a run of the {result.config.task!r} task has fixed data "
                         "(dysonsgd.model.tasks.task_data), no per-replica draws; its gradient "
                         "statistics are measured on the task's held-out set (x=None)")
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


def _student_items(result, layer: int, snaps: list[int], teacher: np.ndarray,
                   n_s: int) -> np.ndarray:
    """The student's ``W_layer`` per (model, snapshot) item, model-major, float64: its snapshots
    if recorded, else the teacher's (per model) repeated over the snapshots."""
    if layer not in result.layer_w:
        return np.repeat(teacher, n_s, axis=0)
    w = np.asarray(result.layer_w[layer][..., snaps, :, :], dtype=float)
    return w.reshape(-1, *w.shape[-2:])


def measure(result, snapshot: int = -1, *, x=None, chunk: int = 256) -> GradientStatistics:
    """Measure K and V (4.4) on a trained ensemble at one snapshot, vectorised over models.

    :func:`measure_series` at one snapshot (see there).

    Parameters
    ----------
    result : dysonsgd.train.EnsembleResult
    snapshot : int
        Snapshot index (negative counts from the end).
    x : array_like, shape (D, n0) or (nT, nS, nR, D, n0) (or broadcastable), optional
        Data for the expectation, shared or per model (e.g. :func:`training_inputs`); default
        the release's 128 test inputs (numpy seed 42). A run of a fixed-data task
        (:mod:`dysonsgd.model.tasks`): the task's held-out images with their one-hot labels as
        the targets (no teacher), and ``x`` must be None.
    chunk : int
        Model-snapshots per batch (bounds the memory of the back-propagated errors).
    """
    snapshot = check_index("snapshot", snapshot, len(result.snapshot_epochs))
    return measure_series(result, [snapshot], x=x, chunk=chunk)[0]


def measure_series(result, snapshots=None, *, x=None, chunk: int = 256
                   ) -> tuple[GradientStatistics, ...]:
    """K and V (4.4), the spacing coefficients and the moments at several snapshots of a run.

    The teacher's targets and layer-1 features are computed once for all snapshots; the
    per-sample gradients Delta_a = delta_a phi_a^T (2.28) are never stacked: the compiled
    kernel of :mod:`dysonsgd.measure._fused` takes the means and variances sample by sample
    from the back-propagated errors (:func:`dysonsgd.model.network.backprop`), in the
    eigenbasis of X (:func:`dysonsgd.measure.spectrum.eigensystem`) and in the singular basis
    of W2 (:func:`dysonsgd.measure.moments.singular_system`). Where W1 or W3 train (an
    all-layer run), the gradient of W2 is taken with the student's W1 and W3 at each
    snapshot (layer-1 features per model and snapshot); else with the teacher's, once.

    Parameters
    ----------
    result : dysonsgd.train.EnsembleResult
    snapshots : sequence of int, optional
        Snapshot indices (negative count from the end); default all.
    x : array_like, shape (D, n0) or (nT, nS, nR, D, n0) (or broadcastable), optional
        As :func:`measure`.
    chunk : int
        Model-snapshots per batch (bounds the memory of the back-propagated errors).

    Returns
    -------
    tuple of GradientStatistics, one per snapshot, in the order given
    """
    from dysonsgd.measure import _fused

    chunk = check_int("chunk", chunk)
    n_snap = len(result.snapshot_epochs)
    snaps = (list(range(n_snap)) if snapshots is None
             else [check_index("snapshots", int(s), n_snap) for s in np.atleast_1d(snapshots)])
    if not snaps:
        raise InputError("snapshots must name at least one snapshot")
    widths = result.config.widths
    task = task_test_set(result.config)  # a fixed-data task: its held-out images and labels
    x = result_test_inputs(result, x, name="x")
    w1, w2t, w3 = (np.asarray(a, dtype=float) for a in result.teacher())
    w2 = np.asarray(result.w2[..., snaps, :, :], dtype=float)  # (*grid, S, n2, n1)
    grid = w2.shape[:-3]
    if x.ndim > 2:  # per-model data
        try:
            x = np.broadcast_to(x, (*grid, *x.shape[-2:]))
        except ValueError as exc:
            raise InputError(f"x must broadcast to {(*grid, None, widths[0])}, got {x.shape}"
                             ) from exc
        x_flat = x.reshape(-1, *x.shape[-2:])
    w1, w2t, w3 = (a.reshape(-1, *a.shape[len(grid):]) for a in (w1, w2t, w3))
    n_models, n_s, n2 = w1.shape[0], len(snaps), w2.shape[-2]
    w2_items = w2.reshape(-1, *w2.shape[-2:])  # model-major items (model, snapshot)
    act = result.config.activation
    # the teacher's targets once for all snapshots
    y = (outputs(x if x.ndim == 2 else x_flat, w1, w2t, w3, act, engine="torch")
         if task is None else np.broadcast_to(task[1], (n_models, *task[1].shape)).copy())
    xs = x if x.ndim == 2 else x_flat
    n_per = n_s  # items per unit: a unit shares W1, W3 (its layer-1 features and readout)
    if {1, 3} & set(result.layer_w):  # W1 or W3 trained (or not the teacher's): the student's
        w1, w3 = (_student_items(result, k, snaps, w, n_s) for k, w in ((1, w1), (3, w3)))
        y, n_per = np.repeat(y, n_s, axis=0), 1  # each (model, snapshot) is its own unit
        xs = xs if xs.ndim == 2 else np.repeat(xs, n_s, axis=0)
    phi1 = layer1_features(xs, w1, act, engine="native")
    n_units = w1.shape[0]
    n_items = n_models * n_s
    out = _fused.allocate_statistics(n_items, n2)
    eig, u, s, v_paper = (np.empty((n_items, n2, n2)[:k]) for k in (2, 3, 2, 3))
    per = max(1, chunk // n_per)  # units per batch

    def batch(b):  # every batch on its own thread: numpy, LAPACK and the kernels drop the GIL
        bm = slice(b * per, min((b + 1) * per, n_units))
        items = slice(bm.start * n_per, bm.stop * n_per)
        bw = w2_items[items]
        eig[items], u[items] = eigensystem(bw)
        s[items], us, vt = singular_system(bw, eigenvectors=u[items])
        _, delta = backprop(phi1[bm, None], y[bm, None], bw.reshape(-1, n_per, *bw.shape[1:]),
                            w3[bm, None], act)
        model_of = np.repeat(np.arange(bm.start, bm.stop), n_per)
        part = {name: arr[items] for name, arr in out.items()}
        _fused.fused_gradient_statistics(phi1, model_of, delta.reshape(-1, *delta.shape[-2:]),
                                         bw, u[items], us, vt, part)
        ub = u[items]
        v_paper[items] = _symmetric(np.swapaxes(ub, -1, -2) @ part["v_plain"] @ ub)

    _fused.parallel_batches(-(-n_units // per), batch)

    def series(a):  # items -> (*grid, S, ...)
        return a.reshape(*grid, n_s, *a.shape[1:])

    k_rot, v_rot, v_paper = series(out["k"]), series(out["v"]), series(v_paper)
    k_s, v_s, d_s = rmt.spacing_coefficients(k_rot, v_rot)
    k_s_rel, v_s_rel, _ = spacing_coefficients_release(k_rot, v_paper)
    moments = SingularMoments(series(s), *(series(out[name]) for name in (
        "mean", "mean_square", "ito", "diagonal_covariance", "variance", "cross")))
    eig = series(eig)
    return tuple(
        GradientStatistics(sn, eig[..., i, :], k_rot[..., i, :, :], v_rot[..., i, :, :],
                           v_paper[..., i, :, :], k_s[..., i], v_s[..., i], d_s[..., i],
                           k_s_rel[..., i], v_s_rel[..., i], moments.map(lambda f, i=i: f[
                               (slice(None),) * len(grid) + (i,)]))
        for i, sn in enumerate(snaps))
