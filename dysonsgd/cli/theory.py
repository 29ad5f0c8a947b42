"""``dysonsgd theory``: closed-form results of sections 2 and 4 at the command line.

    dysonsgd theory mp --ratio R --sigma-w S [--n2 N] [--json]
    dysonsgd theory sigma-c [--json]
    dysonsgd theory report [--json]

The numbers come from :mod:`dysonsgd.theory.tables`; this module prints them.
"""

from __future__ import annotations

import argparse
import math

from dysonsgd._checks import check_positive
from dysonsgd.cli._output import emit_json, emit_table
from dysonsgd.theory.paper import PAPER_WIDTHS


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
# handlers
# --------------------------------------------------------------------------------------------


def _run_mp(args: argparse.Namespace) -> int:
    from dysonsgd.theory import tables

    check_positive("--sigma-w", args.sigma_w)
    summary = tables.marchenko_pastur_table(args.ratio, args.sigma_w, args.n2)
    if args.json:
        emit_json(summary)
    else:
        emit_table(
            f"Marchenko-Pastur (4.2): r = {args.ratio:g}, sigma_W = {args.sigma_w:g}", summary
        )
    return 0


def _run_sigma_c(args: argparse.Namespace) -> int:
    from dysonsgd.theory import tables

    summary = tables.sigma_c_table(args.input_dim)
    if args.json:
        emit_json(summary)
    else:
        emit_table("Symmetry breaking of the soft-spin potential (2.21)-(2.22)", summary)
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from dysonsgd.theory import tables

    summary = tables.paper_report()
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
