"""ClockActor alone with recording fake symbol actors; the Ticker with a real short interval."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from miniexchange.actors.clock import ClockActor, Ticker
from miniexchange.actors.messages import ExpireDue, NextExpiry, Tick
from miniexchange.testing import ManualClock
from tests.actors.conftest import SECOND, T0, WAIT_S, RecordingActor, recorded

TICKER_WAIT_S = 30.0
"""Generous: the ticker runs on real time, and a loaded machine may be slow."""


class Symbols:
    """Recording fake symbol actors, found by name like the exchange's registry."""

    def __init__(self, *names: str) -> None:
        self.received: dict[str, queue.Queue[Any]] = {name: queue.Queue() for name in names}
        self.refs: dict[str, pykka.ActorRef[Any]] = {
            name: RecordingActor.start(self.received[name]) for name in names
        }

    def get(self, symbol: str) -> pykka.ActorRef[Any] | None:
        return self.refs.get(symbol)

    def recorded(self) -> dict[str, list[Any]]:
        return {name: recorded(ref) for name, ref in self.refs.items()}


@pytest.fixture
def symbols() -> Symbols:
    return Symbols("AAPL", "MSFT")


@pytest.fixture
def clock_actor(clock: ManualClock, symbols: Symbols) -> pykka.ActorRef[Any]:
    return ClockActor.start(clock, symbols.get)


def tick(clock_actor: pykka.ActorRef[Any]) -> list[str]:
    """Run one sweep; the ExpireDue it sends are in the symbols' mailboxes on return."""
    return clock_actor.ask(Tick(), timeout=WAIT_S)


def test_a_tick_sends_expire_due_only_to_due_symbols(
    clock: ManualClock, symbols: Symbols, clock_actor: pykka.ActorRef[Any]
) -> None:
    clock_actor.tell(NextExpiry("AAPL", T0 + 10 * SECOND))
    clock_actor.tell(NextExpiry("MSFT", T0 + 20 * SECOND))

    clock.set(T0 + 10 * SECOND - 1)
    assert tick(clock_actor) == []
    assert symbols.recorded() == {"AAPL": [], "MSFT": []}

    clock.set(T0 + 10 * SECOND)  # due exactly at the announced time
    assert tick(clock_actor) == ["AAPL"]
    assert symbols.recorded() == {"AAPL": [ExpireDue()], "MSFT": []}

    assert tick(clock_actor) == []  # an announcement fires once
    clock.set(T0 + 25 * SECOND)
    assert tick(clock_actor) == ["MSFT"]
    assert symbols.recorded() == {"AAPL": [ExpireDue()], "MSFT": [ExpireDue()]}


def test_one_tick_sends_to_every_due_symbol_in_due_order(
    clock: ManualClock, symbols: Symbols, clock_actor: pykka.ActorRef[Any]
) -> None:
    clock_actor.tell(NextExpiry("AAPL", T0 + 8 * SECOND))
    clock_actor.tell(NextExpiry("MSFT", T0 + 5 * SECOND))
    clock.set(T0 + 9 * SECOND)
    assert tick(clock_actor) == ["MSFT", "AAPL"]
    assert symbols.recorded() == {"AAPL": [ExpireDue()], "MSFT": [ExpireDue()]}


def test_a_later_announcement_supersedes_an_earlier_time(
    clock: ManualClock, symbols: Symbols, clock_actor: pykka.ActorRef[Any]
) -> None:
    clock_actor.tell(NextExpiry("AAPL", T0 + 10 * SECOND))
    clock_actor.tell(NextExpiry("AAPL", T0 + 30 * SECOND))
    clock.set(T0 + 10 * SECOND)
    assert tick(clock_actor) == []
    clock.set(T0 + 30 * SECOND)
    assert tick(clock_actor) == ["AAPL"]
    assert symbols.recorded()["AAPL"] == [ExpireDue()]


def test_an_earlier_announcement_supersedes_a_later_time(
    clock: ManualClock, symbols: Symbols, clock_actor: pykka.ActorRef[Any]
) -> None:
    clock_actor.tell(NextExpiry("AAPL", T0 + 30 * SECOND))
    clock_actor.tell(NextExpiry("AAPL", T0 + 10 * SECOND))
    clock.set(T0 + 10 * SECOND)
    assert tick(clock_actor) == ["AAPL"]
    clock.set(T0 + 30 * SECOND)
    assert tick(clock_actor) == []  # the stale entry is skipped
    assert symbols.recorded()["AAPL"] == [ExpireDue()]


