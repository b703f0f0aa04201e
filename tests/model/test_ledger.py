"""Broker ledgers and the settlement arithmetic: holds, fills, releases, balances."""

from __future__ import annotations

from itertools import pairwise

import pytest

from miniexchange.model.book import MatchResult, OrderBook
from miniexchange.model.commands import ASK, BID, SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.ledger import (
    Accepted,
    Balance,
    Held,
    Holding,
    Ledger,
    Released,
    Settled,
    SettlementLeg,
)
from miniexchange.model.orders import CANCELLED, FILLED, Order
from miniexchange.model.settlement import cash_to_reserve, released_by, settlement_legs
from miniexchange.testing import SequentialIds
from tests.model.support import Resting, Trading, at, cents, limit, market, place, submit

T0 = at("09:00:00")


def _settle_pass(ledgers: dict[str, Ledger], result_legs: dict[str, list[SettlementLeg]]) -> None:
    for broker_id, legs in result_legs.items():
        ledgers[broker_id].settle("AAPL", tuple(legs), T0)


def _cash(ledger: Ledger) -> tuple[int, int, int]:
    balance = ledger.balance()
    return balance.cash_balance, balance.reserved_cash, balance.available_cash


def _shares(ledger: Ledger, symbol: str = "AAPL") -> tuple[int, int, int] | None:
    for holding in ledger.balance().holdings:
        if holding.symbol == symbol:
            return holding.quantity, holding.reserved_quantity, holding.available_quantity
    return None


# -- reservations check the available amount, never the total ---------------------------


@pytest.mark.parametrize(
    ("held", "amount", "accepted"),
    [
        pytest.param(0, 100_000, True, id="all-of-it-when-nothing-held"),
        pytest.param(60_000, 40_000, True, id="exactly-the-available-rest"),
        pytest.param(60_000, 40_001, False, id="one-cent-over-available"),
        pytest.param(60_000, 100_000, False, id="total-would-cover-available-does-not"),
        pytest.param(100_000, 1, False, id="nothing-available"),
    ],
)
def test_hold_cash_checks_available_cash(held: int, amount: int, accepted: bool) -> None:
    ledger = Ledger("b", 100_000, {}, T0)
    if held:
        assert ledger.hold_cash("AAPL", held)
    before = ledger.balance()

    assert ledger.hold_cash("AAPL", amount) is accepted

    after = ledger.balance()
    if accepted:
        assert (after.cash_balance, after.reserved_cash) == (100_000, held + amount)
        assert after.available_cash == 100_000 - held - amount
        assert after.updated_at == T0  # a hold is no change of record (see below)
    else:
        assert after == before  # a refusal changes nothing, not even `updated_at`
    assert after.available_cash >= 0


@pytest.mark.parametrize(
    ("symbol", "held", "quantity", "accepted"),
    [
        pytest.param("AAPL", 30, 70, True, id="exactly-the-available-rest"),
        pytest.param("AAPL", 30, 71, False, id="one-over-available"),
        pytest.param("AAPL", 30, 100, False, id="total-would-cover-available-does-not"),
        pytest.param("MSFT", 0, 1, False, id="never-held-symbol-has-none-available"),
    ],
)
def test_hold_shares_checks_available_quantity(
    symbol: str, held: int, quantity: int, accepted: bool
) -> None:
    ledger = Ledger("b", 0, {"AAPL": 100}, T0)
    assert ledger.hold_shares("AAPL", 30)
    before = ledger.balance()

    assert ledger.hold_shares(symbol, quantity) is accepted

    after = ledger.balance()
    if accepted:
        assert after.holdings == (Holding("AAPL", 100, held + quantity),)
        assert after.holdings[0].available_quantity == 100 - held - quantity
    else:
        assert after == before


def test_release_gives_back_exactly_what_was_reserved() -> None:
    ledger = Ledger("b", 50_000, {"AAPL": 10}, T0)
    assert ledger.hold_cash("AAPL", 20_000)
    assert ledger.hold_shares("AAPL", 10)
    ledger.release("AAPL", 15_000, 0)
    ledger.release("AAPL", 0, 4)
    assert _cash(ledger) == (50_000, 5_000, 45_000)
    assert _shares(ledger) == (10, 6, 4)
    ledger.release("AAPL", 5_000, 0)
    ledger.release("AAPL", 0, 6)
    assert _cash(ledger) == (50_000, 0, 50_000)
    assert _shares(ledger) == (10, 0, 10)
    assert ledger.reserved_shares == {}  # no zero entries left behind


# -- settlement arithmetic ----------------------------------------------------------------


