"""The closed-loop forecast: the Langevin equation (2.29)-(2.30) for W2 itself, from W2(0) alone.

Each model of a run has a known teacher ``(W1, W2*, W3)``, frozen layers ``W1``, ``W3`` and
``n`` training inputs (regenerated from its seed stream by
:func:`dysonsgd.measure.gradstats.training_inputs`). Started from the model's initial W2
(snapshot 0), the forecast steps W2 by the discrete Langevin equation (2.29) with the full-data
mean gradient mu(W2) and the gradient noise recomputed on the *simulated* W2 at every step,

    W2' = W2 - lr (mu(W2) + xi),      xi ~ N(0, f Cov_a[g_a(W2)] / |B|),

where ``g_a`` is the per-sample gradient (2.28) of sample ``a``, ``Cov_a`` the population
covariance over the n training samples (1/n), ``lr = T |B|`` and ``f = (n - |B|)/(n - 1)`` the
finite-population factor of batches drawn without replacement (``data_order`` 'fixed' and
'shuffled', as in :func:`dysonsgd.measure.moments.increment_moments`), ``f = 1`` for
``data_order='replacement'``. Nothing of the trained trajectory enters: the forecast predicts
training from the initialisation and the theory alone, and tests the Gaussian-noise Langevin
description from which the eigenvalue equations (4.3), (4.8) are derived.

Noise
-----
``noise='full'`` (default) samples xi exactly, without forming the D x D covariance
(D = n2 n1): with z_a i.i.d. N(0, 1),

    xi = sqrt(f / |B|) n^{-1/2} sum_a z_a (g_a - mu),

which is Gaussian with covariance f Cov_a[g_a] / |B|, at O(n D) per step like mu itself. The
whole update is then one weighted sum ``sum_a c_a g_a`` with
``c_a = lr / n + lr sqrt(f / (n |B|)) (z_a - mean(z))``. ``noise='diagonal'`` is (2.29) as
printed: independent eta_ij with the element-wise variance Var_a[g_a,ij] (computed as
E[g^2] - E[g]^2 in one pass; rounding matters only where mu^2 / Var exceeds ~1e10).

Interval
--------
``interval=m`` (default 1: (2.29) itself) takes one Euler-Maruyama step of (2.30) of length
``m lr`` per m SGD steps: drift ``m lr mu``, noise variance ``m lr^2 f Cov / |B|`` (the sum of
m independent steps' noise at a fixed W2). It agrees with m steps of (2.29) to O((m lr
lambda_max)^2) and is valid only while ``m lr lambda_max`` is small (lambda_max the largest
Hessian eigenvalue of the training loss, :mod:`dysonsgd.measure.curvature`); at ``m lr
lambda_max`` of order 1 the step is unstable where (2.29) is not.

Divergence
----------
The run stops a model when a batch loss exceeds ``config.divergence_threshold`` or is NaN. A
forecast path stops when its full-data loss (2.6) (computed with mu at every step) exceeds the
same threshold or is not finite; this is recorded per path (``diverged``, ``diverged_step``)
and masks the path's eigenvalues from that step on, never an error.

Random numbers
--------------
Path ``p`` of the model with spawn key ``k`` (``result.spawn_keys[r]``) in cell
``(i_T, i_S)`` owns one stream ``SeedSequence(seed, spawn_key=(STREAM_TAG, i_T, i_S, k, p))``
(:func:`path_stream`), which draws, step after step, the n normals z_a (``'full'``) or the
n2 x n1 normals eta (``'diagonal'``) of that path only. A path therefore replays alone
(``closed_loop(..., models=[r], paths=[p])``) with the same random numbers as in any batch;
the states agree to rounding (the batched products round differently), which the dynamics
amplify over long horizons.

Arithmetic: float64 throughout; the per-sample gradients come from
:func:`dysonsgd.model.network.backprop` (paths broadcast against the model's data), the
teacher's targets and the layer-1 features from :mod:`dysonsgd.model.network`, the eigenvalues
from :func:`dysonsgd.measure.spectrum.eigenvalues`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from dysonsgd._checks import InputError, check_array, check_index, check_int, check_seed
from dysonsgd.measure.epoch_drift import training_w2
from dysonsgd.measure.gradstats import training_inputs
from dysonsgd.measure.spectrum import eigenvalues as spectrum_eigenvalues
from dysonsgd.measure.spectrum import mean_level_spacing
from dysonsgd.model.activations import lookup
from dysonsgd.model.network import backprop, layer1_features, outputs

__all__ = [
    "NOISES",
    "STREAM_TAG",
    "ClosedLoopForecast",
    "closed_loop",
    "finite_population_factor",
    "langevin_w2",
    "path_stream",
]

#: the noise of one step: the full gradient covariance, or (2.29)'s independent elements
NOISES = ("full", "diagonal")

#: first word of every path's spawn key, keeping the forecast's streams apart from training's
#: ``(replica,)`` and ``(replica, 1, epoch)``
STREAM_TAG = 0x636C

#: about this many float64 values per temporary of one chunk of data (per-sample errors of all
#: paths of a group of models): keeps the temporaries in the L2 cache
_CHUNK_VALUES = 2**17
#: fewest data points per chunk (the per-chunk overhead of a few torch calls)
_MIN_CHUNK = 32


def finite_population_factor(n_data: int, batch_size: int, data_order: str) -> float:
    """f of the minibatch covariance Cov[Delta_B] = f Cov_a[Delta_a] / |B|.

    ``(n - |B|)/(n - 1)`` for batches without replacement ('fixed', 'shuffled'; 0 when n = 1),
    as :func:`dysonsgd.measure.moments.increment_moments`; 1 for ``'replacement'``.
    """
    n = check_int("n_data", n_data)
    b = check_int("batch_size", batch_size)
    if data_order == "replacement":
        return 1.0
    return (n - b) / (n - 1) if n > 1 else 0.0


def path_stream(seed, cell: tuple[int, int], spawn_key: int, path: int) -> np.random.Generator:
    """The random stream of one forecast path (module docstring, "Random numbers").

    ``SeedSequence(seed, spawn_key=(STREAM_TAG, i_T, i_S, spawn_key, path))``; a
    ``SeedSequence`` as ``seed`` contributes its entropy and its own spawn key as a prefix.
    """
    key = (STREAM_TAG, int(cell[0]), int(cell[1]), int(spawn_key), int(path))
    if isinstance(seed, np.random.SeedSequence):
        seed, key = seed.entropy, (*seed.spawn_key, *key)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _chunk(n_data: int, n_paths: int, width: int) -> int:
    return int(min(n_data, max(_MIN_CHUNK, _CHUNK_VALUES // max(1, n_paths * width))))


def _evaluate(w, phi1, y, w3, activation: str, coef=None, squares: bool = False, *,
              step: int):
    """The full-data loss of every path and the sums of one step, in chunks of ``step`` data.

    w (R, P, n2, n1); phi1 (R, n, n1); y (R, n, n3); w3 (R, n3, n2); coef (R, P, n) or None.
    Returns loss (R, P) (the mean of (2.6)) and, with ``coef``, sum_a coef_a g_a (R, P, n2, n1);
    with ``squares``, (sum_a g_a, sum_a g_a^2) element-wise.
    """
    r, p, n2, n1 = w.shape
    n = phi1.shape[1]
    loss = torch.zeros(r, p, dtype=w.dtype)
    first = torch.zeros(r, p * n2, n1, dtype=w.dtype) if coef is not None or squares else None
    second = torch.zeros_like(first) if squares else None
    w3b = w3[:, None]
    for a in range(0, n, step):
        x = phi1[:, None, a:a + step]  # (R, 1, m, n1)
        m = x.shape[2]
        err, delta = backprop(x, y[:, None, a:a + step], w, w3b, activation)  # (R, P, m, .)
        loss += 0.5 * (err * err).sum(dim=(-1, -2))
        if first is None:
            continue
        if coef is not None:
            delta = delta * coef[:, :, a:a + step, None]
        # (R, P, m, n2) -> (R, P n2, m): one product per model for all its paths
        d = delta.transpose(-1, -2).reshape(r, p * n2, m)
        first.baddbmm_(d, phi1[:, a:a + step])
        if squares:
            second.baddbmm_(d * d, phi1[:, a:a + step] ** 2)
    loss /= n
    if first is None:
        return loss, None, None
    first = first.view(r, p, n2, n1)
    return loss, first, None if second is None else second.view(r, p, n2, n1)


def langevin_w2(w2, phi1, targets, w3, learning_rate: float, batch_size: int, record_steps,
                streams, *, finite_population: float = 1.0, interval: int = 1,
                noise: str = "full", activation: str = "tanh",
                divergence_threshold: float = math.inf, threads: int | None = None,
                progress: Callable[[str], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(2.29) / Euler-Maruyama (2.30) for W2 with mu and the noise recomputed at every step.

    Parameters
    ----------
    w2 : (R, n2, n1)
        Start of every path of each of R models.
    phi1 : (R, n, n1)
        Layer-1 features phi(W1 x) of each model's n training inputs (frozen W1).
    targets : (R, n, n3)
        The teacher's outputs on them.
    w3 : (R, n3, n2)
        The frozen output layer.
    learning_rate, batch_size : lr and |B| of the SGD being modelled
    record_steps : (n_t,) int
        Non-decreasing SGD step counts at which W2 is returned (0: the start); multiples of
        ``interval``.
    streams : R sequences of P numpy Generators
        One per path (:func:`path_stream`): path (r, p) draws only from ``streams[r][p]``.
    finite_population : float
        f in [0, 1] (:func:`finite_population_factor`).
    interval : int
        SGD steps per Euler-Maruyama step (module docstring).
    noise : {'full', 'diagonal'}
    activation : str
    divergence_threshold : float
        A path stops when its full-data loss exceeds this or is not finite.
    threads : int, optional
        The models are split into this many groups, stepped concurrently on as many Python
        threads, each running torch on one thread (default: torch's thread count, at most one
        per model). The models are independent and a model's arithmetic does not depend on
        its group (the chunks of data are those of the whole batch), so the result is the
        same for any number of threads.
    progress : callable, optional
        Called with a one-line message at every recorded step (of the first group).

    Returns
    -------
    w2 : (n_t, R, P, n2, n1) float64, NaN from a path's divergence on
    diverged_step : (R, P) int64, the SGD step at which the path's loss crossed; -1 if never
    """
    w0 = check_array("w2", w2, min_ndim=3)
    r_models, n2, n1 = w0.shape
    phi1 = check_array("phi1", phi1, min_ndim=3, shape_tail=(None, n1))
    targets = check_array("targets", targets, min_ndim=3)
    w3 = check_array("w3", w3, min_ndim=3, shape_tail=(None, n2))
    n = phi1.shape[1]
    if phi1.shape[0] != r_models or targets.shape[:2] != (r_models, n) \
            or w3.shape[0] != r_models or targets.shape[2] != w3.shape[1]:
        raise InputError(f"phi1, targets, w3 must have shapes ({r_models}, n, {n1}), "
                         f"({r_models}, n, n3), ({r_models}, n3, {n2}); got {phi1.shape}, "
                         f"{targets.shape}, {w3.shape}")
    lr = float(check_array("learning_rate", learning_rate, min_ndim=0))
    if not lr > 0:
        raise InputError(f"learning_rate must be > 0, got {learning_rate!r}")
    b = check_int("batch_size", batch_size)
    m = check_int("interval", interval)
    if noise not in NOISES:
        raise InputError(f"noise must be one of {NOISES}, got {noise!r}")
    f = float(finite_population)
    if not 0.0 <= f <= 1.0:
        raise InputError(f"finite_population must lie in [0, 1], got {finite_population!r}")
    lookup(activation)
    rec = np.asarray(record_steps)
    if rec.ndim != 1 or rec.size == 0 or not np.issubdtype(rec.dtype, np.integer) \
            or np.any(rec < 0) or np.any(np.diff(rec) < 0) or np.any(rec % m):
        raise InputError(f"record_steps must be a non-empty, non-decreasing sequence of "
                         f"integers >= 0, multiples of interval={m}; got {record_steps!r}")
    if len(streams) != r_models or len({len(s) for s in streams}) != 1:
        raise InputError(f"streams must hold {r_models} sequences of equally many Generators")
    p_paths = len(streams[0])
    if p_paths < 1:
        raise InputError("streams must hold at least one Generator per model")
    thr = float(divergence_threshold)
    torch_threads = torch.get_num_threads()
    groups = min(r_models, torch_threads if threads is None
                 else check_int("threads", threads))

    out = np.full((rec.size, r_models, p_paths, n2, n1), np.nan)
    div_step = np.full((r_models, p_paths), -1, dtype=np.int64)
    drift = m * lr  # drift coefficient of one EM step
    amp = lr * math.sqrt(m * f / b)  # its noise is amp x (a unit-covariance draw of Cov^1/2)
    n_em = int(rec[-1]) // m
    step = _chunk(n, r_models * p_paths, max(n1, n2))  # of the whole batch, for any groups

    def run(rows: np.ndarray, say) -> None:
        sl = slice(int(rows[0]), int(rows[-1]) + 1)
        w = torch.from_numpy(np.repeat(w0[sl, None], p_paths, axis=1))  # (R', P, n2, n1)
        x, y, w3t = (torch.from_numpy(np.ascontiguousarray(a[sl])) for a in (phi1, targets, w3))
        z = np.zeros((rows.size, p_paths, n) if noise == "full"
                     else (rows.size, p_paths, n2, n1))
        o, d = _langevin_loop(w, x, y, w3t, z, rec, streams[sl], n_em, m, n, drift, amp, thr,
                              noise, activation, step, say)
        out[:, sl], div_step[sl] = o, d

    # one torch thread per group: the step is a chain of small products and element-wise
    # passes whose OpenMP barriers spin against NumPy's pool and any other load (measured: 2
    # torch threads 5x slower than 1 on a loaded 2-core machine); the groups are independent
    torch.set_num_threads(1)
    try:
        parts = np.array_split(np.arange(r_models), groups)
        if groups == 1:
            run(parts[0], progress)
        else:
            with ThreadPoolExecutor(groups) as pool:
                for done in [pool.submit(run, rows, progress if k == 0 else None)
                             for k, rows in enumerate(parts)]:
                    done.result()
    finally:
        torch.set_num_threads(torch_threads)
    return out, div_step


