"""Solvers and the Brownian path of :mod:`dysonsgd.sde.equations` (re-exported there).

A solver advances the paths ``rows`` of an equation (see :class:`dysonsgd.sde.equations.Equation`)
by one
step with given Brownian increments; :class:`Adaptive` refines a step along the Brownian bridge
of :class:`BrownianPath`. The fused engine (:mod:`dysonsgd.sde._fused.step`) runs the same schemes
in a compiled kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dysonsgd._checks import InputError, check_int, check_positive

__all__ = [
    "SOLVERS",
    "Adaptive",
    "BrownianPath",
    "DriftImplicit",
    "EulerMaruyama",
    "Platen",
    "Solver",
    "resolve_solver",
]


# --------------------------------------------------------------------------------------------
# Brownian path
# --------------------------------------------------------------------------------------------


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
        sequence = (
            seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        )
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


# --------------------------------------------------------------------------------------------
# solvers
# --------------------------------------------------------------------------------------------


class Solver(Protocol):
    strong_order: float

    def step(
        self,
        equation,
        t: float,
        y: np.ndarray,
        dt: float,
        dw: np.ndarray,
        path: BrownianPath,
        rows: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance the paths ``rows`` (states y, increments dw); return (y_new, ok)."""


class EulerMaruyama:
    """y' = y + f dt + g dW. Strong order 1/2 (1 for additive noise), weak order 1."""

    strong_order = 0.5

    def step(self, equation, t, y, dt, dw, path, rows):
        y_new = y + equation.drift(t, y, rows) * dt + equation.diffusion(t, y, rows) * dw
        return y_new, equation.valid(y_new)


class Platen:
    """Derivative-free Milstein scheme (Platen), strong order 1 for diagonal noise.

    y' = y + f dt + g dW + (g(Y) - g(y)) (dW^2 - dt) / (2 sqrt(dt)),  Y = y + f dt + g sqrt(dt).
    The correction approximates the Milstein term g g' (dW^2 - dt)/2, which requires each g_i to
    depend on y_i only (diagonal, commutative noise); it vanishes for additive noise.
    """

    strong_order = 1.0

    def step(self, equation, t, y, dt, dw, path, rows):
        f = equation.drift(t, y, rows)
        g = equation.diffusion(t, y, rows)
        support = y + f * dt + g * math.sqrt(dt)
        with np.errstate(invalid="ignore"):
            g_support = equation.diffusion(t, support, rows)
        y_new = y + f * dt + g * dw + (g_support - g) * (dw * dw - dt) / (2.0 * math.sqrt(dt))
        return y_new, equation.valid(y_new)


class DriftImplicit:
    """Euler-Maruyama with the singular (Coulomb) drift taken implicitly near collisions.

    The explicit Euler proposal is kept for a path when it stays in the domain, no gap between
    neighbouring levels (nor the distance to a wall) shrank by more than ``explicit_fraction``
    f of itself, and the Coulomb term is not stiff: dt T V_{i,i+1} <= f g_i^2, i.e. the
    explicit Coulomb kick dt T V/g of a neighbouring pair moves it by at most f of its gap g
    (for the spacing: S' >= (1 - f) S and dt T V_S <= f S^2). The singular drift then changes
    little over the step and both schemes agree to the order of the method; a gap that grows
    under the noise alone is no reason to go implicit. Otherwise the step is redone as
    c = y + f_regular dt + g dW, z = c + dt f_singular(z), solved by the equation
    (:meth:`DysonBrownianMotion.solve_singular`, :meth:`LevelSpacingSDE.solve_singular`) for
    the levels of the flagged pairs (and those between them), the others kept at their
    explicit positions: the implicit Coulomb step minimises a convex function with
    log-barriers, also to the fixed neighbours, so the levels stay ordered and the spacing
    positive for any step. Strong order 1/2 (1 for additive noise), like Euler-Maruyama.
    ``explicit_fraction=0`` makes every step implicit in all levels.
    """

    strong_order = 0.5

    def __init__(self, explicit_fraction: float = 0.5) -> None:
        self.explicit_fraction = check_positive(
            "explicit_fraction", explicit_fraction, allow_zero=True
        )

    def step(self, equation, t, y, dt, dw, path, rows):
        regular = equation.regular_drift(t, y, rows)
        noise = equation.diffusion(t, y, rows) * dw
        y_new = y + (regular + equation.singular_drift(t, y, rows)) * dt + noise
        fraction = self.explicit_fraction
        if fraction == 0:
            near = np.ones(y.shape[0], dtype=bool)
        else:
            near = ~equation.valid(y_new)
            near |= equation.near_singularity(t, y, y_new, dt, fraction, rows)
        if near.any():
            idx = np.flatnonzero(near)
            c = y[idx] + regular[idx] * dt + noise[idx]
            y_new[idx] = equation.solve_singular(
                t, y[idx], c, dt, rows[idx], explicit=y_new[idx], fraction=fraction
            )
        return y_new, equation.valid(y_new)


