"""Every outcome of POST/GET/DELETE /webhooks through the ASGI app, and
which deliveries the app's events produce (recorded by a fake pool: no network here)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from miniexchange.actors.exchange import Exchange
from miniexchange.testing import FakeDeliveries, ManualClock, run_expiration
from tests.conftest import START, AppClient
from tests.http.helpers import limit, market, register

URL = "https://broker-system.example.com/trade-notifications"
NEW_URL = "https://new-url.example.com/notifications"
ALL_EVENTS = ["trade.executed", "order.expired", "order.cancelled"]
ENTRY_KEYS = {"webhook_id", "broker_id", "event", "url", "created_at", "updated_at"}
LATER = "2026-02-17T09:00:10Z"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def deliveries() -> FakeDeliveries:
    """Webhooks recorded instead of sent (the shared `exchange` fixture takes them)."""
    return FakeDeliveries()


@pytest.fixture
def broker(client: AppClient) -> str:
    register(client, "broker-123", 1_000_000, AAPL=5000)
    return "broker-123"


def subscribe(
    client: AppClient, broker_id: str = "broker-123", url: str = URL, events: Any = None
) -> Any:
    events = ALL_EVENTS if events is None else events
    return client.post("/webhooks", json={"broker_id": broker_id, "url": url, "events": events})


def listed(client: AppClient, broker_id: str = "broker-123") -> list[dict[str, Any]]:
    result = client.get("/webhooks", query=f"broker_id={broker_id}")
    assert result.status_code == 200, result.text
    return result.json["webhooks"]


def error(result: Any, status: int, code: str, message: str) -> None:
    assert result.status_code == status, result.text
    assert result.json == {"error": code, "message": message}


# -- POST /webhooks: the upsert table -------------------------------------------------


def test_all_events_new_is_201_with_fresh_entries_in_request_order(
    client: AppClient, broker: str
) -> None:
    result = subscribe(client)
    assert result.status_code == 201
    assert result.headers["content-type"] == "application/json"
    entries = result.json["webhooks"]
    assert [entry["event"] for entry in entries] == ALL_EVENTS
    for entry in entries:
        assert set(entry) == ENTRY_KEYS
        assert entry["webhook_id"].startswith("wh-")
        assert (entry["broker_id"], entry["url"]) == (broker, URL)
        assert entry["created_at"] == entry["updated_at"] == START
    assert len({entry["webhook_id"] for entry in entries}) == 3


def test_repeated_events_are_merged_in_order_of_first_appearance(
    client: AppClient, broker: str
) -> None:
    result = subscribe(
        client, events=["order.expired", "trade.executed", "order.expired", "trade.executed"]
    )
    assert result.status_code == 201
    assert [entry["event"] for entry in result.json["webhooks"]] == [
        "order.expired",
        "trade.executed",
    ]


def test_all_existing_same_url_is_200_and_unchanged(
    client: AppClient, clock: ManualClock, broker: str
) -> None:
    first = subscribe(client).json["webhooks"]
    clock.advance(seconds=10)
    result = subscribe(client)
    assert result.status_code == 200
    assert result.json["webhooks"] == first


def test_all_existing_url_changed_is_200_with_new_url_and_updated_at(
    client: AppClient, clock: ManualClock, broker: str
) -> None:
    first = subscribe(client).json["webhooks"]
    clock.advance(seconds=10)
    result = subscribe(client, url=NEW_URL)
    assert result.status_code == 200
    assert result.json["webhooks"] == [
        {**entry, "url": NEW_URL, "updated_at": LATER} for entry in first
    ]


def test_some_new_some_existing_is_201(client: AppClient, clock: ManualClock, broker: str) -> None:
    """The contract's example: trade.executed existed with another URL."""
    existing = subscribe(client, events=["trade.executed"]).json["webhooks"][0]
    clock.advance(seconds=10)
    result = subscribe(client, url=NEW_URL)
    assert result.status_code == 201
    updated, expired, cancelled = result.json["webhooks"]
    assert updated == {**existing, "url": NEW_URL, "updated_at": LATER}
    for entry, event in ((expired, "order.expired"), (cancelled, "order.cancelled")):
        assert entry["event"] == event
        assert entry["url"] == NEW_URL
        assert entry["created_at"] == entry["updated_at"] == LATER
        assert entry["webhook_id"] != existing["webhook_id"]


