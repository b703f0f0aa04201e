"""Every query integer over its bound is a 400 with its exact message, never a 5xx,
however many digits it has (4,301 digits: past Python's int-to-text limit)."""

from __future__ import annotations

import pytest

from tests.conftest import AppClient
from tests.http.helpers import limit, register

MANY = "9" * 4301


@pytest.fixture
def listed(client: AppClient) -> AppClient:
    register(client, "b1", 1_000, AAPL=10)
    assert limit(client, "b1", "ask", 10, 1).status_code == 201
    return client


@pytest.mark.parametrize(
    ("path", "query", "message"),
    [
        ("/brokers/b1/orders", f"page={MANY}", "page must be an integer <= 1000000000"),
        ("/brokers/b1/orders", "page=1000000001", "page must be an integer <= 1000000000"),
        ("/brokers/b1/orders", f"limit={MANY}", "limit must be an integer between 1 and 100"),
        ("/stocks/AAPL/book", f"depth={MANY}", "depth must be an integer between 1 and 50"),
        ("/stocks/AAPL/quote", f"side=bid&quantity={MANY}", "quantity must be <= 1000000000"),
        ("/stocks/AAPL/trades", f"limit={MANY}", "limit must be an integer between 1 and 500"),
    ],
)
def test_a_query_integer_with_many_digits_is_a_400(
    listed: AppClient, path: str, query: str, message: str
) -> None:
    result = listed.get(path, query=query)
    assert (result.status_code, result.json) == (
        400,
        {"error": "validation_error", "message": message},
    )


def test_the_largest_page_is_an_empty_page(listed: AppClient) -> None:
    result = listed.get("/brokers/b1/orders", query="page=0001000000000")
    assert result.status_code == 200
    assert result.json == {"orders": [], "total": 1, "page": 1_000_000_000, "limit": 20}


ZEROS = "0" * 5000  # past Python's int-from-text limit, with a small value after them


@pytest.mark.parametrize(
    ("path", "query", "shown"),
    [
        ("/brokers/b1/orders", f"page={ZEROS}1&limit={ZEROS}5", ("limit", 5)),
        ("/stocks/AAPL/book", f"depth={ZEROS}3", None),
        ("/stocks/AAPL/trades", f"limit={ZEROS}2", None),
        ("/stocks/AAPL/candles", f"interval=1m&limit={ZEROS}2", None),
    ],
)
def test_leading_zeros_however_many_are_the_same_integer(
    listed: AppClient, path: str, query: str, shown: tuple[str, int] | None
) -> None:
    result = listed.get(path, query=query)
    assert result.status_code == 200, result.text
    if shown is not None:
        assert result.json[shown[0]] == shown[1]
    assert result.json == listed.get(path, query=query.replace(ZEROS, "")).json
