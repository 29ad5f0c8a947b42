"""The activation functions phi of the network (2.3) as numpy functions, by name.

The theory's Gaussian integrals ((2.13)-(2.22), :mod:`dysonsgd.theory.disorder`) evaluate them;
:mod:`dysonsgd.model.activations` adds their derivatives, torch and compiled forms. Only numpy
is imported at import time (GELU's Gaussian cdf is scipy's ``ndtr``, imported when first used,
so that the command line starts without scipy).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["ACTIVATIONS"]


def _relu(z):
    return np.maximum(z, 0.0)


def _identity(z):
    return z


def _gelu(z):
    """Exact GELU, ``z Phi(z)`` with ``Phi`` the standard normal cdf (not the tanh approximation).

    ``Phi`` is ``scipy.special.ndtr``, accurate in the lower tail where ``(1 + erf(z/sqrt 2))/2``
    cancels.
    """
    from scipy.special import ndtr

    return z * ndtr(z)


#: activation functions by name: the release's three (tanh, relu, identity) and GELU
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": _relu,
    "identity": _identity,
    "gelu": _gelu,
}
