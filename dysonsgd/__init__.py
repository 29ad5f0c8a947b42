"""dysonsgd: the stochastic-equation theory of SGD training.

Layers (lower never import higher)::

    rmt, disorder, symbolic          theory formulas of sections 2 and 4, appendix B
    training, observables, gradstats measurement on teacher-student ensembles
    sde                              Dyson Brownian motion, level-spacing SDE, Langevin SGD
    phase                            phase boundaries and classification
    sweep, store, plots, cli         runs, storage, figures and the ``dysonsgd`` command

Equation numbers in docstrings refer to Park, Lucini and Aarts (2025),
"Phase diagram and eigenvalue dynamics of stochastic gradient descent in multilayer
neural networks", Mach. Learn.: Sci. Technol. 6 045048.
"""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("dysonsgd")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
