"""`AUTH=api_key` through the real server: every endpoint against every kind of
credential, keys surviving a restart, and no token in anything the server wrote; in
both modes (with `ENGINE=ray` a worker asks the account shard a key names whose it is,
so a key replaced stops working on every worker at once)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ENGINES, Server, engine_or_skip, require
from tests.e2e.receiver import Receiver, verify_signature
from tests.e2e.test_browser import Page

ADMIN = "e2e-admin-token-" + "z" * 32
FAR = "2030-01-01T00:00:00Z"
TIMEOUT = 10


def start(tmp_path: Path, database: Path, engine: str = "embedded") -> Server:
    env = {"AUTH": "api_key", "ADMIN_TOKEN": ADMIN, "DATABASE_PATH": str(database)}
    log = tmp_path / f"server-{len(list(tmp_path.iterdir()))}.log"
    return Server(env, log, engine=engine_or_skip(engine))


@pytest.fixture(params=ENGINES)
def secured(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    running = start(tmp_path, tmp_path / "journal.db", request.param)
    try:
        yield running
    finally:
        running.stop()


def call(server: Server, method: str, path: str, token: str | None, **kwargs: Any) -> Any:
    headers = {} if token is None else {"Authorization": token}
    return requests.request(method, server.url + path, headers=headers, timeout=TIMEOUT, **kwargs)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def register(server: Server, broker_id: str, **holdings: int) -> dict[str, Any]:
    body = {
        "broker_id": broker_id,
        "initial_cash": 1000,
        "initial_holdings": [{"symbol": s, "quantity": q} for s, q in holdings.items()],
    }
    answer = call(server, "POST", "/brokers", bearer(ADMIN), json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_every_endpoint_against_every_kind_of_credential(secured: Server, tmp_path: Path) -> None:
    alice = register(secured, "alice", AAPL=10)
    bob = register(secured, "bob")
    order = {
        "type": "limit", "broker_id": "alice", "document_number": "1", "side": "ask",
        "symbol": "AAPL", "price": 10, "quantity": 1, "expires_at": FAR,
    }  # fmt: skip
    mine = call(secured, "POST", "/orders", bearer(alice["api_key"]), json=order).json()
    hook = {"broker_id": "alice", "url": "https://h.example/x", "events": ["trade.executed"]}
    webhook = call(secured, "POST", "/webhooks", bearer(alice["api_key"]), json=hook).json()
    webhook_id = webhook["webhooks"][0]["webhook_id"]
    order_id = mine["order_id"]

    credentials = {
        "none": None,
        "another scheme": f"Basic {ADMIN}",
        "unknown token": bearer("mx_" + "Q" * 43),
        "another broker's key": bearer(bob["api_key"]),
        "its own key": bearer(alice["api_key"]),
        "admin": bearer(ADMIN),
    }
    # (method, path, body) -> status for: none, another scheme, unknown, bob's, alice's, admin
    cases: list[tuple[str, str, Any, tuple[int, ...]]] = [
        ("GET", "/healthz", None, (200, 200, 200, 200, 200, 200)),
        ("GET", "/stocks/AAPL/book", None, (200, 200, 200, 200, 200, 200)),
        ("GET", "/openapi.json", None, (200, 200, 200, 200, 200, 200)),
        ("GET", "/brokers/alice/balance", None, (401, 401, 401, 403, 200, 200)),
        ("GET", "/brokers/alice/orders", None, (401, 401, 401, 403, 200, 200)),
        ("GET", f"/orders/{order_id}", None, (401, 401, 401, 404, 200, 200)),
        ("GET", "/webhooks?broker_id=alice", None, (401, 401, 401, 403, 200, 200)),
        ("POST", "/orders", {**order, "price": 11}, (401, 401, 401, 403, 201, 201)),
        ("POST", "/webhooks", hook, (401, 401, 401, 403, 200, 200)),
        ("GET", "/metrics", None, (401, 401, 401, 403, 403, 200)),
        (
            "POST",
            "/brokers",
            {"broker_id": "carol", "initial_cash": 1, "initial_holdings": []},
            (401, 401, 401, 403, 403, 201),
        ),
    ]
    for method, path, body, expected in cases:
        got = tuple(
            call(secured, method, path, token, json=body).status_code
            for token in credentials.values()
        )
        assert got == expected, (method, path, dict(zip(credentials, got, strict=True)))

    # deletions last: another broker's are as if missing, one's own go
    gone = call(secured, "DELETE", f"/webhooks/{webhook_id}", bearer(bob["api_key"]))
    assert (gone.status_code, gone.json()["error"]) == (404, "webhook_not_found")
    assert (
        call(secured, "DELETE", f"/webhooks/{webhook_id}", bearer(alice["api_key"])).status_code
        == 204
    )
    gone = call(secured, "DELETE", f"/orders/{order_id}", bearer(bob["api_key"]))
    assert (gone.status_code, gone.json()["error"]) == (404, "order_not_found")
    assert (
        call(secured, "DELETE", f"/orders/{order_id}", bearer(alice["api_key"])).status_code == 200
    )
    unauthorized = call(secured, "GET", "/brokers/alice/balance", None)
    assert unauthorized.headers["WWW-Authenticate"] == "Bearer"
    assert unauthorized.json() == {
        "error": "unauthorized",
        "message": "A valid API key is required",
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_keys_survive_a_restart_and_no_token_is_ever_written(tmp_path: Path, engine: str) -> None:
    database = tmp_path / "journal.db"
    first = start(tmp_path, database, engine)
    try:
        alice = register(first, "alice")
        rotated = call(first, "POST", "/brokers/alice/api_key", bearer(ADMIN)).json()["api_key"]
        secret = call(first, "POST", "/brokers/alice/webhook_secret", bearer(ADMIN)).json()
        for _ in range(4):  # whichever worker takes it: the replaced key stopped at once
            assert call(first, "GET", "/brokers/alice/balance", bearer(rotated)).status_code == 200
            old = call(first, "GET", "/brokers/alice/balance", bearer(alice["api_key"]))
            assert old.status_code == 401
    finally:
        first.stop()
    again = start(tmp_path, database, engine)
    try:
        assert call(again, "GET", "/brokers/alice/balance", bearer(rotated)).status_code == 200
        old = call(again, "GET", "/brokers/alice/balance", bearer(alice["api_key"]))
        assert old.status_code == 401  # revoked before the restart, revoked after it
    finally:
        again.stop()
    written = "".join(path.read_text(errors="replace") for path in tmp_path.glob("*.log"))
    assert '"event": "request"' in written or '"event":"request"' in written  # it did log
    for token in (
        ADMIN,
        alice["api_key"],
        alice["webhook_secret"],
        rotated,
        secret["webhook_secret"],
    ):
        assert token not in written


@pytest.mark.parametrize("engine", ENGINES)
def test_each_brokers_deliveries_are_signed_with_its_own_secret(
    tmp_path: Path, engine: str
) -> None:
    """Through the real server and a real HTTPS receiver: alice's trade is signed with
    alice's webhook secret, bob's with bob's, and WEBHOOK_SECRET signs neither."""
    (tmp_path / "receiver").mkdir()
    receiver = Receiver(tmp_path / "receiver").start()
    env = {
        "AUTH": "api_key",
        "ADMIN_TOKEN": ADMIN,
        "DATABASE_PATH": ":memory:",
        "WEBHOOK_CA_BUNDLE": str(receiver.ca_path),
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_SECRET": "server-wide-secret",
    }
    server = Server(env, tmp_path / "signing.log", engine=engine_or_skip(engine))
    try:
        alice = register(server, "alice", AAPL=10)
        bob = register(server, "bob")
        for broker in (alice, bob):
            hook = {
                "broker_id": broker["broker_id"],
                "url": receiver.url(f"/{broker['broker_id']}"),
                "events": ["trade.executed"],
            }
            answer = call(server, "POST", "/webhooks", bearer(broker["api_key"]), json=hook)
            assert answer.status_code == 201, answer.text
        ask = {
            "type": "limit", "broker_id": "alice", "document_number": "1", "side": "ask",
            "symbol": "AAPL", "price": 10, "quantity": 1, "expires_at": FAR,
        }  # fmt: skip
        assert call(server, "POST", "/orders", bearer(alice["api_key"]), json=ask).ok
        bid = {**ask, "broker_id": "bob", "side": "bid"}
        assert call(server, "POST", "/orders", bearer(bob["api_key"]), json=bid).ok
        for broker in (alice, bob):
            (got,) = receiver.wait(f"/{broker['broker_id']}", 1)
            signature = got.headers.get("x-signature")
            assert verify_signature(broker["webhook_secret"], got.body, signature)
            assert not verify_signature("server-wide-secret", got.body, signature)
    finally:
        server.stop()
        receiver.stop()


