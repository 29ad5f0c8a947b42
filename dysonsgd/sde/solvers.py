"""Solvers of the equations of :mod:`dysonsgd.sde.equations`, each with its fused-engine scheme.

A solver advances the paths ``rows`` of an equation (see :class:`dysonsgd.sde.Equation`) by one
step with given Brownian increments (``step``, the general engine); :class:`Adaptive` refines a
step along the Brownian bridge of :class:`dysonsgd.sde.BrownianPath`. Each solver also declares,
through ``fused_scheme()``, what the fused engine (:mod:`dysonsgd.sde._fused`) runs for it: a
:class:`~dysonsgd.sde._fused.plan.FusedScheme` with the same scheme compiled, or
:class:`~dysonsgd.sde._fused.plan.Unfusable` with the reason (:class:`Platen`; a subclass that
redefines ``step``, whose scheme the kernel does not know).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dysonsgd._checks import InputError, check_int, check_positive
from dysonsgd.sde._fused.plan import FusedScheme, Unfusable, overridden, scheme_of
from dysonsgd.sde.brownian import BrownianPath

__all__ = [
    "SOLVERS",
    "Adaptive",
    "DriftImplicit",
    "EulerMaruyama",
    "Platen",
    "Solver",
    "resolve_solver",
]


def _redefined_step(solver, cls: type) -> Unfusable | None:
    """Unfusable if ``solver``'s class redefines ``step`` of ``cls`` (the kernel runs cls's)."""
    if overridden(solver, cls, ("step",)):
        return Unfusable(
            f"{type(solver).__name__} redefines step(): the fused engine runs the scheme of "
            f"{cls.__name__}, not this one (define fused_scheme() to declare one)"
        )
    return None


def noise_increment(equation, t: float, y: np.ndarray, dw: np.ndarray, rows) -> np.ndarray:
    """g dW over a step: the equation's own ``noise_increment`` (correlated noise, e.g.
    :class:`~dysonsgd.sde.complete.EigenvalueSDE`) or ``diffusion * dW`` (diagonal noise)."""
    own = getattr(equation, "noise_increment", None)
    if own is not None:
        return own(t, y, dw, rows)
    return equation.diffusion(t, y, rows) * dw


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

    def fused_scheme(self) -> FusedScheme | Unfusable:
        """What the fused engine runs for this solver, or why it cannot (optional: a solver
        without this method runs on the general engine)."""


class EulerMaruyama:
    """y' = y + f dt + g dW. Strong order 1/2 (1 for additive noise), weak order 1."""

    strong_order = 0.5

    def step(self, equation, t, y, dt, dw, path, rows):
        y_new = y + equation.drift(t, y, rows) * dt + noise_increment(equation, t, y, dw, rows)
        return y_new, equation.valid(y_new)

    def fused_scheme(self) -> FusedScheme | Unfusable:
        """The explicit Euler step, no refinement."""
        redefined = _redefined_step(self, EulerMaruyama)
        if redefined is not None:
            return redefined
        return FusedScheme(
            implicit=False, explicit_fraction=0.0, limit_moves=False, safety=0.0, max_depth=0
        )


class Platen:
    """Derivative-free Milstein scheme (Platen), strong order 1 for diagonal noise.

    y' = y + f dt + g dW + (g(Y) - g(y)) (dW^2 - dt) / (2 sqrt(dt)),  Y = y + f dt + g sqrt(dt).
    The correction approximates the Milstein term g g' (dW^2 - dt)/2, which requires each g_i to
    depend on y_i only (diagonal, commutative noise); it vanishes for additive noise.
    """

    strong_order = 1.0

    def step(self, equation, t, y, dt, dw, path, rows):
        if getattr(equation, "noise_increment", None) is not None:
            raise InputError(
                f"solver: Platen needs diagonal noise; {type(equation).__name__} has correlated "
                "noise (use 'euler', 'implicit' or the default)"
            )
        f = equation.drift(t, y, rows)
        g = equation.diffusion(t, y, rows)
        support = y + f * dt + g * math.sqrt(dt)
        with np.errstate(invalid="ignore"):
            g_support = equation.diffusion(t, support, rows)
        y_new = y + f * dt + g * dw + (g_support - g) * (dw * dw - dt) / (2.0 * math.sqrt(dt))
        return y_new, equation.valid(y_new)

    def fused_scheme(self) -> Unfusable:
        """Unfusable: the fused engine has no Platen step (its support-point diffusion)."""
        return Unfusable(
            "Platen: the fused engine runs Euler-Maruyama and the drift-implicit step only"
        )


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
        noise = noise_increment(equation, t, y, dw, rows)
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

    def fused_scheme(self) -> FusedScheme | Unfusable:
        """The drift-implicit step with this ``explicit_fraction``, no refinement."""
        redefined = _redefined_step(self, DriftImplicit)
        if redefined is not None:
            return redefined
        return FusedScheme(
            implicit=True,
            explicit_fraction=float(self.explicit_fraction),
            limit_moves=False,
            safety=0.0,
            max_depth=0,
        )


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

    def fused_scheme(self) -> FusedScheme | Unfusable:
        """The base's scheme with this ``safety`` and ``max_depth`` of bridge refinement."""
        redefined = _redefined_step(self, Adaptive)
        if redefined is not None:
            return redefined
        base = scheme_of(self.base)
        if isinstance(base, Unfusable):
            return Unfusable(f"Adaptive around {type(self.base).__name__}: {base.reason}")
        if base.max_depth > 0 or base.limit_moves:
            return Unfusable(
                f"Adaptive around {type(self.base).__name__}, which refines its steps itself: "
                "the fused engine refines a base step"
            )
        return base._replace(
            limit_moves=self.safety is not None,
            safety=0.0 if self.safety is None else float(self.safety),
            max_depth=int(self.max_depth),
        )

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
