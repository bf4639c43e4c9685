"""The package's layers: who may import whom, and no import circle anywhere.

docs/architecture.md draws the picture this test enforces. Every import
statement counts, those inside functions too (a lazy import is still a
dependency); only imports under ``if TYPE_CHECKING:`` are left out, since
they never run.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PKG = ROOT / "streamlog"

# Modules that import nothing of the package but each other (the bottom layer).
LEAVES = {"streamlog.errors", "streamlog._types", "streamlog._limits", "streamlog._validate",
          "streamlog._ext", "streamlog._humanize", "streamlog._tracing"}
CONTRACT = "streamlog.api"


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (a ``from pkg import sub`` counts ``pkg.sub``
    when it is a module, else ``pkg``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.split(".")[0] == "streamlog":
                        out.add(a.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                if mod.split(".")[0] != "streamlog":
                    continue
                for a in child.names:
                    full = f"{mod}.{a.name}"
                    out.add(full if full in modules else mod)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in out if m != name}


def _graph() -> dict[str, set[str]]:
    paths = [p for p in PKG.rglob("*.py")]
    modules = {_module_name(p) for p in paths} | {"streamlog._ext"}
    return {_module_name(p): {m for m in _imports(p, modules) if m in modules}
            for p in paths}


GRAPH = _graph()


def _layer(module: str) -> str:
    if module in LEAVES:
        return "leaf"
    if module == CONTRACT:
        return "contract"
    if module.startswith("streamlog.views"):
        return "views"
    if module.startswith("streamlog.backends"):
        return "backends"
    return "top"


# layer -> the layers it may import (besides its own package's modules).
ALLOWED = {
    "leaf": {"leaf"},
    "contract": {"leaf"},
    "views": {"leaf", "contract", "views"},
    "backends": {"leaf", "contract", "views", "backends"},
    "top": {"leaf", "contract", "views", "backends", "top"},
}


def test_the_graph_is_found():
    """The walk sees the package (so an empty graph cannot pass the checks below)."""
    assert "streamlog.views.queue" in GRAPH
    assert "streamlog.backends.local.log" in GRAPH
    assert CONTRACT in GRAPH["streamlog.views.queue"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_module_imports_only_allowed_layers(module):
    layer = _layer(module)
    bad = sorted(m for m in GRAPH[module] if _layer(m) not in ALLOWED[layer])
    assert not bad, f"{module} ({layer}) imports {bad}"


def test_views_import_only_the_contract_and_leaves():
    for module, deps in GRAPH.items():
        if module.startswith("streamlog.views"):
            bad = sorted(d for d in deps if not (d in LEAVES or d == CONTRACT
                                                 or d.startswith("streamlog.views")))
            assert not bad, f"{module} imports {bad}"


def test_no_backend_imports_another_backend():
    for module, deps in GRAPH.items():
        parts = module.split(".")
        if parts[:2] != ["streamlog", "backends"] or len(parts) < 3:
            continue
        for d in deps:
            dp = d.split(".")
            assert not (dp[:2] == ["streamlog", "backends"] and len(dp) >= 3
                        and dp[2] != parts[2]), f"{module} imports {d}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_circle():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