def _langevin_loop(w, x, y, w3t, z, rec, streams, n_em, m, n, drift, amp, thr, noise,
                   activation, step, progress):
    """The time loop of :func:`langevin_w2` for one group of models (its arguments,
    prepared); returns the recorded W2 (n_t, R', P, n2, n1) and the divergence steps."""
    r_models, p_paths = w.shape[:2]
    out = np.full((rec.size, *w.shape), np.nan)
    div_step = np.full((r_models, p_paths), -1, dtype=np.int64)
    alive = np.ones((r_models, p_paths), dtype=bool)
    z_t = torch.from_numpy(z)
    k_rec = 0
    with np.errstate(all="ignore"), torch.no_grad():
        for k in range(n_em + 1):
            last = k == n_em
            if last or noise == "diagonal":
                loss, s1, s2 = _evaluate(w, x, y, w3t, activation, squares=not last,
                                         step=step)
            else:
                for i, j in zip(*np.nonzero(alive), strict=True):
                    streams[i][j].standard_normal(out=z[i, j])
                z_c = z_t - z_t.mean(dim=-1, keepdim=True)
                coef = drift / n + (amp / math.sqrt(n)) * z_c
                loss, s1, _ = _evaluate(w, x, y, w3t, activation, coef=coef, step=step)
            bad = alive & ~(loss.numpy() <= thr)  # above the threshold, or NaN
            if bad.any():
                div_step[bad] = k * m
                alive &= ~bad
                w[torch.from_numpy(bad)] = 0.0  # keeps the arithmetic finite; masked below
            while k_rec < rec.size and rec[k_rec] == k * m:
                out[k_rec][alive] = w.numpy()[alive]
                k_rec += 1
                if progress is not None:
                    progress(f"closed-loop: step {k * m} of {int(rec[-1])}")
            if last:
                break
            if noise == "full":
                upd = s1
            else:
                for i, j in zip(*np.nonzero(alive), strict=True):
                    streams[i][j].standard_normal(out=z[i, j])
                mu = s1 / n
                var = (s2 / n - mu * mu).clamp_(min=0.0)
                upd = drift * mu + amp * var.sqrt_() * z_t
            upd[torch.from_numpy(~alive)] = 0.0
            w -= upd
    return out, div_step


