"""Request bodies as JSON objects with exact numbers, or `invalid_request`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from miniexchange.http.json_body import (
    INVALID_REQUEST_MESSAGE,
    ExtremeDecimal,
    HugeInt,
    parse_json_object,
)
from miniexchange.model.errors import ExchangeError
from tests.http.parsing_support import BIG, DEEP_OK, HUGE, JSON, body


def assert_invalid_request(content_type: str | None, raw: bytes) -> None:
    with pytest.raises(ExchangeError) as caught:
        parse_json_object(content_type, raw)
    assert caught.value.code == "invalid_request"
    assert caught.value.message == INVALID_REQUEST_MESSAGE


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
