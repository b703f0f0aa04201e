"""Query strings into validated parameters, or the contract's 400.

An empty value counts as absent, of a repeated parameter the first occurrence counts,
and no digit string of any length reaches int().
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl

from miniexchange.http.request_bodies import invalid_side
from miniexchange.model.candles import CANDLES_KEPT, INTERVALS
from miniexchange.model.commands import ASK, BID
from miniexchange.model.errors import validation_error
from miniexchange.model.values import MAX_QUANTITY

_DIGITS_RE: Final = re.compile(r"[0-9]+", re.ASCII)


def parse_query(query_string: str) -> dict[str, str]:
    """Raw query string -> {name: value}: percent-decoded, `+` as space.

    An empty value counts as absent, and of a repeated parameter the first occurrence
    counts. Empty occurrences are dropped before that, so `?depth=&depth=5` is depth 5.
    Invalid UTF-8 after percent-decoding becomes U+FFFD (echoable in a message); a `%`
    not followed by two hex digits stays as it is.
    """
    params: dict[str, str] = {}
    if query_string:  # most requests have none: no call at all
        for name, value in parse_qsl(query_string):  # blank values dropped, `&` only
            params.setdefault(name, value)
    return params


def _int_in_range(text: str, low: int, high: int) -> int | None:
    """`^[0-9]+$` and low..high, else None; long digit strings never reach int()."""
    if _DIGITS_RE.fullmatch(text) is None:
        return None
    digits = text.lstrip("0")  # leading zeros, however many, never reach int() either
    if len(digits) > 18:
        return None
    number = int(digits) if digits else 0
    return number if low <= number <= high else None


def _int_between(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    """An optional integer parameter in low..high, `default` when absent."""
    text = params.get(name)
    if text is None:
        return default
    number = _int_in_range(text, low, high)
    if number is None:
        raise validation_error(f"{name} must be an integer between {low} and {high}")
    return number


def validate_depth(params: dict[str, str]) -> int:
    """The book's `depth`: default 10, 1..50."""
    return _int_between(params, "depth", 10, 1, 50)


def validate_quote(params: dict[str, str]) -> tuple[str, int]:
    """The quote's (side, quantity), side checked first."""
    side = params.get("side")
    if side is None:
        raise validation_error("side query parameter is required")
    if side != BID and side != ASK:
        raise validation_error(invalid_side(side))
    text = params.get("quantity")
    if text is None:
        raise validation_error("quantity query parameter is required")
    if _DIGITS_RE.fullmatch(text) is None:
        raise validation_error("quantity must be a positive integer")
    digits = text.lstrip("0")
    if not digits:
        raise validation_error("quantity must be a positive integer")
    if len(digits) > 10 or int(digits) > MAX_QUANTITY:
        raise validation_error(f"quantity must be <= {MAX_QUANTITY}")
    return side, int(digits)


ORDER_STATUSES: Final = ("pending", "partially_filled", "filled", "cancelled", "expired")


MAX_PAGE: Final = 1_000_000_000


def validate_listing(params: dict[str, str]) -> tuple[str | None, int, int]:
    """A broker's order listing: (status or None for all, page, limit), checked in that order.

    `page` is bounded like every query integer, so no digit string of any length
    reaches int() or a renderer (Python refuses to print an int over 4300 digits).
    """
    status = params.get("status")
    if status is not None and status not in ORDER_STATUSES:
        raise validation_error(
            f"Invalid status filter: '{status}'. Must be one of: {', '.join(ORDER_STATUSES)}"
        )
    page = 1
    text = params.get("page")
    if text is not None:
        if _DIGITS_RE.fullmatch(text) is None or not text.lstrip("0"):
            raise validation_error("page must be an integer >= 1")
        checked = _int_in_range(text, 1, MAX_PAGE)
        if checked is None:
            raise validation_error(f"page must be an integer <= {MAX_PAGE}")
        page = checked
    return status, page, _int_between(params, "limit", 20, 1, 100)


def validate_trades_limit(params: dict[str, str]) -> int:
    """`limit` of the public tape: default 50, 1..500."""
    return _int_between(params, "limit", 50, 1, 500)


CANDLE_INTERVAL_MESSAGE: Final = f"interval must be one of {', '.join(INTERVALS)}"


def validate_candles(params: dict[str, str]) -> tuple[str, int]:
    """Candles: (interval, limit), interval checked first; defaults 1m and 300."""
    interval = params.get("interval", "1m")
    if interval not in INTERVALS:
        raise validation_error(CANDLE_INTERVAL_MESSAGE)
    return interval, _int_between(params, "limit", 300, 1, CANDLES_KEPT)


def validate_webhook_broker_query(params: dict[str, str]) -> str:
    """GET /webhooks: broker_id, absent or empty -> 400 (no pattern: unknown -> 404)."""
    broker_id = params.get("broker_id")
    if broker_id is None:
        raise validation_error("broker_id query parameter is required")
    return broker_id
