"""The Gaussian integrals behind the phase rule's thresholds, for any activation (issue 16).

The phase rule (:class:`dysonsgd.analysis.phase.PhaseThresholds`) has two thresholds that the
paper's set-up fixes for tanh: an *ordered* test loss (1e-3, about 1% of the tanh teacher's
output variance) and a *memory* level (G(t_f, 0) >= G_c = 0.274, the feature self-overlap at
tanh's critical variance sigma_c^2 = 1/2, (2.22)). Neither transfers to another activation:
relu has no sigma_c and its G(0, 0) = sigma_W^2 / 4 grows without bound
(:mod:`dysonsgd.theory.relu`). This module gives the two scales that do transfer, in the
mean-field (Gaussian pre-activation) approximation of (2.13)-(2.15):

- :func:`output_variance`: E[y^2] of the teacher y = W3 phi(W2* phi(W1 x)) with every layer
  ~ N(0, 1/fan_in) and x ~ N(0, v I); twice the expected loss of the zero predictor (2.6).
  Exact for positively homogeneous phi (relu: v / 4, identity: v); for tanh 0.236 (the release's
  3-32-16-1 teachers average 0.18, their median 0.14: finite width, 3 inputs).
- :func:`normalised_overlap`: kappa(c) = E[phi(u) phi(w)] / E[phi(u)^2] for jointly Gaussian
  pre-activations of variance q and correlation c: the normalised overlap
  G(t, 0) / sqrt(G(t, t) G(0, 0)) (3.4) that a correlation c between the pre-activations at
  t and 0 produces. kappa(1) = 1; kappa(0) = E[phi]^2 / E[phi^2] (0 for odd phi, 1/pi for relu)
  is erased memory.

relu's kappa is the arc-cosine closed form (:func:`dysonsgd.theory.relu.normalised_overlap`),
identity's is c; the other integrals are Gauss-Hermite quadratures (``n_nodes`` points per
dimension, exact for polynomials of degree < 2 n_nodes; numpy's nodes overflow beyond ~170).
"""

from __future__ import annotations

import math

import numpy as np

from dysonsgd._checks import InputError, check_in_range, check_int, check_positive
from dysonsgd.theory.functions import ACTIVATIONS

__all__ = ["normalised_overlap", "output_variance", "second_moment"]


def _phi(activation: str):
    if activation not in ACTIVATIONS:
        raise InputError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation]


def _nodes(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    check_int("n_nodes", n_nodes, minimum=2)
    z, w = np.polynomial.hermite_e.hermegauss(n_nodes)
    return z, w / w.sum()


def second_moment(activation: str, variance: float, *, n_nodes: int = 160) -> float:
    """E[phi(z)^2] for z ~ N(0, variance) (the q-map of (2.13)).

    Parameters
    ----------
    activation : str
        A name of :data:`dysonsgd.theory.functions.ACTIVATIONS`.
    variance : float
        > 0.
    """
    check_positive("variance", variance)
    z, w = _nodes(n_nodes)
    phi = _phi(activation)
    return float(np.sum(w * phi(math.sqrt(variance) * z) ** 2))


def output_variance(activation: str, *, depth: int = 2, input_variance: float = 1.0,
                    n_nodes: int = 160) -> float:
    """E[y^2] of a random teacher with ``depth`` hidden layers, mean-field (2.13)-(2.15).

    Every weight ~ N(0, 1/fan_in), x ~ N(0, ``input_variance`` I), a linear output: the
    pre-activation variance of layer l + 1 is q_{l+1} = E[phi(z)^2], z ~ N(0, q_l), q_1 = v,
    and E[y^2] = E[phi(z)^2], z ~ N(0, q_depth). The expected zero-predictor loss (2.6) is half
    of it. Independent of the widths in this approximation.

    Parameters
    ----------
    activation : str
    depth : int
        Hidden layers (2 in the paper), >= 1.
    input_variance : float
        v > 0.
    """
    check_int("depth", depth, minimum=1)
    check_positive("input_variance", input_variance)
    q = float(input_variance)
    for _ in range(depth):
        q = second_moment(activation, q, n_nodes=n_nodes)
        if not q > 0:
            raise InputError(f"activation {activation!r} gives a vanishing output variance")
    return q


def normalised_overlap(activation: str, correlation, *, variance: float = 1.0,
                       n_nodes: int = 120) -> np.ndarray:
    """kappa(c) = E[phi(u) phi(w)] / E[phi(u)^2], (u, w) Gaussian, variance q, correlation c.

    Parameters
    ----------
    activation : str
    correlation : array_like in [-1, 1]
        c, the correlation of the pre-activations at the two times.
    variance : float
        q > 0, the pre-activations' variance (kappa depends on it unless phi is positively
        homogeneous: relu, identity).

    Returns
    -------
    ndarray, the shape of ``correlation``.
    """
    c = np.asarray(correlation, dtype=float)
    if np.any(~np.isfinite(c)) or np.any((c < -1) | (c > 1)):
        raise InputError(f"correlation must lie in [-1, 1], got {correlation!r}")
    check_in_range("variance", variance, 0.0, math.inf, low_open=True)
    phi = _phi(activation)
    if activation == "relu":          # the arc-cosine closed form (the kink defeats quadrature)
        from dysonsgd.theory import relu  # imports sympy: only when needed

        return relu.normalised_overlap(c)
    if activation == "identity":
        return c.copy()
    z, w = _nodes(n_nodes)
    s = math.sqrt(variance)
    a = phi(s * z)                                            # phi(u) at the nodes of u
    cc = c.reshape(-1, 1, 1)
    # w = c u + sqrt(1 - c^2) v, u and v independent standard normals
    b = phi(s * (cc * z[:, None] + np.sqrt(1.0 - cc * cc) * z[None, :]))
    cross = np.einsum("i,j,kij->k", w * a, w, b)
    return (cross / np.sum(w * a * a)).reshape(c.shape)
