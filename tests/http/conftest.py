"""Fixtures the schemathesis runs in process share (`test_openapi`, `test_openapi_keys`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from miniexchange.testing import FakeDeliveries
from tests.loopback_only import loopback_only


@pytest.fixture(scope="module")
def refused() -> Iterator[list[str]]:
    """Nothing of a module's run may leave the machine: every attempt is refused and
    listed here."""
    with loopback_only() as attempts:
        yield attempts


@pytest.fixture(scope="module")
def recorder() -> FakeDeliveries:
    """A module's webhook deliveries: recorded, never sent."""
    return FakeDeliveries()
