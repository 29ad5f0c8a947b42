"""Integrate an SDE for many trajectories: :func:`integrate`, and the discrete update (2.29).

:func:`integrate` meets an equation (:mod:`dysonsgd.sde.equations`), a solver
(:mod:`dysonsgd.sde.solvers`) and the Brownian increments, as diffrax's ``diffeqsolve`` does, on
one of two engines:

- the general engine steps all paths in numpy with a :class:`~dysonsgd.sde.BrownianPath` (any
  equation, solver and coefficient);
- the fused engine (:mod:`dysonsgd.sde._fused`) runs blocks of steps in one compiled kernel,
  parallel over paths, with counter-based normals. It runs what the solver's
  ``fused_scheme()`` and the equation's ``coefficients_on_knots()`` declare.

``engine="auto"`` takes the fused engine exactly when both declare a fused form;
:func:`choose_engine` says which engine runs and why. The engines draw different random numbers
(they agree in distribution), so ``engine="fused"`` raises rather than fall back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from dysonsgd._checks import InputError, check_array, check_int, check_positive, check_seed
from dysonsgd.sde._fused.driver import integrate_fused
from dysonsgd.sde._fused.philox import keys_from_seed
from dysonsgd.sde._fused.plan import MAX_STEPS, FusedPlan, Unfusable, fused_plan
from dysonsgd.sde.brownian import BrownianPath, seed_sequence
from dysonsgd.sde.solvers import resolve_solver

__all__ = ["ENGINES", "EngineChoice", "choose_engine", "integrate", "langevin_sgd_discrete"]

ENGINES = ("auto", "fused", "general")


class EngineChoice(NamedTuple):
    """The engine :func:`integrate` runs, and why.

    Attributes
    ----------
    engine : {"fused", "general"}
    reason : str
        What the fused engine runs (its scheme), or why it cannot run this problem.
    """

    engine: str
    reason: str


class _Problem(NamedTuple):
    """The checked arguments of :func:`integrate`."""

    solver: object
    y: np.ndarray
    times: np.ndarray
    counts: np.ndarray


def _steps_per_interval(times: np.ndarray, dt: float | None) -> np.ndarray:
    if dt is None:
        return np.ones(times.size - 1, dtype=np.int64)
    steps = np.maximum(1.0, np.ceil(np.diff(times) / dt - 1e-9))
    total = float(steps.sum())
    if not np.isfinite(total) or total >= MAX_STEPS:
        raise InputError(f"dt = {dt:g} gives {total:.3g} steps over the times; at most "
                         f"{MAX_STEPS - 1} (2^32 - 1, the fused engine's step counter; the "
                         "general engine would not finish either): take a larger dt")
    return steps.astype(np.int64)


def _check_memory(n_times: int, n_paths: int, n: int) -> None:
    """Refuse an output larger than the machine's available memory, before allocating it."""
    need = n_times * n_paths * (n * 8 + n + 1)  # float64 paths, their mask, the broken flags
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if need > available:
        raise InputError(f"n_paths = {n_paths}: the output ({n_times} times x {n_paths} paths x "
                         f"{n} levels) needs {need / 2**30:.3g} GiB, {available / 2**30:.3g} "
                         "GiB are available: fewer paths or output times")


def _problem(equation, y0, times, n_paths, solver, dt, engine) -> _Problem:
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
    solver = resolve_solver(solver)
    y = np.atleast_1d(check_array("y0", y0, min_ndim=0)).astype(float)
    counts = _steps_per_interval(times, dt)
    _check_memory(times.size, n_paths, y.shape[-1])
    if y.ndim == 1:
        y = np.broadcast_to(y, (n_paths, y.size)).copy()
    elif y.ndim != 2 or y.shape[0] != n_paths:
        raise InputError(f"y0 must have shape (N,) or (n_paths={n_paths}, N), got {y.shape}")
    equation.check_state(y)
    return _Problem(solver, y, times, counts)


def _choose(equation, problem: _Problem, engine: str) -> tuple[EngineChoice, FusedPlan | None]:
    if engine == "general":
        return EngineChoice("general", "engine='general' was asked for"), None
    n_paths, n = problem.y.shape
    plan = fused_plan(equation, problem.solver, n_paths, n, int(problem.counts.sum()))
    if isinstance(plan, Unfusable):
        if engine == "fused":
            raise InputError(
                f"engine='fused' cannot run this problem: {plan.reason} "
                "(engine='general' or 'auto' runs it, with other random numbers)"
            )
        return EngineChoice("general", plan.reason), None
    knots = plan.coefficients.knots.size
    reason = f"{type(equation).__name__} on {knots} knot(s), {plan.scheme}"
    return EngineChoice("fused", reason), plan


