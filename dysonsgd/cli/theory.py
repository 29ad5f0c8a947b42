"""``dysonsgd theory``: closed-form results of sections 2 and 4 at the command line.

dysonsgd theory mp --ratio R --sigma-w S [--n2 N] [--json]
dysonsgd theory sigma-c [--json]
dysonsgd theory report [--json]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from dysonsgd._checks import check_positive
from dysonsgd.cli._output import emit_json, emit_table
from dysonsgd.theory import disorder, rmt, symbolic

#: the paper's set-up (section 3.1): widths (n0, n1, n2, n3) and the grid of 1/sigma_W
PAPER_WIDTHS = (3, 32, 16, 1)
PAPER_INV_SIGMA_W = tuple(2.0**k for k in range(-8, 4))
PAPER_TEMPERATURES = tuple(2.0**k for k in range(-5, 7))


def register(subparsers: argparse._SubParsersAction) -> None:
    theory = subparsers.add_parser(
        "theory", help="closed-form theory: Marchenko-Pastur, sigma_c, a report"
    )
    sub = theory.add_subparsers(dest="theory_command", metavar="TOPIC", required=True)

    mp = sub.add_parser("mp", help="Marchenko-Pastur law (4.2) of X = W2 W2^T at initialisation")
    mp.add_argument("--ratio", type=float, default=0.5, help="r = n2/n1 in (0, 1] (default 0.5)")
    mp.add_argument(
        "--sigma-w", type=float, required=True, help="sigma_W > 0 (not squared), eq. (2.11)"
    )
    mp.add_argument(
        "--n2", type=int, default=16, help="number of eigenvalues for the bound (4.14) (16)"
    )
    mp.add_argument("--json", action="store_true", help="machine-readable output")
    mp.set_defaults(handler=_run_mp)

    sc = sub.add_parser("sigma-c", help="symmetry-breaking variance sigma_c^2 (section 2.3)")
    sc.add_argument(
        "--input-dim", type=int, default=PAPER_WIDTHS[0], help="n0 of the teacher (default 3)"
    )
    sc.add_argument("--json", action="store_true", help="machine-readable output")
    sc.set_defaults(handler=_run_sigma_c)

    report = sub.add_parser("report", help="all closed-form results for the paper's set-up")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.set_defaults(handler=_run_report)


# --------------------------------------------------------------------------------------------
# computations (pure: they return dictionaries; printing happens in the handlers)
# --------------------------------------------------------------------------------------------


def mp_summary(ratio: float, sigma_w: float, n2: int) -> dict[str, Any]:
    """Edges, moments and the initial spacing bound for one (ratio, sigma_W, n2)."""
    check_positive("--sigma-w", sigma_w)
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


def sigma_c_summary(input_dim: int = PAPER_WIDTHS[0]) -> dict[str, Any]:
    """sigma_c^2 from the potential's curvature, numerically and symbolically, and the lines."""
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


def report_summary() -> dict[str, Any]:
    """Everything the theory modules give for the paper's widths and grid."""
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
        "sigma_c": sigma_c_summary(n0),
        "boundary_4_15_lhs": {"inv_sigma_w": list(PAPER_INV_SIGMA_W), **lhs},
        "spacing_coefficients_symbolic_vs_numeric_N5": agreement,
        "output_width": n3,
        "wall_time_s": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------------------------
# handlers
# --------------------------------------------------------------------------------------------


def _run_mp(args: argparse.Namespace) -> int:
    summary = mp_summary(args.ratio, args.sigma_w, args.n2)
    if args.json:
        emit_json(summary)
    else:
        emit_table(
            f"Marchenko-Pastur (4.2): r = {args.ratio:g}, sigma_W = {args.sigma_w:g}", summary
        )
    return 0


def _run_sigma_c(args: argparse.Namespace) -> int:
    summary = sigma_c_summary(args.input_dim)
    if args.json:
        emit_json(summary)
    else:
        emit_table("Symmetry breaking of the soft-spin potential (2.21)-(2.22)", summary)
    return 0


def _run_report(args: argparse.Namespace) -> int:
    summary = report_summary()
    if args.json:
        emit_json(summary)
        return 0
    emit_table(
        "Paper set-up",
        {"widths (n0, n1, n2, n3)": summary["widths"], "ratio r = n2/n1": summary["ratio"]},
    )
    emit_table(
        "Marchenko-Pastur upper edge x_+ and spacing bound (4.14) over 1/sigma_W",
        {
            f"1/sigma_W = 2^{round(math.log2(row['inv_sigma_w'])):+d}": (
                f"x_+ = {row['x_plus']:.4g}   S(0) <= {row['initial_spacing_bound']:.4g}"
            )
            for row in summary["marchenko_pastur_grid"]
        },
    )
    lhs = summary["boundary_4_15_lhs"]
    emit_table(
        "LHS of the boundary (4.15), (n2 - 1) T / (4 sqrt(r) sigma_W^2), at 1/sigma_W = 2^-8..2^3",
        {key: [f"{v:.3g}" for v in vals] for key, vals in lhs.items() if key != "inv_sigma_w"},
    )
    emit_table("Check against the paper (x_+ = 0.046 and 1.9e5)", summary["paper_check"])
    emit_table("Wishart couplings J = W^T W, eq. (2.24)", summary["wishart_2_24"])
    emit_table("Symmetry breaking, section 2.3", summary["sigma_c"])
    emit_table(
        "Level-spacing coefficients (B.7)-(B.9)",
        {"max |symbolic - numeric|, N = 5": summary["spacing_coefficients_symbolic_vs_numeric_N5"]},
    )
    print(f"report computed in {summary['wall_time_s']:.2f} s")
    return 0