def test_worked_example_of_3_5() -> None:
    """B 100000.00 bids 100 @ 150.00 against S's ask 60 @ 148.00."""
    ids = SequentialIds()
    book = OrderBook("AAPL")
    buyer = Ledger("B", cents("100000.00"), {}, T0)
    seller = Ledger("S", cents("0.00"), {"AAPL": 60}, T0)
    ledgers = {"B": buyer, "S": seller}
    assert seller.hold_shares("AAPL", 60)
    place(book, ids, (Resting("s", ASK, "148.00", 60, "09:00:00", broker="S"),))

    # Step 1: check 100000.00 ≥ 15000.00 and reserve.
    command = limit(BID, "150.00", 100, broker="B")
    assert cash_to_reserve(book, command) == cents("15000.00")
    assert buyer.hold_cash("AAPL", cash_to_reserve(book, command))
    assert _cash(buyer) == (cents("100000.00"), cents("15000.00"), cents("85000.00"))
    assert _shares(buyer) is None
    assert _shares(seller) == (60, 60, 0)

    # Step 2: fill 60 @ 148.00.
    result = submit(book, ids, command, at("09:01:00"))
    legs = settlement_legs(result)
    assert legs == {
        "B": [SettlementLeg(BID, 60, cents("8880.00"), cents("9000.00"))],
        "S": [SettlementLeg(ASK, 60, cents("8880.00"), 0)],
    }
    _settle_pass(ledgers, legs)

    assert _cash(buyer) == (cents("91120.00"), cents("6000.00"), cents("85120.00"))
    assert _shares(buyer) == (60, 0, 60)
    assert seller.balance().cash_balance == cents("8880.00")
    assert seller.balance().holdings == ()  # 0 / 0: sold out, so not listed
    # The 40 left rest with 150.00 × 40 reserved; 120.00 of price improvement came back.
    assert result.order.remaining_quantity == 40
    assert buyer.reserved_cash == cents("150.00") * 40


def test_price_improvement_returns_fill_by_fill() -> None:
    """Each fill frees `bid.price × q`, charges `p × q`: available rises by the difference."""
    ids = SequentialIds()
    book = OrderBook("AAPL")
    buyer = Ledger("B", cents("20000.00"), {}, T0)
    seller = Ledger("S", 0, {"AAPL": 100}, T0)
    assert seller.hold_shares("AAPL", 100)
    place(
        book,
        ids,
        (
            Resting("a148", ASK, "148.00", 30, "09:00:00", broker="S"),
            Resting("a149", ASK, "149.00", 30, "09:00:01", broker="S"),
            Resting("a150", ASK, "150.00", 40, "09:00:02", broker="S"),
        ),
    )
    command = limit(BID, "150.00", 100, broker="B")
    assert buyer.hold_cash("AAPL", cash_to_reserve(book, command))
    result = submit(book, ids, command, T0)

    available = [buyer.available_cash]
    for fill in result.fills:
        legs = settlement_legs(MatchResult(result.order, (fill,)))
        buyer.settle("AAPL", tuple(legs["B"]), T0)
        seller.settle("AAPL", tuple(legs["S"]), T0)
        available.append(buyer.available_cash)

    gains = [later - earlier for earlier, later in pairwise(available)]
    assert gains == [cents("2.00") * 30, cents("1.00") * 30, 0]
    cost = cents("148.00") * 30 + cents("149.00") * 30 + cents("150.00") * 40
    assert _cash(buyer) == (cents("20000.00") - cost, 0, cents("20000.00") - cost)
    assert seller.balance().cash_balance == cost
    assert _shares(buyer) == (100, 0, 100)


def test_price_improvement_for_a_resting_bid_hit_by_a_lower_ask() -> None:
    """A resting 150.00 bid meets an incoming 140.00 ask: trade at 140.00 (seller's price)."""
    exchange = Trading(SequentialIds())
    buyer = exchange.register("B", cents("15000.00"), {}, T0)
    seller = exchange.register("S", 0, {"AAPL": 100}, T0)
    exchange.submit(limit(BID, "150.00", 100, broker="B"), at("09:00:01"))
    assert _cash(buyer) == (cents("15000.00"), cents("15000.00"), 0)

    result = exchange.submit(limit(ASK, "140.00", 100, broker="S"), at("09:00:02"))

    assert [(t.price, t.quantity) for t in result.order.trades] == [(cents("140.00"), 100)]
    assert _cash(buyer) == (cents("1000.00"), 0, cents("1000.00"))
    assert _shares(buyer) == (100, 0, 100)
    assert _cash(seller) == (cents("14000.00"), 0, cents("14000.00"))
    assert _shares(seller) is None


