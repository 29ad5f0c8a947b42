"""One verdict of ``dysonsgd validate``: :class:`Check`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["VERDICTS", "Check"]

#: what a check can say: it held, it failed, or it could not have failed here
VERDICTS = ("PASS", "FAIL", "NO POWER")


@dataclass(frozen=True)
class Check:
    """One check of one forecast in one cell (or of the whole grid), and its verdict.

    Attributes
    ----------
    name : the check; temperature, inv_sigma_w : its cell (NaN for the whole grid)
    metric : the number the verdict rests on (a p-value, a ratio, a count)
    tolerance : the rule, in words
    verdict : 'PASS', 'FAIL' or 'NO POWER' (the check could not have failed in this cell: too
        few models to reach the level, or none of the negative controls aimed at it failed it
        here)
    forecast : 'replay', 'cross-fitted', 'closed-loop', or 'none' (checks of the run itself)
    expected : 'PASS'; 'FAIL' for a known disagreement declared in the config; 'either' for a
        check declared not stable across training seeds
    pvalue : the test's p-value before Holm (NaN for deterministic checks)
    details : more numbers for the report and ``--json``
    """

    name: str
    temperature: float
    inv_sigma_w: float
    metric: float
    tolerance: str
    verdict: str
    forecast: str = "none"
    expected: str = "PASS"
    pvalue: float = math.nan
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, at: tuple[float, float], metric: float, tolerance: str,
           passed: bool, **details: Any) -> Check:
        """A check with a plain PASS/FAIL verdict."""
        return cls(name, float(at[0]), float(at[1]), float(metric), tolerance,
                   "PASS" if passed else "FAIL", details=details)

    @property
    def passed(self) -> bool:
        """Not FAIL (a check without power did not fail)."""
        return self.verdict != "FAIL"

    @property
    def as_expected(self) -> bool:
        """The verdict is the expected one, or the check had no power, or either was expected."""
        return self.verdict in (self.expected, "NO POWER") or self.expected == "either"

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "temperature": self.temperature,
                "inv_sigma_w": self.inv_sigma_w, "metric": self.metric,
                "tolerance": self.tolerance, "verdict": self.verdict,
                "forecast": self.forecast, "expected": self.expected,
                "as_expected": self.as_expected, "pvalue": self.pvalue, **self.details}
