"""Request bodies, query strings and headers into validated commands, or the contract's error.

Every message and the order of the checks are contract (API.md §1.2 step 6, §1.4, §2.1,
§2.2, §4.x, §6.1): the first failing check is the answer, so each validator below reads
top to bottom in the order of its endpoint's table, and within a field
required -> JSON type -> format / allowed value -> decimal places -> lower -> upper bound.
"""

from __future__ import annotations

import json
import re
import sys
from decimal import Decimal
from typing import Any, Final, NoReturn
from urllib.parse import unquote_plus

import orjson

from miniexchange.model.candles import CANDLES_KEPT, INTERVALS
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from miniexchange.model.errors import ExchangeError, validation_error
from miniexchange.model.values import (
    BROKER_ID_PATTERN,
    BROKER_ID_RE,
    DOCUMENT_NUMBER_PATTERN,
    DOCUMENT_NUMBER_RE,
    EXACT_CONTEXT,
    MAX_CASH_CENTS,
    MAX_PRICE_CENTS,
    MAX_QUANTITY,
    SYMBOL_PATTERN,
    SYMBOL_RE,
    format_cents,
    integer_cents,
    parse_rfc3339,
)

# --- JSON bodies ------------------------------------------------------------------------

INVALID_REQUEST_MESSAGE: Final = (
    "Request body must be valid JSON with Content-Type: application/json"
)
MAX_NESTING: Final = 1024  # orjson's own limit, and the contract's (§1.1)

# The stdlib decoder spends one recursion level per nesting level on top of the caller's
# stack, so the default limit (1000) cannot reach the 1024 levels the contract accepts.
# Raised once, never lowered. The C stack cost is ~150-190 bytes a level: parse on the
# event loop thread, never on a thread started with a stack below 256 KiB.
_RECURSION_LIMIT: Final = 2500
if sys.getrecursionlimit() < _RECURSION_LIMIT:
    sys.setrecursionlimit(_RECURSION_LIMIT)

_INT_DIGITS: Final = 4300  # Python's default int-from-text limit; longer literals: HugeInt

# orjson refuses a finite literal that overflows a double (1e400); that is valid JSON.
_ORJSON_INFINITY: Final = "number is infinity"


class HugeInt(Decimal):
    """An integer literal longer than Python's int-from-text digit limit (4300 digits).

    Still an *integer literal* (so `quantity` says "must be <= 1000000000", not "must be an
    integer"), kept exactly as a Decimal because int() would refuse it (and is quadratic).
    """

    __slots__ = ()


class ExtremeDecimal(Decimal):
    """A number literal with an exponent beyond Decimal's range (`1e99999999999999999999`).

    The value is a stand-in of the same sign and "size class" (huge, or tiny but not zero),
    which is all validation needs; `canonical` keeps the exact value for fingerprints.
    """

    __slots__ = ("canonical",)
    canonical: bytes


class _RejectedConstant(ValueError):
    """NaN, Infinity and -Infinity: accepted by Python's json module, not by JSON."""


def _reject_constant(name: str) -> NoReturn:
    raise _RejectedConstant(name)


_NUMBER_RE: Final = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]+))?", re.ASCII)


def _exact_number(text: str) -> Decimal:
    """parse_float of the slow decoder: exact, whatever the size of the exponent."""
    try:
        return EXACT_CONTEXT.create_decimal(text)
    except ArithmeticError:
        pass
    match = _NUMBER_RE.fullmatch(text)
    if match is None:  # unreachable: the scanner only hands over JSON number literals
        raise _RejectedConstant(text)
    sign, whole, fraction, exponent_text = match.groups()
    fraction = fraction or ""
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return Decimal(0)
    stripped = digits.rstrip("0")
    # the exponent of the leading digit, exactly, however long its text
    adjusted = EXACT_CONTEXT.add(Decimal(exponent_text or 0), len(whole.lstrip("0")) - 1)
    if not whole.lstrip("0"):  # 0.000123e...: the leading digit sits inside the fraction
        adjusted = EXACT_CONTEXT.subtract(adjusted, len(fraction) - len(fraction.lstrip("0")))
    # Body size bounds the digits, so such an exponent means astronomically large or small.
    stand_in = ExtremeDecimal(
        (1 if sign else 0, (1,), EXACT_CONTEXT.Emax if adjusted > 0 else EXACT_CONTEXT.Emin)
    )
    # what str() of the normalized Decimal would say, had the exponent fit
    mantissa = stripped[0] + ("." + stripped[1:] if len(stripped) > 1 else "")
    stand_in.canonical = f"{sign}{mantissa}E{'+' if adjusted >= 0 else ''}{adjusted}".encode()
    return stand_in


