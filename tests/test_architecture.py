"""The package layout of docs/architecture.md holds: layers, no import cycle, small modules.

The import graph is read from the source (every ``import`` and ``from ... import`` statement,
including those inside functions), so a lazy import that points up a layer or closes a cycle
fails here even though Python would run it.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dysonsgd"

#: rank of each layer: a module may import modules of its own rank or lower, never higher
LAYERS = {
    "_checks": 0,
    "_version": 0,
    "theory": 1,
    "model": 2,
    "train": 3,
    "measure": 3,
    "sde": 4,
    "analysis": 5,
    "monitor": 5,
    "runs": 6,
    "plots": 6,
    "cli": 7,
    "__main__": 7,
    "": 8,  # dysonsgd/__init__.py: the curated public API, above everything
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The dysonsgd modules that ``name`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = []
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.append(sub if sub in modules else source)
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a.b
                target = target.rpartition(".")[0]
            if target.startswith("dysonsgd") and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(name: str) -> int:
    parts = name.split(".")
    key = parts[1] if len(parts) > 1 else ""
    return LAYERS[key]


def test_every_module_belongs_to_a_layer():
    unknown = sorted(n for n in _modules() if n.split(".")[1:2] and n.split(".")[1] not in LAYERS)
    assert not unknown, f"modules outside the layers of docs/architecture.md: {unknown}"


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_detection_sees_a_lazy_cycle(tmp_path):
    """The graph reader itself: a cycle closed by an import inside a function is found."""
    pkg = tmp_path / "dysonsgd"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from dysonsgd import b\n")
    (pkg / "b.py").write_text("def f():\n    from dysonsgd.a import x\n")
    modules = {"dysonsgd": pkg / "__init__.py", "dysonsgd.a": pkg / "a.py",
               "dysonsgd.b": pkg / "b.py"}
    assert _imports("dysonsgd.a", modules["dysonsgd.a"], modules) == {"dysonsgd.b"}
    assert _imports("dysonsgd.b", modules["dysonsgd.b"], modules) == {"dysonsgd.a"}


def test_imports_point_down_the_layers():
    graph = _graph()
    upward = sorted(f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
                    for a, targets in graph.items() for b in targets
                    if _layer(b) > _layer(a))
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("limit, where", [(600, PACKAGE), (150, PACKAGE / "cli")])
def test_module_sizes(limit, where):
    big = {str(p.relative_to(ROOT)): n for p in where.rglob("*.py")
           if "__pycache__" not in p.parts
           and (n := len(p.read_text().splitlines())) > limit}
    assert not big, f"modules over {limit} lines: {big}"


def test_cli_computes_no_numerics():
    """cli/ parses, calls and prints: no numpy, scipy or torch arithmetic of its own."""
    offenders = []
    for path in (PACKAGE / "cli").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""])
                if any(n.split(".")[0] in ("numpy", "scipy", "torch", "numba") for n in names):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"cli modules importing numerical libraries: {offenders}"


def test_pyproject_lists_every_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    on_disk = {_module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")
               if "__pycache__" not in p.parts}
    assert listed - {"dysonsgd.configs"} == on_disk
    assert "dysonsgd.configs" in listed and (ROOT / "validation" / "__init__.py").exists()
