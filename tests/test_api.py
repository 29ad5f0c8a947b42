"""The curated top-level API: every public name resolves to its one home, lazily."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types

import numpy as np
import pytest

import dysonsgd


@pytest.mark.parametrize("name", sorted(set(dysonsgd.__all__) - {"__version__", "where"}))
def test_public_name_is_defined_in_its_home_and_listed_there(name):
    """One home: a function or class is defined in the module ``where`` names (not re-exported
    from elsewhere), and that module lists it in its ``__all__``."""
    value = getattr(dysonsgd, name)
    home = "dysonsgd._checks" if name == "InputError" else dysonsgd.where(name)
    module = importlib.import_module(home)
    if isinstance(value, type | types.FunctionType):
        assert value.__module__ == home
    assert getattr(value, "__name__", name) in module.__all__
    assert name in dir(dysonsgd)


def test_import_loads_no_numerical_library():
    code = ("import sys, json, dysonsgd; print(json.dumps(sorted(m for m in "
            "('scipy', 'torch', 'numba', 'sympy', 'xarray', 'matplotlib') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == []


def test_top_level_calls_give_the_closed_forms():
    # the Marchenko-Pastur law (4.2): mean sigma^2, variance r sigma^4 (Narayana polynomials)
    mp = dysonsgd.marchenko_pastur(ratio=0.5, sigma2=1 / 64)
    assert mp.mean() == pytest.approx(1 / 64, rel=1e-12)
    assert mp.var() == pytest.approx(0.5 / 64**2, rel=1e-10)
    assert dysonsgd.mean_level_spacing(np.array([1.0, 2.0, 4.0])) == pytest.approx(1.5)


def test_unknown_names_are_clear_errors():
    with pytest.raises(AttributeError, match="no attribute 'trian_ensemble'"):
        dysonsgd.trian_ensemble  # noqa: B018
    with pytest.raises(dysonsgd.InputError, match="public names"):
        dysonsgd.where("trian_ensemble")
