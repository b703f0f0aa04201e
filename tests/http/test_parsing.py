"""Request parsing and validation: every message and check order of the contract.

Bodies go through `parse_json_object` first, so the validators see exactly what a request
produces (ints, Decimals, HugeInt, ...), not hand-made Python values.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniexchange.http.fingerprint import fingerprint
from miniexchange.http.idempotency import validate_idempotency_key
from miniexchange.http.json_body import (
    INVALID_REQUEST_MESSAGE,
    ExtremeDecimal,
    HugeInt,
    parse_json_object,
)
from miniexchange.http.query_params import (
    parse_query,
    validate_depth,
    validate_listing,
    validate_quote,
    validate_trades_limit,
    validate_webhook_broker_query,
)
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
from miniexchange.model.errors import ExchangeError
from miniexchange.model.values import MAX_CASH_CENTS, format_cents, integer_cents, parse_rfc3339

JSON = "application/json"
NOW = parse_rfc3339("2026-02-17T19:00:00Z")
assert NOW is not None
EXPIRES = "2026-02-20T18:00:00Z"
EXPIRES_US = parse_rfc3339(EXPIRES)
DELETE = object()  # an override that removes the member

BIG = str(2**70)
HUGE = "1" + "0" * 5000  # beyond Python's int-from-text digit limit


def body(text: str | bytes) -> dict[str, Any]:
    return parse_json_object(JSON, text.encode() if isinstance(text, str) else text)


def assert_invalid_request(content_type: str | None, raw: bytes) -> None:
    with pytest.raises(ExchangeError) as caught:
        parse_json_object(content_type, raw)
    assert caught.value.code == "invalid_request"
    assert caught.value.message == INVALID_REQUEST_MESSAGE


def assert_validation(call: Any, message: str) -> None:
    with pytest.raises(ExchangeError) as caught:
        call()
    assert (caught.value.code, caught.value.message) == ("validation_error", message)


def merged(base: dict[str, str], overrides: dict[str, Any]) -> dict[str, Any]:
    """A body from JSON literal texts: base members, then overrides (DELETE removes one)."""
    members = {**base, **overrides}
    text = ", ".join(
        f'"{name}": {literal}' for name, literal in members.items() if literal is not DELETE
    )
    return body("{" + text + "}")


# --- parse_json_object ------------------------------------------------------------------


def test_invalid_request_message_is_the_contracts() -> None:
    assert INVALID_REQUEST_MESSAGE == (
        "Request body must be valid JSON with Content-Type: application/json"
    )


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/jsonx",
        "application/json-patch+json",
        "application/x-www-form-urlencoded",
        "application/xml",
        "json",
        "application/ json",
        "text/json",
    ],
)
def test_wrong_content_type(content_type: str | None) -> None:
    assert_invalid_request(content_type, b'{"a": 1}')


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/json ; charset=utf-8",
        " application/json ",
        "application/json; foo=bar; baz",
    ],
)
def test_json_content_type_variants(content_type: str) -> None:
    assert parse_json_object(content_type, b'{"a": 1}') == {"a": 1}


DEEP_OK = b'{"a":' + b"[" * 1023 + b"]" * 1023 + b"}"  # 1024 levels
DEEP_TOO_MUCH = b'{"a":' + b"[" * 1024 + b"]" * 1024 + b"}"  # 1025 levels


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"   \n", id="whitespace only"),
        pytest.param(b"[]", id="array"),
        pytest.param(b"[1, 2]", id="array of numbers"),
        pytest.param(b'"text"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"1e400", id="huge number at top level"),
        pytest.param(b"null", id="null"),
        pytest.param(b"true", id="true"),
        pytest.param(b"false", id="false"),
        pytest.param(b"{", id="unterminated"),
        pytest.param(b'{"a": 1', id="unterminated object"),
        pytest.param(b'{"a": 1,}', id="trailing comma"),
        pytest.param(b"{'a': 1}", id="single quotes"),
        pytest.param(b"{a: 1}", id="bare key"),
        pytest.param(b'{"a": 1} x', id="trailing garbage"),
        pytest.param(b'{"a": 1}{"b": 2}', id="two documents"),
        pytest.param(b'{"a": NaN}', id="NaN"),
        pytest.param(b'{"a": Infinity}', id="Infinity"),
        pytest.param(b'{"a": -Infinity}', id="-Infinity"),
        pytest.param(b'{"a": 01}', id="leading zero"),
        pytest.param(b'{"a": .5}', id="no integer part"),
        pytest.param(b'{"a": 1.}', id="no fraction digits"),
        pytest.param(b'{"a": +1}', id="plus sign"),
        pytest.param(b'{"a": 0x10}', id="hex"),
        pytest.param(b'{"a": "\xff"}', id="invalid UTF-8"),
        pytest.param(b'{"a": "\xc3"}', id="truncated UTF-8"),
        pytest.param(b'{"a": "\xed\xa0\x80"}', id="UTF-8 encoded surrogate"),
        pytest.param(b'\xef\xbb\xbf{"a": 1}', id="UTF-8 BOM"),
        pytest.param('{"a": 1}'.encode("utf-16"), id="UTF-16"),
        pytest.param(b'{"a": "\\ud800"}', id="lone high surrogate"),
        pytest.param(b'{"a": "\\udc00"}', id="lone low surrogate"),
        pytest.param(b'{"\\ud800": 1}', id="lone surrogate in a key"),
        pytest.param(b'{"a": "\\ud800\\u0041"}', id="high surrogate then non-surrogate"),
        pytest.param(b'{"a": "line\nbreak"}', id="raw control character"),
        pytest.param(b'{"a": "\\x41"}', id="invalid escape"),
        pytest.param(DEEP_TOO_MUCH, id="1025 levels"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100000 levels"),
        # orjson stops at a number too large for a double; the rest must still be checked
        pytest.param(b'{"a": 1e400, "b": }', id="huge number then syntax error"),
        pytest.param(b'{"a": 1e400} x', id="huge number then trailing garbage"),
        pytest.param(b'{"a": 1e400, "b": "\\ud800"}', id="huge number then lone surrogate"),
        pytest.param(b'{"a": 1e400, "\\udc00": 1}', id="huge number then surrogate key"),
        pytest.param(b'{"a": 1e400, "b": "\xff"}', id="huge number then invalid UTF-8"),
        pytest.param(b'{"a": 1e400, "b": NaN}', id="huge number then NaN"),
        pytest.param(
            b'{"a": 1e400, "b":' + b"[" * 1024 + b"]" * 1024 + b"}",
            id="huge number then 1025 levels",
        ),
        pytest.param(
            b'{"a": 1e400, "b":' + b"[" * 5000 + b"]" * 5000 + b"}",
            id="huge number then 5001 levels",
        ),
        pytest.param(b"[1e400]", id="huge number in a top-level array"),
    ],
)
def test_invalid_bodies(raw: bytes) -> None:
    assert_invalid_request(JSON, raw)


def test_1024_levels_are_accepted() -> None:
    parsed = parse_json_object(JSON, DEEP_OK)
    depth, node = 2, parsed["a"]  # the object is level 1
    while node:
        depth, node = depth + 1, node[0]
    assert depth == 1024


def test_1024_levels_after_a_huge_number_are_accepted() -> None:
    raw = b'{"n": 1e400, "a":' + b"[" * 1023 + b"]" * 1023 + b"}"
    assert parse_json_object(JSON, raw)["n"] == Decimal("1e400")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{}", {}),
        (b' \t\r\n{"a": 1} \n', {"a": 1}),
        (b'{"a": 1, "a": 2}', {"a": 2}),  # the last occurrence counts
        (b'{"a": {"x": 1}, "a": [1]}', {"a": [1]}),
        (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),  # a surrogate pair is fine
        (b'{"a": "\xc3\xa9\\u00e9"}', {"a": "éé"}),
        (b'{"a": null, "b": true, "c": false}', {"a": None, "b": True, "c": False}),
        (b'{"a": [1, "x", {"y": null}]}', {"a": [1, "x", {"y": None}]}),
    ],
)
def test_valid_bodies(raw: bytes, expected: dict[str, Any]) -> None:
    assert parse_json_object(JSON, raw) == expected


@pytest.mark.parametrize(
    ("literal", "expected_type", "expected"),
    [
        ("150", int, 150),
        ("-0", int, 0),
        (BIG, int, 2**70),
        ("-" + BIG, int, -(2**70)),
        ("150.00", Decimal, Decimal("150.00")),
        ("1.5e2", Decimal, Decimal("1.5E+2")),
        ("1E3", Decimal, Decimal("1E+3")),
        ("10.005", Decimal, Decimal("10.005")),
        ("-0.0", Decimal, Decimal("-0.0")),
        ("1e400", Decimal, Decimal("1E+400")),  # valid JSON: huge, not invalid
        ("-1e400", Decimal, Decimal("-1E+400")),
        ("1e-400", Decimal, Decimal("1E-400")),
        ("0.1000000000000000000000000000000000001", Decimal, None),
        (HUGE, HugeInt, Decimal(HUGE)),
        ("-" + HUGE, HugeInt, -Decimal(HUGE)),
        ("1e99999999999999999999", ExtremeDecimal, None),
        ("0e99999999999999999999", Decimal, Decimal(0)),
    ],
)
def test_numbers_keep_their_exact_value(literal: str, expected_type: type, expected: Any) -> None:
    value = body('{"n": ' + literal + "}")["n"]
    assert type(value) is expected_type
    if expected is not None:
        assert value == expected
    if expected_type is Decimal and expected is None:
        assert value == Decimal(literal)


def test_a_lowered_int_digit_limit_still_gives_an_integer() -> None:
    import sys

    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        value = body('{"n": 1' + "0" * 1000 + "}")["n"]
    finally:
        sys.set_int_max_str_digits(previous)
    assert type(value) is HugeInt
    assert value == Decimal("1e1000")


def test_the_thread_decimal_context_does_not_matter() -> None:
    """Parsing uses its own exact context, whatever the thread's precision is."""
    from decimal import localcontext

    with localcontext() as context:
        context.prec = 3
        value = body('{"n": 123456.7890123}')["n"]
    assert value == Decimal("123456.7890123")


