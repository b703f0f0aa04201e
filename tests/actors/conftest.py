"""Shared pieces of the actor tests: every actor runs for real, alone, with fakes.

Nothing here sleeps: a test waits on a reply, an `ask`, or a queue `get(timeout=...)`.
Asking a recording actor for what it recorded is enough to see everything told to it
before: a pykka mailbox is FIFO.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from miniexchange.testing import ManualClock, SequentialIds

T0_ISO = "2026-02-17T09:00:00Z"
SECOND = 1_000_000  # the clock counts microseconds
T0 = ManualClock.at(T0_ISO).now()
WAIT_S = 60.0
"""How long to wait for an answer that must come; never an upper bound on speed."""


@pytest.fixture(autouse=True)
def stop_all_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock.at(T0_ISO)


@pytest.fixture
def ids() -> SequentialIds:
    return SequentialIds()


def oid(n: int) -> str:
    """The n-th id `SequentialIds` hands out, as an order id."""
    return f"ord-00000000-0000-4000-8000-{n:012d}"


def tid(n: int) -> str:
    """The n-th id `SequentialIds` hands out, as a trade id (orders and trades share n)."""
    return f"trd-00000000-0000-4000-8000-{n:012d}"


class RecordingActor(pykka.ThreadingActor):
    """Records every message it receives, in order, and also puts it on `received`.

    Stands in for a clock actor (records `NextExpiry`) or a symbol actor (records
    `ExpireDue`). Use `recorded(ref)` for the exact list so far, or `received.get(timeout)`
    to wait for a message a background thread will cause.
    """

    def __init__(self, received: queue.Queue[Any] | None = None) -> None:
        super().__init__()
        self.messages: list[Any] = []
        self.received = received

    def on_receive(self, message: Any) -> None:
        self.messages.append(message)
        if self.received is not None:
            self.received.put(message)

    def recorded(self) -> list[Any]:
        return list(self.messages)


def recorded(ref: pykka.ActorRef[Any]) -> list[Any]:
    """Every message a `RecordingActor` has handled so far."""
    return ref.proxy().recorded().get(timeout=WAIT_S)
