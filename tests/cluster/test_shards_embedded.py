"""Shards against the embedded exchange, on generated streams of stamped commands.

- Sequential traffic (one command per batch, each batch settled before the next is
  cut): the answers, balances, orders, listings, books, prices and tapes of 1+1 and 2+2
  shards equal those of an embedded `Exchange` fed the same stamps, exactly. Every new
  decision of the shard mode (budgets, shortfalls decided in ME) must vanish there.
- Several commands per batch, and two batches in flight (R1 of `k+1` before R2 of `k`):
  no available cash or shares ever negative, cash and shares conserved, every ledger's
  reservations those of its active orders; and 1+1 shards decide what 2+2 shards decide
  (a decision depends on the batches, never on the placement or the threads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis
import pykka
from hypothesis import strategies as st

from miniexchange.cluster.batches import CancelOrder, SubscribeWebhooks
from miniexchange.cluster.stamped import Batch, Stamped, Tick
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from miniexchange.model.events import TRADE_EXECUTED
from miniexchange.model.ledger import Balance
from miniexchange.model.orders import Order
from miniexchange.testing import ManualClock
from tests.cluster.shard_support import (
    T0,
    Shards,
    Stamper,
    comparable,
    embedded,
    observe_embedded,
    observe_shards,
    run_embedded,
)

SYMBOLS = ("AAPL", "MSFT")  # symbol shards 0 and 1 of two
BROKERS = ("seller", "buyer", "bob", "alice")  # account shards 0, 1, 0, 1 of two
PRICES = (98, 99, 100, 101, 102)  # cents
DOC = "12345678900"
VWAP_WINDOW = 3_000_000  # short, so that trades leave it within a stream
READ_AT = T0  # the reads' clock: before the stream, so a read leaves nothing out


@dataclass(frozen=True)
class Place:
    """An order; a limit order's `expires_at` is `lifetime` steps after its `at`."""

    command: SubmitOrder
    lifetime: int


@dataclass(frozen=True)
class CancelOf:
    """A cancel of the order placed by the stream's `index`-th command (or of nothing)."""

    index: int


@dataclass(frozen=True)
class Stream:
    registrations: tuple[RegisterBroker, ...]
    commands: tuple[Place | CancelOf | SubscribeWebhooks | Tick, ...]


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    registrations = tuple(
        RegisterBroker(
            broker,
            draw(st.integers(0, 10)) * 100,
            tuple((symbol, draw(st.integers(0, 10))) for symbol in SYMBOLS),
        )
        for broker in BROKERS
    )
    commands: list[Place | CancelOf | SubscribeWebhooks | Tick] = []
    for index in range(draw(st.integers(1, 30))):
        kind = draw(
            st.sampled_from(("limit", "limit", "limit", "market", "cancel", "tick", "hook"))
        )
        broker = draw(st.sampled_from(BROKERS))
        if kind == "tick":
            commands.append(Tick())
        elif kind == "cancel":
            commands.append(CancelOf(draw(st.integers(0, max(index - 1, 0)))))
        elif kind == "hook":
            commands.append(SubscribeWebhooks(broker, "https://hooks.example/x", (TRADE_EXECUTED,)))
        else:
            side = draw(st.sampled_from((BID, ASK)))
            symbol = draw(st.sampled_from(SYMBOLS))
            quantity = draw(st.integers(1, 5))
            if kind == "market":
                command = SubmitOrder(MARKET, broker, DOC, side, symbol, quantity)
            else:
                price = draw(st.sampled_from(PRICES))
                command = SubmitOrder(LIMIT, broker, DOC, side, symbol, quantity, price, 0)
            commands.append(Place(command, draw(st.integers(1, 20))))
    return Stream(registrations, tuple(commands))


def stamped_stream(stream: Stream) -> list[Stamped]:
    """The registrations, the commands, then a tick after every order's expiry, stamped
    for two account shards (so for one as well)."""
    stamper = Stamper(account_shards=2)
    stamped = [stamper.stamp(registration) for registration in stream.registrations]
    placed: dict[int, str] = {}
    for index, command in enumerate(stream.commands):
        if isinstance(command, Place):
            order = command.command
            if order.type == LIMIT:
                order = order._replace(expires_at=stamper.at(stamper.seq + 1 + command.lifetime))
            stamped.append(stamper.stamp(order, request_id=f"req-{index}"))
            placed[index] = stamped[-1].order_id or ""
        elif isinstance(command, CancelOf):
            order_id = placed.get(command.index, "ord-00000000-0000-4000-8000-000000000000")
            stamped.append(stamper.stamp(CancelOrder(order_id)))
        else:
            stamped.append(stamper.stamp(command))
    stamper.seq += 21  # past every expiry
    stamped.append(stamper.stamp(Tick()))
    return stamped


