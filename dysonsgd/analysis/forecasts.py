"""What ``dysonsgd validate`` scores: predicted eigenvalue paths per model, by forecast.

``replay``
    Each model's eigenvalues at the start snapshot are integrated with the coefficients
    measured on that model's OWN observed trajectory at every later snapshot
    (:func:`dysonsgd.analysis.predict.predict_eigenvalues`). A consistency check of the
    equation given the measured coefficients, not a forecast: the observation feeds the
    prediction.
``cross-fitted``
    The coefficients as functions of the state, not of time: the models of a cell are split
    into two halves (alternate seeds); a model of one half is integrated with coefficients
    estimated on the OTHER half, looked up by state. At the start of every snapshot interval
    each path takes the average coefficients of the k nearest measured states of the other
    half (k = ceil(sqrt(n)) of its n measured states, all snapshots; distance: Euclidean in
    the log-eigenvalues standardised per level) and holds them over the interval (the complete
    equation still follows the state within it through s_i = sqrt(x_i)). Both halves are
    scored, each fitted on the other.
``closed-loop``
    The Langevin equation (2.29) for W2 itself from the initial W2 alone, with the mean
    gradient and its covariance recomputed on the simulated W2
    (:mod:`dysonsgd.analysis.closed_loop`); :func:`from_closed_loop` puts its paths here.

Every forecast gives a :class:`ForecastPaths`: for each of the R scored models, P paths of the
N eigenvalues at the scored snapshots, beside that model's observation. Paths are grouped by
model and are never pooled across models as if independent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dysonsgd._checks import InputError, check_int
from dysonsgd.analysis.predict import MeasuredCoefficients, predict_eigenvalues
from dysonsgd.analysis.theories import DEFAULT_THEORY, Theory
from dysonsgd.measure.moments import SingularMoments
from dysonsgd.measure.spectrum import mean_level_spacing
from dysonsgd.sde import DysonBrownianMotion, integrate
from dysonsgd.sde.complete import EigenvalueSDE

__all__ = [
    "ForecastPaths",
    "cross_fitted",
    "from_closed_loop",
    "replay",
    "split_observation",
    "stream_seed",
]



@dataclass(frozen=True)
class ForecastPaths:
    """Predicted paths beside the observations, grouped by model.

    Attributes
    ----------
    forecast : one of :data:`~dysonsgd.analysis.spec.FORECASTS`; theory : the theory's name
    snapshots : (n_t,) the scored snapshot indices of the run (the first is the shared start)
    models : (R,) seed index of each scored model
    eigenvalues : masked (n_t, R, P, N), ascending; masked where a path broke or diverged
    observed : (R, n_t, N) the observed eigenvalues (NaN where unknown)
    """

    forecast: str
    theory: str
    snapshots: np.ndarray
    models: np.ndarray
    eigenvalues: np.ma.MaskedArray
    observed: np.ndarray

    @property
    def paths(self) -> int:
        return int(self.eigenvalues.shape[2])

    @property
    def spacing(self) -> np.ma.MaskedArray:
        """Mean level spacing S (4.5) of the paths, masked (n_t, R, P)."""
        return mean_level_spacing(self.eigenvalues, assume_sorted=True)

    @property
    def observed_spacing(self) -> np.ndarray:
        """Observed S (4.5), (R, n_t)."""
        return mean_level_spacing(self.observed, assume_sorted=True)

    def broken(self) -> np.ndarray:
        """(R, P) bool: the path broke (masked) at some snapshot."""
        return np.ma.getmaskarray(self.eigenvalues).any(axis=(0, 3))


def stream_seed(seed: int, *keys: int) -> int:
    """An integer seed for one (cell, forecast, theory, ...) stream of ``seed``
    (``numpy.random.SeedSequence(seed, spawn_key=keys)``)."""
    return int(np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in keys))
               .generate_state(1)[0])


def _by_model(x: np.ma.MaskedArray, r: int) -> np.ma.MaskedArray:
    """(n_t, R * P, N) model-major -> (n_t, R, P, N)."""
    n_t, rp, n = x.shape
    return x.reshape(n_t, r, rp // r, n)


def replay(coeffs: MeasuredCoefficients, cell: tuple[int, int],
           theory: Theory = DEFAULT_THEORY, *, start: int = 1, paths: int = 50,
           steps_per_interval: int = 50, seed: int = 0) -> ForecastPaths:
    """The ``replay`` paths of one cell (module docstring) under ``theory``."""
    here = coeffs.cell(*cell)  # the theory changes this cell's coefficients only
    keep = ~here.diverged[0, 0]
    models = np.flatnonzero(keep)
    if models.size == 0:
        raise InputError(f"every model of cell {cell} diverged: nothing to predict")
    _, x, _ = predict_eigenvalues(theory.apply(here), (0, 0), start=start,
                                  paths_per_model=paths, steps_per_interval=steps_per_interval,
                                  seed=seed, variant=theory.variant)
    return ForecastPaths("replay", theory.name, _snapshots(coeffs, start), models,
                         _by_model(x, models.size), here.eigenvalues[0, 0, keep, start:])


def _snapshots(coeffs: MeasuredCoefficients, start: int) -> np.ndarray:
    """The run's snapshot indices of the measured snapshots from ``start`` on."""
    return np.asarray(coeffs.snapshots[start:], dtype=int)


