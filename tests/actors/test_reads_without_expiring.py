"""A symbol actor's book, quote and price reads with `expire=False` leave the due orders
out of the answer and on the book: nothing expires, nothing is released, no event. The
default reads expire first, as before. Real actors, a manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import ReadBook, ReadPrice, ReadQuote
from miniexchange.model.book import Level
from miniexchange.model.commands import ASK, BID, LIMIT, SubmitOrder
from miniexchange.model.engine import BookView, QuoteView
from miniexchange.model.events import Event, OrderClosed
from miniexchange.model.ledger import Holding
from miniexchange.model.orders import EXPIRED, PENDING
from miniexchange.model.vwap import Price
from miniexchange.testing import FakeDeliveries, ManualClock, Replies, SequentialIds
from tests.actors.conftest import SECOND, T0, WAIT_S, balance, register, submit

DOC = "12345678900"
DUE = T0 + 10 * SECOND
FAR = T0 + 3600 * SECOND


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def exchange(clock: ManualClock, ids: SequentialIds, events: list[Event]) -> Iterator[Exchange]:
    started = Exchange(
        clock, ids, FakeDeliveries(), expiration_interval_s=None, events=events.extend
    )
    started.start()
    yield started
    started.stop()


def read(exchange: Exchange, message_for: Any) -> Any:
    actor = exchange.existing_symbol_actor("AAPL")
    assert actor is not None
    replies = Replies()
    actor.tell(message_for(replies))
    return replies.get(timeout=WAIT_S)


def test_reads_without_expiring_leave_the_due_order_on_the_book(
    exchange: Exchange, clock: ManualClock, events: list[Event]
) -> None:
    register(exchange, "seller", 0, AAPL=20)
    register(exchange, "buyer", 10_000)
    due = submit(exchange, SubmitOrder(LIMIT, "seller", DOC, ASK, "AAPL", 10, 1_000, DUE))
    submit(exchange, SubmitOrder(LIMIT, "seller", DOC, ASK, "AAPL", 5, 1_100, FAR))
    submit(exchange, SubmitOrder(LIMIT, "buyer", DOC, BID, "AAPL", 2, 900, DUE))
    clock.set(DUE)
    kept_book = BookView([], [Level(1_100, 5, 1)], DUE)
    assert read(exchange, lambda reply: ReadBook(10, reply, expire=False)) == kept_book
    assert read(exchange, lambda reply: ReadQuote(BID, 7, reply, expire=False)) == QuoteView(
        [Level(1_100, 5, 1)], DUE
    )
    assert read(exchange, lambda reply: ReadPrice(reply, expire=False)) == Price(None, 0, None)
    published = exchange.read_index.get(due.order_id)
    assert published is not None and published.status == PENDING
    assert balance(exchange, "seller").holdings == (Holding("AAPL", 20, 15),)
    assert balance(exchange, "buyer").reserved_cash == 1_800
    assert events == []
    # The default read expires them first: the same view, and now they are gone.
    assert read(exchange, lambda reply: ReadBook(10, reply)) == kept_book
    expired = exchange.read_index.get(due.order_id)
    assert expired is not None and (expired.status, expired.expired_at) == (EXPIRED, DUE)
    assert balance(exchange, "seller").holdings == (Holding("AAPL", 20, 5),)
    assert balance(exchange, "buyer").reserved_cash == 0
    assert [(type(event), event.order.status) for event in events] == [
        (OrderClosed, EXPIRED),
        (OrderClosed, EXPIRED),
    ]


def test_a_price_read_without_expiring_answers_as_the_default_one(
    exchange: Exchange, clock: ManualClock
) -> None:
    register(exchange, "seller", 0, AAPL=20)
    register(exchange, "buyer", 100_000)
    submit(exchange, SubmitOrder(LIMIT, "seller", DOC, ASK, "AAPL", 10, 1_000, FAR))
    submit(exchange, SubmitOrder(LIMIT, "buyer", DOC, BID, "AAPL", 4, 1_000, FAR))
    clock.advance(seconds=299)  # the default window is 5 minutes
    traded = Price(1_000, 1, T0)
    assert read(exchange, lambda reply: ReadPrice(reply, expire=False)) == traded
    assert read(exchange, lambda reply: ReadPrice(reply)) == traded
    clock.advance(seconds=2)
    left = Price(1_000, 0, T0)
    assert read(exchange, lambda reply: ReadPrice(reply, expire=False)) == left
    assert read(exchange, lambda reply: ReadPrice(reply)) == left
