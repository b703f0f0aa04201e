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

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import Submit
from miniexchange.model.commands import RegisterBroker, SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.ledger import Balance
from miniexchange.model.orders import Order
from miniexchange.testing import FakeDeliveries, ManualClock, Replies, SequentialIds, read_balance

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


@pytest.fixture
def exchange(clock: ManualClock, ids: SequentialIds) -> Iterator[Exchange]:
    """A started exchange without a ticker (expiry only when a test makes it happen)."""
    started = Exchange(clock, ids, FakeDeliveries(), expiration_interval_s=None)
    started.start()
    yield started
    started.stop()


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


# -- an exchange's answers, waited for ---------------------------------------------------


def register(exchange: Exchange, broker_id: str, cash: int = 0, **holdings: int) -> Balance:
    """Register and wait for the answer, given once the registration is durable."""
    replies = Replies()
    exchange.register_broker(
        RegisterBroker(broker_id, cash, tuple(sorted(holdings.items()))), replies
    )
    answer = replies.get(timeout=WAIT_S)
    if isinstance(answer, ExchangeError):
        raise answer
    assert isinstance(answer, Balance), answer
    return answer


def submit(exchange: Exchange, command: SubmitOrder) -> Order:
    """Submit and wait for the order as it stands once its step is done."""
    replies = Replies()
    exchange.submit(Submit(command, replies))
    answer = replies.get(timeout=WAIT_S)
    assert isinstance(answer, Order), answer
    return answer


def balance(exchange: Exchange, broker_id: str) -> Balance:
    """The broker's balance, which must exist."""
    read = read_balance(exchange, broker_id, WAIT_S)
    assert read is not None
    return read
