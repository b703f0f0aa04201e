"""What a real restart keeps: the real server (gunicorn, as `make run` starts it) is
stopped with SIGTERM and started again on the same `DATABASE_PATH`.

- Webhook subscriptions: those made before the restart still deliver after it (to a
  real local HTTPS receiver, signed), a deleted one stays deleted, and an order that
  fell due while the exchange was down is delivered as expired once it is back.
- `Idempotency-Key` answers of `POST /brokers` and `POST /webhooks`: a retry after the
  restart replays the first answer byte for byte (a 2xx, and the stored 404 and 409
  refusals too) and executes nothing; the same key with another body is 422
  `idempotency_key_reused`.

Every wait is for something that must happen; no test asserts how fast.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ENGINES, Server, engine_or_skip
from tests.e2e.receiver import Received, Receiver, verify_signature

SECRET = "restart-secret"
FAR = "2099-01-01T00:00:00Z"
SYMBOL = "RSTRT"
WAIT_S = 60.0
"""How long to wait for what must happen; never an upper bound on speed."""


class Client:
    """Requests to one running server; the same object is pointed at the next one."""

    def __init__(self, server: Server) -> None:
        self.url = server.url

    def post(self, path: str, body: dict[str, Any], key: str | None = None) -> requests.Response:
        headers = {"Idempotency-Key": key} if key is not None else {}
        return requests.post(f"{self.url}{path}", json=body, headers=headers, timeout=WAIT_S)

    def created(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.post(path, body)
        assert response.status_code == 201, response.text
        return response.json()

    def get(self, path: str) -> Any:
        response = requests.get(f"{self.url}{path}", timeout=WAIT_S)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    def delete(self, path: str) -> requests.Response:
        return requests.delete(f"{self.url}{path}", timeout=WAIT_S)


def limit(
    broker_id: str, side: str, price: float, quantity: int, expires_at: str = FAR
) -> dict[str, Any]:
    return {
        "type": "limit", "broker_id": broker_id, "document_number": "1", "side": side,
        "symbol": SYMBOL, "price": price, "quantity": quantity, "expires_at": expires_at,
    }  # fmt: skip


def broker(broker_id: str, cash: int = 0, shares: int = 0) -> dict[str, Any]:
    holdings = [{"symbol": SYMBOL, "quantity": shares}] if shares else []
    return {"broker_id": broker_id, "initial_cash": cash, "initial_holdings": holdings}


def signed(received: Received) -> dict[str, Any]:
    """The delivery's body, once its signature is checked."""
    assert verify_signature(SECRET, received.body, received.headers.get("x-signature"))
    return received.json()


