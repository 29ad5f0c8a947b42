"""Printing helpers for the CLI: aligned tables for people, JSON for machines."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def emit_json(payload: Mapping[str, Any], stream=None) -> None:
    """Write ``payload`` as indented JSON (numpy values converted to Python ones)."""
    stream = stream or sys.stdout
    json.dump(_plain(payload), stream, indent=2)
    stream.write("\n")


def format_value(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def emit_table(title: str, rows: Mapping[str, Any], stream=None) -> None:
    """Print ``rows`` as a two-column table under ``title``."""
    stream = stream or sys.stdout
    width = max((len(k) for k in rows), default=0)
    stream.write(f"{title}\n{'-' * len(title)}\n")
    for key, value in rows.items():
        stream.write(f"  {key:<{width}}  {format_value(value)}\n")
    stream.write("\n")
