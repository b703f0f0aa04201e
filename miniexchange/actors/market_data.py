"""The published read side of market data for people: `/stocks`, the tape, candles,
the event streams.

`GET /stocks`, the public tape and the event streams must not queue behind matching,
so each symbol actor publishes what they need into a `SymbolFeed` once a step's facts
are durable (its `durable` callback: on the journal writer thread with SQLite, on the
actor thread without persistence). A feed has one writer at a time, the steps of its
symbol in commit order, and many readers on the event loop.

What a step publishes costs the matching path next to nothing: the step's trades
(appended to a bounded tape and counted in the symbol's candles, O(1) per trade), a tiny `Summary` built from values the book keeps at
hand (best prices, earliest expiry: no L2 snapshot), and a version bump that says
"the book changed". A wake-up crosses to the event loop only while someone streams
the symbol, and at most once until the loop has taken what was published
(`SymbolFeed.take`), however many steps publish meanwhile.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

from miniexchange.actors.listeners import Step, StepListener
from miniexchange.model.candles import Candle, SymbolCandles
from miniexchange.model.engine import BookView
from miniexchange.model.orders import Trade

TAPE_LENGTH = 500
"""Trades kept per symbol for `GET /stocks/{symbol}/trades` (its `limit` tops out here)."""

STREAM_BACKLOG = 1000
"""Trades that may wait for the event loop while a symbol is streamed. Past it every
stream of the symbol would hold more than the 1000 unsent trade events a connection
may have, so the backlog is dropped and those streams are closed."""


class Summary(NamedTuple):
    """One symbol at the end of its latest published step (amounts in cents).

    `next_expiry` is the book's earliest `expires_at`: once it has passed, `best_bid`
    and `best_ask` may include an order that is due, and a reader must ask the actor
    (which expires due orders first) instead of trusting them: no read shows an order
    past its `expires_at`.
    """

    last_price: int | None = None
    volume: int = 0  # shares traded, all time
    best_bid: int | None = None
    best_ask: int | None = None
    next_expiry: int | None = None

    def may_show_a_due_order(self, now: int) -> bool:
        return self.next_expiry is not None and self.next_expiry <= now

    def with_best_prices(self, view: BookView) -> Summary:
        """The best prices of a book read (which leaves due orders out)."""
        return self._replace(
            best_bid=view.bids[0].price if view.bids else None,
            best_ask=view.asks[0].price if view.asks else None,
        )


EMPTY_SUMMARY = Summary()


class SymbolFeed:
    """What one symbol publishes: its summary, its tape, and news for its streams."""

    __slots__ = (
        "_candles",
        "_listener",
        "_lock",
        "_overflowed",
        "_pending",
        "_tape",
        "_wake_pending",
        "book_version",
        "summary",
        "symbol",
    )

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.summary = EMPTY_SUMMARY
        self.book_version = 0  # +1 per published step: every step with facts moved the book
        self._tape: deque[Trade] = deque(maxlen=TAPE_LENGTH)
        self._candles = SymbolCandles()  # changed and read only under the lock
        self._lock = threading.Lock()
        self._listener: Callable[[], None] | None = None
        self._pending: list[Trade] = []  # trades the streams have not taken yet
        self._overflowed = False
        self._wake_pending = False

    # -- the writer (one step at a time, in commit order) -------------------------

    def publish(
        self,
        trades: Iterable[Trade],
        best_bid: int | None,
        best_ask: int | None,
        next_expiry: int | None,
    ) -> None:
        """Publish a step's trades and the book's state at the end of that step."""
        trades = list(trades)
        summary = self.summary
        last_price, volume = summary.last_price, summary.volume
        if trades:
            last_price = trades[-1].price
            volume += sum(trade.quantity for trade in trades)
        with self._lock:
            self.summary = Summary(last_price, volume, best_bid, best_ask, next_expiry)
            self._tape.extend(trades)
            candles = self._candles
            for trade in trades:
                candles.add(trade.price, trade.quantity, trade.executed_at)
            self.book_version += 1
            wake = self._listener
            if wake is None:  # nobody streams the symbol: no news to keep, no wake-up
                return
            if trades:
                if len(self._pending) + len(trades) > STREAM_BACKLOG:
                    self._pending = []
                    self._overflowed = True
                else:
                    self._pending.extend(trades)
            if self._wake_pending:  # the loop has not taken the previous news yet
                return
            self._wake_pending = True
        wake()

    def restore(
        self,
        tape: Iterable[Trade],
        volume: int,
        candles: SymbolCandles | None,
        best_bid: int | None,
        best_ask: int | None,
        next_expiry: int | None,
    ) -> None:
        """Start a recovered symbol from what recovery kept: its latest trades, its
        all-time volume and its candles of every trade (None: it never traded), which
        the kept trades alone could not give. Before anyone listens (no news kept)."""
        tape = list(tape)
        last_price = tape[-1].price if tape else None
        with self._lock:
            self.summary = Summary(last_price, volume, best_bid, best_ask, next_expiry)
            self._tape.extend(tape)
            self._candles = SymbolCandles() if candles is None else candles
            self.book_version += 1

    # -- readers ------------------------------------------------------------------

    def latest_candles(self, interval: str, limit: int) -> list[Candle]:
        """Up to `limit` candles of `interval`, oldest first (immutable values)."""
        with self._lock:
            return self._candles.latest(interval, limit)

    def latest_trades(self, limit: int) -> list[Trade]:
        """Up to `limit` trades, newest first (the later fill of one pass first)."""
        with self._lock:
            return list(itertools.islice(reversed(self._tape), limit))

    def listen(self, wake: Callable[[], None] | None) -> None:
        """Start (or, with None, stop) keeping news for streams; `wake` is called from
        the writer's thread when news arrives and the previous news was taken."""
        with self._lock:
            self._listener = wake
            self._pending = []
            self._overflowed = False
            self._wake_pending = False

    def take(self) -> tuple[list[Trade], bool]:
        """The trades published since the last take, and whether some were dropped
        because the backlog overflowed. Re-arms the wake-up."""
        with self._lock:
            trades, self._pending = self._pending, []
            overflowed, self._overflowed = self._overflowed, False
            self._wake_pending = False
        return trades, overflowed


class MarketData(StepListener):
    """Every symbol's feed, fed by the symbol actors' steps. A feed exists from the
    first time anyone needs it: its symbol's first step, or a stream of a symbol known
    only from holdings, whichever comes first, so a stream opened before the first
    order still hears it."""

    __slots__ = ("_feeds", "_lock")

    def __init__(self) -> None:
        self._feeds: dict[str, SymbolFeed] = {}
        self._lock = threading.Lock()

    def feed(self, symbol: str) -> SymbolFeed:
        feed = self._feeds.get(symbol)
        if feed is None:
            with self._lock:
                feed = self._feeds.setdefault(symbol, SymbolFeed(symbol))
        return feed

    def get(self, symbol: str) -> SymbolFeed | None:
        return self._feeds.get(symbol)

    def on_step(self, step: Step) -> None:
        self.feed(step.symbol).publish(
            step.outcome.trades, step.best_bid, step.best_ask, step.next_expiry
        )

    def summary(self, symbol: str) -> Summary:
        feed = self._feeds.get(symbol)
        return EMPTY_SUMMARY if feed is None else feed.summary