def choose_engine(
    equation,
    y0,
    times,
    *,
    n_paths: int = 1,
    solver=None,
    dt: float | None = None,
    engine: str = "auto",
) -> EngineChoice:
    """The engine that :func:`integrate` runs with these arguments, and why.

    Takes the arguments of :func:`integrate` (less the seed) and checks them the same way.
    ``engine="auto"`` runs the fused engine exactly when the solver declares a fused scheme
    (``solver.fused_scheme()`` returns a ``FusedScheme``: Euler-Maruyama, DriftImplicit and
    Adaptive around either, not Platen nor a subclass that redefines ``step``) and the equation
    its coefficients on knots (``equation.coefficients_on_knots()``: Dyson Brownian motion and
    the spacing SDE with array or :func:`~dysonsgd.sde.piecewise_linear` coefficients).

    Returns
    -------
    EngineChoice
        ``engine`` ("fused" or "general") and ``reason``: the fused scheme, or why the fused
        engine cannot run the problem.

    Raises
    ------
    InputError
        For bad arguments, and for ``engine="fused"`` where the fused engine cannot run.
    """
    problem = _problem(equation, y0, times, n_paths, solver, dt, engine)
    return _choose(equation, problem, engine)[0]


def integrate(
    equation,
    y0,
    times,
    *,
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
        :class:`Adaptive` around either (the default); elsewhere it raises InputError saying
        why. Its paths depend on the seed and the path index only, not on the thread count.
        ``"general"`` steps all paths in numpy with a :class:`BrownianPath` (any equation,
        solver and callable coefficients). ``"auto"`` (default) takes the fused engine where
        it applies (:func:`choose_engine` tells). The two engines draw different random
        numbers; they agree in distribution.

    Returns
    -------
    numpy.ma.MaskedArray, shape (n_times, n_paths, N)
        The trajectories (N = 1 for the spacing). Entries of a path that left the domain are
        masked from the first output time after it did (and the path is frozen), so
        ``np.ma.mean(result, axis=1)`` averages over the intact paths only.
    """
    seed = check_seed("seed", seed)
    problem = _problem(equation, y0, times, n_paths, solver, dt, engine)
    _, plan = _choose(equation, problem, engine)
    if plan is not None:
        out, dead, done = integrate_fused(
            problem.y, problem.times, problem.counts, keys_from_seed(seed), plan
        )
        broken = (dead[None, :] >= 0) & (dead[None, :] < done[:, None])
    else:
        out, broken = _integrate_general(equation, problem, seed)
    mask = np.broadcast_to(broken[:, :, None], out.shape)
    return np.ma.MaskedArray(out, mask=mask.copy())


def _integrate_general(equation, problem: _Problem, seed) -> tuple[np.ndarray, np.ndarray]:
    """Step all paths in numpy with a :class:`BrownianPath`; (out, broken) as in integrate."""
    solver, y, times, counts = problem
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


# --------------------------------------------------------------------------------------------
# the discrete update (2.29), whose continuum limit is LangevinSGD (2.30)
# --------------------------------------------------------------------------------------------


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
    *,
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
    seed = check_seed("seed", seed)
    lr = check_positive("learning_rate", learning_rate)
    batch = check_int("batch_size", batch_size)
    n_steps = check_int("n_steps", n_steps, minimum=0)
    n_paths = check_int("n_paths", n_paths)
    record_every = check_int("record_every", record_every)
    w = np.array(np.broadcast_to(check_array("w0", w0), (n_paths, np.shape(w0)[-1])))
    mean = _as_weight_function("mean_gradient", mean_gradient)
    var = _as_weight_function("gradient_variance", gradient_variance)
    rng = np.random.default_rng(seed_sequence(seed))
    out = [w.copy()]
    for step in range(1, n_steps + 1):
        noise = np.sqrt(lr * lr / batch * np.asarray(var(w))) * rng.standard_normal(w.shape)
        w = w - lr * np.asarray(mean(w)) + noise
        if step % record_every == 0:
            out.append(w.copy())
    return np.stack(out)
