"""The VWAP window forgets trades as time passes, not only when the price is read: a
symbol that trades all day and whose price nobody reads holds one window of trades."""

from __future__ import annotations

from miniexchange.model import engine
from miniexchange.model.engine import Outcome, SymbolState
from miniexchange.model.orders import Trade
from miniexchange.model.vwap import Price, TradeWindow
from tests.model.support import at

SECOND = 1_000_000
WINDOW = 300 * SECOND
T0 = at("09:00:00")


def trade(n: int, executed_at: int, price: int = 100_00, quantity: int = 10) -> Trade:
    return Trade(f"trd-{n}", "AAPL", price, quantity, executed_at, "b", "a", "bb", "ab")


def test_a_day_of_trades_without_a_price_read_holds_one_window() -> None:
    window = TradeWindow(WINDOW)
    for n in range(3600):  # one trade a second for an hour, nobody reads the price
        window.record(trade(n, T0 + n * SECOND))
    assert len(window) == 301  # 09:54:59 ... 09:59:59: the last five minutes, both ends
    assert window.price(T0 + 3599 * SECOND) == Price(100_00, 301, T0 + 3599 * SECOND)


def test_a_trade_forgets_those_it_pushes_out_of_the_window() -> None:
    window = TradeWindow(WINDOW)
    window.record(trade(1, T0, 100_00, 10))
    window.record(trade(2, T0 + SECOND, 200_00, 10))
    window.record(trade(3, T0 + 2 * SECOND, 300_00, 30))
    window.record(trade(4, T0 + WINDOW + SECOND + SECOND // 2, 400_00, 10))
    assert len(window) == 2  # T0 and T0 + 1 s left; T0 + 2 s is still inside
    now = T0 + WINDOW + 2 * SECOND
    assert window.price(now) == Price((300_00 * 30 + 400_00 * 10) // 40, 2, now - SECOND // 2)


def test_an_expiration_sweep_forgets_the_trades_that_left_the_window() -> None:
    """Every step of a symbol starts with the sweep of due orders (the clock actor's
    expiry too): the window forgets there, with no price read."""
    state = SymbolState("AAPL", WINDOW, trades=[trade(1, T0), trade(2, T0 + 10 * SECOND)])
    engine.expire_due(state, Outcome(T0 + WINDOW + 5 * SECOND))
    assert len(state.trades) == 1
    engine.expire_due(state, Outcome(T0 + WINDOW + 10 * SECOND))
    assert len(state.trades) == 1  # exactly at the window's edge: still inside
    engine.expire_due(state, Outcome(T0 + WINDOW + 10 * SECOND + 1))
    assert len(state.trades) == 0
    later = T0 + 2 * WINDOW
    assert state.trades.price(later) == Price(100_00, 0, T0 + 10 * SECOND)  # the last price


def test_a_recovered_symbol_keeps_only_its_last_window() -> None:
    trades = [trade(n, T0 + n * SECOND) for n in range(1000)]
    state = SymbolState("AAPL", WINDOW, trades=trades)
    assert len(state.trades) == 301


def test_a_window_restored_from_its_state_prices_as_the_original() -> None:
    """A shard's snapshot keeps the window as its trades held and its last trade."""
    window = TradeWindow(WINDOW)
    window.record(trade(1, T0, 100_00, 10))
    window.record(trade(2, T0 + SECOND, 200_00, 10))
    window.record(trade(3, T0 + 2 * SECOND, 300_00, 30))
    held = ((T0, 100_000, 10), (T0 + SECOND, 200_000, 10), (T0 + 2 * SECOND, 900_000, 30))
    assert (window.window_us, window.held()) == (WINDOW, held)
    restored = TradeWindow.restored(WINDOW, held, window.last_price, window.last_at)
    assert restored.held() == held
    expected = [
        Price(1_200_000 // 50, 3, T0 + 2 * SECOND),
        Price(1_100_000 // 40, 2, T0 + 2 * SECOND),  # the first trade left the window
        Price(300_00, 0, T0 + 2 * SECOND),  # all left: the last price
    ]
    reads = (T0 + 2 * SECOND, T0 + WINDOW + SECOND, T0 + WINDOW + 3 * SECOND)
    assert [restored.price(now) for now in reads] == expected
    assert [window.price(now) for now in reads] == expected
