"""An order's trades: a fill appends in constant time, and every value an order passed
through keeps showing the trades it had (readers on other threads hold such values)."""

from __future__ import annotations

from miniexchange.model.commands import ASK, BID, LIMIT, SubmitOrder
from miniexchange.model.orders import FILLED, PARTIALLY_FILLED, Order, Trade, TradeLog, new_order
from tests.allocation import peak_of, tracing
from tests.model.support import FAR, at

T0 = at("09:00:00")


def resting_ask(quantity: int) -> Order:
    command = SubmitOrder(LIMIT, "seller", "1", ASK, "AAPL", quantity, 100_00, FAR)
    return new_order(command, "ask", T0)


def one_share(n: int) -> Trade:
    return Trade(f"trd-{n}", "AAPL", 100_00, 1, T0 + n, f"bid-{n}", "ask", "buyer", "seller")


def test_a_fill_on_an_order_with_10000_trades_copies_none_of_them() -> None:
    """A fill copying the order's trade list allocates 8 bytes per earlier trade (80 KB
    here); appending allocates a new `Order` and a few words, whatever came before."""
    order = resting_ask(20_000)
    for n in range(10_000):
        order = order.filled(one_share(n))
    trades = [one_share(n) for n in range(10_000, 11_000)]
    peaks = []
    with tracing():
        for trade in trades:
            order, peak = peak_of(lambda before=order, trade=trade: before.filled(trade))
            peaks.append(peak)
    assert len(order.trades) == 11_000
    # list growth is amortised: now and then the shared list grows by an eighth
    assert sum(peaks) / len(peaks) < 2048


def test_every_value_keeps_its_own_trades() -> None:
    values = [resting_ask(5)]
    for n in range(5):
        values.append(values[-1].filled(one_share(n)))
    trades = [one_share(n) for n in range(5)]
    for count, value in enumerate(values):
        assert len(value.trades) == count
        assert list(value.trades) == trades[:count]
        assert value.trades == tuple(trades[:count])
        assert value.filled_quantity == count
    assert values[3].trades[-1] == trades[2] and values[3].trades[0] == trades[0]
    assert values[3].trades[1:] == (trades[1], trades[2])
    assert (values[2].status, values[5].status) == (PARTIALLY_FILLED, FILLED)


def test_a_fill_on_an_earlier_value_leaves_the_later_ones_alone() -> None:
    first = resting_ask(5).filled(one_share(0))
    later = first.filled(one_share(1))
    branch = first.filled(one_share(9))  # not the engine's way, but still a value
    assert list(later.trades) == [one_share(0), one_share(1)]
    assert list(branch.trades) == [one_share(0), one_share(9)]
    assert list(first.trades) == [one_share(0)]
    assert list(later.filled(one_share(2)).trades) == [one_share(n) for n in range(3)]


def test_orders_without_trades_share_one_empty_log_that_never_grows() -> None:
    a, b = resting_ask(3), resting_ask(4)
    assert a.trades is b.trades and len(a.trades) == 0 and a.trades == ()
    filled = a.filled(one_share(0))
    assert len(a.trades) == len(b.trades) == 0 and len(filled.trades) == 1


def test_an_order_spelled_with_a_tuple_of_trades_fills_like_any_other() -> None:
    spelled = resting_ask(3)._replace(trades=(one_share(0),), filled_quantity=1)
    filled = spelled.filled(one_share(1))
    assert isinstance(filled.trades, TradeLog)
    assert filled.trades == (one_share(0), one_share(1)) and spelled.trades == (one_share(0),)


def test_a_log_compares_by_its_trades() -> None:
    log = TradeLog.of([one_share(0), one_share(1)])
    assert log == (one_share(0), one_share(1)) == log
    assert log == [one_share(0), one_share(1)]
    assert log != (one_share(0),) and log != (one_share(0), one_share(2))
    assert hash(log) == hash((one_share(0), one_share(1)))
    assert one_share(1) in log and one_share(2) not in log
    bid = SubmitOrder(LIMIT, "buyer", "1", BID, "AAPL", 1, 100_00, FAR)
    assert new_order(bid, "bid", T0).trades == TradeLog.of(())