@dataclass(frozen=True)
class ClosedLoopForecast:
    """The closed-loop forecast of one cell (module docstring).

    Attributes
    ----------
    cell : (i_T, i_S)
    snapshots : (n_t,) snapshot indices predicted at (snapshot 0 is the shared start)
    epochs : (n_t,) their epoch counts
    steps : (n_t,) their SGD step counts
    times : (n_t,) continuous time t = lr * steps
    models : (R,) seed indices
    paths : (P,) path indices (the streams, :func:`path_stream`)
    eigenvalues : masked (n_t, R, P, N) ascending eigenvalues of X = W2 W2^T of the simulated
        W2, masked from a path's divergence on
    observed : masked (R, n_t, N) the run's eigenvalues at those snapshots, masked after a
        model's divergence in training
    diverged : (R, P) bool; diverged_step : (R, P) int64, -1 if never
    interval, noise, seed : the options; learning_rate, temperature, batch_size : of the cell;
    finite_population : f
    w2 : (n_t, R, P, n2, n1) the simulated W2 (NaN from a divergence on), with ``keep_w2``
    """

    cell: tuple[int, int]
    snapshots: np.ndarray
    epochs: np.ndarray
    steps: np.ndarray
    times: np.ndarray
    models: np.ndarray
    paths: np.ndarray
    eigenvalues: np.ma.MaskedArray
    observed: np.ma.MaskedArray
    diverged: np.ndarray
    diverged_step: np.ndarray
    interval: int
    noise: str
    seed: object
    learning_rate: float
    temperature: float
    batch_size: int
    finite_population: float
    w2: np.ndarray | None = None

    @property
    def spacing(self) -> np.ma.MaskedArray:
        """Mean level spacing S (4.5) of the forecast, masked (n_t, R, P)."""
        return mean_level_spacing(self.eigenvalues, assume_sorted=True)

    @property
    def observed_spacing(self) -> np.ma.MaskedArray:
        """S (4.5) of the run, masked (R, n_t)."""
        return mean_level_spacing(self.observed, assume_sorted=True)