def test_some_existing_same_url_some_new_is_201_and_keeps_updated_at(
    client: AppClient, clock: ManualClock, broker: str
) -> None:
    existing = subscribe(client, events=["order.expired"]).json["webhooks"][0]
    clock.advance(seconds=10)
    result = subscribe(client, events=["order.expired", "order.cancelled"])
    assert result.status_code == 201
    assert result.json["webhooks"][0] == existing


def test_events_not_requested_are_untouched_and_not_returned(
    client: AppClient, clock: ManualClock, broker: str
) -> None:
    first = subscribe(client).json["webhooks"]
    clock.advance(seconds=10)
    result = subscribe(client, url=NEW_URL, events=["order.cancelled"])
    assert result.status_code == 200
    assert [entry["event"] for entry in result.json["webhooks"]] == ["order.cancelled"]
    assert listed(client)[:2] == first[:2]


def test_each_broker_has_its_own_subscriptions(client: AppClient, broker: str) -> None:
    register(client, "other", 0)
    mine = subscribe(client, events=["trade.executed"]).json["webhooks"][0]
    result = subscribe(client, "other", NEW_URL, ["trade.executed"])
    assert result.status_code == 201
    theirs = result.json["webhooks"][0]
    assert theirs["webhook_id"] != mine["webhook_id"]
    assert listed(client) == [mine]
    assert listed(client, "other") == [theirs]


def test_money_free_body_is_exact_json(client: AppClient, broker: str) -> None:
    result = subscribe(client, events=["order.expired"])
    assert result.text == (
        '{"webhooks":[{"webhook_id":"wh-00000000-0000-4000-8000-000000000001",'
        '"broker_id":"broker-123","event":"order.expired",'
        '"url":"https://broker-system.example.com/trade-notifications",'
        '"created_at":"2026-02-17T09:00:00Z","updated_at":"2026-02-17T09:00:00Z"}]}'
    )


# -- POST /webhooks: refusals ---------------------------------------------------------


@pytest.mark.parametrize(
    "headers,body",
    [
        ({}, '{"broker_id": "broker-123"}'),
        ({"Content-Type": "text/plain"}, '{"broker_id": "broker-123"}'),
        (JSON, "{"),
        (JSON, "[]"),
        (JSON, ""),
    ],
)
def test_not_a_json_object_is_invalid_request(
    client: AppClient, broker: str, headers: dict[str, str], body: str
) -> None:
    result = client.post("/webhooks", body=body, headers=headers)
    error(
        result,
        400,
        "invalid_request",
        "Request body must be valid JSON with Content-Type: application/json",
    )


def test_body_over_the_limit_is_413(client: AppClient) -> None:
    result = client.post("/webhooks", body=" " * 1_048_577, headers=JSON)
    error(result, 413, "payload_too_large", "Request body must not exceed 1048576 bytes")


