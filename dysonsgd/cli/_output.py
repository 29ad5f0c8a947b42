"""Printing helpers for the CLI: aligned tables for people, JSON for machines.

numpy values are recognised by their attributes (``ndim``, ``dtype``, ``tolist``, ``item``), so
that the CLI imports no numerical library.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any


def _is_array(value: Any) -> bool:
    """A numpy array of at least one dimension."""
    return getattr(value, "ndim", 0) > 0 and hasattr(value, "tolist")


def _is_scalar(value: Any) -> bool:
    """A numpy scalar (or 0-d array)."""
    return hasattr(value, "dtype") and getattr(value, "ndim", None) == 0 and hasattr(value, "item")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if _is_array(value):
        return _plain(value.tolist())
    if _is_scalar(value):
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
    if isinstance(value, float) or (_is_scalar(value) and value.dtype.kind == "f"):
        return f"{float(value):.6g}"
    if isinstance(value, (list, tuple)) or _is_array(value):
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
