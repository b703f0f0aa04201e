"""Every outcome of the core endpoints through the ASGI app."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from miniexchange.testing import ManualClock, run_expiration
from tests.conftest import AppClient
from tests.http.helpers import FAR, balance, limit, market, register

ORDER_KEYS = {
    "order_id", "type", "broker_id", "document_number", "side", "symbol", "quantity",
    "filled_quantity", "remaining_quantity", "cancelled_quantity", "status", "created_at",
    "average_price", "trades",
}  # fmt: skip
LIMIT_KEYS = ORDER_KEYS | {"price", "expires_at", "cancelled_at", "expired_at"}


# -- JSON nesting: 1024 levels accepted, 1025 refused, through the whole app -------


def nested_registration(levels: int, number: str = "1") -> bytes:
    """A valid registration with an ignored member that takes the body to `levels`."""
    deep = "[" * (levels - 1) + "]" * (levels - 1)
    return f'{{"broker_id": "deep", "initial_cash": 100, "n": {number}, "x": {deep}}}'.encode()


@pytest.mark.parametrize("number", ["1", "1e400"], ids=["fast decoder", "exact decoder"])
def test_the_deepest_accepted_body_is_1024_levels(client: AppClient, number: str) -> None:
    """Decoded, fingerprinted under a key, answered and replayed: within the one
    recursion limit the process runs with (`json_body.RECURSION_LIMIT`)."""
    headers = {"Content-Type": "application/json", "Idempotency-Key": "deep-1"}
    raw = nested_registration(1024, number)
    first = client.post("/brokers", body=raw, headers=headers)
    assert first.status_code == 201, first.text
    replay = client.post("/brokers", body=raw, headers=headers)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.text == first.text


@pytest.mark.parametrize("number", ["1", "1e400"], ids=["fast decoder", "exact decoder"])
def test_1025_levels_are_refused(client: AppClient, number: str) -> None:
    headers = {"Content-Type": "application/json", "Idempotency-Key": "deep-2"}
    result = client.post("/brokers", body=nested_registration(1025, number), headers=headers)
    assert result.status_code == 400
    assert result.json == {
        "error": "invalid_request",
        "message": "Request body must be valid JSON with Content-Type: application/json",
    }


def test_the_recursion_limit_is_set_in_one_place(client: AppClient) -> None:
    """Building the app leaves the limit the JSON decoding module set: one value."""
    from miniexchange.http import json_body

    assert sys.getrecursionlimit() == json_body.RECURSION_LIMIT


# -- health, routing --------------------------------------------------------------


def test_healthz(client: AppClient) -> None:
    result = client.get("/healthz")
    assert result.status_code == 200
    assert result.json == {"status": "ok"}
    assert result.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/nope"),
        ("GET", "/orders/"),
        ("GET", "/brokers/b1"),
        ("GET", "/stocks//book"),
        ("GET", "/orders/a%2Fb"),
        ("POST", "/brokers/"),
        ("OPTIONS", "/nope"),
    ],
)
def test_unknown_route_is_json_404(client: AppClient, method: str, path: str) -> None:
    result = client.request(method, path)
    assert result.status_code == 404
    assert result.json["error"] == "not_found"
    assert result.json["message"].startswith(f"No route matches {method} /")


def test_not_found_message_names_method_and_path(client: AppClient) -> None:
    result = client.get("/nope/deeper")
    assert result.json == {"error": "not_found", "message": "No route matches GET /nope/deeper"}


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("GET", "/brokers", "POST"),
        ("PUT", "/orders", "POST"),
        ("PATCH", "/orders/ord-1", "DELETE, GET"),
        ("HEAD", "/healthz", "GET"),
        ("OPTIONS", "/orders", "POST"),
        ("POST", "/brokers/b1/balance", "GET"),
    ],
)
def test_wrong_method_is_json_405_with_allow(
    client: AppClient, method: str, path: str, allow: str
) -> None:
    result = client.request(method, path)
    assert result.status_code == 405
    assert result.headers["allow"] == allow
    if method != "HEAD":
        assert result.json == {
            "error": "method_not_allowed",
            "message": f"Method {method} is not allowed on {path}",
        }


# -- brokers ----------------------------------------------------------------------


def test_register_broker(client: AppClient) -> None:
    result = client.post(
        "/brokers",
        json={
            "broker_id": "broker-123",
            "initial_cash": 1000000.00,
            "initial_holdings": [
                {"symbol": "GOOG", "quantity": 200},
                {"symbol": "AAPL", "quantity": 5000},
            ],
        },
    )
    assert result.status_code == 201
    assert result.text == (
        '{"broker_id":"broker-123","cash_balance":1000000.00,'
        '"holdings":[{"symbol":"AAPL","quantity":5000},{"symbol":"GOOG","quantity":200}],'
        '"created_at":"2026-02-17T09:00:00Z"}'
    )


def test_register_cash_only_and_null_holdings(client: AppClient) -> None:
    result = client.post(
        "/brokers", json={"broker_id": "b", "initial_cash": 0, "initial_holdings": None}
    )
    assert result.status_code == 201
    assert result.json["holdings"] == []
    assert '"cash_balance":0.00' in result.text


def test_register_twice_is_409_and_original_untouched(client: AppClient) -> None:
    register(client, "b1", 100, AAPL=10)
    result = client.post("/brokers", json={"broker_id": "b1", "initial_cash": 5})
    assert result.status_code == 409
    assert result.json == {
        "error": "broker_already_exists",
        "message": "Broker b1 is already registered",
    }
    assert balance(client, "b1")["cash_balance"] == 100


def test_balance_after_registration(client: AppClient) -> None:
    register(client, "b1", 12.5, AAPL=10)
    result = client.get("/brokers/b1/balance")
    assert result.text == (
        '{"broker_id":"b1","cash_balance":12.50,"reserved_cash":0.00,"available_cash":12.50,'
        '"holdings":[{"symbol":"AAPL","quantity":10,"reserved_quantity":0,'
        '"available_quantity":10}],"updated_at":"2026-02-17T09:00:00Z"}'
    )


@pytest.mark.parametrize("broker_id", ["nobody", "bad%20id"])
def test_balance_of_unknown_broker(client: AppClient, broker_id: str) -> None:
    result = client.get(f"/brokers/{broker_id}/balance")
    assert result.status_code == 404
    name = broker_id.replace("%20", " ")
    assert result.json == {"error": "broker_not_found", "message": f"Broker {name} does not exist"}


# -- orders: limit ----------------------------------------------------------------


def test_limit_order_rests_and_reserves(client: AppClient) -> None:
    register(client, "b1", 1_000_000)
    result = limit(client, "b1", "bid", 150.00, 1000)
    assert result.status_code == 201
    order = result.json
    assert set(order) == LIMIT_KEYS
    assert order["order_id"].startswith("ord-")
    assert order | {"order_id": None} == {
        "order_id": None, "type": "limit", "broker_id": "b1", "document_number": "12345678900",
        "side": "bid", "symbol": "AAPL", "price": 150.0, "quantity": 1000,
        "filled_quantity": 0, "remaining_quantity": 1000, "cancelled_quantity": 0,
        "status": "pending", "expires_at": FAR, "created_at": "2026-02-17T09:00:00Z",
        "cancelled_at": None, "expired_at": None, "average_price": None, "trades": [],
    }  # fmt: skip
    assert '"price":150.00' in result.text
    assert balance(client, "b1")["reserved_cash"] == 150000
    assert client.get(f"/orders/{order['order_id']}").json == order


def test_worked_example_price_improvement(client: AppClient) -> None:
    """Price improvement: B bids 100 @ 150.00 against S's ask 60 @ 148.00."""
    register(client, "B", 100000)
    register(client, "S", 0, AAPL=60)
    assert limit(client, "S", "ask", 148.00, 60).status_code == 201
    result = limit(client, "B", "bid", 150.00, 100)
    order = result.json
    assert order["status"] == "partially_filled"
    assert (order["filled_quantity"], order["remaining_quantity"]) == (60, 40)
    assert '"average_price":148.00' in result.text
    assert [(t["price"], t["quantity"]) for t in order["trades"]] == [(148.0, 60)]
    b = balance(client, "B")
    assert (b["cash_balance"], b["reserved_cash"], b["available_cash"]) == (91120, 6000, 85120)
    assert b["holdings"] == [
        {"symbol": "AAPL", "quantity": 60, "reserved_quantity": 0, "available_quantity": 60}
    ]
    s = balance(client, "S")
    assert (s["cash_balance"], s["holdings"]) == (8880, [])


