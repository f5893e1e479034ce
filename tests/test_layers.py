"""The package layers hold: no import cycle between the packages of `recsight`, `models`
never imports `llm`, and the light entry points load no heavy optional dependency."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "recsight"


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every import statement, at module level or inside functions, except `if TYPE_CHECKING`
    blocks (annotations only: no dependency at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for b in node.orelse for n in _imports(ast.Module([b], [])))
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        else:
            yield from _imports(node)


def package_graph() -> dict[str, dict[str, list[str]]]:
    """package -> {imported package: [file:line ...]} over `src/recsight` (top-level modules
    such as `errors` count as packages of their own)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        pkg = rel.parts[0].removesuffix(".py")
        for mod in _imports(ast.parse(path.read_text(), str(path))):
            parts = mod.split(".")
            if parts[0] == "recsight" and len(parts) > 1 and parts[1] != pkg:
                graph[pkg][parts[1]].append(str(rel))
    return graph


def _cycle(graph) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in list(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_packages():
    graph = package_graph()
    cycle = _cycle(graph)
    where = {} if cycle is None else {
        f"{a} -> {b}": graph[a][b][:3] for a, b in zip(cycle, cycle[1:], strict=False)
    }  # fmt: skip
    assert cycle is None, f"import cycle {' -> '.join(cycle)}: {where}"


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": []}, "b": {}, "c": {"a": []}}) is None


def test_models_never_import_llm():
    assert "llm" not in package_graph()["models"], package_graph()["models"]["llm"]


@pytest.mark.parametrize(
    ("statement", "absent"),
    [
        ("import recsight.models", ("recsight.llm", "torch", "implicit")),
        ("import recsight.evaluation.metrics", ("torch", "yaml", "recsight.data.ingest")),
        ("import recsight.analysis", ("torch", "fastapi", "recsight.llm")),
        ("import recsight.cli.main", ("torch", "numpy", "pandas", "ibis", "sklearn", "fastapi")),
        # what `recsight info` needs: the store, without pandas or scipy
        ("import recsight.data.store", ("pandas", "scipy", "recsight.data.dataset")),
        # the service's start-up: sklearn's import took ~4 s of it at 100M events under load
        ("import recsight.serving.app", ("torch", "sklearn")),
    ],
)
def test_light_imports(statement, absent):
    code = f"import sys; {statement}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{statement} imported {out.stdout.strip()}"
