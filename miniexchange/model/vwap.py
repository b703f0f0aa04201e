"""The trade history behind a symbol's current price, the VWAP of a window.

Keeps running sums over the trades inside the VWAP window, so a price read costs the
trades that left the window since the last read (amortised O(1)), never a rescan of
the symbol's history. Trades leave as time passes, not only when the price is read:
each recorded trade and each step of the symbol (`advance`, from the engine's sweep of
due orders) forgets those older than the window, so a symbol that trades all day
holds one window of trades however rarely its price is read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from miniexchange.model.orders import Trade


@dataclass(frozen=True, slots=True)
class Price:
    current_price: int | None  # cents
    trades_in_window: int
    last_trade_at: int | None  # microseconds


class TradeWindow:
    __slots__ = ("_quantity", "_trades", "_value", "_window", "last_at", "last_price")

    def __init__(self, window_us: int) -> None:
        self._window = window_us
        self._trades: deque[tuple[int, int, int]] = deque()  # (executed_at, value, quantity)
        self._value = 0
        self._quantity = 0
        self.last_price: int | None = None
        self.last_at: int | None = None

    @classmethod
    def restored(
        cls,
        window_us: int,
        held: Iterable[tuple[int, int, int]],
        last_price: int | None,
        last_at: int | None,
    ) -> TradeWindow:
        """A window with these trades held (`held()`) and this last trade, as a shard's
        snapshot file keeps it: the sums follow from the trades, never stored apart."""
        window = cls(window_us)
        for executed_at, value, quantity in held:
            window._trades.append((executed_at, value, quantity))
            window._value += value
            window._quantity += quantity
        window.last_price = last_price
        window.last_at = last_at
        return window

    @property
    def window_us(self) -> int:
        return self._window

    def held(self) -> tuple[tuple[int, int, int], ...]:
        """The (executed_at, value, quantity) of the trades held, oldest first: with the
        window's length and last trade, its whole state (what a snapshot keeps)."""
        return tuple(self._trades)

    def __len__(self) -> int:
        """The trades held: those inside the window as of the latest `advance`."""
        return len(self._trades)

    def record(self, trade: Trade) -> None:
        """Add a trade, forgetting those it pushes out of the window; trades arrive in
        execution order (the clock never goes back)."""
        executed_at = trade.executed_at
        value = trade.price * trade.quantity
        self._trades.append((executed_at, value, trade.quantity))
        self._value += value
        self._quantity += trade.quantity
        self.last_price = trade.price
        self.last_at = executed_at
        self.advance(executed_at)

    def advance(self, now: int) -> None:
        """Time is `now`: forget the trades that left the window (amortised O(1))."""
        trades = self._trades
        oldest = now - self._window
        while trades and trades[0][0] < oldest:
            _, value, quantity = trades.popleft()
            self._value -= value
            self._quantity -= quantity

    def price(self, now: int, forget: bool = True) -> Price:
        """VWAP of the trades with `now - window <= executed_at <= now`, else the last price.

        `forget=False`: the trades that left the window are skipped, not forgotten (a read
        that must change nothing; it costs those trades until the next step forgets them)."""
        if forget:
            self.advance(now)
        trades = self._trades
        value, quantity, count = self._value, self._quantity, len(trades)
        if not forget:
            oldest = now - self._window
            for executed_at, left_value, left_quantity in trades:
                if executed_at >= oldest:
                    break
                value -= left_value
                quantity -= left_quantity
                count -= 1
        if not count:
            return Price(self.last_price, 0, self.last_at)
        return Price(value // quantity, count, self.last_at)