# --- fingerprint ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ('{"a": 1, "b": 2}', '{"b": 2, "a": 1}'),
        ('{"a":1,"b":[1,2]}', ' {\n "a" : 1 ,\t"b" : [ 1 , 2 ] } '),
        ('{"n": 10}', '{"n": 10.0}'),
        ('{"n": 10}', '{"n": 1e1}'),
        ('{"n": 10}', '{"n": 1.0E+1}'),
        ('{"n": 10}', '{"n": 100e-1}'),
        ('{"n": 150.00}', '{"n": 150}'),
        ('{"n": 150.00}', '{"n": 1.5e2}'),
        ('{"n": 0}', '{"n": -0}'),
        ('{"n": 0}', '{"n": -0.0}'),
        ('{"n": 0}', '{"n": 0e400}'),
        ('{"n": -12.50}', '{"n": -1.25e1}'),
        ('{"n": ' + BIG + "}", '{"n": ' + BIG + ".000}"),
        ('{"n": ' + HUGE + "}", '{"n": 1e5000}'),
        ('{"n": 1e99999999999999999999}', '{"n": 10e99999999999999999998}'),
        ('{"n": 1e99999999999999999999}', '{"n": 0.10e100000000000000000000}'),
        ('{"n": -2.5e-99999999999999999999}', '{"n": -25e-100000000000000000000}'),
        ('{"n": 12e99999999999999999999}', '{"n": 1.2e100000000000000000000}'),
        ('{"n": -0.00012e-99999999999999999999}', '{"n": -1.2e-100000000000000000003}'),
        ('{"n": 1e999999999999999999}', '{"n": 0.1e1000000000000000000}'),
        ('{"n": 1e999999999999999999}', '{"n": 0.000000000000000000001e1000000000000000020}'),
        ('{"a": 1, "a": 2}', '{"a": 2}'),
        ('{"o": {"y": 1, "x": [true, null]}}', '{"o": {"x": [true, null], "y": 1.0}}'),
        ('{"s": "\\u00e9"}', '{"s": "é"}'),
    ],
)
def test_equal_fingerprints(left: str, right: str) -> None:
    assert fingerprint(body(left)) == fingerprint(body(right))


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ('{"n": true}', '{"n": 1}'),
        ('{"n": false}', '{"n": 0}'),
        ('{"n": "10"}', '{"n": 10}'),
        ('{"n": null}', "{}"),
        ('{"n": null}', '{"n": 0}'),
        ('{"n": null}', '{"n": "null"}'),
        ('{"n": [1, 2]}', '{"n": [2, 1]}'),
        ('{"n": [1]}', '{"n": 1}'),
        ('{"n": "a"}', '{"n": ["a"]}'),
        ('{"n": {}}', '{"n": []}'),
        ('{"n": 1}', '{"n": 1.01}'),
        ('{"n": 10}', '{"n": 100}'),
        ('{"n": 1}', '{"n": -1}'),
        ('{"n": 1e400}', '{"n": 1e401}'),
        ('{"n": 1e99999999999999999999}', '{"n": 1e99999999999999999998}'),
        ('{"n": 1e99999999999999999999}', '{"n": -1e99999999999999999999}'),
        ('{"a": 1}', '{"b": 1}'),
        ('{"a": {"b": 1}}', '{"a.b": 1}'),
        ('{"s": "x"}', '{"s": "x "}'),
    ],
)
def test_different_fingerprints(left: str, right: str) -> None:
    assert fingerprint(body(left)) != fingerprint(body(right))


