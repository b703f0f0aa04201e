"""What the Ray tests share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from miniexchange.cluster.head import Head, connect, disconnect, logging_kept, start_head


def ray_or_skip() -> Any:
    """The `ray` module, or the calling test module skipped: the default test venv has
    no Ray. Imported with the log records kept, else every later test's log records
    would carry Ray's timestamp."""
    with logging_kept():
        return pytest.importorskip(
            "ray", reason="the ray extra is not installed (make .venv/.installed-ray installs it)"
        )


@contextlib.contextmanager
def joined_head() -> Iterator[Head]:
    """A local head of two CPUs, this process joined to it as a driver; both ended after."""
    with start_head(num_cpus=2) as started:
        connect(started.address)
        try:
            yield started
        finally:
            disconnect()
