"""The stochastic equations of section 4 and appendix B: drift, diffusion, domain.

    :class:`DysonBrownianMotion`  the N eigenvalues of X, eq. (4.3)
    :class:`LevelSpacingSDE`      the mean level spacing S, eqs. (4.8), (B.8)
    :class:`LangevinSGD`          the weights under SGD as a Langevin equation, eq. (2.30)

All are Ito SDEs with diagonal noise, dy_i = f_i(t, y) dt + g_i(t, y) dB_i, on a state of shape
(n_paths, N), and implement :class:`Equation`, what the solvers of :mod:`dysonsgd.sde.solvers`
need. Coefficients are arrays or callables (:mod:`dysonsgd.sde.coefficients`). Dyson Brownian
motion and the spacing SDE also give their coefficients on knots in the form the fused engine
integrates (``coefficients_on_knots``, see :mod:`dysonsgd.sde._fused.plan`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from scipy import stats

from dysonsgd._checks import InputError, check_array, check_positive
from dysonsgd.sde._fused.implicit import coulomb_sum, implicit_window
from dysonsgd.sde._fused.plan import FusedForm, KnotCoefficients, Unfusable, overridden
from dysonsgd.sde.coefficients import Coefficient, as_coefficient, check_noise_matrix, on_knots

__all__ = [
    "NEWTON_MAX_ITER",
    "NEWTON_TOL",
    "DysonBrownianMotion",
    "Equation",
    "LangevinSGD",
    "LevelSpacingSDE",
]

#: tolerance and iteration limit of the implicit Coulomb step's Newton solve (both engines)
NEWTON_TOL = 1e-10
NEWTON_MAX_ITER = 100

#: the methods that define an equation's step: a subclass that redefines one of them is not
#: what the fused kernel integrates (see :func:`dysonsgd.sde._fused.plan.overridden`)
_DYNAMICS = (
    "drift",
    "regular_drift",
    "singular_drift",
    "diffusion",
    "solve_singular",
    "valid",
    "length_scale",
    "near_singularity",
)


def _redefined(equation, cls: type, names: tuple[str, ...]) -> Unfusable | None:
    changed = overridden(equation, cls, names)
    if not changed:
        return None
    return Unfusable(
        f"{type(equation).__name__} redefines {', '.join(changed)}: the fused engine "
        f"integrates {cls.__name__} as written (define coefficients_on_knots() to declare it)"
    )


class Equation(Protocol):
    """What a solver needs from an SDE dy = f dt + g dB (diagonal noise) on states (P, N)."""

    def drift(self, t: float, y: np.ndarray, rows=None) -> np.ndarray:
        """f(t, y), shape (P', N), for the paths ``rows`` (all when None) in state y."""

    def diffusion(self, t: float, y: np.ndarray, rows=None) -> np.ndarray:
        """g(t, y), shape (P', N): the diagonal noise amplitudes."""

    def regular_drift(self, t: float, y: np.ndarray, rows=None) -> np.ndarray:
        """The non-singular part of the drift (all of it for equations without a singularity)."""

    def singular_drift(self, t: float, y: np.ndarray, rows=None) -> np.ndarray:
        """The singular (Coulomb) part of the drift; drift = regular_drift + singular_drift."""

    def solve_singular(self, t, y, c, dt, rows=None, explicit=None, fraction=0.0) -> np.ndarray:
        """z = c + dt * (singular drift at z): the implicit part of a drift-implicit step
        (given the explicit proposal, an equation may solve only where it was not trusted)."""

    def valid(self, y: np.ndarray) -> np.ndarray:
        """(P',) bool: whether each state lies in the equation's domain."""

    def length_scale(self, y: np.ndarray) -> np.ndarray:
        """(P',) the distance to the nearest singularity (gap, wall); inf if none."""

    def near_singularity(self, t, y, y_new, dt, fraction, rows=None) -> np.ndarray:
        """(P',) bool: whether an explicit step y -> y_new is not to be trusted (see
        :class:`DriftImplicit`): a gap or wall distance shrank by more than ``fraction`` of
        itself, or the singular drift is stiff, dt * (its derivative) > ``fraction``."""

    def check_state(self, y: np.ndarray) -> None:
        """Raise InputError if the initial state or the coefficients are unusable."""

    def coefficients_on_knots(self, n_paths: int, dimension: int) -> KnotCoefficients | Unfusable:
        """Optional: the coefficients on knots in the fused engine's form, or why there are
        none (see :mod:`dysonsgd.sde._fused.plan`). Without it, the general engine runs."""


class _SplitDrift:
    """drift = regular_drift + singular_drift, so solvers can reuse either part."""

    def drift(self, t: float, y: np.ndarray, rows=None) -> np.ndarray:
        return self.regular_drift(t, y, rows) + self.singular_drift(t, y, rows)


class DysonBrownianMotion(_SplitDrift):
    """Dyson Brownian motion of N eigenvalues with measured drift and noise, eq. (4.3).

        dx_i = [K_i + T sum_{j != i} V_ij / (x_i - x_j)] dt + sqrt(T V_ii) dB_i

    Parameters
    ----------
    drift : array_like of shape (N,) or (P, N), or callable
        K_i in the eigenbasis, eigenvalues ascending; a callable of ``t`` (see
        :func:`piecewise_linear`) or of ``(t, x)`` for state-dependent coefficients.
    noise : array_like of shape (N, N) or (P, N, N), or callable
        V_ij: symmetric with non-negative entries; callables as for ``drift``.
    temperature : float
        T = lr / batch size > 0.
    positive : bool
        Whether the eigenvalues are those of a positive semi-definite matrix (X = W W^T): the
        domain then also requires x_1 > 0 and the wall at 0 enters the length scale.

    Notes
    -----
    The state is kept in ascending order, (P, N). The Wishart process of X = W W^T for a
    Brownian W of shape (N, M) is the case K_i = M, V_ij = x_i + x_j, T = 1.
    """

    def __init__(
        self, drift: Coefficient, noise: Coefficient, temperature: float, *, positive: bool = False
    ) -> None:
        self.temperature = check_positive("temperature", temperature)
        self.positive = bool(positive)
        if not callable(noise):
            check_noise_matrix(check_array("noise", noise, min_ndim=2))
        if not callable(drift) and not callable(noise):
            n_k, n_v = np.shape(drift)[-1], np.shape(noise)[-1]
            if n_k != n_v:
                raise InputError(
                    f"drift must have shape (..., {n_v}) to match noise, got {np.shape(drift)}"
                )
        self._drift = as_coefficient("drift", drift, 1)
        self._noise = as_coefficient("noise", noise, 2)
        self._values = (drift, noise)

    def coefficients(self, t: float, x: np.ndarray, rows=None) -> tuple[np.ndarray, np.ndarray]:
        """K (P', N) and V (P', N, N) at time t and state x, broadcast to the paths."""
        k = np.broadcast_to(self._drift(t, x, rows), x.shape)
        v = np.broadcast_to(self._noise(t, x, rows), (*x.shape, x.shape[-1]))
        return k, v

    def regular_drift(self, t: float, x: np.ndarray, rows=None) -> np.ndarray:
        return np.array(np.broadcast_to(self._drift(t, x, rows), x.shape))

    def singular_drift(self, t: float, x: np.ndarray, rows=None) -> np.ndarray:
        v = np.broadcast_to(self._noise(t, x, rows), (*x.shape, x.shape[-1]))
        return self.temperature * coulomb_sum(np.ascontiguousarray(x), v)

    def diffusion(self, t: float, x: np.ndarray, rows=None) -> np.ndarray:
        _, v = self.coefficients(t, x, rows)
        return np.sqrt(self.temperature * np.einsum("pii->pi", v))

    def solve_singular(
        self,
        t,
        x,
        c,
        dt,
        rows=None,
        tol: float = NEWTON_TOL,
        max_iter: int = NEWTON_MAX_ITER,
        explicit=None,
        fraction: float = 0.0,
    ):
        """Implicit Coulomb step: z_i - dt T sum_j V_ij/(z_i - z_j) = c_i, z ordered.

        With V frozen at (t, x), z minimises the strictly convex
        Phi(z) = |z - c|^2 / 2 - dt T sum_{i<j} V_ij log(z_j - z_i) over the ordered chamber,
        whose log-barrier keeps the levels ordered for any step and any c. Damped Newton in a
        compiled kernel, path by path: Hessian I + dt T L (L the weighted graph Laplacian of
        V_ij/(z_i - z_j)^2, factorised by Cholesky) and backtracking that never leaves the
        chamber; a path stops when its residual is below ``tol`` times the size of the terms
        or at rounding level, and one that does not converge in ``max_iter`` iterations is
        returned as NaN (and so flagged by ``valid``).

        Given the explicit proposal ``explicit`` (P', N) and ``fraction`` > 0, only the levels
        of the neighbouring pairs that fail the criterion of :meth:`near_singularity` (and
        those between them) are solved for, the others kept at their explicit positions: the
        window's energy has log-barriers to its fixed neighbours, so it stays ordered between
        them. This is :class:`DriftImplicit`'s step; without ``explicit`` all levels are solved.
        """
        _, v = self.coefficients(t, x, rows)
        x = np.ascontiguousarray(x, dtype=float)
        c = np.ascontiguousarray(c, dtype=float)
        v = np.ascontiguousarray(v)
        a = dt * self.temperature
        if explicit is None:
            explicit, fraction = c + a * coulomb_sum(x, v), 0.0
        z, ok = implicit_window(
            x, np.ascontiguousarray(explicit, dtype=float), c, v, a, float(fraction), tol, max_iter
        )
        z[~ok] = np.nan
        return z

    def valid(self, x: np.ndarray) -> np.ndarray:
        ok = np.all(np.isfinite(x), axis=-1) & np.all(np.diff(x, axis=-1) > 0, axis=-1)
        if self.positive:
            ok &= x[:, 0] > 0
        return ok

    def length_scale(self, x: np.ndarray) -> np.ndarray:
        if x.shape[-1] > 1:
            scale = np.min(np.diff(x, axis=-1), axis=-1)
        else:
            scale = np.full(x.shape[0], np.inf)
        if self.positive:
            scale = np.minimum(scale, x[:, 0])
        return scale

    def near_singularity(self, t, x, x_new, dt, fraction, rows=None) -> np.ndarray:
        """A neighbouring gap g shrank by more than ``fraction`` g, or dt T V_{i,i+1} > fraction g^2
        (the Coulomb kick dt T V/g of the pair exceeds ``fraction`` of its gap); with
        ``positive``, also x_1 shrank by more than ``fraction`` x_1."""
        gap = np.diff(x, axis=-1)
        v = np.broadcast_to(self._noise(t, x, rows), (*x.shape, x.shape[-1]))
        coupling = np.diagonal(v, offset=1, axis1=-2, axis2=-1)
        with np.errstate(invalid="ignore"):
            near = np.any(np.diff(x_new, axis=-1) < (1.0 - fraction) * gap, axis=-1)
            near |= np.any(dt * self.temperature * coupling > fraction * gap * gap, axis=-1)
            if self.positive:
                near |= x_new[:, 0] < (1.0 - fraction) * x[:, 0]
        return near

    def check_state(self, x: np.ndarray) -> None:
        if not np.all(self.valid(x)):
            wall = " with x_1 > 0" if self.positive else ""
            raise InputError(f"y0 must hold strictly increasing eigenvalues{wall}")
        k, v = self.coefficients(0.0, x)
        check_noise_matrix(np.asarray(v))
        if not np.all(np.isfinite(k)):
            raise InputError("drift must be finite")

    def coefficients_on_knots(self, n_paths: int, dimension: int) -> KnotCoefficients | Unfusable:
        """K, A = T V and D = T V_ii on the knots of the coefficients, for the fused engine.

        Parameters
        ----------
        n_paths, dimension : int
            The shape (P, N) of the state.

        Returns
        -------
        KnotCoefficients or Unfusable
            knots (nc,), K (nc, Pk, N), T V (nc, Pv, N, N), T V_ii (nc, Pv, N), with Pk, Pv 1
            or P; Unfusable where drift or noise is a callable other than
            :func:`~dysonsgd.sde.coefficients.piecewise_linear`, does not fit (P, N), or a
            subclass redefines the dynamics.

        Raises
        ------
        InputError
            If V is not a variance (finite, symmetric, >= 0) or K is not finite at a knot.
        """
        redefined = _redefined(self, DysonBrownianMotion, (*_DYNAMICS, "coefficients"))
        if redefined is not None:
            return redefined
        found = on_knots(self._values, (1, 2), n_paths)
        if found is None:
            return Unfusable(
                "drift or noise is a callable other than piecewise_linear, or has a path axis "
                "other than 1 or n_paths"
            )
        knots, (kk, v) = found
        if kk.shape[-1] != dimension or v.shape[-1] != dimension:
            return Unfusable(f"drift and noise do not have the N = {dimension} levels of y0")
        check_noise_matrix(v)
        if not np.all(np.isfinite(kk)):
            raise InputError("drift must be finite")
        tv = self.temperature * v
        variance = np.ascontiguousarray(np.einsum("kpii->kpi", tv))
        form = FusedForm(
            spacing=False,
            wall=self.positive,
            newton_tol=NEWTON_TOL,
            newton_max_iter=NEWTON_MAX_ITER,
        )
        return KnotCoefficients(knots, kk, tv, variance, form)


class LevelSpacingSDE(_SplitDrift):
    """The one-particle equation for the mean level spacing S, eqs. (4.8) and (B.8).

        dS = (K_S + V_S T / S) dt + sqrt(2 T D_S) dB

    Parameters
    ----------
    k_s, v_s, d_s : float, array_like of shape (P,), or callable of t
        The coefficients of (B.7) and (B.9); V_S >= 0 and D_S >= 0 (D_S = 0 gives the
        deterministic equation (4.9)).
    temperature : float
        T > 0.

    Notes
    -----
    For constant K_S < 0 the stationary density solves the zero-flux Fokker-Planck equation,
    p(S) proportional to S^(V_S/D_S) exp(K_S S / (T D_S)): a Gamma law with shape
    V_S/D_S + 1 and rate -K_S/(T D_S) (:meth:`stationary_distribution`, derived in
    :func:`dysonsgd.theory.symbolic.spacing_stationary_density`). Its mode is the fixed point
    S* = -T V_S/K_S of the deterministic part (4.9). S = 0 is reached only if V_S/D_S < 1
    (a Bessel process of dimension 1 + V_S/D_S).
    """

    dimension = 1

    def __init__(self, k_s, v_s, d_s, temperature: float) -> None:
        self.temperature = check_positive("temperature", temperature)
        self._k = self._coefficient("k_s", k_s)
        self._v = self._coefficient("v_s", v_s, non_negative=True)
        self._d = self._coefficient("d_s", d_s, non_negative=True)
        self._constant = not any(callable(c) for c in (k_s, v_s, d_s))
        self._values = (k_s, v_s, d_s)

    @staticmethod
    def _coefficient(name: str, value, non_negative: bool = False) -> Callable:
        if not callable(value):
            arr = check_array(name, value, min_ndim=0)
            if arr.ndim > 1:
                raise InputError(
                    f"{name} must be a scalar or have shape (n_paths,), got {arr.shape}"
                )
            if non_negative and np.any(arr < 0):
                raise InputError(f"{name} must be >= 0, got {value!r}")
        return as_coefficient(name, value, 0)

    def _at(self, t: float, y: np.ndarray, rows):
        shape = y.shape[:1]
        return (np.broadcast_to(c(t, y, rows), shape) for c in (self._k, self._v, self._d))

    def regular_drift(self, t: float, y: np.ndarray, rows=None) -> np.ndarray:
        k, _, _ = self._at(t, y, rows)
        return k[:, None] * np.ones_like(y)

    def singular_drift(self, t: float, y: np.ndarray, rows=None) -> np.ndarray:
        _, v, _ = self._at(t, y, rows)
        return (v * self.temperature / y[:, 0])[:, None]

    def solve_singular(self, t, y, c, dt, rows=None, explicit=None, fraction=0.0) -> np.ndarray:
        """z = c + dt V_S T / z: the positive root (c + sqrt(c^2 + 4 dt V_S T)) / 2."""
        _, v, _ = self._at(t, y, rows)
        b = 4.0 * dt * v[:, None] * self.temperature
        return 0.5 * (c + np.sqrt(c * c + b))

    def diffusion(self, t: float, y: np.ndarray, rows=None) -> np.ndarray:
        _, _, d = self._at(t, y, rows)
        return np.sqrt(2.0 * self.temperature * d)[:, None] * np.ones_like(y)

    def valid(self, y: np.ndarray) -> np.ndarray:
        return np.isfinite(y[:, 0]) & (y[:, 0] > 0)

    def length_scale(self, y: np.ndarray) -> np.ndarray:
        return y[:, 0]

    def near_singularity(self, t, y, y_new, dt, fraction, rows=None) -> np.ndarray:
        """S shrank by more than ``fraction`` S, or dt V_S T > fraction S^2."""
        _, v, _ = self._at(t, y, rows)
        s = y[:, 0]
        with np.errstate(invalid="ignore"):
            shrank = y_new[:, 0] < (1.0 - fraction) * s
            return shrank | (dt * v * self.temperature > fraction * s * s)

    def check_state(self, y: np.ndarray) -> None:
        if not np.all(self.valid(y)):
            raise InputError("y0 must be a positive spacing S > 0")
        _, v, d = self._at(0.0, y, None)
        if np.any(v < 0) or np.any(d < 0):
            raise InputError("v_s and d_s must be >= 0")

    def coefficients_on_knots(self, n_paths: int, dimension: int) -> KnotCoefficients | Unfusable:
        """K_S, A = T V_S and D = 2 T D_S on the knots of the coefficients, for the fused engine.

        Parameters
        ----------
        n_paths, dimension : int
            The shape (P, 1) of the state.

        Returns
        -------
        KnotCoefficients or Unfusable
            knots (nc,), K_S (nc, P', 1), T V_S (nc, P', 1, 1), 2 T D_S (nc, P', 1), P' 1 or P;
            Unfusable where a coefficient is a callable other than
            :func:`~dysonsgd.sde.coefficients.piecewise_linear`, or a subclass redefines the
            dynamics.

        Raises
        ------
        InputError
            If V_S or D_S is negative at a knot.
        """
        redefined = _redefined(self, LevelSpacingSDE, _DYNAMICS)
        if redefined is not None:
            return redefined
        if dimension != self.dimension:
            return Unfusable(f"the spacing is one number per path, y0 has N = {dimension}")
        found = on_knots(self._values, (0, 0, 0), n_paths)
        if found is None:
            return Unfusable(
                "k_s, v_s or d_s is a callable other than piecewise_linear, or has a path axis "
                "other than 1 or n_paths"
            )
        knots, arrays = found
        k_s, v_s, d_s = np.broadcast_arrays(*arrays)
        if np.any(v_s < 0) or np.any(d_s < 0):
            raise InputError("v_s and d_s must be >= 0 at every time")
        temperature = self.temperature
        kk = np.ascontiguousarray(k_s[..., None])
        tv = np.ascontiguousarray(temperature * v_s[..., None, None])
        dd = np.ascontiguousarray(2.0 * temperature * d_s[..., None])
        form = FusedForm(
            spacing=True, wall=True, newton_tol=NEWTON_TOL, newton_max_iter=NEWTON_MAX_ITER
        )
        return KnotCoefficients(knots, kk, tv, dd, form)

    # -- closed-form analysis, eqs. (4.9)-(4.10) ---------------------------------------------

    def _constants(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._constant:
            raise InputError("this analysis needs constant k_s, v_s, d_s (not callables)")
        return tuple(np.asarray(c, dtype=float) for c in self._values)

    def fixed_point(self) -> np.ndarray:
        """S* = -T V_S / K_S, eq. (4.9); +inf where K_S >= 0 (no restoring force)."""
        k, v, _ = self._constants()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(k < 0, -self.temperature * v / np.where(k < 0, k, -1.0), np.inf)

    def converges(self, spacing) -> np.ndarray:
        """The signal-to-noise condition (4.10): T/S <= -K_S/V_S (drift <= 0 at S)."""
        k, v, _ = self._constants()
        s = check_positive("spacing", spacing)
        return k + v * self.temperature / s <= 0

    def stationary_distribution(self):
        """The stationary law of S as a frozen ``scipy.stats.gamma`` (requires K_S < 0, D_S > 0)."""
        k, v, d = self._constants()
        if np.any(k >= 0):
            raise InputError("k_s must be < 0 for a stationary density (no restoring force)")
        if np.any(d <= 0):
            raise InputError("d_s must be > 0 for a stationary density")
        return stats.gamma(a=v / d + 1.0, scale=self.temperature * d / (-k))


class LangevinSGD(_SplitDrift):
    """Continuous-time Langevin equation of SGD for a weight matrix, eq. (2.30).

        dW_ij = -E[Delta_ij] dt + sqrt(T Var[Delta_ij]) dB_ij,   T = lr / batch size

    Parameters
    ----------
    mean_gradient : callable ``(t, w) -> (P, D)`` or array of shape (D,)
        E[Delta] as a function of the flattened weights (D = rows x cols).
    gradient_variance : callable ``(t, w) -> (P, D)`` or array of shape (D,)
        Var[Delta] (element-wise), >= 0.
    temperature : float
        T > 0.
    """

    def __init__(self, mean_gradient, gradient_variance, temperature: float) -> None:
        self.temperature = check_positive("temperature", temperature)
        self._mean = as_coefficient("mean_gradient", mean_gradient, 1)
        self._var = as_coefficient("gradient_variance", gradient_variance, 1)

    def regular_drift(self, t: float, w: np.ndarray, rows=None) -> np.ndarray:
        return -np.broadcast_to(self._mean(t, w, rows), w.shape)

    def singular_drift(self, t: float, w: np.ndarray, rows=None) -> np.ndarray:
        return np.zeros_like(w)

    def solve_singular(self, t, w, c, dt, rows=None, explicit=None, fraction=0.0) -> np.ndarray:
        return c

    def diffusion(self, t: float, w: np.ndarray, rows=None) -> np.ndarray:
        var = np.broadcast_to(self._var(t, w, rows), w.shape)
        if np.any(var < 0):
            raise InputError("gradient_variance must be >= 0")
        return np.sqrt(self.temperature * var)

    def valid(self, w: np.ndarray) -> np.ndarray:
        return np.all(np.isfinite(w), axis=-1)

    def length_scale(self, w: np.ndarray) -> np.ndarray:
        return np.full(w.shape[0], np.inf)

    def near_singularity(self, t, w, w_new, dt, fraction, rows=None) -> np.ndarray:
        return np.zeros(w.shape[0], dtype=bool)

    def check_state(self, w: np.ndarray) -> None:
        if not np.all(self.valid(w)):
            raise InputError("y0 must be finite")
