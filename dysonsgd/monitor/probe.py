"""The probe: per-sample gradients of any model (``torch.func``) and the eigenvalue SDE's terms.

On a probe batch (inputs, targets) of P points the per-sample gradient Delta_a of the loss in
each monitored weight is ``vmap(grad(loss of one point))`` (:func:`per_sample_gradients`): one
vectorised backward pass, the model evaluated with ``torch.func.functional_call`` in eval mode
(dropout off, batch norm on its running statistics, which it does not update) and the torch
random state restored, so that probing never changes training. The loss of one point is
``loss_fn(model(x_a[None]), y_a[None])``: with a ``loss_fn`` that averages over the batch, the
minibatch gradient SGD steps with is the mean of these Delta_a over the batch.

From the P gradients of a layer W (N, M) the P points are the population (ddof 0) of
:mod:`dysonsgd.measure`: K, V (4.4) in the eigenbasis of X
(:func:`dysonsgd.measure.gradstats.drift_and_noise`), the spacing coefficients (B.7)-(B.9)
(:func:`dysonsgd.theory.rmt.spacing_coefficients`), the complete eigenvalue SDE's moments and
coefficients (:mod:`dysonsgd.measure.moments`) and the (4.15) side
(:mod:`dysonsgd.theory.boundaries`): :func:`probe_terms`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from dysonsgd._checks import InputError
from dysonsgd.measure.gradstats import drift_and_noise
from dysonsgd.measure.moments import (
    coefficients_at,
    singular_moments,
    spacing_coefficients_complete,
)
from dysonsgd.monitor.layers import MonitoredLayer
from dysonsgd.theory import rmt
from dysonsgd.theory.boundaries import convergence_criterion, signal_to_noise_threshold

__all__ = ["PROBE_TERMS", "check_probe", "per_sample_gradients", "probe_terms"]

#: scalars of :func:`probe_terms` per layer and record
PROBE_SCALARS = ("k_s", "v_s", "d_s", "k_s_complete", "v_s_complete", "d_s_complete",
                 "signal_to_noise", "threshold", "converged", "converged_complete")
#: vectors (N,) and matrices (N, N) of :func:`probe_terms`
PROBE_VECTORS = ("ito", "mean_square")
PROBE_MATRICES = ("K", "V", "finite_lr", "covariance")
PROBE_TERMS = PROBE_SCALARS + PROBE_VECTORS + PROBE_MATRICES


class _EvalMode:
    """Every module in eval mode and the torch RNG state saved, both restored on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.rng = torch.get_rng_state()
        self.model.train(False)
        return self

    def __exit__(self, *exc) -> None:
        for m, flag in self.flags:
            m.training = flag
        torch.set_rng_state(self.rng)


