"""The POST bodies: every message and the check order, field by field, from the tables."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniexchange.http.fingerprint import fingerprint
from miniexchange.http.request_bodies import (
    ORDER,
    REGISTRATION,
    WEBHOOK_SUBSCRIPTION,
    Field,
    validate_order,
    validate_registration,
    validate_webhook_subscription,
)
from miniexchange.model.commands import RegisterBroker, SubmitOrder
from miniexchange.model.values import MAX_CASH_CENTS, format_cents, integer_cents
from tests.http.parsing_support import (
    BIG,
    DELETE,
    EXPIRES,
    EXPIRES_US,
    HUGE,
    NOW,
    assert_validation,
    body,
    merged,
)

# --- POST /orders ----------------------------------------------------------------------

LIMIT_BODY = {
    "type": '"limit"',
    "broker_id": '"broker-123"',
    "document_number": '"12345678900"',
    "side": '"bid"',
    "symbol": '"AAPL"',
    "price": "150.00",
    "quantity": "1000",
    "expires_at": f'"{EXPIRES}"',
}
MARKET_BODY = {
    "type": '"market"',
    "broker_id": '"broker-123"',
    "document_number": '"12345678900"',
    "side": '"ask"',
    "symbol": '"AAPL"',
    "quantity": "10",
}


def order(overrides: dict[str, Any], base: dict[str, str] = LIMIT_BODY) -> SubmitOrder:
    return validate_order(merged(base, overrides), NOW)


ORDER_FIELDS = [
    "type",
    "price",
    "expires_at",
    "broker_id",
    "document_number",
    "side",
    "symbol",
    "quantity",
]


@pytest.mark.parametrize(
    ("table", "names"),
    [
        pytest.param(ORDER, ORDER_FIELDS, id="POST /orders"),
        pytest.param(REGISTRATION, ["broker_id", "initial_cash", "initial_holdings"], id="brokers"),
        pytest.param(WEBHOOK_SUBSCRIPTION, ["broker_id", "url", "events"], id="webhooks"),
    ],
)
def test_each_body_is_a_table_of_its_fields_in_the_contracts_order(
    table: tuple[Field, ...], names: list[str]
) -> None:
    assert [field.name for field in table] == names


def test_the_missing_fields_of_an_order_are_reported_in_table_order() -> None:
    """Filling an empty body one member at a time walks the table: each step's answer
    is the next field's own "is required", written from the table."""
    members: dict[str, str] = {}
    for field in ORDER:
        assert_validation(lambda: order({}, members), f"{field.name} is required")
        members[field.name] = LIMIT_BODY[field.name]
    assert order({}, members).price == 15000


def test_valid_limit_order() -> None:
    assert order({}) == SubmitOrder(
        type="limit",
        broker_id="broker-123",
        document_number="12345678900",
        side="bid",
        symbol="AAPL",
        quantity=1000,
        price=15000,
        expires_at=EXPIRES_US,
    )


def test_valid_market_order() -> None:
    expected = SubmitOrder("market", "broker-123", "12345678900", "ask", "AAPL", 10)
    assert order({}, MARKET_BODY) == expected
    assert order({"price": "null", "expires_at": "null"}, MARKET_BODY) == expected