def test_fingerprint_is_canonical_json() -> None:
    raw = '{"b": [1, 10.0, true, null, "x", -0.0], "a": {"z": 1, "y": 2.50}}'
    expected = b'{"a":{"y":2.5,"z":1},"b":[1,1E+1,true,null,"x",0]}'
    assert fingerprint(body(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    [
        '{"b": [1, 10.0, true, false, null, "x", -0.0], "a": {"z": 1, "y": 2.50}}',
        r'{"\u00e9": 1, "e": 2, "\ud83d\ude00": [], "E": {}, "": "\u0000\"\\"}',
        '{"n": 1e99999999999999999999, "m": ' + HUGE + ', "k": -1e-400}',
    ],
)
def test_both_fingerprint_writers_agree(raw: str) -> None:
    """Past 255 levels a plain writer replaces orjson: it must write the same bytes."""
    from miniexchange.http.fingerprint import _canonical

    parts: list[bytes] = []
    _canonical(body(raw), parts)
    assert b"".join(parts) == fingerprint(body(raw))


def test_fingerprint_of_1024_levels() -> None:
    assert fingerprint(parse_json_object(JSON, DEEP_OK)).count(b"[") == 1023


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.one_of(st.integers(), st.booleans(), st.none(), st.text(max_size=5)),
        max_size=6,
    )
)
def test_fingerprint_ignores_member_order(members: dict[str, Any]) -> None:
    import json

    forward = json.dumps(members)
    backward = json.dumps(dict(reversed(list(members.items()))))
    assert fingerprint(body(forward)) == fingerprint(body(backward))


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


