"""The documentation site builds with ``mkdocs build --strict`` and has every page it promises.

The test run builds the real site (mkdocs.yml) with the notebooks rendered unexecuted
(``DOCS_EXECUTE=false``): tests/test_notebooks.py executes each of them already, and executing
them again inside the build would cost about two minutes on 2 cores; ``make docs`` builds
with them executed. The pages expected are listed from the package and the folders, not from
the hook that makes them, and a small site with one broken cross-reference shows that the
build refuses it (the check has power).
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dysonsgd

ROOT = Path(__file__).resolve().parents[1]
# not --quiet: it hides the warnings from --strict too, and the build passes whatever they say
MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]
ENV = {**os.environ, "DOCS_EXECUTE": "false", "NO_MKDOCS_2_WARNING": "1"}


def _public_modules() -> list[str]:
    """Dotted names of the layers' public modules, from the package's folders (no import)."""
    found = []
    for layer in pkgutil.iter_modules(dysonsgd.__path__):
        if layer.ispkg and not layer.name.startswith("_"):
            path = Path(dysonsgd.__path__[0]) / layer.name
            found += [f"dysonsgd.{layer.name}.{m.name}" for m in pkgutil.iter_modules([str(path)])
                      if not m.ispkg and not m.name.startswith("_")]
    return sorted(found)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    done = subprocess.run([*MKDOCS, "--site-dir", str(out)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-6000:]
    return out


def test_every_public_module_has_an_api_page(site):
    modules = _public_modules()
    assert len(modules) >= 50  # the ten layers' modules
    for module in modules:
        page = site / "api" / module.removeprefix("dysonsgd.") / "index.html"
        assert page.is_file(), module
        assert f'id="{module}"' in page.read_text(), module  # the module's own anchor
    layers = {m.split(".")[1] for m in modules}
    for layer in layers:
        assert (site / "api" / layer / "index.html").is_file(), layer


def test_guides_and_notebooks_have_pages(site):
    for guide in sorted((ROOT / "docs").glob("*.md")):
        name = "" if guide.stem == "index" else guide.stem
        assert (site / name / "index.html").is_file(), guide.name
    notebooks = sorted((ROOT / "theory").glob("*.ipynb"))
    assert len(notebooks) >= 4
    for nb in notebooks:
        page = site / "theory" / nb.stem / "index.html"
        assert page.is_file(), nb.name
        assert "jp-Notebook" in page.read_text(), nb.name  # rendered by nbconvert


def test_a_cited_name_becomes_a_link(site):
    """The roles of the docstrings are cross-references: load_result's page links to
    EnsembleResult's (``:class:`~dysonsgd.train.result.EnsembleResult```)."""
    page = (site / "api" / "runs.files" / "index.html").read_text()
    assert 'href="../train.result/#dysonsgd.train.result.EnsembleResult"' in page


def test_a_broken_reference_fails_the_build(tmp_path):
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        '"""Cites :func:`dysonsgd.no_such_function`, which does not exist."""\n')
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Index\n\n::: fakepkg\n")
    (tmp_path / "mkdocs.yml").write_text(textwrap.dedent(f"""\
        site_name: broken
        plugins:
          - mkdocstrings:
              handlers:
                python:
                  paths: [{tmp_path}]
                  options:
                    docstring_style: numpy
                    extensions: [{ROOT / "docs" / "_hooks" / "roles.py"}:SphinxRoles]
        """))
    done = subprocess.run([*MKDOCS, "--site-dir", str(tmp_path / "site")], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0
    assert "dysonsgd.no_such_function" in done.stderr