def test_idempotency_keys_belong_to_their_principal_and_survive_a_rotation(
    secured: Server,
) -> None:
    alice = register(secured, "alice", AAPL=10)
    bob = register(secured, "bob", AAPL=10)
    ask = {
        "type": "limit", "broker_id": "alice", "document_number": "1", "side": "ask",
        "symbol": "AAPL", "price": 10, "quantity": 1, "expires_at": FAR,
    }  # fmt: skip

    def post(token: str, body: dict[str, Any]) -> Any:
        headers = {"Authorization": bearer(token), "Idempotency-Key": "same-key"}
        return requests.post(secured.url + "/orders", json=body, headers=headers, timeout=TIMEOUT)

    first = post(alice["api_key"], ask)
    other = post(bob["api_key"], {**ask, "broker_id": "bob", "price": 12})
    assert (first.status_code, other.status_code) == (201, 201)
    assert first.json()["order_id"] != other.json()["order_id"]  # never each other's answer
    rotated = call(secured, "POST", "/brokers/alice/api_key", bearer(ADMIN)).json()["api_key"]
    retry = post(rotated, ask)
    assert (retry.status_code, retry.headers.get("Idempotent-Replayed")) == (201, "true")
    assert retry.json() == first.json()


def test_docs_lets_a_reader_authorize_and_try_a_request(secured: Server, chromium: Any) -> None:
    """Swagger UI on /docs, in Chromium: Authorize with a broker's key, then "Try it
    out" on the balance, which answers 200 for that broker."""
    alice = register(secured, "alice")
    page = Page(require(chromium), secured)
    try:
        ui = page.page
        ui.goto(secured.url + "/docs")
        ui.get_by_role("button", name="Authorize").first.click()
        ui.locator(".auth-container input").first.fill(alice["api_key"])
        ui.locator(".auth-btn-wrapper button.authorize").first.click()
        ui.locator(".btn-done").first.click()
        operation = ui.locator("#operations-brokers-getBalance")
        operation.locator(".opblock-summary").click()
        operation.get_by_role("button", name="Try it out").click()
        operation.locator("input[placeholder='broker_id']").fill("alice")
        operation.get_by_role("button", name="Execute").click()
        page.expect(
            operation.locator(".live-responses-table tbody .response-col_status").first
        ).to_have_text("200")
    finally:
        page.close()