# --- query parameters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {}),
        ("a=1", {"a": "1"}),
        ("a=1&b=2", {"a": "1", "b": "2"}),
        ("a=1&a=2", {"a": "1"}),  # the first occurrence counts
        ("a=&a=2", {"a": "2"}),  # an empty value counts as absent
        ("a=", {}),
        ("a", {}),
        ("&&a=1&", {"a": "1"}),
        ("a=x+y", {"a": "x y"}),
        ("a=%20x", {"a": " x"}),
        ("a=%2B", {"a": "+"}),
        ("a=%26b%3D", {"a": "&b="}),
        ("a=1=2", {"a": "1=2"}),
        ("%61=1", {"a": "1"}),
        ("a+b=1", {"a b": "1"}),
        ("a=%C3%A9", {"a": "é"}),
        ("a=%FF", {"a": "\ufffd"}),
        ("a=%zz", {"a": "%zz"}),
        ("A=1&a=2", {"A": "1", "a": "2"}),
        ("a=1;b=2", {"a": "1;b=2"}),  # `&` is the only separator
        ("a=%", {"a": "%"}),
        ("a=%4", {"a": "%4"}),
        ("=5", {"": "5"}),
    ],
)
def test_parse_query(query: str, expected: dict[str, str]) -> None:
    assert parse_query(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [("", 10), ("depth=", 10), ("depth=1", 1), ("depth=50", 50), ("depth=010", 10)],
)
def test_depth_accepted(query: str, expected: int) -> None:
    assert validate_depth(parse_query(query)) == expected


