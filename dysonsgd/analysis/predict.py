"""SDE predictions from a trained run: Dyson Brownian motion and the level-spacing SDE.

This module joins measurement (:mod:`dysonsgd.measure.gradstats`) and integration
(:mod:`dysonsgd.sde.equations`):
it measures K and V along a run, one grid cell at a time, and integrates (4.3) and (4.8) with
those coefficients from the run's own eigenvalues.

Time
----
The continuous time of (2.30) and (4.3) is ``t = lr * (SGD steps)``: one step of (2.29) is an
Euler step of length ``dt = lr`` with noise variance ``lr**2 V / |B| = dt T V``. A snapshot at
epoch ``e`` therefore sits at ``t = lr * e * n_data / |B|``.

The drift K
-----------
Two sources (``drift=``):

``'training'`` (default)
    K = -(W2 G^T + G W2^T) from the run's recorded epoch-mean minibatch gradient G of the
    training data: the drift the weights actually followed, rotated into the eigenbasis of X.
``'test'``
    K = -E[Delta^X] over the release's 128 test inputs (4.4), as in the paper's appendix B.
``'epoch'``
    K averaged over the SGD steps of the epoch after each snapshot
    (:func:`dysonsgd.measure.epoch_drift.epoch_drift`): the drift with the loss's restoring
    force on the weight fluctuations, which cancels the Ito and Coulomb terms where the
    fluctuations are stationary (docs/sde.md). An option: it replays every epoch, and at high
    temperature it pins x_1 so close to the wall that most paths break.

On a trained network the test-set mean of Delta^X is dominated by the generalisation gap (in
the ordered cell it is ~40x the training drift), and integrating it moves the eigenvalues the
wrong way; the training drift reproduces the observed increments. V is always the variance of
the rotated per-sample update on the test inputs (:func:`dysonsgd.measure.gradstats.measure`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dysonsgd._checks import InputError, check_int, check_positive, grid_index
from dysonsgd.measure import gradstats
from dysonsgd.measure.epoch_drift import epoch_drift
from dysonsgd.measure.moments import (
    VARIANTS,
    SingularMoments,
    coefficients_at,
    epoch_start_weights,
    mean_moments,
    singular_system,
    spacing_coefficients_complete,
)
from dysonsgd.measure.spectrum import eigensystem, mean_level_spacing
from dysonsgd.sde import DysonBrownianMotion, LevelSpacingSDE, integrate, piecewise_linear
from dysonsgd.sde.complete import EigenvalueSDE
from dysonsgd.theory import rmt

__all__ = [
    "DRIFT_SOURCES",
    "KINDS",
    "NOISE_SOURCES",
    "VARIANTS",
    "MeasuredCoefficients",
    "measure_run",
    "predict_eigenvalues",
    "predict_run",
    "predict_spacing",
    "snapshot_times",
    "spacing_series",
    "training_drift",
]

#: where the drift K comes from (see the module docstring)
DRIFT_SOURCES = ("training", "test", "epoch")
#: the data behind the noise V
NOISE_SOURCES = ("test", "training")
#: what :func:`predict_run` integrates: the eigenvalues by (4.3), or the spacing S by (4.8)
KINDS = ("dyson", "spacing")


def snapshot_times(result, temperature_index: int | None = None) -> np.ndarray:
    """Continuous times ``t = lr * steps`` of the snapshots.

    Returns
    -------
    ndarray, shape (nT, n_snap), or (n_snap,) for one ``temperature_index``.
    """
    steps = np.asarray(result.snapshot_epochs, dtype=float) * result.config.steps_per_epoch
    t = np.asarray(result.learning_rate, dtype=float)[:, None] * steps[None, :]
    return t if temperature_index is None else t[temperature_index]


def training_drift(w2: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of X and the drift K_i of (4.3) from recorded minibatch gradients.

    K = -(W2 G^T + G W2^T) (the first-order change of X = W2 W2^T under W2 -> W2 - lr G, per
    unit time ``t = lr * steps``), rotated into the eigenbasis of X.

    Parameters
    ----------
    w2, grad : array_like, shape (..., n2, n1)

    Returns
    -------
    eigenvalues : ndarray, shape (..., n2), ascending
    drift : ndarray, shape (..., n2), the diagonal of U^T K U in the same order
    """
    w2 = np.asarray(w2, dtype=float)
    grad = np.asarray(grad, dtype=float)
    if w2.shape != grad.shape or w2.ndim < 2:
        raise InputError(f"w2 and grad must have the same shape (..., n2, n1), got "
                         f"{w2.shape} and {grad.shape}")
    eig, u = eigensystem(w2)
    a = np.swapaxes(u, -1, -2) @ w2  # U^T W2
    b = np.swapaxes(u, -1, -2) @ grad  # U^T G
    drift = -2.0 * np.einsum("...ij,...ij->...i", a, b)
    return eig, drift


