"""Special cases and limits of the complete eigenvalue SDE (issue 11), in sympy.

Contents
--------
ito_two_eigenvalues
    Ito's formula on the closed-form eigenvalues of X = W W^T for W of shape (2, M): an oracle
    for the drift and the noise covariance of :func:`dysonsgd.theory.ito.eigenvalue_equation`
    that does not use perturbation theory.
wishart_moments, bru_equation, bru_ito, vanishes_with_root
    i.i.d. gradient entries: the Wishart (Bru 1991) process, where everything is in closed form.
wall_drift, wall_dimension
    Positivity of X: the drift of x_1 at x_1 = 0 and the squared-Bessel dimension there.
flow_curvature_two, frozen_moment_correction, scalar_modified_equation
    What the finite-lr terms lr m_i, lr P_ij are: the curvature of the gradient flow within one
    step, which an SDE whose coefficients follow the state produces by itself, and the drift
    correction such an SDE needs instead (the stochastic modified equation).
"""

from __future__ import annotations

import sympy as sp

from dysonsgd._checks import InputError, check_int
from dysonsgd.theory.ito import (
    Population,
    batch,
    eigenvalue_equation,
    fpc,
    lr,
    minibatch_population,
    moment_symbols,
    sigma,
)
from dysonsgd.theory.symbolic import T

__all__ = [
    "bru_equation",
    "bru_ito",
    "flow_curvature_two",
    "frozen_moment_correction",
    "ito_two_eigenvalues",
    "scalar_modified_equation",
    "vanishes_with_root",
    "wall_dimension",
    "wall_drift",
    "wishart_moments",
]


def _x(n: int) -> tuple[sp.Symbol, ...]:
    return sp.symbols(f"x_1:{n + 1}", positive=True)  # those of eigenvalue_equation


def _w(m: int) -> sp.Matrix:
    return sp.Matrix(2, m, lambda i, k: sp.Symbol(f"w_{i + 1}_{k + 1}", real=True))


def _two_eigenvalues(w: sp.Matrix) -> tuple[sp.Expr, sp.Expr]:
    x = w * w.T
    root = sp.sqrt(x.trace() ** 2 - 4 * x.det())
    return (x.trace() - root) / 2, (x.trace() + root) / 2


def _two_eigenvalue_jet(e: sp.Matrix) -> tuple[list, list, tuple]:
    """First and second t-derivatives of the exact eigenvalues of (W + t e)(W + t e)^T at 0.

    W = [diag(s_1, s_2) | 0] with s_2 = s_1 + d, d > 0; x_-+ = (tr -/+ sqrt(disc))/2 with tr and
    disc polynomials in t, and sqrt(disc) expanded by hand about disc(0) = (s_2^2 - s_1^2)^2.
    Returns (first, second, s) with first[k], second[k] in s_1, s_2 and the entries of e.
    """
    m = e.shape[1]
    s1, s2 = sp.symbols("s_1:3", positive=True)
    dd, t = sp.Symbol("d", positive=True), sp.Symbol("t", real=True)
    w = sp.zeros(2, m)
    w[0, 0], w[1, 1] = s1, s1 + dd
    x = (w + t * e) * (w + t * e).T
    tr = sp.expand(x.trace())
    disc = sp.expand(tr**2 - 4 * x.det())
    d0, d1, d2 = (disc.coeff(t, k) for k in range(3))
    r0 = sp.factor(d0)  # (s_2^2 - s_1^2)^2 with s_2 > s_1
    root0 = (s1 + dd) ** 2 - s1**2
    if sp.simplify(r0 - root0**2) != 0:  # pragma: no cover
        raise RuntimeError("disc(0) is not (s_2^2 - s_1^2)^2")
    root = [root0, d1 / (2 * root0), d2 / (2 * root0) - d1**2 / (8 * root0**3)]
    back = {dd: s2 - s1}
    first, second = [], []
    for sign in (-1, 1):
        first.append(sp.simplify(((tr.coeff(t, 1) + sign * root[1]) / 2).subs(back)))
        second.append(sp.simplify((2 * (tr.coeff(t, 2) + sign * root[2]) / 2).subs(back)))
    return first, second, (s1, s2)