def test_unknown_members_are_ignored() -> None:
    assert order({"comment": '"hi"', "extra": "[1, {}]"}) == order({})


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"price": "150"}, "price", 15000),
        ({"price": "150.0"}, "price", 15000),
        ({"price": "150.000"}, "price", 15000),
        ({"price": "1.5e2"}, "price", 15000),
        ({"price": "1.5E+2"}, "price", 15000),
        ({"price": "0.01"}, "price", 1),
        ({"price": "1000000.00"}, "price", 100_000_000),
        ({"price": "1000000"}, "price", 100_000_000),
        ({"price": "148.5"}, "price", 14850),
        ({"quantity": "1"}, "quantity", 1),
        ({"quantity": "1000000000"}, "quantity", 1_000_000_000),
        ({"side": '"ask"'}, "side", "ask"),
        ({"symbol": '"ABCDEFGHIJ"'}, "symbol", "ABCDEFGHIJ"),
        ({"broker_id": '"' + "b" * 64 + '"'}, "broker_id", "b" * 64),
        ({"document_number": '"' + "D" * 32 + '"'}, "document_number", "D" * 32),
        ({"expires_at": '"2026-02-17T19:00:00.000001Z"'}, "expires_at", NOW + 1),
        ({"expires_at": '"2026-02-17t19:00:01z"'}, "expires_at", NOW + 1_000_000),
        ({"expires_at": '"2026-02-18T00:30:00+05:00"'}, "expires_at", NOW + 1_800_000_000),
    ],
)
def test_accepted_order_values(overrides: dict[str, Any], field: str, expected: Any) -> None:
    assert getattr(order(overrides), field) == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # 1 type
        ({"type": DELETE}, "type is required"),
        ({"type": "null"}, "type is required"),
        ({"type": "5"}, "type must be a string"),
        ({"type": "true"}, "type must be a string"),
        ({"type": '["limit"]'}, "type must be a string"),
        ({"type": '"stop_loss"'}, "Unknown order type: stop_loss. Must be one of: limit, market"),
        ({"type": '"LIMIT"'}, "Unknown order type: LIMIT. Must be one of: limit, market"),
        ({"type": '""'}, "Unknown order type: . Must be one of: limit, market"),
        ({"type": '"limit "'}, "Unknown order type: limit . Must be one of: limit, market"),
        # 2 price
        ({"price": DELETE}, "price is required"),
        ({"price": "null"}, "price is required"),
        ({"price": '"150.00"'}, "price must be a number"),
        ({"price": "true"}, "price must be a number"),
        ({"price": "false"}, "price must be a number"),
        ({"price": "[150]"}, "price must be a number"),
        ({"price": '{"v": 150}'}, "price must be a number"),
        ({"price": "10.005"}, "Monetary values must have at most 2 decimal places"),
        ({"price": "150.001"}, "Monetary values must have at most 2 decimal places"),
        ({"price": "1e-400"}, "Monetary values must have at most 2 decimal places"),
        ({"price": "-0.001"}, "Monetary values must have at most 2 decimal places"),
        ({"price": "1000000.005"}, "Monetary values must have at most 2 decimal places"),
        (
            {"price": "1e-99999999999999999999"},
            "Monetary values must have at most 2 decimal places",
        ),
        ({"price": "0"}, "price must be > 0"),
        ({"price": "0.00"}, "price must be > 0"),
        ({"price": "-0.0"}, "price must be > 0"),
        ({"price": "-1"}, "price must be > 0"),
        ({"price": "-150.00"}, "price must be > 0"),
        ({"price": "-1e400"}, "price must be > 0"),
        ({"price": "-" + BIG}, "price must be > 0"),
        ({"price": "1000000.01"}, "price must be <= 1000000.00"),
        ({"price": "1000001"}, "price must be <= 1000000.00"),
        ({"price": "1E+7"}, "price must be <= 1000000.00"),
        ({"price": "1e400"}, "price must be <= 1000000.00"),
        ({"price": "1e99999999999999999999"}, "price must be <= 1000000.00"),
        ({"price": BIG}, "price must be <= 1000000.00"),
        ({"price": HUGE}, "price must be <= 1000000.00"),
        # 3 expires_at
        ({"expires_at": DELETE}, "expires_at is required"),
        ({"expires_at": "null"}, "expires_at is required"),
        ({"expires_at": "1771354800"}, "expires_at must be a string"),
        ({"expires_at": "true"}, "expires_at must be a string"),
        ({"expires_at": '""'}, "expires_at must be a valid RFC 3339 timestamp"),
        ({"expires_at": '"tomorrow"'}, "expires_at must be a valid RFC 3339 timestamp"),
        ({"expires_at": '"2026-02-20"'}, "expires_at must be a valid RFC 3339 timestamp"),
        ({"expires_at": '"2026-02-20T18:00:00"'}, "expires_at must be a valid RFC 3339 timestamp"),
        ({"expires_at": '"2030-02-30T00:00:00Z"'}, "expires_at must be a valid RFC 3339 timestamp"),
        ({"expires_at": '"2030-12-31T23:59:60Z"'}, "expires_at must be a valid RFC 3339 timestamp"),
        (
            {"expires_at": '"2030-01-01T00:00:00.1234567Z"'},
            "expires_at must be a valid RFC 3339 timestamp",
        ),
        ({"expires_at": '"2030-01-01 00:00:00Z"'}, "expires_at must be a valid RFC 3339 timestamp"),
        (
            {"expires_at": '"2030-01-01T00:00:00Z\\n"'},
            "expires_at must be a valid RFC 3339 timestamp",
        ),
        (
            {"expires_at": '"10000-01-01T00:00:00Z"'},
            "expires_at must be a valid RFC 3339 timestamp",
        ),
        (
            {"expires_at": '"9999-12-31T23:30:00-01:00"'},
            "expires_at must be a valid RFC 3339 timestamp",
        ),
        ({"expires_at": '"2026-02-17T19:00:00Z"'}, "expires_at must be a future timestamp"),
        ({"expires_at": '"2026-02-17T18:59:59.999999Z"'}, "expires_at must be a future timestamp"),
        ({"expires_at": '"2026-02-17T20:00:00+01:00"'}, "expires_at must be a future timestamp"),
        ({"expires_at": '"2020-01-01T00:00:00Z"'}, "expires_at must be a future timestamp"),
        ({"expires_at": '"0001-01-01T00:00:00Z"'}, "expires_at must be a future timestamp"),
        # 4 broker_id
        ({"broker_id": DELETE}, "broker_id is required"),
        ({"broker_id": "null"}, "broker_id is required"),
        ({"broker_id": "123"}, "broker_id must be a string"),
        ({"broker_id": '""'}, "broker_id must match ^[a-zA-Z0-9_-]{1,64}$"),
        ({"broker_id": '"' + "b" * 65 + '"'}, "broker_id must match ^[a-zA-Z0-9_-]{1,64}$"),
        ({"broker_id": '"bad id"'}, "broker_id must match ^[a-zA-Z0-9_-]{1,64}$"),
        ({"broker_id": '"broker\\n"'}, "broker_id must match ^[a-zA-Z0-9_-]{1,64}$"),
        ({"broker_id": '"brok\\u00e9r"'}, "broker_id must match ^[a-zA-Z0-9_-]{1,64}$"),
        # 5 document_number
        ({"document_number": DELETE}, "document_number is required"),
        ({"document_number": "12345678900"}, "document_number must be a string"),
        ({"document_number": '"123-456"'}, "document_number must match ^[a-zA-Z0-9]{1,32}$"),
        (
            {"document_number": '"' + "1" * 33 + '"'},
            "document_number must match ^[a-zA-Z0-9]{1,32}$",
        ),
        ({"document_number": '""'}, "document_number must match ^[a-zA-Z0-9]{1,32}$"),
        # 6 side
        ({"side": DELETE}, "side is required"),
        ({"side": "null"}, "side is required"),
        ({"side": "1"}, "side must be a string"),
        ({"side": '"buy"'}, "Invalid side: 'buy'. Must be one of: bid, ask"),
        ({"side": '"BID"'}, "Invalid side: 'BID'. Must be one of: bid, ask"),
        ({"side": '""'}, "Invalid side: ''. Must be one of: bid, ask"),
        # 7 symbol
        ({"symbol": DELETE}, "symbol is required"),
        ({"symbol": "5"}, "symbol must be a string"),
        ({"symbol": '"aapl"'}, "symbol must match ^[A-Z]{1,10}$"),
        ({"symbol": '"ABCDEFGHIJK"'}, "symbol must match ^[A-Z]{1,10}$"),
        ({"symbol": '"AAPL\\n"'}, "symbol must match ^[A-Z]{1,10}$"),
        ({"symbol": '"AA PL"'}, "symbol must match ^[A-Z]{1,10}$"),
        ({"symbol": '""'}, "symbol must match ^[A-Z]{1,10}$"),
        # 8 quantity
        ({"quantity": DELETE}, "quantity is required"),
        ({"quantity": "null"}, "quantity is required"),
        ({"quantity": '"1000"'}, "quantity must be an integer"),
        ({"quantity": "true"}, "quantity must be an integer"),
        ({"quantity": "false"}, "quantity must be an integer"),
        ({"quantity": "1000.0"}, "quantity must be an integer"),
        ({"quantity": "1e3"}, "quantity must be an integer"),
        ({"quantity": "10.5"}, "quantity must be an integer"),
        ({"quantity": "1e400"}, "quantity must be an integer"),
        ({"quantity": "[1000]"}, "quantity must be an integer"),
        ({"quantity": "0"}, "quantity must be > 0"),
        ({"quantity": "-0"}, "quantity must be > 0"),
        ({"quantity": "-5"}, "quantity must be > 0"),
        ({"quantity": "-" + BIG}, "quantity must be > 0"),
        ({"quantity": "-" + HUGE}, "quantity must be > 0"),
        ({"quantity": "1000000001"}, "quantity must be <= 1000000000"),
        ({"quantity": str(2**63)}, "quantity must be <= 1000000000"),
        ({"quantity": BIG}, "quantity must be <= 1000000000"),
        ({"quantity": HUGE}, "quantity must be <= 1000000000"),
    ],
)
def test_rejected_limit_orders(overrides: dict[str, Any], message: str) -> None:
    assert_validation(lambda: order(overrides), message)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"price": "150.00"}, "price must be null or omitted for market orders"),
        ({"price": "0"}, "price must be null or omitted for market orders"),
        ({"price": "false"}, "price must be null or omitted for market orders"),
        ({"price": '"x"'}, "price must be null or omitted for market orders"),
        ({"expires_at": f'"{EXPIRES}"'}, "expires_at must be null or omitted for market orders"),
        ({"expires_at": '"garbage"'}, "expires_at must be null or omitted for market orders"),
        ({"quantity": "1e3"}, "quantity must be an integer"),
        ({"side": '"sell"'}, "Invalid side: 'sell'. Must be one of: bid, ask"),
    ],
)
def test_rejected_market_orders(overrides: dict[str, Any], message: str) -> None:
    assert_validation(lambda: order(overrides, MARKET_BODY), message)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param("{}", "type is required", id="empty object"),
        pytest.param(
            '{"type": "stop", "price": "x", "quantity": true}',
            "Unknown order type: stop. Must be one of: limit, market",
            id="type first",
        ),
        pytest.param(
            '{"type": "limit", "price": 10.005, "expires_at": 5, "broker_id": 1}',
            "Monetary values must have at most 2 decimal places",
            id="price before expires_at",
        ),
        pytest.param(
            '{"type": "limit", "price": 1, "expires_at": "2020-01-01T00:00:00Z", "broker_id": 1}',
            "expires_at must be a future timestamp",
            id="expires_at before broker_id",
        ),
        pytest.param(
            '{"type": "limit", "price": 1, "expires_at": "2030-01-01T00:00:00Z",'
            ' "broker_id": "bad id", "document_number": 5}',
            "broker_id must match ^[a-zA-Z0-9_-]{1,64}$",
            id="broker_id before document_number",
        ),
        pytest.param(
            '{"type": "market", "broker_id": "b", "document_number": "x-1", "side": "buy"}',
            "document_number must match ^[a-zA-Z0-9]{1,32}$",
            id="document_number before side",
        ),
        pytest.param(
            '{"type": "market", "broker_id": "b", "document_number": "1", "side": "buy",'
            ' "symbol": "aapl"}',
            "Invalid side: 'buy'. Must be one of: bid, ask",
            id="side before symbol",
        ),
        pytest.param(
            '{"type": "market", "broker_id": "b", "document_number": "1", "side": "bid",'
            ' "symbol": "aapl", "quantity": 0}',
            "symbol must match ^[A-Z]{1,10}$",
            id="symbol before quantity",
        ),
        pytest.param(
            '{"type": "market", "price": 1, "expires_at": "x"}',
            "price must be null or omitted for market orders",
            id="market: price before expires_at",
        ),
        pytest.param(
            '{"type": "market", "expires_at": "x", "broker_id": 5}',
            "expires_at must be null or omitted for market orders",
            id="market: expires_at before broker_id",
        ),
        pytest.param(
            '{"type": "limit", "price": -0.001}',
            "Monetary values must have at most 2 decimal places",
            id="decimal places before lower bound",
        ),
        pytest.param(
            '{"type": "limit", "price": 99999999999.999}',
            "Monetary values must have at most 2 decimal places",
            id="decimal places before upper bound",
        ),
        pytest.param(
            '{"type": "limit", "price": "1e400"}',
            "price must be a number",
            id="JSON type before bounds",
        ),
    ],
)
def test_order_check_order(raw: str, message: str) -> None:
    assert_validation(lambda: validate_order(body(raw), NOW), message)