def test_both_orders_list_the_same_trade(client: AppClient) -> None:
    register(client, "B", 100000)
    register(client, "S", 0, AAPL=60)
    ask = limit(client, "S", "ask", 10, 60).json
    bid = limit(client, "B", "bid", 20, 60).json
    resting = client.get(f"/orders/{ask['order_id']}").json
    assert resting["status"] == "filled"
    assert resting["trades"] == bid["trades"]
    assert bid["trades"][0]["price"] == 10.0  # the resting order's price


def test_insufficient_balance_and_holdings(client: AppClient) -> None:
    register(client, "b1", 100, AAPL=5)
    result = limit(client, "b1", "bid", 10.01, 10)
    assert result.status_code == 409
    assert result.json == {
        "error": "insufficient_balance",
        "message": "Broker b1 has insufficient available cash for this order",
    }
    result = limit(client, "b1", "ask", 1, 6)
    assert result.status_code == 409
    assert result.json == {
        "error": "insufficient_holdings",
        "message": "Broker b1 has insufficient available quantity of AAPL for this order",
    }
    result = limit(client, "b1", "ask", 1, 1, symbol="MSFT")
    assert result.json["message"] == (
        "Broker b1 has insufficient available quantity of MSFT for this order"
    )
    assert balance(client, "b1")["reserved_cash"] == 0