def per_sample_gradients(model: nn.Module, names: Sequence[str], inputs: torch.Tensor,
                         targets: torch.Tensor, loss_fn: Callable, *,
                         chunk_size: int | None = None
                         ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-sample gradients of ``loss_fn`` in the named parameters, by ``vmap(grad)``.

    Parameters
    ----------
    model : nn.Module
    names : parameter names
    inputs : (P, ...) ; targets : (P, ...)
    loss_fn : ``loss_fn(output, target) -> scalar`` on a batch (here of one point)
    chunk_size : int, optional
        Points per vectorised chunk (bounds the memory; default all P at once).

    Returns
    -------
    grads : name -> (P, *parameter shape), detached
    losses : (P,) the per-point losses
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    trained = {k: params[k] for k in names}

    def loss_one(weights, x, y):
        out = functional_call(model, ({**params, **weights}, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    with _EvalMode(model), torch.no_grad():
        grads, losses = vmap(grad_and_value(loss_one), in_dims=(None, 0, 0),
                             chunk_size=chunk_size)(trained, inputs, targets)
    return grads, losses


def check_probe(model: nn.Module, probe, loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe as two tensors on the model's device, after checking it fits model and loss.

    The model must run on the inputs, ``loss_fn`` must give a scalar on one point, and the
    loss of the whole probe batch must be the mean of its per-point losses (to rounding:
    64 ulps of the model's dtype times the batch size): this catches targets whose shape
    broadcasts against the outputs (a (P,) target against (P, 1) outputs, say) and a
    ``loss_fn`` that sums instead of averaging over the batch, for which the per-point
    gradients would not average to the gradient SGD steps with.

    Raises
    ------
    InputError
        Naming ``probe`` or ``loss_fn``.
    """
    if probe is None:
        raise InputError("probe must be a tuple (inputs, targets) of tensors")
    if loss_fn is None or not callable(loss_fn):
        raise InputError("loss_fn must be given with a probe: loss_fn(output, target) -> the "
                         "batch-mean loss that training minimises")
    if not (isinstance(probe, Sequence) and len(probe) == 2
            and all(isinstance(t, torch.Tensor) for t in probe)):
        raise InputError(f"probe must be a tuple (inputs, targets) of tensors, got "
                         f"{type(probe).__name__}")
    inputs, targets = probe
    if inputs.ndim < 1 or targets.ndim < 1 or inputs.shape[0] != targets.shape[0]:
        raise InputError(f"probe: inputs {tuple(inputs.shape)} and targets "
                         f"{tuple(targets.shape)} must have the same leading (batch) size")
    if inputs.shape[0] < 2:
        raise InputError(f"probe must hold at least 2 points for a variance, got "
                         f"{inputs.shape[0]}")
    first = next(model.parameters())
    inputs, targets = inputs.to(first.device), targets.to(first.device)
    try:
        with _EvalMode(model), torch.no_grad():
            batch = loss_fn(model(inputs), targets)
            each = torch.stack([loss_fn(model(inputs[a:a + 1]), targets[a:a + 1])
                                for a in range(min(inputs.shape[0], 8))])
            head = loss_fn(model(inputs[:8]), targets[:8])
    except Exception as exc:  # the model or loss_fn cannot take the probe: a user error
        raise InputError(f"probe: the model and loss_fn fail on inputs of shape "
                         f"{tuple(inputs.shape)}, targets {tuple(targets.shape)}: {exc}") from exc
    if batch.ndim != 0 or each.ndim != 1:
        raise InputError(f"loss_fn must return a scalar (reduce over the batch), got shape "
                         f"{tuple(batch.shape)}")
    if not torch.isfinite(batch):
        raise InputError("probe: the loss on the probe batch is not finite")
    eps = torch.finfo(head.dtype).eps if head.dtype.is_floating_point else 1e-7
    tol = 64 * eps * each.numel() * float(each.abs().max()) + 64 * eps
    if abs(float(head) - float(each.mean())) > tol:
        raise InputError(
            f"probe: loss_fn over a batch ({float(head):.6g}) is not the mean of its per-point "
            f"losses ({float(each.mean()):.6g}): targets {tuple(targets.shape)} against "
            f"outputs {tuple(model(inputs[:1]).shape[1:])} per point, or a loss that does not "
            "average over the batch")
    return inputs, targets


def probe_terms(layer: MonitoredLayer, w: np.ndarray, grads: np.ndarray, eigenvectors,
                *, temperature: float, learning_rate: float, sigma2: float) -> dict:
    """Every probe term of one layer at one record (see :data:`PROBE_TERMS`).

    Parameters
    ----------
    layer : the layer (for N, M)
    w : (N, M) float64 the layer's W
    grads : (P, N, M) float64 per-sample gradients of W (weight decay already added)
    eigenvectors : (N, N) columns the eigenvectors of X = W W^T, ascending eigenvalues
    temperature : T = lr_eff/|B| (NaN when |B| is not known yet: then the T-dependent terms
        are NaN)
    learning_rate : lr_eff of the finite-lr terms
    sigma2 : sigma_W^2 of the initial spacing bound S_0 (4.14) in (4.15)

    Returns
    -------
    dict of floats (PROBE_SCALARS) and arrays: ito, mean_square (N,); K (4.4), V (4.4)
    rotated, finite_lr P, covariance C (N, N). K_S, V_S, D_S are (B.7)-(B.9) as printed,
    ``*_complete`` those of the complete SDE; ``signal_to_noise`` is -K_S / V_S, ``threshold``
    the left side (n2 - 1) T / (4 sqrt(r) sigma_W^2) of (4.15) with n1, n2 = M, N, and
    ``converged`` its verdict K_S + V_S T / S_0 <= 0 (convention 'paper'), 1.0 or 0.0.
    """
    k, v = drift_and_noise(w, grads, basis=eigenvectors)
    k_s, v_s, d_s = rmt.spacing_coefficients(k, v)
    coeffs = coefficients_at(singular_moments(w, grads))
    widths = (1, layer.n_cols, layer.n_rows, 1)
    out = {"K": k, "V": v, "ito": coeffs.ito, "mean_square": coeffs.mean_square,
           "finite_lr": coeffs.finite_lr, "covariance": coeffs.covariance,
           "k_s": float(k_s), "v_s": float(v_s), "d_s": float(d_s)}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["signal_to_noise"] = float(-k_s / v_s)
    sigma_w = math.sqrt(sigma2) if sigma2 > 0 else math.nan
    if math.isfinite(temperature) and temperature > 0 and math.isfinite(sigma_w):
        kc, vc, dc = spacing_coefficients_complete(coeffs, temperature, learning_rate)
        out.update(k_s_complete=float(kc), v_s_complete=float(vc), d_s_complete=float(dc))
        out["threshold"] = float(signal_to_noise_threshold(temperature, sigma_w, widths))
        for key, (ks, vs) in {"converged": (k_s, v_s), "converged_complete": (kc, vc)}.items():
            out[key] = float(convergence_criterion(ks, vs, temperature, sigma_w, widths,
                                                   convention="paper"))
    else:
        out.update({key: math.nan for key in ("k_s_complete", "v_s_complete", "d_s_complete",
                                              "threshold", "converged", "converged_complete")})
    return out