# -- webhooks -----------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_webhooks_made_before_a_restart_deliver_after_it(
    receiver: Receiver, tmp_path: Path, engine: str
) -> None:
    """With `ENGINE=ray` the restart rebuilds the shards by replaying the command
    journal: what the replay runs again is not delivered again."""
    engine_or_skip(engine)
    env = {
        "DATABASE_PATH": str(tmp_path / "exchange.db"),
        "WEBHOOK_CA_BUNDLE": str(receiver.ca_path),
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOW_PRIVATE": "true",
    }
    # the receiver serves the module: each engine's run has paths of its own
    trades, expired, gone = (f"/restart-{engine}/{path}" for path in ("trades", "expired", "gone"))
    # no sweep during the first run: the short-lived ask can only expire at the restart
    server = Server({**env, "EXPIRATION_INTERVAL": "1h"}, tmp_path / "first.log", engine=engine)
    try:
        client = Client(server)
        client.created("/brokers", broker("seller", shares=100))
        client.created("/brokers", broker("buyer", cash=10_000))
        (trade_hook,) = client.created(
            "/webhooks",
            {"broker_id": "buyer", "url": receiver.url(trades), "events": ["trade.executed"]},
        )["webhooks"]
        (expiry_hook,) = client.created(
            "/webhooks",
            {"broker_id": "seller", "url": receiver.url(expired), "events": ["order.expired"]},
        )["webhooks"]
        (gone_hook,) = client.created(
            "/webhooks",
            {"broker_id": "seller", "url": receiver.url(gone), "events": ["order.cancelled"]},
        )["webhooks"]
        assert client.delete(f"/webhooks/{gone_hook['webhook_id']}").status_code == 204
        client.created("/orders", limit("seller", "ask", 10, 10))
        before = client.created("/orders", limit("buyer", "bid", 10, 1))["trades"][0]
        (first,) = receiver.wait(trades, 1, WAIT_S)
        soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        expires_at = soon.strftime("%Y-%m-%dT%H:%M:%SZ")
        short = client.created("/orders", limit("seller", "ask", 20, 5, expires_at))
        resting = client.created("/orders", limit("seller", "ask", 30, 1))
    finally:
        assert server.stop() == 0
    assert receiver.received(expired) == []  # nothing expired in the first run
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.5)  # down past it

    server = Server({**env, "EXPIRATION_INTERVAL": "100ms"}, tmp_path / "second.log", engine=engine)
    try:
        client = Client(server)
        # fell due while down: expired at start, and delivered to the subscription
        (delivery,) = receiver.wait(expired, 1, WAIT_S)
        assert delivery.headers["x-webhook-id"] == expiry_hook["webhook_id"]
        assert signed(delivery) == {
            "event": "order.expired",
            "timestamp": expires_at,
            "data": {
                "broker_id": "seller", "order_id": short["order_id"], "symbol": SYMBOL,
                "side": "ask", "price": 20.0, "quantity": 5, "filled_quantity": 0,
                "cancelled_quantity": 5, "remaining_quantity": 0, "status": "expired",
            },
        }  # fmt: skip
        # a trade after the restart reaches the subscription made before it
        bid = client.created("/orders", limit("buyer", "bid", 10, 2))
        (after,) = bid["trades"]
        _, second = receiver.wait(trades, 2, WAIT_S)
        assert second.headers["x-webhook-id"] == trade_hook["webhook_id"]
        assert second.headers["x-delivery-id"] != first.headers["x-delivery-id"]
        assert signed(first)["data"]["trade_id"] == before["trade_id"]
        assert signed(second) == {
            "event": "trade.executed",
            "timestamp": after["executed_at"],
            "data": {
                "trade_id": after["trade_id"], "broker_id": "buyer",
                "order_id": bid["order_id"], "symbol": SYMBOL, "side": "bid",
                "trade_price": 10.0, "trade_quantity": 2, "order_status": "filled",
                "order_filled_quantity": 2, "order_remaining_quantity": 0,
            },
        }  # fmt: skip
        # the deleted subscription stayed deleted
        listed = client.get("/webhooks?broker_id=seller")["webhooks"]
        assert [hook["webhook_id"] for hook in listed] == [expiry_hook["webhook_id"]]
        assert client.get("/webhooks?broker_id=buyer")["webhooks"] == [trade_hook]
        assert client.delete(f"/orders/{resting['order_id']}").status_code == 200
        assert client.delete(f"/webhooks/{expiry_hook['webhook_id']}").status_code == 204
        # a later delivery has come meanwhile (the listing above is the check that counts)
        client.created("/orders", limit("buyer", "bid", 10, 1))
        receiver.wait(trades, 3, WAIT_S)
        assert receiver.received(gone) == []
        assert len(receiver.received(expired)) == 1  # never delivered twice
    finally:
        assert server.stop() == 0


# -- Idempotency-Key ----------------------------------------------------------------------


def replayed(response: requests.Response, status: int, first: requests.Response) -> None:
    """`response` replays `first`, which had `status`: same status and bytes, marked."""
    assert first.status_code == status, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert (response.status_code, response.content) == (status, first.content)
    assert response.headers["Idempotent-Replayed"] == "true"