def _exact_int(text: str) -> int | Decimal:
    """parse_int of the slow decoder: any length, without int()'s quadratic conversion."""
    if len(text) <= _INT_DIGITS:
        try:
            return int(text)
        except ValueError:  # a process that lowered sys.set_int_max_str_digits()
            pass
    return HugeInt(text, EXACT_CONTEXT)


# Fast pass: C-speed int and Decimal. Rare literals (beyond the int digit limit, or an
# exponent beyond Decimal's range) make it raise, and the slow pass handles them.
_FAST_DECODER: Final = json.JSONDecoder(
    parse_float=EXACT_CONTEXT.create_decimal, parse_constant=_reject_constant
)
_EXACT_DECODER: Final = json.JSONDecoder(
    parse_float=_exact_number, parse_int=_exact_int, parse_constant=_reject_constant
)


def _invalid_request() -> ExchangeError:
    return ExchangeError("invalid_request", INVALID_REQUEST_MESSAGE)


def _is_json_media_type(content_type: str) -> bool:
    """`application/json`, case-insensitively, parameters (`; charset=utf-8`) ignored."""
    if content_type == "application/json":
        return True
    return content_type.partition(";")[0].strip(" \t").lower() == "application/json"


def parse_json_object(content_type: str | None, body: bytes) -> dict[str, Any]:
    """The body as a JSON object, numbers exact (int, Decimal), or `invalid_request`.

    Two passes. orjson is the structural gate: strict UTF-8, no lone surrogate escapes (so
    nothing unencodable reaches a response), no NaN/Infinity, at most 1024 levels, and a
    cheap exit for non-objects. The stdlib then builds the value with exact numbers
    (orjson would turn `10.005` into a binary float). Duplicate names: the last one wins.
    """
    if content_type is None or not _is_json_media_type(content_type):
        raise _invalid_request()
    try:
        gate = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not str(exc).startswith(_ORJSON_INFINITY):
            raise _invalid_request() from None
        return _parse_without_gate(body)
    if type(gate) is not dict:
        raise _invalid_request()
    text = body.decode()  # cannot fail: orjson has checked the UTF-8
    try:
        value = _FAST_DECODER.decode(text)
    except (ValueError, ArithmeticError, RecursionError):
        value = _exact_decode(text)
    return value  # type: ignore[no-any-return]


def _exact_decode(text: str) -> Any:
    try:
        return _EXACT_DECODER.decode(text)
    except (ValueError, ArithmeticError, RecursionError):
        raise _invalid_request() from None


def _parse_without_gate(body: bytes) -> dict[str, Any]:
    """The rare body orjson stopped reading at a number too big for a double.

    Only the stdlib pass reads what follows that number, and it allows what orjson would
    have refused there (lone surrogates, any depth its recursion limit reaches), so those
    two checks are made here on the value. Syntax, UTF-8 and NaN it checks itself.
    """
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise _invalid_request() from None
    value = _exact_decode(text)
    if type(value) is not dict or not _structure_ok(value):
        raise _invalid_request()
    return value


def _structure_ok(root: Any) -> bool:
    """At most MAX_NESTING levels and no lone surrogate in any string (iteratively)."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            return False
        items: Any
        if type(node) is dict:
            if not all(_encodable(key) for key in node):
                return False
            items = node.values()
        else:
            items = node
        for item in items:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append((item, depth + 1))
            elif kind is str and not _encodable(item):
                return False
    return True


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# --- idempotency fingerprint (§6.1) -----------------------------------------------------


def fingerprint(body: dict[str, Any]) -> bytes:
    """A canonical encoding of a parsed body: equal exactly when §6.1 calls two bodies equal.

    JSON with members sorted by name, no whitespace, and each number as the text of its
    normalized exact value (`10`, `10.0`, `1e1` -> `1E+1`; `150.00` -> `1.5E+2`; any zero
    -> `0`), so types stay distinct (`true`, `1`, `"1"`). orjson writes it; past its 255
    levels a plain writer takes over. Callers that keep many may hash it (sha256).
    """
    try:
        return orjson.dumps(_with_canonical_numbers(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # deeper than orjson's recursion limit
        parts: list[bytes] = []
        _canonical(body, parts)
        return b"".join(parts)


def _with_canonical_numbers(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _with_canonical_numbers(item) for key, item in value.items()}
    if kind is list:
        return [_with_canonical_numbers(item) for item in value]
    if kind is str or kind is bool or value is None:
        return value
    return orjson.Fragment(_canonical_number(value))


def _canonical(value: Any, parts: list[bytes]) -> None:
    """The same encoding as orjson's with OPT_SORT_KEYS, for documents it cannot nest."""
    kind = type(value)
    if kind is str:
        parts.append(orjson.dumps(value))
    elif kind is dict:
        parts.append(b"{")
        for index, key in enumerate(sorted(value)):
            if index:
                parts.append(b",")
            parts.append(orjson.dumps(key))
            parts.append(b":")
            _canonical(value[key], parts)
        parts.append(b"}")
    elif kind is list:
        parts.append(b"[")
        for index, item in enumerate(value):
            if index:
                parts.append(b",")
            _canonical(item, parts)
        parts.append(b"]")
    elif kind is bool or value is None:
        parts.append(orjson.dumps(value))
    else:
        parts.append(_canonical_number(value))


