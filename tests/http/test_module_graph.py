"""The modules of `miniexchange.http` import one another one way: no circle of any length.

Imports under `TYPE_CHECKING` count too: a circle there still means two modules that
cannot be understood (or moved) one without the other.
"""

from __future__ import annotations

from tests.http.imports import HTTP, absolute_imports


def http_imports() -> dict[str, set[str]]:
    return {
        f"miniexchange.http.{path.stem}": {
            module for module in absolute_imports(path) if module.startswith("miniexchange.http.")
        }
        for path in sorted(HTTP.glob("*.py"))
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import path that comes back to where it started (depth-first, colours)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_graph_is_read() -> None:
    graph = http_imports()
    assert "miniexchange.http.idempotency" in graph["miniexchange.http.core"]
    assert "miniexchange.http.errors" in graph["miniexchange.http.core"]


def test_a_circle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c", "a"]]


def test_http_modules_import_one_another_one_way() -> None:
    assert circles(http_imports()) == []
