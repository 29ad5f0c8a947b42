"""The largest curvature of the training loss in ``W2``: the top of its Hessian's spectrum.

The training loss of one model is the data mean of (2.6),

    L(W2) = (1/n) sum_a l(x_a),   l = 1/2 |y_a - W3 phi(W2 phi(W1 x_a))|^2,

and its Hessian ``H`` in ``vec(W2)`` (row-major, ``n2 n1`` = 512 entries on the paper's student)
decides the stability of gradient descent: a step ``W2 <- W2 - lr grad L`` multiplies the
deviation along an eigenvector of ``H`` near a minimum by ``1 - lr lambda``, so full-batch GD
is stable only where ``lr lambda_max < 2``. SGD (2.28) takes the same step with the minibatch
mean gradient, ``lr = T |B|``; ``lr lambda_max`` against 2 is therefore where the
continuous-time (small-lr) picture of (2.29)-(2.30) must fail.

How it is computed (vectorised over an ensemble, chunked over models, float64):

- the Hessian-vector product ``H v`` is the directional derivative, along ``v``, of the
  full-data gradient (2.28) of :func:`dysonsgd.model.network.backprop`, written out (the
  Gauss-Newton term plus the curvature ``phi''`` of the activation, see :class:`_Hessian`):
  exact, no finite step, two batched matrix products per product;
- the extreme eigenvalues come from the Lanczos iteration with full reorthogonalisation, run on
  all models of a chunk at once; the largest Ritz value ``theta`` is a lower bound on
  ``lambda_max`` (Cauchy interlacing) and ``|beta_k s_k|`` (the Ritz residual) bounds its
  distance to an eigenvalue of ``H``. With as many iterations as ``n2 n1`` it is exact.

Shapes use ``...`` for ensemble axes (for a run: ``(nT, nS, nR)``), ``P`` for data points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dysonsgd._checks import InputError, check_int
from dysonsgd.measure.gradstats import training_inputs
from dysonsgd.model import network
from dysonsgd.model.activations import lookup

__all__ = ["Curvature", "hessian_vector_product", "largest_curvature",
           "result_largest_curvature"]

#: Lanczos steps by default: on the paper's student the top Ritz value has converged to ~1e-10
#: relative long before (tests/test_curvature.py checks 1e-8 against the exact Hessian)
DEFAULT_ITERATIONS = 40


@dataclass(frozen=True)
class Curvature:
    """Extreme eigenvalues of the Hessian of the training loss in ``W2``, per model.

    Attributes
    ----------
    largest : (...) float64, ``lambda_max`` (the largest Ritz value, a lower bound)
    smallest : (...) float64, ``lambda_min`` (the smallest Ritz value, an upper bound)
    residual : (...) float64, the Ritz residual of ``largest``: an eigenvalue of ``H`` lies
        within it
    iterations : int, the Lanczos steps taken
    """

    largest: np.ndarray
    smallest: np.ndarray
    residual: np.ndarray
    iterations: int

    def stability(self, learning_rate) -> np.ndarray:
        """``lr x lambda_max``, to compare with 2 (gradient descent is stable below it)."""
        return np.asarray(learning_rate, dtype=np.float64) * self.largest


class _Hessian:
    """The Hessian of ``L(W2)`` for a chunk of models at fixed ``W2``, as an operator.

    Differentiating the gradient (2.28), ``dL/dW2 = (1/P) sum_a delta_a phi1_a^T`` with
    ``delta = (W3^T err) * phi'(z2)`` (:func:`dysonsgd.model.network.backprop`), along ``V``:
    with ``dz = V phi1``,

        H V = (1/P) sum_a [ (W3^T W3 (phi'(z2) * dz)) * phi'(z2) + (W3^T err) * phi''(z2) * dz ]
              phi1_a^T,

    the Gauss-Newton term and the curvature of ``phi``. Everything that does not depend on
    ``V`` is computed once; a product then costs two ``P x n1 x n2`` batched matrix products.
    ``phi''`` is the elementwise derivative of the registry's ``phi'`` (by autograd), so every
    registered activation is covered.
    """

    def __init__(self, phi1, y, w2, w3, activation: str) -> None:
        import torch

        z = (phi1 @ w2.transpose(-1, -2)).requires_grad_(True)
        with torch.enable_grad():
            dphi = lookup(activation).pair(z)[1]
            # phi' is elementwise, so the gradient of its sum is phi'' (zero where phi' is flat)
            ddphi = (torch.autograd.grad(dphi.sum(), z)[0] if dphi.requires_grad
                     else torch.zeros_like(z))
        self.dphi, self.ddphi, z = dphi.detach(), ddphi.detach(), z.detach()
        err, _ = network.backprop(phi1, y, w2, w3, activation)
        self.curvature = (err @ w3) * self.ddphi  # (M, P, n2): (W3^T err) * phi''(z2)
        self.gram = w3.transpose(-1, -2) @ w3  # (M, n2, n2): W3^T W3
        self.phi1 = phi1

    def __call__(self, v):
        """``H v`` for ``v`` of shape (M, n2, n1)."""
        import torch

        dz = self.phi1 @ v.transpose(-1, -2)
        t = torch.addcmul(self.curvature * dz, (self.dphi * dz) @ self.gram, self.dphi)
        return t.transpose(-1, -2) @ self.phi1 / self.phi1.shape[-2]


def hessian_vector_product(x, y, w1, w2, w3, v, activation: str = "tanh") -> np.ndarray:
    """``H v`` of the training loss ``L(W2)`` (the data mean of (2.6)), one product per model.

    Parameters
    ----------
    x : (M, P, n0); y : (M, P, n3) the targets; w1 : (M, n1, n0); w2 : (M, n2, n1);
    w3 : (M, n3, n2); v : (M, n2, n1) the directions
    activation : str

    Returns
    -------
    (M, n2, n1) float64, ``(H v)[i, j] = sum_kl d^2 L / dW2_ij dW2_kl v_kl``
    """
    import torch

    t = [torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (x, y, w1, w2, w3, v)]
    phi1 = network.layer1_features(t[0], t[2], activation, engine="native")
    return _Hessian(phi1, t[1], t[3], t[4], activation)(t[5]).numpy()


def _lanczos(matvec, start, iterations: int):
    """Extreme Ritz values of symmetric operators, one per row, by Lanczos with full
    reorthogonalisation.

    ``matvec`` maps (M, d) to (M, d) (torch float64); ``start`` is (M, d). An invariant
    subspace (``beta`` ~ 0) restarts with a fresh direction orthogonal to the basis, so the
    tridiagonal matrix decouples there and stays exact.

    Returns
    -------
    largest, smallest, residual : (M,) torch float64
    """
    import torch

    m, d = start.shape
    k = min(iterations, d)
    basis = torch.zeros((k, m, d), dtype=torch.float64)
    alpha = torch.zeros((m, k), dtype=torch.float64)
    beta = torch.zeros((m, k), dtype=torch.float64)
    gen = torch.Generator().manual_seed(12345)
    q = start / torch.linalg.vector_norm(start, dim=1, keepdim=True)
    for j in range(k):
        basis[j] = q
        r = matvec(q)
        alpha[:, j] = (q * r).sum(1)
        for _ in range(2):  # classical Gram-Schmidt twice: orthogonal to rounding
            r = r - torch.einsum("jm,jmd->md", torch.einsum("jmd,md->jm", basis[:j + 1], r),
                                 basis[:j + 1])
        b = torch.linalg.vector_norm(r, dim=1)
        beta[:, j] = b
        if j + 1 == k:
            break
        scale = alpha[:, : j + 1].abs().amax(1) + beta[:, : j + 1].amax(1)
        dead = b <= 1e-12 * scale
        if bool(dead.any()):  # an invariant subspace: continue from a new direction
            fresh = torch.randn((int(dead.sum()), d), dtype=torch.float64, generator=gen)
            for _ in range(2):
                fresh = fresh - torch.einsum(
                    "jm,jmd->md", torch.einsum("jmd,md->jm", basis[:j + 1, dead], fresh),
                    basis[:j + 1, dead])
            r[dead] = fresh
            beta[dead, j] = 0.0
            b = torch.where(dead, torch.linalg.vector_norm(r, dim=1), b)
        q = r / b[:, None]
    tri = torch.diag_embed(alpha) + torch.diag_embed(beta[:, :-1], 1) \
        + torch.diag_embed(beta[:, :-1], -1)
    theta, s = torch.linalg.eigh(tri)
    residual = (beta[:, -1] * s[:, -1, -1]).abs()
    return theta[:, -1], theta[:, 0], residual


def largest_curvature(x, y, w1, w2, w3, activation: str = "tanh", *,
                      iterations: int = DEFAULT_ITERATIONS, chunk: int = 64,
                      seed: int = 0) -> Curvature:
    """The extreme eigenvalues of the Hessian of ``L(W2)`` for every model of an ensemble.

    Parameters
    ----------
    x : (..., P, n0) training inputs; y : (..., P, n3) their targets (the teacher's outputs)
    w1 : (..., n1, n0); w2 : (..., n2, n1) the student; w3 : (..., n3, n2)
        Leading axes broadcast against each other.
    activation : str
    iterations : int
        Lanczos steps (at most ``n2 n1``, where the result is exact).
    chunk : int
        Models per vectorised Lanczos run (memory ~ 3 MB per model on the paper's data).
    seed : int
        Of the normal start vectors (``numpy.random.default_rng(seed)``).

    Returns
    -------
    Curvature
        Arrays of the broadcast leading shape.
    """
    import torch

    iterations = check_int("iterations", iterations, minimum=1)
    chunk = check_int("chunk", chunk, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    x, y, w1, w2, w3 = (np.asarray(a, dtype=np.float64) for a in (x, y, w1, w2, w3))
    for name, a in (("x", x), ("y", y), ("w1", w1), ("w2", w2), ("w3", w3)):
        if a.ndim < 2:
            raise InputError(f"{name} must have at least 2 dimensions, got shape {a.shape}")
    n2, n1 = w2.shape[-2:]
    if (x.shape[-2] != y.shape[-2] or w1.shape[-2:] != (n1, x.shape[-1])
            or w3.shape[-2:] != (y.shape[-1], n2)):
        raise InputError(f"inconsistent shapes: x {x.shape}, y {y.shape}, w1 {w1.shape}, "
                         f"w2 {w2.shape}, w3 {w3.shape}")
    lead = np.broadcast_shapes(*(a.shape[:-2] for a in (x, y, w1, w2, w3)))
    flat = [np.broadcast_to(a, lead + a.shape[-2:]).reshape(-1, *a.shape[-2:])
            for a in (x, y, w1, w2, w3)]
    m, d = flat[3].shape[0], n2 * n1
    start = np.random.default_rng(seed).standard_normal((m, d))
    out = np.empty((3, m))
    for a in range(0, m, chunk):
        xs, ys, w1s, w2s, w3s = (torch.from_numpy(np.array(f[a:a + chunk]))
                                 for f in flat)
        phi1 = network.layer1_features(xs, w1s, activation, engine="native")
        hessian = _Hessian(phi1, ys, w2s, w3s, activation)

        def matvec(v, hessian=hessian, shape=w2s.shape):
            return hessian(v.reshape(shape)).reshape(v.shape)

        res = _lanczos(matvec, torch.from_numpy(start[a:a + chunk]), iterations)
        out[:, a:a + chunk] = torch.stack(res).numpy()
    return Curvature(*(o.reshape(lead) for o in out), iterations=min(iterations, d))


def result_largest_curvature(result, snapshot: int = -1, *, n_points: int | None = None,
                             **kwargs) -> Curvature:
    """:func:`largest_curvature` of every model of a run at one snapshot, on its training data.

    Parameters
    ----------
    result : EnsembleResult
    snapshot : int
        Index into ``result.snapshot_epochs`` (default the last, ``t_f``).
    n_points : int, optional
        The first ``n_points`` training inputs of each replica (default all ``n_data``),
        regenerated from its seed stream (as :func:`dysonsgd.measure.gradstats.training_inputs`;
        a run trained on given ``inputs`` needs :func:`largest_curvature` itself).
    **kwargs
        ``iterations``, ``chunk``, ``seed`` of :func:`largest_curvature`.

    Returns
    -------
    Curvature
        Arrays (nT, nS, nR). ``lr x largest`` is :meth:`Curvature.stability` with
        ``result.learning_rate[:, None, None]``.
    """
    n = len(result.snapshot_epochs)
    if isinstance(snapshot, bool) or not isinstance(snapshot, (int, np.integer)) \
            or not -n <= snapshot < n:
        raise InputError(f"snapshot must be an integer in [-{n}, {n - 1}], got {snapshot!r}")
    n_seeds = result.diverged.shape[2]
    if not np.array_equal(result.group, np.broadcast_to(np.arange(n_seeds), result.group.shape)):
        raise InputError("result: its teachers or data were given per model; call "
                         "largest_curvature with them")
    x = training_inputs(result, n_points)[0, 0]  # (nR, P, n0), from the seed streams
    act = result.config.activation
    y = network.outputs(x, result.teacher_w1, result.teacher_w2, result.teacher_w3, act)
    return largest_curvature(x, y, result.teacher_w1, result.w2[..., snapshot, :, :],
                             result.teacher_w3, act, **kwargs)
