"""Stochastic equations of section 4 and appendix B, with interchangeable solvers.

The equation (drift, diffusion, domain), the Brownian path and the solver are separate objects
that meet in :func:`integrate`, as in diffrax:

    equation  :class:`DysonBrownianMotion` (4.3), :class:`LevelSpacingSDE` (4.8),
              :class:`LangevinSGD` (2.30)                            (:mod:`.equations`)
    path      :class:`BrownianPath`: the increments of one seeded stream, refined by Brownian
              bridges when a solver subdivides a step                   (:mod:`.brownian`)
    solver    :class:`EulerMaruyama`, :class:`Platen` (derivative-free Milstein, strong order 1
              for diagonal noise), :class:`DriftImplicit` (Coulomb term implicit) and
              :class:`Adaptive` (Brownian-bridge refinement; the collision-safe default wraps
              :class:`DriftImplicit`)                                   (:mod:`.solvers`)

All equations are Itô SDEs with diagonal noise, dy_i = f_i(t, y) dt + g_i(t, y) dB_i, on a state
of shape (n_paths, N); their coefficients are arrays, :func:`piecewise_linear` in time or other
callables (:mod:`.coefficients`). The discrete Langevin update (2.29) is
:func:`langevin_sgd_discrete`.

Two engines run the solvers (:mod:`.integrate`): the general one steps all paths in numpy (any
equation, solver, callable coefficients); the fused one (:mod:`._fused`) runs blocks of steps in
one compiled kernel, on threads over paths, with counter-based Gaussian increments
(Philox4x32-10), so its paths depend on the seed and the path index only. It runs what the
solver declares (``fused_scheme()``, a :class:`FusedScheme`) for what the equation declares
(``coefficients_on_knots()``, :class:`KnotCoefficients`): Dyson Brownian motion and the spacing
SDE with array or :func:`piecewise_linear` coefficients, by Euler-Maruyama, the drift-implicit
step or :class:`Adaptive` around either. ``engine="auto"`` (the default) takes it exactly
there, :func:`choose_engine` says which engine runs and why, and ``engine="fused"`` raises
:class:`~dysonsgd._checks.InputError` with the reason elsewhere.

Collision safety
----------------
The Coulomb drift T V_ij/(x_i - x_j) of (4.3) and V_S T/S of (4.8) are singular where levels
meet. Plain Euler-Maruyama then takes huge steps: it reorders eigenvalues, makes them negative,
or throws a spacing far out from near S = 0. For beta = 1 noise this is not rare: the gap of two
neighbours behaves like a two-dimensional Bessel process, which comes arbitrarily close to 0, so
no fixed refinement depth of an explicit scheme suffices.

The default solver therefore takes the singular drift implicitly (:class:`DriftImplicit`) where
the explicit step is not to be trusted (a neighbouring gap shrank by more than half of itself,
or the Coulomb kick of a pair exceeds half its gap): for Dyson Brownian motion the implicit
step is the minimiser of the strictly convex function
|z - c|^2/2 - dt T sum_{i<j} V_ij log(z_j - z_i) over the levels of the flagged pairs (the others
at their explicit positions), whose log-barrier keeps the levels ordered for every step size
(V_ij > 0); for the spacing it is the positive root of a quadratic. Constraints
that the implicit step does not enforce (the wall x_1 > 0 of a positive spectrum, a V_ij = 0
pair) are handled by :class:`Adaptive`: a step that leaves the domain is split in two along the
Brownian bridge of the same path, recursively. A path that still fails at the maximum depth is
flagged: :func:`integrate` returns a masked array in which its entries are masked from that time
on, so ensemble statistics (``np.ma.mean``) exclude it instead of turning into NaN.
"""

from __future__ import annotations

from dysonsgd.sde._fused.plan import FusedScheme, KnotCoefficients, Unfusable
from dysonsgd.sde.brownian import BrownianPath
from dysonsgd.sde.coefficients import PiecewiseLinear, piecewise_linear
from dysonsgd.sde.equations import DysonBrownianMotion, Equation, LangevinSGD, LevelSpacingSDE
from dysonsgd.sde.integration import (
    ENGINES,
    EngineChoice,
    choose_engine,
    integrate,
    langevin_sgd_discrete,
)
from dysonsgd.sde.solvers import (
    SOLVERS,
    Adaptive,
    DriftImplicit,
    EulerMaruyama,
    Platen,
    Solver,
)

__all__ = [
    "ENGINES",
    "SOLVERS",
    "Adaptive",
    "BrownianPath",
    "DriftImplicit",
    "DysonBrownianMotion",
    "EngineChoice",
    "Equation",
    "EulerMaruyama",
    "FusedScheme",
    "KnotCoefficients",
    "LangevinSGD",
    "LevelSpacingSDE",
    "PiecewiseLinear",
    "Platen",
    "Solver",
    "Unfusable",
    "choose_engine",
    "integrate",
    "langevin_sgd_discrete",
    "piecewise_linear",
]
