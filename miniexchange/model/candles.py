"""Candles: a symbol's trades aggregated per interval, built as the trades happen.

Each trade updates the current candle of every interval in O(1): history is never
rescanned, so the live feed and the journal's fold keep the same candles by handing
the same trades over in the same (execution) order. Candles are immutable values;
the series swaps its last one for a new value, so a copy taken under the owner's lock
never holds half an update. At most `CANDLES_KEPT` candles are kept per interval: the
oldest goes when a new interval opens past it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import Final, NamedTuple

INTERVALS: Final[dict[str, int]] = {
    "1s": 1_000_000,
    "1m": 60_000_000,
    "5m": 300_000_000,
    "1h": 3_600_000_000,
    "1d": 86_400_000_000,
}
"""Interval name -> length in microseconds; starts are aligned to the Unix epoch (UTC)."""

CANDLES_KEPT: Final = 1000


class Candle(NamedTuple):
    """One interval that had trades (amounts in cents, times in µs since the epoch)."""

    start: int
    open: int
    high: int
    low: int
    close: int
    volume: int  # shares
    trades: int  # count


class SymbolCandles:
    """One symbol's candles of every interval, oldest first."""

    __slots__ = ("series",)

    def __init__(self) -> None:
        self.series: dict[str, deque[Candle]] = {
            name: deque(maxlen=CANDLES_KEPT) for name in INTERVALS
        }

    def add(self, price: int, quantity: int, executed_at: int) -> None:
        """Count one trade; trades arrive in execution order (fills of one pass share
        `executed_at` and come in match order, so the later one closes the candle)."""
        for name, length in INTERVALS.items():
            kept = self.series[name]
            start = executed_at - executed_at % length
            if kept and kept[-1].start >= start:
                # Its interval, or (a clock stepped back) a later one: never reopen an
                # older candle, so the series stays oldest first.
                last = kept[-1]
                kept[-1] = Candle(
                    last.start,
                    last.open,
                    max(last.high, price),
                    min(last.low, price),
                    price,
                    last.volume + quantity,
                    last.trades + 1,
                )
            else:
                kept.append(Candle(start, price, price, price, price, quantity, 1))

    def latest(self, interval: str, limit: int) -> list[Candle]:
        """The latest `limit` candles of `interval`, oldest first."""
        kept = self.series[interval]
        newest_first = list(islice(reversed(kept), limit))
        newest_first.reverse()
        return newest_first

    def items(self) -> Iterator[tuple[str, deque[Candle]]]:
        return iter(self.series.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SymbolCandles):
            return NotImplemented
        return all(list(self.series[n]) == list(other.series[n]) for n in INTERVALS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}: {len(kept)}" for name, kept in self.series.items())
        return f"SymbolCandles({counts})"
