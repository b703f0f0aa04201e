"""The order book and its match loop, case by case: priority, prices, fills, states,
expiry, cancel and market orders.

Every matching rule and worked example is one row of a table: the
resting orders, one incoming order, and exactly which trades, final states and book
must result.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from miniexchange.model.book import Level, OrderBook
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, SubmitOrder
from miniexchange.model.orders import (
    CANCELLED,
    EXPIRED,
    FILLED,
    PARTIALLY_FILLED,
    PENDING,
    Order,
    new_order,
)
from miniexchange.testing import SequentialIds
from tests.model.support import FAR, Resting, at, cents, limit, market, place, submit, ts

NOW = at("09:05:00")  # every incoming order of the tables arrives at 09:05


@dataclass(frozen=True, slots=True)
class MatchCase:
    id: str
    resting: tuple[Resting, ...]
    incoming: SubmitOrder
    trades: tuple[tuple[str, str, int], ...]  # (resting order name, price, quantity), in order
    outcome: tuple[str, int, int, int, str | None]  # status, filled / remaining / cancelled, avg
    bids_after: tuple[tuple[str, int, int], ...]  # (price, total remaining, order count)
    asks_after: tuple[tuple[str, int, int], ...]


# The ask side of the market-order worked examples: 10.00 × 100, 11.00 × 200, 12.00 × 50.
ASKS_4_6 = (
    Resting("a10", ASK, "10.00", 100, "09:00:00", broker="s1"),
    Resting("a11", ASK, "11.00", 200, "09:01:00", broker="s2"),
    Resting("a12", ASK, "12.00", 50, "09:02:00", broker="s3"),
)

MATCH_CASES = [
    # -- price compatibility: a bid meets an ask when bid.price >= ask.price ------------
    MatchCase(
        "same-price-bid-meets-resting-ask",
        (Resting("a", ASK, "10.00", 100, "09:00:00", broker="s"),),
        limit(BID, "10.00", 100),
        (("a", "10.00", 100),),
        (FILLED, 100, 0, 0, "10.00"),
        (),
        (),
    ),
    MatchCase(
        "same-price-ask-meets-resting-bid",
        (Resting("b", BID, "10.00", 100, "09:00:00", broker="b"),),
        limit(ASK, "10.00", 100, broker="s"),
        (("b", "10.00", 100),),
        (FILLED, 100, 0, 0, "10.00"),
        (),
        (),
    ),
    MatchCase(
        "no-match-bid-one-cent-below-ask-rests",
        (Resting("a", ASK, "10.01", 100, "09:00:00"),),
        limit(BID, "10.00", 100),
        (),
        (PENDING, 0, 100, 0, None),
        (("10.00", 100, 1),),
        (("10.01", 100, 1),),
    ),
    MatchCase(
        "no-match-ask-one-cent-above-bid-rests",
        (Resting("b", BID, "10.00", 100, "09:00:00"),),
        limit(ASK, "10.01", 100),
        (),
        (PENDING, 0, 100, 0, None),
        (("10.00", 100, 1),),
        (("10.01", 100, 1),),
    ),
    MatchCase(
        "price-gap-bid-sweeps-asks-each-at-its-own-price",
        (
            Resting("a1", ASK, "10.00", 100, "09:00:00"),
            Resting("a2", ASK, "10.50", 100, "09:00:01"),
            Resting("a3", ASK, "11.00", 100, "09:00:02"),
            Resting("a4", ASK, "12.00", 100, "09:00:03"),
        ),
        limit(BID, "11.50", 250),
        (("a1", "10.00", 100), ("a2", "10.50", 100), ("a3", "11.00", 50)),
        (FILLED, 250, 0, 0, "10.40"),  # 260000 / 250
        (),
        (("11.00", 50, 1), ("12.00", 100, 1)),
    ),
    MatchCase(
        "price-gap-bid-stops-at-its-limit-and-rests-the-rest",
        (
            Resting("a1", ASK, "10.00", 100, "09:00:00"),
            Resting("a2", ASK, "10.50", 100, "09:00:01"),
            Resting("a4", ASK, "12.00", 100, "09:00:03"),
        ),
        limit(BID, "11.50", 400),
        (("a1", "10.00", 100), ("a2", "10.50", 100)),
        (PARTIALLY_FILLED, 200, 200, 0, "10.25"),
        (("11.50", 200, 1),),
        (("12.00", 100, 1),),
    ),
    MatchCase(
        "seller-price-incoming-ask-under-higher-resting-bids",
        (
            Resting("b20", BID, "20.00", 100, "09:00:00"),
            Resting("b15", BID, "15.00", 100, "09:00:01"),
        ),
        limit(ASK, "10.00", 150),
        (("b20", "10.00", 100), ("b15", "10.00", 50)),
        (FILLED, 150, 0, 0, "10.00"),
        (("15.00", 50, 1),),
        (),
    ),
    MatchCase(
        "seller-price-20-bid-resting-meets-10-ask-trades-at-10",
        (Resting("b20", BID, "20.00", 100, "09:00:00"),),
        limit(ASK, "10.00", 100),
        (("b20", "10.00", 100),),
        (FILLED, 100, 0, 0, "10.00"),
        (),
        (),
    ),
    MatchCase(
        "seller-price-20-bid-incoming-meets-10-ask-trades-at-10",
        (Resting("a10", ASK, "10.00", 100, "09:00:00"),),
        limit(BID, "20.00", 100),
        (("a10", "10.00", 100),),
        (FILLED, 100, 0, 0, "10.00"),
        (),
        (),
    ),
    # -- partial fills ------------------------------------------------------------------
    MatchCase(
        "partial-incoming-bid-rests-its-remainder",
        (Resting("a", ASK, "10.00", 100, "09:00:00"),),
        limit(BID, "10.00", 300),
        (("a", "10.00", 100),),
        (PARTIALLY_FILLED, 100, 200, 0, "10.00"),
        (("10.00", 200, 1),),
        (),
    ),
    MatchCase(
        "partial-resting-ask-keeps-its-remainder",
        (Resting("a", ASK, "10.00", 300, "09:00:00"),),
        limit(BID, "10.00", 100),
        (("a", "10.00", 100),),
        (FILLED, 100, 0, 0, "10.00"),
        (),
        (("10.00", 200, 1),),
    ),
    MatchCase(
        "partial-resting-bid-left-with-one-share",
        (Resting("b", BID, "10.00", 101, "09:00:00"),),
        limit(ASK, "9.99", 100),
        (("b", "9.99", 100),),
        (FILLED, 100, 0, 0, "9.99"),
        (("10.00", 1, 1),),
        (),
    ),
    MatchCase(
        "partial-incoming-ask-empties-a-level-then-rests",
        (
            Resting("b1", BID, "10.50", 100, "09:00:00"),
            Resting("b2", BID, "10.00", 300, "09:00:01"),
        ),
        limit(ASK, "10.50", 250),
        (("b1", "10.50", 100),),
        (PARTIALLY_FILLED, 100, 150, 0, "10.50"),
        (("10.00", 300, 1),),
        (("10.50", 150, 1),),
    ),
    MatchCase(
        "partial-both-sides-one-filled-other-partially",
        (
            Resting("a1", ASK, "10.00", 100, "09:00:00"),
            Resting("a2", ASK, "10.50", 200, "09:00:01"),
        ),
        limit(BID, "10.50", 150),
        (("a1", "10.00", 100), ("a2", "10.50", 50)),
        (FILLED, 150, 0, 0, "10.16"),  # 152500 / 150 = 1016.66, truncated
        (),
        (("10.50", 150, 1),),
    ),
    # -- priority: price, then created_at, then order_id --------------------------------
    MatchCase(
        "fifo-at-equal-price-oldest-first",
        (
            Resting("first", ASK, "10.00", 100, "09:00:00"),
            Resting("second", ASK, "10.00", 100, "09:00:01"),
            Resting("third", ASK, "10.00", 100, "09:00:02"),
        ),
        limit(BID, "10.00", 150),
        (("first", "10.00", 100), ("second", "10.00", 50)),
        (FILLED, 150, 0, 0, "10.00"),
        (),
        (("10.00", 150, 2),),
    ),
    MatchCase(
        "fifo-by-created-at-not-by-insertion-order",
        (
            Resting("later", ASK, "10.00", 100, "09:02:00"),
            Resting("earlier", ASK, "10.00", 100, "09:01:00"),
        ),
        limit(BID, "10.00", 100),
        (("earlier", "10.00", 100),),
        (FILLED, 100, 0, 0, "10.00"),
        (),
        (("10.00", 100, 1),),
    ),
    MatchCase(
        "fifo-by-created-at-at-microsecond-precision",
        (
            Resting("later", BID, "10.00", 100, "09:01:00.000001"),
            Resting("earlier", BID, "10.00", 100, "09:01:00"),
        ),
        limit(ASK, "10.00", 100),
        (("earlier", "10.00", 100),),
        (FILLED, 100, 0, 0, "10.00"),
        (("10.00", 100, 1),),
        (),
    ),
    MatchCase(
        "tie-break-equal-created-at-by-order-id-asks",
        (
            Resting("b", ASK, "10.00", 100, "09:01:00", order_id="ord-b"),
            Resting("a", ASK, "10.00", 100, "09:01:00", order_id="ord-a"),
            Resting("c", ASK, "10.00", 100, "09:01:00", order_id="ord-c"),
        ),
        limit(BID, "10.00", 150),
        (("a", "10.00", 100), ("b", "10.00", 50)),
        (FILLED, 150, 0, 0, "10.00"),
        (),
        (("10.00", 150, 2),),
    ),
    MatchCase(
        "tie-break-equal-created-at-by-order-id-bids",
        (
            Resting("z", BID, "10.00", 100, "09:01:00", order_id="ord-z"),
            Resting("y", BID, "10.00", 100, "09:01:00", order_id="ord-y"),
        ),
        limit(ASK, "10.00", 100),
        (("y", "10.00", 100),),
        (FILLED, 100, 0, 0, "10.00"),
        (("10.00", 100, 1),),
        (),
    ),
    MatchCase(
        "price-priority-before-time-asks-lowest-first",
        (
            Resting("dear-old", ASK, "10.50", 100, "09:00:00"),
            Resting("cheap-new", ASK, "10.00", 100, "09:04:00"),
        ),
        limit(BID, "11.00", 150),
        (("cheap-new", "10.00", 100), ("dear-old", "10.50", 50)),
        (FILLED, 150, 0, 0, "10.16"),
        (),
        (("10.50", 50, 1),),
    ),
    MatchCase(
        "price-priority-before-time-bids-highest-first-at-seller-price",
        (
            Resting("low-old", BID, "10.00", 100, "09:00:00"),
            Resting("high-new", BID, "10.50", 100, "09:04:00"),
        ),
        limit(ASK, "10.00", 150),
        (("high-new", "10.00", 100), ("low-old", "10.00", 50)),
        (FILLED, 150, 0, 0, "10.00"),
        (("10.00", 50, 1),),
        (),
    ),
    MatchCase(
        "self-trade-is-allowed",
        (Resting("mine", ASK, "10.00", 100, "09:00:00", broker="b1"),),
        limit(BID, "10.00", 100, broker="b1"),
        (("mine", "10.00", 100),),
        (FILLED, 100, 0, 0, "10.00"),
        (),
        (),
    ),
    # -- market orders: sweep at resting prices, IOC remainder, worked examples ----------
    MatchCase(
        "market-buy-250-full-fill-avg-10.60",
        ASKS_4_6,
        market(BID, 250),
        (("a10", "10.00", 100), ("a11", "11.00", 150)),
        (FILLED, 250, 0, 0, "10.60"),
        (),
        (("11.00", 50, 1), ("12.00", 50, 1)),
    ),
    MatchCase(
        "market-buy-400-fills-350-ioc-cancels-50-avg-10.85",
        ASKS_4_6,
        market(BID, 400),
        (("a10", "10.00", 100), ("a11", "11.00", 200), ("a12", "12.00", 50)),
        (CANCELLED, 350, 0, 50, "10.85"),
        (),
        (),
    ),
    MatchCase(
        "market-sell-400-walks-bids-avg-49.75",
        (
            Resting("b50", BID, "50.00", 300, "09:00:00"),
            Resting("b49", BID, "49.00", 200, "09:01:00"),
        ),
        market(ASK, 400),
        (("b50", "50.00", 300), ("b49", "49.00", 100)),
        (FILLED, 400, 0, 0, "49.75"),
        (("49.00", 100, 1),),
        (),
    ),
    MatchCase(
        "market-buy-takes-asks-only-and-ignores-bids",
        (
            Resting("bid", BID, "9.00", 100, "09:00:00"),
            Resting("ask", ASK, "10.00", 100, "09:00:01"),
        ),
        market(BID, 60),
        (("ask", "10.00", 60),),
        (FILLED, 60, 0, 0, "10.00"),
        (("9.00", 100, 1),),
        (("10.00", 40, 1),),
    ),
    MatchCase(
        "market-sell-fifo-within-a-level",
        (
            Resting("old", BID, "10.00", 100, "09:00:00"),
            Resting("new", BID, "10.00", 100, "09:00:01"),
        ),
        market(ASK, 150),
        (("old", "10.00", 100), ("new", "10.00", 50)),
        (FILLED, 150, 0, 0, "10.00"),
        (("10.00", 50, 1),),
        (),
    ),
    MatchCase(
        "market-on-an-empty-side-never-rests",
        (Resting("ask", ASK, "10.00", 100, "09:00:00"),),
        market(ASK, 100),
        (),
        (CANCELLED, 0, 0, 100, None),
        (),
        (("10.00", 100, 1),),
    ),
]


def _levels(rows: tuple[tuple[str, int, int], ...]) -> list[Level]:
    return [Level(cents(price), quantity, count) for price, quantity, count in rows]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in MATCH_CASES])
def test_match(case: MatchCase) -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    placed = place(book, ids, case.resting)
    name_of = {order.order_id: name for name, order in placed.items()}
    incoming = new_order(case.incoming, ids.order_id(), NOW)

    result = book.submit(incoming, NOW, ids.trade_id)

    got = [(name_of[f.resting.order_id], f.trade.price, f.trade.quantity) for f in result.fills]
    assert got == [(name, cents(price), quantity) for name, price, quantity in case.trades]
    final = result.order
    status, filled, remaining, cancelled, average = case.outcome
    assert final.status == status
    assert (final.filled_quantity, final.remaining_quantity) == (filled, remaining)
    assert final.cancelled_quantity == cancelled
    assert final.average_price == (None if average is None else cents(average))
    assert final.trades == tuple(f.trade for f in result.fills)
    assert final.created_at == NOW
    assert final.cancelled_at is None and final.expired_at is None
    assert book.levels(BID, 50) == _levels(case.bids_after)
    assert book.levels(ASK, 50) == _levels(case.asks_after)

    trade_ids = [f.trade.trade_id for f in result.fills]
    assert len(set(trade_ids)) == len(trade_ids)
    for fill in result.fills:
        trade = fill.trade
        assert trade.executed_at == NOW  # one clock reading per pass
        assert trade.symbol == "AAPL"
        assert fill.bid.side == BID and fill.ask.side == ASK
        assert (trade.bid_order_id, trade.ask_order_id) == (fill.bid.order_id, fill.ask.order_id)
        assert (trade.bid_broker_id, trade.ask_broker_id) == (
            fill.bid.broker_id,
            fill.ask.broker_id,
        )
        assert fill.incoming.order_id == incoming.order_id
        assert fill.resting.trades[-1] == trade and fill.incoming.trades[-1] == trade
    # A resting order's last fill is its state now: on the book unless filled.
    last_state = {f.resting.order_id: f.resting for f in result.fills}
    for order_id, order in last_state.items():
        if order.status == FILLED:
            assert order.remaining_quantity == 0 and book.get(order_id) is None
        else:
            assert order.status == PARTIALLY_FILLED and book.get(order_id) == order
    rests = final.type == LIMIT and final.remaining_quantity > 0
    assert book.get(final.order_id) == (final if rests else None)


def test_incoming_order_state_after_each_fill_is_carried_by_its_fill() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    place(book, ids, ASKS_4_6)
    result = submit(book, ids, market(BID, 250), NOW)
    assert [(f.incoming.filled_quantity, f.incoming.remaining_quantity) for f in result.fills] == [
        (100, 150),
        (250, 0),
    ]
    assert [f.incoming.status for f in result.fills] == [PARTIALLY_FILLED, FILLED]
    assert [(f.resting.status, f.resting.remaining_quantity) for f in result.fills] == [
        (FILLED, 0),
        (PARTIALLY_FILLED, 50),
    ]


def test_market_buy_250_worked_example_in_full() -> None:
    """Market buy 250: 100 @ 10.00 + 150 @ 11.00, cost 2650.00, one `executed_at` equal to
    `created_at`."""
    book = OrderBook("AAPL")
    ids = SequentialIds()
    place(book, ids, ASKS_4_6)
    now = at("09:05:00")
    result = submit(book, ids, market(BID, 250), now)
    order = result.order
    assert order.type == MARKET and order.price is None and order.expires_at is None
    assert order.filled_value == cents("2650.00")
    assert order.average_price == cents("10.60")
    assert {t.executed_at for t in order.trades} == {order.created_at} == {now}
    assert len(book) == 2
    assert book.best_price(ASK) == cents("11.00")


def test_market_buy_400_average_truncates_toward_zero() -> None:
    """380000 cents over 350 shares is 1085.71… cents: truncated to the cent, 10.85."""
    book = OrderBook("AAPL")
    ids = SequentialIds()
    place(book, ids, ASKS_4_6)
    order = submit(book, ids, market(BID, 400), NOW).order
    assert order.filled_value == 380_000
    assert order.average_price == 1085
    assert len(book) == 0 and book.best_price(ASK) is None


def test_market_sell_400_worked_example_proceeds() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    place(
        book,
        ids,
        (
            Resting("b50", BID, "50.00", 300, "09:00:00"),
            Resting("b49", BID, "49.00", 200, "09:01:00"),
        ),
    )
    order = submit(book, ids, market(ASK, 400), NOW).order
    assert order.filled_value == cents("19900.00")
    assert [(t.price, t.quantity) for t in order.trades] == [(5000, 300), (4900, 100)]
    assert order.side == ASK and order.status == FILLED


def test_a_market_order_never_rests_and_never_meets_another_market_order() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    first = submit(book, ids, market(BID, 100), NOW)
    second = submit(book, ids, market(ASK, 100), NOW)
    for result in (first, second):
        assert result.fills == ()
        assert result.order.status == CANCELLED
        assert result.order.cancelled_quantity == 100
    assert len(book) == 0
    assert book.levels(BID, 10) == [] and book.levels(ASK, 10) == []
    assert book.next_expiry() is None


def test_trade_ids_come_from_the_factory_in_match_order() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    place(book, ids, ASKS_4_6)  # ord-…1, ord-…2, ord-…3
    result = submit(book, ids, market(BID, 400), NOW)  # ord-…4, then trd-…5, 6, 7
    assert [t.trade_id for t in result.order.trades] == [
        "trd-00000000-0000-4000-8000-000000000005",
        "trd-00000000-0000-4000-8000-000000000006",
        "trd-00000000-0000-4000-8000-000000000007",
    ]
    assert result.order.order_id == "ord-00000000-0000-4000-8000-000000000004"


# -- the order states: status and quantities in each situation ---------------------------

CANCEL_AT = ts("2026-02-17T10:15:00Z")


def _resting_bid_1000(book: OrderBook, ids: SequentialIds) -> Order:
    return submit(book, ids, limit(BID, "150.00", 1000), at("09:00:00")).order


def _hit_with_ask_500(book: OrderBook, ids: SequentialIds) -> None:
    # An incoming limit ask trades at its own price: the seller's price.
    submit(book, ids, limit(ASK, "148.00", 500, broker="s"), at("09:30:00"))


def _limit_resting_no_fill(book: OrderBook, ids: SequentialIds) -> Order:
    return _resting_bid_1000(book, ids)


def _limit_600_filled_rest_resting(book: OrderBook, ids: SequentialIds) -> Order:
    place(book, ids, (Resting("a", ASK, "148.00", 600, "09:00:00", broker="s"),))
    return submit(book, ids, limit(BID, "150.00", 1000), at("09:01:00")).order


def _limit_filled_on_submission(book: OrderBook, ids: SequentialIds) -> Order:
    place(book, ids, (Resting("a", ASK, "148.00", 1000, "09:00:00", broker="s"),))
    return submit(book, ids, limit(BID, "150.00", 1000), at("09:01:00")).order


def _limit_cancelled_no_fill(book: OrderBook, ids: SequentialIds) -> Order:
    order = _resting_bid_1000(book, ids)
    cancelled = book.cancel(order.order_id, CANCEL_AT)
    assert cancelled is not None
    return cancelled


def _limit_cancelled_after_500_filled(book: OrderBook, ids: SequentialIds) -> Order:
    order = _resting_bid_1000(book, ids)
    _hit_with_ask_500(book, ids)
    cancelled = book.cancel(order.order_id, CANCEL_AT)
    assert cancelled is not None
    return cancelled


def _limit_expired_after_500_filled(book: OrderBook, ids: SequentialIds) -> Order:
    _resting_bid_1000(book, ids)
    _hit_with_ask_500(book, ids)
    (expired,) = book.expire_due(FAR + 250_000)  # the sweep ran a little after expires_at
    return expired


def _market_filled_two_levels(book: OrderBook, ids: SequentialIds) -> Order:
    place(
        book,
        ids,
        (
            Resting("a148", ASK, "148.00", 700, "09:00:00", broker="s"),
            Resting("a149", ASK, "149.00", 300, "09:00:01", broker="s"),
        ),
    )
    return submit(book, ids, market(BID, 1000), at("09:01:00")).order


def _market_400_filled_ioc_600(book: OrderBook, ids: SequentialIds) -> Order:
    place(book, ids, (Resting("a148", ASK, "148.00", 400, "09:00:00", broker="s"),))
    return submit(book, ids, market(BID, 1000), at("09:01:00")).order


# situation, build, status, (filled, remaining, cancelled), cancelled_at, expired_at,
# average_price, number of trades
STATE_TABLE = [
    ("limit-resting-no-fill", _limit_resting_no_fill, PENDING, (0, 1000, 0), None, None, None, 0),
    (
        "limit-600-filled-rest-resting",
        _limit_600_filled_rest_resting,
        PARTIALLY_FILLED,
        (600, 400, 0),
        None,
        None,
        "148.00",
        1,
    ),
    (
        "limit-filled-on-submission",
        _limit_filled_on_submission,
        FILLED,
        (1000, 0, 0),
        None,
        None,
        "148.00",
        1,
    ),
    (
        "limit-cancelled-no-fill",
        _limit_cancelled_no_fill,
        CANCELLED,
        (0, 0, 1000),
        CANCEL_AT,
        None,
        None,
        0,
    ),
    (
        "limit-cancelled-after-500-filled",
        _limit_cancelled_after_500_filled,
        CANCELLED,
        (500, 0, 500),
        CANCEL_AT,
        None,
        "148.00",
        1,
    ),
    (
        "limit-expired-after-500-filled",
        _limit_expired_after_500_filled,
        EXPIRED,
        (500, 0, 500),
        None,
        FAR,
        "148.00",
        1,
    ),
    (
        "market-filled-700-at-148-300-at-149",
        _market_filled_two_levels,
        FILLED,
        (1000, 0, 0),
        None,
        None,
        "148.30",
        2,
    ),
    (
        "market-400-filled-ioc-cancelled-600",
        _market_400_filled_ioc_600,
        CANCELLED,
        (400, 0, 600),
        None,
        None,
        "148.00",
        1,
    ),
]


@pytest.mark.parametrize(
    ("build", "status", "quantities", "cancelled_at", "expired_at", "average", "trades"),
    [pytest.param(*row[1:], id=row[0]) for row in STATE_TABLE],
)
def test_state_table(
    build: Callable[[OrderBook, SequentialIds], Order],
    status: str,
    quantities: tuple[int, int, int],
    cancelled_at: int | None,
    expired_at: int | None,
    average: str | None,
    trades: int,
) -> None:
    book = OrderBook("AAPL")
    order = build(book, SequentialIds())
    assert order.quantity == 1000
    assert order.status == status
    assert (order.filled_quantity, order.remaining_quantity, order.cancelled_quantity) == quantities
    assert order.quantity == sum(quantities)
    assert order.cancelled_at == cancelled_at
    assert order.expired_at == expired_at
    assert order.average_price == (None if average is None else cents(average))
    assert len(order.trades) == trades
    assert order.is_active == (status in (PENDING, PARTIALLY_FILLED))
    assert (book.get(order.order_id) is not None) == order.is_active


# -- expiry: due at expires_at <= now, in expires_at order --------------------------------


def test_expire_due_closes_due_orders_in_expires_at_order() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    placed = place(
        book,
        ids,
        (
            Resting("late", BID, "10.00", 10, "09:00:00", expires_at=at("10:00:03")),
            Resting("early", ASK, "11.00", 20, "09:00:01", expires_at=at("10:00:01")),
            Resting("middle", BID, "9.00", 30, "09:00:02", expires_at=at("10:00:02")),
            Resting("boundary", ASK, "12.00", 40, "09:00:03", expires_at=at("10:00:04")),
            Resting("kept", ASK, "12.00", 50, "09:00:04", expires_at=at("10:00:04.000001")),
        ),
    )
    assert book.next_expiry() == at("10:00:01")

    expired = book.expire_due(at("10:00:04"))  # expires_at == now is due

    assert [o.order_id for o in expired] == [
        placed[name].order_id for name in ("early", "middle", "late", "boundary")
    ]
    for order in expired:
        assert order.status == EXPIRED
        assert order.expired_at == order.expires_at  # not the sweep's time
        assert order.cancelled_at is None
        assert (order.filled_quantity, order.remaining_quantity) == (0, 0)
        assert order.cancelled_quantity == order.quantity
        assert book.get(order.order_id) is None
    assert [o.order_id for o in book.resting_orders()] == [placed["kept"].order_id]
    assert book.levels(ASK, 10) == [Level(1200, 50, 1)]
    assert book.levels(BID, 10) == []
    assert book.next_expiry() == at("10:00:04.000001")
    assert book.expire_due(at("10:00:04")) == []  # nothing is expired twice


def test_expire_due_before_anything_is_due_changes_nothing() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    placed = place(book, ids, (Resting("a", ASK, "10.00", 10, "09:00:00", expires_at=FAR),))
    assert book.expire_due(FAR - 1) == []
    assert book.get(placed["a"].order_id) == placed["a"]
    assert book.next_expiry() == FAR


def test_an_expired_order_never_matches_once_expire_due_ran() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    placed = place(
        book,
        ids,
        (
            Resting("best-but-due", ASK, "10.00", 100, "09:00:00", expires_at=at("09:04:00")),
            Resting("next", ASK, "10.50", 100, "09:00:01"),
        ),
    )
    expired = book.expire_due(NOW)
    assert [o.order_id for o in expired] == [placed["best-but-due"].order_id]

    result = submit(book, ids, limit(BID, "11.00", 150), NOW)

    assert [(f.resting.order_id, f.trade.price, f.trade.quantity) for f in result.fills] == [
        (placed["next"].order_id, 1050, 100)
    ]
    assert result.order.remaining_quantity == 50
    assert book.levels(BID, 10) == [Level(1100, 50, 1)]


def test_expiry_index_forgets_filled_and_cancelled_orders() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    placed = place(
        book,
        ids,
        (
            Resting("filled", ASK, "10.00", 10, "09:00:00", expires_at=at("10:00:00")),
            Resting("cancelled", ASK, "10.50", 10, "09:00:01", expires_at=at("10:00:01")),
            Resting("partial", ASK, "11.00", 10, "09:00:02", expires_at=at("10:00:02")),
        ),
    )
    submit(book, ids, limit(BID, "10.00", 10), NOW)
    assert book.cancel(placed["cancelled"].order_id, NOW) is not None
    submit(book, ids, limit(BID, "11.00", 4), NOW)
    assert book.next_expiry() == at("10:00:02")

    (expired,) = book.expire_due(at("11:00:00"))

    assert expired.order_id == placed["partial"].order_id
    assert (expired.filled_quantity, expired.cancelled_quantity) == (4, 6)
    assert len(book) == 0 and book.next_expiry() is None


# -- cancel: only a resting order, which leaves the book -----------------------------------


def test_cancel_returns_the_closed_order_and_removes_it() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    placed = place(
        book,
        ids,
        (
            Resting("a1", ASK, "10.00", 100, "09:00:00"),
            Resting("a2", ASK, "10.00", 200, "09:00:01"),
        ),
    )
    submit(book, ids, limit(BID, "10.00", 30), at("09:01:00"))  # a1 now 30 filled

    cancelled = book.cancel(placed["a1"].order_id, at("09:02:00"))

    assert cancelled is not None
    assert cancelled.status == CANCELLED
    assert cancelled.cancelled_at == at("09:02:00")
    assert cancelled.expired_at is None
    assert (cancelled.filled_quantity, cancelled.remaining_quantity) == (30, 0)
    assert cancelled.cancelled_quantity == 70
    assert [(t.price, t.quantity) for t in cancelled.trades] == [(1000, 30)]  # trades kept
    assert book.get(placed["a1"].order_id) is None
    assert book.levels(ASK, 10) == [Level(1000, 200, 1)]
    assert book.cancel(placed["a1"].order_id, at("09:03:00")) is None  # already gone

    # The cancelled order no longer trades: the next bid takes a2.
    result = submit(book, ids, limit(BID, "10.00", 50), at("09:04:00"))
    assert [f.resting.order_id for f in result.fills] == [placed["a2"].order_id]


def test_cancel_of_an_unknown_or_filled_order_is_none() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    placed = place(book, ids, (Resting("a", ASK, "10.00", 10, "09:00:00"),))
    filled = submit(book, ids, limit(BID, "10.00", 10), NOW).order
    assert book.cancel("ord-unknown", NOW) is None
    assert book.cancel(placed["a"].order_id, NOW) is None
    assert book.cancel(filled.order_id, NOW) is None


# -- reads: levels, sweep, best price ---------------------------------------------------------

LEVEL_BOOK = (
    Resting("b1", BID, "150.00", 1000, "09:00:00"),
    Resting("b2", BID, "150.00", 2000, "09:00:01"),
    Resting("b3", BID, "149.50", 1500, "09:00:02"),
    Resting("b4", BID, "149.00", 100, "09:00:03"),
    Resting("a1", ASK, "151.00", 1500, "09:00:04"),
    Resting("a2", ASK, "151.00", 500, "09:00:05"),
    Resting("a3", ASK, "152.00", 500, "09:00:06"),
    Resting("a4", ASK, "153.00", 10, "09:00:07"),
)


@pytest.mark.parametrize(
    ("side", "depth", "expected"),
    [
        pytest.param(BID, 10, [(15000, 3000, 2), (14950, 1500, 1), (14900, 100, 1)], id="bids"),
        pytest.param(BID, 2, [(15000, 3000, 2), (14950, 1500, 1)], id="bids-depth-2"),
        pytest.param(BID, 1, [(15000, 3000, 2)], id="bids-depth-1"),
        pytest.param(ASK, 10, [(15100, 2000, 2), (15200, 500, 1), (15300, 10, 1)], id="asks"),
        pytest.param(ASK, 2, [(15100, 2000, 2), (15200, 500, 1)], id="asks-depth-2"),
    ],
)
def test_levels_aggregate_by_price_best_first(
    side: str, depth: int, expected: list[tuple[int, int, int]]
) -> None:
    book = OrderBook("AAPL")
    place(book, SequentialIds(), LEVEL_BOOK)
    assert book.levels(side, depth) == [Level(*row) for row in expected]


def test_levels_total_the_remaining_not_the_original_quantity() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    place(book, ids, LEVEL_BOOK)
    submit(book, ids, limit(ASK, "150.00", 1200), NOW)  # b1 filled, b2 left with 1800
    submit(book, ids, limit(BID, "151.00", 1600), NOW)  # a1 filled, a2 left with 400
    assert book.levels(BID, 1) == [Level(15000, 1800, 1)]
    assert book.levels(ASK, 1) == [Level(15100, 400, 1)]
    assert book.best_price(BID) == 15000 and book.best_price(ASK) == 15100


def test_levels_and_best_price_of_an_empty_book() -> None:
    book = OrderBook("AAPL")
    assert book.levels(BID, 10) == [] and book.levels(ASK, 10) == []
    assert book.best_price(BID) is None and book.best_price(ASK) is None
    assert not book.has_liquidity_for(BID) and not book.has_liquidity_for(ASK)
    assert book.sweep(BID, 100) == []


QUOTE_BOOK = (  # the asks of the quote example: 148.00 × 700 (two orders), 150.00 × 300
    Resting("a1", ASK, "148.00", 400, "09:00:00"),
    Resting("a2", ASK, "148.00", 300, "09:00:01"),
    Resting("a3", ASK, "150.00", 300, "09:00:02"),
)


@pytest.mark.parametrize(
    ("resting", "incoming_side", "quantity", "expected"),
    [
        pytest.param(QUOTE_BOOK, BID, 1000, [(14800, 700, 2), (15000, 300, 1)], id="bid-full"),
        pytest.param(QUOTE_BOOK, BID, 400, [(14800, 400, 2)], id="bid-partial-level"),
        pytest.param(QUOTE_BOOK, BID, 5000, [(14800, 700, 2), (15000, 300, 1)], id="bid-beyond"),
        pytest.param(QUOTE_BOOK, ASK, 100, [], id="ask-without-bids"),
        pytest.param(ASKS_4_6, BID, 250, [(1000, 100, 1), (1100, 150, 1)], id="4.6-buy-250"),
        pytest.param(
            ASKS_4_6, BID, 400, [(1000, 100, 1), (1100, 200, 1), (1200, 50, 1)], id="4.6-buy-400"
        ),
        pytest.param(
            (
                Resting("b1", BID, "150.00", 300, "09:00:00"),
                Resting("b2", BID, "148.00", 700, "09:00:01"),
            ),
            ASK,
            500,
            [(15000, 300, 1), (14800, 200, 1)],
            id="ask-walks-bids-descending",
        ),
    ],
)
def test_sweep_takes_level_by_level(
    resting: tuple[Resting, ...],
    incoming_side: str,
    quantity: int,
    expected: list[tuple[int, int, int]],
) -> None:
    book = OrderBook("AAPL")
    place(book, SequentialIds(), resting)
    before = (book.levels(BID, 50), book.levels(ASK, 50))
    assert book.sweep(incoming_side, quantity) == [Level(*row) for row in expected]
    assert (book.levels(BID, 50), book.levels(ASK, 50)) == before  # a read, no change


def test_sweep_prices_what_a_market_order_then_fills() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    place(book, ids, QUOTE_BOOK)
    planned = book.sweep(BID, 1000)
    order = submit(book, ids, market(BID, 1000), NOW).order
    assert order.filled_value == sum(level.price * level.quantity for level in planned)
    assert order.filled_value == cents("148600.00")
    assert order.average_price == cents("148.60")


# -- restore (recovery) ----------------------------------------------------------------------


def test_restore_puts_orders_back_without_matching_in_key_order() -> None:
    book = OrderBook("AAPL")
    ids = SequentialIds()
    source = OrderBook("AAPL")
    placed = place(
        source,
        ids,
        (
            Resting("a1", ASK, "10.00", 100, "09:00:00"),
            Resting("a2", ASK, "10.00", 50, "09:00:01"),
            Resting("b1", BID, "9.00", 70, "09:00:02", expires_at=at("12:00:00")),
        ),
    )
    partially = submit(source, ids, limit(BID, "10.00", 40), at("09:01:00")).fills[0].resting
    for order in (placed["b1"], placed["a2"], partially):  # any insertion order
        book.restore(order)
    assert book.levels(ASK, 10) == [Level(1000, 110, 2)]
    assert book.levels(BID, 10) == [Level(900, 70, 1)]
    assert book.get(partially.order_id) == partially
    assert book.next_expiry() == at("12:00:00")
    result = submit(book, ids, limit(BID, "10.00", 80), at("09:02:00"))
    assert [(f.resting.order_id, f.trade.quantity) for f in result.fills] == [
        (placed["a1"].order_id, 60),
        (placed["a2"].order_id, 20),
    ]


# -- churn: the lazy paths of the levels and the expiry heap ------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_churned_levels_keep_price_time_priority_and_expiry_order(seed: int) -> None:
    """Random rests (same-microsecond ties with ids out of order included), cancels,
    fills and expiries on few price levels, checked against a plain sorted list: every
    fill takes the best (price, created_at, order_id), the L2 totals and the next expiry
    always match. Enough churn to compact levels and rebuild the expiry heap."""
    rng = random.Random(seed)
    book = OrderBook("AAPL")
    resting: dict[str, Order] = {}  # the reference: what must be on the book
    now = at("09:00:00")
    serial = 0

    def key(order: Order) -> tuple[int, int, str]:
        return (
            -order.price if order.side == BID else order.price,
            order.created_at,
            order.order_id,
        )  # type: ignore[operator]

    for _ in range(1_500):
        draw = rng.random()
        now += rng.choice((0, 0, 1))  # many ties
        if draw < 0.55:
            serial += 1
            side = ASK  # one side only: rests never cross, fills come from bids below
            order_id = f"ord-{rng.randrange(10**6):06d}-{serial}"  # ids not in time order
            price = rng.choice((1000, 1001, 1002))
            command = SubmitOrder(
                LIMIT, "b", "1", side, "AAPL", rng.randint(1, 5), price, now + rng.randint(1, 400)
            )
            order = new_order(command, order_id, now)
            book.restore(order)
            resting[order_id] = order
        elif draw < 0.75 and resting:
            order_id = rng.choice(sorted(resting))
            cancelled = book.cancel(order_id, now)
            assert cancelled is not None and cancelled.order_id == order_id
            del resting[order_id]
        elif draw < 0.95 and resting:
            quantity = rng.randint(1, 12)
            incoming = new_order(
                SubmitOrder(LIMIT, "b", "1", BID, "AAPL", quantity, 1002, now + 10**9),
                f"bid-{serial}",
                now,
            )
            serial += 1
            result = book.submit(incoming, now, lambda: f"trd-{rng.random()}")
            expected = sorted(resting.values(), key=key)
            # every ask is at or below the bid's 10.02: it fills all it can, no less
            fillable = min(quantity, sum(o.remaining_quantity for o in expected))
            assert sum(fill.trade.quantity for fill in result.fills) == fillable
            assert result.order.filled_quantity == fillable
            assert result.order.remaining_quantity == quantity - fillable
            left = quantity
            for fill in result.fills:
                best = expected.pop(0)
                assert fill.resting.order_id == best.order_id
                take = min(left, best.remaining_quantity)
                assert fill.trade.quantity == take
                left -= take
                if take < best.remaining_quantity:
                    resting[best.order_id] = fill.resting
                else:
                    del resting[best.order_id]
            book.cancel(incoming.order_id, now)  # the rest of the bid leaves again
        else:
            now += rng.randint(0, 300)
            expired = book.expire_due(now)
            due = sorted(
                (o for o in resting.values() if o.expires_at <= now),  # type: ignore[operator]
                key=lambda o: (o.expires_at, o.order_id),
            )
            assert [o.order_id for o in expired] == [o.order_id for o in due]
            for order in due:
                del resting[order.order_id]
        assert len(book) == len(resting)
        totals: dict[int, list[int]] = {}
        for order in resting.values():
            level = totals.setdefault(order.price, [0, 0])  # type: ignore[arg-type]
            level[0] += order.remaining_quantity
            level[1] += 1
        assert book.levels(ASK, 10) == [Level(p, q, n) for p, (q, n) in sorted(totals.items())]
        assert book.best_price(ASK) == (min(totals) if totals else None)
        assert book.best_price(BID) is None  # each bid's rest was cancelled again
        assert book.has_liquidity_for(BID) == bool(totals)
        expiries = [o.expires_at for o in resting.values()]
        assert book.next_expiry() == (min(expiries) if expiries else None)  # type: ignore[type-var]