@pytest.mark.parametrize(
    "value",
    ["0", "51", "-1", "+5", "%205", "5%20", "1.0", "1e1", "abc", "9" * 30, "%D9%A3", "5%0A", "0x5"],
)
def test_depth_rejected(value: str) -> None:
    assert_validation(
        lambda: validate_depth(parse_query("depth=" + value)),
        "depth must be an integer between 1 and 50",
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("side=bid&quantity=1000", ("bid", 1000)),
        ("quantity=1&side=ask", ("ask", 1)),
        ("side=bid&quantity=1000000000", ("bid", 1_000_000_000)),
        ("side=bid&quantity=0001", ("bid", 1)),
        ("side=bid&quantity=5&side=buy", ("bid", 5)),
    ],
)
def test_quote_accepted(query: str, expected: tuple[str, int]) -> None:
    assert validate_quote(parse_query(query)) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "side query parameter is required"),
        ("quantity=5", "side query parameter is required"),
        ("side=&quantity=5", "side query parameter is required"),
        ("side=buy&quantity=x", "Invalid side: 'buy'. Must be one of: bid, ask"),
        ("side=BID", "Invalid side: 'BID'. Must be one of: bid, ask"),
        ("side=bid%20", "Invalid side: 'bid '. Must be one of: bid, ask"),
        ("side=bid", "quantity query parameter is required"),
        ("side=bid&quantity=", "quantity query parameter is required"),
        ("side=ask&quantity=0", "quantity must be a positive integer"),
        ("side=ask&quantity=000", "quantity must be a positive integer"),
        ("side=ask&quantity=-5", "quantity must be a positive integer"),
        ("side=ask&quantity=%2B5", "quantity must be a positive integer"),
        ("side=ask&quantity=1.5", "quantity must be a positive integer"),
        ("side=ask&quantity=1e3", "quantity must be a positive integer"),
        ("side=ask&quantity=abc", "quantity must be a positive integer"),
        ("side=ask&quantity=%205", "quantity must be a positive integer"),
        ("side=ask&quantity=1000000001", "quantity must be <= 1000000000"),
        ("side=ask&quantity=" + "9" * 40, "quantity must be <= 1000000000"),
        ("side=ask&quantity=" + "9" * 5000, "quantity must be <= 1000000000"),
    ],
)
def test_quote_rejected(query: str, message: str) -> None:
    assert_validation(lambda: validate_quote(parse_query(query)), message)


