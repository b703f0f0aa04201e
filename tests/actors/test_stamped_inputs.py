"""Messages that carry their stamped inputs (`at`, an order id, a trade seed) run at that
time with those ids, whatever the clock says; without them (the embedded mode) the
actors read the clock and draw ids as before. Real actors, a manual clock left at T0."""

from __future__ import annotations

from typing import Any

import pykka

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import (
    Cancel,
    Issue,
    Issued,
    ReadPrice,
    Register,
    Submit,
    Subscribe,
    Tick,
)
from miniexchange.ids import seeded_uuid4
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from miniexchange.model.events import ORDER_CANCELLED, TRADE_EXECUTED
from miniexchange.model.ledger import Balance, Holding
from miniexchange.model.orders import CANCELLED, EXPIRED, FILLED, PENDING, Order, Trade
from miniexchange.model.subscriptions import Subscription, Upserted
from miniexchange.testing import ManualClock, Replies
from tests.actors.conftest import SECOND, T0, WAIT_S, balance, oid, register, submit

DOC = "12345678900"
E1 = T0 + 3600 * SECOND
TRADE_7_1 = "trd-94ced0f9-7911-4072-bd9f-60ed4ad96dd7"  # seeded_uuid4(7, 1), see tests/test_ids


def limit(
    side: str, price: int, quantity: int, broker_id: str, expires_at: int = E1
) -> SubmitOrder:
    return SubmitOrder(LIMIT, broker_id, DOC, side, "AAPL", quantity, price, expires_at)


def answer(send: Any) -> Any:
    replies = Replies()
    send(replies)
    return replies.get(timeout=WAIT_S)


def symbol_actor(exchange: Exchange) -> pykka.ActorRef[Any]:
    actor = exchange.existing_symbol_actor("AAPL")
    assert actor is not None
    return actor


def test_a_stamped_limit_order_runs_at_its_time_with_its_ids(exchange: Exchange) -> None:
    register(exchange, "seller", 0, AAPL=11)
    register(exchange, "buyer", 1_000_000)
    resting = submit(exchange, limit(ASK, 1_000, 10, "seller"))  # unstamped: clock and ids
    assert (resting.order_id, resting.created_at) == (oid(1), T0)
    at = T0 + 5 * SECOND  # the clock stays at T0
    bid = answer(
        lambda reply: exchange.submit(
            Submit(limit(BID, 1_000, 4, "buyer"), reply, at=at, order_id="ord-s1", trade_seed=7)
        )
    )
    trade = Trade(TRADE_7_1, "AAPL", 1_000, 4, at, "ord-s1", oid(1), "buyer", "seller")
    assert isinstance(bid, Order)
    assert (bid.order_id, bid.status, bid.created_at, tuple(bid.trades)) == (
        "ord-s1",
        FILLED,
        at,
        (trade,),
    )
    assert balance(exchange, "buyer") == Balance(
        "buyer", 996_000, 0, (Holding("AAPL", 4, 0),), T0, at
    )
    # The stamped order drew nothing from the factory: the next unstamped one is the 2nd.
    assert submit(exchange, limit(ASK, 1_100, 1, "seller")).order_id == oid(2)


def test_a_stamped_market_order_derives_one_trade_id_per_fill_from_its_seed(
    exchange: Exchange,
) -> None:
    register(exchange, "seller", 0, AAPL=10)
    register(exchange, "buyer", 1_000_000)
    submit(exchange, limit(ASK, 1_000, 2, "seller"))
    submit(exchange, limit(ASK, 1_100, 3, "seller"))
    at = T0 + 2 * SECOND
    bought = answer(
        lambda reply: exchange.submit(
            Submit(
                SubmitOrder(MARKET, "buyer", DOC, BID, "AAPL", 4),
                reply,
                at=at,
                order_id="ord-m",
                trade_seed=7,
            )
        )
    )
    assert isinstance(bought, Order)
    assert [(t.trade_id, t.price, t.quantity, t.executed_at) for t in bought.trades] == [
        (TRADE_7_1, 1_000, 2, at),
        ("trd-" + seeded_uuid4(7, 2), 1_100, 2, at),
    ]
    assert (bought.order_id, bought.created_at, bought.status) == ("ord-m", at, FILLED)