def reused(response: requests.Response, key: str) -> None:
    assert (response.status_code, response.json()) == (
        422,
        {
            "error": "idempotency_key_reused",
            "message": f"Idempotency-Key {key} was already used with a different request",
        },
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_idempotency_keys_of_brokers_and_webhooks_replay_after_a_restart(
    receiver: Receiver, tmp_path: Path, engine: str
) -> None:
    """With `ENGINE=ray` the sequencer journals each kept answer before it is sent, and
    a cluster snapshot (one a second here, waited for) carries those it covers: the
    first answers come back from the snapshot, the last one from the journal after it."""
    engine_or_skip(engine)
    database = tmp_path / "exchange.db"
    env = {"DATABASE_PATH": str(database), "WEBHOOK_ALLOW_PRIVATE": "true"}
    if engine == "ray":
        env["SNAPSHOT_INTERVAL"] = "1s"
    url_a, url_b = receiver.url("/idem/a"), receiver.url("/idem/b")
    seller = broker("seller", shares=10)
    buyer = broker("buyer", cash=1000)
    subscribe = {"broker_id": "buyer", "url": url_a, "events": ["trade.executed"]}
    too_early = {"broker_id": "late", "url": url_a, "events": ["order.cancelled"]}
    server = Server(env, tmp_path / "first.log", engine=engine)
    try:
        client = Client(server)
        first = {
            "seller": client.post("/brokers", seller, "k-seller"),
            "buyer": client.post("/brokers", buyer, "k-buyer"),
            "again": client.post("/brokers", broker("buyer", cash=5), "k-again"),
            "subscribe": client.post("/webhooks", subscribe, "k-subscribe"),
            "too-early": client.post("/webhooks", too_early, "k-too-early"),
        }
        if engine == "ray":  # until a snapshot holds them
            snapshot, deadline = Path(f"{database}.ray-snapshot"), time.monotonic() + WAIT_S
            while not (snapshot.exists() and b'"k-too-early"' in snapshot.read_bytes()):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        # what changes after those answers: a trade moves the buyer's cash, the
        # subscription gets another URL, the broker that was missing registers
        client.created("/orders", limit("seller", "ask", 10, 10))
        client.created("/orders", limit("buyer", "bid", 10, 3))
        moved = {"broker_id": "buyer", "url": url_b, "events": ["trade.executed"]}
        assert client.post("/webhooks", moved).status_code == 200
        first["late"] = client.post("/brokers", broker("late"), "k-late")
        state = {
            "buyer": client.get("/brokers/buyer/balance"),
            "seller": client.get("/brokers/seller/balance"),
            "hooks": client.get("/webhooks?broker_id=buyer"),
            "late": client.get("/webhooks?broker_id=late"),
        }
    finally:
        assert server.stop() == 0
    assert state["buyer"]["cash_balance"] == 970.0
    assert state["hooks"]["webhooks"][0]["url"] == url_b
    assert state["late"] == {"webhooks": []}
    assert first["again"].json() == {
        "error": "broker_already_exists",
        "message": "Broker buyer is already registered",
    }
    assert first["too-early"].json() == {
        "error": "broker_not_found",
        "message": "Broker late does not exist",
    }

    server = Server(env, tmp_path / "second.log", engine=engine)
    try:
        client = Client(server)
        replayed(client.post("/brokers", broker("late"), "k-late"), 201, first["late"])
        replayed(client.post("/brokers", seller, "k-seller"), 201, first["seller"])
        replayed(client.post("/brokers", buyer, "k-buyer"), 201, first["buyer"])
        replayed(client.post("/brokers", broker("buyer", cash=5), "k-again"), 409, first["again"])
        replayed(client.post("/webhooks", subscribe, "k-subscribe"), 201, first["subscribe"])
        replayed(client.post("/webhooks", too_early, "k-too-early"), 404, first["too-early"])
        # a key is one endpoint's: the same key on the other endpoint is a first use
        other = client.post("/webhooks", {**subscribe, "broker_id": "seller"}, "k-seller")
        assert other.status_code == 201, other.text
        assert "Idempotent-Replayed" not in other.headers
        # the same key, another body
        reused(client.post("/brokers", broker("seller", shares=11), "k-seller"), "k-seller")
        reused(client.post("/brokers", broker("buyer", cash=5.01), "k-again"), "k-again")
        reused(client.post("/webhooks", {**subscribe, "url": url_b}, "k-subscribe"), "k-subscribe")
        reused(client.post("/webhooks", {**too_early, "events": ["order.expired"]}, "k-too-early"), "k-too-early")  # fmt: skip
        # nothing was executed by any of them
        assert client.get("/brokers/buyer/balance") == state["buyer"]
        assert client.get("/brokers/seller/balance") == state["seller"]
        assert client.get("/webhooks?broker_id=buyer") == state["hooks"]
        assert client.get("/webhooks?broker_id=late") == state["late"]
    finally:
        assert server.stop() == 0
