"""Idempotent retries with `Idempotency-Key` on the three POSTs (contract §6.1)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pykka
import pytest

from miniexchange.actors.exchange import Exchange
from miniexchange.http.app import create_app
from miniexchange.journal.store import SqliteJournal
from miniexchange.settings import load_settings
from miniexchange.testing import FakeDeliveries, ManualClock, SequentialIds
from tests.conftest import AppClient
from tests.http.helpers import FAR, balance, register

JSON = {"Content-Type": "application/json"}


def keyed(key: str) -> dict[str, str]:
    return {**JSON, "Idempotency-Key": key}


def order_body(**change: Any) -> dict[str, Any]:
    return {
        "type": "limit", "broker_id": "b1", "document_number": "1", "side": "bid",
        "symbol": "AAPL", "price": 10, "quantity": 5, "expires_at": FAR,
    } | change  # fmt: skip


def test_order_replay_is_byte_for_byte_and_places_nothing(client: AppClient) -> None:
    register(client, "b1", 1000)
    first = client.post("/orders", json=order_body(), headers=keyed("k-1"))
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    again = client.post("/orders", json=order_body(price=10.0), headers=keyed("k-1"))
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    listing = client.get("/brokers/b1/orders").json
    assert listing["total"] == 1
    assert balance(client, "b1")["reserved_cash"] == 50


def test_replay_returns_the_first_answer_not_the_current_state(
    client: AppClient, clock: ManualClock
) -> None:
    register(client, "b1", 1000)
    register(client, "s1", 0, AAPL=5)
    first = client.post("/orders", json=order_body(), headers=keyed("k"))
    client.post("/orders", json=order_body(broker_id="s1", side="ask"))
    clock.advance(seconds=60)
    again = client.post("/orders", json=order_body(), headers=keyed("k"))
    assert again.content == first.content
    assert again.json["status"] == "pending"
    order_id = first.json["order_id"]
    assert client.get(f"/orders/{order_id}").json["status"] == "filled"


def test_reuse_with_another_body_is_422(client: AppClient) -> None:
    register(client, "b1", 1000)
    client.post("/orders", json=order_body(), headers=keyed("k"))
    result = client.post("/orders", json=order_body(quantity=6), headers=keyed("k"))
    assert result.status_code == 422
    assert result.json == {
        "error": "idempotency_key_reused",
        "message": "Idempotency-Key k was already used with a different request",
    }
    assert client.get("/brokers/b1/orders").json["total"] == 1


def test_a_400_is_not_kept_so_a_fixed_retry_succeeds(client: AppClient) -> None:
    register(client, "b1", 1000)
    bad = client.post("/orders", json=order_body(quantity=0), headers=keyed("k"))
    assert bad.status_code == 400
    fixed = client.post("/orders", json=order_body(), headers=keyed("k"))
    assert fixed.status_code == 201
    assert "idempotent-replayed" not in fixed.headers


@pytest.mark.parametrize(
    "body,code",
    [
        (order_body(broker_id="ghost"), "broker_not_found"),
        (order_body(quantity=1000), "insufficient_balance"),
        (order_body(type="market", price=None, expires_at=None, symbol="MSFT"), "no_liquidity"),
    ],
)
def test_refusals_of_steps_7_and_8_are_kept(client: AppClient, body: Any, code: str) -> None:
    register(client, "b1", 1000)
    first = client.post("/orders", json=body, headers=keyed("k"))
    assert first.json["error"] == code
    register(client, "ghost", 10**6)  # the world changed; the answer does not
    again = client.post("/orders", json=body, headers=keyed("k"))
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["idempotent-replayed"] == "true"


def test_key_check(client: AppClient) -> None:
    register(client, "b1", 1000)
    message = {
        "error": "validation_error",
        "message": "Idempotency-Key must be 1 to 255 visible ASCII characters",
    }
    for key in ("", "a" * 256, "has space", "tab\tinside"):
        result = client.post("/orders", json=order_body(), headers=keyed(key))
        assert (result.status_code, result.json) == (400, message), key
    padded = client.post("/orders", json=order_body(), headers=keyed("  k \t"))
    assert padded.status_code == 201
    again = client.post("/orders", json=order_body(), headers=keyed("k"))
    assert again.headers["idempotent-replayed"] == "true"


def test_key_is_checked_after_the_body_and_before_the_fields(client: AppClient) -> None:
    result = client.post("/orders", body="{", headers=keyed(" "))
    assert result.json["error"] == "invalid_request"
    result = client.post("/orders", json={"type": "nope"}, headers=keyed(""))
    assert result.json["message"] == "Idempotency-Key must be 1 to 255 visible ASCII characters"


def test_keys_belong_to_one_endpoint_and_expire(client: AppClient, clock: ManualClock) -> None:
    broker = {"broker_id": "b2", "initial_cash": 5}
    assert client.post("/brokers", json=broker, headers=keyed("same")).status_code == 201
    register(client, "b1", 1000)
    assert client.post("/orders", json=order_body(), headers=keyed("same")).status_code == 201
    clock.advance(seconds=24 * 3600 - 1)
    again = client.post("/brokers", json=broker, headers=keyed("same"))
    assert (again.status_code, again.headers["idempotent-replayed"]) == (201, "true")
    clock.advance(seconds=1)
    later = client.post("/brokers", json=broker, headers=keyed("same"))
    assert later.status_code == 409  # forgotten after IDEMPOTENCY_TTL: a first use again
    assert later.json["error"] == "broker_already_exists"


def test_broker_and_webhook_replays(client: AppClient) -> None:
    broker = {"broker_id": "b1", "initial_cash": 5}
    first = client.post("/brokers", json=broker, headers=keyed("r"))
    again = client.post("/brokers", json=broker, headers=keyed("r"))
    assert (again.status_code, again.content) == (201, first.content)
    hook = {"broker_id": "b1", "url": "https://example.com/h", "events": ["trade.executed"]}
    created = client.post("/webhooks", json=hook, headers=keyed("w"))
    replay = client.post("/webhooks", json=hook, headers=keyed("w"))
    assert (created.status_code, replay.status_code) == (201, 201)
    assert replay.content == created.content
    assert len(client.get("/webhooks", query="broker_id=b1").json["webhooks"]) == 1
    plain = client.post("/webhooks", json=hook)
    assert plain.status_code == 200  # without a key: the real upsert, a no-op


def test_concurrent_duplicates_place_exactly_one_order(client: AppClient) -> None:
    register(client, "b1", 1000)
    results: list[Any] = []

    def post() -> None:
        results.append(client.post("/orders", json=order_body(), headers=keyed("dup")))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(result.status_code for result in results)
    assert set(statuses) <= {201, 409}
    created = [r for r in results if r.status_code == 201]
    assert len({r.content for r in created}) == 1
    for result in results:
        if result.status_code == 409:
            assert result.json["error"] == "idempotency_key_in_progress"
    assert client.get("/brokers/b1/orders").json["total"] == 1


def test_replay_after_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.db")
    clock = ManualClock.at("2026-02-17T09:00:00Z")

    def start() -> AppClient:
        exchange = Exchange(
            clock, SequentialIds(), expiration_interval_s=None, journal=SqliteJournal(path)
        )
        return AppClient(create_app(load_settings({}), clock=clock, exchange=exchange))

    client = start()
    register(client, "b1", 1000)
    first = client.post("/orders", json=order_body(), headers=keyed("after-crash"))
    refused = client.post("/orders", json=order_body(quantity=999), headers=keyed("too-big"))
    client.close()
    pykka.ActorRegistry.stop_all()

    client = start()
    try:
        again = client.post("/orders", json=order_body(), headers=keyed("after-crash"))
        assert (again.status_code, again.content) == (201, first.content)
        assert again.headers["idempotent-replayed"] == "true"
        still = client.post("/orders", json=order_body(quantity=999), headers=keyed("too-big"))
        assert (still.status_code, still.content) == (409, refused.content)
        assert client.get("/brokers/b1/orders").json["total"] == 1
    finally:
        client.close()
        pykka.ActorRegistry.stop_all()


@pytest.fixture
def deliveries() -> FakeDeliveries:
    """Webhooks recorded instead of sent (the shared `exchange` fixture takes them)."""
    return FakeDeliveries()


def test_a_replay_sends_no_second_webhook(client: AppClient, deliveries: FakeDeliveries) -> None:
    register(client, "b1", 1000)
    register(client, "s1", 0, AAPL=10)
    hook = {"broker_id": "b1", "url": "https://example.com/h", "events": ["trade.executed"]}
    assert client.post("/webhooks", json=hook).status_code == 201
    client.post("/orders", json=order_body(broker_id="s1", side="ask", quantity=10))
    first = client.post("/orders", json=order_body(), headers=keyed("trade"))
    assert deliveries.get().event_type == "trade.executed"
    again = client.post("/orders", json=order_body(), headers=keyed("trade"))
    assert again.headers["idempotent-replayed"] == "true"
    client.post("/orders", json=order_body(quantity=2))  # a new trade: the next delivery
    following = deliveries.get()  # had the replay traded, its delivery would come first
    assert orjson.loads(following.body)["data"]["trade_quantity"] == 2
    assert len(deliveries.recorded()) == 2
    assert first.json["status"] == "filled"
