"""The engine seam holds: the HTTP layer reaches the actors layer only through
`actors.seam`, and the embedded engine offers every member of the `Engine` protocol with
the protocol's parameters (a second engine is held to the same list)."""

from __future__ import annotations

import inspect

from miniexchange.actors.seam import EmbeddedEngine, Engine
from tests.http.imports import HTTP, absolute_imports


def actors_imports() -> dict[str, set[str]]:
    """Per module of `http`, the modules of `actors` it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted(HTTP.glob("*.py")):
        for module in absolute_imports(path):
            if module == "miniexchange.actors" or module.startswith("miniexchange.actors."):
                found.setdefault(path.stem, set()).add(module)
    return found


def test_http_imports_only_the_seam_of_the_actors_layer() -> None:
    imports = actors_imports()
    assert "core" in imports  # the reader sees the imports it checks
    assert {module for modules in imports.values() for module in modules} == {
        "miniexchange.actors.seam"
    }


def protocol_members() -> list[str]:
    return sorted(
        name
        for name, value in vars(Engine).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    )


def test_the_embedded_engine_has_every_member_of_the_protocol() -> None:
    members = protocol_members()
    assert {"submit", "cancel", "book", "start", "stop", "metrics"} <= set(members)
    for name in members:
        wanted = getattr(Engine, name)
        offered = getattr(EmbeddedEngine, name, None)
        assert offered is not None, name
        assert isinstance(offered, property) == isinstance(wanted, property), name
        if not isinstance(wanted, property):
            assert list(inspect.signature(offered).parameters) == list(
                inspect.signature(wanted).parameters
            ), name