@pytest.mark.parametrize(
    "body,message",
    [
        ({"url": URL, "events": ALL_EVENTS}, "broker_id is required"),
        ({"broker_id": None, "url": URL, "events": ALL_EVENTS}, "broker_id is required"),
        ({"broker_id": 7, "url": URL, "events": ALL_EVENTS}, "broker_id must be a string"),
        ({"broker_id": "broker-123", "events": ALL_EVENTS}, "url is required"),
        ({"broker_id": "broker-123", "url": 5, "events": ALL_EVENTS}, "url must be a string"),
        (
            {"broker_id": "broker-123", "url": "https://a.example/" + "x" * 2031, "events": []},
            "url must be at most 2048 characters",
        ),
        ({"broker_id": "broker-123", "url": "not a url"}, "url must be a valid absolute URL"),
        ({"broker_id": "broker-123", "url": "https://"}, "url must be a valid absolute URL"),
        ({"broker_id": "broker-123", "url": "/relative"}, "url must be a valid absolute URL"),
        ({"broker_id": "broker-123", "url": "http://a.example/x"}, "url must use https scheme"),
        ({"broker_id": "broker-123", "url": "ftp://a.example/x"}, "url must use https scheme"),
        ({"broker_id": "broker-123", "url": URL}, "events is required"),
        ({"broker_id": "broker-123", "url": URL, "events": []}, "events must be a non-empty array"),
        (
            {"broker_id": "broker-123", "url": URL, "events": "trade.executed"},
            "events must be a non-empty array",
        ),
        (
            {"broker_id": "broker-123", "url": URL, "events": ["trade.executed", 1]},
            "events must be a non-empty array",
        ),
        (
            {"broker_id": "broker-123", "url": URL, "events": ["trade.executed", "trade.matched"]},
            "Unknown event type: trade.matched. "
            "Must be one of: trade.executed, order.expired, order.cancelled",
        ),
    ],
)
def test_validation_errors(
    client: AppClient, broker: str, body: dict[str, Any], message: str
) -> None:
    error(client.post("/webhooks", json=body), 400, "validation_error", message)


def test_url_of_exactly_2048_characters_is_accepted(client: AppClient, broker: str) -> None:
    url = "https://a.example/" + "x" * 2030
    assert len(url) == 2048
    assert subscribe(client, url=url).status_code == 201


def test_https_scheme_is_case_insensitive(client: AppClient, broker: str) -> None:
    assert subscribe(client, url="HTTPS://a.example/x").status_code == 201


@pytest.mark.parametrize(
    "body,message",
    [
        ({"broker_id": "nobody", "url": "http://a.example/x", "events": ALL_EVENTS},
         "url must use https scheme"),
        ({"broker_id": "nobody", "url": URL, "events": ["nope"]},
         "Unknown event type: nope. Must be one of: trade.executed, order.expired, order.cancelled"),
        ({"broker_id": "nobody", "url": URL}, "events is required"),
    ],
)  # fmt: skip
def test_every_400_comes_before_the_broker_lookup(
    client: AppClient, body: dict[str, Any], message: str
) -> None:
    error(client.post("/webhooks", json=body), 400, "validation_error", message)


@pytest.mark.parametrize("broker_id", ["broker-999", "bad id with spaces", ""])
def test_unknown_broker_is_404(client: AppClient, broker_id: str) -> None:
    error(
        subscribe(client, broker_id),
        404,
        "broker_not_found",
        f"Broker {broker_id} does not exist",
    )


def test_rejected_request_changes_nothing(client: AppClient, broker: str) -> None:
    result = subscribe(client, events=["trade.executed", "trade.matched"])
    assert result.status_code == 400
    assert listed(client) == []


# -- GET /webhooks --------------------------------------------------------------------


@pytest.mark.parametrize("query", [None, "", "broker_id=", "other=broker-123"])
def test_list_without_broker_id_is_400(client: AppClient, broker: str, query: str | None) -> None:
    error(
        client.get("/webhooks", query=query),
        400,
        "validation_error",
        "broker_id query parameter is required",
    )


def test_list_of_unknown_broker_is_404(client: AppClient) -> None:
    error(
        client.get("/webhooks", query="broker_id=broker-999"),
        404,
        "broker_not_found",
        "Broker broker-999 does not exist",
    )


def test_list_without_subscriptions_is_empty(client: AppClient, broker: str) -> None:
    result = client.get("/webhooks", query="broker_id=broker-123")
    assert result.status_code == 200
    assert result.text == '{"webhooks":[]}'


def test_list_is_ordered_by_created_at_then_request_order(
    client: AppClient, clock: ManualClock, broker: str
) -> None:
    subscribe(client, events=["order.cancelled", "trade.executed"])
    clock.advance(seconds=10)
    subscribe(client, events=["order.expired"])
    clock.advance(seconds=10)
    subscribe(client, url=NEW_URL, events=["trade.executed"])  # an update keeps its place
    entries = listed(client)
    assert [entry["event"] for entry in entries] == [
        "order.cancelled",
        "trade.executed",
        "order.expired",
    ]
    assert [entry["created_at"] for entry in entries] == [START, START, LATER]
    assert entries[1]["url"] == NEW_URL
    assert all(set(entry) == ENTRY_KEYS for entry in entries)


