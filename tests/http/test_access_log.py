"""The access log: one `info` line per request with its request id, method,
route template, path, status and duration; an event stream logged once, when it ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from falcon import testing

from miniexchange.logs import RequestIdFilter
from tests.conftest import AppClient
from tests.http.helpers import limit, register

ACCESS_FIELDS = {"request_id", "method", "route", "path", "status", "duration_ms"}


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at `info`, with the request-id filter the served app's handler has."""
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO):
        yield caplog


def lines(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def fields(record: logging.LogRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in ACCESS_FIELDS}


def test_one_line_per_request_with_every_field(
    client: AppClient, logged: pytest.LogCaptureFixture
) -> None:
    register(client, "B", 1_000_000)
    order_id = limit(client, "B", "bid", 10, 1).json["order_id"]
    logged.clear()
    client.get(f"/orders/{order_id}", headers={"X-Request-Id": "one"})
    client.get("/no/such/thing", headers={"X-Request-Id": "two"})
    client.request("PUT", "/orders", headers={"X-Request-Id": "three"})
    client.get("/healthz", headers={"X-Request-Id": "four"})  # logged, though not counted
    records = lines(logged, "request")
    assert [fields(r) | {"duration_ms": 0} for r in records] == [
        {"request_id": "one", "method": "GET", "route": "/orders/{order_id}",
         "path": f"/orders/{order_id}", "status": 200, "duration_ms": 0},
        {"request_id": "two", "method": "GET", "route": "not_found",
         "path": "/no/such/thing", "status": 404, "duration_ms": 0},
        {"request_id": "three", "method": "PUT", "route": "/orders",
         "path": "/orders", "status": 405, "duration_ms": 0},
        {"request_id": "four", "method": "GET", "route": "/healthz",
         "path": "/healthz", "status": 200, "duration_ms": 0},
    ]  # fmt: skip
    for record in records:
        assert record.levelno == logging.INFO and record.name == "miniexchange.http"
        assert isinstance(record.duration_ms, float) and record.duration_ms >= 0  # type: ignore[attr-defined]
    assert records[0].getMessage() == f"GET /orders/{order_id} 200"


def test_the_generated_id_is_the_one_logged(
    client: AppClient, logged: pytest.LogCaptureFixture
) -> None:
    result = client.get("/healthz")
    (record,) = lines(logged, "request")
    assert record.request_id == result.headers["x-request-id"]  # type: ignore[attr-defined]


def test_the_query_string_is_not_part_of_the_path(
    client: AppClient, logged: pytest.LogCaptureFixture
) -> None:
    client.get("/webhooks", query="broker_id=nobody")
    (record,) = lines(logged, "request")
    assert (record.path, record.route, record.status) == ("/webhooks", "/webhooks", 404)  # type: ignore[attr-defined]


def test_bodies_are_never_logged(client: AppClient, logged: pytest.LogCaptureFixture) -> None:
    secret_ish = "document-number-998877"
    register(client, "B", 1_000_000)
    body = {
        "type": "limit", "broker_id": "B", "document_number": secret_ish, "side": "bid",
        "symbol": "AAPL", "price": 10, "quantity": 1, "expires_at": "2026-02-20T18:00:00Z",
    }  # fmt: skip
    client.post("/orders", json=body)
    client.post("/orders", json={**body, "quantity": "nope"})
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in logged.records)
    assert secret_ish not in text


@pytest.fixture
def streaming(client: AppClient) -> AppClient:
    register(client, "S", 0, AAPL=100)
    return client


def test_an_event_stream_is_logged_once_when_it_ends_with_its_request_id(
    streaming: AppClient, logged: pytest.LogCaptureFixture
) -> None:
    async def watch(conductor: testing.ASGIConductor) -> int:
        headers = {"X-Request-Id": "the-stream"}
        async with conductor.simulate_get_stream("/stocks/AAPL/stream", headers=headers) as result:
            while not await result.stream.read():
                pass
            return len(lines(logged, "request")) + len(lines(logged, "stream"))

    assert streaming.run(watch) == 0  # nothing logged while it is open
    deadline = time.monotonic() + 60
    while not lines(logged, "stream"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (ended,) = lines(logged, "stream")
    assert lines(logged, "request") == []
    logged_fields = vars(ended)
    assert logged_fields["request_id"] == "the-stream"
    assert (logged_fields["route"], logged_fields["path"], logged_fields["status"]) == (
        "/stocks/{symbol}/stream",
        "/stocks/AAPL/stream",
        200,
    )