def test_a_stamped_cancel_happens_at_its_time(exchange: Exchange) -> None:
    register(exchange, "seller", 0, AAPL=10)
    resting = submit(exchange, limit(ASK, 1_000, 10, "seller"))
    at = T0 + 9 * SECOND
    cancelled = answer(
        lambda reply: symbol_actor(exchange).tell(Cancel(resting.order_id, reply, at=at))
    )
    assert isinstance(cancelled, Order)
    assert (cancelled.status, cancelled.cancelled_at) == (CANCELLED, at)
    assert balance(exchange, "seller") == Balance("seller", 0, 0, (Holding("AAPL", 10, 0),), T0, at)


def test_a_stamped_tick_expires_what_is_due_at_its_time_ahead_of_the_clock(
    exchange: Exchange,
) -> None:
    register(exchange, "seller", 0, AAPL=10)
    due_at = T0 + 10 * SECOND
    resting = submit(exchange, limit(ASK, 1_000, 10, "seller", expires_at=due_at))
    clock_actor = exchange.clock_actor
    assert clock_actor is not None
    assert clock_actor.ask(Tick(), timeout=WAIT_S) == []  # the clock's now, T0: nothing due
    assert clock_actor.ask(Tick(due_at - 1), timeout=WAIT_S) == []
    tick_at = T0 + 12 * SECOND
    assert clock_actor.ask(Tick(tick_at), timeout=WAIT_S) == ["AAPL"]
    answer(lambda reply: symbol_actor(exchange).tell(ReadPrice(reply)))  # after ExpireDue
    expired = exchange.read_index.get(resting.order_id)
    assert expired is not None
    assert (expired.status, expired.expired_at) == (EXPIRED, due_at)
    # the release happened in the step at the tick's time
    assert balance(exchange, "seller") == Balance(
        "seller", 0, 0, (Holding("AAPL", 10, 0),), T0, tick_at
    )


def test_a_stamped_registration_is_created_at_its_time(exchange: Exchange) -> None:
    at = T0 - 7 * SECOND
    registered = answer(
        lambda reply: exchange.account_actor("b").tell(
            Register(RegisterBroker("b", 500, (("AAPL", 3),)), reply, at=at)
        )
    )
    assert registered == Balance("b", 500, 0, (Holding("AAPL", 3, 0),), at, at)
    assert register(exchange, "c").created_at == T0  # unstamped: the clock's


def test_stamped_credentials_are_issued_as_stamped(exchange: Exchange) -> None:
    register(exchange, "b")
    issued = answer(
        lambda reply: exchange.account_actor("b").tell(
            Issue("b", True, True, reply, secrets=("mx_stamped", "whsec_stamped"))
        )
    )
    assert issued == Issued("b", "mx_stamped", "whsec_stamped")
    assert exchange.credentials.broker_with_key("mx_stamped") == "b"
    drawn = answer(lambda reply: exchange.account_actor("b").tell(Issue("b", True, False, reply)))
    assert drawn.api_key.startswith("mx_") and drawn.api_key != "mx_stamped"  # unstamped
    assert exchange.credentials.broker_with_key("mx_stamped") is None  # replaced


def test_a_stamped_subscription_takes_its_time_and_its_ids(exchange: Exchange) -> None:
    register(exchange, "b")
    at = T0 + 3 * SECOND
    upserted = answer(
        lambda reply: exchange.dispatcher.tell(
            Subscribe(
                "b",
                "https://example.com/hook",
                (TRADE_EXECUTED, ORDER_CANCELLED),
                reply,
                at=at,
                webhook_ids=("wh-s1", "wh-s2"),
            )
        )
    )
    url = "https://example.com/hook"
    assert upserted == Upserted(
        True,
        (
            Subscription("wh-s1", "b", TRADE_EXECUTED, url, at, at),
            Subscription("wh-s2", "b", ORDER_CANCELLED, url, at, at),
        ),
        (
            Subscription("wh-s1", "b", TRADE_EXECUTED, url, at, at),
            Subscription("wh-s2", "b", ORDER_CANCELLED, url, at, at),
        ),
    )


def test_unstamped_messages_read_the_clock_and_draw_ids_as_before(
    exchange: Exchange, clock: ManualClock
) -> None:
    register(exchange, "seller", 0, AAPL=10)
    clock.advance(seconds=4)
    resting = submit(exchange, limit(ASK, 1_000, 10, "seller"))
    assert (resting.order_id, resting.status, resting.created_at) == (
        oid(1),
        PENDING,
        T0 + 4 * SECOND,
    )
