"""What the Ray tests share."""

from __future__ import annotations

from typing import Any

import pytest

from miniexchange.cluster.head import logging_kept


def ray_or_skip() -> Any:
    """The `ray` module, or the calling test module skipped: the default test venv has
    no Ray. Imported with the log records kept, else every later test's log records
    would carry Ray's timestamp."""
    with logging_kept():
        return pytest.importorskip(
            "ray", reason="the ray extra is not installed (make .venv/.installed-ray installs it)"
        )
