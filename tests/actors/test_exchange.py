"""Exchange: the registry, with real actors, a manual clock and no ticker unless stated."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pykka
import pytest

from miniexchange.actors.accounts import AccountActor
from miniexchange.actors.clock import ClockActor
from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import Cancel, Issued, Submit, Subscribe, Tick
from miniexchange.actors.symbol import SymbolActor
from miniexchange.model.commands import ASK, BID, LIMIT, RegisterBroker, SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.events import Event, OrderClosed
from miniexchange.model.ledger import Balance, Holding
from miniexchange.model.orders import EXPIRED, FILLED, PARTIALLY_FILLED, PENDING, Order
from miniexchange.testing import (
    FakeDeliveries,
    ManualClock,
    RecordingJournal,
    Replies,
    SequentialIds,
    read_balance,
)
from tests.actors.conftest import SECOND, T0, WAIT_S, balance, oid, register, submit

E1 = T0 + 3600 * SECOND
THREADS = 8


def test_an_exchange_is_handed_its_delivery_pool(clock: ManualClock, ids: SequentialIds) -> None:
    """The composition root builds the pool from its settings; the exchange never builds
    one of its own with default settings."""
    with pytest.raises(TypeError, match="deliveries"):
        Exchange(clock, ids, expiration_interval_s=None)  # type: ignore[call-arg]


def limit(side: str, price: int, quantity: int, broker_id: str) -> SubmitOrder:
    return SubmitOrder(LIMIT, broker_id, "12345678900", side, "AAPL", quantity, price, E1)


def ask_actor(actor: pykka.ActorRef[Any], message_for: Any) -> Any:
    replies = Replies()
    actor.tell(message_for(replies))
    return replies.get(timeout=WAIT_S)


# -- brokers --------------------------------------------------------------------------


def test_registration_answers_the_first_balance(exchange: Exchange) -> None:
    registered = register(exchange, "broker-1", 10_000_000, GOOG=200, AAPL=5000)
    assert registered == Balance(
        "broker-1",
        10_000_000,
        0,
        (Holding("AAPL", 5000, 0), Holding("GOOG", 200, 0)),
        created_at=T0,
        updated_at=T0,
    )
    assert balance(exchange, "broker-1") == registered
    assert exchange.is_registered("broker-1")
    assert read_balance(exchange, "broker-2") is None
    assert not exchange.is_registered("broker-2")


def test_registering_twice_is_refused_and_leaves_the_broker_untouched(
    exchange: Exchange, clock: ManualClock
) -> None:
    registered = register(exchange, "broker-1", 10_000_000, AAPL=5)
    clock.advance(seconds=1)
    with pytest.raises(ExchangeError) as refused:
        register(exchange, "broker-1", 1, MSFT=1)
    assert (refused.value.code, refused.value.message) == (
        "broker_already_exists",
        "Broker broker-1 is already registered",
    )
    assert balance(exchange, "broker-1") == registered
    assert exchange.known_symbols == {"AAPL"}


def test_registration_makes_holdings_known_without_starting_symbol_actors(
    exchange: Exchange,
) -> None:
    register(exchange, "cash-only", 100)
    assert exchange.known_symbols == set()
    register(exchange, "broker-1", 0, AAPL=10, GOOG=20)
    assert exchange.known_symbols == {"AAPL", "GOOG"}
    assert exchange.existing_symbol_actor("AAPL") is None
    assert pykka.ActorRegistry.get_by_class(SymbolActor) == []


# -- symbol actors --------------------------------------------------------------------


def test_a_symbol_actor_starts_on_first_use_and_once(exchange: Exchange) -> None:
    assert exchange.existing_symbol_actor("AAPL") is None
    actor = exchange.symbol_actor("AAPL")
    assert actor.is_alive()
    assert exchange.symbol_actor("AAPL") is actor
    assert exchange.existing_symbol_actor("AAPL") is actor
    assert exchange.symbol_actor("MSFT") is not actor
    assert len(pykka.ActorRegistry.get_by_class(SymbolActor)) == 2


def test_concurrent_first_uses_start_one_actor(exchange: Exchange) -> None:
    barrier = threading.Barrier(THREADS)
    found: queue.Queue[pykka.ActorRef[Any]] = queue.Queue()

    def first_use() -> None:
        barrier.wait(timeout=WAIT_S)
        found.put(exchange.symbol_actor("AAPL"))

    threads = [threading.Thread(target=first_use) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    refs = [found.get(timeout=WAIT_S) for _ in range(THREADS)]
    for thread in threads:
        thread.join(timeout=WAIT_S)

    assert all(ref is refs[0] for ref in refs)
    assert pykka.ActorRegistry.get_by_class(SymbolActor) == [refs[0]]


def test_a_trade_through_real_actors_settles_the_worked_example(
    exchange: Exchange, clock: ManualClock
) -> None:
    """Settlement: B bids 100 @ 150.00 against S's 60 @ 148.00."""
    register(exchange, "B", 10_000_000)
    register(exchange, "S", 0, AAPL=60)
    submit(exchange, limit(ASK, 148_00, 60, "S"))
    t1 = clock.advance(seconds=1)
    placed = submit(exchange, limit(BID, 150_00, 100, "B"))

    assert (placed.status, placed.filled_quantity, placed.remaining_quantity) == (
        PARTIALLY_FILLED,
        60,
        40,
    )
    assert balance(exchange, "B") == Balance(
        "B", 9_112_000, 600_000, (Holding("AAPL", 60, 0),), created_at=T0, updated_at=t1
    )
    assert balance(exchange, "S") == Balance("S", 888_000, 0, (), created_at=T0, updated_at=t1)
    assert exchange.read_index.get(oid(1)).status == FILLED  # type: ignore[union-attr]
    assert exchange.known_symbols == {"AAPL"}


