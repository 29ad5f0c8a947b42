"""The built distributions: ``python -m build`` gives an sdist and a wheel that ``twine check``
accepts, the wheel holds the bundled configs, and it works outside the checkout.

The sdist is built from a copy of this checkout (so no build folder lands in it) and the wheel
from that sdist, as ``python -m build`` does, without network access (``--no-isolation``: the
build backend is this environment's setuptools). The wheel is installed without dependencies
into a fresh virtual environment in a temporary folder; the dependencies come from the test
environment's site-packages through a ``.pth`` line (which does not run that environment's
editable-install hook, so ``import dysonsgd`` can only find the wheel), so nothing is
downloaded. Commands run with the temporary folder as working directory.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


CONFIGS = sorted(p.name for p in (ROOT / "validation").glob("*.toml"))


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """{"sdist": the .tar.gz, "wheel": the .whl} that ``python -m build`` makes."""
    tmp = tmp_path_factory.mktemp("dist")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
        "*.zarr", "validate-report", "site", ".cache"))
    dist = tmp / "dist"
    out = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist),
                str(source)], cwd=tmp)
    assert out.returncode == 0, out.stderr + out.stdout
    wheels, sdists = list(dist.glob("dysonsgd-*.whl")), list(dist.glob("dysonsgd-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    return {"sdist": sdists[0], "wheel": wheels[0]}


def test_twine_accepts_both_distributions(dists):
    out = _run([sys.executable, "-m", "twine", "check", "--strict", str(dists["sdist"]),
                str(dists["wheel"])], cwd=dists["wheel"].parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("PASSED") == 2, out.stdout


def test_distributions_hold_the_bundled_configs(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = set(whl.namelist())
    assert {f"dysonsgd/configs/{c}" for c in CONFIGS} <= names
    assert "dysonsgd/configs/__init__.py" in names
    assert not any(n.startswith(("tests/", "docs/", "theory/", "validation/")) for n in names)
    with tarfile.open(dists["sdist"]) as sdist:
        inner = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {f"validation/{c}" for c in CONFIGS} <= inner
    assert {"pyproject.toml", "README.md", "dysonsgd/__init__.py"} <= inner


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory) -> tuple[Path, Path]:
    """(bin folder of a fresh venv with the wheel installed, a working folder outside ROOT)."""
    tmp = tmp_path_factory.mktemp("wheel")
    venv = tmp / "venv"
    out = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    assert out.returncode == 0, out.stderr
    bin_dir = venv / "bin"
    # this environment's pip installs into the fresh one (``--python``), no pip copied there
    out = _run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install",
                "--no-deps", "--no-index", "--quiet", str(dists["wheel"])], cwd=tmp)
    assert out.returncode == 0, out.stderr
    purelib = _run([str(bin_dir / "python"), "-c",
                    "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
    deps = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (Path(purelib.stdout.strip()) / "zz_test_dependencies.pth").write_text(
        "\n".join(sorted(deps)) + "\n")
    work = tmp / "work"
    work.mkdir()
    return bin_dir, work


def test_imports_the_wheel_not_the_checkout(installed):
    bin_dir, work = installed
    out = _run([str(bin_dir / "python"), "-c",
                "import json, dysonsgd, importlib.resources as r; print(json.dumps("
                "[dysonsgd.__file__, sorted(p.name for p in r.files('dysonsgd.configs')"
                ".iterdir() if p.name.endswith('.toml'))]))"], cwd=work)
    assert out.returncode == 0, out.stderr
    where, configs = json.loads(out.stdout)
    assert not Path(where).resolve().is_relative_to(ROOT)
    assert Path(where).resolve().is_relative_to(bin_dir.parent.resolve())
    assert configs == CONFIGS


def test_validate_help_and_theory_commands_run_from_the_wheel(installed, capsys):
    from dysonsgd.cli import main

    bin_dir, work = installed
    exe = str(bin_dir / "dysonsgd")
    out = _run([exe, "validate", "--help"], cwd=work)
    assert out.returncode == 0, out.stderr
    assert "quick" in out.stdout
    out = _run([exe, "theory", "sigma-c", "--json"], cwd=work)
    assert out.returncode == 0, out.stderr
    # the installed command prints what the checkout prints (the numbers themselves are
    # checked against theory in test_cli_theory)
    assert main(["theory", "sigma-c", "--json"]) == 0
    assert json.loads(out.stdout) == json.loads(capsys.readouterr().out)
    for topic in (["mp", "--sigma-w", "0.125"], ["report", "--json"]):
        out = _run([exe, "theory", *topic], cwd=work)
        assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_validate_runs_its_embedded_default_from_the_wheel(installed):
    bin_dir, work = installed
    out = _run([str(bin_dir / "dysonsgd"), "validate", "--json", "--out",
                str(work / "report")], cwd=work, timeout=1800)
    assert out.returncode in (0, 1), out.stderr  # 1: a check failed, reported, not a crash
    summary = json.loads(out.stdout)
    assert summary["checks"]
    assert (work / "report" / "report.md").exists()
