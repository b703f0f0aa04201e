"""What happened, as the webhook dispatcher needs to hear it (the deliveries' events).

A symbol actor collects these during an atomic operation and hands them over after it;
each carries the order state to report, so no one has to look it up later, and the
id of the request that caused it (`request_id`, its `X-Request-Id`), which the webhook deliveries
log; None for an expiry.
"""

from __future__ import annotations

from typing import NamedTuple

from miniexchange.model.orders import Order, Trade

TRADE_EXECUTED = "trade.executed"
ORDER_CANCELLED = "order.cancelled"
ORDER_EXPIRED = "order.expired"
EVENT_TYPES = (TRADE_EXECUTED, ORDER_EXPIRED, ORDER_CANCELLED)


class TradeExecuted(NamedTuple):
    """One side of one trade: `order` is the recipient's order right after the trade."""

    trade: Trade
    order: Order
    request_id: str | None = None

    event = TRADE_EXECUTED


class OrderClosed(NamedTuple):
    """A limit order cancelled by DELETE (`order.cancelled`) or expired (`order.expired`)."""

    order: Order
    request_id: str | None = None

    @property
    def event(self) -> str:
        return ORDER_CANCELLED if self.order.expired_at is None else ORDER_EXPIRED


Event = TradeExecuted | OrderClosed
