"""ReLU in place of tanh: what the symmetry-breaking argument of section 2.3 becomes.

For phi = tanh the features are soft spins whose density (2.21) turns from one peak into two at
sigma_z^2 = sigma_c^2 = 1/2 (2.22), and the line sigma_z^2 = 1/2 separates the ordered phase
from the jamming (vanishing-gradient) phase. For phi = relu none of that has an analogue:

- the density of phi = relu(z), z ~ N(0, sigma_z^2), is an atom 1/2 at 0 plus a half-Gaussian;
  its potential on phi > 0 is V = phi^2 / (2 sigma_z^2), with curvature 1/sigma_z^2 > 0 for
  every sigma_z^2: a single well always, no critical variance (:func:`soft_spin_potential`,
  :func:`critical_variance` returns None);
- relu is positively homogeneous, relu(c z) = c relu(z) for c > 0, so phi / sigma_z has a law
  independent of sigma_z, and phi'(z) = step(z) is active with probability 1/2 at every
  sigma_z (:func:`gaussian_moments`): there is no saturation, hence no vanishing-gradient
  regime, at any sigma_W;
- for the paper's student (only W2 trained, W1 and W3 the teacher's), the SGD update (2.28) is
  homogeneous of degree one in (W2, teacher targets): training from c W2(0) on the targets of
  the teacher c W2* gives exactly c times the trajectory from W2(0) on those of W2*, c > 0
  (bit for bit when c is a power of 2, with the divergence threshold scaled by c^2). The
  1/sigma_W axis is therefore the teacher's amplitude relative to the initial network, and
  for sigma_W >> 1 the test loss scales as L(t) ~ sigma_W^2 ell(t), ell independent of
  sigma_W, and keeps decreasing with t: a crossover at the scale where the initial output
  matches the teacher's (sigma_W = 1 for the paper's teacher, :func:`initial_loss`), not a
  phase boundary.

What does bound the ordered region on the large-sigma_W side for ReLU is the release's
divergence rule: a model stops when a batch loss exceeds the threshold (100), and the expected
initial loss (2.6) grows as sigma_W^2 / 8 (:func:`initial_loss`), so models stop at the start
beyond :func:`divergence_line`, 1/sigma_W = 0.0350 (sigma_W = 28.6) for the paper's set-up.

The memory observable G(t_f, 0) (3.4) changes meaning too. For tanh, features that forget their
initialisation give G -> 0 (tanh is odd) and G(0, 0) <= 1. For relu, G(0, 0) = sigma_W^2 / 4
(:func:`feature_self_overlap`) grows without bound and forgetting does not give zero: with the
arc-cosine kernel (:func:`arc_cosine_kernel`), features whose pre-activations have correlation
c have the normalised overlap G(t, 0) / sqrt(G(t, t) G(0, 0)) = kappa(c)
(:func:`normalised_overlap`), from 1/pi (:data:`ERASED_OVERLAP`, c = 0: memory erased, and the
overlap of a learnt teacher with an independent W2(0)) to 1 (c = 1: W2 kept);
:func:`overlap_correlation` inverts it. The tanh threshold on G(t_f, 0)
(:data:`~dysonsgd.theory.boundaries.CRITICAL_FEATURE_CORRELATION`, 0.274) has no ReLU
counterpart; the normalised overlap against 1/pi is the measurement that replaces it.

Every expectation is over the teacher (W1, W2* ~ N(0, 1/n), W3), W2(0) ~ N(0, sigma_W^2/n1)
(2.11) and inputs with E[x x^T] = input_variance I (2.15); they hold for any widths (the
pre-activations are exactly Gaussian given the layer below, and relu^2 is homogeneous, so the
scale mixture of section 2.3 averages linearly).

Contents
--------
soft_spin_potential, critical_variance, gaussian_moments, arc_cosine_kernel,
initial_loss_expectation
    sympy derivations (none returns a hard-coded answer).
ERASED_OVERLAP, PREACTIVATION_RATIO, normalised_overlap, overlap_correlation,
preactivation_ratio, feature_self_overlap, initial_loss, divergence_line
    Their numeric closed forms.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp

from dysonsgd._checks import InputError, check_array, check_positive

__all__ = [
    "ERASED_OVERLAP",
    "PREACTIVATION_RATIO",
    "arc_cosine_kernel",
    "critical_variance",
    "divergence_line",
    "feature_self_overlap",
    "gaussian_moments",
    "initial_loss",
    "initial_loss_expectation",
    "normalised_overlap",
    "overlap_correlation",
    "preactivation_ratio",
    "soft_spin_potential",
]

#: symbols of the derivations
phi = sp.Symbol("phi", positive=True)
z = sp.Symbol("z", real=True)
sigma_z2 = sp.Symbol("sigma_z2", positive=True)
sigma_u = sp.Symbol("sigma_u", positive=True)
sigma_v = sp.Symbol("sigma_v", positive=True)
theta = sp.Symbol("theta", positive=True)  # arccos of the correlation, in (0, pi)
sigma_w = sp.Symbol("sigma_w", positive=True)
input_variance = sp.Symbol("v_x", positive=True)

#: normalised feature overlap of relu features with uncorrelated pre-activations: 1/pi
ERASED_OVERLAP = 1.0 / math.pi
#: rho = sigma_z^2 / sigma_W^2 of the student's last hidden layer for relu and unit inputs: 1/2
PREACTIVATION_RATIO = 0.5


# ------------------------------------------------------------------------------------------------
# symbolic: the soft-spin picture (2.19)-(2.22) for relu
# ------------------------------------------------------------------------------------------------


def _gaussian(var: sp.Expr, s2: sp.Expr) -> sp.Expr:
    return sp.exp(-(var**2) / (2 * s2)) / sp.sqrt(2 * sp.pi * s2)


def soft_spin_potential() -> tuple[sp.Expr, sp.Expr]:
    """V(phi) on phi > 0 and the atom at phi = 0 for phi = relu(z), z ~ N(0, sigma_z2), cf. (2.21).

    On phi > 0, z(phi) = phi and |dz/dphi| = 1, so p(phi) = p_z(phi) and
    V = -log p + const = phi^2 / (2 sigma_z2); the rest of the mass, P(z <= 0), sits at 0.

    Returns
    -------
    (V, atom) : sympy expressions, V with V(0+) = 0 and atom = 1/2.
    """
    z_of_phi = phi
    log_density = -(z_of_phi**2) / (2 * sigma_z2) + sp.log(sp.diff(z_of_phi, phi))
    potential = sp.simplify(-log_density)
    atom = sp.integrate(_gaussian(z, sigma_z2), (z, -sp.oo, 0))
    return sp.simplify(potential - potential.subs(phi, 0)), sp.simplify(atom)


def critical_variance() -> sp.Expr | None:
    """sigma_c^2 for relu: where V''(0+) changes sign, as (2.22) does for tanh; None: never.

    V''(0+) = 1/sigma_z2 from :func:`soft_spin_potential` is positive for every sigma_z2 > 0;
    ``sympy.solve`` finds no root, and the extremum condition V'(phi) = phi / sigma_z2 = 0 has
    no solution on phi > 0: one well at every variance.
    """
    potential, _ = soft_spin_potential()
    curvature = sp.diff(potential, phi, 2).subs(phi, 0)
    roots = sp.solve(sp.Eq(curvature, 0), sigma_z2)
    return sp.nsimplify(roots[0]) if roots else None


def gaussian_moments() -> dict[str, sp.Expr]:
    """Gaussian moments of relu and its derivative for z ~ N(0, sigma_z2), by integration.

    Returns
    -------
    dict
        ``'mean'`` E[relu(z)] = sigma/sqrt(2 pi); ``'second'`` E[relu(z)^2] = sigma_z2/2 (the
        self-overlap G(0, 0) (3.4) per node); ``'slope'`` E[step(z)] = E[step(z)^2] = 1/2, the
        active fraction, independent of sigma_z2 (for tanh E[tanh'(z)] -> 0 as sigma_z2 grows:
        the vanishing-gradient regime).
    """
    density = _gaussian(z, sigma_z2)
    mean = sp.integrate(z * density, (z, 0, sp.oo))
    second = sp.integrate(z**2 * density, (z, 0, sp.oo))
    slope = sp.integrate(density, (z, 0, sp.oo))
    return {"mean": sp.simplify(mean), "second": sp.simplify(second), "slope": sp.simplify(slope)}


def arc_cosine_kernel() -> sp.Expr:
    """E[relu(u) relu(v)] for centred jointly Gaussian u, v (the arc-cosine kernel of degree 1).

    With u = sigma_u xi_1, v = sigma_v (cos(theta) xi_1 + sin(theta) xi_2), xi standard normal
    and cos(theta) the correlation, polar coordinates xi = r (cos a, sin a) make both factors
    positive for a in (theta - pi/2, pi/2); the radial integral of r^3 e^{-r^2/2} / (2 pi) and
    the angular one of cos(a) cos(a - theta) give

        sigma_u sigma_v (sin(theta) + (pi - theta) cos(theta)) / (2 pi).

    This is the feature correlation G (3.4) per node of two relu layers whose pre-activations
    have correlation cos(theta).
    """
    r = sp.Symbol("r", positive=True)
    a = sp.Symbol("a", real=True)
    radial = sp.integrate(r**3 * sp.exp(-(r**2) / 2), (r, 0, sp.oo)) / (2 * sp.pi)
    angular = sp.integrate(sp.cos(a) * sp.cos(a - theta), (a, theta - sp.pi / 2, sp.pi / 2))
    return sp.simplify(sigma_u * sigma_v * radial * sp.expand_trig(angular))


def initial_loss_expectation() -> sp.Expr:
    """E[L(0)] of (2.6) for the relu student against its relu teacher, any widths.

    Given the layer-1 features phi1 of a point (q = |phi1|^2 / n1), the student's and the
    teacher's pre-activations of node i are independent N(0, sigma_W^2 q) and N(0, q); with
    W3 ~ N(0, 1/n2) the output error has E[(yhat - y)^2 | q] = sum_i (1/n2) (E relu(z_s)^2 +
    E relu(z_t)^2 - 2 E relu(z_s) E relu(z_t)), linear in q, and E[q] = E[relu(z1)^2] =
    v_x / 2 (:func:`gaussian_moments` at variance v_x). Halved as (2.6):

        v_x (sigma_W^2 - 2 sigma_W / pi + 1) / 8.
    """
    q = sp.Symbol("q", positive=True)
    m = gaussian_moments()
    mean_s = m["mean"].subs(sigma_z2, sigma_w**2 * q)
    mean_t = m["mean"].subs(sigma_z2, q)
    per_node = (m["second"].subs(sigma_z2, sigma_w**2 * q) + m["second"].subs(sigma_z2, q)
                - 2 * mean_s * mean_t)
    mean_q = m["second"].subs(sigma_z2, input_variance)
    linear = sp.Poly(sp.expand(per_node), q)
    if linear.degree() != 1 or linear.coeff_monomial(1) != 0:  # pragma: no cover - derivation
        raise ArithmeticError("the output error is not linear in q")
    return sp.simplify(linear.coeff_monomial(q) * mean_q / 2)


# ------------------------------------------------------------------------------------------------
# numeric closed forms
# ------------------------------------------------------------------------------------------------


def normalised_overlap(correlation) -> np.ndarray:
    """kappa(c) = (sqrt(1 - c^2) + c (pi - arccos c)) / pi: the normalised relu overlap.

    ``G(t, 0) / sqrt(G(t, t) G(0, 0))`` (3.4) of relu features whose pre-activations are jointly
    Gaussian with correlation c (:func:`arc_cosine_kernel` over its c = 1 value); increasing,
    kappa(-1) = 0, kappa(0) = 1/pi, kappa(1) = 1.

    Parameters
    ----------
    correlation : array_like in [-1, 1]
    """
    c = check_array("correlation", correlation, min_ndim=0)
    if np.any((c < -1) | (c > 1)):
        raise InputError(f"correlation must lie in [-1, 1], got {correlation!r}")
    return (np.sqrt(1.0 - c * c) + c * (math.pi - np.arccos(c))) / math.pi


def overlap_correlation(overlap) -> np.ndarray:
    """The pre-activation correlation c with :func:`normalised_overlap` (c) = ``overlap``.

    Bisection to machine precision (kappa is increasing on [-1, 1]).

    Parameters
    ----------
    overlap : array_like in [0, 1]
        A measured normalised overlap G(t, 0) / sqrt(G(t, t) G(0, 0)) of relu features.

    Returns
    -------
    ndarray of c in [-1, 1], shape of ``overlap``: 0 at 1/pi (memory erased), 1 at 1.
    """
    g = check_array("overlap", overlap, min_ndim=0)
    if np.any((g < 0) | (g > 1)):
        raise InputError(f"overlap must lie in [0, 1], got {overlap!r}")
    lo, hi = np.full(g.shape, -1.0), np.full(g.shape, 1.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = normalised_overlap(mid) > g
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    return 0.5 * (lo + hi)


def preactivation_ratio(input_variance: float = 1.0) -> float:
    """rho = sigma_z^2 / sigma_W^2 of the student's last hidden layer for relu: v_x / 2.

    sigma_z^2 = sigma_W^2 E[relu(z1)^2] (2.13) and E[relu(z1)^2] = E[|x|^2 / n0] / 2 for any
    number of inputs (relu^2 is homogeneous, so the scale mixture over |x|^2 of section 2.3
    averages linearly): the Gaussian assumption (2.19) and the input average agree, unlike
    tanh's 0.394 and 0.344.
    """
    return check_positive("input_variance", input_variance) / 2.0


def feature_self_overlap(sigma_w, input_variance: float = 1.0) -> np.ndarray:
    """G(0, 0) (3.4) of the relu student at initialisation: sigma_W^2 v_x / 4.

    Unbounded in sigma_W (tanh's is at most 1, (2.17)), so a fixed threshold on G(t_f, 0)
    selects sigma_W rather than memory.
    """
    s = np.asarray(check_positive("sigma_w", sigma_w), dtype=float)
    return s * s * preactivation_ratio(input_variance) / 2.0


def initial_loss(sigma_w, input_variance: float = 1.0, convention: str = "paper") -> np.ndarray:
    """Expected initial loss of the relu student, :func:`initial_loss_expectation` numerically.

    ``'paper'``: (2.6), v_x (sigma_W^2 - 2 sigma_W/pi + 1) / 8 (the training loss the
    divergence rule reads); ``'release'``: without the 1/2 (the figures' test loss). The
    zero predictor's loss is the sigma_W -> 0 limit, v_x / 8; the student's initial output has
    the teacher's variance at sigma_W = 1, beyond which the sigma_W^2 term dominates.
    """
    if convention not in ("paper", "release"):
        raise InputError(f"convention must be 'paper' or 'release', got {convention!r}")
    s = np.asarray(check_positive("sigma_w", sigma_w), dtype=float)
    v = check_positive("input_variance", input_variance)
    loss = v * (s * s - 2.0 * s / math.pi + 1.0) / 4.0
    return loss / 2.0 if convention == "paper" else loss


def divergence_line(threshold: float = 100.0, input_variance: float = 1.0) -> float:
    """1/sigma_W where the expected initial loss (2.6) reaches the divergence threshold.

    Solves v_x (sigma^2 - 2 sigma/pi + 1) / 8 = threshold for the larger root,
    sigma = 1/pi + sqrt(1/pi^2 - 1 + 8 threshold / v_x); 0.0350 (sigma_W = 28.6) for the
    release's threshold 100. Beyond it (smaller 1/sigma_W) relu models start with batch losses
    above the threshold and are stopped by the release's rule at once.

    Raises
    ------
    InputError
        If ``threshold`` is below the smallest expected loss, v_x (1 - 1/pi^2) / 8.
    """
    thr = check_positive("threshold", threshold)
    v = check_positive("input_variance", input_variance)
    floor = v * (1.0 - 1.0 / math.pi**2) / 8.0
    if thr <= floor:
        raise InputError(f"threshold must exceed the smallest expected initial loss {floor:.4g} "
                         f"(input_variance {v:g}), got {threshold!r}")
    s = 1.0 / math.pi + math.sqrt(1.0 / math.pi**2 - 1.0 + 8.0 * thr / v)
    return 1.0 / s