def _canonical_number(value: int | Decimal) -> bytes:
    """Text of the normalized exact value; one text per value, whatever the literal."""
    if not value:
        return b"0"  # 0, -0, 0.0, -0.0, 0e400
    if type(value) is ExtremeDecimal:
        return value.canonical
    return str(Decimal(value).normalize(EXACT_CONTEXT)).encode()


# --- field helpers ----------------------------------------------------------------------

DECIMAL_PLACES_MESSAGE: Final = "Monetary values must have at most 2 decimal places"
_PRICE_UPPER: Final = f"price must be <= {format_cents(MAX_PRICE_CENTS)}"
_CASH_UPPER: Final = f"initial_cash must be <= {format_cents(MAX_CASH_CENTS)}"
_QUANTITY_UPPER_SUFFIX: Final = f" must be <= {MAX_QUANTITY}"


def _string(body: dict[str, Any], field: str, name: str | None = None) -> str:
    """A required string member; `name` is the member's path in messages."""
    value = body.get(field)
    if value is None:
        raise validation_error(f"{name or field} is required")
    if type(value) is not str:
        raise validation_error(f"{name or field} must be a string")
    return value


def _patterned(
    body: dict[str, Any], field: str, regex: re.Pattern[str], pattern: str, name: str | None = None
) -> str:
    value = _string(body, field, name)
    if regex.fullmatch(value) is None:
        raise validation_error(f"{name or field} must match {pattern}")
    return value


def _money(value: Any, field: str) -> int:
    """Cents of a required money member: number (never bool, never string), <= 2 decimals."""
    if value is None:
        raise validation_error(f"{field} is required")
    if type(value) is not int and not isinstance(value, Decimal):
        raise validation_error(f"{field} must be a number")
    cents = integer_cents(value)
    if cents is None:
        raise validation_error(DECIMAL_PLACES_MESSAGE)
    return cents


def _quantity(value: Any, name: str) -> int:
    """A required integer literal in 1..MAX_QUANTITY (bool and `1e3` are not integers)."""
    if value is None:
        raise validation_error(f"{name} is required")
    kind = type(value)
    if kind is not int and kind is not HugeInt:
        raise validation_error(f"{name} must be an integer")
    if value <= 0:
        raise validation_error(f"{name} must be > 0")
    if value > MAX_QUANTITY:
        raise validation_error(name + _QUANTITY_UPPER_SUFFIX)
    return value  # type: ignore[no-any-return]  # a HugeInt is never in range


# --- POST /brokers (§2.1) ---------------------------------------------------------------


def validate_registration(body: dict[str, Any]) -> RegisterBroker:
    """§2.1: broker_id, initial_cash, then initial_holdings entry by entry in array order."""
    broker_id = _patterned(body, "broker_id", BROKER_ID_RE, BROKER_ID_PATTERN)
    cash = _money(body.get("initial_cash"), "initial_cash")
    if cash < 0:
        raise validation_error("initial_cash must be >= 0")
    if cash > MAX_CASH_CENTS:
        raise validation_error(_CASH_UPPER)
    entries = body.get("initial_holdings")
    if entries is None:
        return RegisterBroker(broker_id, cash, ())
    if type(entries) is not list:
        raise validation_error("initial_holdings must be an array")
    holdings: dict[str, int] = {}
    for index, entry in enumerate(entries):
        path = f"initial_holdings[{index}]"
        if type(entry) is not dict:
            raise validation_error(f"{path} must be an object")
        symbol = _patterned(entry, "symbol", SYMBOL_RE, SYMBOL_PATTERN, f"{path}.symbol")
        if symbol in holdings:
            raise validation_error(f"initial_holdings contains duplicate symbol: {symbol}")
        holdings[symbol] = _quantity(entry.get("quantity"), f"{path}.quantity")
    return RegisterBroker(broker_id, cash, tuple(sorted(holdings.items())))


