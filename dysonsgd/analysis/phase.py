"""Phases of a run in the (T, 1/sigma_W) diagram, sections 2.3, 3 and 4.2.

Contents
--------
preactivation_ratio, measured_preactivation_ratio, preactivation_ratio_monte_carlo
    rho = sigma_z^2 / sigma_W^2 measured on a network, a run or a Monte Carlo: the input of the
    refined symmetry-breaking line (:func:`dysonsgd.theory.boundaries.symmetry_breaking_line`).
spacing_coefficients_for, signal_to_noise_convergence, converged_fraction,
signal_to_noise_boundary
    The (4.15) verdict per model (:func:`dysonsgd.theory.boundaries.convergence_criterion`)
    from K_S, V_S measured at a run's last snapshot, turned into a converged fraction per cell
    and its contour crossing, as in figure 8; ``FIGURES_CONVENTION`` and
    ``VALIDATION_CONVENTION`` are the default conventions of the figures and of the checks.
PhaseThresholds, classify_phases, classify_summary, phase_codes
    A phase label per cell (ordered / high-temperature / jamming / diverged) from ensemble
    medians of the final test loss and of G(t_f, 0), with every threshold in one place.
(guidance, from the labels: :mod:`dysonsgd.analysis.guidance`)
phase_summary
    Every per-model observable the above need, from an EnsembleResult.

Layer: analysis, above :mod:`dysonsgd.sde`; the closed forms live in
:mod:`dysonsgd.theory.boundaries`. Pure functions take arrays shaped ``(nT, nS, nR)``
(temperature, sigma_W, seed) or anything that broadcasts; the ensemble is the last axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dysonsgd._checks import InputError, check_array, check_in_range, check_int, check_positive
from dysonsgd.measure import gradstats, observables
from dysonsgd.model import network
from dysonsgd.theory import phase_rule
from dysonsgd.theory.boundaries import (
    CONVENTIONS,
    CRITICAL_FEATURE_CORRELATION,
    convergence_criterion,
)
from dysonsgd.theory.paper import PAPER_WIDTHS

__all__ = [
    "FIGURES_CONVENTION",
    "PHASES",
    "VALIDATION_CONVENTION",
    "PhaseThresholds",
    "classify_phases",
    "classify_summary",
    "converged_fraction",
    "measured_preactivation_ratio",
    "phase_codes",
    "phase_summary",
    "preactivation_ratio",
    "preactivation_ratio_monte_carlo",
    "signal_to_noise_boundary",
    "signal_to_noise_convergence",
    "spacing_coefficients_for",
]

#: phase labels, in the order of :func:`phase_codes`
PHASES = ("ordered", "high-temperature", "jamming", "diverged")
#: memory statistics of :class:`PhaseThresholds`
MEMORY_STATISTICS = ("raw", "normalised")
#: pre-activation correlation between t_f and 0 that :meth:`PhaseThresholds.for_activation`
#: takes as "memory kept": half-way between erased (0) and frozen (1)
MEMORY_CORRELATION = 0.5

#: default (4.15) convention of the paper's figures 8 and 9 (:mod:`dysonsgd.plots.paper`,
#: ``dysonsgd figures``): the figures follow the paper's equations wherever the release
#: notebook departs from them (docs/phase.md), so K_S, V_S of (B.7) as printed, signed
FIGURES_CONVENTION = "paper"
#: the (4.15) convention of ``dysonsgd validate`` (:mod:`dysonsgd.analysis.validation`): the
#: paper's, as the figures. validate asks whether the theory as stated predicts training, so it
#: takes the equations as printed, with K_S, V_S of (B.7) from the training drift K that its
#: eigenvalue forecasts integrate (one convention and one K source everywhere); the release
#: notebook's absolute-value variant is kept for reproducing its figure 8 only.
VALIDATION_CONVENTION = "paper"


# ------------------------------------------------------------------------------------------------
# the pre-activation ratio rho of the symmetry-breaking line, section 2.3
# ------------------------------------------------------------------------------------------------


def preactivation_ratio(x, w1, w2_init, sigma_w) -> np.ndarray:
    """Measured rho = E[z^2] / sigma_W^2 of the last hidden pre-activations z = W2 tanh(W1 x).

    E is the mean over data points and nodes of z^2 (the second moment of (2.13); the mean of z
    is zero in expectation over W2).

    Parameters
    ----------
    x : (..., P, n0) inputs; w1 : (..., n1, n0); w2_init : (..., n2, n1) W2 at initialisation;
    sigma_w : (...) or scalar, sigma_W of each model (> 0)

    Returns
    -------
    (...) float64, rho per model
    """
    x = check_array("x", x, min_ndim=2)
    w1 = check_array("w1", w1, min_ndim=2)
    w2 = check_array("w2_init", w2_init, min_ndim=2)
    sigma_w = np.asarray(check_positive("sigma_w", sigma_w), dtype=float)
    if w1.shape[-1] != x.shape[-1] or w2.shape[-1] != w1.shape[-2]:
        raise InputError(f"shapes do not chain: x {x.shape}, w1 {w1.shape}, w2_init {w2.shape}")
    phi1 = network.layer1_features(x, w1, "tanh")  # (2.3): phi(W1 x)
    z = phi1 @ np.swapaxes(w2, -1, -2)  # the last hidden layer's pre-activations
    return np.mean(z * z, axis=(-2, -1)) / sigma_w**2


def measured_preactivation_ratio(result, x_test=None, snapshot: int = 0) -> np.ndarray:
    """rho per model from a run's W2 at initialisation (snapshot 0), on the test inputs.

    Parameters
    ----------
    result : dysonsgd.train.ensemble.EnsembleResult
    x_test : (P, n0), optional
        Default the release's 128 test inputs (numpy seed 42); a task's held-out test set
        for a run of a task (:mod:`dysonsgd.model.tasks`).

    Returns
    -------
    (nT, nS, nR) float64; the refined line is ``sqrt(2 * mean)``
    (``symmetry_breaking_line(measured_ratio=mean)``). Cells share each seed's teacher and
    init noise (common random numbers), so rho depends on the seed only and its standard error
    is over seeds; its expectation for the given inputs is
    :func:`preactivation_ratio_for_inputs`.
    """
    if result.config.activation != "tanh":
        raise InputError("the symmetry-breaking argument needs tanh (the run's activation is "
                         f"{result.config.activation!r})")
    x = observables.result_test_inputs(result, x_test)
    k = observables._snap(result, snapshot)
    w1, w2, _ = observables._student(result, k)
    return preactivation_ratio(x, w1, w2, result.sigma_w[None, :, None])


def preactivation_ratio_monte_carlo(n_teachers: int = 2000, n_points: int = 128,
                                    widths=PAPER_WIDTHS, seed: int = 0) -> dict[str, float]:
    """rho by direct Monte Carlo over teachers, inputs and W2(0) (section 3.1 draws).

    Draws ``W1 ~ N(0, 1/n0)``, ``W2(0) ~ N(0, 1/n1)`` (sigma_W = 1: rho does not depend on it)
    and ``x ~ N(0, 1)^n0`` per teacher.

    Returns
    -------
    dict with ``ratio`` (mean over teachers), ``stderr`` (standard error of that mean),
    ``inv_sigma_w`` (the line sqrt(2 rho)) and ``n_teachers``.
    """
    n_teachers = check_int("n_teachers", n_teachers, minimum=2)
    n_points = check_int("n_points", n_points)
    n0, n1, n2, _ = (check_int(f"widths[{i}]", w) for i, w in enumerate(widths))
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    w1 = rng.standard_normal((n_teachers, n1, n0)) / math.sqrt(n0)
    w2 = rng.standard_normal((n_teachers, n2, n1)) / math.sqrt(n1)
    x = rng.standard_normal((n_teachers, n_points, n0))
    rho = preactivation_ratio(x, w1, w2, 1.0)
    mean = float(rho.mean())
    return {"ratio": mean, "stderr": float(rho.std(ddof=1) / math.sqrt(n_teachers)),
            "inv_sigma_w": math.sqrt(2.0 * mean), "n_teachers": n_teachers}


# ------------------------------------------------------------------------------------------------
# signal to noise, (4.10)-(4.15)
# ------------------------------------------------------------------------------------------------


def spacing_coefficients_for(stats, convention: str = "paper") -> tuple[np.ndarray, np.ndarray]:
    """K_S and V_S of a :class:`dysonsgd.measure.gradstats.GradientStatistics` in the form that
    :func:`convergence_criterion` takes for ``convention``: (B.7) as printed for ``'paper'``,
    the release notebook's variant for ``'release'``."""
    if convention not in CONVENTIONS:
        raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if convention == "release":
        return stats.k_s_release, stats.v_s_release
    return stats.k_s, stats.v_s