def test_funds_checked_against_available_not_total(client: AppClient) -> None:
    register(client, "b1", 100)
    assert limit(client, "b1", "bid", 60, 1).status_code == 201
    assert limit(client, "b1", "bid", 50, 1).status_code == 409
    assert limit(client, "b1", "bid", 40, 1).status_code == 201


def test_unknown_broker_is_404_after_validation(client: AppClient) -> None:
    result = limit(client, "broker-999", "bid", 1, 1)
    assert result.status_code == 404
    assert result.json == {
        "error": "broker_not_found",
        "message": "Broker broker-999 does not exist",
    }
    result = limit(client, "broker-999", "bid", 1, 0)
    assert result.status_code == 400  # validation comes first


# -- orders: market ---------------------------------------------------------------


@pytest.fixture
def ask_ladder(client: AppClient, clock: ManualClock) -> AppClient:
    """A market order's book: asks 100 @ 10.00, 200 @ 11.00, 50 @ 12.00, a minute apart."""
    register(client, "S", 0, AAPL=350)
    register(client, "B", 100000)
    for price, quantity in ((10, 100), (11, 200), (12, 50)):
        assert limit(client, "S", "ask", price, quantity).status_code == 201
        clock.advance(seconds=60)
    return client


def test_market_buy_full_fill(ask_ladder: AppClient) -> None:
    result = market(ask_ladder, "B", "bid", 250)
    assert result.status_code == 201
    order = result.json
    assert set(order) == ORDER_KEYS
    assert (order["status"], order["filled_quantity"], order["cancelled_quantity"]) == (
        "filled", 250, 0,
    )  # fmt: skip
    assert '"average_price":10.60' in result.text
    assert [(t["price"], t["quantity"]) for t in order["trades"]] == [(10, 100), (11, 150)]
    assert {t["executed_at"] for t in order["trades"]} == {order["created_at"]}
    b = balance(ask_ladder, "B")
    assert (b["cash_balance"], b["reserved_cash"]) == (100000 - 2650, 0)


