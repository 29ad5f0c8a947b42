"""What the fused engine runs: a solver's scheme and an equation's coefficients on knots.

The fused kernel (:mod:`dysonsgd.sde._fused.step`) integrates one of two forms,

    pairwise, Dyson Brownian motion (4.3), state (P, N), A = T V, D_i = T V_ii:
        dx_i = [K_i + sum_{j != i} A_ij / (x_i - x_j)] dt + sqrt(D_i) dB_i
    wall, the spacing SDE (4.8), N = 1, A = T V_S, D = 2 T D_S:
        dS = [K + A / S] dt + sqrt(D) dB

with K, A, D given on knots in time (linear between them, constant outside), by a base step
(Euler-Maruyama or the drift-implicit step) with optional refinement along the Brownian bridge.
Each side declares its part through a public method, and the kernels read it by name:

- a solver, through ``fused_scheme()``: a :class:`FusedScheme`, or :class:`Unfusable` with the
  reason the kernel cannot run it (:class:`dysonsgd.sde.Platen`, a subclass that changes
  ``step``);
- an equation, through ``coefficients_on_knots(n_paths, dimension)``: its
  :class:`KnotCoefficients` (K, A, D on the knots and its :class:`FusedForm`), or
  :class:`Unfusable` (callable coefficients, a subclass that changes the dynamics).

:func:`fused_plan` asks both and returns the :class:`FusedPlan` for
:func:`dysonsgd.sde._fused.driver.integrate_fused`, or why there is none.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

__all__ = [
    "MAX_DEPTH",
    "MAX_STEPS",
    "FusedForm",
    "FusedPlan",
    "FusedScheme",
    "KnotCoefficients",
    "Unfusable",
    "fused_plan",
    "overridden",
    "scheme_of",
]

#: the step index is the third 32-bit word of the Philox counter
MAX_STEPS = 2**32
#: bridge node ids (< 2**(max_depth + 1)) are the fourth word
MAX_DEPTH = 30


class FusedScheme(NamedTuple):
    """The step the fused kernel takes for a solver (fields read by name in the kernels).

    Attributes
    ----------
    implicit : bool
        The base step is :class:`dysonsgd.sde.DriftImplicit`'s (else Euler-Maruyama).
    explicit_fraction : float
        Its criterion f for keeping the explicit proposal (unused by Euler-Maruyama).
    limit_moves : bool
        A step is also rejected when a coordinate moves more than ``safety`` length scales
        (:class:`dysonsgd.sde.Adaptive` with ``safety`` set).
    safety : float
        That limit (unused without ``limit_moves``).
    max_depth : int
        Depth of the Brownian-bridge refinement of a rejected step; 0: a rejected step flags
        the path.
    """

    implicit: bool
    explicit_fraction: float
    limit_moves: bool
    safety: float
    max_depth: int


class FusedForm(NamedTuple):
    """The equation's side of a fused step (fields read by name in the kernels).

    Attributes
    ----------
    spacing : bool
        The wall form dS = [K + A/S] dt + sqrt(D) dB (N = 1), else the pairwise Coulomb form.
    wall : bool
        The domain requires x_1 > 0 (a positive spectrum, or the spacing).
    newton_tol, newton_max_iter : float, int
        Tolerance and iteration limit of the implicit Coulomb step's Newton solve.
    """

    spacing: bool
    wall: bool
    newton_tol: float
    newton_max_iter: int


class KnotCoefficients(NamedTuple):
    """An equation's coefficients on knots, in the fused form (see the module docstring).

    Attributes
    ----------
    knots : ndarray, shape (nc,)
        Coefficient times (nc = 1: constant coefficients).
    drift : ndarray, shape (nc, Pk, N)
        K; Pk is 1 (shared by all paths) or the number of paths.
    coupling : ndarray, shape (nc, Pv, N, N)
        A (T V; T V_S for the spacing, N = 1); Pv is 1 or the number of paths.
    variance : ndarray, shape (nc, Pv, N)
        D, the squared diffusion amplitude (T V_ii; 2 T D_S).
    form : FusedForm
    """

    knots: np.ndarray
    drift: np.ndarray
    coupling: np.ndarray
    variance: np.ndarray
    form: FusedForm


class Unfusable(NamedTuple):
    """Why the fused engine cannot run a solver or an equation."""

    reason: str


class FusedPlan(NamedTuple):
    """What :func:`dysonsgd.sde._fused.driver.integrate_fused` integrates."""

    coefficients: KnotCoefficients
    scheme: FusedScheme


def overridden(obj: object, cls: type, names: Iterable[str]) -> list[str]:
    """The methods among ``names`` that ``type(obj)`` redefines with respect to ``cls``.

    A subclass that changes the step or the dynamics must not run the fused kernel of its
    parent: ``fused_scheme`` and ``coefficients_on_knots`` return :class:`Unfusable` then.
    """
    return [name for name in names if getattr(type(obj), name) is not getattr(cls, name)]


def scheme_of(solver) -> FusedScheme | Unfusable:
    """``solver.fused_scheme()``, or Unfusable for a solver without one (or a bad answer)."""
    declare = getattr(solver, "fused_scheme", None)
    if declare is None:
        return Unfusable(f"the solver {type(solver).__name__} declares no fused_scheme()")
    scheme = declare()
    if isinstance(scheme, FusedScheme | Unfusable):
        return scheme
    return Unfusable(f"{type(solver).__name__}.fused_scheme() returned {scheme!r}")


def fused_plan(
    equation, solver, n_paths: int, dimension: int, total_steps: int
) -> FusedPlan | Unfusable:
    """The fused engine's plan for ``equation`` solved by ``solver``, or why there is none.

    Parameters
    ----------
    equation : an equation with ``coefficients_on_knots(n_paths, dimension)``
    solver : a solver with ``fused_scheme()``
    n_paths, dimension : int
        The shape (P, N) of the state.
    total_steps : int
        Steps of the integration grid (< :data:`MAX_STEPS`).
    """
    scheme = scheme_of(solver)
    if isinstance(scheme, Unfusable):
        return scheme
    if scheme.max_depth > MAX_DEPTH:
        return Unfusable(
            f"max_depth {scheme.max_depth} > {MAX_DEPTH}, the deepest bridge level of the "
            "fused engine's counter-based normals"
        )
    if total_steps >= MAX_STEPS:
        return Unfusable(f"{total_steps} steps: the fused engine counts steps in 32 bits")
    on_knots = getattr(equation, "coefficients_on_knots", None)
    if on_knots is None:
        return Unfusable(
            f"{type(equation).__name__} has no coefficients_on_knots(): the fused engine runs "
            "DysonBrownianMotion and LevelSpacingSDE"
        )
    coefficients = on_knots(n_paths, dimension)
    if isinstance(coefficients, Unfusable):
        return coefficients
    return FusedPlan(coefficients, scheme)