@dataclass
class Adaptive:
    """Collision-safe stepping: accept, or split along the Brownian bridge, path by path.

    A step of ``base`` is accepted for a path when the new state is in the equation's domain
    and (if ``safety`` is set) no coordinate moved by more than ``safety`` times the length
    scale (smallest gap or distance to a wall) of the old state. Otherwise the step is halved,
    with the midpoint of the same Brownian path drawn from its bridge, and the halves are taken
    recursively, down to dt / 2**max_depth; a path that still fails is reported as not ok
    (flagged). The default, ``Adaptive()``, refines a :class:`DriftImplicit` step only when it
    leaves the domain (the wall x_1 > 0 of a positive spectrum); with an explicit base such as
    :class:`EulerMaruyama`, set ``safety`` (e.g. 0.5) to resolve near-collisions.
    """

    base: Solver | None = None
    safety: float | None = None
    max_depth: int = 24

    def __post_init__(self) -> None:
        self.base = DriftImplicit() if self.base is None else self.base
        if self.safety is not None:
            check_positive("safety", self.safety)
        check_int("max_depth", self.max_depth, minimum=0)

    @property
    def strong_order(self) -> float:
        return self.base.strong_order

    def step(self, equation, t, y, dt, dw, path, rows, depth: int = 0):
        y_new, ok = self.base.step(equation, t, y, dt, dw, path, rows)
        if self.safety is not None:
            with np.errstate(invalid="ignore"):
                moved = np.max(np.abs(y_new - y), axis=-1)
            ok &= moved <= self.safety * equation.length_scale(y)
        if ok.all() or depth >= self.max_depth:
            return y_new, ok
        bad = np.flatnonzero(~ok)
        dw1, dw2 = path.split(dw[bad], dt)
        y_mid, ok1 = self.step(equation, t, y[bad], 0.5 * dt, dw1, path, rows[bad], depth + 1)
        # only paths whose first half succeeded go on: a failed path is given up at once
        # (continuing from an invalid midpoint would recurse to max_depth on both halves)
        cont = np.flatnonzero(ok1)
        if cont.size:
            y_end, ok2 = self.step(
                equation,
                t + 0.5 * dt,
                y_mid[cont],
                0.5 * dt,
                dw2[cont],
                path,
                rows[bad][cont],
                depth + 1,
            )
            y_mid[cont] = y_end
            ok1[cont] = ok2
        y_new[bad] = y_mid
        ok[bad] = ok1
        return y_new, ok


#: solvers by name; ``integrate(..., solver="euler")`` or a solver object
SOLVERS: dict[str, Callable[[], Solver]] = {
    "euler": EulerMaruyama,
    "platen": Platen,
    "implicit": DriftImplicit,
    "adaptive": Adaptive,
}


def resolve_solver(solver) -> Solver:
    """A solver object from None (the default :class:`Adaptive`), a name or an object."""
    if solver is None:
        return Adaptive()
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise InputError(
                f"solver must be one of {sorted(SOLVERS)} or a solver object, got {solver!r}"
            )
        return SOLVERS[solver]()
    if not hasattr(solver, "step"):
        raise InputError(f"solver must be a name or an object with a step() method, got {solver!r}")
    return solver