def test_market_buy_partial_fill_is_ioc_cancelled(ask_ladder: AppClient) -> None:
    result = market(ask_ladder, "B", "bid", 400)
    order = result.json
    assert (order["status"], order["filled_quantity"], order["remaining_quantity"]) == (
        "cancelled", 350, 0,
    )  # fmt: skip
    assert order["cancelled_quantity"] == 50
    assert '"average_price":10.85' in result.text
    assert len(order["trades"]) == 3
    assert balance(ask_ladder, "B")["cash_balance"] == 100000 - 3800
    cancel = ask_ladder.delete(f"/orders/{order['order_id']}")
    assert cancel.status_code == 409
    assert cancel.json["message"] == f"Order {order['order_id']} is already cancelled"


def test_market_no_liquidity(client: AppClient) -> None:
    register(client, "B", 100)
    result = market(client, "B", "bid", 100)
    assert result.status_code == 409
    assert result.json == {
        "error": "no_liquidity",
        "message": "No matching orders available for market order on AAPL",
    }


def test_market_bid_checks_the_simulated_sweep(ask_ladder: AppClient) -> None:
    register(ask_ladder, "poor", 2649.99)
    result = market(ask_ladder, "poor", "bid", 250)
    assert result.status_code == 409
    assert result.json["error"] == "insufficient_balance"
    register(ask_ladder, "exact", 2650)
    assert market(ask_ladder, "exact", "bid", 250).json["status"] == "filled"
    assert balance(ask_ladder, "exact")["cash_balance"] == 0


def test_market_sell_walks_bids(client: AppClient, clock: ManualClock) -> None:
    register(client, "B", 100000)
    register(client, "S", 0, AAPL=400)
    limit(client, "B", "bid", 50, 300)
    clock.advance(seconds=60)
    limit(client, "B", "bid", 49, 200)
    result = market(client, "S", "ask", 400)
    order = result.json
    assert order["status"] == "filled"
    assert '"average_price":49.75' in result.text
    assert [(t["price"], t["quantity"]) for t in order["trades"]] == [(50, 300), (49, 100)]
    assert balance(client, "S")["cash_balance"] == 19900


def test_market_ask_needs_full_quantity(client: AppClient) -> None:
    register(client, "B", 100000)
    register(client, "S", 0, AAPL=10)
    limit(client, "B", "bid", 50, 300)
    result = market(client, "S", "ask", 11)
    assert result.json["error"] == "insufficient_holdings"


# -- cancel -----------------------------------------------------------------------


def test_cancel_partly_filled_order(client: AppClient, clock: ManualClock) -> None:
    register(client, "B", 1_000_000)
    register(client, "S", 0, AAPL=500)
    bid = limit(client, "B", "bid", 148, 1000).json
    limit(client, "S", "ask", 148, 500)
    clock.advance(seconds=30)
    result = client.delete(f"/orders/{bid['order_id']}")
    assert result.status_code == 200
    order = result.json
    assert (order["status"], order["filled_quantity"], order["cancelled_quantity"]) == (
        "cancelled", 500, 500,
    )  # fmt: skip
    assert (order["remaining_quantity"], order["cancelled_at"], order["expired_at"]) == (
        0, "2026-02-17T09:00:30Z", None,
    )  # fmt: skip
    assert len(order["trades"]) == 1
    b = balance(client, "B")
    assert (b["cash_balance"], b["reserved_cash"]) == (1_000_000 - 74000, 0)
    again = client.delete(f"/orders/{bid['order_id']}")
    assert again.status_code == 409
    assert again.json == {
        "error": "order_not_cancellable",
        "message": f"Order {bid['order_id']} is already cancelled",
    }


