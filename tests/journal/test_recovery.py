"""Recovery: replaying facts rebuilds exactly what the live exchange had.

First `recover` alone on hand-written facts, then real exchanges (real actors, a manual
clock) driven by a seeded random flow: one records its facts, a second one starts from
them, and both must hold the same state and answer every later request alike.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pykka
import pytest

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import Cancel, ReadBook, ReadPrice, Submit
from miniexchange.clock import SystemClock
from miniexchange.journal import facts
from miniexchange.journal.facts import Fact
from miniexchange.journal.recovery import Recovered, Retention, UnreadableFact, recover
from miniexchange.model.candles import CANDLES_KEPT, INTERVALS, Candle
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from miniexchange.model.engine import BookView
from miniexchange.model.errors import ExchangeError
from miniexchange.model.events import Event, OrderClosed
from miniexchange.model.idempotency import StoredAnswer
from miniexchange.model.ledger import Balance, Holding
from miniexchange.model.orders import (
    CANCELLED,
    EXPIRED,
    FILLED,
    PARTIALLY_FILLED,
    PENDING,
    Order,
    Trade,
    new_order,
)
from miniexchange.model.vwap import Price
from miniexchange.testing import (
    FakeDeliveries,
    ManualClock,
    RecordingJournal,
    Replies,
    SequentialIds,
    read_balance,
    run_expiration,
)
from tests.allocation import peaks_between, tracing
from tests.journal.support import ids_after, ids_used

SECOND = 1_000_000
T0 = ManualClock.at("2026-02-17T09:00:00Z").now()
DOC = "12345678900"
WAIT_S = 60.0


@pytest.fixture(autouse=True)
def stop_all_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


# -- recover() on hand-written facts ---------------------------------------------------


def registered(broker_id: str, cash: int, at: int, **holdings: int) -> Fact:
    return facts.broker_registered(
        RegisterBroker(broker_id, cash, tuple(sorted(holdings.items()))), at
    )


def accepted(
    order_id: str,
    broker_id: str,
    side: str,
    quantity: int,
    price: int | None,
    at: int,
    expires_at: int | None = None,
    symbol: str = "AAPL",
) -> tuple[Order, Fact]:
    kind = MARKET if price is None else LIMIT
    command = SubmitOrder(kind, broker_id, DOC, side, symbol, quantity, price, expires_at)
    order = new_order(command, order_id, at)
    return order, facts.order_accepted(order)


def traded(trade_id: str, bid: Order, ask: Order, price: int, quantity: int, at: int) -> Trade:
    return Trade(
        trade_id, bid.symbol, price, quantity, at, bid.order_id, ask.order_id, bid.broker_id,
        ask.broker_id,
    )  # fmt: skip


def test_registration_alone() -> None:
    state = recover([registered("b1", 100_00, T0, AAPL=10, GOOG=5), registered("b2", 0, T0 + 1)])
    assert state.ledgers["b1"].balance() == Balance(
        "b1", 100_00, 0, (Holding("AAPL", 10, 0), Holding("GOOG", 5, 0)), T0, T0
    )
    assert state.ledgers["b2"].balance() == Balance("b2", 0, 0, (), T0 + 1, T0 + 1)
    assert state.known_symbols == {"AAPL", "GOOG"}
    assert state.orders == {}
    assert state.trades == {}
    assert state.fact_count == 2


def test_a_partial_fill_leaves_the_rest_reserved() -> None:
    """A bid 10 @ 150.00 meets a resting ask 4 @ 148.00: 6 rest with 900.00 reserved."""
    t1, t2 = T0 + SECOND, T0 + 2 * SECOND
    ask, ask_fact = accepted("ord-1", "seller", ASK, 4, 148_00, t1, T0 + 3600 * SECOND)
    bid, bid_fact = accepted("ord-2", "buyer", BID, 10, 150_00, t2, T0 + 7200 * SECOND)
    trade = traded("trd-3", bid, ask, 148_00, 4, t2)
    state = recover(
        [
            registered("seller", 0, T0, AAPL=4),
            registered("buyer", 10_000_00, T0),
            ask_fact,
            bid_fact,
            facts.trade_executed(trade),
        ]
    )
    assert state.orders == {"ord-1": ask.filled(trade), "ord-2": bid.filled(trade)}
    assert state.orders["ord-1"].status == FILLED
    assert state.orders["ord-2"].status == PARTIALLY_FILLED
    assert list(state.orders) == ["ord-1", "ord-2"]  # in order of acceptance
    assert state.ledgers["buyer"].balance() == Balance(
        "buyer", 10_000_00 - 592_00, 6 * 150_00, (Holding("AAPL", 4, 0),), T0, t2
    )
    # sold out: the holding disappears
    assert state.ledgers["seller"].balance() == Balance("seller", 592_00, 0, (), T0, t2)
    assert {symbol: list(kept) for symbol, kept in state.trades.items()} == {"AAPL": [trade]}
    assert state.volumes == {"AAPL": trade.quantity}
    assert state.known_symbols == {"AAPL"}


def test_a_market_order_ends_with_its_remainder_cancelled() -> None:
    t1, t2 = T0 + SECOND, T0 + 2 * SECOND
    ask, ask_fact = accepted("ord-1", "seller", ASK, 3, 10_00, t1, T0 + 3600 * SECOND)
    bid, bid_fact = accepted("ord-2", "buyer", BID, 5, None, t2)
    trade = traded("trd-3", bid, ask, 10_00, 3, t2)
    state = recover(
        [
            registered("seller", 0, T0, AAPL=3),
            registered("buyer", 100_00, T0),
            ask_fact,
            bid_fact,
            facts.trade_executed(trade),
        ]
    )
    market = state.orders["ord-2"]
    assert market == bid.filled(trade).closed(CANCELLED, None, None)
    assert (market.status, market.filled_quantity, market.cancelled_quantity) == (CANCELLED, 3, 2)
    assert market.remaining_quantity == 0
    assert market.cancelled_at is None
    assert state.ledgers["buyer"].balance() == Balance(
        "buyer", 70_00, 0, (Holding("AAPL", 3, 0),), T0, t2
    )


def test_a_market_ask_fully_filled_holds_nothing() -> None:
    t1, t2 = T0 + SECOND, T0 + 2 * SECOND
    bid, bid_fact = accepted("ord-1", "buyer", BID, 5, 10_00, t1, T0 + 3600 * SECOND)
    ask, ask_fact = accepted("ord-2", "seller", ASK, 5, None, t2)
    trade = traded("trd-3", bid, ask, 10_00, 5, t2)
    state = recover(
        [
            registered("buyer", 100_00, T0),
            registered("seller", 0, T0, AAPL=8),
            bid_fact,
            ask_fact,
            facts.trade_executed(trade),
        ]
    )
    assert state.orders["ord-2"] == ask.filled(trade)
    assert state.orders["ord-2"].status == FILLED
    assert state.ledgers["seller"].balance() == Balance(
        "seller", 50_00, 0, (Holding("AAPL", 3, 0),), T0, t2
    )
    assert state.ledgers["buyer"].balance() == Balance(
        "buyer", 50_00, 0, (Holding("AAPL", 5, 0),), T0, t2
    )


def test_cancelled_and_expired_orders_hold_nothing() -> None:
    t1, t2, t3 = T0 + SECOND, T0 + 2 * SECOND, T0 + 90 * SECOND
    expires = T0 + 60 * SECOND
    bid, bid_fact = accepted("ord-1", "b1", BID, 10, 20_00, t1, expires)
    ask, ask_fact = accepted("ord-2", "b1", ASK, 7, 30_00, t1, T0 + 3600 * SECOND)
    pending, pending_fact = accepted("ord-3", "b1", ASK, 2, 31_00, t1, T0 + 3600 * SECOND)
    cancelled = ask.closed(CANCELLED, t2, None)
    expired = bid.closed(EXPIRED, None, expires)
    state = recover(
        [
            registered("b1", 1_000_00, T0, AAPL=10),
            bid_fact,
            ask_fact,
            pending_fact,
            facts.order_closed(cancelled, t2),
            facts.order_closed(expired, t3),  # processed after its expires_at
        ]
    )
    assert state.orders == {"ord-1": expired, "ord-2": cancelled, "ord-3": pending}
    assert (expired.status, expired.expired_at, expired.cancelled_quantity) == (
        EXPIRED,
        expires,
        10,
    )
    assert (cancelled.status, cancelled.cancelled_at) == (CANCELLED, t2)
    assert state.orders["ord-3"].status == PENDING
    assert state.ledgers["b1"].balance() == Balance(
        "b1", 1_000_00, 0, (Holding("AAPL", 10, 2),), T0, t3
    )


def test_webhook_subscriptions_saved_and_deleted() -> None:
    first = {"webhook_id": "wh-1", "broker_id": "b1", "event": "trade.executed", "url": "https://a"}
    second = {"webhook_id": "wh-2", "broker_id": "b1", "event": "order.expired", "url": "https://b"}
    updated = {**first, "url": "https://c"}
    state = recover(
        [
            facts.webhook_saved(first),
            facts.webhook_saved(second),
            facts.webhook_saved(updated),
            facts.webhook_deleted("wh-2"),
        ]
    )
    assert state.webhooks == {"wh-1": updated}


def test_an_unknown_fact_stops_recovery() -> None:
    with pytest.raises(UnreadableFact) as stopped:
        recover([("mystery", b"{}")])
    assert str(stopped.value) == (
        "fact 1 (mystery) cannot be replayed: ValueError(\"unknown journal fact 'mystery'\")"
    )


# -- a live exchange and its recovered twin ----------------------------------------------


BROKERS = ("b1", "b2", "b3", "b4")
SYMBOLS = ("AAPL", "GOOG")
START_CASH = 5_000_00  # 5,000.00: some bids are refused for funds
START_SHARES = 60


@dataclass
class Twin:
    """One exchange driven synchronously: each call waits for its answer."""

    exchange: Exchange
    clock: ManualClock
    journal: RecordingJournal

    @classmethod
    def start(
        cls,
        clock: ManualClock,
        ids: SequentialIds,
        journal: RecordingJournal,
        events: Callable[[list[Event]], None] | None = None,
    ) -> Twin:
        exchange = Exchange(
            clock, ids, FakeDeliveries(), expiration_interval_s=None, events=events, journal=journal
        )
        exchange.start()
        return cls(exchange, clock, journal)

    def register(self, broker_id: str, cash: int, holdings: dict[str, int]) -> Any:
        replies = Replies()
        command = RegisterBroker(broker_id, cash, tuple(sorted(holdings.items())))
        self.exchange.register_broker(command, replies)
        return replies.get(WAIT_S)

    def submit(self, command: SubmitOrder) -> Any:
        replies = Replies()
        self.exchange.submit(Submit(command, replies))
        return answer(replies.get(WAIT_S))

    def cancel(self, symbol: str, order_id: str) -> Any:
        replies = Replies()
        self.exchange.symbol_actor(symbol).tell(Cancel(order_id, replies))
        return answer(replies.get(WAIT_S))

    def balance(self, broker_id: str) -> Balance:
        balance = read_balance(self.exchange, broker_id, WAIT_S)
        assert balance is not None
        return balance

    def book(self, symbol: str) -> BookView | None:
        actor = self.exchange.existing_symbol_actor(symbol)
        if actor is None:
            return None
        replies = Replies()
        actor.tell(ReadBook(50, replies))
        return replies.get(WAIT_S)

    def price(self, symbol: str) -> Price | None:
        actor = self.exchange.existing_symbol_actor(symbol)
        if actor is None:
            return None
        replies = Replies()
        actor.tell(ReadPrice(replies))
        return replies.get(WAIT_S)

    def state(self) -> dict[str, Any]:
        """Everything a client could read, as model values."""
        index = self.exchange.read_index
        return {
            "orders": dict(index.orders),
            "listings": {b: index.broker_order_ids(b) for b in BROKERS},
            "balances": {b: self.balance(b) for b in BROKERS},
            "books": {s: self.book(s) for s in SYMBOLS},
            "prices": {s: self.price(s) for s in SYMBOLS},
            "known": set(self.exchange.known_symbols),
            "candles": {s: self.candles(s) for s in SYMBOLS},
        }

    def candles(self, symbol: str) -> dict[str, list[Candle]]:
        """The published candles of every interval, all that are kept."""
        feed = self.exchange.market_data.get(symbol)
        if feed is None:
            return {}
        return {name: feed.latest_candles(name, CANDLES_KEPT) for name in INTERVALS}

    def stop(self) -> None:
        self.exchange.stop()


def answer(value: Any) -> Any:
    """A refusal compares by its code and message, anything else as it is."""
    if isinstance(value, ExchangeError):
        return ("refused", value.code, value.message)
    assert not isinstance(value, BaseException), value
    return value


def random_flow(twin: Twin, rng: random.Random, steps: int) -> list[Any]:
    """Limit and market orders, cancels, clock moves and expiry sweeps; the answers."""
    answers: list[Any] = []
    accepted_ids: list[tuple[str, str]] = []
    for _ in range(steps):
        roll = rng.random()
        symbol = rng.choice(SYMBOLS)
        if roll < 0.1:
            twin.clock.advance(seconds=rng.randint(1, 40))
        elif roll < 0.15:
            answers.append(run_expiration(twin.exchange))
        elif roll < 0.25 and accepted_ids:
            order_symbol, order_id = rng.choice(accepted_ids)
            answers.append(twin.cancel(order_symbol, order_id))
        else:
            side = rng.choice((BID, ASK))
            broker = rng.choice(BROKERS)
            quantity = rng.randint(1, 25)
            if roll < 0.35:
                command = SubmitOrder(MARKET, broker, DOC, side, symbol, quantity)
            else:
                price = rng.randint(95, 105) * 100 + rng.choice((0, 50))
                expires_at = twin.clock.now() + rng.randint(1, 200) * SECOND
                command = SubmitOrder(LIMIT, broker, DOC, side, symbol, quantity, price, expires_at)
            result = twin.submit(command)
            answers.append(result)
            if isinstance(result, Order):
                accepted_ids.append((result.symbol, result.order_id))
        if rng.random() < 0.05:  # same-time orders: the order_id tie-break matters
            twin.clock.advance(microseconds=1)
    return answers


def begin(seed: int) -> tuple[Twin, SequentialIds, random.Random]:
    clock = ManualClock(T0)
    ids = SequentialIds()
    live = Twin.start(clock, ids, RecordingJournal())
    for broker in BROKERS:
        live.register(broker, START_CASH, dict.fromkeys(SYMBOLS, START_SHARES))
    rng = random.Random(seed)
    random_flow(live, rng, 300)
    run_expiration(live.exchange)  # the twin expires what is due on start: so must this one
    return live, ids, rng


@pytest.mark.parametrize("seed", range(6))
def test_the_recovered_exchange_equals_the_live_one_and_answers_alike(seed: int) -> None:
    live, ids, rng = begin(seed)
    before = live.state()
    assert sum(isinstance(o, Order) for o in before["orders"].values()) > 150
    for symbol, candles in before["candles"].items():  # every trade, in some 1m candles
        assert len(candles["1m"]) > 1
        assert (
            sum(c.volume for c in candles["1d"]) == live.exchange.market_data.summary(symbol).volume
        )
    used = ids_used(ids)
    twin = Twin.start(
        ManualClock(live.clock.now()), ids_after(used), RecordingJournal(live.journal.recorded)
    )
    assert twin.state() == before

    # the same requests from here on get the same answers: same ids, same time priority
    flow_seed = rng.random()
    answers_live = random_flow(live, random.Random(flow_seed), 200)
    answers_twin = random_flow(twin, random.Random(flow_seed), 200)
    assert answers_twin == answers_live
    run_expiration(live.exchange)
    run_expiration(twin.exchange)
    assert twin.state() == live.state()
    # the same facts (symbols' facts may interleave differently)
    assert sorted(twin.journal.recorded) == sorted(live.journal.recorded)
    live.stop()
    twin.stop()


def test_recovered_state_keeps_every_invariant() -> None:
    live, _, _ = begin(seed=99)
    live.stop()
    state = recover(live.journal.recorded)
    reserved_cash = dict.fromkeys(BROKERS, 0)
    reserved_shares: dict[tuple[str, str], int] = {}
    trade_sides: dict[str, list[str]] = {}
    for order in state.orders.values():
        assert order.quantity == (
            order.filled_quantity + order.remaining_quantity + order.cancelled_quantity
        )
        for trade in order.trades:
            trade_sides.setdefault(trade.trade_id, []).append(order.side)
        if order.is_active:
            if order.side == BID:
                reserved_cash[order.broker_id] += order.price * order.remaining_quantity  # type: ignore[operator]
            else:
                key = (order.broker_id, order.symbol)
                reserved_shares[key] = reserved_shares.get(key, 0) + order.remaining_quantity
    assert all(sorted(sides) == [ASK, BID] for sides in trade_sides.values())
    assert sorted(trade_sides) == sorted(t.trade_id for ts in state.trades.values() for t in ts)
    assert sum(ledger.cash for ledger in state.ledgers.values()) == START_CASH * len(BROKERS)
    for symbol in SYMBOLS:
        held = sum(ledger.holdings.get(symbol, 0) for ledger in state.ledgers.values())
        assert held == START_SHARES * len(BROKERS)
    for broker_id, ledger in state.ledgers.items():
        assert ledger.reserved_cash == reserved_cash[broker_id]
        assert ledger.available_cash >= 0
        for symbol in SYMBOLS:
            assert ledger.reserved_shares.get(symbol, 0) == reserved_shares.get(
                (broker_id, symbol), 0
            )
            assert ledger.available_shares(symbol) >= 0


def test_orders_that_fell_due_while_down_expire_at_start_with_their_events() -> None:
    clock = ManualClock(T0)
    live = Twin.start(clock, SequentialIds(), RecordingJournal())
    live.register("b1", 1_000_00, {"AAPL": 10})
    soon = live.submit(SubmitOrder(LIMIT, "b1", DOC, ASK, "AAPL", 4, 10_00, T0 + 60 * SECOND))
    later = live.submit(SubmitOrder(LIMIT, "b1", DOC, BID, "AAPL", 2, 9_00, T0 + 600 * SECOND))
    live.stop()

    clock.advance(seconds=120)  # down for two minutes: `soon` fell due
    handed_over: list[Event] = []
    twin = Twin.start(
        clock, ids_after(10), RecordingJournal(live.journal.recorded), handed_over.extend
    )
    expired = soon.closed(EXPIRED, None, soon.expires_at)
    # start() returns once the expiry is durable and published
    assert twin.exchange.read_index.get(soon.order_id) == expired
    assert twin.exchange.read_index.get(later.order_id) == later
    assert handed_over == [OrderClosed(expired)]
    assert twin.balance("b1") == Balance(
        "b1", 1_000_00, 18_00, (Holding("AAPL", 10, 0),), T0, clock.now()
    )
    assert twin.journal.recorded[-1] == facts.order_closed(expired, clock.now())
    twin.stop()


def test_a_restart_never_reads_the_clock_earlier_than_the_journal() -> None:
    future_us = 4_102_444_800_000_000  # 2100-01-01: the wall clock is far behind this
    state = recover(
        [
            facts.broker_registered(RegisterBroker("b", 0, ()), 1),
            facts.broker_registered(RegisterBroker("c", 0, ()), future_us),
        ]
    )
    assert state.last_at == future_us
    clock = SystemClock()
    clock.not_before(state.last_at)
    assert clock.now() == future_us


# -- stored Idempotency-Key answers: bounded in number and time ---------------------------

HOUR = 3600 * SECOND
REQUEST = hashlib.sha256(b'{"broker_id":"b1"}').digest()


def answered(key: str, at: int, body: bytes = b'{"order_id":"o"}') -> Fact:
    """An answer fact as the exchange journals it."""
    return facts.answer_fact(("/orders", key), StoredAnswer(REQUEST, 201, body, at))


def kept_keys(state: Recovered) -> list[str]:
    return [key for (_, key), _ in state.answers.items()]


def test_recovery_keeps_at_most_max_keys_answers_the_oldest_forgotten_first() -> None:
    journal = [answered(f"k{index}", T0 + index * SECOND) for index in range(1, 5)]
    state = recover(journal, None, Retention(idempotency_max_keys=3))
    assert kept_keys(state) == ["k2", "k3", "k4"]
    replaced = recover(
        [*journal, answered("k1", T0 + 5 * SECOND)], None, Retention(idempotency_max_keys=3)
    )
    assert kept_keys(replaced) == ["k3", "k4", "k1"]  # a new first use of a forgotten key


def test_recovery_returns_no_expired_answer() -> None:
    """Expired by the latest time the facts record (what a snapshot's fold knows), or by
    the `now` it is given; `IDEMPOTENCY_TTL` defaults to 24 h."""
    journal = [
        answered("a", T0),
        answered("b", T0 + HOUR),
        registered("late", 0, T0 + 24 * HOUR),  # a later fact of another kind
    ]
    assert kept_keys(recover(journal)) == ["b"]
    assert kept_keys(recover(journal[:2])) == ["a", "b"]
    assert kept_keys(recover(journal[:2], now=T0 + 24 * HOUR)) == ["b"]
    assert (
        kept_keys(recover(journal, None, Retention(idempotency_ttl_us=HOUR), now=T0 + 2 * HOUR))
        == []
    )


def test_an_answer_fact_of_the_earlier_encoding_is_read() -> None:
    """Journals written before kept the whole fingerprint; recovery keeps its digest."""
    fingerprint = b'{"broker_id":"b1","padding":"' + b"x" * 1000 + b'"}'
    earlier_body = b'{"error":"broker_not_found"}'
    earlier = {
        "endpoint": "/orders", "key": "old", "status": 404, "at": T0,
        "fingerprint": base64.b64encode(fingerprint).decode(),
        "body": base64.b64encode(earlier_body).decode(),
    }  # fmt: skip
    state = recover([facts.idempotent_answer(earlier), answered("new", T0 + 1)])
    assert [
        (key, answer.digest, answer.status, answer.body, answer.first_used_at)
        for key, answer in state.answers.items()
    ] == [
        (("/orders", "old"), hashlib.sha256(fingerprint).digest(), 404, earlier_body, T0),
        (("/orders", "new"), REQUEST, 201, b'{"order_id":"o"}', T0 + 1),
    ]


def test_recovering_an_order_filled_10000_times_costs_the_same_per_fill_throughout() -> None:
    """Each fill fact costs what the first ones cost, however many trades its order
    already has: replaying N fills is O(N), not O(N²). The work is counted as the bytes
    each fact's replay allocates (copying an order's trade list allocates 8 bytes per
    earlier trade: 80 KB per fact near the end here)."""
    fills = 10_000
    ask, ask_fact = accepted("ask", "seller", ASK, fills, 100_00, T0, T0 + 3600 * SECOND)
    journal = [registered("seller", 0, T0, AAPL=fills), registered("buyer", fills * 100_00, T0)]
    journal.append(ask_fact)
    for n in range(fills):
        bid, bid_fact = accepted(f"bid-{n}", "buyer", BID, 1, 100_00, T0 + 1 + n, ask.expires_at)
        journal += [
            bid_fact,
            facts.trade_executed(traded(f"trd-{n}", bid, ask, 100_00, 1, T0 + 1 + n)),
        ]
    peaks: list[int] = []
    with tracing():
        state = recover(peaks_between(journal, peaks))
    assert len(state.orders["ask"].trades) == fills and state.orders["ask"].status == FILLED
    per_fill = [
        peak for (kind, _), peak in zip(journal, peaks, strict=True) if kind == facts.TRADE_EXECUTED
    ]
    first, last = per_fill[:1000], per_fill[-1000:]
    assert sum(last) / len(last) < sum(first) / len(first) + 1024
