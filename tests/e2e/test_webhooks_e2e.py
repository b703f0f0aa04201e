"""Webhooks end to end: the real server (gunicorn, as `make run` starts it) delivering to
a real local HTTPS receiver whose CA is passed through WEBHOOK_CA_BUNDLE.

One server serves the whole module; each test uses its own brokers, symbol and
receiver paths. Every wait is for something that must happen (a delivery, a log
line); no test asserts how fast. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import random
import string
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ENGINES, Server, engine_or_skip
from tests.e2e.receiver import Received, Receiver, verify_signature

SECRET = "e2e-secret"
FAR = "2099-01-01T00:00:00Z"
WAIT_S = 30.0
"""How long to wait for what must happen; never an upper bound on speed."""


def start_server(
    receiver: Receiver,
    directory: Path,
    allow_private: bool,
    timeout: str = "30s",
    engine: str = "embedded",
) -> Server:
    env = {
        "DATABASE_PATH": ":memory:",
        "EXPIRATION_INTERVAL": "100ms",
        "WEBHOOK_CA_BUNDLE": str(receiver.ca_path),
        "WEBHOOK_SECRET": SECRET,
        # Long enough that a delivery the receiver holds is still in flight when a test
        # checks what happened meanwhile, on however slow a machine.
        "WEBHOOK_TIMEOUT": timeout,
        "WEBHOOK_ALLOW_PRIVATE": "true" if allow_private else "false",
    }
    return Server(env, directory / "server.log", engine=engine)


@pytest.fixture(scope="module", params=ENGINES)
def server(
    request: pytest.FixtureRequest,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    running = start_server(
        receiver,
        tmp_path_factory.mktemp("server"),
        allow_private=True,
        engine=engine_or_skip(request.param),
    )
    try:
        yield running
    finally:
        running.stop()


class Market:
    """One test's corner of the exchange: its own brokers, symbol and receiver paths."""

    def __init__(self, server: Server, receiver: Receiver) -> None:
        self.base = server.url
        self.receiver = receiver
        self.http = requests.Session()
        self.tag = uuid.uuid4().hex[:8]
        self.symbol = "".join(random.choices(string.ascii_uppercase, k=10))

    def broker(self, name: str, cash: int = 1_000_000, shares: int = 0) -> str:
        broker_id = f"{name}-{self.tag}"
        holdings = [{"symbol": self.symbol, "quantity": shares}] if shares else []
        self.post("/brokers", broker_id=broker_id, initial_cash=cash, initial_holdings=holdings)
        return broker_id

    def path(self, name: str) -> str:
        return f"/{self.tag}/{name}"

    def subscribe(self, broker_id: str, path: str, *events: str) -> list[dict[str, Any]]:
        body = self.post(
            "/webhooks",
            status=None,
            broker_id=broker_id,
            url=self.receiver.url(path),
            events=events,
        )
        return body["webhooks"]

    def unsubscribe(self, webhook_id: str) -> None:
        assert self.http.delete(f"{self.base}/webhooks/{webhook_id}").status_code == 204

    def limit(
        self, broker_id: str, side: str, price: float, quantity: int, expires_at: str = FAR
    ) -> dict[str, Any]:
        return self.post(
            "/orders", type="limit", broker_id=broker_id, document_number="1", side=side,
            symbol=self.symbol, price=price, quantity=quantity, expires_at=expires_at,
        )  # fmt: skip

    def market(self, broker_id: str, side: str, quantity: int) -> dict[str, Any]:
        return self.post(
            "/orders", type="market", broker_id=broker_id, document_number="1", side=side,
            symbol=self.symbol, quantity=quantity,
        )  # fmt: skip

    def cancel(self, order_id: str) -> dict[str, Any]:
        response = self.http.delete(f"{self.base}/orders/{order_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, status: int | None = 201, **body: Any) -> dict[str, Any]:
        response = self.http.post(f"{self.base}{path}", json=body)
        assert response.status_code == (status or response.status_code), response.text
        assert response.status_code < 300, response.text
        return response.json()


@pytest.fixture
def market(server: Server, receiver: Receiver) -> Iterator[Market]:
    yield Market(server, receiver)
    receiver.release_all()  # a failed test leaves no delivery held


def signed(received: Received) -> dict[str, Any]:
    """The delivery's body, once its signature and headers are checked."""
    assert verify_signature(SECRET, received.body, received.headers.get("x-signature"))
    assert received.headers["content-type"] == "application/json"
    assert str(uuid.UUID(received.headers["x-delivery-id"])) == received.headers["x-delivery-id"]
    body = received.json()
    assert received.headers["x-event-type"] == body["event"]
    return body


# -- what is delivered ----------------------------------------------------------------


def test_both_sides_of_a_trade_signed(market: Market, receiver: Receiver) -> None:
    seller = market.broker("seller", 0, shares=1000)
    buyer = market.broker("buyer")
    (seller_hook,) = market.subscribe(seller, market.path("seller"), "trade.executed")
    (buyer_hook,) = market.subscribe(buyer, market.path("buyer"), "trade.executed")
    ask = market.limit(seller, "ask", 148, 1000)
    bid = market.limit(buyer, "bid", 150, 600)
    (trade,) = bid["trades"]
    (to_seller,) = receiver.wait(market.path("seller"), 1)
    (to_buyer,) = receiver.wait(market.path("buyer"), 1)
    assert to_seller.headers["x-webhook-id"] == seller_hook["webhook_id"]
    assert to_buyer.headers["x-webhook-id"] == buyer_hook["webhook_id"]
    assert to_seller.headers["x-delivery-id"] != to_buyer.headers["x-delivery-id"]
    assert signed(to_buyer) == {
        "event": "trade.executed",
        "timestamp": trade["executed_at"],
        "data": {
            "trade_id": trade["trade_id"], "broker_id": buyer, "order_id": bid["order_id"],
            "symbol": market.symbol, "side": "bid", "trade_price": 148.0, "trade_quantity": 600,
            "order_status": "filled", "order_filled_quantity": 600,
            "order_remaining_quantity": 0,
        },
    }  # fmt: skip
    assert signed(to_seller)["data"] == {
        "trade_id": trade["trade_id"], "broker_id": seller, "order_id": ask["order_id"],
        "symbol": market.symbol, "side": "ask", "trade_price": 148.0, "trade_quantity": 600,
        "order_status": "partially_filled", "order_filled_quantity": 600,
        "order_remaining_quantity": 400,
    }  # fmt: skip
    assert b'"trade_price":148.00' in to_buyer.body


def test_a_sweep_is_delivered_in_match_order_one_per_trade(
    market: Market, receiver: Receiver
) -> None:
    seller = market.broker("seller", 0, shares=1000)
    buyer = market.broker("buyer")
    market.subscribe(seller, market.path("seller"), "trade.executed")
    market.subscribe(buyer, market.path("buyer"), "trade.executed")
    asks = [market.limit(seller, "ask", p, q) for p, q in ((10, 100), (11, 100), (12, 50))]
    sweep = market.market(buyer, "bid", 250)
    assert sweep["status"] == "filled"
    market.limit(seller, "ask", 20, 1)
    marker = market.limit(buyer, "bid", 20, 1)  # the next delivery of the same subscription
    to_buyer = [signed(r)["data"] for r in receiver.wait(market.path("buyer"), 4)]
    assert [d["trade_id"] for d in to_buyer] == [
        *(t["trade_id"] for t in sweep["trades"]),
        marker["trades"][0]["trade_id"],
    ]
    assert [d["trade_price"] for d in to_buyer[:3]] == [10.0, 11.0, 12.0]
    assert [d["order_filled_quantity"] for d in to_buyer[:3]] == [100, 200, 250]
    assert [d["order_status"] for d in to_buyer[:3]] == [
        "partially_filled",
        "partially_filled",
        "filled",
    ]
    assert len(receiver.received(market.path("buyer"))) == 4  # nothing else came first
    to_seller = [signed(r)["data"] for r in receiver.wait(market.path("seller"), 4)]
    assert [d["order_id"] for d in to_seller[:3]] == [a["order_id"] for a in asks]
    assert [d["order_status"] for d in to_seller[:3]] == ["filled"] * 3


def test_cancel_is_delivered_and_a_market_remainder_is_not(
    market: Market, receiver: Receiver
) -> None:
    seller = market.broker("seller", 0, shares=1000)
    buyer = market.broker("buyer")
    path = market.path("cancelled")
    market.subscribe(buyer, path, "order.cancelled")
    market.limit(seller, "ask", 147, 100)
    remainder = market.market(buyer, "bid", 150)  # 100 filled, 50 IOC-cancelled
    assert (remainder["status"], remainder["cancelled_quantity"]) == ("cancelled", 50)
    market.limit(seller, "ask", 148, 400)
    bid = market.limit(buyer, "bid", 150, 1000)  # 400 filled, 600 resting
    cancelled = market.cancel(bid["order_id"])
    (delivery,) = receiver.wait(path, 1)  # an IOC delivery would have come first
    assert signed(delivery) == {
        "event": "order.cancelled",
        "timestamp": cancelled["cancelled_at"],
        "data": {
            "broker_id": buyer, "order_id": bid["order_id"], "symbol": market.symbol,
            "side": "bid", "price": 150.0, "quantity": 1000, "filled_quantity": 400,
            "cancelled_quantity": 600, "remaining_quantity": 0, "status": "cancelled",
        },
    }  # fmt: skip
    assert b'"price":150.00' in delivery.body
    assert delivery.headers["x-event-type"] == "order.cancelled"


def test_expiry_is_delivered(market: Market, receiver: Receiver) -> None:
    seller = market.broker("seller", 0, shares=1000)
    path = market.path("expired")
    (hook,) = market.subscribe(seller, path, "order.expired")
    ask, expires_at = ask_expiring_soon(market, seller)
    (delivery,) = receiver.wait(path, 1, WAIT_S)
    assert delivery.headers["x-webhook-id"] == hook["webhook_id"]
    assert signed(delivery) == {
        "event": "order.expired",
        "timestamp": expires_at,
        "data": {
            "broker_id": seller, "order_id": ask["order_id"], "symbol": market.symbol,
            "side": "ask", "price": 200.0, "quantity": 1000, "filled_quantity": 0,
            "cancelled_quantity": 1000, "remaining_quantity": 0, "status": "expired",
        },
    }  # fmt: skip


def ask_expiring_soon(market: Market, seller: str) -> tuple[dict[str, Any], str]:
    """An ask of 1000 @ 200.00 that expires within two seconds, and its `expires_at`. On a
    loaded machine the order may reach the server after that instant (a 400): it is sent
    again with a later one, so no margin has to be guessed."""
    for _ in range(10):
        soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        expires_at = soon.strftime("%Y-%m-%dT%H:%M:%SZ")
        response = market.http.post(
            f"{market.base}/orders",
            json={
                "type": "limit", "broker_id": seller, "document_number": "1", "side": "ask",
                "symbol": market.symbol, "price": 200, "quantity": 1000, "expires_at": expires_at,
            },
        )  # fmt: skip
        if response.status_code == 201:
            return response.json(), expires_at
        assert response.json() == {
            "error": "validation_error", "message": "expires_at must be a future timestamp"
        }, response.text  # fmt: skip
    raise AssertionError("ten orders in a row reached the server after their expires_at")


# -- subscriptions change; receivers hang ---------------------------------------------


def test_nothing_after_unsubscribe_but_a_queued_delivery_still_leaves(
    market: Market, receiver: Receiver
) -> None:
    seller = market.broker("seller", 0, shares=1000)
    buyer = market.broker("buyer")
    path = market.path("unsubscribed")
    (hook,) = market.subscribe(buyer, path, "trade.executed")
    gate = receiver.hold(path)
    market.limit(seller, "ask", 10, 1000)

    def buy() -> str:
        return market.limit(buyer, "bid", 10, 1)["trades"][0]["trade_id"]

    first = buy()
    assert gate.entered.wait(WAIT_S)  # in flight, held by the receiver
    queued = buy()  # waits behind it
    market.unsubscribe(hook["webhook_id"])
    ignored = buy()  # nobody subscribed when it happened
    (again,) = market.subscribe(buyer, path, "trade.executed")
    later = buy()
    marker = buy()  # the new subscription's last: it leaves after everything queued to it
    gate.release.set()
    # every arrival until the last known delivery of each subscription is in
    arrived = arrivals_until(receiver, path, {queued, marker})
    trade_ids = [signed(r)["data"]["trade_id"] for r in arrived]
    assert ignored not in trade_ids
    assert sorted(trade_ids) == sorted([first, queued, later, marker])  # each once, no more
    by_trade = {signed(r)["data"]["trade_id"]: r.headers["x-webhook-id"] for r in arrived}
    assert by_trade == {
        first: hook["webhook_id"],
        queued: hook["webhook_id"],
        later: again["webhook_id"],
        marker: again["webhook_id"],
    }
    assert again["webhook_id"] != hook["webhook_id"]
    # each subscription's deliveries left in event order
    for webhook_id, expected in (
        (hook["webhook_id"], [first, queued]),
        (again["webhook_id"], [later, marker]),
    ):
        assert [t for t in trade_ids if by_trade[t] == webhook_id] == expected


def arrivals_until(receiver: Receiver, path: str, trade_ids: set[str]) -> list[Received]:
    """Every delivery to `path` that has arrived once those of all `trade_ids` have (all
    of them, however many came first: none is left unread)."""
    count = 1
    while True:
        arrived = receiver.wait(path, count, WAIT_S)
        if trade_ids <= {signed(r)["data"]["trade_id"] for r in arrived}:
            return receiver.received(path)
        count += 1


def test_a_blocked_receiver_holds_neither_orders_nor_other_receivers(
    market: Market, receiver: Receiver
) -> None:
    seller = market.broker("seller", 0, shares=1000)
    buyer = market.broker("buyer")
    blocked, free = market.path("blocked"), market.path("free")
    market.subscribe(seller, blocked, "trade.executed")
    market.subscribe(buyer, free, "trade.executed")
    gate = receiver.hold(blocked)
    market.limit(seller, "ask", 10, 1000)
    first = market.limit(buyer, "bid", 10, 100)
    assert gate.entered.wait(WAIT_S)  # the seller's receiver now hangs on the first
    second = market.limit(buyer, "bid", 10, 100)  # POST /orders answers meanwhile
    assert second["status"] == "filled"
    to_buyer = receiver.wait(free, 2)  # and the buyer's receiver gets both meanwhile
    assert not gate.left.is_set()  # all of the above happened while it was held
    assert len(receiver.received(blocked)) == 1
    gate.release.set()
    to_seller = receiver.wait(blocked, 2)
    trade_ids = [first["trades"][0]["trade_id"], second["trades"][0]["trade_id"]]
    assert [signed(r)["data"]["trade_id"] for r in to_seller] == trade_ids
    assert [signed(r)["data"]["trade_id"] for r in to_buyer] == trade_ids


def test_thirty_dead_receivers_do_not_delay_a_healthy_one(
    receiver: Receiver, tmp_path: Path
) -> None:
    """30 receivers read their delivery and never answer (WEBHOOK_TIMEOUT=60s): all 30
    hang at once, and a healthy receiver's next delivery arrives while they all still
    hang (none of their connections has been given up). Events are ordered, not timed."""
    slow = start_server(receiver, tmp_path, allow_private=True, timeout="60s")
    try:
        market = Market(slow, receiver)
        seller = market.broker("seller", 0, shares=100)
        healthy = market.broker("healthy")
        market.subscribe(healthy, market.path("healthy"), "trade.executed")
        dead = [market.broker(f"dead{n}") for n in range(30)]
        silences = []
        for n, broker in enumerate(dead):
            silences.append(receiver.never_answer(market.path(f"dead{n}")))
            market.subscribe(broker, market.path(f"dead{n}"), "trade.executed")
        market.limit(seller, "ask", 10, 100)
        market.limit(healthy, "bid", 10, 1)
        receiver.wait(market.path("healthy"), 1)  # its last delivery succeeded
        for broker in dead:
            market.limit(broker, "bid", 10, 1)
        deadline = time.monotonic() + WAIT_S
        while not all(silence.arrived.is_set() for silence in silences):
            hanging = sum(silence.hanging() for silence in silences)
            assert time.monotonic() < deadline, f"only {hanging} of 30 dead receivers hang"
            time.sleep(0.05)
        last = market.limit(healthy, "bid", 10, 1)
        (_, delivered) = receiver.wait(market.path("healthy"), 2)
        assert signed(delivered)["data"]["trade_id"] == last["trades"][0]["trade_id"]
        assert [n for n, silence in enumerate(silences) if not silence.hanging()] == []
    finally:
        receiver.release_all()  # the dead receivers close their connections
        slow.stop()


# -- refused without WEBHOOK_ALLOW_PRIVATE --------------------------------------------


def test_delivery_to_loopback_is_refused_by_default(receiver: Receiver, tmp_path: Path) -> None:
    strict = start_server(receiver, tmp_path, allow_private=False)
    try:
        market = Market(strict, receiver)
        seller = market.broker("seller", 0, shares=10)
        buyer = market.broker("buyer")
        path = market.path("refused")
        (hook,) = market.subscribe(buyer, path, "trade.executed")
        market.limit(seller, "ask", 10, 10)
        market.limit(buyer, "bid", 10, 10)
        deadline = time.monotonic() + WAIT_S
        while "webhook_delivery_refused" not in strict.output():
            assert time.monotonic() < deadline, strict.output()
            time.sleep(0.05)
        (line,) = [
            line for line in strict.output().splitlines() if "webhook_delivery_refused" in line
        ]
        assert hook["webhook_id"] in line
        assert "127.0.0.1" in line
        assert receiver.received(path) == []
    finally:
        strict.stop()
