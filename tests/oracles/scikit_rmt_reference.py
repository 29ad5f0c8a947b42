"""Reference values of the Marchenko-Pastur law (4.2) from scikit-rmt, for tests/test_rmt.py.

scikit-rmt (2.1.1) pins numpy<=1.26.4, scipy<=1.12.0 and matplotlib<=3.8.4, so it is not part
of the project's environment. Its values are generated once, by this script, in a throwaway
virtual environment, and stored as a small JSON file that the tests compare against:

    python3 -m venv /tmp/skrmt-venv
    /tmp/skrmt-venv/bin/pip install scikit-rmt==2.1.1
    /tmp/skrmt-venv/bin/python tests/oracles/scikit_rmt_reference.py \
        --out tests/data/scikit_rmt_marchenko_pastur.json
    rm -rf /tmp/skrmt-venv

The script imports only scikit-rmt and numpy (never dysonsgd), so the stored numbers are the
oracle's alone. For each (ratio, sigma) of a fixed grid that spans the range of the old
hypothesis test (ratio in [0.02, 1], sigma in [1e-3, 1e3]) it records the oracle's support
edges and its pdf and cdf at 15 interior points of that support. Rerun it only to change the
grid or the oracle's version; the file records both.
"""

from __future__ import annotations

import argparse
import json
import platform
from importlib.metadata import version
from pathlib import Path

import numpy as np
from skrmt.ensemble.spectral_law import MarchenkoPasturDistribution

RATIOS = (0.02, 0.1, 0.25, 0.5, 0.9, 1.0)
SIGMAS = (1e-3, 0.125, 1.0, 1e3)
POINTS = 15


def reference() -> dict:
    """The oracle's edges, pdf and cdf on the grid, as plain floats (JSON keeps them exact)."""
    cases = []
    for ratio in RATIOS:
        for sigma in SIGMAS:
            oracle = MarchenkoPasturDistribution(ratio=ratio, beta=1, sigma=sigma)
            lo, hi = float(oracle.lambda_minus), float(oracle.lambda_plus)
            x = np.linspace(lo, hi, POINTS + 2)[1:-1]
            cases.append({
                "ratio": ratio,
                "sigma": sigma,
                "lambda_minus": lo,
                "lambda_plus": hi,
                "x": x.tolist(),
                "pdf": np.asarray(oracle.pdf(x), dtype=float).tolist(),
                "cdf": np.asarray(oracle.cdf(x), dtype=float).tolist(),
            })
    return {
        "oracle": f"scikit-rmt {version('scikit-rmt')}",
        "environment": f"python {platform.python_version()}, numpy {np.__version__}",
        "law": "MarchenkoPasturDistribution(ratio, beta=1, sigma): variance sigma**2",
        "cases": cases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args()
    args.out.write_text(json.dumps(reference(), indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
