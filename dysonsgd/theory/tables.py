"""The closed-form tables of ``dysonsgd theory``: sections 2 and 4 for given sizes, and the paper's
set-up in one report.

marchenko_pastur_table
    Edges, moments and the initial spacing bound (4.14) of the Marchenko-Pastur law (4.2).
sigma_c_table
    sigma_c^2 of the soft-spin potential (2.21)-(2.22), numerically and symbolically, and the
    symmetry-breaking line in 1/sigma_W under each estimate of sigma_z^2 / sigma_W^2.
paper_report
    Everything above for the paper's widths and grid (section 3.1), with the Wishart moments
    (2.24), the left-hand side of (4.15) and a check of (B.7)-(B.9) against their symbolic form.

Each returns a dict of plain numbers (the CLI prints or dumps it as JSON).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from dysonsgd._checks import check_positive
from dysonsgd.theory import disorder, rmt, symbolic
from dysonsgd.theory.paper import PAPER_INV_SIGMA_W, PAPER_TEMPERATURES, PAPER_WIDTHS

__all__ = [
    "marchenko_pastur_table",
    "paper_report",
    "sigma_c_table",
]



def marchenko_pastur_table(ratio: float, sigma_w: float, n2: int) -> dict[str, Any]:
    """Edges, moments and the initial spacing bound for one (r = n2/n1, sigma_W, n2).

    X = W2 W2^T at initialisation, W2 ~ N(0, sigma_W^2 / n1) (2.11), follows (4.2) with scale
    sigma^2 = sigma_W^2; ``spread_bound`` is (n2 - 1) times the bound (4.14) on S(0).
    """
    check_positive("sigma_w", sigma_w)
    sigma2 = sigma_w**2
    lo, hi = rmt.marchenko_pastur_edges(ratio, sigma2)
    dist = rmt.marchenko_pastur(ratio=ratio, sigma2=sigma2)
    mean, var, skew, kurt = (float(v) for v in dist.stats(moments="mvsk"))
    bound = rmt.initial_spacing_bound(sigma2, ratio, n2)
    return {
        "ratio": ratio,
        "sigma_w": sigma_w,
        "inv_sigma_w": 1.0 / sigma_w,
        "sigma2": sigma2,
        "x_minus": lo,
        "x_plus": hi,
        "mean": mean,
        "variance": var,
        "skewness": skew,
        "excess_kurtosis": kurt,
        "moments": [float(dist.moment(k)) for k in range(1, 5)],
        "n2": n2,
        "initial_spacing_bound": bound,
        "spread_bound": (n2 - 1) * bound,
    }


def sigma_c_table(input_dim: int = PAPER_WIDTHS[0]) -> dict[str, Any]:
    """sigma_c^2 from the potential's curvature, numerically and symbolically, and the lines.

    ``sigma_z2_per_sigma_w2_*`` is sigma_z^2 / sigma_W^2 of the last hidden layer by the
    Gaussian recursion (2.19) and exactly over ``input_dim`` Gaussian inputs; the line is
    1/sigma_W = sqrt(ratio / sigma_c^2).
    """
    numeric = disorder.critical_variance()
    derived = symbolic.critical_variance()
    gain_gaussian = float(disorder.preactivation_variances([1.0, 1.0])[-1])
    gain_exact = float(disorder.preactivation_variances([1.0, 1.0], input_dim=input_dim)[-1])
    return {
        "sigma_c2": numeric,
        "sigma_c2_symbolic": str(derived),
        "potential_c2": "1/(2 sigma_z^2) - 1",
        "potential_c4": "1/(3 sigma_z^2) - 1/2",
        "inv_sigma_w_c_paper": 1.0 / math.sqrt(numeric),
        "sigma_z2_per_sigma_w2_gaussian": gain_gaussian,
        "sigma_z2_per_sigma_w2_exact": gain_exact,
        "input_dim": input_dim,
        "inv_sigma_w_c_gaussian": math.sqrt(gain_gaussian / numeric),
        "inv_sigma_w_c_exact": math.sqrt(gain_exact / numeric),
    }


def paper_report() -> dict[str, Any]:
    """Everything the theory modules give for the paper's widths and grid.

    ``marchenko_pastur_grid``: x_+ of (4.2) and the bound (4.14) at each 1/sigma_W;
    ``paper_check``: x_+ at the grid's ends against the paper's 0.046 and 1.9e5;
    ``wishart_2_24``: the moments of J = W^T W (2.24); ``boundary_4_15_lhs``: the left-hand side
    (n2 - 1) T / (4 sqrt(r) sigma_W^2) of (4.15) at three temperatures;
    ``spacing_coefficients_symbolic_vs_numeric_N5``: the largest difference between (B.7)-(B.9)
    evaluated numerically and through their symbolic form, for random K, V with N = 5.
    """
    start = time.perf_counter()
    n0, n1, n2, n3 = PAPER_WIDTHS
    ratio = n2 / n1
    grid = [
        {
            "inv_sigma_w": inv,
            "x_plus": rmt.marchenko_pastur_edges(ratio, inv**-2)[1],
            "initial_spacing_bound": rmt.initial_spacing_bound(inv**-2, ratio, n2),
        }
        for inv in PAPER_INV_SIGMA_W
    ]
    # (4.15): divergence when (n2 - 1) T / (4 sqrt(r) sigma_W^2) > -K_S/V_S; tabulate the LHS
    lhs = {
        f"T=2^{round(math.log2(t))}": [
            (n2 - 1) * t * inv**2 / (4 * math.sqrt(ratio)) for inv in PAPER_INV_SIGMA_W
        ]
        for t in (PAPER_TEMPERATURES[0], 1.0, PAPER_TEMPERATURES[-1])
    }
    mean_j, cov_j = rmt.wishart_moments(n2, n1, 1.0)
    spacing = symbolic.level_spacing_equation(5)
    rng = np.random.default_rng(0)
    k, a = np.sort(rng.normal(size=5)), rng.normal(size=(5, 5))
    v = a @ a.T
    agreement = float(
        np.max(
            np.abs(
                np.array(spacing.lambdify()(k.tolist(), v.tolist()))
                - np.array(rmt.spacing_coefficients(k, v))
            )
        )
    )
    return {
        "widths": list(PAPER_WIDTHS),
        "ratio": ratio,
        "marchenko_pastur_grid": grid,
        "paper_check": {
            "x_plus_at_inv_sigma_w_8": grid[-1]["x_plus"],
            "x_plus_at_inv_sigma_w_2^-8": grid[0]["x_plus"],
            "paper_values": [0.046, 1.9e5],
        },
        "wishart_2_24": {
            "E[J_ii]/sigma_W^2": float(mean_j[0, 0]),
            "Var[J_ii]/sigma_W^4": float(cov_j[0, 0, 0, 0]),
            "Var[J_ij]/sigma_W^4": float(cov_j[0, 1, 0, 1]),
            "n_out": n2,
            "n_hidden": n1,
        },
        "sigma_c": sigma_c_table(n0),
        "boundary_4_15_lhs": {"inv_sigma_w": list(PAPER_INV_SIGMA_W), **lhs},
        "spacing_coefficients_symbolic_vs_numeric_N5": agreement,
        "output_width": n3,
        "wall_time_s": time.perf_counter() - start,
    }
