"""Shard snapshots: a shard's whole state at one point of its own step order, as values,
so that a restarted shard starts from its latest snapshot and replays only the batches
after it (docs/ray.md, "The command journal and recovery").

An account shard's snapshot is taken after its R2 of a batch, a symbol shard's after
its ME of one; each carries its phase bookkeeping (the last R1, R2 or ME done, and the
answers R1 decided for a batch still in flight, which leave with that batch's R2).

**Where the state comes from: the actors, read through messages**, not the facts of a
journal that keeps them. Facts cannot rebuild a shard: an account shard's ledgers hold
what no fact records (the budgets R1 holds for a batch in flight; the split of held
cash per symbol, which decides between a refusal and a shortfall), its orders' trades
are journaled by the symbol shards, and a symbol's VWAP window and candles are state
the embedded recovery rebuilds only from every trade. So each actor's state is read
with pykka's attribute messages (`ref.proxy()`), queued behind everything the shard
sent that actor; the shard waits for every message it sends and sends none meanwhile,
so the actor is idle while its values are copied. A restore sets those same attributes
on the freshly started (empty) actors the same way, before any command reaches them,
so the shard's constructor stays the one place that starts its actors; the values are
those the actors' own restore arguments take in the embedded recovery (`Exchange.start`).

**Values, not bytes:** orders, trades, candles and subscriptions are immutable, so a
snapshot is references to them plus copies of the small mutable parts (ledgers, the
VWAP window), taken on the shard's thread and never changed after; a restore copies
them again, so one snapshot can start any number of shards. The records follow
`journal.snapshot`'s kinds (ledgers, credentials, subscriptions, orders, trades,
candles); their bytes are `cluster.snapshot_format`'s, the file the restart's (landing
step 8).
Nothing here reads a clock or draws anything: every value was stamped.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import pykka

from miniexchange.actors.market_data import TAPE_LENGTH, SymbolFeed
from miniexchange.model.candles import CANDLES_KEPT, INTERVALS, Candle, SymbolCandles
from miniexchange.model.commands import ASK, BID
from miniexchange.model.credentials import Credentials
from miniexchange.model.engine import SymbolState
from miniexchange.model.ledger import Ledger
from miniexchange.model.orders import Order, Trade
from miniexchange.model.subscriptions import Subscription
from miniexchange.model.vwap import TradeWindow


def read_attribute(actor: pykka.ActorRef[Any], name: str) -> Any:
    """An actor's attribute, read on its own thread after every message sent before."""
    return getattr(actor.proxy(), name).get()


def set_attribute(actor: pykka.ActorRef[Any], name: str, value: object) -> None:
    """Set an actor's attribute on its own thread (waits until it is set)."""
    setattr(actor.proxy(), name, value)


# -- account shards --------------------------------------------------------------------------


class LedgerState(NamedTuple):
    """A ledger as the snapshot's `ledger` record, plus what it holds: the reservations
    are part of the state here (an account shard's holds include budgets of a batch in
    flight, which no order accounts for), not derived from the active orders."""

    broker_id: str
    cash: int
    holdings: tuple[tuple[str, int], ...]
    created_at: int
    updated_at: int
    reserved_cash: int
    cash_held_on: tuple[tuple[str, int], ...]
    reserved_shares: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, ledger: Ledger) -> LedgerState:
        return cls(
            ledger.broker_id,
            ledger.cash,
            tuple(ledger.holdings.items()),
            ledger.created_at,
            ledger.updated_at,
            ledger.reserved_cash,
            tuple(ledger.cash_held_on.items()),
            tuple(ledger.reserved_shares.items()),
        )

    def ledger(self) -> Ledger:
        """A new ledger in this state (each restore gets its own)."""
        ledger = Ledger(self.broker_id, self.cash, dict(self.holdings), self.created_at)
        ledger.updated_at = self.updated_at
        ledger.reserved_cash = self.reserved_cash
        ledger.cash_held_on = dict(self.cash_held_on)
        ledger.reserved_shares = dict(self.reserved_shares)
        return ledger


class AccountSnapshot(NamedTuple):
    """An account shard after its R2 of `r2_done` (and R1 up to `r1_done`: one batch
    more when it was in flight)."""

    index: int
    account_shards: int
    symbol_shards: int
    r1_done: int
    r2_done: int
    r2_allowed: int
    """The last batch whose R2 the sequencer let run (`AccountShard.allow_r2`)."""
    decided: tuple[tuple[int, tuple[tuple[int, Any], ...]], ...]
    """R1's answers of each batch in flight, by batch: they leave with its R2."""
    ledgers: tuple[LedgerState, ...]
    credentials: tuple[tuple[str, Credentials], ...]
    subscriptions: tuple[Subscription, ...]
    """Per broker, in creation order (the listing's tie-break)."""
    orders: tuple[Order, ...]
    """The read index, in the order its orders were first published (acceptance): each
    broker's listing is rebuilt from it."""
    listed: tuple[str, ...]
    """The symbols this shard has seen listed."""


# -- symbol shards ---------------------------------------------------------------------------


class FeedState(NamedTuple):
    """A symbol's published market data: the tape (oldest first), the all-time volume,
    the candles of every interval (as `journal.snapshot`'s `candles` records) and the
    version the event streams count from."""

    tape: tuple[Trade, ...]
    volume: int
    candles: tuple[tuple[str, tuple[Candle, ...]], ...]
    book_version: int

    @classmethod
    def of(cls, feed: SymbolFeed) -> FeedState:
        newest_first = feed.latest_trades(TAPE_LENGTH)
        newest_first.reverse()
        candles = tuple(
            (interval, tuple(feed.latest_candles(interval, CANDLES_KEPT))) for interval in INTERVALS
        )
        return cls(tuple(newest_first), feed.summary.volume, candles, feed.book_version)

    def restore(self, feed: SymbolFeed, book: SymbolState) -> None:
        """Publish this state into a new feed, its summary from the restored book."""
        candles = SymbolCandles()
        for interval, kept in self.candles:
            candles.series[interval].extend(kept)
        order_book = book.book
        feed.restore(
            self.tape,
            self.volume,
            candles,
            order_book.best_price(BID),
            order_book.best_price(ASK),
            order_book.next_expiry(),
        )
        feed.book_version = self.book_version


class SymbolBook(NamedTuple):
    """One symbol of a symbol shard: every order it has had (acceptance order, which is
    the time priority of those resting), its VWAP window and its feed (None: it never
    published a step)."""

    symbol: str
    orders: tuple[Order, ...]
    window: TradeWindow
    """A private copy of the window's (time, value, quantity) sums: the trades behind
    them may be more than the tape keeps, and the window forgets as time passes."""
    feed: FeedState | None

    @classmethod
    def of(cls, symbol: str, state: SymbolState, feed: SymbolFeed | None) -> SymbolBook:
        return cls(
            symbol,
            tuple(state.orders.values()),
            copy.deepcopy(state.trades),
            None if feed is None else FeedState.of(feed),
        )

    def state(self, vwap_window_us: int) -> SymbolState:
        """A new engine state: the resting orders back on the book, the window copied."""
        state = SymbolState(self.symbol, vwap_window_us, self.orders)
        state.trades = copy.deepcopy(self.window)
        return state


class SymbolSnapshot(NamedTuple):
    """A symbol shard after its ME of `me_done`."""

    index: int
    account_shards: int
    symbol_shards: int
    me_done: int
    books: tuple[SymbolBook, ...]
    """Every symbol that has an actor here (a command reached it), in start order."""
    listed: tuple[str, ...]
