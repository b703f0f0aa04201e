"""`X-Request-Id`: echoed when usable (1 to 128 characters from `[A-Za-z0-9._:-]`), else a
new UUID4, on every response (successes, refusals, 404 and 405 from routing, 204), and
carried to what the request causes: its log lines and the webhook deliveries of its events.

Webhooks here go to a `FakeDeliveries` (the module's `deliveries` fixture), which records
them and sends nothing: the subscriptions' URLs are never called."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import pytest

from miniexchange.actors.exchange import Exchange
from miniexchange.http.observability import request_id_of
from miniexchange.logs import RequestIdFilter
from miniexchange.testing import FakeDeliveries, ManualClock, run_expiration
from tests.conftest import AppClient
from tests.http.helpers import FAR, limit, register

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
USABLE = [
    "a",
    "req-42",
    "A.b_c:d-E",
    "0123456789" * 12 + "01234567",  # 128 characters
    "trace:4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7",
]
UNUSABLE = [
    "",
    "x" * 129,
    "has space",
    "slash/es",
    "comma,separated",
    "semi;colon",
    'quote"d',
    "tab\tbed",
    "caf\u00e9",  # non-ASCII letter
    "brace{}",
    "plus+sign",
]


def request_id(result: Any) -> str:
    value = result.headers.get("x-request-id")
    assert value is not None, f"{result.status_code} without X-Request-Id"
    return value


def assert_generated(value: str) -> None:
    assert UUID4.fullmatch(value), value
    assert uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value


@pytest.fixture
def deliveries() -> FakeDeliveries:
    """Webhooks recorded instead of sent (the shared `exchange` fixture takes them)."""
    return FakeDeliveries()


# -- the rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", USABLE)
def test_a_usable_id_is_echoed(client: AppClient, value: str) -> None:
    assert request_id(client.get("/healthz", headers={"X-Request-Id": value})) == value


def test_without_an_id_a_lowercase_uuid4_is_generated_per_request(client: AppClient) -> None:
    ids = [request_id(client.get("/healthz")) for _ in range(5)]
    for value in ids:
        assert_generated(value)
    assert len(set(ids)) == 5


@pytest.mark.parametrize("value", UNUSABLE)
def test_an_unusable_id_is_replaced_silently(client: AppClient, value: str) -> None:
    result = client.get("/healthz", headers={"X-Request-Id": value})
    assert result.status_code == 200  # never an error
    assert_generated(request_id(result))


def test_two_id_fields_are_replaced(client: AppClient) -> None:
    headers = [("X-Request-Id", "first"), ("X-Request-Id", "second")]
    result = client.request("GET", "/healthz", headers=headers)  # type: ignore[arg-type]
    assert_generated(request_id(result))


def test_the_header_name_is_case_insensitive(client: AppClient) -> None:
    assert request_id(client.get("/healthz", headers={"x-request-id": "lower"})) == "lower"


@pytest.mark.parametrize("value", ["", "x" * 129, "a b", "\u00e9", "a,b", "1" * 128 + "\n"])
def test_request_id_of_replaces_unusable_values(value: str) -> None:
    assert_generated(request_id_of(value))


def test_request_id_of_keeps_the_limits() -> None:
    assert request_id_of("x") == "x"
    assert request_id_of("x" * 128) == "x" * 128
    assert_generated(request_id_of(None))


# -- on every response ------------------------------------------------------------------


def order(broker_id: str = "B", side: str = "bid", quantity: int = 1, **fields: Any) -> Any:
    return {
        "type": "limit", "broker_id": broker_id, "document_number": "1", "side": side,
        "symbol": "AAPL", "price": 10, "quantity": quantity, "expires_at": FAR, **fields,
    }  # fmt: skip


JSON = {"Content-Type": "application/json"}


def test_on_successes_refusals_routing_errors_and_204(client: AppClient) -> None:
    register(client, "B", 1_000_000)
    subscription = {
        "broker_id": "B",
        "url": "https://example.com/hook",
        "events": ["order.expired"],
    }
    webhook = client.post("/webhooks", json=subscription).json["webhooks"][0]["webhook_id"]
    calls: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/healthz", {}, 200),
        ("POST", "/orders", {"json": order()}, 201),
        ("POST", "/orders", {"body": "{not json", "headers": JSON}, 400),
        ("POST", "/orders", {"json": order(quantity=0)}, 400),
        ("POST", "/orders", {"json": order("nobody")}, 404),
        ("GET", "/orders/no-such-order", {}, 404),
        ("GET", "/no/such/route", {}, 404),
        ("GET", "/orders/", {}, 404),  # refused by a middleware, before routing
        ("PUT", "/orders", {}, 405),
        ("HEAD", "/healthz", {}, 405),
        ("POST", "/brokers", {"json": {"broker_id": "B", "initial_cash": 1}}, 409),
        ("POST", "/orders", {"json": order(side="ask")}, 409),
        ("POST", "/orders", {"body": b"x" * 1_048_577, "headers": JSON}, 413),
        ("DELETE", f"/webhooks/{webhook}", {}, 204),
        ("DELETE", f"/webhooks/{webhook}", {}, 404),
        ("GET", "/metrics", {}, 200),
    ]
    for n, (method, path, kwargs, status) in enumerate(calls):
        sent = f"call-{n}"
        headers = {**kwargs.get("headers", {}), "X-Request-Id": sent}
        result = client.request(method, path, **{**kwargs, "headers": headers})
        assert result.status_code == status, (method, path, result.text)
        assert request_id(result) == sent, (method, path)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/orders/none", 404),
        ("GET", "/nowhere", 404),
        ("GET", "/orders/", 404),
        ("DELETE", "/orders", 405),
        ("POST", "/orders", 400),
    ],
)
def test_generated_on_refusals_too(client: AppClient, method: str, path: str, status: int) -> None:
    result = client.request(method, path)
    assert result.status_code == status
    assert_generated(request_id(result))


def test_an_internal_error_carries_it_too(
    client: AppClient, exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(broker_id: str, reply: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(exchange, "read_balance", broken)
    result = client.get("/brokers/B/balance", headers={"X-Request-Id": "oops"})
    assert result.status_code == 500
    assert request_id(result) == "oops"


# -- in what the request causes ----------------------------------------------------------


def test_log_lines_written_while_handling_carry_it(
    client: AppClient, caplog: pytest.LogCaptureFixture, exchange: Exchange
) -> None:
    """Any line logged during the request (here the 500's error line) gets its id from
    the request's context through the filter the served app's log handler has."""

    def broken(broker_id: str, reply: object) -> None:
        raise RuntimeError("boom")

    exchange.read_balance = broken  # type: ignore[method-assign]
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO):
        client.get("/brokers/B/balance", headers={"X-Request-Id": "traced"})
    lines = [r for r in caplog.records if r.name == "miniexchange.http"]
    assert [getattr(r, "event", None) for r in lines] == [None, "request"]
    assert all(getattr(r, "request_id", None) == "traced" for r in lines)
    # and nothing leaks into a later request's lines
    caplog.clear()
    with caplog.at_level(logging.INFO):
        client.get("/healthz", headers={"X-Request-Id": "next"})
    assert {getattr(r, "request_id", None) for r in caplog.records} == {"next"}


def test_an_expiry_delivery_has_no_request_id(
    client: AppClient, clock: ManualClock, exchange: Exchange, deliveries: FakeDeliveries
) -> None:
    register(client, "B", 1_000_000)
    client.post(
        "/webhooks",
        json={"broker_id": "B", "url": "https://example.com/h", "events": ["order.expired"]},
    )
    placed = limit(client, "B", "bid", 10, 1, expires_at="2026-02-17T09:00:01Z")
    assert placed.status_code == 201
    clock.advance(seconds=2)
    run_expiration(exchange)
    delivery = deliveries.get()
    assert delivery.event_type == "order.expired" and delivery.request_id is None


def test_deliveries_carry_the_id_of_the_request_that_caused_them(
    client: AppClient, deliveries: FakeDeliveries
) -> None:
    register(client, "S", 0, AAPL=100)
    register(client, "B", 1_000_000)
    for broker in ("S", "B"):
        client.post(
            "/webhooks",
            json={"broker_id": broker, "url": "https://example.com/h", "events": ["trade.executed", "order.cancelled"]},
        )  # fmt: skip
    resting = client.post("/orders", json=order("S", "ask", 5)).json["order_id"]
    client.post("/orders", json=order("B", "bid", 2), headers={"X-Request-Id": "the-buy"})
    both = [deliveries.get(), deliveries.get()]
    assert {(d.event_type, d.request_id) for d in both} == {("trade.executed", "the-buy")}
    client.delete(f"/orders/{resting}", headers={"X-Request-Id": "the-cancel"})
    cancelled = deliveries.get()
    assert (cancelled.event_type, cancelled.request_id) == ("order.cancelled", "the-cancel")
