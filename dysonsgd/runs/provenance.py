"""Provenance of a sweep store: the config, its fingerprint, the seed scheme, versions, git."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dysonsgd.runs.config import SweepConfig

__all__ = ["git_commit", "package_versions", "provenance"]


def package_versions() -> dict[str, str]:
    """Versions of the packages that produce and hold the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("dysonsgd", "numpy", "torch", "numba", "xarray", "zarr", "dask", "distributed"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """``git describe --always --dirty --abbrev=40`` of the package's checkout, if any."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"],
                             cwd=here, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def provenance(config: SweepConfig, device: str) -> dict[str, Any]:
    """Attributes of a new store: the config, its fingerprint, the seed scheme, versions, git."""
    return {
        "sweep_config": json.dumps(config.to_dict()),
        "fingerprint": config.fingerprint(),
        "name": config.name,
        "description": config.description,
        "config": json.dumps(asdict(config.model)),
        "seed": int(config.seed),
        "replica_offset": 0,
        "seeds": int(config.seeds),
        "seed_scheme": ("numpy SeedSequence(seed, spawn_key=(r,)) for seed index r = 0..seeds-1:"
                        " W1, W2*, W3, x, Z in that order; W2(0) = sigma_W Z / sqrt(n1)"),
        "dtype": config.dtype,
        "device": str(device),
        "backend": "numba" if str(device) == "cpu" else "torch",
        "wall_time_s": 0.0,
        "model_steps": int(config.model_steps()),
        "loss_convention": "epoch mean of (2.6) with the 1/2; NaN after divergence",
        "versions": json.dumps(package_versions()),
        "git_commit": git_commit() or "",
        "created_at": time.time(),
        "sessions": "[]",
    }