def test_a_none_announcement_clears(
    clock: ManualClock, symbols: Symbols, clock_actor: pykka.ActorRef[Any]
) -> None:
    clock_actor.tell(NextExpiry("AAPL", T0 + 10 * SECOND))
    clock_actor.tell(NextExpiry("AAPL", None))
    clock_actor.tell(NextExpiry("MSFT", None))  # never announced: harmless
    clock.set(T0 + 60 * SECOND)
    assert tick(clock_actor) == []
    assert symbols.recorded() == {"AAPL": [], "MSFT": []}


def test_the_same_time_announced_again_after_firing_fires_again(
    clock: ManualClock, symbols: Symbols, clock_actor: pykka.ActorRef[Any]
) -> None:
    due = T0 + 10 * SECOND
    clock_actor.tell(NextExpiry("AAPL", due))
    clock_actor.tell(NextExpiry("AAPL", None))
    clock_actor.tell(NextExpiry("AAPL", due))  # two heap entries for one live announcement
    clock.set(due)
    assert tick(clock_actor) == ["AAPL"]
    assert tick(clock_actor) == []
    clock_actor.tell(NextExpiry("AAPL", due))  # e.g. an order due already, re-announced
    assert tick(clock_actor) == ["AAPL"]
    assert symbols.recorded()["AAPL"] == [ExpireDue(), ExpireDue()]


def test_a_symbol_without_an_actor_is_skipped(
    clock: ManualClock, symbols: Symbols, clock_actor: pykka.ActorRef[Any]
) -> None:
    clock_actor.tell(NextExpiry("GOOG", T0 + SECOND))
    clock_actor.tell(NextExpiry("AAPL", T0 + 2 * SECOND))
    clock.set(T0 + 2 * SECOND)
    assert tick(clock_actor) == ["AAPL"]
    assert symbols.recorded() == {"AAPL": [ExpireDue()], "MSFT": []}


# -- Ticker ---------------------------------------------------------------------------


@pytest.fixture
def tickers() -> Iterator[list[Ticker]]:
    started: list[Ticker] = []
    yield started
    for ticker in started:
        ticker.stop()


def test_the_ticker_sweeps_repeatedly_on_a_real_interval(
    clock: ManualClock,
    symbols: Symbols,
    clock_actor: pykka.ActorRef[Any],
    tickers: list[Ticker],
) -> None:
    clock_actor.tell(NextExpiry("AAPL", T0 + SECOND))
    clock.set(T0 + SECOND)
    ticker = Ticker(clock_actor, 0.01)
    tickers.append(ticker)
    ticker.start()

    assert symbols.received["AAPL"].get(timeout=TICKER_WAIT_S) == ExpireDue()
    # A later announcement is picked up by a later tick of the same ticker.
    clock_actor.tell(NextExpiry("MSFT", T0 + SECOND))
    assert symbols.received["MSFT"].get(timeout=TICKER_WAIT_S) == ExpireDue()

    ticker.stop()
    # Every tick sent is handled before this ask: nothing more was due for AAPL.
    assert tick(clock_actor) == []
    assert symbols.recorded() == {"AAPL": [ExpireDue()], "MSFT": [ExpireDue()]}


def test_the_ticker_thread_ends_when_stopped(
    clock_actor: pykka.ActorRef[Any], tickers: list[Ticker]
) -> None:
    ticker = Ticker(clock_actor, 0.01)
    tickers.append(ticker)
    ticker.start()
    ticker.stop()
    assert not ticker._thread.is_alive()
    ticker.stop()  # idempotent


def test_the_ticker_thread_ends_by_itself_when_the_clock_actor_is_gone(
    clock_actor: pykka.ActorRef[Any], tickers: list[Ticker]
) -> None:
    clock_actor.stop()
    ticker = Ticker(clock_actor, 0.01)
    tickers.append(ticker)
    ticker.start()
    ticker._thread.join(timeout=TICKER_WAIT_S)
    assert not ticker._thread.is_alive()
