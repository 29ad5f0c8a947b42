"""The built wheel works outside the checkout: bundled configs, the CLI, the theory commands.

The wheel is built from a copy of this checkout (so no build folder lands in it) without
network access (``--no-build-isolation``) and installed without dependencies into a fresh
virtual environment in a temporary folder; the dependencies come from the test environment's
site-packages through a ``.pth`` line (which does not run that environment's editable-install
hook, so ``import dysonsgd`` can only find the wheel). Commands run with the temporary folder
as working directory.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(bin folder of a fresh venv with the wheel installed, a working folder outside ROOT)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
        "*.zarr", "validate-report"))
    dist = tmp / "dist"
    out = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "--quiet", "-w", str(dist), str(source)], cwd=tmp)
    assert out.returncode == 0, out.stderr
    wheels = list(dist.glob("dysonsgd-*.whl"))
    assert len(wheels) == 1
    venv = tmp / "venv"
    out = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    assert out.returncode == 0, out.stderr
    bin_dir = venv / "bin"
    # this environment's pip installs into the fresh one (``--python``), no pip copied there
    out = _run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install",
                "--no-deps", "--no-index", "--quiet", str(wheels[0])], cwd=tmp)
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
    assert configs == sorted(p.name for p in (ROOT / "validation").glob("*.toml"))


def test_validate_help_and_theory_commands_run_from_the_wheel(installed):
    bin_dir, work = installed
    exe = str(bin_dir / "dysonsgd")
    out = _run([exe, "validate", "--help"], cwd=work)
    assert out.returncode == 0, out.stderr
    assert "quick" in out.stdout
    out = _run([exe, "theory", "report", "--json"], cwd=work)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report  # the numbers themselves are checked against theory in test_cli_theory
    for topic in (["mp", "--sigma-w", "0.125"], ["sigma-c"]):
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