@dataclass(frozen=True)
class MeasuredCoefficients:
    """K and V along a run, for every model of the grid.

    Arrays carry (temperature, sigma_w, seed) first; ``n_snap`` counts the measured snapshots.

    Attributes
    ----------
    snapshots : (n_snap,) snapshot indices; ``times`` : (nT, n_snap) continuous times
    temperature : (nT,); sigma_w : (nS,)
    eigenvalues : (nT, nS, nR, n_snap, N) ascending
    drift : (nT, nS, nR, n_snap, N) K_i; noise : (nT, nS, nR, n_snap, N, N) V_ij
    k_s, v_s, d_s : (nT, nS, nR, n_snap) of (B.7), (B.9) from ``drift`` and ``noise``
    diverged : (nT, nS, nR)
    drift_source, noise_source : 'training' or 'test': the data behind K and V
    last : GradientStatistics
        Everything :func:`dysonsgd.measure.gradstats.measure` gave at the last measured snapshot
        (K and V on the measurement data, the paper's and the release's K_S, V_S).
    moments : SingularMoments
        The complete SDE's gradient moments (:mod:`dysonsgd.measure.moments`), fields
        (nT, nS, nR, n_snap, ...); their mean gradient is the drift source's.
    learning_rate : (nT,) lr = T |B|; batch_size : |B|
    """

    snapshots: np.ndarray
    times: np.ndarray
    temperature: np.ndarray
    sigma_w: np.ndarray
    eigenvalues: np.ndarray
    drift: np.ndarray
    noise: np.ndarray
    k_s: np.ndarray
    v_s: np.ndarray
    d_s: np.ndarray
    diverged: np.ndarray
    drift_source: str
    noise_source: str = "test"
    last: gradstats.GradientStatistics | None = None
    moments: SingularMoments | None = None
    learning_rate: np.ndarray | None = None
    batch_size: int | None = None

    @property
    def spacing(self) -> np.ndarray:
        """Mean level spacing S (4.5), shape (nT, nS, nR, n_snap)."""
        return mean_level_spacing(self.eigenvalues, assume_sorted=True)

    def cell(self, i_t: int, i_s: int) -> MeasuredCoefficients:
        """The coefficients of grid cell (i_T, i_S) alone, as a one-cell grid (views).

        Every field keeps its axes, with length 1 on the temperature and sigma_w axes, so the
        cell is ``(0, 0)`` of the result; ``last`` (the whole run's) is dropped. What one cell's
        forecasts read: a theory applied to it, or the spacing coefficients computed from it,
        touch that cell's models only, element by element as on the whole run.
        """
        n_t, n_s = self.diverged.shape[:2]
        if not (0 <= i_t < n_t and 0 <= i_s < n_s):
            raise InputError(f"cell must index the ({n_t}, {n_s}) grid, got {(i_t, i_s)}")
        t, s = slice(i_t, i_t + 1), slice(i_s, i_s + 1)

        def grid(a):
            return None if a is None else a[t, s]

        return replace(
            self, times=self.times[t], temperature=self.temperature[t], sigma_w=self.sigma_w[s],
            eigenvalues=grid(self.eigenvalues), drift=grid(self.drift), noise=grid(self.noise),
            k_s=grid(self.k_s), v_s=grid(self.v_s), d_s=grid(self.d_s),
            diverged=grid(self.diverged), last=None,
            moments=None if self.moments is None else self.moments.map(grid),
            learning_rate=None if self.learning_rate is None else self.learning_rate[t])