# --- POST /orders (§2.2) ----------------------------------------------------------------


def validate_order(body: dict[str, Any], now_us: int) -> SubmitOrder:
    """§2.2 in check order: type, price, expires_at, broker_id, document_number, side,
    symbol, quantity. `now_us` is the acceptance instant: expires_at must be after it."""
    order_type = _string(body, "type")
    price: int | None = None
    expires_at: int | None = None
    if order_type == LIMIT:
        price = _money(body.get("price"), "price")
        if price <= 0:
            raise validation_error("price must be > 0")
        if price > MAX_PRICE_CENTS:
            raise validation_error(_PRICE_UPPER)
        expires_text = _string(body, "expires_at")
        expires_at = parse_rfc3339(expires_text)
        if expires_at is None:
            raise validation_error("expires_at must be a valid RFC 3339 timestamp")
        if expires_at <= now_us:
            raise validation_error("expires_at must be a future timestamp")
    elif order_type == MARKET:
        if body.get("price") is not None:
            raise validation_error("price must be null or omitted for market orders")
        if body.get("expires_at") is not None:
            raise validation_error("expires_at must be null or omitted for market orders")
    else:
        raise validation_error(f"Unknown order type: {order_type}. Must be one of: limit, market")
    broker_id = _patterned(body, "broker_id", BROKER_ID_RE, BROKER_ID_PATTERN)
    document_number = _patterned(
        body, "document_number", DOCUMENT_NUMBER_RE, DOCUMENT_NUMBER_PATTERN
    )
    side = _string(body, "side")
    if side != BID and side != ASK:
        raise validation_error(_invalid_side(side))
    symbol = _patterned(body, "symbol", SYMBOL_RE, SYMBOL_PATTERN)
    quantity = _quantity(body.get("quantity"), "quantity")
    # Every order of a broker, symbol or customer shares one string object (and the
    # type and side constants), instead of the copies each parsed body makes: 170
    # bytes less per resting order (measured, `python -m bench --memory`). Interned
    # strings are freed again once no order refers to them.
    return SubmitOrder(
        LIMIT if order_type == LIMIT else MARKET,
        sys.intern(broker_id),
        sys.intern(document_number),
        BID if side == BID else ASK,
        sys.intern(symbol),
        quantity,
        price,
        expires_at,
    )


def _invalid_side(side: str) -> str:
    return f"Invalid side: '{side}'. Must be one of: bid, ask"


# --- POST /webhooks (§4.5) --------------------------------------------------------------

EVENT_TYPES: Final = ("trade.executed", "order.expired", "order.cancelled")
MAX_URL_LENGTH: Final = 2048

# No whitespace (Unicode's, which includes the C0 separators) and no control character.
_URL_FORBIDDEN_RE: Final = re.compile(r"[\s\x00-\x1f\x7f]")
# scheme ":" then either "//" authority with a non-empty host, or an opaque rest that does
# not start with "//" (`javascript:alert(1)`, `mailto:a@b`): the latter is absolute but
# hostless, which only the https scheme forbids (see validate_webhook_subscription).
_URL_RE: Final = re.compile(
    r"([A-Za-z][A-Za-z0-9+.\-]*):"
    r"(?://(?:[^/?#@]*@)?"  # userinfo
    r"(\[[0-9A-Za-z:.]+\]|[^/?#@:\[\]\"<>\\^`{|}]+)"  # host: IP literal or a name
    r"(?::[0-9]*)?(?:[/?#].*)?"  # port, then path / query / fragment
    r"|(?!//).*)",
    re.DOTALL,
)


