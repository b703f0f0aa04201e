"""Query strings: parsing, and every message and bound of each parameter."""

from __future__ import annotations

import pytest

from miniexchange.http.query_params import (
    parse_query,
    validate_depth,
    validate_listing,
    validate_quote,
    validate_trades_limit,
    validate_webhook_broker_query,
)
from tests.http.parsing_support import assert_validation


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