def ito_two_eigenvalues(m: int) -> tuple[tuple, sp.Matrix, Population]:
    """Ito's formula for the exact eigenvalues of X = W W^T, W of shape (2, M).

    dW = -mu dt + sqrt(T) dxi with E[dxi_a dxi_b] = Cov_a(Delta_a, Delta_b) dt (the continuum
    SGD equation (2.30) with correlated entries): dx = (-mu . grad x + (T/2) Cov : Hess x) dt
    + sqrt(T) grad x . dxi, with grad and Hess of the closed form x_-+ = (tr X -/+ sqrt(tr^2 -
    4 det))/2, taken along a symbolic direction, at W = [diag(s_1, s_2) | 0] (which is general:
    the eigenvalues are invariant under W -> U^T W [Vt, Vperp]).

    Returns
    -------
    drift : (2,) in s_1 < s_2 and the population symbols
    diffusion : (2, 2) Cov(dx_a, dx_b)/dt
    population : the symbols (its f / b convention is not used here)
    """
    m = check_int("m", m, minimum=2)
    pop = minibatch_population(2, m)
    first, second, _ = _two_eigenvalue_jet(pop.delta)
    zero_mean = Population(pop.delta, sp.zeros(2, m), pop.cov)

    def cov_of(expr):  # E over zero-mean entries of covariance cov: Cov : Hess etc.
        return sp.expand(zero_mean.expect(expr) * batch / fpc)

    to_mean = dict(zip(pop.delta, pop.mean, strict=True))
    drift = tuple(sp.simplify(-first[k].subs(to_mean) + T * cov_of(second[k]) / 2)
                  for k in range(2))
    diffusion = sp.Matrix(2, 2, lambda a, b: sp.simplify(T * cov_of(first[a] * first[b])))
    return drift, diffusion, pop


def wishart_moments(n: int, m: int) -> dict:
    """Moment symbol -> value for i.i.d. gradient entries of mean 0 and variance sigma^2.

    Any rotation U^T Delta [Vt, Vperp] of such entries again has covariance sigma^2 times the
    identity, so g = 0, m = 0, q_i = M sigma^2, Sigma = sigma^2 1, v = sigma^2, c_ij = 0 (i != j).
    """
    ms = moment_symbols(n)
    out = {}
    for i in range(n):
        out[ms.m[i]], out[ms.q[i]] = 0, m * sigma**2
        for j in range(n):
            out[ms.g[i, j]] = 0
            out[ms.sigma[i, j]] = sigma**2 if i == j else 0
            if i != j:
                out[ms.v[i, j]], out[ms.c[i, j]] = sigma**2, 0
    return out


def bru_equation(n: int, m: int) -> tuple[tuple, sp.Matrix]:
    """The Wishart (Bru 1991) eigenvalue SDE, written down: drift and diffusion per unit time.

    dx_i = T sigma^2 [M + sum_{j != i} (x_i + x_j)/(x_i - x_j)] dt + 2 sigma sqrt(T x_i) dB_i,
    independent B_i (Bru's normalisation is T sigma^2 = 1).
    """
    x = _x(n)
    drift = tuple(T * sigma**2 * (m + sum((x[i] + x[j]) / (x[i] - x[j])
                                          for j in range(n) if j != i)) for i in range(n))
    return drift, sp.diag(*[4 * sigma**2 * T * xi for xi in x])


def bru_ito(m: int) -> tuple[tuple, sp.Matrix, tuple, sp.Expr]:
    """Ito's formula at a generic 2 x M matrix W for dW = sigma sqrt(T) dB (i.i.d. entries).

    Returns the drift (T sigma^2 / 2) Laplacian x_-+, the diffusion T sigma^2 grad x_a .
    grad x_b, the closed-form eigenvalues (x_-, x_+) and the radicand tr^2 - 4 det of their
    square root, all in the entries ``w_i_k`` of W (compare with :func:`vanishes_with_root`).
    """
    m = check_int("m", m, minimum=2)
    w = _w(m)
    ws = list(w)
    lams = _two_eigenvalues(w)
    grads = [[sp.diff(lam, wk) for wk in ws] for lam in lams]
    drift = tuple(T * sigma**2 * sum(sp.diff(g, wk) for g, wk in zip(grad, ws, strict=True)) / 2
                  for grad in grads)
    diffusion = sp.Matrix(2, 2, lambda a, b: T * sigma**2 * sum(
        u * z for u, z in zip(grads[a], grads[b], strict=True)))
    x = w * w.T
    return drift, diffusion, lams, sp.expand(x.trace() ** 2 - 4 * x.det())


def vanishes_with_root(expr: sp.Expr, radicand: sp.Expr) -> bool:
    """Whether ``expr``, rational in sqrt(radicand) and polynomials, is identically zero.

    sqrt(radicand) is replaced by a symbol r > 0 and the numerator reduced modulo
    r^2 - radicand; zero remainder means zero (much faster than simplify on the roots).
    """
    r = sp.Dummy("r", positive=True)
    together = sp.together(sp.sympify(expr).subs(sp.sqrt(radicand), r))
    if together.has(sp.sqrt(radicand)):  # pragma: no cover
        raise InputError("expr has powers of the root that subs did not catch")
    numerator = sp.Poly(sp.expand(sp.numer(together)), r)
    return sp.rem(numerator, sp.Poly(r**2 - radicand, r)).is_zero