def signal_to_noise_convergence(result, convention: str, *, stats=None,
                                chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The (4.15) verdict of every model of a run at its last snapshot, and the fraction per cell.

    K_S and V_S are measured at the last snapshot on the release's 128 test inputs
    (:func:`dysonsgd.measure.gradstats.measure`), taken in the form of ``convention``
    (:func:`spacing_coefficients_for`) and put into
    :func:`dysonsgd.theory.boundaries.convergence_criterion` with each model's T and sigma_W.

    Parameters
    ----------
    result : dysonsgd.train.ensemble.EnsembleResult
    convention : {'paper', 'release'}
    stats : GradientStatistics, optional
        K and V already measured at the last snapshot (e.g. ``MeasuredCoefficients.last``).
    chunk : int
        Models per batch when measuring.

    Returns
    -------
    converged : (nT, nS, nR) bool
    fraction : (nT, nS) float, :func:`converged_fraction` (diverged models count as not
        converged)
    """
    if stats is None:
        stats = gradstats.measure(result, -1, chunk=chunk)
    k_s, v_s = spacing_coefficients_for(stats, convention)
    temps = np.asarray(result.temperature)
    sigma_w = np.asarray(result.sigma_w)
    converged = convergence_criterion(k_s, v_s, temps[:, None, None], sigma_w[None, :, None],
                                      widths=result.config.widths, convention=convention)
    return converged, converged_fraction(converged, result.diverged)


def converged_fraction(converged, diverged=None, axis: int = -1) -> np.ndarray:
    """Fraction of each cell's ensemble that converged by (4.15): [nT, nS, nR] -> [nT, nS].

    A model that diverged during training (the release's rule, loss > 100) counts as not
    converged.
    """
    c = np.asarray(converged, dtype=bool)
    if diverged is not None:
        c = c & ~np.broadcast_to(np.asarray(diverged, dtype=bool), c.shape)
    return c.mean(axis=axis)


def signal_to_noise_boundary(fraction, temperature, level: float = 0.68) -> np.ndarray:
    """Temperature at which a column's converged fraction first drops below ``level``.

    Scanning each sigma_W column upward in T, the crossing between the last T with fraction
    >= level and the next one is interpolated linearly in (log2 T, fraction).

    Parameters
    ----------
    fraction : (nT, nS); temperature : (nT,) ascending; level in (0, 1)

    Returns
    -------
    (nS,) float: the crossing T; ``inf`` if the column never drops below the level, ``nan`` if
    it starts below it.
    """
    frac = check_array("fraction", fraction, min_ndim=2)
    temps = check_array("temperature", temperature)
    level = check_in_range("level", level, 0.0, 1.0, low_open=True, high_open=True)
    if temps.shape != frac.shape[:1] or np.any(np.diff(temps) <= 0) or np.any(temps <= 0):
        raise InputError(f"temperature must be positive, ascending, of length {frac.shape[0]}")
    logt = np.log2(temps)
    out = np.empty(frac.shape[1])
    for j in range(frac.shape[1]):
        col = frac[:, j]
        below = np.flatnonzero(col < level)
        if below.size == 0:
            out[j] = np.inf
        elif below[0] == 0:
            out[j] = np.nan
        else:
            i = below[0]
            f0, f1 = col[i - 1], col[i]
            w = (f0 - level) / (f0 - f1)
            out[j] = 2.0 ** (logt[i - 1] + w * (logt[i] - logt[i - 1]))
    return out


# ------------------------------------------------------------------------------------------------
# phase labels
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseThresholds:
    """Every threshold of :func:`classify_phases`, in one place.

    The rule, on each cell's ensemble (last axis), follows how section 3 describes the phases:

    1. ``'diverged'`` if at least ``diverged_fraction_min`` of the models diverged.
    2. ``'ordered'`` (ferromagnetic) if the median final test loss, diverged models counted as
       infinite, is at most ``ordered_loss_max``: the models learnt the teacher.
    3. otherwise ``'jamming'`` (disordered) if the median memory statistic over the models that
       did not diverge is at least ``jamming_correlation_min``: the features keep the memory
       of their initialisation, the weights barely moved;
    4. otherwise ``'high-temperature'`` (paramagnetic): high loss and the memory erased.

    The defaults are the paper's (tanh, two hidden layers). For any other activation use
    :meth:`for_activation`, which derives both thresholds instead of reusing tanh's numbers.

    Attributes
    ----------
    ordered_loss_max : float
        1e-3, in the paper's convention (2.6) (with the 1/2) on the release's 128 test inputs.
        The mean-field zero-predictor loss of a tanh teacher is 0.118
        (:func:`dysonsgd.theory.phase_rule.output_variance` / 2; the release's teachers: mean
        0.09, median 0.07), so this leaves under 1% of the teacher's output variance
        unexplained. The paper's ordered corner reaches 1e-7 after 1e5 epochs and about 1e-5
        after 100; the high-temperature and jamming cells stay above 1e-3 (their loss does not
        shrink with training time).
    jamming_correlation_min : float
        For ``memory='raw'``: :data:`CRITICAL_FEATURE_CORRELATION` = E[tanh(z)^2],
        z ~ N(0, 1/2) = 0.274: the self-overlap G(0, 0) of features exactly at the
        symmetry-breaking point sigma_z^2 = sigma_c^2. Since G(t_f, 0) <= G(0, 0) up to noise, a
        cell right of the refined symmetry-breaking line (sigma_z^2 < 1/2) can never be
        labelled jamming. For ``memory='normalised'``: a level of the normalised overlap.
    diverged_fraction_min : float
        0.5: a cell is 'diverged' when most of its ensemble diverged.
    memory : {'raw', 'normalised'}
        The memory statistic: ``'raw'`` G(t_f, 0) (3.4), the paper's (meaningful for tanh,
        whose G(0, 0) <= 1 marks sigma_c); ``'normalised'`` G(t_f, 0) / sqrt(G(t_f, t_f)
        G(0, 0)), which does not grow with sigma_W (relu: G(0, 0) = sigma_W^2 / 4).
    """

    ordered_loss_max: float = 1e-3
    jamming_correlation_min: float = field(default=CRITICAL_FEATURE_CORRELATION)
    diverged_fraction_min: float = 0.5
    memory: str = "raw"

    def __post_init__(self) -> None:
        check_positive("ordered_loss_max", self.ordered_loss_max)
        check_in_range("jamming_correlation_min", self.jamming_correlation_min, 0.0, 1.0,
                       low_open=True)
        check_in_range("diverged_fraction_min", self.diverged_fraction_min, 0.0, 1.0,
                       low_open=True)
        if self.memory not in MEMORY_STATISTICS:
            raise InputError(f"memory must be one of {MEMORY_STATISTICS}, got {self.memory!r}")

    @classmethod
    def for_activation(cls, activation: str, *, depth: int = 2,
                       task: str = "teacher") -> PhaseThresholds:
        """The rule derived for ``activation`` (and ``depth`` hidden layers), never tanh's
        numbers transplanted.

        - ``'tanh'`` at depth 2: the paper's defaults, unchanged.
        - otherwise the same two statements, re-derived (docs/beyond.md, "The phase rule"):
          *ordered* is the same fraction, 1e-3 / 0.118 = 0.85%, of the activation's mean-field
          zero-predictor loss (:func:`dysonsgd.theory.phase_rule.output_variance` / 2; relu
          0.125, identity 0.5, gelu 0.078); *memory* is the normalised overlap against
          kappa(1/2) (:func:`dysonsgd.theory.phase_rule.normalised_overlap`): the
          pre-activations at t_f keep at least half their correlation with t = 0 (relu 0.609,
          identity 0.5; gelu 0.535 at unit pre-activation variance, between the two limits
          that bound it, identity at small and relu at large variance).

        Parameters
        ----------
        activation : str
            A name of the activation registry.
        depth : int
            Hidden layers of the teacher (2 in the paper).
        task : str
            ``'teacher'`` (the paper's data). For any other task (``'digits'``) no rule is
            derived: both thresholds are statements about a teacher's outputs (the ordered
            level a fraction of its zero-predictor loss, which real labels never approach: the
            digits' ordered corner sits at 0.233 against 0.5), so this raises rather than
            transplant them (docs/beyond.md, "Digits").

        Raises
        ------
        InputError
            For a task other than ``'teacher'``.
        """
        if task != "teacher":
            raise InputError(f"task: no phase rule is derived for task {task!r}; "
                             f"PhaseThresholds.for_activation covers task 'teacher' only")
        if activation == "tanh" and depth == 2:
            return cls()
        reference = 0.5 * phase_rule.output_variance("tanh", depth=2)
        zero_loss = 0.5 * phase_rule.output_variance(activation, depth=depth)
        fraction = cls().ordered_loss_max / reference
        kappa = float(phase_rule.normalised_overlap(activation, MEMORY_CORRELATION))
        return cls(ordered_loss_max=fraction * zero_loss, jamming_correlation_min=kappa,
                   memory="normalised")

    def to_dict(self) -> dict[str, float | str]:
        return {"ordered_loss_max": self.ordered_loss_max,
                "jamming_correlation_min": self.jamming_correlation_min,
                "diverged_fraction_min": self.diverged_fraction_min,
                "memory": self.memory}


def _cell_medians(final_test_loss, feature_correlation, diverged):
    loss = np.asarray(final_test_loss, dtype=float)
    corr = np.asarray(feature_correlation, dtype=float)
    if loss.ndim < 1 or corr.shape != loss.shape:
        raise InputError(f"final_test_loss and feature_correlation must have the same shape "
                         f"(..., nR), got {loss.shape} and {corr.shape}")
    if loss.shape[-1] == 0:
        raise InputError(f"final_test_loss must hold at least one model per cell (nR >= 1), "
                         f"got shape {loss.shape}")
    div = (np.zeros(loss.shape, bool) if diverged is None
           else np.broadcast_to(np.asarray(diverged, dtype=bool), loss.shape))
    loss = np.where(div | ~np.isfinite(loss), np.inf, loss)
    corr = np.where(div, np.nan, corr)
    med_loss = np.median(loss, axis=-1)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med_corr = np.nanmedian(corr, axis=-1)
    return med_loss, med_corr, div.mean(axis=-1)


def classify_phases(final_test_loss, feature_correlation, diverged=None,
                    thresholds: PhaseThresholds | None = None) -> np.ndarray:
    """Phase label of each cell from ensemble medians; the rule is :class:`PhaseThresholds`.

    Parameters
    ----------
    final_test_loss : (..., nR)
        Final test loss per model in the paper's convention (2.6) (``phase_summary``'s
        ``'test_loss'``).
    feature_correlation : (..., nR)
        The memory statistic ``thresholds.memory`` names, per model: G(t_f, 0) (3.4)
        (``phase_summary``'s ``'feature_correlation'``) for ``'raw'``, the normalised overlap
        (``'normalised_overlap'``) for ``'normalised'``; :func:`classify_summary` picks it.
    diverged : (..., nR) bool, optional
    thresholds : PhaseThresholds, optional
        Default the paper's (tanh); :meth:`PhaseThresholds.for_activation` for other
        activations.

    Returns
    -------
    ndarray of str, shape (...): 'ordered', 'high-temperature', 'jamming' or 'diverged'.
    """
    th = PhaseThresholds() if thresholds is None else thresholds
    if not isinstance(th, PhaseThresholds):
        raise InputError(f"thresholds must be a PhaseThresholds, got {type(th).__name__}")
    med_loss, med_corr, div_frac = _cell_medians(final_test_loss, feature_correlation, diverged)
    labels = np.where(med_corr >= th.jamming_correlation_min, "jamming", "high-temperature")
    labels = np.where(med_loss <= th.ordered_loss_max, "ordered", labels)
    labels = np.where(div_frac >= th.diverged_fraction_min, "diverged", labels)
    return labels.astype("<U16")


def classify_summary(summary, thresholds: PhaseThresholds | None = None, *,
                     activation: str | None = None) -> np.ndarray:
    """:func:`classify_phases` on a :func:`phase_summary`, with the memory statistic the rule
    names.

    Parameters
    ----------
    summary : dict
        From :func:`phase_summary`.
    thresholds : PhaseThresholds, optional
        Default ``PhaseThresholds.for_activation(activation)``.
    activation : str, optional
        The run's activation (``result.config.activation``); required without ``thresholds``.
    """
    if thresholds is None:
        if activation is None:
            raise InputError("classify_summary needs thresholds or the run's activation")
        thresholds = PhaseThresholds.for_activation(activation)
    memory = ("feature_correlation" if thresholds.memory == "raw" else "normalised_overlap")
    return classify_phases(summary["test_loss"], summary[memory], summary["diverged"],
                           thresholds)


def phase_codes(labels) -> np.ndarray:
    """Integer code of each label: its index in :data:`PHASES` (for colour maps)."""
    labels = np.asarray(labels)
    codes = np.full(labels.shape, -1, dtype=np.int64)
    for i, name in enumerate(PHASES):
        codes[labels == name] = i
    if np.any(codes < 0):
        raise InputError(f"labels must be among {PHASES}, got {sorted(set(labels.ravel()))}")
    return codes


# ------------------------------------------------------------------------------------------------
# observables of a run
# ------------------------------------------------------------------------------------------------


def phase_summary(result, x_test=None) -> dict[str, np.ndarray]:
    """The per-model observables the phase analysis and the figures need, from a run.

    Parameters
    ----------
    result : dysonsgd.train.ensemble.EnsembleResult
    x_test : (P, n0), optional
        Default the release's 128 test inputs (numpy seed 42); a task's held-out test set
        for a run of a task (:mod:`dysonsgd.model.tasks`).

    Returns
    -------
    dict of arrays; per model (nT, nS, nR) unless stated:
        ``temperature`` (nT), ``sigma_w``, ``inv_sigma_w`` (nS), ``epochs`` (n_snap),
        ``test_loss`` (final, the paper's (2.6) with the 1/2), ``test_loss_release`` (no 1/2,
        as the release's figures), ``initial_test_loss``, ``zero_predictor_loss`` (the (2.6)
        loss of predicting 0, for relative losses), ``feature_correlation`` G(t_f, 0) (3.4),
        ``initial_feature_correlation`` G(0, 0), ``final_feature_correlation`` G(t_f, t_f),
        ``normalised_overlap`` G(t_f, 0) / sqrt(G(t_f, t_f) G(0, 0)), ``alignment`` (3.5) and
        ``alignment_release`` (divided by the number of test points, as the release),
        ``gradient_norm`` (3.3) at the end and ``initial_gradient_norm`` (full data, t = 0),
        ``rate`` (4.7) per epoch (NaN if the run has no snapshot after 0),
        ``preactivation_ratio`` rho (tanh only, else NaN), ``diverged`` (bool) and
        ``diverged_fraction`` (nT, nS).
    """
    ob = observables
    x = ob.result_test_inputs(result, x_test)
    act = result.config.activation
    y = ob.result_test_targets(result, x)  # the teacher's outputs, or a task's test labels
    n_snap = len(result.snapshot_epochs)
    grid = result.diverged.shape
    out: dict[str, np.ndarray] = {
        "temperature": np.asarray(result.temperature, dtype=float),
        "sigma_w": np.asarray(result.sigma_w, dtype=float),
        "inv_sigma_w": 1.0 / np.asarray(result.sigma_w, dtype=float),
        "epochs": np.asarray(result.snapshot_epochs),
        "test_loss": ob.result_test_loss(result, -1, x, convention="paper"),
        "test_loss_release": ob.result_test_loss(result, -1, x, convention="release"),
        "initial_test_loss": ob.result_test_loss(result, 0, x, convention="paper"),
        "zero_predictor_loss": np.broadcast_to(0.5 * np.mean(np.sum(y * y, axis=-1), axis=-1),
                                               grid).copy(),
        "feature_correlation": ob.result_feature_correlation(result, -1, 0, x),
        "initial_feature_correlation": ob.result_feature_correlation(result, 0, 0, x),
        "final_feature_correlation": ob.result_feature_correlation(result, -1, -1, x),
        "alignment": ob.result_alignment(result, -1, x),
        "alignment_release": ob.result_alignment(result, -1, x, release=True),
        "gradient_norm": ob.result_gradient_norm(result, -1),
        "initial_gradient_norm": ob.result_gradient_norm(result, 0),
        "rate": (ob.result_rate(result, -1) if n_snap > 1 and result.snapshot_epochs[-1] > 0
                 else np.full(grid, np.nan)),
        "preactivation_ratio": (measured_preactivation_ratio(result, x) if act == "tanh"
                                else np.full(grid, np.nan)),
        "diverged": np.asarray(result.diverged, dtype=bool),
    }
    out["diverged_fraction"] = out["diverged"].mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["normalised_overlap"] = out["feature_correlation"] / np.sqrt(
            out["final_feature_correlation"] * out["initial_feature_correlation"])
    return out