def measure_run(result, *, snapshots=None, drift: str = "training", noise: str = "test",
                noise_points: int = 512, chunk: int = 256) -> MeasuredCoefficients:
    """Measure K and V at several snapshots of a run, vectorised over the grid.

    Parameters
    ----------
    result : dysonsgd.train.ensemble.EnsembleResult
    snapshots : sequence of int, optional
        Snapshot indices (default: all), increasing.
    drift : {'training', 'test'}
        Source of K (module docstring).
    noise : {'test', 'training'}
        Data for V: the release's 128 test inputs (as the paper), or the first
        ``noise_points`` of each model's own training inputs (the data SGD samples from).
    noise_points : int
        Training inputs per model for ``noise='training'``.
    chunk : int
        Models per batch in :func:`dysonsgd.measure.gradstats.measure`.
    """
    if drift not in DRIFT_SOURCES:
        raise InputError(f"drift must be one of {DRIFT_SOURCES}, got {drift!r}")
    if noise not in NOISE_SOURCES:
        raise InputError(f"noise must be one of {NOISE_SOURCES}, got {noise!r}")
    n_snap = len(result.snapshot_epochs)
    snaps = np.arange(n_snap) if snapshots is None else np.asarray(snapshots, dtype=int)
    if snaps.ndim != 1 or snaps.size == 0:
        raise InputError("snapshots must be a non-empty sequence of snapshot indices")
    if np.any(snaps < 0) or np.any(snaps >= n_snap):
        raise InputError(f"snapshots must lie in [0, {n_snap - 1}], got {snaps.tolist()}")
    if snaps.size > 1 and np.any(np.diff(snaps) <= 0):
        raise InputError("snapshots must be strictly increasing")
    x = gradstats.training_inputs(result, noise_points) if noise == "training" else None
    stats = list(gradstats.measure_series(result, [int(s) for s in snaps], x=x, chunk=chunk))
    eig = np.stack([s.eigenvalues for s in stats], axis=3)
    noise_source, noise = noise, np.stack([s.v for s in stats], axis=3)
    moments = SingularMoments.join([s.moments for s in stats],
                                   lambda parts: np.stack(parts, axis=3))
    if drift == "test":
        k = np.stack([np.diagonal(s.k, axis1=-2, axis2=-1) for s in stats], axis=3)
    else:
        w2, grad = result.w2[..., snaps, :, :], result.grad[..., snaps, :, :]
        _, k = training_drift(w2, grad)
        # the complete variants take the mean gradient in the singular basis of W at the start
        # of the recorded epoch (measure.moments.epoch_start_weights); snapshot 0 holds the
        # full-data gradient at W(0) itself
        steps = np.where(snaps > 0, result.config.steps_per_epoch, 0)
        lr = np.asarray(result.learning_rate, dtype=float)[:, None, None, None]
        w0 = epoch_start_weights(w2, grad, lr, steps)
        _, u, vt = singular_system(w0)
        g, m = mean_moments(u, vt, np.asarray(grad, dtype=float))
        moments = replace(moments, mean=g, mean_square=m)
        if drift == "epoch":
            k = np.stack([epoch_drift(result, int(sn), chunk=min(chunk, 64)) for sn in snaps],
                         axis=3)
            # the complete SDE's K_i = -2 s_i g_ii at the snapshot equals the epoch drift
            s_i = np.maximum(moments.singular_values, np.finfo(float).tiny)
            diag = np.arange(g.shape[-1])
            g = g.copy()
            g[..., diag, diag] = -k / (2.0 * s_i)
            moments = replace(moments, mean=g)
    k_s, v_s, d_s = rmt.spacing_coefficients(k, noise)
    return MeasuredCoefficients(
        snapshots=snaps, times=snapshot_times(result)[:, snaps],
        temperature=np.asarray(result.temperature, dtype=float),
        sigma_w=np.asarray(result.sigma_w, dtype=float), eigenvalues=eig, drift=k, noise=noise,
        k_s=k_s, v_s=v_s, d_s=d_s, diverged=np.asarray(result.diverged, dtype=bool),
        drift_source=drift, noise_source=noise_source, last=stats[-1], moments=moments,
        learning_rate=np.asarray(result.learning_rate, dtype=float),
        batch_size=int(result.config.batch_size),
    )


@dataclass(frozen=True)
class _CellPaths:
    """One cell's kept models, spread over ``paths_per_model`` paths each, from ``start`` on."""

    i_t: int
    i_s: int
    start: int
    keep: np.ndarray  # (nR,) bool: the models that did not diverge
    paths_per_model: int
    times: np.ndarray  # (n_times,)
    dt: float

    def series(self, values: np.ndarray) -> np.ndarray:
        """(nT, nS, nR, n_snap, ...) -> (n_times, R_kept * P, ...), model-major."""
        v = values[self.i_t, self.i_s, self.keep, self.start:]
        return np.repeat(np.moveaxis(v, 1, 0), self.paths_per_model, axis=1)

    def initial(self, values: np.ndarray) -> np.ndarray:
        """(nT, nS, nR, n_snap, ...) -> (R_kept * P, ...) at the start snapshot."""
        v = values[self.i_t, self.i_s, self.keep, self.start]
        return np.repeat(v, self.paths_per_model, axis=0)

    @property
    def models(self) -> np.ndarray:
        return np.repeat(np.flatnonzero(self.keep), self.paths_per_model)


