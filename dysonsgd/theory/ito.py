"""The complete eigenvalue SDE of X = W W^T under SGD, derived in sympy (issue 11).

One SGD step W' = W - lr Delta_B (2.28) moves X by E = -lr (W Delta^T + Delta W^T) + lr^2 Delta
Delta^T. In the singular basis W = U S Vt^T (s_i = sqrt(x_i)), with G = U^T Delta Vt and
H = U^T Delta, second-order perturbation theory and the minibatch moments give per unit time
t = lr * steps, with T = lr / b,

    dx_i = [K_i + T q_i + lr m_i + sum_{j != i} (T V_ij + lr P_ij)/(x_i - x_j)] dt + sqrt(T) dB_i,
    Cov(dB_i, dB_j) = C_ij dt,    K_i = -2 s_i g_ii,  C_ij = 4 s_i s_j Sigma_ij,
    V_ij = x_i v_ji + x_j v_ij + 2 s_i s_j c_ij,  P_ij = (s_i g_ji + s_j g_ij)^2,

the printed (4.3) being the limit that drops T q_i, the lr terms and C_ij (i != j). Per step,
with T_f = lr f / b (f the finite-population factor), E[dx_i] = lr * drift (T -> T_f) and
Cov(dx_i, dx_j) = lr T_f C_ij, to O(lr^3). The lr terms belong to that one-step mean; they are
the within-step curvature of the gradient flow, so an SDE whose coefficients follow the state
or the run produces (part of) them by itself (:mod:`dysonsgd.theory.ito_special`). Every
function derives its result from a starting expression; the checks against independent oracles
are in ``tests/test_ito_symbolic.py`` and ``theory/05-ito-complete-eigenvalue-sde.ipynb``.

Contents
--------
eigenvalue_perturbation
    x_i(eps) of D + eps A1 + eps^2 A2 to O(eps^2): the formula and the series of the exact
    eigenvalues (N = 2 closed form, N >= 3 characteristic polynomial order by order).
sgd_step, minibatch_population, one_step_moments
    The SGD step in the singular basis for explicit N x M, and its Kramers-Moyal moments.
moment_symbols, population_moments, eigenvalue_equation, general_eigenvalue_equation
    The singular-basis moments of the derivation, the SDE for explicit N (variants 'complete',
    'continuum', 'paper' and any ``drop``), and the general-N form with Indexed/Sum.
spacing_equation
    The one-particle equation (4.8) of S = (x_N - x_1)/(N - 1) for each variant.

Ito's formula on exact eigenvalues, the Wishart (Bru) process, the wall x_1 = 0 and what the
finite-lr terms are: :mod:`dysonsgd.theory.ito_special`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sympy as sp

from dysonsgd._checks import InputError, check_int
from dysonsgd.theory import symbolic
from dysonsgd.theory.symbolic import T

__all__ = [
    "TERMS",
    "VARIANTS",
    "EigenvalueEquation",
    "MomentSymbols",
    "OneStepMoments",
    "Perturbation",
    "Population",
    "SGDStep",
    "SpacingCoefficients",
    "eigenvalue_equation",
    "eigenvalue_perturbation",
    "explicit",
    "general_eigenvalue_equation",
    "minibatch_population",
    "moment_symbols",
    "one_step_moments",
    "population_moments",
    "sgd_step",
    "spacing_equation",
]

#: learning rate, perturbation parameter, batch size b = |B|, finite-population factor
#: f = (n - b)/(n - 1), i.i.d. gradient scale sigma
lr = sp.Symbol("lr", positive=True)
eps = sp.Symbol("epsilon", positive=True)
batch = sp.Symbol("b", positive=True)
fpc = sp.Symbol("f", positive=True)
sigma = sp.Symbol("sigma", positive=True)

#: the terms a variant may drop: the Ito drift T q_i, the finite-lr terms lr m_i and lr P_ij,
#: and the correlation C_ij (i != j) of the eigenvalue noises
TERMS = ("ito", "finite_lr", "correlation")
#: variant -> dropped terms: every term; lr -> 0 at fixed T; the printed (4.3)
VARIANTS = {"complete": (), "continuum": ("finite_lr",), "paper": TERMS}


def _sym(name: str, a: int, b: int | None = None, *, symmetric: bool = False, **kw) -> sp.Symbol:
    if b is None:
        return sp.Symbol(f"{name}_{a + 1}", **kw)
    if symmetric:
        a, b = min(a, b), max(a, b)
    return sp.Symbol(f"{name}_{a + 1}_{b + 1}", **kw)


def _x(n: int) -> tuple[sp.Symbol, ...]:
    return sp.symbols(f"x_1:{n + 1}", positive=True)


def _second_order(x, a1, a2, i: int, e: sp.Expr) -> sp.Expr:
    """x_i + e a1_ii + e^2 (a2_ii + sum_{j != i} a1_ij^2 / (x_i - x_j))."""
    coulomb = sum(a1[i, j] ** 2 / (x[i] - x[j]) for j in range(len(x)) if j != i)
    return x[i] + e * a1[i, i] + e**2 * (a2[i, i] + coulomb)


# --------------------------------------------------------------------------------------------
# (a) second-order perturbation of the eigenvalues
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Perturbation:
    """The eigenvalues of diag(x) + eps A1 + eps^2 A2 to O(eps^2), two ways.

    Attributes
    ----------
    x : tuple of sympy.Symbol
        The unperturbed eigenvalues, ascending.
    a1, a2 : sympy.Matrix, (N, N)
        Symmetric perturbations (symbols ``a_i_j``, ``b_i_j``).
    formula : tuple of sympy.Expr
        x_i + eps A1_ii + eps^2 (A2_ii + sum_{j != i} A1_ij^2 / (x_i - x_j)).
    series : tuple of sympy.Expr
        The Taylor series to O(eps^2) of the exact eigenvalue tending to x_i.
    method : str
        How ``series`` was obtained: 'closed form' (N = 2) or 'characteristic polynomial'.
    """

    x: tuple
    a1: sp.Matrix
    a2: sp.Matrix
    formula: tuple
    series: tuple
    method: str

    def residuals(self) -> tuple[sp.Expr, ...]:
        """formula - series, simplified (zeros)."""
        return tuple(sp.simplify(f - s) for f, s in zip(self.formula, self.series, strict=True))


def eigenvalue_perturbation(n: int) -> Perturbation:
    """Derive the O(eps^2) eigenvalues of diag(x) + eps A1 + eps^2 A2 for N = ``n`` (2..4).

    N = 2: the exact eigenvalues (tr -/+ sqrt(disc))/2, expanded in eps (x_2 = x_1 + d, d > 0,
    fixes the branch). N >= 3: put lambda = x_i + c1 eps + c2 eps^2 in
    det(diag(x) + eps A1 + eps^2 A2 - lambda) = 0 and solve order by order (each order is linear
    in the new coefficient because x_i is simple).
    """
    n = check_int("n", n, minimum=2)
    if n > 4:
        raise InputError(f"n must be an integer in [2, 4] (the determinant grows fast), got {n}")
    x = _x(n)
    a1 = sp.Matrix(n, n, lambda i, j: _sym("a", i, j, symmetric=True, real=True))
    a2 = sp.Matrix(n, n, lambda i, j: _sym("b", i, j, symmetric=True, real=True))
    formula = tuple(_second_order(x, a1, a2, i, eps) for i in range(n))
    mat = sp.diag(*x) + eps * a1 + eps**2 * a2
    if n == 2:
        d = sp.Symbol("d", positive=True)
        tr, det = mat.trace(), mat.det()
        root = sp.sqrt(sp.expand((tr**2 - 4 * det).subs(x[1], x[0] + d)))
        exact = ((tr.subs(x[1], x[0] + d) - root) / 2, (tr.subs(x[1], x[0] + d) + root) / 2)
        series = tuple(
            sp.series(e, eps, 0, 3).removeO().subs(d, x[1] - x[0]) for e in exact
        )
        return Perturbation(x, a1, a2, formula, series, "closed form")
    c1, c2 = sp.symbols("c1 c2")
    series = []
    for i in range(n):
        lam = x[i] + c1 * eps + c2 * eps**2
        poly = sp.expand((mat - lam * sp.eye(n)).det(method="berkowitz"))
        (first,) = sp.solve(poly.coeff(eps, 1), c1)
        (second,) = sp.solve(sp.expand(poly.coeff(eps, 2).subs(c1, first)), c2)
        series.append(x[i] + first * eps + second * eps**2)
    return Perturbation(x, a1, a2, formula, tuple(series), "characteristic polynomial")


# --------------------------------------------------------------------------------------------
# (b) the SGD step and its minibatch moments, explicit N x M
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SGDStep:
    """One step W' = W - lr Delta, written in the singular basis of W (U = 1, W = [S | 0]).

    The eigenvalues are invariant under W -> U^T W [Vt, Vperp], so this is general: ``delta`` is
    U^T Delta [Vt, Vperp], its first N columns G, all columns H.

    Attributes
    ----------
    s : tuple of sympy.Symbol
        Singular values s_i > 0 (x_i = s_i^2), ascending.
    delta : sympy.Matrix, (N, M)
        The gradient in that basis (symbols ``D_i_k``).
    increment : tuple of sympy.Expr
        x_i' - x_i to O(lr^2): A = U^T E U with A1 = -(S G^T + G S), A2 = H H^T.
    """

    n: int
    m: int
    s: tuple
    delta: sp.Matrix
    increment: tuple


def sgd_step(n: int, m: int) -> SGDStep:
    """The second-order eigenvalue increment of one SGD step, for an N x M matrix W (N <= M)."""
    n = check_int("n", n, minimum=1)
    m = check_int("m", m, minimum=1)
    if m < n:
        raise InputError(f"m must be >= n (W is N x M with N <= M), got n={n}, m={m}")
    s = sp.symbols(f"s_1:{n + 1}", positive=True)
    w = sp.zeros(n, m)
    for i in range(n):
        w[i, i] = s[i]
    delta = sp.Matrix(n, m, lambda i, k: _sym("D", i, k, real=True))
    e = -lr * (w * delta.T + delta * w.T) + lr**2 * delta * delta.T
    a1, a2 = sp.expand(e.diff(lr)).subs(lr, 0), sp.expand(e.diff(lr, 2) / 2)
    x = tuple(si**2 for si in s)
    return SGDStep(n, m, s, delta,
                   tuple(_second_order(x, a1, a2, i, lr) - x[i] for i in range(n)))


@dataclass(frozen=True)
class Population:
    """Minibatch moments of the gradient entries: E[Delta_B] = mean, Cov = (f / b) cov.

    Attributes
    ----------
    delta : sympy.Matrix, (N, M)
        The random entries (those of :class:`SGDStep`).
    mean : sympy.Matrix, (N, M)
        mu_i_k, the population mean.
    cov : dict
        ((i, k), (j, l)) -> the population covariance symbol (ddof = 0), both orders.
    """

    delta: sp.Matrix
    mean: sp.Matrix
    cov: dict

    def expect(self, expr: sp.Expr) -> sp.Expr:
        """E over the minibatch of a polynomial of degree <= 2 in the entries of ``delta``."""
        gens = list(self.delta)
        where = {g: divmod(k, self.delta.shape[1]) for k, g in enumerate(gens)}
        out = sp.Integer(0)
        for monom, coeff in sp.Poly(sp.expand(expr), *gens).terms():
            picked = [g for g, p in zip(gens, monom, strict=True) for _ in range(p)]
            if len(picked) > 2:
                raise InputError("expect takes polynomials of degree <= 2 in the gradient")
            moment = sp.Integer(1)
            for g in picked:
                moment *= self.mean[where[g]]
            if len(picked) == 2:
                moment += fpc / batch * self.cov[(where[picked[0]], where[picked[1]])]
            out += coeff * moment
        return out


def minibatch_population(n: int, m: int) -> Population:
    """Symbols for the mean ``mu_i_k`` and covariance ``kappa_ik_jl`` of N x M gradients."""
    step_delta = sp.Matrix(n, m, lambda i, k: _sym("D", i, k, real=True))
    mean = sp.Matrix(n, m, lambda i, k: _sym("mu", i, k, real=True))
    cells = [(i, k) for i in range(n) for k in range(m)]
    cov = {}
    for p, a in enumerate(cells):
        for b_ in cells[p:]:
            name = f"kappa_{a[0] + 1}{a[1] + 1}_{b_[0] + 1}{b_[1] + 1}"
            cov[(a, b_)] = cov[(b_, a)] = sp.Symbol(name, **({"nonnegative": True}
                                                            if a == b_ else {"real": True}))
    return Population(step_delta, mean, cov)


@dataclass(frozen=True)
class OneStepMoments:
    """E[x_i' - x_i] and Cov(x_i' - x_j') per SGD step, to O(lr^2) (Kramers-Moyal moments)."""

    step: SGDStep
    population: Population
    mean: tuple
    cov: sp.Matrix


def one_step_moments(n: int, m: int) -> OneStepMoments:
    """Average the second-order increment of :func:`sgd_step` over the minibatch.

    The mean is the expectation of the O(lr^2) increment; the covariance is lr^2 Cov(a_i, a_j)
    with a_i the O(lr) coefficient (the O(lr^3) rest is dropped).
    """
    step = sgd_step(n, m)
    pop = minibatch_population(n, m)
    mean = tuple(pop.expect(d) for d in step.increment)
    first = [d.diff(lr).subs(lr, 0) for d in step.increment]
    means = [pop.expect(a) for a in first]
    cov = sp.Matrix(n, n, lambda i, j: sp.expand(
        lr**2 * (pop.expect(first[i] * first[j]) - means[i] * means[j])))
    return OneStepMoments(step, pop, mean, cov)


# --------------------------------------------------------------------------------------------
# the singular-basis moments and the SDE for explicit N
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MomentSymbols:
    """The gradient moments of the derivation in the singular basis (population, ddof = 0).

    g_ij = E G_ij, m_i = sum_k E[H_ik]^2, q_i = sum_k Var H_ik, Sigma_ij = Cov(G_ii, G_jj),
    v_ij = Var G_ij, c_ij = Cov(G_ij, G_ji); v_ii = c_ii = Sigma_ii (one symbol).
    """

    g: sp.Matrix
    m: tuple
    q: tuple
    sigma: sp.Matrix
    v: sp.Matrix
    c: sp.Matrix


def moment_symbols(n: int) -> MomentSymbols:
    """The symbols of :class:`MomentSymbols` for N = ``n``."""
    n = check_int("n", n, minimum=1)
    sig = sp.Matrix(n, n, lambda i, j: _sym(
        "Sigma", i, j, symmetric=True, **({"nonnegative": True} if i == j else {"real": True})))
    return MomentSymbols(
        g=sp.Matrix(n, n, lambda i, j: _sym("g", i, j, real=True)),
        m=tuple(_sym("m", i, nonnegative=True) for i in range(n)),
        q=tuple(_sym("q", i, nonnegative=True) for i in range(n)),
        sigma=sig,
        v=sp.Matrix(n, n, lambda i, j: sig[i, i] if i == j else _sym("v", i, j, nonnegative=True)),
        c=sp.Matrix(n, n, lambda i, j: sig[i, i] if i == j else _sym("c", i, j, symmetric=True,
                                                                     real=True)),
    )


def population_moments(pop: Population) -> dict:
    """Moment symbol -> its value in the population of :func:`minibatch_population`."""
    n, m = pop.mean.shape
    ms = moment_symbols(n)
    out = {}
    for i in range(n):
        out[ms.m[i]] = sum(pop.mean[i, k] ** 2 for k in range(m))
        out[ms.q[i]] = sum(pop.cov[((i, k), (i, k))] for k in range(m))
        for j in range(n):
            out[ms.g[i, j]] = pop.mean[i, j]
            out[ms.sigma[i, j]] = pop.cov[((i, i), (j, j))]
            if i != j:
                out[ms.v[i, j]] = pop.cov[((i, j), (i, j))]
                out[ms.c[i, j]] = pop.cov[((i, j), (j, i))]
    return out


@dataclass(frozen=True)
class EigenvalueEquation:
    """dx = drift dt + (diffusion)^(1/2) dB for N eigenvalues, in abstract coefficients.

    Attributes
    ----------
    variant : str
    dropped : tuple of str
        The terms of :data:`TERMS` left out.
    x : tuple of sympy.Symbol
    regular : tuple of sympy.Expr
        a_i, the drift without the Coulomb terms.
    weights : sympy.Matrix, (N, N)
        w_ij, the Coulomb weights (symmetric, zero diagonal).
    drift : tuple of sympy.Expr
        a_i + sum_{j != i} w_ij/(x_i - x_j), in K_i, q_i, m_i, V_i_j, P_i_j, T and lr; for
        'paper' exactly the drift of (B.1).
    diffusion : sympy.Matrix, (N, N)
        Cov(dx_i, dx_j)/dt: T V_ii on the diagonal, T C_ij off it.
    coefficients : dict
        Abstract symbol -> its singular-basis value in x and :class:`MomentSymbols`.
    """

    variant: str
    dropped: tuple
    x: tuple
    regular: tuple
    weights: sp.Matrix
    drift: tuple
    diffusion: sp.Matrix
    coefficients: dict

    def in_moments(self) -> tuple[tuple, sp.Matrix]:
        """(drift, diffusion) with the coefficients replaced by their singular-basis values."""
        sub = self.coefficients
        return tuple(d.subs(sub) for d in self.drift), self.diffusion.subs(sub)


def eigenvalue_equation(n: int, *, variant: str = "complete",
                        drop: Iterable[str] = ()) -> EigenvalueEquation:
    """The eigenvalue SDE of issue 11 for N = ``n``, optionally with terms dropped.

    ``variant`` names a preset of :data:`VARIANTS` (the names of :mod:`dysonsgd.sde`);
    ``drop`` removes further terms of :data:`TERMS`, for ablations (the printed (4.3) with only
    the Ito drift restored is ``drop=('finite_lr', 'correlation')``). The drift is
    a_i + sum_{j != i} w_ij / (x_i - x_j) with a_i = K_i + T q_i + lr m_i and
    w_ij = T V_ij + lr P_ij. The coefficients as functions of the state, with the moments fixed:
    K_i = -2 s_i g_ii, V_ij = x_i v_ji + x_j v_ij + 2 s_i s_j c_ij (V_ii = 4 x_i Sigma_ii),
    P_ij = (s_i g_ji + s_j g_ij)^2, C_ij = 4 s_i s_j Sigma_ij.
    """
    n = check_int("n", n, minimum=2)
    if variant not in VARIANTS:
        raise InputError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    drop = tuple(drop)
    bad = [t for t in drop if t not in TERMS]
    if bad:
        raise InputError(f"drop must name terms of {TERMS}, got {bad}")
    dropped = tuple(t for t in TERMS if t in set(VARIANTS[variant]) | set(drop))
    x = _x(n)
    k = sp.symbols(f"K_1:{n + 1}", real=True)  # the names of symbolic.level_spacing_equation
    q = sp.symbols(f"q_1:{n + 1}", nonnegative=True)
    mm = sp.symbols(f"m_1:{n + 1}", nonnegative=True)
    v = sp.Matrix(n, n, lambda i, j: _sym("V", i, j, symmetric=True, positive=True))
    p = sp.Matrix(n, n, lambda i, j: _sym("P", i, j, symmetric=True, nonnegative=True))
    c = sp.Matrix(n, n, lambda i, j: v[i, i] if i == j else _sym("C", i, j, symmetric=True,
                                                                 real=True))
    ito = 0 if "ito" in dropped else 1
    flr = 0 if "finite_lr" in dropped else 1
    regular = tuple(k[i] + ito * T * q[i] + flr * lr * mm[i] for i in range(n))
    weights = sp.Matrix(n, n, lambda i, j: 0 if i == j else T * v[i, j] + flr * lr * p[i, j])
    drift = tuple(regular[i] + sum(weights[i, j] / (x[i] - x[j]) for j in range(n) if j != i)
                  for i in range(n))
    corr = 0 if "correlation" in dropped else 1
    diffusion = sp.Matrix(n, n, lambda i, j: T * (v[i, i] if i == j else corr * c[i, j]))
    ms = moment_symbols(n)
    s = [sp.sqrt(xi) for xi in x]
    coefficients = {}
    for i in range(n):
        coefficients[k[i]] = -2 * s[i] * ms.g[i, i]
        coefficients[q[i]] = ms.q[i]
        coefficients[mm[i]] = ms.m[i]
        for j in range(i, n):
            coefficients[v[i, j]] = (x[i] * ms.v[j, i] + x[j] * ms.v[i, j]
                                     + 2 * s[i] * s[j] * ms.c[i, j])
            coefficients[p[i, j]] = (s[i] * ms.g[j, i] + s[j] * ms.g[i, j]) ** 2
            if j != i:
                coefficients[c[i, j]] = 4 * s[i] * s[j] * ms.sigma[i, j]
    return EigenvalueEquation(variant, dropped, x, regular, weights, drift, diffusion,
                              coefficients)


# --------------------------------------------------------------------------------------------
# general N: Indexed objects and Sum
# --------------------------------------------------------------------------------------------

i_, j_, k_ = sp.symbols("i j k", integer=True, positive=True)
N_, M_ = sp.symbols("N M", integer=True, positive=True)
_IDX = {name: sp.IndexedBase(name) for name in ("s", "x", "g", "v", "c", "Sigma", "q", "m", "G")}


def general_eigenvalue_equation() -> dict[str, sp.Expr]:
    """The coefficients and the drift for general N, derived with Indexed moments.

    For a pair i != j only the four entries G_ii, G_jj, G_ij, G_ji of G = U^T Delta Vt enter:
    R_ij = s_i G_ji + G_ij s_j (R = S G^T + G S), so E[R_ij^2] = P_ij + (f/b) V_ij is a two-
    variable computation, and Cov(R_ii, R_jj) = C_ij another; the diagonal of H H^T gives
    m_i + (f/b) q_i by definition. Returns {'K', 'V', 'P', 'C', 'drift'} in the Indexed symbols
    (``drift`` a Sum over j with the j = i term excluded, per unit time with T = lr f / b).
    """
    s, g, v, c, sig, G = (_IDX[k] for k in ("s", "g", "v", "c", "Sigma", "G"))
    i, j = i_, j_
    second = {  # (a, b) -> Cov of the two entries, for the entries that occur
        (G[i, j], G[i, j]): v[i, j], (G[j, i], G[j, i]): v[j, i],
        (G[i, j], G[j, i]): c[i, j], (G[i, i], G[j, j]): sig[i, j],
    }
    second.update({(b, a): val for (a, b), val in list(second.items())})

    def expect(expr, gens):
        out = sp.Integer(0)
        for monom, coeff in sp.Poly(sp.expand(expr), *gens).terms():
            picked = [gg for gg, pw in zip(gens, monom, strict=True) for _ in range(pw)]
            mom = sp.Mul(*[g[gg.indices] for gg in picked])
            if len(picked) == 2:
                mom += fpc / batch * second[(picked[0], picked[1])]
            out += coeff * mom
        return out

    def r(a, b):
        return s[a] * G[b, a] + G[a, b] * s[b]

    pair = [G[i, j], G[j, i]]
    mean_sq = expect(r(i, j) ** 2, pair)
    p_ij = (s[i] * g[j, i] + s[j] * g[i, j]) ** 2
    v_ij = sp.expand((mean_sq - p_ij) * batch / fpc)
    diag = [G[i, i], G[j, j]]
    c_ij = sp.expand((expect(r(i, i) * r(j, j), diag) - expect(r(i, i), diag)
                      * expect(r(j, j), diag)) * batch / fpc)
    k_i = -expect(r(i, i), [G[i, i]])
    x, q, m = _IDX["x"], _IDX["q"], _IDX["m"]
    weight = T * v_ij + lr * p_ij
    drift = (k_i + T * q[i] + lr * m[i]
             + sp.Sum(sp.Piecewise((weight / (x[i] - x[j]), sp.Ne(i, j)), (0, True)), (j, 1, N_)))
    return {"K": k_i, "V": v_ij, "P": sp.factor(p_ij), "C": c_ij, "drift": drift}


def explicit(expr: sp.Expr, n: int, i: int | None = None, j: int | None = None) -> sp.Expr:
    """An Indexed expression of :func:`general_eigenvalue_equation` for N = ``n``, 1-based i, j.

    Sums are done and Indexed objects replaced by the symbols of :func:`moment_symbols` and
    :func:`eigenvalue_equation` (x_i, with s_i = sqrt(x_i)).
    """
    n = check_int("n", n, minimum=1)
    sub = {N_: n}
    if i is not None:
        sub[i_] = i
    if j is not None:
        sub[j_] = j
    expr = expr.subs(sub).doit()
    ms, x = moment_symbols(n), _x(n)
    table = {"x": lambda a: x[a[0] - 1], "s": lambda a: sp.sqrt(x[a[0] - 1]),
             "q": lambda a: ms.q[a[0] - 1], "m": lambda a: ms.m[a[0] - 1],
             "g": lambda a: ms.g[a[0] - 1, a[1] - 1], "v": lambda a: ms.v[a[0] - 1, a[1] - 1],
             "c": lambda a: ms.c[a[0] - 1, a[1] - 1],
             "Sigma": lambda a: ms.sigma[a[0] - 1, a[1] - 1]}
    return expr.replace(lambda e: isinstance(e, sp.Indexed),
                        lambda e: table[str(e.base)](tuple(int(a) for a in e.indices)))


# --------------------------------------------------------------------------------------------
# (d) the one-particle spacing equation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpacingCoefficients:
    """K_S, V_S, D_S of dS = (K_S + V_S T/S) dt + sqrt(2 T D_S) dB for one variant."""

    variant: str
    k_s: sp.Expr
    v_s: sp.Expr
    d_s: sp.Expr
    equation: EigenvalueEquation


def spacing_equation(n: int, *, variant: str = "complete") -> SpacingCoefficients:
    """The level-spacing equation (4.8) from the eigenvalue equation of ``variant``.

    The drift of every variant has the form a_i + sum_{j != i} w_ij/(x_i - x_j), the form of
    (B.1) with K_i -> a_i and V_ij -> w_ij / T, so K_S and V_S are those of the printed
    derivation (:func:`dysonsgd.theory.symbolic.level_spacing_equation`, ansatz (B.5)) with that
    substitution: K_S + [T (q_N - q_1) + lr (m_N - m_1)]/(N - 1) and V_S with V + (lr/T) P.
    D_S is derived here, from the correlated noise: Var(dx_N - dx_1) = T (C_NN + C_11 -
    2 C_1N) dt, so D_S = (C_11 + C_NN - 2 C_1N)/(2 (N - 1)^2) (the printed (B.9) has no C_1N).
    """
    eq = eigenvalue_equation(n, variant=variant)
    printed = symbolic.level_spacing_equation(n)
    sub = {}
    for i, ki in enumerate(printed.drift_symbols):
        sub[ki] = eq.regular[i]
        for j in range(i + 1, n):
            sub[printed.noise_matrix[i, j]] = sp.expand(eq.weights[i, j] / T)
    k_s = sp.expand(printed.k_s.subs(sub, simultaneous=True))
    v_s = sp.expand(printed.v_s.subs(sub, simultaneous=True))
    e = sp.zeros(n, 1)
    e[n - 1], e[0] = 1, -1
    d_s = sp.expand((e.T * eq.diffusion * e)[0, 0] / (2 * T * (n - 1) ** 2))
    return SpacingCoefficients(variant, k_s, v_s, d_s, eq)
