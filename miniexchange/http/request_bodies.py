"""The bodies of POST /brokers, /orders and /webhooks into validated commands.

Each body is a table of its fields in the contract's order, and every message comes
from the table: the first failing check is the answer, field by field, and within a
field required -> JSON type -> format / allowed value -> decimal places -> lower ->
upper bound.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from miniexchange.http.json_body import HugeInt
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from miniexchange.model.errors import validation_error
from miniexchange.model.events import EVENT_TYPES
from miniexchange.model.values import (
    BROKER_ID_PATTERN,
    BROKER_ID_RE,
    DOCUMENT_NUMBER_PATTERN,
    DOCUMENT_NUMBER_RE,
    MAX_CASH_CENTS,
    MAX_PRICE_CENTS,
    MAX_QUANTITY,
    SYMBOL_PATTERN,
    SYMBOL_RE,
    format_cents,
    integer_cents,
    parse_rfc3339,
)

DECIMAL_PLACES_MESSAGE: Final = "Monetary values must have at most 2 decimal places"

Check = Callable[["Field", Any, str, int], Any]
"""One kind of value: (field, present value, its path, now) -> the checked value."""


@dataclass(frozen=True, slots=True)
class Field:
    """A member of a body and its rule; `read` checks it and says what failed."""

    name: str
    kind: Check
    optional: bool = False  # absent or null reads as None instead of "is required"
    pattern: tuple[re.Pattern[str], str] | None = None  # (compiled, as shown)
    choices: tuple[str, ...] = ()
    unknown: str = ""  # a value not in `choices`: this, then "Must be one of: ..."
    lower: str = ""  # ">" or ">=", against 0
    upper: int | None = None  # in the field's unit (cents for money)
    max_length: int | None = None
    only_for: str | None = None  # an order type: for the other one, null or absent
    unique: bool = False  # in an array of objects, no two entries share the value
    members: tuple[Field, ...] = ()  # an array's entries are objects of these

    def read(self, body: dict[str, Any], now: int = 0, path: str | None = None) -> Any:
        """The checked value of this member of `body`; `path` names it in messages."""
        name = path or self.name
        value = body.get(self.name)
        if value is None:
            if self.optional:
                return None
            raise validation_error(f"{name} is required")
        return self.kind(self, value, name, now)

    def choice(self, value: str) -> str:
        """The allowed value equal to `value` (the shared constant), or the 400."""
        for allowed in self.choices:
            if value == allowed:
                return allowed
        raise validation_error(self.not_a_choice(value))

    def not_a_choice(self, value: str) -> str:
        return f"{self.unknown.format(value)}. Must be one of: {', '.join(self.choices)}"

    def bounded(self, number: int | Decimal, name: str, show: Callable[[int], str]) -> None:
        """`show` writes the upper bound as the contract does (cents as an amount)."""
        if (self.lower == ">" and number <= 0) or (self.lower == ">=" and number < 0):
            raise validation_error(f"{name} must be {self.lower} 0")
        if self.upper is not None and number > self.upper:
            raise validation_error(f"{name} must be <= {show(self.upper)}")


# --- kinds of value ---------------------------------------------------------------------


def text(field: Field, value: Any, name: str, now: int) -> str:
    if type(value) is not str:
        raise validation_error(f"{name} must be a string")
    if field.pattern is not None and field.pattern[0].fullmatch(value) is None:
        raise validation_error(f"{name} must match {field.pattern[1]}")
    if field.max_length is not None and len(value) > field.max_length:
        raise validation_error(f"{name} must be at most {field.max_length} characters")
    return field.choice(value) if field.choices else value


def money(field: Field, value: Any, name: str, now: int) -> int:
    """Cents of a JSON number (never bool, never a string) with at most 2 decimals."""
    if type(value) is not int and not isinstance(value, Decimal):
        raise validation_error(f"{name} must be a number")
    cents = integer_cents(value)
    if cents is None:
        raise validation_error(DECIMAL_PLACES_MESSAGE)
    field.bounded(cents, name, format_cents)
    return cents


def integer(field: Field, value: Any, name: str, now: int) -> int:
    """An integer literal (bool and `1e3` are not); a HugeInt is never in range."""
    kind = type(value)
    if kind is not int and kind is not HugeInt:
        raise validation_error(f"{name} must be an integer")
    field.bounded(value, name, str)
    return value  # type: ignore[no-any-return]


def future_timestamp(field: Field, value: Any, name: str, now: int) -> int:
    """Microseconds of an RFC 3339 string strictly after `now`."""
    at = parse_rfc3339(text(field, value, name, now))
    if at is None:
        raise validation_error(f"{name} must be a valid RFC 3339 timestamp")
    if at <= now:
        raise validation_error(f"{name} must be a future timestamp")
    return at


def https_url(field: Field, value: Any, name: str, now: int) -> str:
    """String and length first; then an absolute URL with a host; then the scheme. A
    URL with another scheme is reported as such even without a host
    (`javascript:alert(1)`)."""
    url = text(field, value, name, now)
    match = _URL_RE.fullmatch(url)
    if match is None or _URL_FORBIDDEN_RE.search(url) is not None:
        raise validation_error(f"{name} must be a valid absolute URL")
    is_https = match.group(1).lower() == "https"
    if match.group(2) is None and is_https:
        raise validation_error(f"{name} must be a valid absolute URL")
    if not is_https:
        raise validation_error(f"{name} must use https scheme")
    return url


# No whitespace (Unicode's, which includes the C0 separators) and no control character.
_URL_FORBIDDEN_RE: Final = re.compile(r"[\s\x00-\x1f\x7f]")
# scheme ":" then either "//" authority with a non-empty host, or an opaque rest that does
# not start with "//" (`javascript:alert(1)`, `mailto:a@b`): the latter is absolute but
# hostless, which only the https scheme forbids (see https_url).
_URL_RE: Final = re.compile(
    r"([A-Za-z][A-Za-z0-9+.\-]*):"
    r"(?://(?:[^/?#@]*@)?"  # userinfo
    r"(\[[0-9A-Za-z:.]+\]|[^/?#@:\[\]\"<>\\^`{|}]+)"  # host: IP literal or a name
    r"(?::[0-9]*)?(?:[/?#].*)?"  # port, then path / query / fragment
    r"|(?!//).*)",
    re.DOTALL,
)


def distinct_choices(field: Field, value: Any, name: str, now: int) -> tuple[str, ...]:
    """A non-empty array of allowed strings; repeats merged, in order of first appearance."""
    if type(value) is not list or not value or any(type(item) is not str for item in value):
        raise validation_error(f"{name} must be a non-empty array")
    return tuple(dict.fromkeys(field.choice(item) for item in value))


def objects(field: Field, value: Any, name: str, now: int) -> list[tuple[Any, ...]]:
    """An array of objects, entry by entry in array order, each member in table order;
    a value of a `unique` member is refused at its second occurrence."""
    if type(value) is not list:
        raise validation_error(f"{name} must be an array")
    seen: dict[str, set[Any]] = {member.name: set() for member in field.members if member.unique}
    entries = []
    for index, entry in enumerate(value):
        path = f"{name}[{index}]"
        if type(entry) is not dict:
            raise validation_error(f"{path} must be an object")
        checked = []
        for member in field.members:
            item = member.read(entry, now, f"{path}.{member.name}")
            if member.unique:
                if item in seen[member.name]:
                    raise validation_error(f"{name} contains duplicate {member.name}: {item}")
                seen[member.name].add(item)
            checked.append(item)
        entries.append(tuple(checked))
    return entries


# --- the tables, in the contract's order ------------------------------------------------

BROKER_ID: Final = Field("broker_id", text, pattern=(BROKER_ID_RE, BROKER_ID_PATTERN))
SYMBOL: Final = Field("symbol", text, pattern=(SYMBOL_RE, SYMBOL_PATTERN))
QUANTITY: Final = Field("quantity", integer, lower=">", upper=MAX_QUANTITY)
SIDE: Final = Field("side", text, choices=(BID, ASK), unknown="Invalid side: '{}'")

REGISTRATION: Final = (
    BROKER_ID,
    Field("initial_cash", money, lower=">=", upper=MAX_CASH_CENTS),
    Field(
        "initial_holdings",
        objects,
        optional=True,
        members=(Field("symbol", text, pattern=SYMBOL.pattern, unique=True), QUANTITY),
    ),
)

ORDER: Final = (
    Field("type", text, choices=(LIMIT, MARKET), unknown="Unknown order type: {}"),
    Field("price", money, lower=">", upper=MAX_PRICE_CENTS, only_for=LIMIT),
    Field("expires_at", future_timestamp, only_for=LIMIT),
    BROKER_ID,
    Field("document_number", text, pattern=(DOCUMENT_NUMBER_RE, DOCUMENT_NUMBER_PATTERN)),
    SIDE,
    SYMBOL,
    QUANTITY,
)

WEBHOOK_SUBSCRIPTION: Final = (
    Field("broker_id", text),  # no pattern: an unknown string is a 404 later
    Field("url", https_url, max_length=2048),
    Field("events", distinct_choices, choices=EVENT_TYPES, unknown="Unknown event type: {}"),
)


def invalid_side(side: str) -> str:
    """The message for a side that is neither bid nor ask (bodies and the quote's query)."""
    return SIDE.not_a_choice(side)


# --- validators -------------------------------------------------------------------------


def validate_registration(body: dict[str, Any]) -> RegisterBroker:
    broker_id, cash, holdings = [field.read(body) for field in REGISTRATION]
    return RegisterBroker(broker_id, cash, tuple(sorted(holdings or ())))


def validate_order(body: dict[str, Any], now_us: int) -> SubmitOrder:
    """`now_us` is the acceptance instant: expires_at must be after it."""
    values: dict[str, Any] = {}
    for field in ORDER:
        if field.only_for is not None and values["type"] != field.only_for:
            if body.get(field.name) is not None:
                raise validation_error(
                    f"{field.name} must be null or omitted for {values['type']} orders"
                )
            values[field.name] = None
        else:
            values[field.name] = field.read(body, now_us)
    # One shared string per broker, symbol and customer, not one copy per resting order.
    return SubmitOrder(
        values["type"],
        sys.intern(values["broker_id"]),
        sys.intern(values["document_number"]),
        values["side"],
        sys.intern(values["symbol"]),
        values["quantity"],
        values["price"],
        values["expires_at"],
    )


def validate_webhook_subscription(body: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """(broker_id, url, distinct events in order of first appearance)."""
    broker_id, url, events = [field.read(body) for field in WEBHOOK_SUBSCRIPTION]
    return broker_id, url, events
