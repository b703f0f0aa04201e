"""`Held`: a market order's hold recorded as a ledger change (the shard mode's R2),
applied by the account actors through `Apply` ahead of the order's legs, leaves the
ledgers exactly as the embedded mode's blocking `Hold` ask does. Two real exchanges: one
runs the market order, the other is told its changes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from miniexchange.actors.accounts import tell_changes
from miniexchange.actors.exchange import Exchange
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, SubmitOrder
from miniexchange.model.ledger import (
    Accepted,
    Balance,
    Held,
    Holding,
    LedgerChange,
    Released,
    Settled,
    SettlementLeg,
)
from miniexchange.model.orders import CANCELLED, FILLED
from miniexchange.testing import FakeDeliveries, ManualClock, SequentialIds
from tests.actors.conftest import SECOND, T0, T0_ISO, balance, register, submit

DOC = "12345678900"
E1 = T0 + 3600 * SECOND
T1 = T0 + 4 * SECOND  # when the market order runs


@pytest.fixture
def exchanges() -> Iterator[tuple[Exchange, Exchange]]:
    """(the embedded path, the one told `Held` and the legs), alike up to the market order."""
    started = []
    for _ in range(2):
        exchange = Exchange(
            ManualClock.at(T0_ISO), SequentialIds(), FakeDeliveries(), expiration_interval_s=None
        )
        exchange.start()
        register(exchange, "seller", 0, AAPL=10)
        register(exchange, "buyer", 10_000, MSFT=1)
        submit(exchange, SubmitOrder(LIMIT, "seller", DOC, ASK, "AAPL", 3, 1_000, E1))
        submit(exchange, SubmitOrder(LIMIT, "seller", DOC, ASK, "AAPL", 4, 1_100, E1))
        submit(exchange, SubmitOrder(LIMIT, "buyer", DOC, BID, "AAPL", 1, 700, E1))
        started.append(exchange)
    yield started[0], started[1]
    for exchange in started:
        exchange.stop()


def at_t1(exchange: Exchange) -> None:
    clock = exchange.clock
    assert isinstance(clock, ManualClock)
    clock.set(T1)


def told(exchange: Exchange, changes: tuple[LedgerChange, ...]) -> None:
    """R2 as a symbol actor tells it; the balance reads after it wait for it (FIFO)."""
    tell_changes(exchange.account_actor, changes)


def test_held_then_a_market_bids_legs_leave_the_ledgers_as_its_hold_did(
    exchanges: tuple[Exchange, Exchange],
) -> None:
    embedded, recorded = exchanges
    at_t1(embedded)
    bought = submit(embedded, SubmitOrder(MARKET, "buyer", DOC, BID, "AAPL", 5))
    assert (bought.status, bought.filled_value) == (FILLED, 5_200)
    told(
        recorded,
        (
            Held("buyer", "AAPL", 5_200, 0),
            Accepted("buyer", T1),
            Settled(
                "buyer",
                "AAPL",
                (SettlementLeg(BID, 3, 3_000, 3_000), SettlementLeg(BID, 2, 2_200, 2_200)),
                T1,
            ),
            Settled(
                "seller",
                "AAPL",
                (SettlementLeg(ASK, 3, 3_000, 0), SettlementLeg(ASK, 2, 2_200, 0)),
                T1,
            ),
        ),
    )
    buyer = Balance("buyer", 4_800, 700, (Holding("AAPL", 5, 0), Holding("MSFT", 1, 0)), T0, T1)
    seller = Balance("seller", 5_200, 0, (Holding("AAPL", 5, 2),), T0, T1)
    for exchange in (embedded, recorded):
        assert balance(exchange, "buyer") == buyer
        assert balance(exchange, "seller") == seller


def test_held_then_a_market_asks_legs_and_remainder_leave_the_ledgers_as_its_hold_did(
    exchanges: tuple[Exchange, Exchange],
) -> None:
    """The seller sells 3 into the one resting bid, 1 @ 7.00: 2 are cancelled (IOC)."""
    embedded, recorded = exchanges
    at_t1(embedded)
    sold = submit(embedded, SubmitOrder(MARKET, "seller", DOC, ASK, "AAPL", 3))
    assert (sold.status, sold.filled_quantity, sold.cancelled_quantity) == (CANCELLED, 1, 2)
    told(
        recorded,
        (
            Held("seller", "AAPL", 0, 3),
            Accepted("seller", T1),
            Settled("buyer", "AAPL", (SettlementLeg(BID, 1, 700, 700),), T1),
            Settled("seller", "AAPL", (SettlementLeg(ASK, 1, 700, 0),), T1),
            Released("seller", "AAPL", 0, 2, T1),
        ),
    )
    buyer = Balance("buyer", 9_300, 0, (Holding("AAPL", 1, 0), Holding("MSFT", 1, 0)), T0, T1)
    seller = Balance("seller", 700, 0, (Holding("AAPL", 9, 7),), T0, T1)
    for exchange in (embedded, recorded):
        assert balance(exchange, "buyer") == buyer
        assert balance(exchange, "seller") == seller
