"""The theories ``dysonsgd validate`` forecasts with, and the controls that must fail.

A :class:`Theory` is an eigenvalue SDE with the measured coefficients, optionally changed: the
default is the complete equation (issue 11; :class:`~dysonsgd.sde.complete.EigenvalueSDE`) as
measured. Changing one ingredient gives a deliberately wrong theory, a *negative control*: a
check earns its place only if it FAILs the controls that target it. The *positive control*
(:data:`POSITIVE_CONTROL`) keeps the theory and replaces the observations by paths simulated
from the theory itself; every check must then PASS at about 1 - alpha.

Each change acts on :class:`~dysonsgd.analysis.predict.MeasuredCoefficients`, so every forecast
that integrates the eigenvalue SDE from measured coefficients (replay, cross-fitted) takes it:

``temperature_scale``
    T -> c T in the equation (its noise, Ito drift and Coulomb term; the finite-lr terms keep
    the run's lr).
``drift_sign = -1``
    K -> -K (the complete equation: the mean gradient g -> -g, so K_i = -2 s_i g_ii flips).
``coulomb = False``
    No repulsion between levels: V_ij = 0 for i != j (the complete equation: Var(G_ij),
    Cov(G_ij, G_ji) and the finite-lr P_ij set to 0), the diagonal noise kept.
``noise = False``
    V = 0: no gradient noise at all (the complete equation: Q, Sigma, Var(G_ij), Cov(G_ij,
    G_ji) set to 0), which also removes the Ito and Coulomb terms.
``variant``
    The equation: 'complete', 'continuum' or 'paper' ((4.3) as printed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dysonsgd._checks import InputError
from dysonsgd.analysis.predict import VARIANTS, MeasuredCoefficients

__all__ = [
    "DEFAULT_THEORY",
    "NEGATIVE_CONTROLS",
    "POSITIVE_CONTROL",
    "Control",
    "Theory",
]


@dataclass(frozen=True)
class Theory:
    """An eigenvalue SDE with measured coefficients, possibly changed (module docstring).

    Parameters
    ----------
    name : str
        How the report names it.
    variant : {'complete', 'continuum', 'paper'}
    temperature_scale : float > 0
    drift_sign : {1, -1}
    coulomb, noise : bool
    """

    name: str = "complete"
    variant: str = "complete"
    temperature_scale: float = 1.0
    drift_sign: int = 1
    coulomb: bool = True
    noise: bool = True

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise InputError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not (np.isfinite(self.temperature_scale) and self.temperature_scale > 0):
            raise InputError(f"temperature_scale must be finite and > 0, got "
                             f"{self.temperature_scale}")
        if self.drift_sign not in (1, -1):
            raise InputError(f"drift_sign must be 1 or -1, got {self.drift_sign}")

    @property
    def changed(self) -> bool:
        """Whether anything but the variant differs from the measured theory."""
        return (self.temperature_scale != 1.0 or self.drift_sign != 1 or not self.coulomb
                or not self.noise)

    def apply(self, coeffs: MeasuredCoefficients) -> MeasuredCoefficients:
        """The coefficients this theory integrates: ``coeffs`` with the changes made."""
        if not self.changed:
            return coeffs
        drift, noise = np.array(coeffs.drift, dtype=float), np.array(coeffs.noise, dtype=float)
        k_s, v_s, d_s = coeffs.k_s, coeffs.v_s, coeffs.d_s
        moments = coeffs.moments
        n = noise.shape[-1]
        off = ~np.eye(n, dtype=bool)
        if self.drift_sign == -1:
            drift, k_s = -drift, -k_s
            if moments is not None:
                moments = replace(moments, mean=-moments.mean)
        if not self.coulomb:
            noise = np.where(off, 0.0, noise)
            v_s = np.zeros_like(v_s)
            if moments is not None:
                zero = np.zeros_like(moments.variance)
                moments = replace(moments, variance=zero, cross=zero,
                                  mean=np.where(off, 0.0, moments.mean))
        if not self.noise:
            noise = np.zeros_like(noise)
            v_s, d_s = np.zeros_like(v_s), np.zeros_like(d_s)
            if moments is not None:
                moments = replace(moments, ito=np.zeros_like(moments.ito),
                                  diagonal_covariance=np.zeros_like(
                                      moments.diagonal_covariance),
                                  variance=np.zeros_like(moments.variance),
                                  cross=np.zeros_like(moments.cross))
        return replace(coeffs, temperature=coeffs.temperature * self.temperature_scale,
                       drift=drift, noise=noise, k_s=k_s, v_s=v_s, d_s=d_s, moments=moments)


#: the theory validate tests unless told otherwise
DEFAULT_THEORY = Theory()


@dataclass(frozen=True)
class Control:
    """A negative control: a wrong theory and the checks that must FAIL it (declared here,
    before any run, from what the change does)."""

    theory: Theory
    targets: tuple[str, ...]
    reason: str


def _wrong(name: str, **changes) -> Theory:
    return Theory(name=name, **changes)


#: the negative controls of every validation, with the checks each must fail
NEGATIVE_CONTROLS: tuple[Control, ...] = (
    Control(_wrong("T x 4", temperature_scale=4.0),
            ("calibration_spacing", "calibration_levels", "calibration_sde", "spacing_mean"),
            "four times the noise: the paths spread too far and S grows too fast"),
    Control(_wrong("T / 4", temperature_scale=0.25),
            ("calibration_spacing", "calibration_levels", "calibration_sde"),
            "a quarter of the noise: the paths are too narrow, the observations fall outside"),
    # not calibration_levels: the ranks leave out the paths that broke when their levels
    # crossed, which is what positivity counts (declared so after the first run, which found
    # the ranks of the surviving paths calibrated in 11 of 12 (cell, seed) pairs)
    Control(_wrong("no Coulomb term", coulomb=False), ("positivity", "spacing_mean"),
            "without level repulsion the levels cross and S shrinks"),
    Control(_wrong("V = 0", noise=False),
            ("calibration_spacing", "calibration_levels", "calibration_sde"),
            "no noise: every path of a model is the same deterministic curve"),
    Control(_wrong("K sign-flipped", drift_sign=-1),
            ("calibration_spacing", "calibration_levels", "calibration_sde", "spacing_mean"),
            "the drift pushes the levels the wrong way"),
    Control(_wrong("printed (4.3)", variant="paper"), ("positivity",),
            "(4.3) as printed has no term keeping X = W W^T positive"),
)

#: the positive control's name: the observations replaced by paths of the default theory
POSITIVE_CONTROL = "simulated from the theory"
