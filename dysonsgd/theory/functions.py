"""The activation functions phi of the network (2.3) as numpy functions, by name.

The theory's Gaussian integrals ((2.13)-(2.22), :mod:`dysonsgd.theory.disorder`) evaluate them;
:mod:`dysonsgd.model.activations` adds their derivatives, torch and compiled forms. Only numpy
is imported here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["ACTIVATIONS"]


def _relu(z):
    return np.maximum(z, 0.0)


def _identity(z):
    return z


#: activation functions by name (the release supports these three)
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": _relu,
    "identity": _identity,
}