def test_list_query_first_occurrence_counts(client: AppClient, broker: str) -> None:
    subscribe(client)
    result = client.get("/webhooks", query="broker_id=&broker_id=broker-123&broker_id=x")
    assert result.status_code == 200
    assert len(result.json["webhooks"]) == 3


# -- DELETE /webhooks/{webhook_id} ----------------------------------------------------


def test_delete_is_204_with_empty_body_then_gone(client: AppClient, broker: str) -> None:
    entries = subscribe(client).json["webhooks"]
    result = client.delete(f"/webhooks/{entries[1]['webhook_id']}")
    assert result.status_code == 204
    assert result.content == b""
    assert listed(client) == [entries[0], entries[2]]
    again = client.delete(f"/webhooks/{entries[1]['webhook_id']}")
    error(again, 404, "webhook_not_found", f"Webhook {entries[1]['webhook_id']} does not exist")


@pytest.mark.parametrize("webhook_id", ["wh-nonexistent", "not-an-id", "ord-1"])
def test_delete_unknown_is_404(client: AppClient, webhook_id: str) -> None:
    error(
        client.delete(f"/webhooks/{webhook_id}"),
        404,
        "webhook_not_found",
        f"Webhook {webhook_id} does not exist",
    )


def test_delete_then_subscribe_again_creates_a_new_subscription(
    client: AppClient, clock: ManualClock, broker: str
) -> None:
    first = subscribe(client, events=["trade.executed"]).json["webhooks"][0]
    assert client.delete(f"/webhooks/{first['webhook_id']}").status_code == 204
    clock.advance(seconds=10)
    result = subscribe(client, events=["trade.executed"])
    assert result.status_code == 201
    again = result.json["webhooks"][0]
    assert again["webhook_id"] != first["webhook_id"]
    assert again["created_at"] == again["updated_at"] == LATER


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("DELETE", "/webhooks", "GET, POST"),
        ("PUT", "/webhooks", "GET, POST"),
        ("GET", "/webhooks/wh-1", "DELETE"),
        ("POST", "/webhooks/wh-1", "DELETE"),
    ],
)
def test_wrong_method_is_405(client: AppClient, method: str, path: str, allow: str) -> None:
    result = client.request(method, path)
    assert result.headers["allow"] == allow
    error(result, 405, "method_not_allowed", f"Method {method} is not allowed on {path}")


# -- which deliveries the app's events produce ----------------------------------------


def settle(client: AppClient, broker_id: str = "broker-123") -> None:
    """Wait until the dispatcher has handled every event so far: a listing queues
    behind them in its mailbox (each event was handed over before its answer)."""
    listed(client, broker_id)


def bodies(deliveries: FakeDeliveries) -> list[dict[str, Any]]:
    return [orjson.loads(delivery.body) for delivery in deliveries.recorded()]


def test_trade_goes_to_both_subscribed_sides(
    client: AppClient, deliveries: FakeDeliveries, broker: str
) -> None:
    register(client, "buyer", 1_000_000)
    seller_hook = subscribe(client, events=["trade.executed"]).json["webhooks"][0]
    buyer_hook = subscribe(client, "buyer", NEW_URL, ["trade.executed"]).json["webhooks"][0]
    ask = limit(client, "broker-123", "ask", 148, 1000).json
    bid = limit(client, "buyer", "bid", 150, 600).json
    settle(client)
    to_buyer, to_seller = deliveries.recorded()  # the bid side of a trade first
    trade_id = bid["trades"][0]["trade_id"]
    assert (to_seller.webhook_id, to_seller.url) == (seller_hook["webhook_id"], URL)
    assert (to_buyer.webhook_id, to_buyer.url) == (buyer_hook["webhook_id"], NEW_URL)
    assert to_seller.event_type == to_buyer.event_type == "trade.executed"
    assert to_seller.delivery_id != to_buyer.delivery_id
    assert to_buyer.body == (
        b'{"event":"trade.executed","timestamp":"2026-02-17T09:00:00Z","data":{'
        b'"trade_id":"' + trade_id.encode() + b'","broker_id":"buyer",'
        b'"order_id":"' + bid["order_id"].encode() + b'","symbol":"AAPL","side":"bid",'
        b'"trade_price":148.00,"trade_quantity":600,"order_status":"filled",'
        b'"order_filled_quantity":600,"order_remaining_quantity":0}}'
    )
    assert orjson.loads(to_seller.body)["data"] == {
        "trade_id": trade_id, "broker_id": "broker-123", "order_id": ask["order_id"],
        "symbol": "AAPL", "side": "ask", "trade_price": 148.0, "trade_quantity": 600,
        "order_status": "partially_filled", "order_filled_quantity": 600,
        "order_remaining_quantity": 400,
    }  # fmt: skip


