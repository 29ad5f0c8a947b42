"""Stochastic equations of section 4 and appendix B, with interchangeable solvers.

The equation (drift, diffusion, domain), the Brownian path and the solver are separate objects
that meet in :func:`integrate`, as in diffrax:

    equation  :class:`DysonBrownianMotion` (4.3), :class:`LevelSpacingSDE` (4.8),
              :class:`LangevinSGD` (2.30)
    path      :class:`BrownianPath`: the increments of one seeded stream, refined by Brownian
              bridges when a solver subdivides a step
    solver    :class:`EulerMaruyama`, :class:`Platen` (derivative-free Milstein, strong order 1
              for diagonal noise), :class:`DriftImplicit` (Coulomb term implicit) and
              :class:`Adaptive` (Brownian-bridge refinement; the collision-safe default wraps
              :class:`DriftImplicit`)

All equations are Itô SDEs with diagonal noise, dy_i = f_i(t, y) dt + g_i(t, y) dB_i, on a state
of shape (n_paths, N). The discrete Langevin update (2.29) is :func:`langevin_sgd_discrete`.

Two engines run the solvers (``integrate(..., engine=)``): the general one steps all paths in
numpy (any equation, solver, callable coefficients); the fused one (:mod:`dysonsgd.sde._fused.step`)
runs blocks of steps of Dyson Brownian motion or the spacing SDE with array or
:func:`piecewise_linear` coefficients in one compiled kernel, on threads over paths, with
counter-based Gaussian increments (Philox4x32-10), so its paths depend on the seed and the path
index only. ``"auto"`` (the default) takes the fused engine wherever it applies.

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

import inspect
from collections.abc import Callable
from typing import Protocol

import numpy as np
from scipy import stats

from dysonsgd._checks import InputError, check_array, check_int, check_positive
from dysonsgd.sde._fused import kernels as _kernels
from dysonsgd.sde._fused import step as _fused
from dysonsgd.sde.solvers import (
    SOLVERS,
    Adaptive,
    BrownianPath,
    DriftImplicit,
    EulerMaruyama,
    Platen,
)
from dysonsgd.sde.solvers import resolve_solver as _resolve_solver

__all__ = [
    "SOLVERS",
    "Adaptive",
    "BrownianPath",
    "DriftImplicit",
    "DysonBrownianMotion",
    "Equation",
    "EulerMaruyama",
    "LangevinSGD",
    "LevelSpacingSDE",
    "PiecewiseLinear",
    "Platen",
    "integrate",
    "langevin_sgd_discrete",
    "piecewise_linear",
]

Coefficient = np.ndarray | Callable[..., np.ndarray]


# --------------------------------------------------------------------------------------------
# coefficients: constants, functions of t, or functions of (t, y)
# --------------------------------------------------------------------------------------------


class PiecewiseLinear:
    """K(t) or V(t) linear in t between knots (the snapshot times), constant outside.

    Made by :func:`piecewise_linear`; callable as ``f(t)``. :func:`integrate` recognises it and
    integrates equations whose coefficients are all arrays or ``PiecewiseLinear`` in its fused
    compiled kernel.
    """

    def __init__(self, times: np.ndarray, values: np.ndarray) -> None:
        self.times = times
        self.values = values

    def __call__(self, t: float) -> np.ndarray:
        times, values = self.times, self.values
        if t <= times[0]:
            return values[0]
        if t >= times[-1]:
            return values[-1]
        k = int(np.searchsorted(times, t, side="right")) - 1
        w = (t - times[k]) / (times[k + 1] - times[k])
        return (1.0 - w) * values[k] + w * values[k + 1]

    def at(self, knots: np.ndarray) -> np.ndarray:
        """The values at each of ``knots``: shape (len(knots), *values.shape[1:])."""
        return np.stack([self(float(t)) for t in knots])


def piecewise_linear(times, values) -> PiecewiseLinear:
    """Linear interpolation in time of coefficients measured on snapshot times.

    Parameters
    ----------
    times : array_like, shape (n_times,)
        Strictly increasing snapshot times.
    values : array_like, shape (n_times, ...)
        The coefficient at each time (e.g. K of shape (n_times, N) or V of shape
        (n_times, N, N), or with a path axis (n_times, P, N, N)); held constant outside the
        time range.

    Returns
    -------
    PiecewiseLinear
        ``f(t) -> ndarray`` of shape ``values.shape[1:]``.
    """
    times = check_array("times", times)
    values = check_array("values", values)
    if times.ndim != 1 or values.shape[0] != times.size:
        raise InputError(
            f"values must have shape (len(times), ...) = ({times.size}, ...), got {values.shape}"
        )
    if times.size > 1 and np.any(np.diff(times) <= 0):
        raise InputError("times must be strictly increasing")
    return PiecewiseLinear(times, values)


def _as_coefficient(name: str, value, tail_ndim: int) -> Callable:
    """Wrap a constant, a callable of t or a callable of (t, y) as ``f(t, y, rows)``.

    A coefficient with more than ``tail_ndim`` dimensions carries a leading path axis (one
    coefficient per trajectory); ``rows`` then selects the paths being stepped.
    """
    if callable(value):
        try:
            n_args = len(inspect.signature(value).parameters)
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            n_args = 1
        if n_args >= 2:
            return lambda t, y, rows: value(t, y)
        return lambda t, y, rows: _select(np.asarray(value(t), dtype=float), rows, tail_ndim)
    arr = check_array(name, value, min_ndim=tail_ndim)
    return lambda t, y, rows: _select(arr, rows, tail_ndim)


def _select(arr: np.ndarray, rows, tail_ndim: int) -> np.ndarray:
    if rows is not None and arr.ndim > tail_ndim:
        return arr[rows]
    return arr


def _check_noise_matrix(v: np.ndarray) -> None:
    if v.shape[-1] != v.shape[-2]:
        raise InputError(f"noise must have shape (..., N, N), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise InputError("noise must be finite")
    if np.any(v < 0):
        raise InputError("noise V_ij is a variance and must be >= 0 element-wise")
    if not np.allclose(v, np.swapaxes(v, -1, -2), rtol=1e-10, atol=0.0):
        raise InputError("noise V must be symmetric (V_ij = V_ji)")


# --------------------------------------------------------------------------------------------
# equations
# --------------------------------------------------------------------------------------------


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
        """Raise ValueError if the initial state or the coefficients are unusable."""


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
            _check_noise_matrix(check_array("noise", noise, min_ndim=2))
        if not callable(drift) and not callable(noise):
            n_k, n_v = np.shape(drift)[-1], np.shape(noise)[-1]
            if n_k != n_v:
                raise InputError(
                    f"drift must have shape (..., {n_v}) to match noise, got {np.shape(drift)}"
                )
        self._drift = _as_coefficient("drift", drift, 1)
        self._noise = _as_coefficient("noise", noise, 2)
        self._raw = (drift, noise)

    def coefficients(self, t: float, x: np.ndarray, rows=None) -> tuple[np.ndarray, np.ndarray]:
        """K (P', N) and V (P', N, N) at time t and state x, broadcast to the paths."""
        k = np.broadcast_to(self._drift(t, x, rows), x.shape)
        v = np.broadcast_to(self._noise(t, x, rows), (*x.shape, x.shape[-1]))
        return k, v

    def regular_drift(self, t: float, x: np.ndarray, rows=None) -> np.ndarray:
        return np.array(np.broadcast_to(self._drift(t, x, rows), x.shape))

    def singular_drift(self, t: float, x: np.ndarray, rows=None) -> np.ndarray:
        v = np.broadcast_to(self._noise(t, x, rows), (*x.shape, x.shape[-1]))
        return self.temperature * _kernels.coulomb_sum(np.ascontiguousarray(x), v)

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
        tol: float = 1e-10,
        max_iter: int = 100,
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
            explicit, fraction = c + a * _kernels.coulomb_sum(x, v), 0.0
        z, ok = _kernels.implicit_window(
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
        _check_noise_matrix(np.asarray(v))
        if not np.all(np.isfinite(k)):
            raise InputError("drift must be finite")


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
        return _as_coefficient(name, value, 0)

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
        self._mean = _as_coefficient("mean_gradient", mean_gradient, 1)
        self._var = _as_coefficient("gradient_variance", gradient_variance, 1)

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


def _as_weight_function(name: str, value) -> Callable[[np.ndarray], np.ndarray]:
    if callable(value):
        return value
    constant = check_array(name, value, min_ndim=0)
    return lambda w: constant


def langevin_sgd_discrete(
    w0,
    mean_gradient,
    gradient_variance,
    learning_rate: float,
    batch_size: int,
    n_steps: int,
    n_paths: int = 1,
    seed: int = 0,
    record_every: int = 1,
) -> np.ndarray:
    """The discrete Langevin update of SGD, eq. (2.29).

        W' = W - lr E[Delta] + sqrt(lr^2 / |B| Var[Delta]) eta,   eta ~ N(0, 1)

    Parameters
    ----------
    w0 : array_like, shape (D,) or (n_paths, D)
        Flattened initial weights.
    mean_gradient, gradient_variance : callable ``w -> (n_paths, D)`` or array (D,)
    learning_rate : float
    batch_size : int
    n_steps : int
    n_paths : int
    seed : int
    record_every : int
        Keep every ``record_every``-th state.

    Returns
    -------
    ndarray, shape (n_steps // record_every + 1, n_paths, D)
        Step k corresponds to time t = k lr (the time of the continuous equation (2.30)).
    """
    lr = check_positive("learning_rate", learning_rate)
    batch = check_int("batch_size", batch_size)
    n_steps = check_int("n_steps", n_steps, minimum=0)
    n_paths = check_int("n_paths", n_paths)
    record_every = check_int("record_every", record_every)
    w = np.array(np.broadcast_to(check_array("w0", w0), (n_paths, np.shape(w0)[-1])))
    mean = _as_weight_function("mean_gradient", mean_gradient)
    var = _as_weight_function("gradient_variance", gradient_variance)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    out = [w.copy()]
    for step in range(1, n_steps + 1):
        noise = np.sqrt(lr * lr / batch * np.asarray(var(w))) * rng.standard_normal(w.shape)
        w = w - lr * np.asarray(mean(w)) + noise
        if step % record_every == 0:
            out.append(w.copy())
    return np.stack(out)


# --------------------------------------------------------------------------------------------
# integrate
# --------------------------------------------------------------------------------------------

ENGINES = ("auto", "fused", "general")


def _knot_values(value, tail_ndim: int):
    """(knots or None, values with a knot axis) of an array or PiecewiseLinear; None if callable."""
    if isinstance(value, PiecewiseLinear):
        return value.times, value
    if callable(value):
        return None
    return None, np.asarray(value, dtype=float)[None]


def _on_knots(entries, knots: np.ndarray, tail_ndim: int, n_paths: int):
    """Evaluate (knots, values) pairs on common knots with a path axis of 1 or n_paths."""
    arrays = []
    for own, value in entries:
        arr = value.at(knots) if own is not None else np.repeat(value, knots.size, axis=0)
        if arr.ndim == 1 + tail_ndim:
            arr = arr[:, None]
        if arr.ndim != 2 + tail_ndim or arr.shape[1] not in (1, n_paths):
            return None
        arrays.append(np.ascontiguousarray(arr, dtype=float))
    return arrays


def _fused_scheme(solver):
    """(scheme, explicit fraction, safety, max depth) of a solver the fused kernel runs."""
    adaptive = type(solver) is Adaptive
    base = solver.base if adaptive else solver
    if type(base) is EulerMaruyama:
        scheme, fraction = 0, 0.0
    elif type(base) is DriftImplicit:
        scheme, fraction = 1, float(base.explicit_fraction)
    else:
        return None
    if not adaptive:
        return scheme, fraction, -1.0, 0
    if solver.max_depth > _fused.MAX_DEPTH:
        return None
    safety = -1.0 if solver.safety is None else float(solver.safety)
    return scheme, fraction, safety, int(solver.max_depth)


def _fused_plan(equation, solver, y: np.ndarray, total_steps: int):
    """The arrays for :func:`dysonsgd.sde._fused.step.integrate_fused`, or None if not fusable.

    Fusable: Dyson Brownian motion or the spacing SDE whose coefficients are arrays or
    :class:`PiecewiseLinear` (not other callables), solved by Euler-Maruyama, the drift-implicit
    step or :class:`Adaptive` around either.
    """
    scheme = _fused_scheme(solver)
    if scheme is None or total_steps >= _fused.MAX_STEPS:
        return None
    n_paths, n = y.shape
    if type(equation) is DysonBrownianMotion:
        raw, tails, spacing = equation._raw, (1, 2), 0
    elif type(equation) is LevelSpacingSDE:
        raw, tails, spacing = equation._values, (0, 0, 0), 1
    else:
        return None
    entries = [_knot_values(value, tail) for value, tail in zip(raw, tails, strict=True)]
    if any(entry is None for entry in entries):
        return None
    own = [knots for knots, _ in entries if knots is not None]
    knots = np.unique(np.concatenate(own)) if own else np.zeros(1)
    temperature = equation.temperature
    if spacing:
        arrays = _on_knots(entries, knots, 0, n_paths)
        if arrays is None:
            return None
        k_s, v_s, d_s = np.broadcast_arrays(*arrays)
        if np.any(v_s < 0) or np.any(d_s < 0):
            raise InputError("v_s and d_s must be >= 0 at every time")
        kk = np.ascontiguousarray(k_s[..., None])
        tv = np.ascontiguousarray(temperature * v_s[..., None, None])
        dd = np.ascontiguousarray(2.0 * temperature * d_s[..., None])
    else:
        k_arr = _on_knots(entries[:1], knots, 1, n_paths)
        v_arr = _on_knots(entries[1:], knots, 2, n_paths)
        if k_arr is None or v_arr is None or k_arr[0].shape[-1] != n or v_arr[0].shape[-1] != n:
            return None
        kk, v = k_arr[0], v_arr[0]
        _check_noise_matrix(v)
        if not np.all(np.isfinite(kk)):
            raise InputError("drift must be finite")
        tv = temperature * v
        dd = np.ascontiguousarray(np.einsum("kpii->kpi", tv))
    kind, fraction, safety, max_depth = scheme
    positive = int(getattr(equation, "positive", False))
    return {
        "knots": knots,
        "kk": kk,
        "tv": tv,
        "dd": dd,
        "ipar": np.array([kind, max_depth, positive, spacing, 100], dtype=np.int64),
        "fpar": np.array([fraction, safety, 1e-10]),
    }


def _steps_per_interval(times: np.ndarray, dt: float | None) -> np.ndarray:
    if dt is None:
        return np.ones(times.size - 1, dtype=np.int64)
    spans = np.diff(times)
    return np.maximum(1, np.ceil(spans / dt - 1e-9)).astype(np.int64)


def integrate(
    equation,
    y0,
    times,
    n_paths: int = 1,
    solver=None,
    seed=0,
    dt: float | None = None,
    engine: str = "auto",
) -> np.ma.MaskedArray:
    """Integrate an SDE for ``n_paths`` trajectories and record them at ``times``.

    Parameters
    ----------
    equation : DysonBrownianMotion, LevelSpacingSDE, LangevinSGD or any :class:`Equation`
    y0 : float or array_like, shape (N,) or (n_paths, N)
        Initial state (eigenvalues ascending for Dyson Brownian motion; S > 0 for the spacing).
    times : array_like, shape (n_times,)
        Strictly increasing output times; integration starts at ``times[0]``.
    n_paths : int
        Number of trajectories.
    solver : None, str or solver object
        ``None`` is the collision-safe :class:`Adaptive` scheme; names are the keys of
        :data:`SOLVERS` (``"euler"`` is plain Euler-Maruyama).
    seed : int or numpy.random.SeedSequence
        Seeds the Brownian increments.
    dt : float, optional
        Largest step of the integration grid; each output interval is divided into equal steps
        no longer than ``dt``. Default: one step per output interval.
    engine : {"auto", "fused", "general"}
        ``"fused"`` runs whole blocks of steps in one compiled kernel, parallel over paths, with
        the increments drawn in the kernel from a counter-based generator (Philox4x32-10):
        for :class:`DysonBrownianMotion` and :class:`LevelSpacingSDE` with coefficients given as
        arrays or :func:`piecewise_linear`, solved by ``"euler"``, ``"implicit"`` or
        :class:`Adaptive` around either (the default). Its paths depend on the seed and the
        path index only, not on the thread count. ``"general"`` steps all paths in numpy with a
        :class:`BrownianPath` (any equation, solver and callable coefficients). ``"auto"``
        (default) takes the fused engine where it applies. The two engines draw different
        random numbers; they agree in distribution.

    Returns
    -------
    numpy.ma.MaskedArray, shape (n_times, n_paths, N)
        The trajectories (N = 1 for the spacing). Entries of a path that left the domain are
        masked from the first output time after it did (and the path is frozen), so
        ``np.ma.mean(result, axis=1)`` averages over the intact paths only.
    """
    times = check_array("times", times)
    if times.ndim != 1 or times.size < 2:
        raise InputError("times must be a 1-d array of at least 2 output times")
    if np.any(np.diff(times) <= 0):
        raise InputError("times must be strictly increasing")
    n_paths = check_int("n_paths", n_paths)
    if dt is not None:
        dt = check_positive("dt", dt)
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    solver = _resolve_solver(solver)
    y = np.atleast_1d(check_array("y0", y0, min_ndim=0)).astype(float)
    if y.ndim == 1:
        y = np.broadcast_to(y, (n_paths, y.size)).copy()
    elif y.ndim != 2 or y.shape[0] != n_paths:
        raise InputError(f"y0 must have shape (N,) or (n_paths={n_paths}, N), got {y.shape}")
    equation.check_state(y)
    counts = _steps_per_interval(times, dt)
    plan = None
    if engine != "general":
        plan = _fused_plan(equation, solver, y, int(counts.sum()))
        if plan is None and engine == "fused":
            raise InputError(
                "engine='fused' needs DysonBrownianMotion or LevelSpacingSDE with array or "
                "piecewise_linear coefficients and an euler, implicit or adaptive solver"
            )
    if plan is not None:
        out, dead, done = _fused.integrate_fused(
            y, times, counts, keys=_fused.keys_from_seed(seed), **plan
        )
        broken = (dead[None, :] >= 0) & (dead[None, :] < done[:, None])
    else:
        out, broken = _integrate_general(equation, solver, y, times, counts, seed)
    mask = np.broadcast_to(broken[:, :, None], out.shape)
    return np.ma.MaskedArray(out, mask=mask.copy())


def _integrate_general(equation, solver, y, times, counts, seed):
    """Step all paths in numpy with a :class:`BrownianPath`; (out, broken) as in integrate."""
    n_paths, n = y.shape
    path = BrownianPath(n_paths, n, seed)
    out = np.empty((times.size, n_paths, n))
    broken = np.zeros((times.size, n_paths), dtype=bool)
    alive = np.ones(n_paths, dtype=bool)
    out[0] = y
    t = float(times[0])
    for k in range(times.size - 1):
        n_steps = int(counts[k])
        h = float(times[k + 1] - times[k]) / n_steps
        for step in range(n_steps):
            dw = path.increment(h)  # drawn for every path: the streams stay aligned
            rows = np.flatnonzero(alive)
            if rows.size:
                y_new, ok = solver.step(equation, t, y[rows], h, dw[rows], path, rows)
                keep = rows[ok]
                y[keep] = y_new[ok]
                alive[rows[~ok]] = False
            t = float(times[k]) + (step + 1) * h
        out[k + 1] = y
        broken[k + 1] = ~alive
    return out, broken
