"""What the modules of `miniexchange.http` import, read from their source (imports under
`TYPE_CHECKING` count too), for the tests that hold the layer's import rules."""

from __future__ import annotations

import ast
from pathlib import Path

import miniexchange.http

HTTP = Path(miniexchange.http.__file__).parent


def absolute_imports(path: Path) -> set[str]:
    """Every module the file at `path` imports by absolute name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found
