"""Webhook delivery bodies: `{"event", "timestamp", "data"}` as exact JSON bytes.

A payload writes money and timestamps exactly as the API's responses do (the shared
`model.formats`: two-decimal number literals, never a float; `YYYY-MM-DDTHH:MM:SSZ`).
The bytes rendered here are the bytes sent and signed.
"""

from __future__ import annotations

from typing import Any

import orjson

from miniexchange.model.events import Event, OrderClosed, TradeExecuted
from miniexchange.model.formats import money, timestamp


def render(event: Event) -> bytes:
    """The body of the delivery of `event` to the broker whose order it carries."""
    order = event.order
    data: dict[str, Any]
    if isinstance(event, TradeExecuted):
        trade = event.trade
        at = trade.executed_at
        data = {
            "trade_id": trade.trade_id,
            "broker_id": order.broker_id,
            "order_id": order.order_id,
            "symbol": order.symbol,
            "side": order.side,
            "trade_price": money(trade.price),
            "trade_quantity": trade.quantity,
            "order_status": order.status,
            "order_filled_quantity": order.filled_quantity,
            "order_remaining_quantity": order.remaining_quantity,
        }
    else:
        assert isinstance(event, OrderClosed)
        at = order.cancelled_at if order.expired_at is None else order.expired_at
        data = {
            "broker_id": order.broker_id,
            "order_id": order.order_id,
            "symbol": order.symbol,
            "side": order.side,
            "price": money(order.price),
            "quantity": order.quantity,
            "filled_quantity": order.filled_quantity,
            "cancelled_quantity": order.cancelled_quantity,
            "remaining_quantity": order.remaining_quantity,
            "status": order.status,
        }
    return orjson.dumps({"event": event.event, "timestamp": timestamp(at), "data": data})