def test_a_tick_expires_through_the_real_clock_actor(
    exchange: Exchange, clock: ManualClock
) -> None:
    register(exchange, "B", 10_000_000)
    submit(exchange, limit(BID, 150_00, 100, "B"))
    assert exchange.clock_actor is not None

    clock.set(E1 - 1)
    assert exchange.clock_actor.ask(Tick(), timeout=WAIT_S) == []
    clock.set(E1)
    assert exchange.clock_actor.ask(Tick(), timeout=WAIT_S) == ["AAPL"]

    # The ExpireDue is ahead of this Cancel in the symbol's mailbox.
    refusal = ask_actor(exchange.symbol_actor("AAPL"), lambda r: Cancel(oid(1), r))
    assert isinstance(refusal, ExchangeError)
    assert refusal.message == f"Order {oid(1)} is already expired and cannot be cancelled"
    expired = exchange.read_index.get(oid(1))
    assert expired is not None
    assert (expired.status, expired.expired_at) == (EXPIRED, E1)
    assert balance(exchange, "B").reserved_cash == 0


def test_the_ticker_expires_eagerly(clock: ManualClock, ids: SequentialIds) -> None:
    closed: queue.Queue[Event] = queue.Queue()

    def hear(events: list[Event]) -> None:
        for event in events:
            closed.put(event)

    exchange = Exchange(clock, ids, FakeDeliveries(), expiration_interval_s=0.01, events=hear)
    exchange.start()
    try:
        register(exchange, "B", 10_000_000)
        submit(exchange, limit(BID, 150_00, 100, "B"))
        clock.set(E1 + SECOND)
        event = closed.get(timeout=30)  # generous: the ticker runs on real time
        assert isinstance(event, OrderClosed)
        assert (event.order.order_id, event.order.status, event.order.expired_at) == (
            oid(1),
            EXPIRED,
            E1,
        )
        # The release was told to the broker before the event was handed over.
        assert balance(exchange, "B").reserved_cash == 0
    finally:
        exchange.stop()
    assert pykka.ActorRegistry.get_all() == []


# -- stop -----------------------------------------------------------------------------


def test_stop_stops_every_actor(exchange: Exchange) -> None:
    register(exchange, "B", 100)
    register(exchange, "S", 0, AAPL=1)
    symbols = [exchange.symbol_actor("AAPL"), exchange.symbol_actor("MSFT")]
    assert exchange.clock_actor is not None
    assert len(pykka.ActorRegistry.get_by_class(ClockActor)) == 1
    assert len(pykka.ActorRegistry.get_by_class(SymbolActor)) == 2

    exchange.stop()

    assert pykka.ActorRegistry.get_all() == []
    assert not exchange.clock_actor.is_alive()
    assert not any(ref.is_alive() for ref in symbols)
    with pytest.raises(pykka.ActorDeadError):
        exchange.symbol_actor("GOOG")


def test_ten_thousand_brokers_share_the_account_actors_and_cost_no_thread(
    exchange: Exchange,
) -> None:
    threads = threading.active_count()
    replies = Replies()
    for n in range(10_000):
        exchange.register_broker(RegisterBroker(f"b{n}", n, ()), replies)
    answers = [replies.get(timeout=WAIT_S) for _ in range(10_000)]
    assert sorted(answer.cash_balance for answer in answers) == list(range(10_000))
    assert threading.active_count() == threads
    assert len(pykka.ActorRegistry.get_by_class(AccountActor)) == 2
    assert balance(exchange, "b7777").cash_balance == 7_777


def test_registering_after_stop_is_refused(exchange: Exchange) -> None:
    """A registration that races shutdown must not land after the journal closed."""
    exchange.stop()
    with pytest.raises(pykka.ActorDeadError):
        register(exchange, "late", 100)
    assert not exchange.is_registered("late")
    assert pykka.ActorRegistry.get_all() == []