# --- POST /brokers ---------------------------------------------------------------------

BROKER_BODY = {
    "broker_id": '"broker-123"',
    "initial_cash": "1000000.00",
    "initial_holdings": '[{"symbol": "GOOG", "quantity": 200}, {"symbol": "AAPL", "quantity": 5000}]',
}


def registration(overrides: dict[str, Any]) -> RegisterBroker:
    return validate_registration(merged(BROKER_BODY, overrides))


def test_valid_registration_sorts_holdings() -> None:
    assert registration({}) == RegisterBroker(
        "broker-123", 100_000_000, (("AAPL", 5000), ("GOOG", 200))
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"initial_holdings": DELETE}, RegisterBroker("broker-123", 100_000_000, ())),
        ({"initial_holdings": "null"}, RegisterBroker("broker-123", 100_000_000, ())),
        ({"initial_holdings": "[]"}, RegisterBroker("broker-123", 100_000_000, ())),
        (
            {"initial_cash": "0", "initial_holdings": DELETE},
            RegisterBroker("broker-123", 0, ()),
        ),
        (
            {"initial_cash": "-0.00", "initial_holdings": DELETE},
            RegisterBroker("broker-123", 0, ()),
        ),
        (
            {"initial_cash": "1.5e2", "initial_holdings": DELETE},
            RegisterBroker("broker-123", 15000, ()),
        ),
        (
            {"initial_cash": "1000000000000.00", "initial_holdings": DELETE},
            RegisterBroker("broker-123", MAX_CASH_CENTS, ()),
        ),
        (
            {"initial_holdings": '[{"symbol": "ZZ", "quantity": 1000000000, "x": 1}]'},
            RegisterBroker("broker-123", 100_000_000, (("ZZ", 1_000_000_000),)),
        ),
    ],
)
def test_accepted_registrations(overrides: dict[str, Any], expected: RegisterBroker) -> None:
    assert registration(overrides) == expected


