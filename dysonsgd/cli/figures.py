"""``dysonsgd figures``: the paper's figures 1-9 from a run, as PNG and PDF.

    dysonsgd figures RUN --out DIR [--figures 1 2 ... 9] [--convention paper|release]
                     [--format png pdf] [--dpi 150] [--chunk 256] [--json]

RUN is read with :func:`dysonsgd.runs.files.load_result`; the figures are made by
:func:`dysonsgd.plots.paper.paper_figures`. Figures that need data the run lacks (a grid figure
from a single row or column, say) are skipped with the reason, never an error. Figures 8 and 9
measure K_S and V_S at the last snapshot on the release's 128 test inputs (``--chunk`` models at
a time) and draw the (4.15) converged-fraction contours; ``--convention`` picks the paper's
signed K_S (default, :data:`dysonsgd.analysis.phase.FIGURES_CONVENTION`) or the release
notebook's absolute values. Test loss and alignment follow the paper's equations (2.6) and
(3.5), not the release's conventions (see docs/phase.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dysonsgd.cli._output import emit_json, emit_table

#: figure numbers offered (:data:`dysonsgd.plots.paper.ALL_FIGURES`, which checks them again)
FIGURES = tuple(range(1, 10))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("figures", help="the paper's figures 1-9 from a run (PNG, PDF)")
    p.add_argument("run", type=Path, help="a run written by dysonsgd train (.nc, .npz)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--figures", type=int, nargs="+", default=list(FIGURES), choices=FIGURES,
                   metavar="N", help="which figures (1-9; all)")
    p.add_argument("--convention", choices=("paper", "release"), default=None,
                   help="sign convention of (4.15) for figures 8, 9 (paper)")
    p.add_argument("--format", nargs="+", choices=("png", "pdf", "svg"), default=["png", "pdf"],
                   dest="formats", help="file formats (png pdf)")
    p.add_argument("--dpi", type=int, default=150, help="resolution of PNG files (150)")
    p.add_argument("--chunk", type=int, default=256, help="models per K/V batch (256)")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from dysonsgd._checks import check_int
    from dysonsgd.plots.paper import paper_figures
    from dysonsgd.runs.files import load_result
    from dysonsgd.runs.paths import check_output_dir

    check_int("--chunk", args.chunk)
    check_int("--dpi", args.dpi, minimum=10)
    check_output_dir("--out", args.out)
    result = load_result(args.run)

    def say(msg: str) -> None:
        if not args.json:
            print(f"dysonsgd figures: {msg}", file=sys.stderr)

    options = {} if args.convention is None else {"convention": args.convention}
    payload = paper_figures(result, args.out, figures=args.figures, formats=args.formats,
                            chunk=args.chunk, dpi=args.dpi, progress=say, **options)
    payload = {"run": str(args.run), **payload}
    if args.json:
        emit_json(payload)
        return 0
    rows: dict[str, Any] = {name: ", ".join(paths) for name, paths in payload["written"].items()}
    rows.update({name: f"skipped: {why}" for name, why in payload["skipped"].items()})
    emit_table(f"dysonsgd figures: {args.run}", rows)
    if "symmetry_breaking" in payload:
        emit_table("symmetry-breaking line (1/sigma_W)",
                   payload["symmetry_breaking"]["inv_sigma_w"])
    return 0