class Gate:
    """An event sink that holds the symbol actor inside its message until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()

    def __call__(self, events: list[Event]) -> None:
        self.entered.set()
        self.open.wait(timeout=30)


def test_a_submission_handled_while_stopping_still_answers_its_order(
    clock: ManualClock, ids: SequentialIds
) -> None:
    """BUG: `stop()` stops the clock actor before the symbol actors, and
    `SymbolActor._announce_expiry` tells `NextExpiry` to it unguarded. A submission still
    in a symbol actor's mailbox is reserved and rests on the book, then `_finish` raises
    ActorDeadError: the requester gets that error and the facts are never journaled.
    """
    gate = Gate()
    exchange = Exchange(clock, ids, FakeDeliveries(), expiration_interval_s=None, events=gate)
    exchange.start()
    register(exchange, "B", 10_000_000)
    register(exchange, "S", 0, AAPL=60)
    submit(exchange, limit(ASK, 148_00, 60, "S"))
    crossing, resting = Replies(), Replies()
    try:
        exchange.submit(Submit(limit(BID, 148_00, 60, "B"), crossing))  # the gate holds it
        assert gate.entered.wait(timeout=WAIT_S)
        exchange.submit(Submit(limit(BID, 140_00, 10, "B"), resting))  # will rest
        # R1 forwarded it to the symbol's mailbox before it answers a later read
        assert read_balance(exchange, "B") is not None
        stopping = threading.Thread(target=exchange.stop)
        stopping.start()
        assert exchange.clock_actor is not None
        assert exchange.clock_actor.actor_stopped.wait(timeout=WAIT_S)
    finally:
        gate.open.set()

    assert crossing.get(timeout=WAIT_S).status == FILLED
    answer = resting.get(timeout=WAIT_S)
    stopping.join(timeout=WAIT_S)
    assert isinstance(answer, Order), repr(answer)
    assert (answer.order_id, answer.status) == (oid(4), PENDING)


# -- credentials ----------------------------------------------------------------------


def issue(exchange: Exchange, broker_id: str, api_key: bool, webhook_secret: bool) -> Issued:
    replies = Replies()
    exchange.issue(broker_id, api_key, webhook_secret, replies)
    answer = replies.get(timeout=WAIT_S)
    assert isinstance(answer, Issued), answer
    return answer


def test_credentials_survive_a_restart_and_a_rotated_key_stays_revoked(
    clock: ManualClock, ids: SequentialIds
) -> None:
    journal = RecordingJournal()
    first = Exchange(clock, ids, FakeDeliveries(), expiration_interval_s=None, journal=journal)
    first.start()
    register(first, "B", 100)
    register(first, "C", 100)
    old = issue(first, "B", True, True)
    new = issue(first, "B", True, False)
    other = issue(first, "C", True, False)
    first.stop()

    again = Exchange(
        clock,
        ids,
        FakeDeliveries(),
        expiration_interval_s=None,
        journal=RecordingJournal(journal.recorded),
    )
    again.start()
    try:
        credentials = again.credentials
        assert credentials.broker_with_key(new.api_key) == "B"  # type: ignore[arg-type]
        assert credentials.broker_with_key(other.api_key) == "C"  # type: ignore[arg-type]
        assert credentials.broker_with_key(old.api_key) is None  # type: ignore[arg-type]
        assert credentials.webhook_secrets == {"B": old.webhook_secret}
        # the recovered account actor rotates from what it recovered
        newest = issue(again, "B", True, False)
        assert credentials.broker_with_key(new.api_key) is None  # type: ignore[arg-type]
        assert credentials.broker_with_key(newest.api_key) == "B"  # type: ignore[arg-type]
    finally:
        again.stop()


def test_a_brokers_deliveries_are_signed_with_the_secret_issued_to_it(
    clock: ManualClock, ids: SequentialIds
) -> None:
    deliveries = FakeDeliveries()
    exchange = Exchange(clock, ids, deliveries, expiration_interval_s=None)
    exchange.start()
    try:
        register(exchange, "B", 10_000_000)
        register(exchange, "S", 0, AAPL=60)
        for broker_id in ("B", "S"):
            replies = Replies()
            exchange.dispatcher.tell(
                Subscribe(
                    broker_id, f"https://{broker_id}.example/hooks", ("trade.executed",), replies
                )
            )
            replies.get(timeout=WAIT_S)
        secret = issue(exchange, "B", False, True).webhook_secret
        submit(exchange, limit(ASK, 148_00, 10, "S"))
        submit(exchange, limit(BID, 148_00, 10, "B"))
        signed = {d.url: d.secret for d in (deliveries.get(), deliveries.get())}
        assert signed == {"https://B.example/hooks": secret, "https://S.example/hooks": None}
    finally:
        exchange.stop()