def one_per_batch(stamped: list[Stamped]) -> list[Batch]:
    return [Batch(k, k - 1, (command,)) for k, command in enumerate(stamped, start=1)]


def cut(stamped: list[Stamped], sizes: list[int], in_flight: bool) -> list[Batch]:
    """The registrations in batch 1, the rest in batches of `sizes` (cycled); with
    `in_flight`, each batch cut while the one before is in flight (`after` = k - 2)."""
    head, rest = stamped[: len(BROKERS)], stamped[len(BROKERS) :]
    groups = [head]
    position, turn = 0, 0
    while position < len(rest):
        size = sizes[turn % len(sizes)]
        groups.append(rest[position : position + size])
        position += size
        turn += 1
    return [
        Batch(k, max(k - 2, 0) if in_flight else k - 1, tuple(group))
        for k, group in enumerate(groups, start=1)
    ]


def run_shards(
    batches: list[Batch],
    accounts: int,
    symbols: int,
    account_actors: int,
    each_phase: Callable[[Shards], None] = lambda shards: None,
) -> tuple[dict[int, Any], dict[str, Any]]:
    """The batches through fresh shards: the answers, and what they decided."""
    shards = Shards(accounts, symbols, ManualClock(READ_AT), VWAP_WINDOW, account_actors)
    try:
        sent = shards.drive(batches, lambda: each_phase(shards))
        answers = {seq: comparable(answer) for seq, answer in sent.answers.items()}
        return answers, observe_shards(shards, BROKERS, SYMBOLS)
    finally:
        shards.stop()


def run_embedded_stream(stamped: list[Stamped]) -> tuple[dict[int, Any], dict[str, Any]]:
    exchange = embedded(ManualClock(READ_AT), VWAP_WINDOW)
    try:
        answers = {}
        for command in stamped:
            answered = run_embedded(exchange, command)
            if not isinstance(command.command, Tick):  # nobody waits for a tick
                answers[command.seq] = comparable(answered)
        return answers, observe_embedded(exchange, BROKERS, SYMBOLS)
    finally:
        exchange.stop()


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(streams(), st.sampled_from(((1, 1, 1), (2, 2, 2))))
def test_sequential_traffic_through_shards_ends_as_in_the_embedded_exchange(
    stream: Stream, shape: tuple[int, int, int]
) -> None:
    stamped = stamped_stream(stream)
    try:
        expected = run_embedded_stream(stamped)
        got = run_shards(one_per_batch(stamped), *shape)
    finally:
        pykka.ActorRegistry.stop_all()
    assert got[0] == expected[0]
    assert got[1] == expected[1]


def check_invariants(stream: Stream, shards: Shards) -> None:
    """No available amount negative; cash and shares conserved (whatever is in flight)."""
    cash = shares = 0
    for broker in BROKERS:
        balance = shards.account(broker).balance(broker)
        assert balance.available_cash >= 0, balance
        assert all(holding.available_quantity >= 0 for holding in balance.holdings), balance
        cash += balance.cash_balance
        shares += sum(holding.quantity for holding in balance.holdings)
    assert cash == sum(r.initial_cash for r in stream.registrations)
    assert shares == sum(q for r in stream.registrations for _, q in r.holdings)


def check_reservations(observed: dict[str, Any]) -> None:
    """Once nothing is in flight, each ledger holds exactly its active orders' needs."""
    orders: list[Order] = list(observed["orders"].values())
    for broker in BROKERS:
        balance: Balance = observed["balances"][broker]
        active = [o for o in orders if o.broker_id == broker and o.is_active]
        assert balance.reserved_cash == sum(
            o.price * o.remaining_quantity  # type: ignore[operator]
            for o in active
            if o.side == BID
        )
        for holding in balance.holdings:
            assert holding.reserved_quantity == sum(
                o.remaining_quantity for o in active if o.side == ASK and o.symbol == holding.symbol
            )


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(streams(), st.lists(st.integers(1, 6), min_size=1, max_size=4), st.booleans())
def test_batches_of_several_commands_keep_the_invariants_and_do_not_depend_on_placement(
    stream: Stream, sizes: list[int], in_flight: bool
) -> None:
    batches = cut(stamped_stream(stream), sizes, in_flight)
    try:
        small = run_shards(batches, 1, 1, 1)
        large = run_shards(batches, 2, 2, 2, lambda shards: check_invariants(stream, shards))
    finally:
        pykka.ActorRegistry.stop_all()
    assert large == small
    check_reservations(large[1])
    answered = set(large[0])
    assert answered == {
        c.seq for batch in batches for c in batch.commands if not isinstance(c.command, Tick)
    }