def test_market_bid_holds_exactly_its_sweep_cost_during_the_pass() -> None:
    ids = SequentialIds()
    exchange = Trading(ids)
    buyer = exchange.register("B", cents("3800.00"), {}, T0)
    exchange.register("S", 0, {"AAPL": 350}, T0)
    for price, quantity in (("10.00", 100), ("11.00", 200), ("12.00", 50)):
        exchange.submit(limit(ASK, price, quantity, broker="S"), T0)
    book = exchange.books["AAPL"]
    # Only liquidity on the book counts: 400 requested, 350 offered, priced 3800.00.
    assert cash_to_reserve(book, market(BID, 400, broker="B")) == cents("3800.00")

    result = exchange.submit(market(BID, 400, broker="B"), at("09:05:00"))

    assert (result.order.status, result.order.cancelled_quantity) == (CANCELLED, 50)
    assert released_by(result.order) == (0, 0)  # the fills spent the whole hold
    assert _cash(buyer) == (0, 0, 0)
    assert _shares(buyer) == (350, 0, 350)


def test_market_bid_refused_when_the_sweep_costs_one_cent_more_than_available() -> None:
    exchange = Trading(SequentialIds())
    buyer = exchange.register("B", cents("2649.99"), {}, T0)
    exchange.register("S", 0, {"AAPL": 350}, T0)
    for price, quantity in (("10.00", 100), ("11.00", 200), ("12.00", 50)):
        exchange.submit(limit(ASK, price, quantity, broker="S"), T0)
    with pytest.raises(ExchangeError) as refusal:
        exchange.submit(market(BID, 250, broker="B"), at("09:05:00"))
    assert refusal.value.code == "insufficient_balance"
    assert refusal.value.message == "Broker B has insufficient available cash for this order"
    assert _cash(buyer) == (cents("2649.99"), 0, cents("2649.99"))
    assert len(exchange.books["AAPL"]) == 3


def test_market_ask_releases_its_ioc_remainder() -> None:
    exchange = Trading(SequentialIds())
    exchange.register("B", cents("15000.00"), {}, T0)
    seller = exchange.register("S", 0, {"AAPL": 500}, T0)
    exchange.submit(limit(BID, "50.00", 300, broker="B"), T0)

    result = exchange.submit(market(ASK, 400, broker="S"), at("09:05:00"))

    assert (result.order.filled_quantity, result.order.cancelled_quantity) == (300, 100)
    assert released_by(result.order) == (0, 100)
    assert _shares(seller) == (200, 0, 200)
    assert _cash(seller) == (cents("15000.00"), 0, cents("15000.00"))


@pytest.mark.parametrize("resting_side", [ASK, BID], ids=["ask-rests", "bid-rests"])
def test_self_trade_nets_cash_to_zero(resting_side: str) -> None:
    exchange = Trading(SequentialIds())
    me = exchange.register("me", cents("5000.00"), {"AAPL": 100}, T0)
    first, second = (
        (limit(ASK, "10.00", 100, broker="me"), limit(BID, "12.00", 100, broker="me"))
        if resting_side == ASK
        else (limit(BID, "12.00", 100, broker="me"), limit(ASK, "10.00", 100, broker="me"))
    )
    exchange.submit(first, at("09:00:01"))

    result = exchange.submit(second, at("09:00:02"))

    (trade,) = result.order.trades
    assert (trade.price, trade.quantity) == (cents("10.00"), 100)  # the seller's price
    assert trade.bid_broker_id == trade.ask_broker_id == "me"
    assert settlement_legs(result) == {
        "me": [
            SettlementLeg(BID, 100, cents("1000.00"), cents("1200.00")),
            SettlementLeg(ASK, 100, cents("1000.00"), 0),
        ]
    }
    assert _cash(me) == (cents("5000.00"), 0, cents("5000.00"))
    assert _shares(me) == (100, 0, 100)
    assert me.updated_at == at("09:00:02")


# -- the pieces of settlement, as tables ----------------------------------------------------


