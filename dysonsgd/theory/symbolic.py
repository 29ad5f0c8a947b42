"""Symbolic derivations (sympy) behind the formulas of sections 2 and 4 and appendix B.

Every function *derives* its result from a starting expression and returns sympy objects; none
returns a hard-coded answer. The numeric modules (:mod:`dysonsgd.theory.rmt`,
:mod:`dysonsgd.theory.disorder`) implement the closed forms, and the tests compare the two through
:func:`sympy.lambdify`. The notebooks in ``theory/`` walk through the same derivations.

Contents
--------
soft_spin_potential, potential_series, critical_variance, extremum_condition
    Section 2.3: the potential of (2.21), its expansion (2.22), sigma_c^2 = 1/2 from the
    curvature at phi = 0 and the extremum condition phi = tanh(2 sigma_z^2 phi).
mse_expansion
    Section 2.1: the MSE (2.6) rewritten as the disordered Hamiltonian (2.7) with J, h, C (2.8).
level_spacing_equation
    Appendix B: the equation for S = (x_N - x_1)/(N - 1) under the ansatz (B.5), giving K_S,
    V_S, D_S of (B.7)-(B.9).
spacing_stationary_density
    The stationary solution of the Fokker-Planck equation of the spacing SDE (4.8).
marchenko_pastur_moments, marchenko_pastur_density
    The Marchenko-Pastur law (4.2) from its Stieltjes-transform equation.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from dysonsgd._checks import check_int

__all__ = [
    "HamiltonianForm",
    "SpacingEquation",
    "critical_variance",
    "extremum_condition",
    "level_spacing_equation",
    "marchenko_pastur_density",
    "marchenko_pastur_moments",
    "mse_expansion",
    "potential_series",
    "soft_spin_potential",
    "spacing_stationary_density",
]

#: the symbols shared by the soft-spin derivations
phi = sp.Symbol("phi", real=True)
sigma_z2 = sp.Symbol("sigma_z2", positive=True)
#: temperature T = lr / batch size and the mean level spacing S
T = sp.Symbol("T", positive=True)
S = sp.Symbol("S", positive=True)
#: Marchenko-Pastur variables
x = sp.Symbol("x", positive=True)
ratio = sp.Symbol("r", positive=True)
sigma2 = sp.Symbol("sigma2", positive=True)


# --------------------------------------------------------------------------------------------
# Soft spins, section 2.3
# --------------------------------------------------------------------------------------------


def soft_spin_potential() -> sp.Expr:
    """V(phi) from the change of variables phi = tanh(z), z ~ N(0, sigma_z2), eq. (2.21).

    p(phi) = p_z(z(phi)) |dz/dphi| with z(phi) = atanh(phi); V = -log p up to a constant, so
    V = atanh(phi)^2/(2 sigma_z2) - log|dz/dphi| = atanh(phi)^2/(2 sigma_z2) + log(1 - phi^2).
    """
    z = sp.atanh(phi)
    log_density = -(z**2) / (2 * sigma_z2) + sp.log(sp.diff(z, phi))
    log_density = sp.simplify(log_density)
    potential = -log_density
    return sp.simplify(potential - potential.subs(phi, 0))


def potential_series(order: int = 4) -> dict[int, sp.Expr]:
    """Taylor coefficients of V(phi) about phi = 0 up to phi**order, eq. (2.22).

    Returns
    -------
    dict
        power -> coefficient (a function of ``sigma_z2``); odd powers are absent (they vanish).
    """
    order = check_int("order", order, minimum=2)
    series = sp.series(soft_spin_potential(), phi, 0, order + 1).removeO()
    poly = sp.Poly(sp.expand(series), phi)
    coeffs = {int(m[0]): sp.simplify(c) for m, c in zip(poly.monoms(), poly.coeffs(), strict=True)}
    return dict(sorted(coeffs.items()))


def critical_variance() -> sp.Expr:
    """sigma_c^2: where the curvature of V at phi = 0 changes sign (single to double well).

    V''(0) = 2 c_2(sigma_z2) with c_2 from :func:`potential_series`; solving c_2 = 0 gives 1/2.
    """
    curvature = sp.diff(soft_spin_potential(), phi, 2).subs(phi, 0)
    (root,) = sp.solve(sp.Eq(curvature, 0), sigma_z2)
    return sp.nsimplify(root)


def extremum_condition() -> sp.Expr:
    """F(phi) whose zeros are the extrema of V: F = atanh(phi) - 2 sigma_z2 phi.

    Obtained from V'(phi) by removing the positive factor 1/(sigma_z2 (1 - phi^2)) (|phi| < 1),
    so the extrema solve phi = tanh(2 sigma_z2 phi).
    """
    dv = sp.diff(soft_spin_potential(), phi)
    return sp.simplify(sp.factor(sp.together(dv)) * sigma_z2 * (1 - phi**2))


# --------------------------------------------------------------------------------------------
# The loss as a disordered Hamiltonian, section 2.1
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HamiltonianForm:
    """Symbolic MSE (2.6) and its disordered-system form (2.7) for small explicit widths.

    Attributes
    ----------
    w, features, targets : sympy.Matrix
        W^(L) (n_out x n_hidden), phi (n_hidden x n_data), y (n_out x n_data).
    mse : sympy.Expr
        Eq. (2.6).
    coupling, field : sympy.Matrix
        J (n_hidden x n_hidden) and h (n_hidden x n_data) of eq. (2.8).
    constant : sympy.Expr
        C of eq. (2.8).
    hamiltonian : sympy.Expr
        The last line of (2.7), including C.
    """

    w: sp.Matrix
    features: sp.Matrix
    targets: sp.Matrix
    mse: sp.Expr
    coupling: sp.Matrix
    field: sp.Matrix
    constant: sp.Expr
    hamiltonian: sp.Expr

    def residual(self) -> sp.Expr:
        """mse - hamiltonian, expanded: identically zero."""
        return sp.expand(self.mse - self.hamiltonian)


def mse_expansion(n_out: int, n_hidden: int, n_data: int) -> HamiltonianForm:
    """Expand the MSE (2.6) into J, h and C, eqs. (2.7)-(2.8), for explicit small widths."""
    n_out = check_int("n_out", n_out)
    n_hidden = check_int("n_hidden", n_hidden)
    n_data = check_int("n_data", n_data)
    w = sp.Matrix(n_out, n_hidden, lambda i, j: sp.Symbol(f"W_{i}_{j}", real=True))
    features = sp.Matrix(n_hidden, n_data, lambda j, a: sp.Symbol(f"phi_{j}_{a}", real=True))
    targets = sp.Matrix(n_out, n_data, lambda i, a: sp.Symbol(f"y_{i}_{a}", real=True))
    d = sp.Integer(n_data)
    prediction = w * features
    mse = (
        sum(
            sp.Rational(1, 2) * (targets[i, a] - prediction[i, a]) ** 2
            for i in range(n_out)
            for a in range(n_data)
        )
        / d
    )
    coupling = w.T * w
    field = (targets.T * w).T  # h_ja = sum_i y_ia W_ij
    constant = sum(targets[i, a] ** 2 for i in range(n_out) for a in range(n_data)) / (2 * d)
    quad = sum(
        coupling[i, j] * features[i, a] * features[j, a]
        for i in range(n_hidden)
        for j in range(n_hidden)
        for a in range(n_data)
    )
    lin = sum(field[j, a] * features[j, a] for j in range(n_hidden) for a in range(n_data))
    hamiltonian = quad / (2 * d) - lin / d + constant
    return HamiltonianForm(w, features, targets, mse, coupling, field, constant, hamiltonian)


# --------------------------------------------------------------------------------------------
# The level-spacing equation, appendix B
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpacingEquation:
    """dS = (K_S + V_S T/S) dt + sqrt(2 T D_S) dB, derived for N eigenvalues, eq. (B.8).

    Attributes
    ----------
    n : int
        Number of eigenvalues N.
    drift_symbols : tuple of sympy.Symbol
        K_1, ..., K_N (eigenvalues ascending).
    noise_matrix : sympy.Matrix
        Symmetric V (N x N) built from the symbols V_i_j, i <= j.
    k_s, v_s, d_s : sympy.Expr
        The coefficients of (B.7) and (B.9) in terms of those symbols.
    drift : sympy.Expr
        The full drift of S after the ansatz (B.5), K_S + V_S T/S.
    """

    n: int
    drift_symbols: tuple[sp.Symbol, ...]
    noise_matrix: sp.Matrix
    k_s: sp.Expr
    v_s: sp.Expr
    d_s: sp.Expr
    drift: sp.Expr

    def noise_symbols(self) -> tuple[sp.Symbol, ...]:
        """The independent V symbols (upper triangle, row-major), for lambdify."""
        n = self.n
        return tuple(self.noise_matrix[i, j] for i in range(n) for j in range(i, n))

    def lambdify(self):
        """Numeric function ``f(K, V) -> (K_S, V_S, D_S)`` for a vector K and matrix V."""
        args = (*self.drift_symbols, *self.noise_symbols())
        f = sp.lambdify(args, (self.k_s, self.v_s, self.d_s), modules="math")
        n = self.n

        def evaluate(k, v):
            upper = [v[i][j] for i in range(n) for j in range(i, n)]
            return f(*k, *upper)

        return evaluate


def level_spacing_equation(n: int) -> SpacingEquation:
    """Derive (B.3)-(B.9) for N = ``n`` eigenvalues.

    Start from Dyson Brownian motion (B.1) for each x_i, take (x_N - x_1)/(N - 1), replace the
    spacings by the scaled mean spacing x_N - x_j = (N - j) S, x_1 - x_j = -(j - 1) S (B.5),
    and read off K_S (the T-independent drift), V_S (the coefficient of T/S) and D_S (half the
    variance per unit T of the combined noise (B.4)).
    """
    n = check_int("n", n, minimum=3)
    k = sp.symbols(f"K_1:{n + 1}", real=True)
    v = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"V_{min(i, j) + 1}_{max(i, j) + 1}", positive=True))
    xs = sp.symbols(f"x_1:{n + 1}", real=True)
    etas = sp.symbols(f"eta_1:{n + 1}", real=True)

    def dyson_drift(i):  # (B.1) without the noise
        return k[i] + T * sum(v[i, j] / (xs[i] - xs[j]) for j in range(n) if j != i)

    def dyson_noise(i):
        return sp.sqrt(T * v[i, i]) * etas[i]

    top, bottom = n - 1, 0
    drift = (dyson_drift(top) - dyson_drift(bottom)) / (n - 1)
    noise = (dyson_noise(top) - dyson_noise(bottom)) / (n - 1)
    ansatz = {xs[j]: xs[0] + j * S for j in range(n)}  # (B.5): x_j - x_1 = (j - 1) S, 1-based
    drift = sp.expand(sp.simplify(drift.subs(ansatz)))
    k_s = sp.simplify(drift.subs(T, 0))
    v_s = sp.simplify(sp.expand((drift - k_s) * S / T))
    if v_s.has(S) or v_s.has(T):
        raise RuntimeError("the Coulomb term did not reduce to V_S T / S")  # pragma: no cover
    # independent standard normals: the variance is the sum of squared coefficients (B.4)
    variance = sum(sp.diff(noise, eta) ** 2 for eta in etas)
    d_s = sp.simplify(variance / (2 * T))
    return SpacingEquation(n, tuple(k), v, k_s, v_s, d_s, k_s + v_s * T / S)


@dataclass(frozen=True)
class StationaryDensity:
    """Stationary density of dS = (K_S + V_S T/S) dt + sqrt(2 T D_S) dB for K_S = -kappa < 0.

    Attributes
    ----------
    density : sympy.Expr
        Normalised p(S) in ``S``, ``kappa``, ``v``, ``d`` and ``T``.
    shape, rate : sympy.Expr
        Its Gamma-law parameters.
    symbols : dict
        ``{"kappa": ..., "v": ..., "d": ...}`` (K_S = -kappa).
    flux : sympy.Expr
        The probability flux of ``density``, simplified (zero).
    """

    density: sp.Expr
    shape: sp.Expr
    rate: sp.Expr
    symbols: dict
    flux: sp.Expr


def spacing_stationary_density() -> StationaryDensity:
    """Solve the stationary Fokker-Planck equation of the spacing SDE (4.8).

    With drift a(S) = K_S + V_S T/S and diffusion b^2 = 2 T D_S, a stationary density on S > 0
    with zero flux J = a p - (1/2) d(b^2 p)/dS solves (b^2/2) p' = a p, so
    p = C exp(int 2a/b^2 dS) = C S^(V_S/D_S) exp(K_S S/(T D_S)); normalisable iff K_S < 0. The
    normalisation is computed by sympy, and the result is matched to a Gamma law.
    """
    kappa, v, d = sp.symbols("kappa V_S D_S", positive=True)
    drift = -kappa + v * T / S
    b2 = 2 * T * d
    exponent = sp.expand(sp.integrate(sp.expand(2 * drift / b2), S))
    power = exponent.coeff(sp.log(S))  # exp(c log S) = S^c
    rest = sp.simplify(exponent - power * sp.log(S))
    unnormalised = S**power * sp.exp(rest)
    norm = sp.integrate(unnormalised, (S, 0, sp.oo), conds="none")
    density = sp.simplify(unnormalised / norm)
    flux = sp.simplify(drift * density - sp.diff(b2 * density, S) / 2)
    shape = sp.simplify(power + 1)
    rate = sp.simplify(-sp.diff(rest, S))
    gamma_pdf = rate**shape * S ** (shape - 1) * sp.exp(-rate * S) / sp.gamma(shape)
    if sp.simplify(density / gamma_pdf) != 1:  # pragma: no cover
        raise RuntimeError("the stationary density is not of Gamma form")
    return StationaryDensity(density, shape, rate, {"kappa": kappa, "v": v, "d": d}, flux)


# --------------------------------------------------------------------------------------------
# Marchenko-Pastur law from its Stieltjes transform, eq. (4.2)
# --------------------------------------------------------------------------------------------


def _stieltjes_polynomial(g: sp.Expr, z: sp.Expr) -> sp.Expr:
    """r z g^2 - (z + r - 1) g + 1 = 0: the self-consistent equation of the unit-scale law.

    g(z) = int rho(x)/(z - x) dx is the Stieltjes transform of the spectral density of
    X = W W^T / n1 with W of shape (n2, n1), unit-variance entries and r = n2/n1.
    """
    return ratio * z * g**2 - (z + ratio - 1) * g + 1


def marchenko_pastur_moments(k_max: int = 4) -> list[sp.Expr]:
    """Raw moments E[x^k], k = 0..k_max, of the Marchenko-Pastur law with variance ``sigma2``.

    Substitute g = sum_k m_k w^(k+1) (w = 1/z, the expansion at infinity whose coefficients
    are the moments) into the Stieltjes equation and solve order by order; each order is linear
    in the new moment. The scale enters as m_k -> sigma2^k m_k.
    """
    k_max = check_int("k_max", k_max, minimum=1)
    w = sp.Symbol("w")
    m = sp.symbols(f"m_0:{k_max + 1}")
    g = sum(m[k] * w ** (k + 1) for k in range(k_max + 1))
    # multiply the equation by w to clear 1/w:  r g^2 - (1 + (r - 1) w) g + w = 0
    equation = sp.expand(sp.expand(_stieltjes_polynomial(g, 1 / w) * w))
    solved: dict[sp.Symbol, sp.Expr] = {}
    for order in range(1, k_max + 2):
        coefficient = equation.coeff(w, order).subs(solved)
        (value,) = sp.solve(coefficient, m[order - 1])
        solved[m[order - 1]] = sp.expand(value)
    return [sp.expand(solved[m[k]] * sigma2**k) for k in range(k_max + 1)]


def marchenko_pastur_density() -> tuple[sp.Expr, tuple[sp.Expr, sp.Expr]]:
    """Density (4.2) and edges from the Stieltjes equation, for variance scale ``sigma2``.

    rho(x) = -Im g(x + i0)/pi. The roots of the quadratic are complex where the discriminant
    (x + r - 1)^2 - 4 r x is negative; there Im g = -sqrt(-disc)/(2 r x), and the edges are the
    zeros of the discriminant, (1 -/+ sqrt r)^2. The scale follows from rho_s(x) =
    rho(x/sigma2)/sigma2.

    Returns
    -------
    density : sympy.Expr
        In ``x``, ``r``, ``sigma2``.
    edges : (x_minus, x_plus)
    """
    g, z = sp.symbols("g z")
    poly = sp.Poly(_stieltjes_polynomial(g, z), g)
    a2, a1, a0 = poly.all_coeffs()
    disc = sp.expand((a1**2 - 4 * a2 * a0).subs(z, x))
    imag_g = -sp.sqrt(-disc) / (2 * a2.subs(z, x))
    unit_density = sp.simplify(-imag_g / sp.pi)
    density = sp.simplify(unit_density.subs(x, x / sigma2) / sigma2)
    lo, hi = sorted(sp.solve(sp.Eq(disc, 0), x), key=lambda e: e.subs(ratio, sp.Rational(1, 4)))
    edges = (sp.factor(lo * sigma2), sp.factor(hi * sigma2))
    return density, edges