def split_observation(fp: ForecastPaths) -> ForecastPaths:
    """The positive control: the last path of every model becomes its observation.

    ``fp`` must hold P + 1 independent paths per model; the result has P paths and, as
    observation, one more path of the same theory (NaN where it broke).
    """
    if fp.paths < 2:
        raise InputError("split_observation needs at least two paths per model")
    x = fp.eigenvalues
    pseudo = np.moveaxis(np.ma.filled(x[:, :, -1].astype(float), np.nan), 0, 1)
    return replace(fp, eigenvalues=x[:, :, :-1], observed=pseudo,
                   theory=f"{fp.theory} (simulated observations)")


# ------------------------------------------------------------------------------------------------
# cross-fitted: coefficients as functions of the state
# ------------------------------------------------------------------------------------------------


def _features(x: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (np.log(np.maximum(x, np.finfo(float).tiny)) - centre) / scale


def _neighbour_mean(fields: list[np.ndarray], states: np.ndarray, at: np.ndarray,
                    k: int) -> list[np.ndarray]:
    """Average of each field (n_fit, ...) over the k nearest fitted states of every row of
    ``at`` (standardised log-eigenvalues)."""
    logs = np.log(np.maximum(states, np.finfo(float).tiny))
    centre, scale = logs.mean(axis=0), np.maximum(logs.std(axis=0), 1e-12)
    fit = (logs - centre) / scale
    q = _features(at, centre, scale)
    d2 = (np.sum(q * q, axis=1)[:, None] - 2.0 * q @ fit.T + np.sum(fit * fit, axis=1)[None])
    near = np.argpartition(d2, k - 1, axis=1)[:, :k]
    # the mean over the k neighbours as numpy's mean(axis=1) sums them (in order, then / k),
    # one gathered row of states at a time instead of all k at once
    sums = [f[near[:, 0]] for f in fields]
    for j in range(1, k):
        for total, f in zip(sums, fields, strict=True):
            total += f[near[:, j]]
    return [total / k for total in sums]


def _fold_paths(coeffs: MeasuredCoefficients, cell: tuple[int, int], fit: np.ndarray,
                score: np.ndarray, *, start: int, paths: int, steps_per_interval: int,
                seed: int, variant: str) -> np.ma.MaskedArray:
    """Paths (n_t, R_score, P, N) of the models ``score``, coefficients from ``fit``."""
    i_t, i_s = cell
    eig = coeffs.eigenvalues[i_t, i_s]
    n = eig.shape[2]
    states = eig[fit].reshape(-1, n)
    k = int(np.ceil(np.sqrt(states.shape[0])))
    if variant == "paper":
        fields = [coeffs.drift[i_t, i_s, fit].reshape(-1, n),
                  coeffs.noise[i_t, i_s, fit].reshape(-1, n, n)]
    else:
        m = coeffs.moments.map(lambda a: a[i_t, i_s, fit])
        fields = [getattr(m, name).reshape(-1, *getattr(m, name).shape[2:])
                  for name in SingularMoments.__dataclass_fields__]
    temperature = float(coeffs.temperature[i_t])
    lr = float(coeffs.learning_rate[i_t]) if variant == "complete" else None
    times = coeffs.times[i_t, start:]
    x = np.repeat(eig[score, start], paths, axis=0)
    out = np.full((times.size, x.shape[0], n), np.nan)
    out[0] = x
    alive = np.ones(x.shape[0], dtype=bool)
    for k_int in range(times.size - 1):
        local = _neighbour_mean(fields, states, x, k)
        if variant == "paper":
            eq = DysonBrownianMotion(local[0], local[1], temperature, positive=True)
        else:
            eq = EigenvalueSDE(SingularMoments(*local), temperature, learning_rate=lr)
        dt = (times[k_int + 1] - times[k_int]) / steps_per_interval
        step = integrate(eq, x, times[k_int:k_int + 2], n_paths=x.shape[0],
                         seed=stream_seed(seed, k_int), dt=dt)
        end = step[-1]
        broke = np.ma.getmaskarray(end).any(axis=-1)
        alive &= ~broke
        x = np.where(broke[:, None], x, np.ma.filled(end, 0.0))
        out[k_int + 1] = np.where(alive[:, None], x, np.nan)
    pred = np.ma.masked_invalid(out)
    return _by_model(pred, score.size)


def cross_fitted(coeffs: MeasuredCoefficients, cell: tuple[int, int],
                 theory: Theory = DEFAULT_THEORY, *, start: int = 1, paths: int = 50,
                 steps_per_interval: int = 50, seed: int = 0) -> ForecastPaths:
    """The ``cross-fitted`` paths of one cell (module docstring) under ``theory``.

    Needs at least four models that did not diverge (two per half).
    """
    paths = check_int("paths", paths, minimum=1)
    here = theory.apply(coeffs.cell(*cell))  # the theory changes this cell's coefficients only
    models = np.flatnonzero(~here.diverged[0, 0])
    if models.size < 4:
        raise InputError(f"cross-fitted forecast of cell {cell}: needs >= 4 models that did "
                         f"not diverge, got {models.size}")
    halves = (models[0::2], models[1::2])
    x = np.ma.masked_all((here.times.shape[1] - start, models.size, paths,
                          here.eigenvalues.shape[-1]))
    for h, (score, fit) in enumerate((halves, halves[::-1])):
        part = _fold_paths(here, (0, 0), fit, score, start=start, paths=paths,
                           steps_per_interval=steps_per_interval, seed=stream_seed(seed, h),
                           variant=theory.variant)
        x[:, np.searchsorted(models, score)] = part
    return ForecastPaths("cross-fitted", theory.name, _snapshots(here, start), models, x,
                         here.eigenvalues[0, 0, models, start:])


def from_closed_loop(forecast) -> ForecastPaths:
    """A :class:`~dysonsgd.analysis.closed_loop.ClosedLoopForecast` as :class:`ForecastPaths`
    (every path diverged or not, from snapshot 0)."""
    return ForecastPaths("closed-loop", "Langevin (2.29)", np.asarray(forecast.snapshots),
                         np.asarray(forecast.models), forecast.eigenvalues,
                         np.ma.filled(np.ma.asarray(forecast.observed, dtype=float), np.nan))
