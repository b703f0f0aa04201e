"""Orders and trades as immutable values.

Every state an order passes through is a new `Order`: the book replaces the value it
holds, and whoever received an earlier value (a reader, a webhook event) keeps a
consistent picture of that moment. No object refers back to another (ids only), so
the cyclic garbage collector never has to walk order graphs.

The hot values of the engine (orders, trades, fills, settlement legs, commands, the
submit and cancel messages, events) are `NamedTuple`s: immutable like a frozen
dataclass, but built in an eighth of the time (0.54 µs against 4.2 µs for an `Order`,
measured on the benchmark machine), and several are built per order.
"""

from __future__ import annotations

from typing import NamedTuple

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
    trades: tuple[Trade, ...]
    filled_value: int  # sum of price * quantity over trades, in cents

    @property
    def average_price(self) -> int | None:
        """Average execution price in cents, truncated toward zero (contract §1.5)."""
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
            (*self.trades, trade),
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
        (),
        0,
    )
