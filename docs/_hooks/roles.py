"""Griffe extension of the documentation site: Sphinx roles in docstrings become cross-references.

The docstrings cite other objects the Sphinx way (``:func:`dysonsgd.runs.files.load_result```,
``:class:`~dysonsgd.train.result.EnsembleResult```); mkdocstrings renders Markdown, so each
role is rewritten into an autorefs link (``[`load_result`][dysonsgd.runs.files.load_result]``)
before rendering, and a constant's ``#:`` comment becomes its docstring. The build runs with
``--strict``, so a reference to a dysonsgd object that has no page fails it. Where a role names

- an object of the package by its bare name (``:func:`train_ensemble```), it is qualified when
  exactly one public module defines that name, else resolved from the docstring's scope;
- a private object (a ``_name`` anywhere in its path) or another package's object (numpy,
  matplotlib, ...: no inventories are fetched, the build is offline), it stays code text.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import griffe

PACKAGE = Path(__file__).resolve().parents[2] / "dysonsgd"
#: ``:role:`target``` or ``:role:`title <target>```; roles of the Python domain only
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc|const):`([^`]+)`")


@cache
def _public_names() -> dict[str, list[str]]:
    """Bare name -> qualified names of the top-level definitions of the public modules."""
    names: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        module = ".".join(p for p in parts if p != "__init__")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found = [node.name]
            elif isinstance(node, ast.Assign):
                found = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                found = [node.target.id]
            else:
                found = []
            for name in found:
                if not name.startswith("_"):
                    names.setdefault(name, []).append(f"{module}.{name}")
    return names


#: bare names of other packages that roles cite
_FOREIGN_BARE = {"numpy", "scipy", "torch", "xarray", "zarr", "dask", "matplotlib", "sympy"}


def _in_scope(obj: griffe.Object, head: str) -> griffe.Object | griffe.Alias | None:
    """The member ``head`` seen from ``obj``: its own, its parents', its module's (imports too)."""
    scope = obj
    while scope is not None:
        try:
            if head in scope.members:
                return scope.members[head]
        except griffe.AliasResolutionError:
            return None
        scope = scope.parent
    return None


def _documented_path(found: griffe.Object | griffe.Alias) -> str | None:
    """Where ``found`` has its page: its own path, or its target's for an import; None if that
    is private or cannot be resolved (then no page documents it)."""
    try:
        path = found.final_target.path if isinstance(found, griffe.Alias) else found.path
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    return None if any(part.startswith("_") for part in path.split(".")) else path


def _target(obj: griffe.Object, target: str) -> str | None:
    """The identifier to link for ``target`` cited in ``obj``'s docstring; None: code text."""
    head, _, rest = target.partition(".")
    if head in _FOREIGN_BARE or (rest and head != "dysonsgd" and _in_scope(obj, head) is None
                                 and head not in _public_names()):
        return None  # another package's object: no inventory offline
    if head == "dysonsgd":
        root = obj.package
        try:
            found = root.get_member(target.removeprefix("dysonsgd.")) if rest else root
        except (KeyError, griffe.AliasResolutionError):
            found = None
        if found is None:  # not an object of the package: let the build report it
            return None if any(p.startswith("_") for p in target.split(".")) else target
        return _documented_path(found)
    found = _in_scope(obj, head)
    if found is not None:
        base = _documented_path(found)
        return None if base is None else base + (f".{rest}" if rest else "")
    homes = _public_names().get(head, [])
    if len(homes) == 1:
        return homes[0] + (f".{rest}" if rest else "")
    return target  # unknown: the build reports it


def _rewrite(obj: griffe.Object, text: str) -> str:
    def link(match: re.Match) -> str:
        text = match.group(1).strip()
        titled = re.fullmatch(r"(.+?)\s*<(.+)>", text)
        if titled:
            title, target = titled.group(1), titled.group(2)
        else:
            target = text.lstrip("~")
            title = target.rsplit(".", 1)[-1] if text.startswith("~") else target
        resolved = _target(obj, target.removesuffix("()").lstrip("~."))
        return f"`{title}`" if resolved is None else f"[`{title}`][{resolved}]"

    return ROLE.sub(link, text)


def _comment_docstring(obj: griffe.Attribute) -> str | None:
    """The ``#:`` comment lines right above an attribute's assignment, as its docstring."""
    if obj.lineno is None or obj.filepath is None or isinstance(obj.filepath, list):
        return None
    lines = Path(obj.filepath).read_text().splitlines()
    i, found = obj.lineno - 2, []
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        found.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    return " ".join(found) or None


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class SphinxRoles(griffe.Extension):
    """``#:`` comments become docstrings; once the package is loaded, every docstring's roles
    are rewritten (the whole tree is known then, imports included)."""

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs) -> None:
        if attr.docstring is None:
            text = _comment_docstring(attr)
            if text:
                attr.docstring = griffe.Docstring(text, parent=attr)

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(obj, obj.docstring.value)