def _cell_paths(coeffs: MeasuredCoefficients, cell: tuple[int, int], start: int,
                paths_per_model: int, steps_per_interval: int) -> _CellPaths:
    i_t, i_s = (int(c) for c in cell)
    n_t, n_s = coeffs.diverged.shape[:2]
    if not (0 <= i_t < n_t and 0 <= i_s < n_s):
        raise InputError(f"cell must index the ({n_t}, {n_s}) grid, got {cell}")
    n_snap = coeffs.snapshots.size
    start = check_int("start", start, minimum=0)
    if start >= n_snap - 1:
        raise InputError(f"start must lie in [0, {n_snap - 2}] (a later snapshot must follow)")
    paths_per_model = check_int("paths_per_model", paths_per_model, minimum=1)
    steps = check_int("steps_per_interval", steps_per_interval, minimum=1)
    keep = ~coeffs.diverged[i_t, i_s]
    if not keep.any():
        raise InputError(f"every model of cell {cell} diverged: nothing to predict")
    times = coeffs.times[i_t, start:]
    return _CellPaths(i_t, i_s, start, keep, paths_per_model, times,
                      float(np.min(np.diff(times))) / steps)


def _check_variant(variant: str, coeffs: MeasuredCoefficients) -> str:
    if variant not in VARIANTS:
        raise InputError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant != "paper" and coeffs.moments is None:
        raise InputError(f"variant={variant!r} needs the gradient moments (measure_run "
                         "measures them); these coefficients have none")
    return variant


def _cell_learning_rate(coeffs: MeasuredCoefficients, i_t: int, variant: str) -> float | None:
    """lr of the finite-lr terms: the cell's lr for 'complete', None (dropped) otherwise."""
    if variant != "complete":
        return None
    if coeffs.learning_rate is None:
        raise InputError("variant='complete' needs the learning rate of the run")
    return float(coeffs.learning_rate[i_t])


def predict_eigenvalues(coeffs: MeasuredCoefficients, cell: tuple[int, int], start: int = 0,
                        paths_per_model: int = 10, steps_per_interval: int = 100,
                        solver=None, seed: int = 0, *, variant: str = "complete"):
    """Integrate the eigenvalue SDE for the models of one cell.

    Each model's trajectories start from its eigenvalues at snapshot ``start`` and follow its
    own coefficients, linear in t between the measured snapshots.

    ``variant='complete'`` (default) integrates the complete SDE
    (:class:`~dysonsgd.sde.complete.EigenvalueSDE`: Ito drift, correlated noise, finite-lr
    terms, coefficients depending on the state through s_i = sqrt(x_i), the wall x_1 > 0);
    ``'continuum'`` the same without the finite-lr terms; ``'paper'`` Dyson Brownian motion
    (4.3) as printed, with the measured K_i(t), V_ij(t) and no wall.

    Returns
    -------
    times : ndarray, shape (n_times,), the snapshot times from ``start`` on
    x : numpy.ma.MaskedArray, shape (n_times, R_kept * paths_per_model, N)
    models : ndarray of int, shape (R_kept * paths_per_model,), the seed index of each path
    """
    _check_variant(variant, coeffs)
    c = _cell_paths(coeffs, cell, start, paths_per_model, steps_per_interval)
    noise = coeffs.noise if variant == "paper" else coeffs.moments.diagonal_covariance
    # without noise every path of a model is the same curve: integrate one, repeat it
    one = _one_path(c, noise)
    temperature = float(coeffs.temperature[c.i_t])
    if variant == "paper":
        eq = DysonBrownianMotion(piecewise_linear(one.times, one.series(coeffs.drift)),
                                 piecewise_linear(one.times, one.series(coeffs.noise)),
                                 temperature)
    else:
        eq = EigenvalueSDE(coeffs.moments.map(one.series), temperature, times=one.times,
                           learning_rate=_cell_learning_rate(coeffs, c.i_t, variant))
    x0 = one.initial(coeffs.eigenvalues)
    x = integrate(eq, x0, one.times, n_paths=x0.shape[0], solver=solver, seed=seed, dt=one.dt)
    return c.times, _repeat_paths(x, c, one), c.models