def _indices(name: str, value, length: int) -> np.ndarray:
    """A non-empty sequence of distinct indices into ``length`` items, as given (no negatives
    wrap-around surprises: each checked by check_index)."""
    items = [value] if isinstance(value, (int, np.integer)) else value
    try:
        items = list(items)
    except TypeError:
        raise InputError(f"{name} must be a sequence of integers in [0, {length - 1}], got "
                         f"{value!r}") from None
    if not items:
        raise InputError(f"{name} must not be empty")
    idx = np.array([check_index(name, v, length) for v in items], dtype=np.int64)
    if np.unique(idx).size != idx.size:
        raise InputError(f"{name} must not repeat an index, got {idx.tolist()}")
    return idx


def closed_loop(result, cell: tuple[int, int], *, models=None, paths: int | Sequence[int] = 50,
                snapshots=None, steps: int | None = None, interval: int = 1,
                noise: str = "full", seed=0, keep_w2: bool = False,
                threads: int | None = None, progress: Callable[[str], None] | None = None
                ) -> ClosedLoopForecast:
    """The closed-loop forecast of one cell of a run: (2.29) for W2 from W2(0) alone.

    Parameters
    ----------
    result : dysonsgd.train.EnsembleResult
    cell : (i_T, i_S)
        Temperature and sigma_W indices.
    models : sequence of int, optional
        Seed indices; default every model of the cell that did not diverge in training.
    paths : int or sequence of int
        Paths per model: ``P`` means paths 0..P-1; a sequence names the paths (their streams),
        e.g. ``[7]`` replays path 7 alone.
    snapshots : sequence of int, optional
        Strictly increasing snapshot indices to predict at (default all; 0 is the start).
    steps : int, optional
        Predict at SGD step ``steps`` instead (with the start): the observation there is the
        run's own SGD replayed from snapshot 0
        (:func:`dysonsgd.measure.epoch_drift.training_w2`), so the horizon need not be a
        snapshot. ``snapshots`` is then ignored.
    interval : int
        SGD steps per Euler-Maruyama step of (2.30); must divide every snapshot's step count.
    noise : {'full', 'diagonal'}
    seed : int, list of int or SeedSequence
        Entropy of the paths' streams (:func:`path_stream`).
    keep_w2 : bool
        Also return the simulated W2 (n_t x R x P x n2 x n1 float64 values).
    threads : int, optional
        Groups of models stepped concurrently (:func:`langevin_w2`; the same numbers for any).
    progress : callable, optional
        Receives one-line messages.

    Returns
    -------
    ClosedLoopForecast
    """
    grid = np.shape(result.diverged)
    if not isinstance(cell, (tuple, list)) or len(cell) != 2:
        raise InputError(f"cell must be a pair (i_T, i_S), got {cell!r}")
    i_t = check_index("cell[0] (temperature index)", cell[0], grid[0])
    i_s = check_index("cell[1] (sigma_w index)", cell[1], grid[1])
    diverged = np.asarray(result.diverged, dtype=bool)[i_t, i_s]
    if models is None:
        models = np.flatnonzero(~diverged)
        if models.size == 0:
            raise InputError(f"models: every model of cell ({i_t}, {i_s}) diverged in "
                             "training; pass models= explicitly")
    models = _indices("models", models, grid[2])
    if isinstance(paths, (int, np.integer)) and not isinstance(paths, bool):
        path_ids = np.arange(check_int("paths", paths))
    else:
        path_ids = np.array([check_int("paths[...]", p, minimum=0) for p in paths]
                            if isinstance(paths, (list, tuple, np.ndarray)) else [],
                            dtype=np.int64)
        if path_ids.size == 0 or np.unique(path_ids).size != path_ids.size:
            raise InputError(f"paths must be an integer >= 1 or a non-empty sequence of "
                             f"distinct integers >= 0, got {paths!r}")
    n_snap = len(result.snapshot_epochs)
    config = result.config
    horizon = None if steps is None else check_int("steps", steps, minimum=1)
    if horizon is not None:
        snaps = np.array([0, -1])
    else:
        snaps = np.arange(n_snap) if snapshots is None else _indices("snapshots", snapshots,
                                                                      n_snap)
        if np.any(np.diff(snaps) <= 0):
            raise InputError(f"snapshots must be strictly increasing, got {snaps.tolist()}")
    m = check_int("interval", interval)
    steps = (np.array([0, horizon], dtype=np.int64) if horizon is not None else
             np.asarray(result.snapshot_epochs, dtype=np.int64)[snaps] * config.steps_per_epoch)
    if np.any(steps % m):
        bad = snaps[np.flatnonzero(steps % m)[0]]
        raise InputError(f"interval must divide the SGD steps to every snapshot; snapshot "
                         f"{bad} is at {steps[snaps == bad][0]} steps, got interval={m}")
    if noise not in NOISES:
        raise InputError(f"noise must be one of {NOISES}, got {noise!r}")
    seed = check_seed("seed", seed)
    if not isinstance(keep_w2, bool):
        raise InputError(f"keep_w2 must be True or False, got {keep_w2!r}")
    if threads is not None:
        check_int("threads", threads)
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be callable or None, got {progress!r}")

    lr = float(np.asarray(result.learning_rate, dtype=float)[i_t])
    act = config.activation
    w1, w2t, w3 = (np.asarray(a, dtype=float)[i_t, i_s, models] for a in result.teacher())
    x = training_inputs(result)[0, 0][models]  # (R, n, n0)
    targets = outputs(x, w1, w2t, w3, act, engine="torch")
    phi1 = layer1_features(x, w1, act)
    w_start = np.asarray(result.w2[i_t, i_s, models, 0], dtype=float)
    keys = np.asarray(result.spawn_keys)[models]
    streams = [[path_stream(seed, (i_t, i_s), int(k), int(p)) for p in path_ids] for k in keys]
    f = finite_population_factor(config.n_data, config.batch_size, config.data_order)
    w_sim, div_step = langevin_w2(
        w_start, phi1, targets, w3, lr, config.batch_size, steps, streams,
        finite_population=f, interval=m, noise=noise, activation=act,
        divergence_threshold=config.divergence_threshold, threads=threads, progress=progress)
    path_div = div_step >= 0
    mask = path_div[None] & (steps[:, None, None] >= div_step[None])
    eig = spectrum_eigenvalues(np.nan_to_num(w_sim))
    eig[mask] = np.nan
    eig = np.ma.masked_array(eig, np.broadcast_to(mask[..., None], eig.shape).copy())
    if horizon is None:
        w_obs = np.asarray(result.w2, dtype=float)[i_t, i_s][models][:, snaps]
        epochs = np.asarray(result.snapshot_epochs, dtype=np.int64)[snaps]
    else:
        w_obs = np.stack([w_start, training_w2(result, (i_t, i_s), models, horizon)], axis=1)
        epochs = np.array([0, horizon // config.steps_per_epoch], dtype=np.int64)
    obs = spectrum_eigenvalues(w_obs)
    div_epoch = np.asarray(result.diverged_epoch)[i_t, i_s, models]
    obs_mask = diverged[models][:, None] & (steps[None, :] >= (div_epoch[:, None] + 1)
                                            * config.steps_per_epoch)
    obs = np.ma.masked_array(obs, np.broadcast_to(obs_mask[..., None], obs.shape).copy())
    return ClosedLoopForecast(
        cell=(i_t, i_s), snapshots=snaps, epochs=epochs, steps=steps, times=lr * steps,
        models=models, paths=path_ids, eigenvalues=eig, observed=obs, diverged=path_div,
        diverged_step=div_step, interval=m, noise=noise,
        seed=seed, learning_rate=lr,
        temperature=float(np.asarray(result.temperature, dtype=float)[i_t]),
        batch_size=int(config.batch_size), finite_population=f,
        w2=w_sim if keep_w2 else None)
