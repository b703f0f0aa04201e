"""Orders and trades as immutable values.

Every state an order passes through is a new `Order`: the book replaces the value it
holds, and whoever received an earlier value (a reader, a webhook event) keeps a
consistent picture of that moment. No object refers back to another (ids only), so
the cyclic garbage collector never has to walk order graphs.

An order's trades are a `TradeLog`: one append-only list shared by the order's
successive values, each value seeing its own prefix. A fill appends one trade in
constant time instead of copying the order's whole trade list (40,000 fills of one
order took 12.5 s to recover when each fill copied it), and an earlier value still
shows the trades it had.

The hot values of the engine (orders, trades, fills, settlement legs, commands, the
submit and cancel messages, events) are `NamedTuple`s: immutable like a frozen
dataclass, but built in an eighth of the time (0.54 µs against 4.2 µs for an `Order`,
measured on the benchmark machine), and several are built per order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, SubmitOrder

PENDING = "pending"
PARTIALLY_FILLED = "partially_filled"
FILLED = "filled"
CANCELLED = "cancelled"
EXPIRED = "expired"

STATUSES = (PENDING, PARTIALLY_FILLED, FILLED, CANCELLED, EXPIRED)
ACTIVE_STATUSES = frozenset((PENDING, PARTIALLY_FILLED))

__all__ = [
    "ACTIVE_STATUSES",
    "ASK",
    "BID",
    "CANCELLED",
    "EXPIRED",
    "FILLED",
    "LIMIT",
    "MARKET",
    "PARTIALLY_FILLED",
    "PENDING",
    "STATUSES",
    "Order",
    "Trade",
    "TradeLog",
    "new_order",
]


class Trade(NamedTuple):
    """One execution between a bid and an ask; both orders list the same value."""

    trade_id: str
    symbol: str
    price: int  # cents
    quantity: int
    executed_at: int  # microseconds since the epoch
    bid_order_id: str
    ask_order_id: str
    bid_broker_id: str
    ask_broker_id: str


_new_object = object.__new__


class TradeLog(Sequence[Trade]):
    """An order's trades as one of its values saw them: the first `count` entries of a
    list that only its newest value appends to.

    Readers on other threads may hold any value: entries below a value's count never
    change, and an append only adds beyond every published count. Appending to a value
    that is not the newest (something a test may do) copies its prefix first, so two
    successors never share a list they both append to."""

    __slots__ = ("_count", "_trades")

    def __init__(self, trades: list[Trade], count: int) -> None:
        self._trades = trades
        self._count = count

    @classmethod
    def of(cls, trades: Sequence[Trade]) -> TradeLog:
        """A log holding `trades` (a log already is one: returned as it is)."""
        if isinstance(trades, TradeLog):
            return trades
        return cls(list(trades), len(trades)) if trades else NO_TRADES

    def appended(self, trade: Trade) -> TradeLog:
        """This log with `trade` after its last entry; O(1) on the newest value."""
        trades, count = self._trades, self._count
        if not count or len(trades) != count:  # the shared empty log, or an older value
            trades = trades[:count]
        trades.append(trade)
        log = _new_object(TradeLog)  # without __init__: a third of a fill's cost
        log._trades = trades
        log._count = count + 1
        return log

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Trade: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Trade, ...]: ...

    def __getitem__(self, index: int | slice) -> Trade | tuple[Trade, ...]:
        if isinstance(index, slice):
            return tuple(self)[index]
        count = self._count
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("trade index out of range")
        return self._trades[index]

    def __iter__(self) -> Iterator[Trade]:
        return itertools.islice(self._trades, self._count)

    def __eq__(self, other: object) -> bool:
        """Equal to any log, tuple or list of the same trades (tests spell them as tuples)."""
        if not isinstance(other, TradeLog | tuple | list):
            return NotImplemented
        return len(other) == self._count and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"TradeLog({list(self)!r})"


NO_TRADES = TradeLog([], 0)
"""The trades of every order that has none (never appended to: see `appended`)."""


class Order(NamedTuple):
    order_id: str
    type: str
    broker_id: str
    document_number: str
    side: str
    symbol: str
    price: int | None  # cents; None for market orders
    quantity: int
    filled_quantity: int
    remaining_quantity: int
    cancelled_quantity: int
    status: str
    expires_at: int | None  # microseconds; None for market orders
    created_at: int
    cancelled_at: int | None
    expired_at: int | None
    trades: Sequence[Trade]  # a TradeLog (tests may build orders with a tuple)
    filled_value: int  # sum of price * quantity over trades, in cents

    @property
    def average_price(self) -> int | None:
        """Average execution price in cents, truncated toward zero (integer division)."""
        if not self.filled_quantity:
            return None
        return self.filled_value // self.filled_quantity

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def filled(self, trade: Trade) -> Order:
        """This order right after `trade` executed against it."""
        filled = self.filled_quantity + trade.quantity
        remaining = self.remaining_quantity - trade.quantity
        trades = self.trades
        return Order(
            self.order_id,
            self.type,
            self.broker_id,
            self.document_number,
            self.side,
            self.symbol,
            self.price,
            self.quantity,
            filled,
            remaining,
            self.cancelled_quantity,
            PARTIALLY_FILLED if remaining else FILLED,
            self.expires_at,
            self.created_at,
            self.cancelled_at,
            self.expired_at,
            (trades if trades.__class__ is TradeLog else TradeLog.of(trades)).appended(trade),
            self.filled_value + trade.price * trade.quantity,
        )

    def closed(self, status: str, cancelled_at: int | None, expired_at: int | None) -> Order:
        """This order ended: its unfilled remainder is cancelled (DELETE, expiry or IOC)."""
        return Order(
            self.order_id,
            self.type,
            self.broker_id,
            self.document_number,
            self.side,
            self.symbol,
            self.price,
            self.quantity,
            self.filled_quantity,
            0,
            self.cancelled_quantity + self.remaining_quantity,
            status,
            self.expires_at,
            self.created_at,
            cancelled_at,
            expired_at,
            self.trades,
            self.filled_value,
        )


def new_order(command: SubmitOrder, order_id: str, created_at: int) -> Order:
    """The record of an accepted submission, before matching."""
    return Order(
        order_id,
        command.type,
        command.broker_id,
        command.document_number,
        command.side,
        command.symbol,
        command.price,
        command.quantity,
        0,
        command.quantity,
        0,
        PENDING,
        command.expires_at,
        created_at,
        None,
        None,
        NO_TRADES,
        0,
    )
