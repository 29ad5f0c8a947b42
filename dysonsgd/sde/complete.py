"""The complete eigenvalue SDE of X = W W^T under SGD: Ito drift, correlated noise, finite lr.

    dx_i = [K_i + T q_i + lr m_i + sum_{j != i} (T V_ij + lr P_ij) / (x_i - x_j)] dt
           + sqrt(T) dB_i,        Cov(dB_i, dB_j) = C_ij dt,

with K, q, m, V, P, C functions of the state through s_i = sqrt(x_i) and gradient moments held
fixed between snapshots (the derivation and the formulas are in :mod:`dysonsgd.measure.moments`).
The printed (4.3) is :class:`dysonsgd.sde.DysonBrownianMotion` with frozen K, V.

Why the state dependence: with K and V frozen at a snapshot, the noise of x_1 does not vanish
at x_1 = 0 and (4.3) drives the small eigenvalues of a positive matrix negative. Written in the
singular basis, the noise of x_i scales like s_i, the drift at x_1 -> 0 is T (Sigma_11 + the
gradient variance outside the span of the right singular vectors) >= 0 (a squared-Bessel wall),
and for i.i.d. gradients the equation is the Wishart (Bru) process exactly.
"""

from __future__ import annotations

import numpy as np

from dysonsgd._checks import InputError, check_array, check_positive
from dysonsgd.measure.moments import SingularMoments, coefficients_at
from dysonsgd.sde._fused.complete import MomentKnots, knot_moments
from dysonsgd.sde._fused.plan import FusedForm, Unfusable, overridden
from dysonsgd.sde.equations import _DYNAMICS, NEWTON_MAX_ITER, NEWTON_TOL, DysonBrownianMotion

__all__ = ["EigenvalueSDE"]

#: the methods that define the complete equation's step (a subclass redefining one is not fused)
_COMPLETE = (*_DYNAMICS, "coefficients", "terms", "noise_increment", "_regular",
             "_weights", "_at")

#: relative jitter added to Sigma before its Cholesky factorisation, and the largest tried
_JITTER, _JITTER_MAX = 1e-13, 1e-7