def test_cancel_filled_and_unknown(client: AppClient) -> None:
    register(client, "B", 100000)
    register(client, "S", 0, AAPL=5)
    ask = limit(client, "S", "ask", 1, 5).json
    limit(client, "B", "bid", 1, 5)
    result = client.delete(f"/orders/{ask['order_id']}")
    assert result.status_code == 409
    assert result.json["message"] == (
        f"Order {ask['order_id']} is already filled and cannot be cancelled"
    )
    result = client.delete("/orders/ord-nonexistent")
    assert result.status_code == 404
    assert result.json == {
        "error": "order_not_found",
        "message": "Order ord-nonexistent does not exist",
    }
    assert client.get("/orders/not-an-id").json["error"] == "order_not_found"


# -- expiration -------------------------------------------------------------------


def test_expiry_by_the_clock(client: AppClient, clock: ManualClock, exchange: Any) -> None:
    register(client, "S", 0, AAPL=100)
    ask = limit(client, "S", "ask", 200, 100, expires_at="2026-02-17T09:00:10.5Z").json
    assert balance(client, "S")["holdings"][0]["reserved_quantity"] == 100
    clock.advance(seconds=10)
    assert run_expiration(exchange) == []
    assert client.get(f"/orders/{ask['order_id']}").json["status"] == "pending"
    clock.advance(seconds=1)
    assert run_expiration(exchange) == ["AAPL"]
    order = client.get(f"/orders/{ask['order_id']}").json
    assert (order["status"], order["cancelled_quantity"], order["remaining_quantity"]) == (
        "expired", 100, 0,
    )  # fmt: skip
    assert order["expired_at"] == "2026-02-17T09:00:10Z"  # = expires_at, truncated
    assert balance(client, "S")["holdings"][0]["reserved_quantity"] == 0
    result = client.delete(f"/orders/{ask['order_id']}")
    assert result.json["message"] == (
        f"Order {ask['order_id']} is already expired and cannot be cancelled"
    )


def test_due_order_never_trades_between_sweeps(client: AppClient, clock: ManualClock) -> None:
    register(client, "S", 0, AAPL=100)
    register(client, "B", 100000)
    ask = limit(client, "S", "ask", 10, 100, expires_at="2026-02-17T09:00:05Z").json
    clock.advance(seconds=5)
    bid = limit(client, "B", "bid", 10, 100).json
    assert bid["status"] == "pending"
    assert client.get(f"/orders/{ask['order_id']}").json["status"] == "expired"
    result = market(client, "B", "bid", 1)
    assert result.json["error"] == "no_liquidity"


@pytest.mark.parametrize("side", ["bid", "ask"])
def test_funds_held_by_a_due_order_are_freed_before_the_check(
    client: AppClient, clock: ManualClock, side: str
) -> None:
    """Expire the due orders, then check funds: the funds of a due but not yet
    swept order pay for the next one on that symbol (the account actor sends the order
    through the symbol actor to expire it first), and not on another symbol."""
    register(client, "B", 1000, AAPL=10)
    first = limit(
        client, "B", side, 100 if side == "bid" else 1, 10, expires_at="2026-02-17T09:00:05Z"
    )
    assert first.status_code == 201
    clock.advance(seconds=5)
    elsewhere = limit(client, "B", side, 100 if side == "bid" else 1, 1, symbol="GOOG")
    assert elsewhere.status_code == 409  # GOOG's book cannot free what AAPL holds
    second = limit(client, "B", side, 100 if side == "bid" else 1, 10)
    assert second.status_code == 201, second.json
    assert client.get(f"/orders/{first.json['order_id']}").json["status"] == "expired"
    b = balance(client, "B")
    if side == "bid":
        assert (b["reserved_cash"], b["available_cash"]) == (1000, 0)
    else:
        assert b["holdings"] == [
            {"symbol": "AAPL", "quantity": 10, "reserved_quantity": 10, "available_quantity": 0}
        ]


def test_expires_at_must_be_in_the_future(client: AppClient) -> None:
    register(client, "B", 100000)
    result = limit(client, "B", "bid", 1, 1, expires_at="2026-02-17T09:00:00Z")
    assert result.status_code == 400
    assert result.json == {
        "error": "validation_error",
        "message": "expires_at must be a future timestamp",
    }


