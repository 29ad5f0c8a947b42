"""The teacher-student network (2.2)-(2.3): forward pass, features and per-sample gradients.

A network ``n0 -> n1 -> n2 -> n3`` without biases, activation ``phi`` on both hidden layers and
a linear output,

    yhat(x) = W3 phi(W2 phi(W1 x)),                                        (2.2)-(2.3)

with weights ``W1`` (n1, n0), ``W2`` (n2, n1), ``W3`` (n3, n2). Inputs are stored as rows, so a
batch of points ``x`` is ``(..., P, n0)`` and every layer is a right product with ``W^T``; leading
axes ``...`` are ensemble axes (one network per index). The per-sample loss is
``l = 1/2 sum_i (y_i - yhat_i)^2`` (2.6), and its gradient with respect to the trained matrix is
(2.28) ``dl/dW2[i, j] = sum_k (yhat_k - y_k) W3[k, i] phi'(z2_i) phi(z1_j)``.

Engines
-------
The same quantity is computed in two ways where callers' numbers are pinned bitwise:

- ``engine='numpy'``: plain numpy float64 with broadcasting (observables, test losses);
- ``engine='torch'``: torch float64 on the CPU in chunks of networks, the activation applied in
  place (torch's vectorised ``tanh``, within an ulp of numpy's and many times faster), for the
  big set-up products of training: the teacher's targets and the layer-1 features;
- ``engine='native'`` (layer-1 features only): the arithmetic of the arrays' own library, numpy
  arrays or torch tensors on any device, with the activation's ``(phi, phi')`` form, as in the
  gradients below and the torch training backend.

The activation's forms all come from :mod:`dysonsgd.model.activations`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dysonsgd._checks import InputError
from dysonsgd.model.activations import lookup

__all__ = [
    "ENGINES",
    "backprop",
    "features",
    "layer1_features",
    "outputs",
    "per_sample_gradients",
]

#: ways of evaluating the forward pass (see the module docstring)
ENGINES = ("numpy", "torch", "native")

#: networks per torch chunk of the layer-1 features (engine 'torch')
_FEATURE_CHUNK = 16

#: about this many float64 values of layer-1 activations per torch chunk of the forward pass
_FORWARD_CHUNK_VALUES = 2**21


def _t(a):
    """Swap the last two axes of a numpy array or a torch tensor (``W`` -> ``W^T``)."""
    return np.swapaxes(a, -1, -2) if isinstance(a, np.ndarray) else a.transpose(-1, -2)


def _engine(engine: str, allowed: tuple[str, ...]) -> str:
    if engine not in allowed:
        raise InputError(f"engine must be one of {allowed}, got {engine!r}")
    return engine


def layer1_features(x, w1, activation: str = "tanh", *, engine: str = "numpy",
                    dtype=np.float64):
    """Layer-1 features ``phi(W1 x)`` (2.3).

    Parameters
    ----------
    x : (..., P, n0)
        Inputs; with ``engine='torch'`` exactly ``(G, P, n0)``.
    w1 : (..., n1, n0)
        With ``engine='torch'`` exactly ``(G, n1, n0)``.
    activation : str
        A name of :mod:`dysonsgd.model.activations`.
    engine : {'numpy', 'torch', 'native'}
        'numpy': numpy float64, broadcast over leading axes; 'torch': torch float64 per chunk
        of 16 networks, in place, then rounded to ``dtype`` (the numba training engine's
        features of every teacher); 'native': numpy arrays or torch tensors (any device) in
        their own arithmetic and dtype, ``phi`` of the activation's ``(phi, phi')`` form.
    dtype : numpy dtype
        Of the result ('numpy', 'torch'; computed in float64, then rounded).

    Returns
    -------
    (..., P, n1) array (a tensor with ``engine='native'`` on tensors)
    """
    act = lookup(activation)
    engine = _engine(engine, ENGINES)
    if engine == "native":
        return act.pair(x @ _t(w1))[0]
    if engine == "numpy":
        z = np.asarray(x, float) @ np.swapaxes(np.asarray(w1, float), -1, -2)
        return act.value(z).astype(dtype, copy=False)
    import torch

    out = np.empty((x.shape[0], x.shape[1], w1.shape[1]), dtype)
    for a in range(0, x.shape[0], _FEATURE_CHUNK):
        z = torch.from_numpy(np.ascontiguousarray(x[a:a + _FEATURE_CHUNK])) @ torch.from_numpy(
            np.ascontiguousarray(w1[a:a + _FEATURE_CHUNK])).transpose(1, 2)
        out[a:a + _FEATURE_CHUNK] = act.inplace(z).numpy()
    return out


def features(x, w1, w2, activation: str = "tanh") -> np.ndarray:
    """Last-hidden-layer features ``phi_{j alpha}`` (2.5): ``phi(W2 phi(W1 x))``, numpy float64.

    Parameters
    ----------
    x : (P, n0) or (..., P, n0)
    w1 : (..., n1, n0)
    w2 : (..., n2, n1)
    activation : str

    Returns
    -------
    (..., P, n2) float64
    """
    phi1 = layer1_features(x, w1, activation)
    return lookup(activation).value(phi1 @ np.swapaxes(np.asarray(w2, float), -1, -2))


def outputs(x, w1, w2, w3, activation: str = "tanh", *, engine: str = "numpy") -> np.ndarray:
    """Network output (2.3), ``W3 phi(W2 phi(W1 x))``, batched over leading axes, float64.

    Parameters
    ----------
    x : (..., P, n0)
    w1 : (..., n1, n0)
    w2 : (..., n2, n1)
    w3 : (..., n3, n2)
    activation : str
    engine : {'numpy', 'torch'}
        'numpy': :func:`features` times ``W3^T`` (observables, test losses); 'torch': torch
        float64 in chunks of networks, activations in place (the teacher's training targets).

    Returns
    -------
    (..., P, n3) float64
    """
    if _engine(engine, ("numpy", "torch")) == "numpy":
        return features(x, w1, w2, activation) @ np.swapaxes(np.asarray(w3, float), -1, -2)
    import torch

    act = lookup(activation)
    x, w1, w2, w3 = (np.asarray(a, dtype=np.float64) for a in (x, w1, w2, w3))
    lead = np.broadcast_shapes(x.shape[:-2], w1.shape[:-2], w2.shape[:-2], w3.shape[:-2])
    x, w1, w2, w3 = (np.broadcast_to(a, lead + a.shape[-2:]).reshape(-1, *a.shape[-2:])
                     for a in (x, w1, w2, w3))
    out = np.empty((x.shape[0], x.shape[1], w3.shape[1]))
    # in chunks, so that the temporaries are recycled rather than freshly paged in
    step = max(1, _FORWARD_CHUNK_VALUES // max(1, x.shape[1] * w1.shape[1]))
    for a in range(0, x.shape[0], step):
        t = [torch.from_numpy(np.array(v[a:a + step])) for v in (x, w1, w2, w3)]
        h = act.inplace(t[0] @ t[1].transpose(-1, -2))
        h = act.inplace(h @ t[2].transpose(-1, -2))
        out[a:a + step] = (h @ t[3].transpose(-1, -2)).numpy()
    return out.reshape(*lead, *out.shape[1:])


def backprop(phi1, y, w2, w3, activation: str = "tanh") -> tuple[Any, Any]:
    """Output error and the back-propagated error of layer 2, from the layer-1 features.

    With ``z2 = W2 phi1`` and ``yhat = W3 phi(z2)``: ``err = yhat - y`` and
    ``delta = (W3^T err) * phi'(z2)``, so that ``dl/dW2 = delta phi1^T`` (2.28). numpy arrays or
    torch tensors (all of one kind), in their own arithmetic.

    Parameters
    ----------
    phi1 : (..., P, n1)
    y : (..., P, n3)
    w2 : (..., n2, n1)
    w3 : (..., n3, n2)
    activation : str

    Returns
    -------
    err : (..., P, n3)
    delta : (..., P, n2)
    """
    h2, dact = lookup(activation).pair(phi1 @ _t(w2))
    err = h2 @ _t(w3) - y
    return err, (err @ w3) * dact


def per_sample_gradients(x, y, w1, w2, w3, activation: str = "tanh"):
    """Per-sample gradient ``dl(x_a)/dW2`` of ``l = 1/2 sum_i (y_i - yhat_i)^2`` (2.6), (2.28).

    ``dl/dW2[i, j] = sum_k (yhat_k - y_k) W3[k, i] phi'(z2_i) phi(z1_j)``.

    Parameters
    ----------
    x : (..., n_points, n0); y : (..., n_points, n3)
    w1 : (..., n1, n0); w2 : (..., n2, n1); w3 : (..., n3, n2)
        numpy arrays or torch tensors (all of one kind).
    activation : str

    Returns
    -------
    grads : (..., n_points, n2, n1)
    loss : (..., n_points)
        the per-sample loss ``l``.
    """
    phi1 = layer1_features(x, w1, activation, engine="native")
    err, delta = backprop(phi1, y, w2, w3, activation)
    grads = delta[..., :, None] * phi1[..., None, :]
    return grads, 0.5 * (err**2).sum(-1)
