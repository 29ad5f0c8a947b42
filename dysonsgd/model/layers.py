"""The network of any depth: its draws, the student's init, forward pass and per-sample gradients.

A config with ``widths = (n0, n_1, ..., n_L)`` is the network (2.2)-(2.3) with ``L`` weight
matrices and no biases,

    yhat(x) = W_L phi(W_{L-1} ... phi(W_1 x)),      W_l of shape (n_l, n_{l-1}),

``phi`` on every hidden layer and a linear output; the paper's is ``L = 3``. Inputs are rows, so
a batch of points is ``(..., P, n0)`` and each layer is a right product with ``W_l^T``; leading
axes ``...`` are ensemble axes. With the pre-activations ``z_l = W_l h_{l-1}``, ``h_0 = x``,
``h_l = phi(z_l)`` and ``yhat = z_L``, the per-sample loss ``l = 1/2 sum_i (y_i - yhat_i)^2``
(2.6) has the gradients (back-propagation; (2.28) for ``l = 2``)

    dl/dW_l = delta_l h_{l-1}^T,  delta_L = yhat - y,  delta_l = (W_{l+1}^T delta_{l+1}) phi'(z_l).

These functions are the plain NumPy (or torch, given tensors) definition of that arithmetic: the
reference of the general training kernel (:mod:`dysonsgd.train._numba.general`), of its tests
and of any observable of a network whose other layers train. The paper's two-hidden-layer
network keeps its own home, :mod:`dysonsgd.model.network`, whose numbers the W2 kernels pin.

Random numbers: replica ``r`` owns the stream ``SeedSequence(seed, spawn_key=(r,))`` of
:mod:`dysonsgd.model.draws`; :func:`replica_layer_draws` draws from it, in this order, the
teacher ``W_1 .. W_L`` (each ``~ N(0, 1/n_{l-1})``, (3.1)), the inputs ``x`` (n_data, n0)
``~ N(0, 1)``, the init noise ``Z_2`` of ``W2`` and then ``Z_l`` of every other matrix in
layer order. For the paper's widths the first five are exactly those of
:func:`~dysonsgd.model.draws.replica_draws`, so a student that shares its teacher's other
matrices starts where the paper's does, and the noise of a matrix does not depend on how the
others start. The student's ``W_l(0)`` follows :meth:`TeacherStudentConfig.init_rule`
(:func:`student_init`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dysonsgd._checks import InputError
from dysonsgd.model.activations import lookup
from dysonsgd.model.config import GRID_LAYER, TeacherStudentConfig

__all__ = [
    "batch_gradients",
    "check_weights",
    "forward",
    "outputs",
    "per_sample_gradients",
    "replica_layer_draws",
    "student_init",
]


def _t(a):
    """``W -> W^T`` on the last two axes of a numpy array or a torch tensor."""
    return np.swapaxes(a, -1, -2) if isinstance(a, np.ndarray) else a.transpose(-1, -2)


def replica_layer_draws(config: TeacherStudentConfig, seed: int,
                        replica: int) -> dict[str, Any]:
    """The draws of one replica for a network of any depth, float64.

    Parameters
    ----------
    config : TeacherStudentConfig
    seed : int
        Base entropy of the ``SeedSequence``.
    replica : int
        Its spawn key.

    Returns
    -------
    dict
        ``teacher``: tuple of the ``L`` teacher matrices ``W_l`` (n_l, n_{l-1}); ``x``
        (n_data, n0); ``z``: dict ``l -> Z_l`` (n_l, n_{l-1}) standard normal, for every ``l``;
        drawn in the order of the module docstring.
    """
    widths = config.widths
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(replica,))))
    teacher = [rng.standard_normal((widths[k], widths[k - 1])) / math.sqrt(widths[k - 1])
               for k in range(1, config.n_layers + 1)]
    if config.parametrisation != "standard":  # the mean-field readout: N(0, 1/n_{L-1}^2)
        teacher[-1] = teacher[-1] / config.output_divisor()
    teacher = tuple(teacher)
    x = rng.standard_normal((config.n_data, widths[0]))
    order = [GRID_LAYER] + [k for k in range(1, config.n_layers + 1) if k != GRID_LAYER]
    z = {k: rng.standard_normal(config.layer_shape(k)) for k in order}
    return {"teacher": teacher, "x": x, "z": z}


def student_init(config: TeacherStudentConfig, draws: dict[str, Any], sigma_w: float,
                 layer: int) -> np.ndarray:
    """``W_layer(0)`` of the student of the cell ``sigma_w`` (2.11), float64 (n_l, n_{l-1}).

    ``'grid'``: ``sigma_w Z_l / sqrt(n_{l-1})``; ``'teacher'``: the teacher's ``W_l``; a
    number ``s``: ``s Z_l / sqrt(n_{l-1})``, divided by ``config.output_divisor()`` for the output
    matrix (the mean-field readout). ``draws`` is :func:`replica_layer_draws`' dict.
    """
    rule = config.init_rule(layer)
    if rule == "teacher":
        return draws["teacher"][layer - 1]
    scale = sigma_w if rule == "grid" else float(rule)
    w = scale * draws["z"][layer] / math.sqrt(config.widths[layer - 1])
    # the output matrix of the mean-field readout: 1/n_{L-1}^2 (standard: an exact / 1.0)
    return w / config.output_divisor() if layer == config.n_layers else w


def check_weights(weights: Sequence, widths: Sequence[int], name: str = "weights") -> None:
    """Check that ``weights`` are ``L = len(widths) - 1`` matrices of shapes (..., n_l, n_{l-1}).

    Raises
    ------
    InputError
        Naming ``name`` and the first matrix of the wrong shape.
    """
    if len(weights) != len(widths) - 1:
        raise InputError(f"{name} must hold {len(widths) - 1} matrices for widths "
                         f"{tuple(widths)}, got {len(weights)}")
    for k, w in enumerate(weights, start=1):
        if tuple(w.shape[-2:]) != (widths[k], widths[k - 1]):
            raise InputError(f"{name}[{k - 1}] (W{k}) must end with shape "
                             f"{(widths[k], widths[k - 1])}, got {tuple(w.shape)}")


def forward(x, weights: Sequence, activation: str = "tanh") -> tuple[list, list]:
    """The forward pass through every layer, numpy arrays or torch tensors (all of one kind).

    Parameters
    ----------
    x : (..., P, n0)
    weights : sequence of L arrays (..., n_l, n_{l-1})
    activation : str
        A name of :mod:`dysonsgd.model.activations` (its ``(phi, phi')`` form).

    Returns
    -------
    h : list of L + 1 arrays
        ``h[0] = x``, ``h[l] = phi(z_l)`` (..., P, n_l) for the hidden layers and ``h[L] = z_L``,
        the output (linear).
    dphi : list of L - 1 arrays
        ``phi'(z_l)`` of the hidden layers ``l = 1 .. L-1`` (index ``l - 1``).
    """
    act = lookup(activation)
    h, dphi = [x], []
    for k, w in enumerate(weights, start=1):
        z = h[-1] @ _t(w)
        if k == len(weights):
            h.append(z)
        else:
            a, d = act.pair(z)
            h.append(a)
            dphi.append(d)
    return h, dphi


def outputs(x, weights: Sequence, activation: str = "tanh"):
    """Network output ``yhat`` (..., P, n_L) (see :func:`forward`)."""
    return forward(x, weights, activation)[0][-1]


def _deltas(x, y, weights: Sequence, activation: str, lowest: int):
    """The forward pass, then the back-propagated errors ``delta_l`` for ``l >= lowest``."""
    h, dphi = forward(x, weights, activation)
    n = len(weights)
    delta = {n: h[-1] - y}
    for k in range(n - 1, lowest - 1, -1):
        delta[k] = (delta[k + 1] @ weights[k]) * dphi[k - 1]
    return h, delta


def _layers(layers, n: int) -> tuple[int, ...]:
    layers = tuple(range(1, n + 1)) if layers is None else tuple(int(k) for k in layers)
    if not layers or any(not 1 <= k <= n for k in layers):
        raise InputError(f"layers must be a non-empty subset of 1..{n}, got {layers!r}")
    return layers


def per_sample_gradients(x, y, weights: Sequence, activation: str = "tanh", layers=None):
    """Per-sample gradients ``dl(x_a)/dW_l = delta_l h_{l-1}^T`` of (2.6) for each layer.

    Parameters
    ----------
    x : (..., P, n0); y : (..., P, n_L)
    weights : sequence of L arrays (..., n_l, n_{l-1})
        numpy arrays or torch tensors (all of one kind).
    activation : str
    layers : iterable of int, optional
        Which ``W_l`` (1-based); default all.

    Returns
    -------
    grads : dict
        ``l -> (..., P, n_l, n_{l-1})``.
    loss : (..., P)
        The per-sample loss ``l``.
    """
    layers = _layers(layers, len(weights))
    h, delta = _deltas(x, y, weights, activation, min(layers))
    grads = {k: delta[k][..., :, :, None] * h[k - 1][..., :, None, :] for k in layers}
    return grads, 0.5 * (delta[len(weights)] ** 2).sum(-1)


def batch_gradients(x, y, weights: Sequence, activation: str = "tanh", layers=None):
    """Gradients summed over the points, ``sum_a dl(x_a)/dW_l = delta_l^T h_{l-1}``.

    As :func:`per_sample_gradients` without the per-sample outer products: ``grads[l]`` is
    ``(..., n_l, n_{l-1})`` and ``loss`` the per-sample loss (..., P).
    """
    layers = _layers(layers, len(weights))
    h, delta = _deltas(x, y, weights, activation, min(layers))
    grads = {k: _t(delta[k]) @ h[k - 1] for k in layers}
    return grads, 0.5 * (delta[len(weights)] ** 2).sum(-1)
