"""Books 50+ price levels deep on each side, driven through the real engine step and
ledgers (`Trading`) and checked after every step against `tests.reference`, a matcher
written from the rules alone: each order's fills, statuses and quantities, the whole L2
book, market sweeps that cross dozens of levels, and the VWAP price.

Deep books take the paths a shallow one never reaches: levels appearing and emptying in
the middle of a long sorted list, and sweeps and reads that walk many levels.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from miniexchange.model.book import Level
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.orders import Order
from miniexchange.testing import SequentialIds
from tests.model.support import Trading, at
from tests.reference import ReferenceMarket, RefOrder

SYMBOL = "AAPL"
BROKERS = ("b1", "b2", "b3")
LEVELS = 60  # distinct prices per side in the initial book
BID_TOP = 10_000  # the initial bids: 100.00 down to 99.41
ASK_BOTTOM = 10_010  # the initial asks: 100.10 up to 100.69
WINDOW_US = 300_000_000
START = at("09:00:00")
SECOND = 1_000_000

# one resting order of the initial book: (side, step from the top of its side, quantity,
# lifetime in seconds or None for far away)
initial_order = st.tuples(
    st.sampled_from((BID, ASK)),
    st.integers(0, LEVELS - 1),
    st.integers(1, 40),
    st.sampled_from((None, None, None, 30, 90)),
)

operation = st.one_of(
    # a limit order anywhere from well below the bids to well above the asks
    st.tuples(
        st.just("limit"),
        st.sampled_from(BROKERS),
        st.sampled_from((BID, ASK)),
        st.integers(BID_TOP - LEVELS - 10, ASK_BOTTOM + LEVELS + 10),
        st.integers(1, 600),
    ),
    st.tuples(
        st.just("market"),
        st.sampled_from(BROKERS),
        st.sampled_from((BID, ASK)),
        st.integers(1, 900),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 10_000)),
    st.tuples(st.just("advance"), st.integers(1, 60)),
)


def view(order: Order) -> dict[str, Any]:
    return {
        "status": order.status,
        "quantities": (order.filled_quantity, order.remaining_quantity, order.cancelled_quantity),
        "trades": [
            (t.price, t.quantity, t.executed_at, t.bid_order_id, t.ask_order_id)
            for t in order.trades
        ],
        "average_price": order.average_price,
    }


def reference_view(order: RefOrder) -> dict[str, Any]:
    return {
        "status": order.status,
        "quantities": (order.filled, order.remaining, order.cancelled),
        "trades": [(t.price, t.quantity, t.executed_at, t.bid_id, t.ask_id) for t in order.trades],
        "average_price": order.average_price,
    }


def check_reads(
    trading: Trading, reference: ReferenceMarket, now: int, quantities: list[int]
) -> None:
    trading.expire(SYMBOL, now)
    reference.expire(now)
    state = trading.state(SYMBOL)
    for side in (BID, ASK):
        expected = [Level(*level) for level in reference.levels(side, now)]
        assert state.book.levels(side, 10_000) == expected, side
        for quantity in quantities:
            taken = [(level.price, level.quantity) for level in state.book.sweep(side, quantity)]
            assert taken == reference.quote(side, quantity, now), (side, quantity)
    price = state.trades.price(now)
    assert (price.current_price, price.trades_in_window, price.last_trade_at) == (
        reference.price(now).current,
        reference.price(now).trades_in_window,
        reference.price(now).last_trade_at,
    )
    for order_id, expected_order in reference.orders.items():
        assert view(state.orders[order_id]) == reference_view(expected_order), order_id


@settings(max_examples=25)
@given(
    book=st.lists(initial_order, min_size=3 * LEVELS, max_size=4 * LEVELS),
    ops=st.lists(operation, min_size=5, max_size=30),
    quantities=st.lists(st.integers(1, 2_500), min_size=2, max_size=2),
)
def test_deep_books_match_the_reference(
    book: list[tuple[Any, ...]], ops: list[tuple[Any, ...]], quantities: list[int]
) -> None:
    trading = Trading(SequentialIds(), WINDOW_US)
    reference = ReferenceMarket(WINDOW_US)
    for broker_id in BROKERS:
        trading.register(broker_id, 10**12, {SYMBOL: 10**7}, START)
    now = START
    # every level of both sides gets at least one order, the drawn ones in drawn order
    placements = [(BID, step, 5, None) for step in range(LEVELS)]
    placements += [(ASK, step, 5, None) for step in range(LEVELS)]
    for index, (side, step, quantity, lifetime) in enumerate(placements + book):
        price = BID_TOP - step if side == BID else ASK_BOTTOM + step
        expires_at = at("18:00:00") if lifetime is None else START + lifetime * SECOND
        broker_id = BROKERS[index % len(BROKERS)]
        command = SubmitOrder(LIMIT, broker_id, "1", side, SYMBOL, quantity, price, expires_at)
        order = trading.submit(command, now).order
        reference.limit(order.order_id, broker_id, side, price, quantity, expires_at, now)
        assert not order.trades  # the initial book does not cross
    state = trading.state(SYMBOL)
    assert len(state.book.levels(BID, 10_000)) == LEVELS
    assert len(state.book.levels(ASK, 10_000)) == LEVELS
    check_reads(trading, reference, now, quantities)

    ids = list(reference.orders)
    for op in ops:
        if op[0] == "limit":
            _, broker_id, side, price, quantity = op
            command = SubmitOrder(
                LIMIT, broker_id, "1", side, SYMBOL, quantity, price, at("18:00:00")
            )
            order = trading.submit(command, now).order
            expected = reference.limit(
                order.order_id, broker_id, side, price, quantity, at("18:00:00"), now
            )
            assert view(order) == reference_view(expected), op
            ids.append(order.order_id)
        elif op[0] == "market":
            _, broker_id, side, quantity = op
            command = SubmitOrder(MARKET, broker_id, "1", side, SYMBOL, quantity)
            try:
                order = trading.submit(command, now).order
            except ExchangeError as refusal:
                assert refusal.code == "no_liquidity", refusal
                assert reference.market("refused", broker_id, side, quantity, now) is None, op
            else:
                expected_market = reference.market(order.order_id, broker_id, side, quantity, now)
                assert expected_market is not None, op
                assert view(order) == reference_view(expected_market), op
                ids.append(order.order_id)
        elif op[0] == "cancel":
            order_id = ids[op[1] % len(ids)]
            cancelled = trading.cancel(SYMBOL, order_id, now)
            assert (cancelled is not None) == reference.cancel(order_id, now), op
        else:
            now += op[1] * SECOND
        check_reads(trading, reference, now, quantities)