def validate_webhook_subscription(body: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """§4.5: (broker_id, url, distinct events in order of first appearance).

    broker_id has no pattern (an unknown string is a 404 later). url: string, length,
    absolute URL, https. A URL with another scheme is reported as such even without a
    host (`javascript:alert(1)`, as the contract's examples list it under the scheme).
    """
    broker_id = _string(body, "broker_id")
    url = _string(body, "url")
    if len(url) > MAX_URL_LENGTH:
        raise validation_error(f"url must be at most {MAX_URL_LENGTH} characters")
    match = _URL_RE.fullmatch(url)
    if match is None or _URL_FORBIDDEN_RE.search(url) is not None:
        raise validation_error("url must be a valid absolute URL")
    is_https = match.group(1).lower() == "https"
    if match.group(2) is None and is_https:
        raise validation_error("url must be a valid absolute URL")
    if not is_https:
        raise validation_error("url must use https scheme")
    events = body.get("events")
    if events is None:
        raise validation_error("events is required")
    if type(events) is not list or not events or any(type(e) is not str for e in events):
        raise validation_error("events must be a non-empty array")
    for event in events:
        if event not in EVENT_TYPES:
            raise validation_error(
                f"Unknown event type: {event}. Must be one of: {', '.join(EVENT_TYPES)}"
            )
    return broker_id, url, tuple(dict.fromkeys(events))


# --- query parameters -------------------------------------------------------------------

_DIGITS_RE: Final = re.compile(r"[0-9]+", re.ASCII)


def parse_query(query_string: str) -> dict[str, str]:
    """Raw query string -> {name: value}: percent-decoded, `+` as space.

    §1.4: an empty value counts as absent, and of a repeated parameter the first occurrence
    counts. Empty occurrences are dropped before that, so `?depth=&depth=5` is depth 5.
    Invalid UTF-8 after percent-decoding becomes U+FFFD (echoable in a message).
    """
    params: dict[str, str] = {}
    if not query_string:
        return params
    for field in query_string.split("&"):
        name, _, value = field.partition("=")
        if not value:
            continue
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name in params:
            continue
        params[name] = unquote_plus(value) if "%" in value or "+" in value else value
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


def validate_depth(params: dict[str, str]) -> int:
    """§4.2 `depth`: default 10, 1..50."""
    text = params.get("depth")
    if text is None:
        return 10
    depth = _int_in_range(text, 1, 50)
    if depth is None:
        raise validation_error("depth must be an integer between 1 and 50")
    return depth


def validate_quote(params: dict[str, str]) -> tuple[str, int]:
    """§4.7: (side, quantity), side checked first."""
    side = params.get("side")
    if side is None:
        raise validation_error("side query parameter is required")
    if side != BID and side != ASK:
        raise validation_error(_invalid_side(side))
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
    """§4.4: (status or None for all, page, limit), checked in that order.

    `page` is bounded like every query integer (§5.5), so no digit string of any length
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
    limit = 20
    text = params.get("limit")
    if text is not None:
        checked = _int_in_range(text, 1, 100)
        if checked is None:
            raise validation_error("limit must be an integer between 1 and 100")
        limit = checked
    return status, page, limit


def validate_trades_limit(params: dict[str, str]) -> int:
    """§6.6 `limit` of the public tape: default 50, 1..500."""
    text = params.get("limit")
    if text is None:
        return 50
    limit = _int_in_range(text, 1, 500)
    if limit is None:
        raise validation_error("limit must be an integer between 1 and 500")
    return limit


CANDLE_INTERVAL_MESSAGE: Final = f"interval must be one of {', '.join(INTERVALS)}"


def validate_candles(params: dict[str, str]) -> tuple[str, int]:
    """§6.6 candles: (interval, limit), interval checked first; defaults 1m and 300."""
    interval = params.get("interval", "1m")
    if interval not in INTERVALS:
        raise validation_error(CANDLE_INTERVAL_MESSAGE)
    text = params.get("limit")
    if text is None:
        return interval, 300
    limit = _int_in_range(text, 1, CANDLES_KEPT)
    if limit is None:
        raise validation_error(f"limit must be an integer between 1 and {CANDLES_KEPT}")
    return interval, limit


def validate_webhook_broker_query(params: dict[str, str]) -> str:
    """§4.5 GET /webhooks: broker_id, absent or empty -> 400 (no pattern: unknown -> 404)."""
    broker_id = params.get("broker_id")
    if broker_id is None:
        raise validation_error("broker_id query parameter is required")
    return broker_id


# --- Idempotency-Key (§6.1) -------------------------------------------------------------

IDEMPOTENCY_KEY_MESSAGE: Final = "Idempotency-Key must be 1 to 255 visible ASCII characters"
_IDEMPOTENCY_KEY_RE: Final = re.compile(r"[\x21-\x7e]{1,255}", re.ASCII)


def validate_idempotency_key(values: list[str]) -> str | None:
    """The key, None without the header, or 400 (also for more than one header field).

    `values` are the raw field values, one per header line (not a comma-joined merge:
    a single key may itself contain a comma).
    """
    if not values:
        return None
    if len(values) > 1:
        raise validation_error(IDEMPOTENCY_KEY_MESSAGE)
    key = values[0].strip(" \t")
    if _IDEMPOTENCY_KEY_RE.fullmatch(key) is None:
        raise validation_error(IDEMPOTENCY_KEY_MESSAGE)
    return key
