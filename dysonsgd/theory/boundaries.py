"""Phase boundaries in closed form: the symmetry-breaking line and the signal-to-noise line.

symmetry_breaking_line, critical_feature_correlation, preactivation_ratio_for_inputs
    The jamming / ordered boundary from the soft-spin argument of section 2.3: the feature
    potential (2.22) turns into a double well at sigma_z^2 = sigma_c^2 = 1/2. The paper assumes
    sigma_z^2 ~ sigma_W^2 and draws the line at 1/sigma_W = sqrt(2). For the paper's student,
    sigma_z^2 = rho sigma_W^2 with rho = E[tanh(z1)^2] the mean square of the teacher's first
    layer features (independent of sigma_W), so the refined line is 1/sigma_W = sqrt(2 rho).
    rho = 0.344 for three Gaussian inputs (quadrature over the chi-square law of |x|^2),
    0.394 under the Gaussian approximation (2.19); the assumption overestimates sigma_z^2 by a
    factor 1/rho = 2.9 and puts the line a factor 1.71 (0.77 octaves of 1/sigma_W) too far right.
signal_to_noise_threshold, convergence_criterion, sigma_levels
    The high-temperature boundary (4.15) per model and the 1, 2, 3 sigma contour levels
    (0.68, 0.95, 0.997) of the converged fraction, as in figure 8.

Pure functions of numbers and arrays (theory layer): measured ratios, converged fractions per
cell and phase labels of a run are in :mod:`dysonsgd.analysis.phase`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dysonsgd._checks import InputError, check_array, check_int, check_positive
from dysonsgd.theory import disorder
from dysonsgd.theory.paper import PAPER_WIDTHS

__all__ = [
    "CONVENTIONS",
    "CRITICAL_FEATURE_CORRELATION",
    "SymmetryBreakingLine",
    "convergence_criterion",
    "critical_feature_correlation",
    "preactivation_ratio_for_inputs",
    "sigma_levels",
    "signal_to_noise_threshold",
    "symmetry_breaking_line",
]

#: sign conventions of (4.15): the paper's equations, or the release notebook's
CONVENTIONS = ("paper", "release")



# ------------------------------------------------------------------------------------------------
# symmetry breaking, section 2.3
# ------------------------------------------------------------------------------------------------


def critical_feature_correlation(sigma_z2: float = 0.5, quadrature_order: int = 101) -> float:
    """``E[tanh(z)^2]`` for ``z ~ N(0, sigma_z2)``: the self-overlap G(0, 0) of features (3.4).

    At the critical variance sigma_c^2 = 1/2 this is 0.2737: a cell whose features at the end
    of training still overlap their initial values by at least this much keeps the memory of
    an initialisation on the double-well side of the symmetry-breaking line.
    """
    sigma_z2 = check_positive("sigma_z2", sigma_z2)
    order = check_int("quadrature_order", quadrature_order, minimum=2)
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    return float(np.sum(weights * np.tanh(math.sqrt(sigma_z2) * nodes) ** 2)
                 / math.sqrt(2.0 * math.pi))


#: G(0, 0) of features at the critical variance sigma_c^2 = 1/2 (0.2737)
CRITICAL_FEATURE_CORRELATION = critical_feature_correlation(0.5)


@dataclass(frozen=True)
class SymmetryBreakingLine:
    """Where sigma_z^2 of the last hidden layer crosses sigma_c^2 = 1/2, per estimate of rho.

    Attributes
    ----------
    sigma_c2 : float
        1/2, the critical pre-activation variance (2.22).
    ratio : dict
        rho = sigma_z^2 / sigma_W^2 for each estimate: ``'paper'`` (1: the assumption
        sigma_z^2 ~ sigma_W^2), ``'gaussian'`` (wide-network recursion with Gaussian
        pre-activations, (2.13)-(2.16)), ``'input_average'`` (the same recursion averaged over
        the chi-square law of |x|^2 / n0 for n0 Gaussian inputs: exact for the paper's student
        in expectation over teachers), and ``'measured'`` when a measured ratio was given.
    inv_sigma_w : dict
        The line 1/sigma_W = sqrt(2 rho) for each estimate.
    """

    sigma_c2: float
    ratio: dict[str, float]
    inv_sigma_w: dict[str, float]

    def sigma_z2(self, sigma_w, estimate: str = "input_average") -> np.ndarray:
        """sigma_z^2 = rho sigma_W^2 at initialisation for the chosen estimate."""
        if estimate not in self.ratio:
            raise InputError(f"estimate must be one of {sorted(self.ratio)}, got {estimate!r}")
        return self.ratio[estimate] * np.asarray(check_positive("sigma_w", sigma_w)) ** 2

    def assumption_error(self, estimate: str = "input_average") -> dict[str, float]:
        """How far sigma_z^2 ~ sigma_W^2 is off: variance factor, line factor, octaves."""
        rho = self.ratio[estimate]
        return {"variance_factor": 1.0 / rho, "line_factor": 1.0 / math.sqrt(rho),
                "octaves": 0.5 * math.log2(1.0 / rho)}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sigma_c2": self.sigma_c2, "ratio": dict(self.ratio),
                               "inv_sigma_w": dict(self.inv_sigma_w)}
        out["assumption_error"] = {k: self.assumption_error(k) for k in self.ratio
                                   if k != "paper"}
        return out


def symmetry_breaking_line(widths=PAPER_WIDTHS, measured_ratio: float | None = None,
                           input_variance: float = 1.0) -> SymmetryBreakingLine:
    """The jamming / ordered boundary sigma_z^2 = sigma_c^2 = 1/2 (section 2.3, figure 9).

    The student's last hidden pre-activations are z = W2 phi(W1 x) with the teacher's W1
    (variance 1/n0, (3.1)) and W2(0) ~ N(0, sigma_W^2/n1) (2.11); by (2.13)
    sigma_z^2 = sigma_W^2 E[phi(z1)^2] = rho sigma_W^2 with rho independent of sigma_W. The
    line is where rho sigma_W^2 = 1/2, i.e. ``1/sigma_W = sqrt(2 rho)``.

    Parameters
    ----------
    widths : (n0, n1, n2, n3)
        Only n0 matters (the input average over |x|^2 / n0).
    measured_ratio : float, optional
        rho from a run or a Monte Carlo (:func:`measured_preactivation_ratio`,
        :func:`preactivation_ratio_monte_carlo`), added as estimate ``'measured'``.
    input_variance : float
        Variance of each input component (1 in the paper).

    Returns
    -------
    SymmetryBreakingLine
        ``inv_sigma_w['paper'] = sqrt(2)``; for the paper's widths ``'gaussian'`` 0.888 and
        ``'input_average'`` 0.829.
    """
    widths = tuple(widths)
    if len(widths) != 4:
        raise InputError(f"widths must be (n0, n1, n2, n3), got {widths!r}")
    n0 = check_int("widths[0]", widths[0])
    sigma_c2 = disorder.critical_variance()
    ratio = {
        "paper": 1.0,
        "gaussian": float(disorder.preactivation_variances(
            [1.0, 1.0], input_variance=input_variance)[-1]),
        "input_average": float(disorder.preactivation_variances(
            [1.0, 1.0], input_variance=input_variance, input_dim=n0)[-1]),
    }
    if measured_ratio is not None:
        ratio["measured"] = check_positive("measured_ratio", measured_ratio)
    line = {k: math.sqrt(rho / sigma_c2) for k, rho in ratio.items()}
    return SymmetryBreakingLine(sigma_c2, ratio, line)



def preactivation_ratio_for_inputs(x, quadrature_order: int = 101) -> float:
    """Expected rho over teachers and W2(0) for *fixed* inputs x, (2.13) with (3.1).

    For fixed x, z1 = W1 x ~ N(0, |x|^2 / n0) over the teacher's W1 ~ N(0, 1/n0), so
    rho = mean over points of E[tanh(z1)^2] (Gauss-Hermite quadrature per point). This is the
    oracle for :func:`measured_preactivation_ratio` on a run's shared test inputs: the
    release's 128 test points have mean |x|^2 / 3 = 0.908 and give rho = 0.323, below the
    input-distribution average 0.344.

    Parameters
    ----------
    x : (P, n0)
    """
    x = check_array("x", x, min_ndim=2)
    order = check_int("quadrature_order", quadrature_order, minimum=2)
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    q = np.sum(x * x, axis=-1) / x.shape[-1]
    vals = np.tanh(np.sqrt(q)[..., None] * nodes) ** 2 @ weights / math.sqrt(2.0 * math.pi)
    return float(np.mean(vals))



# ------------------------------------------------------------------------------------------------
# signal to noise, (4.10)-(4.15)
# ------------------------------------------------------------------------------------------------


def signal_to_noise_threshold(temperature, sigma_w, widths=PAPER_WIDTHS) -> np.ndarray:
    """The left-hand side of (4.15), ``(n2 - 1) T / (4 sqrt(n2/n1) sigma_W^2)``.

    It is ``T / S_0`` with ``S_0 = 4 sigma_W^2 sqrt(r) / (n2 - 1)`` the Marchenko-Pastur bound
    (4.14) on the initial mean spacing (:func:`dysonsgd.theory.rmt.initial_spacing_bound`).
    Broadcasts ``temperature`` against ``sigma_w``.
    """
    temperature = np.asarray(check_positive("temperature", temperature), dtype=float)
    sigma_w = np.asarray(check_positive("sigma_w", sigma_w), dtype=float)
    n1, n2 = check_int("widths[1]", widths[1]), check_int("widths[2]", widths[2], minimum=2)
    return (n2 - 1) * temperature / (4.0 * math.sqrt(n2 / n1) * sigma_w**2)


def convergence_criterion(k_s, v_s, temperature, sigma_w, widths=PAPER_WIDTHS,
                          convention: str = "paper") -> np.ndarray:
    """Per model: does the mean level spacing converge by (4.15)?

    Parameters
    ----------
    k_s, v_s : array_like, broadcastable to [nT, nS, nR]
        K_S and V_S of (B.7)/(B.9) at the end of training (e.g.
        :func:`dysonsgd.measure.gradstats.measure` at the last snapshot: ``k_s, v_s`` for
        ``convention='paper'``, ``k_s_release, v_s_release`` for ``'release'``).
    temperature, sigma_w : array_like
        T and sigma_W of each model (e.g. ``T[:, None, None]``, ``sigma_W[None, :, None]``).
    widths : (n0, n1, n2, n3)
    convention : {'paper', 'release'}
        ``'paper'``: K = -E[Delta^X] is the drift of X (4.4), so K_S < 0 is a restoring force
        near a minimum, and the model converges when the deterministic force (4.9) at the
        initial spacing bound S_0 of (4.14) is not positive, ``K_S + V_S T / S_0 <= 0``; for
        V_S > 0 this is the paper's ``-K_S / V_S >= (n2 - 1) T / (4 sqrt(r) sigma_W^2)``
        (4.13)/(4.15). ``'release'``: the notebook's test ``K_S / V_S >= (n2 - 1) T / (4
        sqrt(r) sigma_W^2)`` with its K_S = (|K_NN| - |K_11|)/(N - 1) built from absolute
        values (:func:`dysonsgd.measure.gradstats.spacing_coefficients_release`).

    Returns
    -------
    bool ndarray of the broadcast shape; NaN inputs give False.
    """
    if convention not in CONVENTIONS:
        raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    k_s = np.asarray(k_s, dtype=float)
    v_s = np.asarray(v_s, dtype=float)
    lhs = signal_to_noise_threshold(temperature, sigma_w, widths)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if convention == "paper":
            out = k_s + v_s * lhs <= 0.0
        else:
            out = k_s / v_s >= lhs
    return np.asarray(out & np.isfinite(k_s) & np.isfinite(v_s))



def sigma_levels() -> tuple[float, float, float]:
    """Converged fractions of the 1, 2 and 3 sigma lines of figure 8: (0.68, 0.95, 0.997)."""
    return (0.68, 0.95, 0.997)