def _holdings(*entries: str) -> dict[str, str]:
    return {"initial_holdings": "[" + ", ".join(entries) + "]"}


GOOD = '{"symbol": "AAPL", "quantity": 10}'


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # 1 broker_id
        ({"broker_id": DELETE}, "broker_id is required"),
        ({"broker_id": "null"}, "broker_id is required"),
        ({"broker_id": "7"}, "broker_id must be a string"),
        ({"broker_id": '"' + "a" * 65 + '"'}, "broker_id must match ^[a-zA-Z0-9_-]{1,64}$"),
        ({"broker_id": '"broker 1"'}, "broker_id must match ^[a-zA-Z0-9_-]{1,64}$"),
        # 2 initial_cash
        ({"initial_cash": DELETE}, "initial_cash is required"),
        ({"initial_cash": "null"}, "initial_cash is required"),
        ({"initial_cash": '"1000.00"'}, "initial_cash must be a number"),
        ({"initial_cash": "true"}, "initial_cash must be a number"),
        ({"initial_cash": "10.005"}, "Monetary values must have at most 2 decimal places"),
        ({"initial_cash": "-0.001"}, "Monetary values must have at most 2 decimal places"),
        ({"initial_cash": "-0.01"}, "initial_cash must be >= 0"),
        ({"initial_cash": "-1"}, "initial_cash must be >= 0"),
        ({"initial_cash": "-1e400"}, "initial_cash must be >= 0"),
        ({"initial_cash": "1000000000000.01"}, "initial_cash must be <= 1000000000000.00"),
        ({"initial_cash": "1e400"}, "initial_cash must be <= 1000000000000.00"),
        ({"initial_cash": BIG}, "initial_cash must be <= 1000000000000.00"),
        # 3 initial_holdings
        ({"initial_holdings": "{}"}, "initial_holdings must be an array"),
        ({"initial_holdings": '"AAPL"'}, "initial_holdings must be an array"),
        ({"initial_holdings": "5"}, "initial_holdings must be an array"),
        (_holdings("5"), "initial_holdings[0] must be an object"),
        (_holdings(GOOD, "null"), "initial_holdings[1] must be an object"),
        (_holdings(GOOD, '["AAPL", 1]'), "initial_holdings[1] must be an object"),
        (_holdings('{"quantity": 1}'), "initial_holdings[0].symbol is required"),
        (_holdings('{"symbol": null, "quantity": 1}'), "initial_holdings[0].symbol is required"),
        (_holdings('{"symbol": 5, "quantity": 1}'), "initial_holdings[0].symbol must be a string"),
        (
            _holdings('{"symbol": "aapl", "quantity": 1}'),
            "initial_holdings[0].symbol must match ^[A-Z]{1,10}$",
        ),
        (
            _holdings(GOOD, '{"symbol": "AAPL\\n", "quantity": 1}'),
            "initial_holdings[1].symbol must match ^[A-Z]{1,10}$",
        ),
        (_holdings('{"symbol": "AAPL"}'), "initial_holdings[0].quantity is required"),
        (
            _holdings('{"symbol": "AAPL", "quantity": null}'),
            "initial_holdings[0].quantity is required",
        ),
        (
            _holdings('{"symbol": "AAPL", "quantity": "5"}'),
            "initial_holdings[0].quantity must be an integer",
        ),
        (
            _holdings('{"symbol": "AAPL", "quantity": 5.0}'),
            "initial_holdings[0].quantity must be an integer",
        ),
        (
            _holdings('{"symbol": "AAPL", "quantity": true}'),
            "initial_holdings[0].quantity must be an integer",
        ),
        (
            _holdings('{"symbol": "AAPL", "quantity": 0}'),
            "initial_holdings[0].quantity must be > 0",
        ),
        (
            _holdings(GOOD, '{"symbol": "GOOG", "quantity": -1}'),
            "initial_holdings[1].quantity must be > 0",
        ),
        (
            _holdings('{"symbol": "AAPL", "quantity": 1000000001}'),
            "initial_holdings[0].quantity must be <= 1000000000",
        ),
        (
            _holdings('{"symbol": "AAPL", "quantity": ' + BIG + "}"),
            "initial_holdings[0].quantity must be <= 1000000000",
        ),
        (
            _holdings(GOOD, '{"symbol": "AAPL", "quantity": 5}'),
            "initial_holdings contains duplicate symbol: AAPL",
        ),
        # the duplicate is part of the symbol check: before that entry's quantity
        (
            _holdings(GOOD, '{"symbol": "AAPL", "quantity": "bad"}'),
            "initial_holdings contains duplicate symbol: AAPL",
        ),
        (
            _holdings(GOOD, '{"symbol": "GOOG", "quantity": 1}', GOOD),
            "initial_holdings contains duplicate symbol: AAPL",
        ),
        # array order: an earlier entry's quantity before a later entry's symbol
        (
            _holdings('{"symbol": "AAPL", "quantity": 0}', '{"symbol": "x"}'),
            "initial_holdings[0].quantity must be > 0",
        ),
        (
            _holdings('{"symbol": "x", "quantity": 1}', "5"),
            "initial_holdings[0].symbol must match ^[A-Z]{1,10}$",
        ),
    ],
)
def test_rejected_registrations(overrides: dict[str, Any], message: str) -> None:
    assert_validation(lambda: registration(overrides), message)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{}", "broker_id is required"),
        (
            '{"broker_id": "bad id", "initial_cash": "x"}',
            "broker_id must match ^[a-zA-Z0-9_-]{1,64}$",
        ),
        (
            '{"broker_id": "b", "initial_cash": -1, "initial_holdings": 5}',
            "initial_cash must be >= 0",
        ),
        ('{"broker_id": "b", "initial_holdings": 5}', "initial_cash is required"),
    ],
)
def test_registration_check_order(raw: str, message: str) -> None:
    assert_validation(lambda: validate_registration(body(raw)), message)


