"""The activation registry: every form of ``phi`` (2.3) that the package uses, from one table.

Each registered activation lists, side by side,

- ``value``: ``phi(z)`` on a numpy array (observables: features (2.5), outputs, test losses);
- ``pair``: ``(phi(z), phi'(z))`` on a numpy array or a torch tensor (per-sample gradients
  (2.28), the torch training backend);
- ``inplace``: ``phi`` applied in place to a float64 torch tensor (teacher targets and layer-1
  features, where the temporaries are big);
- ``simd``: the name of the vector ``(phi, phi')`` form of :mod:`dysonsgd.train._numba.simd`
  that the generated SGD kernels call on ``L`` models at once, and ``scalar``: the name of an
  exact scalar form that float64 kernels use instead, when the vector form approximates
  (float32 kernels use a rational ``tanh`` and, for GELU, the Abramowitz-Stegun 7.1.26 normal
  cdf with an exact exponential);
- ``code``: the integer baked into the generated kernels' source.

The forms of one activation agree to rounding; they are kept apart where a caller's exact
arithmetic is pinned (e.g. relu: ``np.maximum(z, 0)`` in the observables, ``z * (z > 0)`` with
its step derivative in the gradients). A new activation is one new row of :data:`REGISTRY`
(plus its vector form in :mod:`dysonsgd.train._numba.simd`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dysonsgd._checks import InputError
from dysonsgd.theory.functions import ACTIVATIONS as _VALUES

__all__ = ["ACTIVATIONS", "REGISTRY", "Activation", "lookup"]


@dataclass(frozen=True)
class Activation:
    """All forms of one activation function ``phi`` (see the module docstring)."""

    name: str
    code: int
    value: Callable[[np.ndarray], np.ndarray]
    pair: Callable[[Any], tuple[Any, Any]]
    inplace: Callable[[Any], Any]
    simd: str
    scalar: str | None = None


def _tanh_pair(z):
    h = np.tanh(z) if isinstance(z, np.ndarray) else z.tanh()
    return h, 1.0 - h * h


def _relu_pair(z):
    pos = z > 0
    return z * pos, pos * 1.0


def _identity_pair(z):
    return z, z * 0.0 + 1.0


def _identity(z):
    return z


_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)


def _gelu_pair(z):
    """``(z Phi(z), Phi(z) + z phi(z))``, exact GELU and its derivative (numpy or torch).

    ``Phi`` is the normal cdf (``ndtr``: scipy's for numpy, torch's for tensors) and ``phi`` the
    normal density; ``d/dz [z Phi(z)] = Phi(z) + z phi(z)``.
    """
    if isinstance(z, np.ndarray):
        from scipy.special import ndtr

        cdf, density = ndtr(z), np.exp(-0.5 * z * z) * _INV_SQRT_2PI
    else:
        import torch

        cdf, density = torch.special.ndtr(z), torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
    return z * cdf, cdf + z * density


def _gelu_inplace(z):
    import torch

    return z.mul_(torch.special.ndtr(z))


#: name -> every form of that activation (the numpy value is theory.functions', which the
#: Gaussian integrals of (2.13)-(2.22) use): the release's three and GELU
REGISTRY: dict[str, Activation] = {
    "tanh": Activation("tanh", 0, _VALUES["tanh"], _tanh_pair, lambda z: z.tanh_(), "vtanh_fast",
                       scalar="tanh_exact"),
    "relu": Activation("relu", 1, _VALUES["relu"], _relu_pair, lambda z: z.relu_(), "vrelu"),
    "identity": Activation("identity", 2, _VALUES["identity"], _identity_pair, _identity,
                           "videntity"),
    "gelu": Activation("gelu", 3, _VALUES["gelu"], _gelu_pair, _gelu_inplace, "vgelu",
                       scalar="gelu_exact"),
}
if set(REGISTRY) != set(_VALUES):  # pragma: no cover - a row added to one table only
    raise ImportError("model.activations.REGISTRY and theory.functions.ACTIVATIONS must name the "
                      "same activations")

#: the registered names, in table order
ACTIVATIONS: tuple[str, ...] = tuple(REGISTRY)


def lookup(name: str) -> Activation:
    """The registry row of ``name``.

    Raises
    ------
    InputError
        If ``name`` is not registered (the message lists the registered names).
    """
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"activation must be one of {ACTIVATIONS}, got {name!r}") from None