def _order(side: str, type_: str, price: int | None, quantity: int, cancelled: int) -> Order:
    return Order(
        "ord-1", type_, "b", "doc", side, "AAPL", price, quantity,
        quantity - cancelled, 0, cancelled, CANCELLED if cancelled else FILLED,
        None if price is None else at("18:00:00"), T0, None, None, (), 0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("order", "released"),
    [
        pytest.param(_order(BID, "limit", 15000, 1000, 400), (6_000_000, 0), id="limit-bid"),
        pytest.param(_order(BID, "limit", 15000, 1000, 0), (0, 0), id="limit-bid-filled"),
        pytest.param(_order(ASK, "limit", 15000, 1000, 400), (0, 400), id="limit-ask"),
        pytest.param(_order(BID, "market", None, 1000, 600), (0, 0), id="market-bid-ioc"),
        pytest.param(_order(ASK, "market", None, 1000, 600), (0, 600), id="market-ask-ioc"),
    ],
)
def test_released_by(order: Order, released: tuple[int, int]) -> None:
    assert released_by(order) == released


@pytest.mark.parametrize(
    ("command", "amount"),
    [
        pytest.param(limit(BID, "150.00", 100), cents("15000.00"), id="limit-at-own-price"),
        pytest.param(limit(BID, "20.00", 3), cents("60.00"), id="limit-above-asks"),
        pytest.param(market(BID, 250), cents("2650.00"), id="market-250-of-4.6"),
        pytest.param(market(BID, 400), cents("3800.00"), id="market-400-only-liquidity"),
        pytest.param(market(BID, 1), cents("10.00"), id="market-1"),
    ],
)
def test_cash_to_reserve(command: SubmitOrder, amount: int) -> None:
    book = OrderBook("AAPL")
    place(
        book,
        SequentialIds(),
        (
            Resting("a10", ASK, "10.00", 100, "09:00:00"),
            Resting("a11", ASK, "11.00", 200, "09:01:00"),
            Resting("a12", ASK, "12.00", 50, "09:02:00"),
        ),
    )
    assert cash_to_reserve(book, command) == amount


def test_settlement_legs_per_broker_in_match_order() -> None:
    ids = SequentialIds()
    book = OrderBook("AAPL")
    place(
        book,
        ids,
        (
            Resting("x1", BID, "50.00", 100, "09:00:00", broker="x"),
            Resting("y", BID, "49.00", 100, "09:00:01", broker="y"),
            Resting("x2", BID, "48.00", 100, "09:00:02", broker="x"),
        ),
    )
    result = submit(book, ids, market(ASK, 250, broker="s"), T0)
    assert settlement_legs(result) == {
        "x": [
            SettlementLeg(BID, 100, 500_000, 500_000),
            SettlementLeg(BID, 50, 240_000, 240_000),
        ],
        "s": [
            SettlementLeg(ASK, 100, 500_000, 0),
            SettlementLeg(ASK, 100, 490_000, 0),
            SettlementLeg(ASK, 50, 240_000, 0),
        ],
        "y": [SettlementLeg(BID, 100, 490_000, 490_000)],
    }
    assert list(settlement_legs(result)) == ["x", "s", "y"]


def test_market_bid_legs_release_the_execution_cost() -> None:
    ids = SequentialIds()
    book = OrderBook("AAPL")
    place(book, ids, (Resting("a", ASK, "10.00", 100, "09:00:00", broker="s"),))
    result = submit(book, ids, market(BID, 30, broker="b"), T0)
    assert settlement_legs(result)["b"] == [SettlementLeg(BID, 30, 30_000, 30_000)]


# -- holdings listing and updated_at ------------------------------------------------------


def test_holdings_sorted_by_symbol_and_zero_quantities_dropped() -> None:
    ledger = Ledger("b", cents("1000.00"), {"MSFT": 5, "AAPL": 0, "GOOG": 7}, T0)
    assert [h.symbol for h in ledger.balance().holdings] == ["GOOG", "MSFT"]

    ledger.hold_shares("GOOG", 7)
    ledger.settle("GOOG", (SettlementLeg(ASK, 7, cents("70.00"), 0),), T0)  # sold out
    ledger.hold_cash("AAPL", cents("30.00"))
    ledger.settle("AAPL", (SettlementLeg(BID, 3, cents("30.00"), cents("30.00")),), T0)

    balance = ledger.balance()
    assert balance.holdings == (Holding("AAPL", 3, 0), Holding("MSFT", 5, 0))
    assert _cash(ledger) == (cents("1040.00"), 0, cents("1040.00"))


def test_balance_is_a_snapshot() -> None:
    ledger = Ledger("b", 100, {"AAPL": 1}, T0)
    balance = ledger.balance()
    assert balance == Balance("b", 100, 0, (Holding("AAPL", 1, 0),), T0, T0)
    ledger.hold_cash("AAPL", 40)
    assert balance.reserved_cash == 0  # the earlier picture does not move
    assert ledger.balance().available_cash == 60