def _cholesky(sigma: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of PSD matrices (..., N, N), with the smallest working jitter."""
    n = sigma.shape[-1]
    scale = np.maximum(np.trace(sigma, axis1=-2, axis2=-1) / n, np.finfo(float).tiny)
    jitter = _JITTER
    while True:
        try:
            return np.linalg.cholesky(sigma + (jitter * scale)[..., None, None] * np.eye(n))
        except np.linalg.LinAlgError:
            jitter *= 100.0
            if jitter > _JITTER_MAX:
                raise InputError("moments.diagonal_covariance must be positive semi-definite "
                                 "(Cov(G_ii, G_jj) of the gradients)") from None


class EigenvalueSDE(DysonBrownianMotion):
    """The complete SDE of the ascending eigenvalues of X = W W^T (issue 11's derivation).

    Parameters
    ----------
    moments : SingularMoments
        Gradient moments (:func:`dysonsgd.measure.moments.singular_moments`), fields of shape
        (n_times, P', ...) with ``times``, or (P', ...) / (...) constant in time; P' = 1 or
        the number of paths (one model per path). Between ``times`` every field is linear in t
        (as :func:`~dysonsgd.sde.piecewise_linear`), and so is the Cholesky factor of Sigma.
    temperature : float
        T = lr / |B| > 0.
    learning_rate : float, optional
        lr of the finite-learning-rate terms; None (or 0) drops them: the continuum limit
        lr -> 0 at fixed T. One SGD step adds lr^2 (m_i + sum_j P_ij/(x_i - x_j)) to x_i
        (:func:`~dysonsgd.measure.moments.increment_moments`); of that, lr^2 g_ii^2 is the
        bending of this equation's own flow K_i = -2 s_i g_ii, so the drift carries
        lr (m_i - g_ii^2) + lr sum_j P_ij/(x_i - x_j) (exact per step with the moments held
        fixed; the curvature of the gradient flow, not an SGD effect: a drift that followed the
        state fully, or moments measured densely along the run, would need none of it and
        instead the modified-equation term -lr/2 Hessian x mu, which is not measured here).
    times : array_like, shape (n_times,), optional
        Strictly increasing knot times of the moments.
    positive : bool
        Enforce the wall x_1 > 0 in the domain (default True: X = W W^T).

    Notes
    -----
    Noise is correlated, g dB = sqrt(T) 2 s * (L dB) with L L^T = Sigma: solvers take it from
    :meth:`noise_increment` (Euler-Maruyama, the drift-implicit step, Adaptive); Platen, which
    needs diagonal noise, refuses it. The Coulomb weights of the implicit step are V + (lr / T) P.
    The fused engine integrates it (:mod:`dysonsgd.sde._fused.complete`: the same steps, the
    coefficients evaluated at each step's state in the kernel, counter-based normals);
    ``engine="general"`` steps it in numpy.
    """

    def __init__(self, moments: SingularMoments, temperature: float, *,
                 learning_rate: float | None = None, times=None, positive: bool = True) -> None:
        if not isinstance(moments, SingularMoments):
            raise InputError(f"moments must be a SingularMoments, got {type(moments).__name__}")
        self.temperature = check_positive("temperature", temperature)
        lr = 0.0 if learning_rate is None else check_positive(
            "learning_rate", learning_rate, allow_zero=True)
        self.learning_rate = lr
        self.positive = bool(positive)
        n = moments.singular_values.shape[-1]
        if times is None:
            self.times = None
            self._moments = moments.map(lambda a: np.asarray(a, dtype=float)[None])
        else:
            self.times = check_array("times", times)
            if self.times.ndim != 1 or np.any(np.diff(self.times) <= 0):
                raise InputError("times must be a strictly increasing 1-d array")
            self._moments = moments.map(lambda a: np.asarray(a, dtype=float))
            if self._moments.singular_values.shape[0] != self.times.size:
                raise InputError(f"moments must have a leading time axis of len(times) = "
                                 f"{self.times.size}, got {moments.singular_values.shape}")
        m = self._moments
        self._per_path = m.singular_values.ndim == 3
        for name, arr, tail in (("diagonal_covariance", m.diagonal_covariance, 2),
                                ("variance", m.variance, 2), ("ito", m.ito, 1)):
            if not np.all(np.isfinite(arr)):
                raise InputError(f"moments.{name} must be finite")
            if arr.shape[-1] != n or (tail == 2 and arr.shape[-2] != n):
                raise InputError(f"moments.{name} must end in {(n,) * tail}, got {arr.shape}")
        if np.any(m.variance < 0) or np.any(m.ito < 0):
            raise InputError("moments.variance and moments.ito are variances and must be >= 0")
        self._factor = _cholesky(m.diagonal_covariance)
        self._drift = self._regular
        self._noise = self._weights
        self._cache: tuple | None = None

    # -- moments at time t for the paths ``rows`` ------------------------------------------
    def _at(self, t: float, rows) -> tuple[SingularMoments, np.ndarray]:
        key = (t, None if rows is None else rows.tobytes())
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        m, factor = self._moments, self._factor
        if self.times is None or t <= self.times[0]:
            k, w = 0, 0.0
        elif t >= self.times[-1]:
            k, w = self.times.size - 1, 0.0
        else:
            k = int(np.searchsorted(self.times, t, side="right")) - 1
            w = (t - self.times[k]) / (self.times[k + 1] - self.times[k])
        take = rows if self._per_path and rows is not None else slice(None)

        def select(a: np.ndarray) -> np.ndarray:
            value = a[k] if w == 0.0 else (1.0 - w) * a[k] + w * a[k + 1]
            return value[take] if self._per_path else value

        out = (m.map(select), select(factor))
        self._cache = (key, out)
        return out

    def terms(self, t: float, x: np.ndarray, rows=None):
        """The coefficients (:class:`~dysonsgd.measure.moments.EigenCoefficients`) at (t, x)."""
        moments, _ = self._at(t, rows)
        return coefficients_at(moments, x)

    def _regular(self, t, x, rows=None) -> np.ndarray:
        c = self.terms(t, x, rows)
        drift = c.k + self.temperature * c.ito
        if self.learning_rate:
            # the flow of K_i = -2 s_i g_ii with g held fixed already bends by g_ii^2 per unit
            # lr (ds_i/dt = -g_ii): the finite-lr drift is what the step adds beyond that
            moments, _ = self._at(t, rows)
            g_ii = np.diagonal(moments.mean, axis1=-2, axis2=-1)
            drift = drift + self.learning_rate * (c.mean_square - g_ii * g_ii)
        return drift

    def _weights(self, t, x, rows=None) -> np.ndarray:
        """The Coulomb weights V + (lr / T) P, so the singular drift is T sum w/(x_i - x_j)."""
        c = self.terms(t, x, rows)
        if self.learning_rate == 0.0:
            return c.noise
        return c.noise + (self.learning_rate / self.temperature) * c.finite_lr

    def diffusion(self, t: float, x: np.ndarray, rows=None) -> np.ndarray:
        """The marginal noise amplitudes sqrt(T C_ii) (the noise itself is correlated)."""
        moments, _ = self._at(t, rows)
        s = np.sqrt(np.maximum(x, 0.0))
        sigma_ii = np.diagonal(moments.diagonal_covariance, axis1=-2, axis2=-1)
        return 2.0 * s * np.sqrt(self.temperature * np.maximum(sigma_ii, 0.0))

    def noise_increment(self, t: float, x: np.ndarray, dw: np.ndarray, rows=None) -> np.ndarray:
        """sqrt(T) 2 s_i (L dW)_i, covariance T C dt with C = 4 s s^T * Sigma."""
        _, factor = self._at(t, rows)
        s = np.sqrt(np.maximum(x, 0.0))
        return 2.0 * np.sqrt(self.temperature) * s * np.einsum("...ij,...j->...i", factor, dw)

    def check_state(self, x: np.ndarray) -> None:
        if not np.all(self.valid(x)):
            wall = " with x_1 > 0" if self.positive else ""
            raise InputError(f"y0 must hold strictly increasing eigenvalues{wall}")
        moments, _ = self._at(0.0 if self.times is None else float(self.times[0]), None)
        if moments.singular_values.shape[-1] != x.shape[-1]:
            raise InputError(f"y0 must have the N = {moments.singular_values.shape[-1]} levels "
                             f"of the moments, got {x.shape[-1]}")
        if self._per_path and moments.singular_values.shape[0] not in (1, x.shape[0]):
            raise InputError(f"moments have {moments.singular_values.shape[0]} paths, y0 has "
                             f"{x.shape[0]}")

    def coefficients_on_knots(self, n_paths: int, dimension: int) -> MomentKnots | Unfusable:
        """The moments on their knots, for the fused kernel of the complete equation.

        The kernel (:mod:`dysonsgd.sde._fused.complete`) evaluates K, q, m, V, P and the noise
        2 sqrt(T) s (L dW) at the state of every step from these moments, linear in t between
        the knots as :meth:`_at` (the Cholesky factor too).

        Parameters
        ----------
        n_paths, dimension : int
            The shape (P, N) of the state.

        Returns
        -------
        MomentKnots or Unfusable
            Unfusable where a subclass redefines the dynamics, or the moments do not fit
            (P, N).
        """
        changed = overridden(self, EigenvalueSDE, _COMPLETE)
        if changed:
            return Unfusable(f"{type(self).__name__} redefines {', '.join(changed)}: the fused "
                             "engine integrates EigenvalueSDE as written")
        m, factor = self._moments, self._factor
        if m.singular_values.shape[-1] != dimension:
            return Unfusable(f"the moments do not have the N = {dimension} levels of y0")
        rows = m.singular_values.shape[1] if self._per_path else 1
        if rows not in (1, n_paths):
            return Unfusable(f"the moments have {rows} paths, y0 has {n_paths}")

        def paths(a: np.ndarray) -> np.ndarray:  # (nc, Pm, ...) with Pm = 1 or P
            return a if self._per_path else a[:, None]

        moments = knot_moments(*(paths(a) for a in (m.mean, m.mean_square, m.ito, m.variance,
                                                   m.cross, factor)))
        knots = np.zeros(1) if self.times is None else self.times
        form = FusedForm(spacing=False, wall=self.positive, newton_tol=NEWTON_TOL,
                         newton_max_iter=NEWTON_MAX_ITER)
        return MomentKnots(np.asarray(knots, dtype=float), moments, self.temperature,
                           self.learning_rate, form)