def test_market_remainder_sends_no_cancel_but_delete_does(
    client: AppClient, deliveries: FakeDeliveries, broker: str
) -> None:
    register(client, "buyer", 1_000_000)
    subscribe(client, "buyer", URL, ["order.cancelled"])
    limit(client, "broker-123", "ask", 10, 100)
    ioc = market(client, "buyer", "bid", 150).json
    assert ioc["status"] == "cancelled"
    resting = limit(client, "buyer", "bid", 9.5, 40).json
    assert client.delete(f"/orders/{resting['order_id']}").status_code == 200
    settle(client, "buyer")
    assert bodies(deliveries) == [
        {
            "event": "order.cancelled",
            "timestamp": START,
            "data": {
                "broker_id": "buyer", "order_id": resting["order_id"], "symbol": "AAPL",
                "side": "bid", "price": 9.5, "quantity": 40, "filled_quantity": 0,
                "cancelled_quantity": 40, "remaining_quantity": 0, "status": "cancelled",
            },
        }
    ]  # fmt: skip
    assert b'"price":9.50' in deliveries.recorded()[0].body


def test_expiry_is_delivered_with_the_orders_own_expires_at(
    client: AppClient, clock: ManualClock, exchange: Exchange, deliveries: FakeDeliveries,
    broker: str,
) -> None:  # fmt: skip
    register(client, "buyer", 1_000_000)
    subscribe(client, events=["order.expired"])
    ask = limit(client, "broker-123", "ask", 200, 1000, expires_at="2026-02-17T09:00:30Z").json
    limit(client, "buyer", "bid", 200, 300)
    clock.advance(seconds=45)
    run_expiration(exchange)
    settle(client)
    assert bodies(deliveries) == [
        {
            "event": "order.expired",
            "timestamp": "2026-02-17T09:00:30Z",
            "data": {
                "broker_id": "broker-123", "order_id": ask["order_id"], "symbol": "AAPL",
                "side": "ask", "price": 200.0, "quantity": 1000, "filled_quantity": 300,
                "cancelled_quantity": 700, "remaining_quantity": 0, "status": "expired",
            },
        }
    ]  # fmt: skip


def test_subscription_is_looked_up_when_the_event_happens(
    client: AppClient, deliveries: FakeDeliveries, broker: str
) -> None:
    register(client, "buyer", 1_000_000)
    hook = subscribe(client, "buyer", URL, ["trade.executed"]).json["webhooks"][0]
    limit(client, "broker-123", "ask", 10, 100)
    limit(client, "buyer", "bid", 10, 10)
    subscribe(client, "buyer", NEW_URL, ["trade.executed"])  # later events go here
    limit(client, "buyer", "bid", 10, 10)
    assert client.delete(f"/webhooks/{hook['webhook_id']}").status_code == 204
    limit(client, "buyer", "bid", 10, 10)  # nobody subscribed: nothing
    settle(client, "buyer")
    assert [delivery.url for delivery in deliveries.recorded()] == [URL, NEW_URL]
    assert {delivery.webhook_id for delivery in deliveries.recorded()} == {hook["webhook_id"]}
