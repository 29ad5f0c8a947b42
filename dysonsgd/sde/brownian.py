"""The Brownian path of the general engine: seeded increments refined by Brownian bridges.

:func:`dysonsgd.sde.integrate` draws the increments of its integration grid from a
:class:`BrownianPath`; :class:`dysonsgd.sde.Adaptive` asks it for the midpoint of a step it
refines. (The fused engine draws counter-based normals instead,
:mod:`dysonsgd.sde._fused.philox`.)
"""

from __future__ import annotations

import math

import numpy as np

from dysonsgd._checks import check_int

__all__ = ["BrownianPath", "seed_sequence"]


def seed_sequence(seed) -> np.random.SeedSequence:
    """``seed`` itself if it is a ``numpy.random.SeedSequence``, else ``SeedSequence(seed)``."""
    return seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)


class BrownianPath:
    """Brownian increments for (n_paths, dimension) from one seeded stream.

    Increments of the integration grid come from one stream; the midpoints that an adaptive
    solver asks for come from a second, independent stream through the Brownian bridge, so the
    grid increments never depend on how often a step was refined.

    Parameters
    ----------
    n_paths, dimension : int
    seed : int or numpy.random.SeedSequence
    """

    def __init__(self, n_paths: int, dimension: int, seed=0) -> None:
        self.n_paths = check_int("n_paths", n_paths)
        self.dimension = check_int("dimension", dimension)
        sequence = seed_sequence(seed)
        self.seed_sequence = sequence
        grid, bridge = sequence.spawn(2)
        self._grid = np.random.default_rng(grid)
        self._bridge = np.random.default_rng(bridge)

    def increment(self, dt: float) -> np.ndarray:
        """B(t + dt) - B(t) for every path, shape (n_paths, dimension)."""
        return math.sqrt(dt) * self._grid.standard_normal((self.n_paths, self.dimension))

    def split(self, dw: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Split increments over dt into two halves, conditioned on their sum (the bridge)."""
        first = 0.5 * dw + math.sqrt(0.25 * dt) * self._bridge.standard_normal(dw.shape)
        return first, dw - first
