"""The paper's set-up (section 3.1) as constants: the widths and the (T, 1/sigma_W) grid.

Plain numbers without imports, so that the command line can offer them without loading the
numerical stack.
"""

from __future__ import annotations

__all__ = ["PAPER_INV_SIGMA_W", "PAPER_SIGMA_W", "PAPER_TEMPERATURES", "PAPER_WIDTHS"]

#: (n0, n1, n2, n3): inputs, the two hidden layers, output
PAPER_WIDTHS = (3, 32, 16, 1)
#: the paper's grid: T = 2^-5 .. 2^6 and 1/sigma_W = 2^-8 .. 2^3, ascending
PAPER_TEMPERATURES = tuple(2.0**k for k in range(-5, 7))
PAPER_INV_SIGMA_W = tuple(2.0**k for k in range(-8, 4))
#: sigma_W of the same grid, ascending (2^-3 .. 2^8)
PAPER_SIGMA_W = tuple(2.0**k for k in range(-3, 9))