def test_updated_at_is_monotonic_and_starts_at_created_at() -> None:
    ledger = Ledger("b", 10_000, {"AAPL": 10}, T0)
    assert ledger.balance().updated_at == ledger.balance().created_at == T0
    assert ledger.hold_cash("AAPL", 1_000)
    assert ledger.updated_at == T0  # a hold is not a change of record: no order exists yet
    ledger.apply(Accepted("b", at("09:00:05")))
    assert ledger.updated_at == at("09:00:05")
    # A settlement computed from an earlier clock reading arrives late: no step back.
    ledger.apply(Settled("b", "AAPL", (SettlementLeg(BID, 1, 900, 1_000),), at("09:00:03")))
    assert ledger.updated_at == at("09:00:05")
    assert ledger.hold_shares("AAPL", 2)
    ledger.apply(Released("b", "AAPL", 0, 2, at("09:00:10")))
    assert ledger.updated_at == at("09:00:10")
    assert ledger.hold_shares("AAPL", 1)
    ledger.apply(Released("b", "AAPL", 0, 1, None))  # a refused order's hold: no time
    assert ledger.updated_at == at("09:00:10")
    assert not ledger.hold_cash("AAPL", 1_000_000)  # refused: nothing changed
    assert ledger.balance().updated_at == at("09:00:10")
    assert ledger.balance().created_at == T0
    assert ledger.reserved_shares == {}
    assert ledger.cash_held_on == {}


def test_holds_are_counted_per_symbol_for_the_due_check() -> None:
    """R1 asks the symbol actor to expire due orders only where the broker holds some."""
    ledger = Ledger("b", 10_000, {"AAPL": 10}, T0)
    assert not ledger.holds_on("AAPL")
    assert ledger.hold_cash("GOOG", 3_000)
    assert ledger.hold_shares("AAPL", 4)
    assert (ledger.holds_on("GOOG"), ledger.holds_on("AAPL"), ledger.holds_on("MSFT")) == (
        True,
        True,
        False,
    )
    ledger.settle("GOOG", (SettlementLeg(BID, 1, 2_500, 3_000),), T0)
    ledger.release("AAPL", 0, 4)
    assert not ledger.holds_on("GOOG")
    assert not ledger.holds_on("AAPL")


def test_held_then_the_legs_equal_a_market_bids_hold_then_the_legs() -> None:
    """A market bid of 5 sweeping 3 @ 10.00 and 2 @ 11.00 while a limit bid holds 7.00:
    the recorded `Held` does what the asked hold did."""
    t = at("09:00:04")
    legs = (SettlementLeg(BID, 3, 3_000, 3_000), SettlementLeg(BID, 2, 2_200, 2_200))
    asked, recorded = (Ledger("B", 10_000, {}, T0) for _ in range(2))
    for ledger in (asked, recorded):
        assert ledger.hold_cash("MSFT", 700)  # a resting limit bid elsewhere
    assert asked.hold("AAPL", 5_200, 0)
    for change in (Accepted("B", t), Settled("B", "AAPL", legs, t)):
        asked.apply(change)
    for change in (Held("B", "AAPL", 5_200, 0), Accepted("B", t), Settled("B", "AAPL", legs, t)):
        recorded.apply(change)
    expected = Balance("B", 4_800, 700, (Holding("AAPL", 5, 0),), T0, t)
    assert asked.balance() == recorded.balance() == expected
    assert asked.cash_held_on == recorded.cash_held_on == {"MSFT": 700}


def test_held_then_the_legs_and_the_remainder_equal_a_market_asks_hold() -> None:
    """A market ask of 6 that fills 4 @ 10.00: its IOC remainder of 2 goes back."""
    t = at("09:00:04")
    changes = (
        Accepted("S", t),
        Settled("S", "AAPL", (SettlementLeg(ASK, 4, 4_000, 0),), t),
        Released("S", "AAPL", 0, 2, t),
    )
    asked, recorded = (Ledger("S", 0, {"AAPL": 10}, T0) for _ in range(2))
    assert asked.hold("AAPL", 0, 6)
    for change in changes:
        asked.apply(change)
    recorded.apply(Held("S", "AAPL", 0, 6))
    assert recorded.updated_at == T0  # a hold is no change of record
    assert recorded.reserved_shares == {"AAPL": 6}
    for change in changes:
        recorded.apply(change)
    expected = Balance("S", 4_000, 0, (Holding("AAPL", 6, 0),), T0, t)
    assert asked.balance() == recorded.balance() == expected
    assert asked.reserved_shares == recorded.reserved_shares == {}
