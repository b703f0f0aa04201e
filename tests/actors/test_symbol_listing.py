"""The listed symbols' one owner (`SymbolListing`) alone, then inside the registry with
real actors: a place held by a request in flight counts, so two requests can never both
take the last place, however they race."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pykka
import pytest

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.listing import SymbolListing
from miniexchange.actors.messages import Submit
from miniexchange.actors.symbol import SymbolActor
from miniexchange.journal import facts as kinds
from miniexchange.journal.facts import Fact
from miniexchange.model.commands import BID, LIMIT, RegisterBroker, SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.ledger import Balance
from miniexchange.model.orders import Order
from miniexchange.testing import (
    FakeDeliveries,
    ManualClock,
    RecordingJournal,
    Replies,
    SequentialIds,
    WithholdingJournal,
)
from tests.actors.conftest import SECOND, T0, WAIT_S

E1 = T0 + 3600 * SECOND


# -- the owner alone ----------------------------------------------------------------------


def test_a_claim_is_all_or_nothing_and_listed_symbols_need_no_place() -> None:
    listing = SymbolListing(3)
    assert listing.claim(["AAPL", "GOOG"]) == ("AAPL", "GOOG")
    assert listing.claim(["MSFT", "TSLA"]) is None  # two new, one place: none claimed
    assert listing.taken() == 2
    listing.list(["AAPL", "GOOG"])
    assert listing.listed == {"AAPL", "GOOG"}
    assert listing.claim(["AAPL", "GOOG", "AAPL"]) == ()
    assert listing.claim(["MSFT", "AAPL"]) == ("MSFT",)
    assert listing.taken() == 3


def test_a_symbol_claimed_in_flight_takes_one_place_for_all_its_claims() -> None:
    listing = SymbolListing(2)
    assert listing.claim(["AAPL"]) == ("AAPL",)
    assert listing.claim(["AAPL"]) == ("AAPL",)  # a second request for the same symbol
    assert listing.claim(["GOOG"]) == ("GOOG",)
    assert listing.claim(["MSFT"]) is None
    assert listing.has_place_for("AAPL") and not listing.has_place_for("MSFT")
    listing.release(["AAPL"])
    assert listing.taken() == 2  # the other claim still holds it
    listing.release(["AAPL"])
    assert listing.taken() == 1
    assert listing.claim(["MSFT"]) == ("MSFT",)


def test_listing_ends_every_claim_on_the_symbol() -> None:
    listing = SymbolListing(2)
    listing.claim(["AAPL"])
    listing.claim(["AAPL"])
    listing.list(["AAPL"])
    listing.release(["AAPL"])  # the other request is refused later: nothing to give back
    assert (listing.listed, listing.taken()) == ({"AAPL"}, 1)


def test_a_started_actor_keeps_its_place_until_listed() -> None:
    listing = SymbolListing(1)
    assert listing.claim(["AAPL"]) == ("AAPL",)  # an order in flight
    assert listing.occupy("AAPL")  # its actor starts
    listing.release(["AAPL"])  # the order is refused at acceptance
    assert listing.taken() == 1  # the actor (a thread) still runs: its place stays taken
    assert not listing.occupy("GOOG")
    assert listing.claim(["GOOG"]) is None


# -- inside the registry, with real actors ---------------------------------------------------


@pytest.fixture
def journal() -> WithholdingJournal:
    """Withholds the registration of `slow` (its commit never comes: in flight for good)."""

    def slow_registration(appended: Sequence[Fact]) -> bool:
        return any(kind == kinds.BROKER_REGISTERED and b'"slow"' in body for kind, body in appended)

    return WithholdingJournal(RecordingJournal(), slow_registration)


def start_exchange(
    clock: ManualClock, max_symbols: int, journal: Any = None, account_actors: int = 2
) -> Exchange:
    exchange = Exchange(
        clock,
        SequentialIds(),
        FakeDeliveries(),
        expiration_interval_s=None,
        journal=journal,
        max_symbols=max_symbols,
        account_actors=account_actors,
    )
    exchange.start()
    return exchange


@pytest.fixture
def stops() -> Iterator[list[Exchange]]:
    started: list[Exchange] = []
    yield started
    for exchange in started:
        exchange.stop()


def register(exchange: Exchange, broker_id: str, cash: int, *symbols: str) -> Replies:
    replies = Replies()
    holdings = tuple((symbol, 1) for symbol in sorted(symbols))
    exchange.register_broker(RegisterBroker(broker_id, cash, holdings), replies)
    return replies


def bid(exchange: Exchange, broker_id: str, symbol: str) -> Replies:
    replies = Replies()
    command = SubmitOrder(LIMIT, broker_id, "1", BID, symbol, 1, 1_00, E1)
    exchange.submit(Submit(command, replies))
    return replies


def outcome(replies: Replies) -> str:
    answer = replies.get(timeout=WAIT_S)
    if isinstance(answer, ExchangeError):
        return answer.code
    assert isinstance(answer, Balance | Order), repr(answer)
    return "ok"


def test_a_registration_in_flight_holds_its_place(
    clock: ManualClock, journal: WithholdingJournal, stops: list[Exchange]
) -> None:
    exchange = start_exchange(clock, 2, journal)
    stops.append(exchange)
    assert outcome(register(exchange, "cash", 1_000_00)) == "ok"
    assert outcome(register(exchange, "early", 0, "AAPL")) == "ok"
    register(exchange, "slow", 0, "GOOG")  # never answered
    assert journal.withheld.wait(timeout=WAIT_S)

    # GOOG holds the last place while its registration is in flight
    assert outcome(register(exchange, "late", 0, "MSFT")) == "symbol_limit_reached"
    assert outcome(bid(exchange, "cash", "MSFT")) == "symbol_limit_reached"
    assert outcome(bid(exchange, "cash", "GOOG")) == "ok"  # no new place: GOOG has one
    assert exchange.known_symbols == {"AAPL", "GOOG"}
    assert not exchange.is_registered("slow")


def test_racing_requests_never_list_more_than_the_limit(
    clock: ManualClock, stops: list[Exchange]
) -> None:
    """Registrations and limit orders, each naming a symbol of its own, start together
    from as many threads and reach four account actors: exactly as many succeed as
    there are places, in every round."""
    places, racers = 3, 16
    for round_ in range(8):
        exchange = start_exchange(clock, places, RecordingJournal(), account_actors=4)
        stops.append(exchange)
        for n in range(racers):
            assert outcome(register(exchange, f"cash{n}", 1_000_00)) == "ok"
        results = race_for_new_symbols(exchange, racers)
        assert results == ["ok"] * places + ["symbol_limit_reached"] * (racers - places), round_
        assert len(exchange.known_symbols) == places
        assert exchange.listing.taken() == places
        running = [ref for ref in pykka.ActorRegistry.get_by_class(SymbolActor) if ref.is_alive()]
        assert {ref.proxy().symbol.get() for ref in running} <= exchange.known_symbols
        exchange.stop()
        stops.remove(exchange)


def race_for_new_symbols(exchange: Exchange, racers: int) -> list[str]:
    """Racer n names symbol SYM<n>: odd ones register a broker holding it, even ones
    bid on it for broker cash<n>. Their outcomes, sorted."""
    barrier = threading.Barrier(racers)
    answers = [Replies() for _ in range(racers)]

    def race(n: int) -> None:
        symbol = "SYM" + chr(ord("A") + n)
        barrier.wait(timeout=WAIT_S)
        if n % 2:
            exchange.register_broker(RegisterBroker(f"r{n}", 0, ((symbol, 1),)), answers[n])
        else:
            command = SubmitOrder(LIMIT, f"cash{n}", "1", BID, symbol, 1, 1_00, E1)
            exchange.submit(Submit(command, answers[n]))

    threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    return sorted(outcome(replies) for replies in answers)