def _one_path(c: _CellPaths, noise: np.ndarray) -> _CellPaths:
    """``c`` itself, or one path per model where the equation's noise coefficient ``noise``
    (nT, nS, nR, n_snap, ...) vanishes on the cell: the paths of a model are then one curve
    (their random numbers are multiplied by zero), so one path stands for all of them."""
    if c.paths_per_model > 1 and not np.any(noise[c.i_t, c.i_s, c.keep, c.start:]):
        return replace(c, paths_per_model=1)
    return c


def _repeat_paths(x: np.ma.MaskedArray, c: _CellPaths, one: _CellPaths) -> np.ma.MaskedArray:
    """(n_times, R * P', N) of ``one`` -> (n_times, R * P, N) of ``c``, model-major."""
    if one.paths_per_model == c.paths_per_model:
        return x
    return np.ma.repeat(x, c.paths_per_model // one.paths_per_model, axis=1)


def spacing_series(coeffs: MeasuredCoefficients, variant: str = "complete"
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K_S, V_S, D_S of the spacing SDE (4.8) at every measured snapshot, (nT, nS, nR, n_snap).

    ``'paper'``: (B.7), (B.9) as printed from K and V; ``'complete'``/``'continuum'``: from the
    complete eigenvalue SDE (:func:`~dysonsgd.measure.moments.spacing_coefficients_complete`,
    with the run's lr or lr -> 0).
    """
    _check_variant(variant, coeffs)
    if variant == "paper":
        return coeffs.k_s, coeffs.v_s, coeffs.d_s
    terms = coefficients_at(coeffs.moments)  # its K_i is the drift source's, as coeffs.drift
    t = coeffs.temperature[:, None, None, None]
    lr = (coeffs.learning_rate[:, None, None, None] if variant == "complete"
          else np.zeros_like(t))
    return spacing_coefficients_complete(terms, t, lr)


def predict_spacing(coeffs: MeasuredCoefficients, cell: tuple[int, int], start: int = 0,
                    paths_per_model: int = 10, steps_per_interval: int = 100,
                    solver=None, seed: int = 0, *, variant: str = "complete"):
    """Integrate the level-spacing SDE (4.8) for the models of one cell.

    K_S(t), V_S(t), D_S(t) per model (:func:`spacing_series`: of the complete SDE by default,
    (B.7), (B.9) as printed for ``variant='paper'``), linear in t between snapshots; negative
    V_S (possible for (B.7)) is clipped at 0, since (4.8) needs V_S >= 0.

    Returns
    -------
    times, spacing (masked, shape (n_times, R_kept * paths_per_model, 1)), models : as
    :func:`predict_eigenvalues`.
    """
    c = _cell_paths(coeffs, cell, start, paths_per_model, steps_per_interval)
    # the coefficients of this cell only (computed element by element: the same numbers)
    here = coeffs.cell(c.i_t, c.i_s)
    c = replace(c, i_t=0, i_s=0)
    series = spacing_series(here, variant)
    one = _one_path(c, series[2])  # D_S = 0: (4.9), one curve per model
    k_s, v_s, d_s = (one.series(v) for v in series)
    s0 = one.initial(here.spacing)
    check_positive("initial spacing", s0)
    eq = LevelSpacingSDE(piecewise_linear(one.times, k_s),
                         piecewise_linear(one.times, np.maximum(v_s, 0.0)),
                         piecewise_linear(one.times, d_s), float(here.temperature[0]))
    s = integrate(eq, s0[:, None], one.times, n_paths=s0.size, solver=solver, seed=seed,
                  dt=one.dt)
    return c.times, _repeat_paths(s, c, one), c.models


# ------------------------------------------------------------------------------------------------
# a whole run: what ``dysonsgd sde`` writes
# ------------------------------------------------------------------------------------------------


def _cell_indices(name: str, wanted, grid: np.ndarray) -> list[int]:
    if wanted is None:
        return list(range(grid.size))
    out = []
    for w in np.atleast_1d(wanted):
        i = grid_index(grid, float(w))
        if i is None:
            raise InputError(f"{name}: {w} is not in the run's grid {grid.tolist()}")
        out.append(i)
    return out


def predict_run(result, kind: str, *, temperature=None, sigma_w=None, start: int = 0,
                paths_per_model: int = 10, steps_per_interval: int = 100, solver=None,
                drift: str = "training", seed: int = 0, variant: str = "complete"):
    """Integrate (4.3) or (4.8) for the chosen cells of a run, next to the observed trajectories.

    K and V are measured at every snapshot (:func:`measure_run`); every cell's non-diverged
    models are then predicted from snapshot ``start`` on (:func:`predict_eigenvalues` for
    ``kind='dyson'``, :func:`predict_spacing` for ``'spacing'``), each cell with the same
    ``seed``.

    Parameters
    ----------
    result : dysonsgd.train.ensemble.EnsembleResult
    kind : {'dyson', 'spacing'}
    temperature, sigma_w : sequence of float, optional
        Grid values of the cells to predict (default: all of the axis).
    start, paths_per_model, steps_per_interval, solver, seed
        As :func:`predict_eigenvalues`.
    drift : {'training', 'test'}
        Source of K (:func:`measure_run`).
    variant : {'complete', 'continuum', 'paper'}
        Which equation (:func:`predict_eigenvalues`, :func:`predict_spacing`).

    Returns
    -------
    dataset : xarray.Dataset
        Per predicted cell ``L = T{i_T}_S{i_S}``: ``L_times`` (L_time,), the snapshot times;
        ``L_predicted`` (L_time, L_path, level), NaN where a path broke; ``L_observed``
        (L_model, L_time, level) of the models that did not diverge; ``L_models`` (L_path,),
        the seed index of each path. ``level`` has the N eigenvalues for 'dyson' and S alone
        for 'spacing'.
    cells : list of dict
        Per selected cell: ``temperature``, ``sigma_w``, ``models``, ``paths``,
        ``broken_paths``, the mean S (4.5) at the last snapshot predicted and observed, and the
        two-sample KS distance of the two (``final_spacing_ks``); ``skipped`` instead when
        every model diverged.
    """
    import xarray as xr
    from scipy import stats

    from dysonsgd.sde import SOLVERS

    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(solver, str) and solver not in SOLVERS:
        raise InputError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    n_snap = len(result.snapshot_epochs)
    if not 0 <= start < n_snap - 1:
        raise InputError(f"start (the snapshot to start from) must lie in [0, {n_snap - 2}] (a "
                         f"later snapshot must follow), got {start}")
    i_ts = _cell_indices("temperature", temperature, np.asarray(result.temperature))
    i_ss = _cell_indices("sigma_w", sigma_w, np.asarray(result.sigma_w))
    coeffs = measure_run(result, drift=drift)
    fn = predict_eigenvalues if kind == "dyson" else predict_spacing
    observed_all = coeffs.eigenvalues if kind == "dyson" else coeffs.spacing[..., None]
    cells: list[dict] = []
    data: dict[str, tuple] = {}
    for i_t in i_ts:
        for i_s in i_ss:
            where = {"temperature": float(result.temperature[i_t]),
                     "sigma_w": float(result.sigma_w[i_s])}
            if coeffs.diverged[i_t, i_s].all():
                cells.append({**where, "skipped": "all diverged"})
                continue
            times, pred, models = fn(coeffs, (i_t, i_s), start=start,
                                     paths_per_model=paths_per_model,
                                     steps_per_interval=steps_per_interval, solver=solver,
                                     seed=seed, variant=variant)
            broken = np.ma.getmaskarray(pred)[-1].any(axis=-1)
            kept = np.unique(models)
            last = pred[-1]  # (paths, N): S itself, or the eigenvalues whose spread gives S
            final = np.ma.compressed(last[:, 0] if kind == "spacing"
                                     else mean_level_spacing(last, assume_sorted=True))
            obs_s = coeffs.spacing[i_t, i_s, kept, -1]
            cells.append({
                **where, "models": int(kept.size), "paths": int(models.size),
                "broken_paths": int(broken.sum()),
                "final_spacing_predicted_mean": float(final.mean()) if final.size else None,
                "final_spacing_observed_mean": float(obs_s.mean()),
                "final_spacing_ks": float(stats.ks_2samp(final, obs_s).statistic)
                if final.size else None,
            })
            label = f"T{i_t}_S{i_s}"
            time, path, model = f"{label}_time", f"{label}_path", f"{label}_model"
            data[f"{label}_times"] = ((time,), times)
            data[f"{label}_predicted"] = ((time, path, "level"),
                                          np.ma.filled(pred.astype(float), np.nan))
            data[f"{label}_observed"] = ((model, time, "level"),
                                         observed_all[i_t, i_s, kept, start:])
            data[f"{label}_models"] = ((path,), models)
    return xr.Dataset(data), cells