def wall_drift(n: int, *, variant: str = "complete") -> sp.Expr:
    """The drift of x_1 at x_1 = 0 (s_1 = 0), the moments held fixed, in :class:`MomentSymbols`.

    Complete: T (q_1 - sum_{j>1} v_1j) + lr (m_1 - sum_{j>1} g_1j^2), which is
    T (Sigma_11 + the variance outside the span of Vt) + lr (g_11^2 + the mean outside it) >= 0
    (:func:`population_moments`); the printed (4.3): -T sum_{j>1} v_1j <= 0.
    """
    eq = eigenvalue_equation(n, variant=variant)
    return sp.expand(eq.drift[0].subs(eq.coefficients).subs(eq.x[0], 0))


def wall_dimension(n: int, *, variant: str = "complete") -> sp.Expr:
    """delta = a(0) / (T Sigma_11), the squared-Bessel dimension of x_1 at the wall.

    Near x_1 = 0 the diffusion of x_1 is T C_11 = 4 T Sigma_11 x_1, so in the time
    tau = T Sigma_11 t, dx_1 = delta dtau + 2 sqrt(x_1) dbeta: a squared Bessel process of
    dimension delta = a(0)/(T Sigma_11) (a(0) = :func:`wall_drift`). It stays >= 0 for
    delta >= 0 and never reaches 0 for delta >= 2 (Feller's condition 2 a(0) >= 4 T Sigma_11).
    """
    eq = eigenvalue_equation(n, variant=variant)
    rate = sp.cancel(eq.diffusion[0, 0].subs(eq.coefficients) / (4 * eq.x[0]))  # T Sigma_11
    if rate.has(eq.x[0]):  # pragma: no cover
        raise RuntimeError("the noise of x_1 is not proportional to x_1")
    return sp.simplify(wall_drift(n, variant=variant) / rate)


def flow_curvature_two(m: int) -> tuple[tuple, Population]:
    """(1/2) d^2/dt^2 of the exact eigenvalues of (W - t mu)(W - t mu)^T at t = 0, W 2 x M.

    For a constant gradient the deterministic SGD step W - lr mu lies on the gradient flow
    W(t) = W - t mu at t = lr, so the lr^2 part of the step, lr^2 (m_i + sum P_ij/(x_i - x_j)),
    is (lr^2/2) d^2 x_i/dt^2 of the flow: an SDE whose drift K_i follows the state already
    produces it. Returned in s_1 < s_2 and the population mean (the singular basis of W).
    """
    m = check_int("m", m, minimum=2)
    pop = minibatch_population(2, m)
    _, second, _ = _two_eigenvalue_jet(-pop.mean)
    return tuple(sp.simplify(sec / 2) for sec in second), pop


def frozen_moment_correction(n: int) -> tuple[sp.Expr, ...]:
    """(1/2) sum_j K_j dK_i/dx_j for K_i = -2 sqrt(x_i) g_ii, the moments held fixed.

    An ODE dx/dt = b(x) moves x in a time h by h b + (h^2/2)(b . grad) b + O(h^3). With the
    moments fixed the drift K_i(x) bends by (lr^2/2) K . grad K_i = lr^2 g_ii^2 in one step, so
    the drift that reproduces the SGD step's mean to O(lr^2) carries lr (m_i - g_ii^2), not
    lr m_i (the stochastic modified equation of Li, Tai and E 2017, for this representation).
    """
    eq = eigenvalue_equation(n)
    x = eq.x
    k = [eq.coefficients[sp.Symbol(f"K_{i + 1}", real=True)] for i in range(n)]
    return tuple(sp.simplify(sum(k[j] * sp.diff(k[i], x[j]) for j in range(n)) / 2)
                 for i in range(n))


def scalar_modified_equation() -> dict[str, sp.Expr]:
    """One step of x = w^2 for N = M = 1 and the loss (c/2)(w - a)^2, to O(lr^2), four ways.

    'sgd' the step w' = w - lr mu, mu = c (w - a); 'continuum' the flow of dx/dt = K =
    -2 w mu(w), whose coefficient follows the state, over a time lr; 'complete' the same with
    the finite-lr term lr m = lr mu^2 added; 'modified' the flow of the stochastic modified
    equation dw/dt = -mu - (lr/2) mu mu' (Li, Tai and E 2017). A flow dw/dt = beta(w) moves w
    by h beta + (h^2/2) beta beta' + O(h^3). Returns the four x(lr) - x, expanded to lr^2.
    """
    w, a = sp.symbols("w a", real=True)
    c = sp.Symbol("c", positive=True)
    mu = c * (w - a)

    def flow(beta):
        w_h = w + lr * beta + lr**2 / 2 * beta * sp.diff(beta, w)
        return sp.expand(sp.series(w_h**2 - w**2, lr, 0, 3).removeO())

    return {
        "sgd": sp.expand((w - lr * mu) ** 2 - w**2),
        "continuum": flow(-mu),
        "complete": flow((-2 * w * mu + lr * mu**2) / (2 * w)),
        "modified": flow(-mu - lr / 2 * mu * sp.diff(mu, w)),
    }