STATUS_MESSAGE = (
    "Invalid status filter: '{}'. Must be one of: "
    "pending, partially_filled, filled, cancelled, expired"
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", (None, 1, 20)),
        ("status=&page=&limit=", (None, 1, 20)),
        ("status=pending&page=2&limit=10", ("pending", 2, 10)),
        ("status=partially_filled", ("partially_filled", 1, 20)),
        ("status=filled", ("filled", 1, 20)),
        ("status=cancelled", ("cancelled", 1, 20)),
        ("status=expired&limit=100", ("expired", 1, 100)),
        ("limit=1&page=007", (None, 7, 1)),
        ("page=1000000000", (None, 1_000_000_000, 20)),
        ("page=" + "0" * 5000 + "1000000000", (None, 1_000_000_000, 20)),
    ],
)
def test_listing_accepted(query: str, expected: tuple[str | None, int, int]) -> None:
    assert validate_listing(parse_query(query)) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=open", STATUS_MESSAGE.format("open")),
        ("status=PENDING", STATUS_MESSAGE.format("PENDING")),
        ("status=open&page=0&limit=0", STATUS_MESSAGE.format("open")),  # table order
        ("page=0", "page must be an integer >= 1"),
        ("page=000", "page must be an integer >= 1"),
        ("page=-1", "page must be an integer >= 1"),
        ("page=1.5", "page must be an integer >= 1"),
        ("page=x&limit=0", "page must be an integer >= 1"),
        ("page=1000000001", "page must be an integer <= 1000000000"),
        ("page=" + "9" * 30, "page must be an integer <= 1000000000"),
        ("page=" + "9" * 4301, "page must be an integer <= 1000000000"),
        ("page=" + "9" * 5000 + "&limit=0", "page must be an integer <= 1000000000"),
        ("limit=0", "limit must be an integer between 1 and 100"),
        ("limit=101", "limit must be an integer between 1 and 100"),
        ("limit=-1", "limit must be an integer between 1 and 100"),
        ("limit=ten", "limit must be an integer between 1 and 100"),
        ("limit=" + "9" * 30, "limit must be an integer between 1 and 100"),
    ],
)
def test_listing_rejected(query: str, message: str) -> None:
    assert_validation(lambda: validate_listing(parse_query(query)), message)


@pytest.mark.parametrize(
    ("query", "expected"),
    [("", 50), ("limit=", 50), ("limit=1", 1), ("limit=500", 500), ("limit=0050", 50)],
)
def test_trades_limit_accepted(query: str, expected: int) -> None:
    assert validate_trades_limit(parse_query(query)) == expected


@pytest.mark.parametrize("value", ["0", "501", "-1", "1.0", "x", "9" * 30, "%2B1"])
def test_trades_limit_rejected(value: str) -> None:
    assert_validation(
        lambda: validate_trades_limit(parse_query("limit=" + value)),
        "limit must be an integer between 1 and 500",
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("broker_id=broker-123", "broker-123"),
        ("broker_id=bad%20id", "bad id"),  # no pattern: an unknown broker is a 404
        ("broker_id=a&broker_id=b", "a"),
    ],
)
def test_webhook_broker_query_accepted(query: str, expected: str) -> None:
    assert validate_webhook_broker_query(parse_query(query)) == expected


@pytest.mark.parametrize("query", ["", "broker_id=", "broker_id", "broker=x"])
def test_webhook_broker_query_rejected(query: str) -> None:
    assert_validation(
        lambda: validate_webhook_broker_query(parse_query(query)),
        "broker_id query parameter is required",
    )


# --- Idempotency-Key -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (["abc"], "abc"),
        (["550e8400-e29b-41d4-a716-446655440000"], "550e8400-e29b-41d4-a716-446655440000"),
        ([" \tkey-1\t "], "key-1"),
        (["a,b"], "a,b"),  # one field whose value holds a comma
        (["!~"], "!~"),
        (["x" * 255], "x" * 255),
        (["  " + "x" * 255 + "  "], "x" * 255),
    ],
)
def test_idempotency_key_accepted(values: list[str], expected: str | None) -> None:
    assert validate_idempotency_key(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        [""],
        ["   "],
        [" \t "],
        ["x" * 256],
        ["a b"],
        ["a\tb"],
        ["é"],
        ["key\x7f"],
        ["key\x00"],
        ["key\n"],
        ["a", "b"],
        ["same", "same"],
    ],
)
def test_idempotency_key_rejected(values: list[str]) -> None:
    assert_validation(
        lambda: validate_idempotency_key(values),
        "Idempotency-Key must be 1 to 255 visible ASCII characters",
    )


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
