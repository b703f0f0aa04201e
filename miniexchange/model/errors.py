"""The one exception every layer uses to refuse a request."""

from __future__ import annotations


class ExchangeError(Exception):
    """A refusal with a stable error code and its exact human message.

    The HTTP layer maps `code` to a status (see `miniexchange.http.errors`).
    """

    __slots__ = ("code", "message")

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ExchangeError({self.code!r}, {self.message!r})"

    def __reduce__(self) -> tuple[type[ExchangeError], tuple[str, str]]:
        """Pickled with its code (a refusal a shard process returns to a worker)."""
        return type(self), (self.code, self.message)


def validation_error(message: str) -> ExchangeError:
    return ExchangeError("validation_error", message)


def broker_not_found(broker_id: str) -> ExchangeError:
    return ExchangeError("broker_not_found", f"Broker {broker_id} does not exist")


def order_not_found(order_id: str) -> ExchangeError:
    return ExchangeError("order_not_found", f"Order {order_id} does not exist")


def symbol_not_found(symbol: str) -> ExchangeError:
    return ExchangeError("symbol_not_found", f"Symbol {symbol} is not listed on this exchange")


def webhook_not_found(webhook_id: str) -> ExchangeError:
    return ExchangeError("webhook_not_found", f"Webhook {webhook_id} does not exist")


def no_liquidity(symbol: str) -> ExchangeError:
    return ExchangeError(
        "no_liquidity", f"No matching orders available for market order on {symbol}"
    )


def insufficient_balance(broker_id: str) -> ExchangeError:
    return ExchangeError(
        "insufficient_balance",
        f"Broker {broker_id} has insufficient available cash for this order",
    )


def insufficient_holdings(broker_id: str, symbol: str) -> ExchangeError:
    return ExchangeError(
        "insufficient_holdings",
        f"Broker {broker_id} has insufficient available quantity of {symbol} for this order",
    )


def insufficient_funds(broker_id: str, side: str, symbol: str) -> ExchangeError:
    """The refusal of a hold: cash for a bid, shares of `symbol` for an ask."""
    if side == "bid":
        return insufficient_balance(broker_id)
    return insufficient_holdings(broker_id, symbol)


def not_cancellable(order_id: str, status: str) -> ExchangeError:
    """The 409 for cancelling an order in a terminal state (filled, cancelled, expired)."""
    if status == "filled":
        text = f"Order {order_id} is already filled and cannot be cancelled"
    elif status == "cancelled":
        text = f"Order {order_id} is already cancelled"
    else:
        text = f"Order {order_id} is already expired and cannot be cancelled"
    return ExchangeError("order_not_cancellable", text)


def key_reused(key: str) -> ExchangeError:
    return ExchangeError(
        "idempotency_key_reused", f"Idempotency-Key {key} was already used with a different request"
    )


def key_in_progress(key: str) -> ExchangeError:
    return ExchangeError(
        "idempotency_key_in_progress",
        f"A request with Idempotency-Key {key} is still being processed",
    )


def journal_unavailable() -> ExchangeError:
    return ExchangeError(
        "journal_unavailable", "The exchange cannot record this request; retry later"
    )


def exchange_unavailable() -> ExchangeError:
    """The 503 when a process the request needs is down (`ENGINE=ray`: a shard)."""
    return ExchangeError("unavailable", "A part of the exchange is down; retry later")


def symbol_limit_reached(limit: int) -> ExchangeError:
    """The 409 for a registration or an order that would list one symbol too many."""
    return ExchangeError("symbol_limit_reached", f"The exchange lists at most {limit} symbols")


def symbol_unavailable(symbol: str) -> ExchangeError:
    """The 503 when the book of `symbol` cannot be opened now: the operating system
    refused its thread (a container's pids limit, for instance). Nothing took effect."""
    return ExchangeError(
        "symbol_unavailable", f"The exchange cannot open the book of {symbol} now; retry later"
    )
