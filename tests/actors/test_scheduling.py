"""Deterministic inputs make the state independent of the thread scheduling.

One stream of commands, each stamped as the sequencer will stamp it (its time `at`, its
order id, its trade seed; a tick carries its `at`), goes through two fresh exchanges of
real actors: once from one thread in stream order, through the clock actor for the
ticks; once from one thread per symbol, each sending its symbol's commands in stream
order (a tick as that symbol's `ExpireDue`), all at once. The answers, ledgers, orders,
books, tapes and prices must be equal. The two exchanges' clocks read different times,
long before the stream, and their ids are random: a value the stream did not stamp
would differ.

Per-symbol order is all the second run keeps, so what a symbol decides must not depend
on another symbol's commands: the local brokers trade on one symbol each (tight funds,
so refusals happen), and the broker trading on every symbol holds enough never to be
refused, which would otherwise depend on which symbol came first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis
import pykka
from hypothesis import strategies as st

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import (
    Cancel,
    ExpireDue,
    ReadBalance,
    ReadBook,
    ReadPrice,
    Register,
    Submit,
    Tick,
)
from miniexchange.ids import RandomIds
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.testing import FakeDeliveries, ManualClock, Replies
from tests.actors.conftest import SECOND, T0, WAIT_S

SYMBOLS = ("AAA", "BBB", "CCC")
LOCAL = {symbol: (symbol.lower() + "1", symbol.lower() + "2") for symbol in SYMBOLS}
EVERYWHERE = "everywhere"
PRICES = (98, 99, 100, 101, 102)  # cents
DOC = "12345678900"
STEP = SECOND // 2  # between two commands of the stream
REGISTERED_AT = T0 - SECOND
VWAP_WINDOW = 3 * SECOND  # short, so that trades leave it within a stream


@dataclass(frozen=True)
class Place:
    symbol: str
    command: SubmitOrder


@dataclass(frozen=True)
class CancelOf:
    symbol: str
    order_id: str


@dataclass(frozen=True)
class TickAll:
    """The clock's sweep: every symbol at once."""


Command = Place | CancelOf | TickAll


def at(index: int) -> int:
    return T0 + index * STEP


def order_id(index: int) -> str:
    return f"ord-00000000-0000-4000-8000-{index:012d}"


@dataclass(frozen=True)
class Stream:
    commands: tuple[Command, ...]
    funds: dict[str, tuple[int, tuple[tuple[str, int], ...]]]  # broker -> cash, holdings

    @property
    def end(self) -> int:
        return at(len(self.commands)) + VWAP_WINDOW


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    commands: list[Command] = []
    placed: dict[str, list[int]] = {symbol: [] for symbol in SYMBOLS}
    for index in range(draw(st.integers(1, 24))):
        kind = draw(st.sampled_from(("limit", "limit", "limit", "market", "cancel", "tick")))
        symbol = draw(st.sampled_from(SYMBOLS))
        if kind == "tick":
            commands.append(TickAll())
            continue
        if kind == "cancel":
            earlier = placed[symbol]
            target = order_id(draw(st.sampled_from(earlier))) if earlier else order_id(999)
            commands.append(CancelOf(symbol, target))
            continue
        broker = draw(st.sampled_from((*LOCAL[symbol], EVERYWHERE)))
        side = draw(st.sampled_from((BID, ASK)))
        quantity = draw(st.integers(1, 5))
        if kind == "market":
            command = SubmitOrder(MARKET, broker, DOC, side, symbol, quantity)
        else:
            price = draw(st.sampled_from(PRICES))
            expires_at = at(index) + draw(st.integers(1, 16)) * STEP
            command = SubmitOrder(LIMIT, broker, DOC, side, symbol, quantity, price, expires_at)
        placed[symbol].append(index)
        commands.append(Place(symbol, command))
    funds: dict[str, tuple[int, tuple[tuple[str, int], ...]]] = {}
    for symbol in SYMBOLS:
        for broker in LOCAL[symbol]:
            cash = draw(st.integers(0, 12)) * 100
            funds[broker] = (cash, ((symbol, draw(st.integers(0, 15))),))
    # Enough for every bid and ask of the stream at once: never refused for funds.
    orders = [command.command for command in commands if isinstance(command, Place)]
    mine = [command for command in orders if command.broker_id == EVERYWHERE]
    cash = sum(max(PRICES) * command.quantity for command in mine if command.side == BID)
    holdings = tuple(
        (symbol, sum(c.quantity for c in mine if c.side == ASK and c.symbol == symbol) + 1)
        for symbol in SYMBOLS
    )
    funds[EVERYWHERE] = (cash + 1, holdings)
    return Stream(tuple(commands), funds)


# -- one run ------------------------------------------------------------------------------


def answer(send: Callable[[Replies], None]) -> Any:
    replies = Replies()
    send(replies)
    return replies.get(timeout=WAIT_S)


def comparable(value: Any) -> Any:
    """Answers as values: a refusal by its code and message (exceptions compare by id)."""
    if isinstance(value, ExchangeError):
        return ("refused", value.code, value.message)
    return value