# -- bad input leaves the state alone ---------------------------------------------


@pytest.mark.parametrize(
    "headers,body",
    [
        ({"Content-Type": "text/plain"}, '{"broker_id": "x", "initial_cash": 1}'),
        (None, '{"broker_id": "x", "initial_cash": 1}'),
        ({"Content-Type": "application/json"}, "{"),
        ({"Content-Type": "application/json"}, "[]"),
        ({"Content-Type": "application/json"}, ""),
        ({"Content-Type": "application/json"}, '{"initial_cash": NaN}'),
    ],
)
def test_invalid_request_bodies(client: AppClient, headers: Any, body: str) -> None:
    result = client.post("/brokers", body=body, headers=headers)
    assert result.status_code == 400
    assert result.json == {
        "error": "invalid_request",
        "message": "Request body must be valid JSON with Content-Type: application/json",
    }


def test_charset_parameter_is_accepted(client: AppClient) -> None:
    result = client.post(
        "/brokers",
        body='{"broker_id": "x", "initial_cash": 1}',
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert result.status_code == 201


def test_body_over_one_mebibyte_is_413(client: AppClient) -> None:
    body = '{"broker_id": "x", "pad": "' + "a" * 1_048_576 + '"}'
    result = client.post("/orders", body=body, headers={"Content-Type": "text/plain"})
    assert result.status_code == 413
    assert result.json == {
        "error": "payload_too_large",
        "message": "Request body must not exceed 1048576 bytes",
    }


@pytest.mark.parametrize(
    "change,message",
    [
        ({"quantity": "10"}, "quantity must be an integer"),
        ({"quantity": True}, "quantity must be an integer"),
        ({"quantity": 10.5}, "quantity must be an integer"),
        ({"quantity": 0}, "quantity must be > 0"),
        ({"quantity": -3}, "quantity must be > 0"),
        ({"quantity": 2**70}, "quantity must be <= 1000000000"),
        ({"price": 10.005}, "Monetary values must have at most 2 decimal places"),
        ({"price": "150.00"}, "price must be a number"),
        ({"price": 1e9}, "price must be <= 1000000.00"),
        ({"broker_id": "b" * 65}, "broker_id must match ^[a-zA-Z0-9_-]{1,64}$"),
        ({"symbol": "aapl"}, "symbol must match ^[A-Z]{1,10}$"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at must be a future timestamp"),
        ({"expires_at": "tomorrow"}, "expires_at must be a valid RFC 3339 timestamp"),
        ({"type": "stop_loss"}, "Unknown order type: stop_loss. Must be one of: limit, market"),
        ({"side": "buy"}, "Invalid side: 'buy'. Must be one of: bid, ask"),
        ({"side": None}, "side is required"),
    ],
)
def test_bad_order_fields_change_nothing(
    client: AppClient, change: dict[str, Any], message: str
) -> None:
    register(client, "b1", 1000, AAPL=10)
    body = {
        "type": "limit", "broker_id": "b1", "document_number": "1", "side": "bid",
        "symbol": "AAPL", "price": 1, "quantity": 1, "expires_at": FAR,
    } | change  # fmt: skip
    result = client.post("/orders", json=body)
    assert result.status_code == 400
    assert result.json == {"error": "validation_error", "message": message}
    assert balance(client, "b1")["reserved_cash"] == 0
    assert client.get("/healthz").status_code == 200


def test_market_order_with_price_is_rejected(client: AppClient) -> None:
    register(client, "b1", 1000)
    body = {
        "type": "market", "broker_id": "b1", "document_number": "1", "side": "bid",
        "symbol": "AAPL", "quantity": 1, "price": 10,
    }  # fmt: skip
    result = client.post("/orders", json=body)
    assert result.json["message"] == "price must be null or omitted for market orders"
    body = body | {"price": None, "expires_at": FAR}
    result = client.post("/orders", json=body)
    assert result.json["message"] == "expires_at must be null or omitted for market orders"
