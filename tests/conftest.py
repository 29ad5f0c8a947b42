"""Shared test configuration.

Hypothesis runs derandomised (a fixed seed per test), so every run of the suite draws the same
examples: failures reproduce and CI is deterministic. The header of every run names the
versions of the scientific stack it runs on.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: the distributions whose versions the run's header prints
STACK = ("numpy", "scipy", "matplotlib", "torch", "numba", "xarray", "zarr", "h5netcdf", "h5py",
         "sympy", "dask", "mkdocs")


def stack_versions() -> str:
    """One line: python and the versions of the stack (read from the metadata, no import)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"stack: python {platform.python_version()}, " + ", ".join(
        f"{name} {installed(name)}" for name in STACK)


def pytest_sessionstart(session) -> None:
    """Print :func:`stack_versions` first, also under ``-q`` (which hides the report header)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(stack_versions())


settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