def send(exchange: Exchange, index: int, command: Command, symbol: str | None) -> Any:
    """One command of the stream, waited for. `symbol`: a tick goes to that symbol only
    (the run per symbol); None: to the clock actor, which finds the due symbols."""
    if isinstance(command, Place):
        stamped = {"at": at(index), "order_id": order_id(index), "trade_seed": index}
        return answer(lambda reply: exchange.submit(Submit(command.command, reply, **stamped)))
    if isinstance(command, CancelOf):
        actor = exchange.existing_symbol_actor(command.symbol)
        if actor is None:
            return "no such symbol yet"
        return answer(lambda reply: actor.tell(Cancel(command.order_id, reply, at=at(index))))
    if symbol is None:
        clock_actor = exchange.clock_actor
        assert clock_actor is not None
        due = clock_actor.ask(Tick(at(index)), timeout=WAIT_S)
        for name in due:  # wait until each has expired its due orders
            expire_at(exchange, name, at(index))
        return due
    return expire_at(exchange, symbol, at(index))


def expire_at(exchange: Exchange, symbol: str, when: int) -> None:
    actor = exchange.existing_symbol_actor(symbol)
    if actor is not None:
        actor.ask(ExpireDue(when), timeout=WAIT_S)


def observe(exchange: Exchange, stream: Stream) -> dict[str, Any]:
    """Everything the stream decided, read without changing anything."""
    seen: dict[str, Any] = {
        "balances": {
            broker: answer(
                lambda reply, broker=broker: exchange.account_actor(broker).tell(
                    ReadBalance(broker, reply)
                )
            )
            for broker in stream.funds
        },
        "orders": dict(sorted(exchange.read_index.orders.items())),
        "listings": {
            broker: exchange.read_index.broker_order_ids(broker) for broker in stream.funds
        },
    }
    for symbol in SYMBOLS:
        actor = exchange.existing_symbol_actor(symbol)
        if actor is None:
            continue
        book = answer(lambda reply, actor=actor: actor.tell(ReadBook(100, reply, expire=False)))
        seen[symbol] = (
            (book.bids, book.asks),  # read at the clock's time, which the runs do not share
            answer(lambda reply, actor=actor: actor.tell(ReadPrice(reply, expire=False))),
            exchange.market_data.feed(symbol).latest_trades(500),
        )
    return seen


def run(stream: Stream, clock_us: int, per_symbol: bool) -> list[Any]:
    """The stream through a fresh exchange: its answers and what it decided, then the
    same once every symbol has expired what is due at the stream's end."""
    exchange = Exchange(
        ManualClock(clock_us),
        RandomIds(),
        FakeDeliveries(),
        expiration_interval_s=None,
        vwap_window_us=VWAP_WINDOW,
        account_actors=2,
    )
    exchange.start()
    try:
        for broker, (cash, holdings) in stream.funds.items():
            registration = RegisterBroker(broker, cash, holdings)
            registered = answer(
                lambda reply, r=registration: exchange.account_actor(r.broker_id).tell(
                    Register(r, reply, at=REGISTERED_AT)
                )
            )
            assert not isinstance(registered, ExchangeError), registered
        answers: dict[int, Any] = {}
        if per_symbol:
            run_per_symbol(exchange, stream, answers)
        else:
            for index, command in enumerate(stream.commands):
                answered = send(exchange, index, command, None)
                if not isinstance(command, TickAll):  # which symbols were due: the clock's
                    answers[index] = comparable(answered)
        decided = observe(exchange, stream)
        for symbol in SYMBOLS:
            expire_at(exchange, symbol, stream.end)
        return [dict(sorted(answers.items())), decided, observe(exchange, stream)]
    finally:
        exchange.stop()


def run_per_symbol(exchange: Exchange, stream: Stream, answers: dict[int, Any]) -> None:
    """One thread per symbol, all started at once, each in stream order."""
    start = threading.Barrier(len(SYMBOLS))
    failures: list[BaseException] = []

    def work(symbol: str) -> None:
        try:
            start.wait(timeout=WAIT_S)
            for index, command in enumerate(stream.commands):
                if isinstance(command, TickAll):
                    send(exchange, index, command, symbol)
                elif command.symbol == symbol:
                    answers[index] = comparable(send(exchange, index, command, symbol))
        except BaseException as failure:  # reported on the test's thread
            failures.append(failure)

    threads = [threading.Thread(target=work, args=(symbol,)) for symbol in SYMBOLS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


@hypothesis.settings(max_examples=12)
@hypothesis.given(streams())
def test_the_same_stamped_stream_gives_the_same_state_whatever_the_scheduling(
    stream: Stream,
) -> None:
    try:
        in_order = run(stream, T0 - 10 * 86_400 * SECOND, per_symbol=False)
        per_symbol = run(stream, T0 - 20 * 86_400 * SECOND, per_symbol=True)
    finally:
        pykka.ActorRegistry.stop_all()
    assert per_symbol == in_order
    trades = {trade for order in in_order[1]["orders"].values() for trade in order.trades}
    assert len({trade.trade_id for trade in trades}) == len(trades)  # seeds made them unique
