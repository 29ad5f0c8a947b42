"""MkDocs hook of the documentation site (mkdocs.yml): the API pages and the theory notebooks.

- One API page per public module of the package (every ``dysonsgd/<layer>/<module>.py`` whose
  name does not start with ``_``), generated at build time with a mkdocstrings block, so a new
  module has its page without anyone writing one; the pages join the navigation by layer.
- The notebooks of ``theory/`` (outside ``docs/``) join the site as ``theory/NAME.ipynb``;
  mkdocs-jupyter renders them (executed when ``DOCS_EXECUTE`` is not ``false``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dysonsgd"
THEORY = ROOT / "theory"
#: the layers in the order of docs/architecture.md, with their numbers
LAYERS = {"theory": 1, "model": 2, "train": 3, "measure": 3, "sde": 4, "analysis": 5,
          "monitor": 5, "runs": 6, "plots": 6, "cli": 7}


def public_modules() -> dict[str, list[str]]:
    """Layer -> dotted names of its public modules (the package's files, no import)."""
    return {layer: [f"dysonsgd.{layer}.{p.stem}"
                    for p in sorted((PACKAGE / layer).glob("*.py")) if not p.stem.startswith("_")]
            for layer in LAYERS}


def own_members(package: str) -> list[str]:
    """The public names a layer's ``__init__.py`` defines itself (not those it imports)."""
    tree = ast.parse((PACKAGE / package.removeprefix("dysonsgd.") / "__init__.py").read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return [n for n in names if not n.startswith("_")]


def api_path(module: str) -> str:
    """The page of ``module`` inside docs/ (``api/theory.rmt.md``)."""
    return "api/" + module.removeprefix("dysonsgd.") + ".md"


def notebooks() -> list[Path]:
    return sorted(THEORY.glob("*.ipynb"))


def on_config(config):
    """Add the notebooks and the API pages to the navigation."""
    nav = config["nav"]
    nav.append({"Theory notebooks": [f"theory/{nb.name}" for nb in notebooks()]})
    api = [{"Overview": "api/index.md"}]
    for layer, modules in public_modules().items():
        api.append({f"{layer} (layer {LAYERS[layer]})": [
            {"Overview": api_path(f"dysonsgd.{layer}")},
            *({m.removeprefix(f"dysonsgd.{layer}."): api_path(m)} for m in modules)]})
    nav.append({"API reference": api})
    return config


def _page(module: str, *options: str) -> str:
    """A page of ``module``: its own heading (level 1) is the page title and its anchor."""
    lines = [f"::: {module}", "    options:", "      show_root_heading: true",
             "      heading_level: 1", *(f"      {o}" for o in options)]
    return "\n".join(lines) + "\n"


@event_priority(100)  # before mkdocs-jupyter's on_files, which wraps the notebooks
def on_files(files: Files, config) -> Files:
    for nb in notebooks():
        files.append(File(f"theory/{nb.name}", src_dir=str(THEORY.parent),
                          dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    for layer, modules in public_modules().items():
        # the layer's package: its docstring and what its __init__ defines (not re-exports,
        # which have their pages in their home modules)
        package = f"dysonsgd.{layer}"
        members = own_members(package)
        files.append(File.generated(config, api_path(package), content=_page(
            package, f"members: [{', '.join(members)}]" if members else "members: false")))
        for module in modules:
            files.append(File.generated(config, api_path(module), content=_page(module)))
    return files
