"""The packages' layout: imports flow one way (secateurs → service → workers → search → pruning)
and no module of search/ imports itself back through another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "layer, above",
    [
        ("pruning", {"search", "workers", "service", "secateurs"}),
        ("search", {"workers", "service", "secateurs"}),
        ("workers", {"service", "secateurs"}),
        ("service", {"secateurs"}),
    ],
)
def test_layers_import_only_downward(layer: str, above: set[str]) -> None:
    """secateurs → service → workers → search → pruning: no module imports a layer above its own
    (so a Ray node running `workers` needs neither the service's code paths nor its database, and
    the server needs none of the command line)."""
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p) & above) for p in (ROOT / layer).rglob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `path` imports anywhere in its text (TYPE_CHECKING blocks and
    function bodies included): `from .x import y` counts as importing `x.y` when that is a module."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found & known


def test_search_has_no_import_circle() -> None:
    """A module of search/ never reaches itself through its imports (e.g. base → space → target →
    base): the shared types live in `search.base`, which imports no other search module."""
    files = {_module_name(p): p for p in (ROOT / "search").rglob("*.py")}
    graph = {name: _module_imports(path, set(files)) - {name} for name, path in files.items()}
    assert graph["search.base"] == set()
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.append(" → ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert circles == []