# --- POST /webhooks --------------------------------------------------------------------

WEBHOOK_BODY = {
    "broker_id": '"broker-123"',
    "url": '"https://broker-system.example.com/trade-notifications"',
    "events": '["trade.executed", "order.expired", "order.cancelled"]',
}
ALL_EVENTS = ("trade.executed", "order.expired", "order.cancelled")
UNKNOWN_EVENT = (
    "Unknown event type: {}. Must be one of: trade.executed, order.expired, order.cancelled"
)


def subscription(overrides: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    return validate_webhook_subscription(merged(WEBHOOK_BODY, overrides))


def test_valid_subscription() -> None:
    assert subscription({}) == (
        "broker-123",
        "https://broker-system.example.com/trade-notifications",
        ALL_EVENTS,
    )


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ('["order.expired"]', ("order.expired",)),
        (
            '["order.cancelled", "trade.executed", "order.cancelled", "trade.executed"]',
            ("order.cancelled", "trade.executed"),
        ),
    ],
)
def test_events_are_deduplicated_in_order_of_first_appearance(
    events: str, expected: tuple[str, ...]
) -> None:
    assert subscription({"events": events})[2] == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "https://example.com/",
        "HTTPS://EXAMPLE.COM/Path",
        "Https://example.com",
        "https://example.com:8443/hooks?x=1&y=2#frag",
        "https://user:pass@example.com/x",
        "https://127.0.0.1/x",
        "https://[::1]:443/x",
        "https://localhost",
        "https://bücher.example/x",
        "https://example.com:/x",
        "https://" + "a" * (2048 - len("https://")),  # exactly 2048 characters
    ],
)
def test_accepted_urls(url: str) -> None:
    import json

    assert subscription({"url": json.dumps(url)})[1] == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://" + "a" * (2049 - len("https://")), "url must be at most 2048 characters"),
        ("a" * 2049, "url must be at most 2048 characters"),  # length before validity
        ("http://" + "a" * 2048, "url must be at most 2048 characters"),  # length before scheme
        ("not a url", "url must be a valid absolute URL"),
        ("https://", "url must be a valid absolute URL"),
        ("https:///path", "url must be a valid absolute URL"),
        ("/relative", "url must be a valid absolute URL"),
        ("relative/path", "url must be a valid absolute URL"),
        ("//example.com/x", "url must be a valid absolute URL"),
        ("", "url must be a valid absolute URL"),
        ("https:", "url must be a valid absolute URL"),
        ("https:example.com", "url must be a valid absolute URL"),
        ("https:/example.com", "url must be a valid absolute URL"),
        ("https://:443/x", "url must be a valid absolute URL"),
        ("https://user@/x", "url must be a valid absolute URL"),
        ("https://exa mple.com", "url must be a valid absolute URL"),
        ("https://example.com/a b", "url must be a valid absolute URL"),
        (" https://example.com", "url must be a valid absolute URL"),
        ("https://example.com\n", "url must be a valid absolute URL"),
        ("https://example.com/\t", "url must be a valid absolute URL"),
        ("https://example.com/\u00a0", "url must be a valid absolute URL"),
        ("https://example.com/\x00", "url must be a valid absolute URL"),
        ("https://example.com:port/", "url must be a valid absolute URL"),
        ("http://", "url must be a valid absolute URL"),
        ("1https://example.com", "url must be a valid absolute URL"),
        ("http://example.com", "url must use https scheme"),
        ("HTTP://example.com/hooks", "url must use https scheme"),
        ("ftp://files.example.com/x", "url must use https scheme"),
        ("wss://example.com", "url must use https scheme"),
        ("httpss://example.com", "url must use https scheme"),
        ("javascript:alert(1)", "url must use https scheme"),
        ("mailto:ops@example.com", "url must use https scheme"),
        ("http:", "url must use https scheme"),
    ],
)
def test_rejected_urls(url: str, message: str) -> None:
    import json

    assert_validation(lambda: subscription({"url": json.dumps(url)}), message)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"broker_id": DELETE}, "broker_id is required"),
        ({"broker_id": "null"}, "broker_id is required"),
        ({"broker_id": "5"}, "broker_id must be a string"),
        ({"url": DELETE}, "url is required"),
        ({"url": "null"}, "url is required"),
        ({"url": "5"}, "url must be a string"),
        ({"url": '["https://example.com"]'}, "url must be a string"),
        ({"events": DELETE}, "events is required"),
        ({"events": "null"}, "events is required"),
        ({"events": '"trade.executed"'}, "events must be a non-empty array"),
        ({"events": "[]"}, "events must be a non-empty array"),
        ({"events": "{}"}, "events must be a non-empty array"),
        ({"events": "[1]"}, "events must be a non-empty array"),
        ({"events": '["trade.executed", null]'}, "events must be a non-empty array"),
        ({"events": '[["trade.executed"]]'}, "events must be a non-empty array"),
        # the JSON type of the whole array is checked before any value
        ({"events": '["trade.matched", 5]'}, "events must be a non-empty array"),
        ({"events": '["trade.matched"]'}, UNKNOWN_EVENT.format("trade.matched")),
        (
            {"events": '["trade.executed", "TRADE.EXECUTED"]'},
            UNKNOWN_EVENT.format("TRADE.EXECUTED"),
        ),
        ({"events": '["order.expired", ""]'}, UNKNOWN_EVENT.format("")),
        ({"events": '["a", "b"]'}, UNKNOWN_EVENT.format("a")),
        # check order: broker_id, url, events
        ({"broker_id": "5", "url": "5", "events": "5"}, "broker_id must be a string"),
        ({"url": '"http://x.com"', "events": "5"}, "url must use https scheme"),
    ],
)
def test_rejected_subscriptions(overrides: dict[str, Any], message: str) -> None:
    assert_validation(lambda: subscription(overrides), message)


def test_subscription_broker_id_has_no_pattern() -> None:
    assert subscription({"broker_id": '"not a valid id!"'})[0] == "not a valid id!"
    assert subscription({"broker_id": '""'})[0] == ""


# --- money through the whole parser -----------------------------------------------------


@given(st.integers(min_value=-MAX_CASH_CENTS, max_value=MAX_CASH_CENTS))
def test_rendered_amounts_parse_back_to_the_same_cents(cents: int) -> None:
    text = format_cents(cents)
    parsed = body('{"amount": ' + text + "}")["amount"]
    assert integer_cents(parsed) == cents
    assert fingerprint(body('{"amount": ' + text + "}")) == fingerprint(
        body('{"amount": ' + f"{cents}e-2" + "}")
    )


@given(
    st.integers(min_value=1, max_value=100_000_000),
    st.integers(min_value=1, max_value=9),
)
def test_a_third_decimal_is_always_rejected(cents: int, extra: int) -> None:
    price = f"{format_cents(cents)}{extra}"
    assert_validation(
        lambda: order({"price": price}), "Monetary values must have at most 2 decimal places"
    )
