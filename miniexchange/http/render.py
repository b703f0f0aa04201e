"""Model values to JSON bytes: money as numbers with exactly two decimals, never a float.

The two formats themselves (`money`, `timestamp`) live in `miniexchange.model.formats`,
shared with the webhook payloads.
"""

from __future__ import annotations

from typing import Any

import orjson

from miniexchange.actors.seam import Issued, Summary
from miniexchange.model.book import Level
from miniexchange.model.candles import Candle
from miniexchange.model.commands import LIMIT
from miniexchange.model.formats import money, timestamp
from miniexchange.model.ledger import Balance
from miniexchange.model.orders import Order, Trade
from miniexchange.model.values import format_timestamp
from miniexchange.model.vwap import Price


def trade_dict(trade: Trade) -> dict[str, Any]:
    return {
        "trade_id": trade.trade_id,
        "price": money(trade.price),
        "quantity": trade.quantity,
        "executed_at": format_timestamp(trade.executed_at),
    }


def order_dict(order: Order) -> dict[str, Any]:
    """The full order object (a market order has no `price`, `expires_at`,
    `cancelled_at` or `expired_at`)."""
    body: dict[str, Any] = {
        "order_id": order.order_id,
        "type": order.type,
        "broker_id": order.broker_id,
        "document_number": order.document_number,
        "side": order.side,
        "symbol": order.symbol,
        "quantity": order.quantity,
        "filled_quantity": order.filled_quantity,
        "remaining_quantity": order.remaining_quantity,
        "cancelled_quantity": order.cancelled_quantity,
        "status": order.status,
        "created_at": format_timestamp(order.created_at),
        "average_price": money(order.average_price),
        "trades": [trade_dict(trade) for trade in order.trades],
    }
    if order.type == LIMIT:
        body["price"] = money(order.price)
        body["expires_at"] = timestamp(order.expires_at)
        body["cancelled_at"] = timestamp(order.cancelled_at)
        body["expired_at"] = timestamp(order.expired_at)
    return body


def order_json(order: Order) -> bytes:
    return orjson.dumps(order_dict(order))


def holdings_list(balance: Balance) -> list[dict[str, Any]]:
    return [{"symbol": h.symbol, "quantity": h.quantity} for h in balance.holdings]


def registration_json(balance: Balance, issued: Issued | None = None) -> bytes:
    """A registration's body; with `AUTH=api_key` also the broker's new credentials
    (shown once)."""
    body: dict[str, Any] = {
        "broker_id": balance.broker_id,
        "cash_balance": money(balance.cash_balance),
        "holdings": holdings_list(balance),
        "created_at": format_timestamp(balance.created_at),
    }
    if issued is not None:
        body["api_key"] = issued.api_key
        body["webhook_secret"] = issued.webhook_secret
    return orjson.dumps(body)


def balance_json(balance: Balance) -> bytes:
    return orjson.dumps(
        {
            "broker_id": balance.broker_id,
            "cash_balance": money(balance.cash_balance),
            "reserved_cash": money(balance.reserved_cash),
            "available_cash": money(balance.available_cash),
            "holdings": [
                {
                    "symbol": h.symbol,
                    "quantity": h.quantity,
                    "reserved_quantity": h.reserved_quantity,
                    "available_quantity": h.available_quantity,
                }
                for h in balance.holdings
            ],
            "updated_at": format_timestamp(balance.updated_at),
        }
    )


def levels_list(levels: list[Level]) -> list[dict[str, Any]]:
    return [
        {
            "price": money(level.price),
            "total_quantity": level.quantity,
            "order_count": level.order_count,
        }
        for level in levels
    ]


def book_json(symbol: str, bids: list[Level], asks: list[Level], snapshot_at: int) -> bytes:
    spread = asks[0].price - bids[0].price if bids and asks else None
    return orjson.dumps(
        {
            "symbol": symbol,
            "bids": levels_list(bids),
            "asks": levels_list(asks),
            "spread": money(spread),
            "snapshot_at": format_timestamp(snapshot_at),
        }
    )


def quote_json(symbol: str, side: str, quantity: int, levels: list[Level], quoted_at: int) -> bytes:
    available = sum(level.quantity for level in levels)
    total = sum(level.price * level.quantity for level in levels) if levels else None
    return orjson.dumps(
        {
            "symbol": symbol,
            "side": side,
            "quantity_requested": quantity,
            "quantity_available": available,
            "fully_fillable": available == quantity,
            "estimated_average_price": money(total // available if total is not None else None),
            "estimated_total": money(total),
            "price_levels": [
                {"price": money(level.price), "quantity": level.quantity} for level in levels
            ],
            "quoted_at": format_timestamp(quoted_at),
        }
    )


def price_json(symbol: str, price: Price, window: str) -> bytes:
    return orjson.dumps(
        {
            "symbol": symbol,
            "current_price": money(price.current_price),
            "window": window,
            "trades_in_window": price.trades_in_window,
            "last_trade_at": timestamp(price.last_trade_at),
        }
    )


def order_summary(order: Order) -> dict[str, Any]:
    """An order in `GET /brokers/{broker_id}/orders`: no trades, no broker, and of the
    timestamps only `created_at`."""
    body: dict[str, Any] = {
        "order_id": order.order_id,
        "type": order.type,
        "document_number": order.document_number,
        "symbol": order.symbol,
        "side": order.side,
        "quantity": order.quantity,
        "filled_quantity": order.filled_quantity,
        "remaining_quantity": order.remaining_quantity,
        "cancelled_quantity": order.cancelled_quantity,
        "status": order.status,
        "average_price": money(order.average_price),
        "created_at": format_timestamp(order.created_at),
    }
    if order.type == LIMIT:
        body["price"] = money(order.price)
    return body


def listing_json(orders: list[Order], total: int, page: int, limit: int) -> bytes:
    return orjson.dumps(
        {
            "orders": [order_summary(o) for o in orders],
            "total": total,
            "page": page,  # at most `query_params.MAX_PAGE`
            "limit": limit,
        }
    )


def stocks_json(entries: list[tuple[str, Summary]]) -> bytes:
    """`GET /stocks`: one entry per known symbol, in the order given."""
    return orjson.dumps(
        {
            "symbols": [
                {
                    "symbol": symbol,
                    "last_price": money(summary.last_price),
                    "best_bid": money(summary.best_bid),
                    "best_ask": money(summary.best_ask),
                    "volume": summary.volume,
                }
                for symbol, summary in entries
            ]
        }
    )


def trades_json(symbol: str, trades: list[Trade]) -> bytes:
    """The public tape: anonymous trades, in the order given (newest first)."""
    return orjson.dumps({"symbol": symbol, "trades": [trade_dict(trade) for trade in trades]})


def candles_json(symbol: str, interval: str, candles: list[Candle]) -> bytes:
    """`GET /stocks/{symbol}/candles`: oldest first; each `start` its interval's start."""
    return orjson.dumps(
        {
            "symbol": symbol,
            "interval": interval,
            "candles": [
                {
                    "start": format_timestamp(candle.start),
                    "open": money(candle.open),
                    "high": money(candle.high),
                    "low": money(candle.low),
                    "close": money(candle.close),
                    "volume": candle.volume,
                    "trades": candle.trades,
                }
                for candle in candles
            ],
        }
    )
