"""API keys (`AUTH=api_key`) in-process: who may call what, ownership, rotation, and the
`Idempotency-Key` scope per principal. Every answer is checked exactly."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.seam import EmbeddedEngine
from miniexchange.http.app import create_app
from miniexchange.settings import load_settings
from miniexchange.testing import ManualClock
from tests.conftest import AppClient, _open
from tests.http.helpers import FAR

ADMIN = "admin-token-" + "x" * 32
UNAUTHORIZED = {"error": "unauthorized", "message": "A valid API key is required"}
ADMIN_ONLY = {"error": "forbidden", "message": "This endpoint requires the admin token"}


def forbidden_for(broker_id: str) -> dict[str, str]:
    return {"error": "forbidden", "message": f"This API key cannot act for broker {broker_id}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(clock: ManualClock, exchange: Exchange) -> Iterator[AppClient]:
    settings = load_settings({"AUTH": "api_key", "ADMIN_TOKEN": ADMIN})
    yield from _open(create_app(settings, clock=clock, engine=EmbeddedEngine(exchange)))


def register(client: AppClient, broker_id: str, cash: Any = 1000, **holdings: int) -> str:
    """Register as the admin; returns the broker's API key."""
    body = {
        "broker_id": broker_id,
        "initial_cash": cash,
        "initial_holdings": [{"symbol": s, "quantity": q} for s, q in holdings.items()],
    }
    result = client.post("/brokers", json=body, headers=bearer(ADMIN))
    assert result.status_code == 201, result.text
    return result.json["api_key"]


def order(broker_id: str, side: str = "bid", price: Any = 10) -> dict[str, Any]:
    return {
        "type": "limit", "broker_id": broker_id, "document_number": "1", "side": side,
        "symbol": "AAPL", "price": price, "quantity": 1, "expires_at": FAR,
    }  # fmt: skip


@pytest.fixture
def keys(secured: AppClient) -> dict[str, str]:
    return {"alice": register(secured, "alice", AAPL=10), "bob": register(secured, "bob")}


# -- who may call what ------------------------------------------------------------------


def test_registration_answers_the_credentials_once(secured: AppClient) -> None:
    body = {"broker_id": "alice", "initial_cash": 12.5, "initial_holdings": []}
    result = secured.post("/brokers", json=body, headers=bearer(ADMIN))
    assert result.status_code == 201
    answer = result.json
    assert list(answer) == [
        "broker_id", "cash_balance", "holdings", "created_at", "api_key", "webhook_secret",
    ]  # fmt: skip
    assert (answer["broker_id"], answer["cash_balance"]) == ("alice", 12.5)
    assert re.fullmatch(r"mx_[A-Za-z0-9_-]{43}", answer["api_key"])
    assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}", answer["webhook_secret"])
    own = secured.get("/brokers/alice/balance", headers=bearer(answer["api_key"]))
    assert own.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Basic {ADMIN}"},
        {"Authorization": "Bearer"},
        bearer("mx_" + "A" * 43),
        bearer(ADMIN + "y"),
    ],
    ids=["none", "another-scheme", "no-token", "unknown-key", "near-admin"],
)
def test_without_a_valid_token_it_is_401_with_the_bearer_challenge(
    secured: AppClient, keys: dict[str, str], headers: dict[str, str]
) -> None:
    for method, path in (
        ("POST", "/brokers"),
        ("POST", "/orders"),
        ("GET", "/brokers/alice/balance"),
        ("GET", "/brokers/alice/orders"),
        ("GET", "/orders/ord-1"),
        ("DELETE", "/orders/ord-1"),
        ("GET", "/webhooks"),
        ("POST", "/webhooks"),
        ("DELETE", "/webhooks/wh-1"),
        ("GET", "/metrics"),
        ("POST", "/brokers/alice/api_key"),
    ):
        result = secured.request(method, path, headers=headers, body="not json")
        assert (result.status_code, result.json) == (401, UNAUTHORIZED), (method, path)
        assert result.headers["www-authenticate"] == "Bearer"


def test_the_scheme_is_case_insensitive(secured: AppClient, keys: dict[str, str]) -> None:
    headers = {"Authorization": f"bEaReR {keys['alice']}"}
    assert secured.get("/brokers/alice/balance", headers=headers).status_code == 200


def test_route_and_method_come_before_the_token(secured: AppClient) -> None:
    assert secured.get("/nowhere").json["error"] == "not_found"
    assert secured.request("PUT", "/orders").json["error"] == "method_not_allowed"


def test_a_brokers_key_on_an_admin_endpoint_is_403(
    secured: AppClient, keys: dict[str, str]
) -> None:
    alice = bearer(keys["alice"])
    body = {"broker_id": "carol", "initial_cash": 1, "initial_holdings": []}
    for method, path in (
        ("POST", "/brokers"),
        ("GET", "/metrics"),
        ("POST", "/brokers/alice/api_key"),
        ("POST", "/brokers/alice/webhook_secret"),
    ):
        result = secured.request(method, path, headers=alice, json=body)
        assert (result.status_code, result.json) == (403, ADMIN_ONLY), (method, path)
    assert secured.get("/metrics", headers=bearer(ADMIN)).status_code == 200


def test_public_endpoints_need_no_token(secured: AppClient, keys: dict[str, str]) -> None:
    for path in ("/healthz", "/stocks", "/stocks/AAPL/book", "/stocks/AAPL/price", "/"):
        assert secured.get(path).status_code == 200, path
    assert secured.get("/openapi.json").status_code == 200


# -- ownership ----------------------------------------------------------------------------


def test_a_key_acts_for_its_own_broker_only(secured: AppClient, keys: dict[str, str]) -> None:
    alice = bearer(keys["alice"])
    assert secured.post("/orders", json=order("alice"), headers=alice).status_code == 201
    for named in ("bob", "nobody"):  # another broker, existing or not: 403
        result = secured.post("/orders", json=order(named), headers=alice)
        assert (result.status_code, result.json) == (403, forbidden_for(named))
        result = secured.get(f"/brokers/{named}/balance", headers=alice)
        assert (result.status_code, result.json) == (403, forbidden_for(named))
        result = secured.get(f"/brokers/{named}/orders", headers=alice)
        assert (result.status_code, result.json) == (403, forbidden_for(named))
        result = secured.get("/webhooks", query=f"broker_id={named}", headers=alice)
        assert (result.status_code, result.json) == (403, forbidden_for(named))
        hook = {"broker_id": named, "url": "https://h.example/x", "events": ["trade.executed"]}
        result = secured.post("/webhooks", json=hook, headers=alice)
        assert (result.status_code, result.json) == (403, forbidden_for(named))
    # the admin acts for everyone
    assert secured.post("/orders", json=order("bob"), headers=bearer(ADMIN)).status_code == 201
    assert secured.get("/brokers/bob/balance", headers=bearer(ADMIN)).status_code == 200


def test_field_validation_comes_before_the_ownership_check(
    secured: AppClient, keys: dict[str, str]
) -> None:
    alice = bearer(keys["alice"])
    result = secured.post("/orders", json={**order("bob"), "quantity": 0}, headers=alice)
    assert result.json["error"] == "validation_error"
    result = secured.get("/brokers/bob/orders", query="page=0", headers=alice)
    assert result.json["error"] == "validation_error"


def test_another_brokers_order_and_subscription_are_as_if_missing(
    secured: AppClient, keys: dict[str, str]
) -> None:
    alice, bob = bearer(keys["alice"]), bearer(keys["bob"])
    placed = secured.post("/orders", json=order("bob"), headers=bob).json["order_id"]
    missing = {"error": "order_not_found", "message": f"Order {placed} does not exist"}
    for method in ("GET", "DELETE"):
        result = secured.request(method, f"/orders/{placed}", headers=alice)
        assert (result.status_code, result.json) == (404, missing)
    assert secured.get(f"/orders/{placed}", headers=bob).status_code == 200
    assert secured.get(f"/orders/{placed}", headers=bearer(ADMIN)).status_code == 200

    hook = {"broker_id": "bob", "url": "https://h.example/x", "events": ["trade.executed"]}
    webhook_id = secured.post("/webhooks", json=hook, headers=bob).json["webhooks"][0]["webhook_id"]
    result = secured.delete(f"/webhooks/{webhook_id}", headers=alice)
    assert (result.status_code, result.json) == (
        404,
        {"error": "webhook_not_found", "message": f"Webhook {webhook_id} does not exist"},
    )
    assert secured.delete(f"/webhooks/{webhook_id}", headers=bob).status_code == 204
    assert secured.delete(f"/orders/{placed}", headers=bob).status_code == 200


# -- rotation ------------------------------------------------------------------------------


def test_a_new_api_key_revokes_the_old_one_at_once(
    secured: AppClient, keys: dict[str, str]
) -> None:
    result = secured.post("/brokers/alice/api_key", headers=bearer(ADMIN), body="ignored")
    assert result.status_code == 201
    assert list(result.json) == ["broker_id", "api_key"]
    assert result.json["broker_id"] == "alice"
    new = result.json["api_key"]
    assert new != keys["alice"]
    old = secured.get("/brokers/alice/balance", headers=bearer(keys["alice"]))
    assert (old.status_code, old.json) == (401, UNAUTHORIZED)
    assert secured.get("/brokers/alice/balance", headers=bearer(new)).status_code == 200


def test_a_new_webhook_secret_and_an_unknown_broker(
    secured: AppClient, keys: dict[str, str]
) -> None:
    result = secured.post("/brokers/alice/webhook_secret", headers=bearer(ADMIN))
    assert result.status_code == 201
    assert list(result.json) == ["broker_id", "webhook_secret"]
    assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}", result.json["webhook_secret"])
    for kind in ("api_key", "webhook_secret"):
        result = secured.post(f"/brokers/ghost/{kind}", headers=bearer(ADMIN))
        assert (result.status_code, result.json) == (
            404,
            {"error": "broker_not_found", "message": "Broker ghost does not exist"},
        )


def test_without_api_keys_the_rotation_routes_do_not_exist(client: AppClient) -> None:
    for kind in ("api_key", "webhook_secret"):
        result = client.post(f"/brokers/alice/{kind}")
        assert (result.status_code, result.json["error"]) == (404, "not_found")


# -- Idempotency-Key -------------------------------------------------------------------------


def test_a_key_is_scoped_per_principal_and_survives_a_rotation(
    secured: AppClient, keys: dict[str, str]
) -> None:
    alice = {**bearer(keys["alice"]), "Idempotency-Key": "k-1"}
    bob = {**bearer(keys["bob"]), "Idempotency-Key": "k-1"}
    first = secured.post("/orders", json=order("alice"), headers=alice)
    other = secured.post("/orders", json=order("bob", price=11), headers=bob)
    assert (first.status_code, other.status_code) == (201, 201)  # not each other's
    assert first.json["order_id"] != other.json["order_id"]

    rotated = secured.post("/brokers/alice/api_key", headers=bearer(ADMIN)).json["api_key"]
    retry = secured.post(
        "/orders", json=order("alice"), headers={**bearer(rotated), "Idempotency-Key": "k-1"}
    )
    assert retry.status_code == 201
    assert retry.json == first.json
    assert retry.headers["idempotent-replayed"] == "true"


def test_registration_ignores_idempotency_keys(secured: AppClient) -> None:
    body = {"broker_id": "alice", "initial_cash": 1, "initial_holdings": []}
    headers = {**bearer(ADMIN), "Idempotency-Key": "k-1"}
    assert secured.post("/brokers", json=body, headers=headers).status_code == 201
    again = secured.post("/brokers", json=body, headers=headers)
    assert (again.status_code, again.json["error"]) == (409, "broker_already_exists")
    assert "idempotent-replayed" not in again.headers


# -- logs ------------------------------------------------------------------------------------


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "request"]


def test_the_access_line_names_the_broker_and_no_line_holds_a_token(
    secured: AppClient, keys: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        secured.get("/brokers/alice/balance", headers=bearer(keys["alice"]))
        secured.get("/brokers/bob/balance", headers=bearer(ADMIN))
        secured.get("/brokers/bob/balance", headers=bearer(keys["alice"]))  # 403
        secured.get("/brokers/bob/balance", headers=bearer("mx_wrong"))  # 401
        secured.get("/healthz")
        rotated = secured.post("/brokers/alice/api_key", headers=bearer(ADMIN)).json["api_key"]
    lines = access_lines(caplog)
    assert [(r.status, r.broker_id) for r in lines] == [  # type: ignore[attr-defined]
        (200, "alice"), (200, None), (403, "alice"), (401, None), (200, None), (201, None),
    ]  # fmt: skip
    secrets = (ADMIN, keys["alice"], keys["bob"], rotated, "mx_wrong")
    for record in caplog.records:
        text = record.getMessage() + repr(vars(record))
        assert not any(secret in text for secret in secrets), record


def test_without_api_keys_the_access_line_has_no_broker_field(
    client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        client.get("/healthz")
    (line,) = access_lines(caplog)
    assert not hasattr(line, "broker_id")


# -- the document of the running mode -------------------------------------------------------


def test_the_served_document_declares_the_bearer_scheme_and_each_operations_token(
    secured: AppClient,
) -> None:
    document = secured.get("/openapi.json").json
    OpenAPIV31SpecValidator(document).validate()
    assert document["components"]["securitySchemes"] == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "The admin token, or a broker's API key (`mx_…`).",
        }
    }
    paths = document["paths"]
    for path, method in (
        ("/brokers", "post"),
        ("/orders", "post"),
        ("/orders/{order_id}", "get"),
        ("/orders/{order_id}", "delete"),
        ("/brokers/{broker_id}/balance", "get"),
        ("/brokers/{broker_id}/orders", "get"),
        ("/webhooks", "get"),
        ("/webhooks", "post"),
        ("/webhooks/{webhook_id}", "delete"),
        ("/metrics", "get"),
        ("/brokers/{broker_id}/api_key", "post"),
        ("/brokers/{broker_id}/webhook_secret", "post"),
    ):
        operation = paths[path][method]
        assert operation["security"] == [{"bearer": []}], (path, method)
        assert operation["responses"]["401"] == {"$ref": "#/components/responses/Unauthorized"}
        assert operation["responses"]["403"] == {"$ref": "#/components/responses/Forbidden"}
    for path in ("/healthz", "/stocks", "/stocks/{symbol}/book", "/openapi.json", "/docs", "/"):
        assert "security" not in paths[path]["get"], path
        assert "401" not in paths[path]["get"]["responses"], path
    registration = paths["/brokers"]["post"]
    assert {"$ref": "#/components/parameters/IdempotencyKey"} not in registration["parameters"]
    registered = document["components"]["schemas"]["RegisteredBroker"]
    assert {"api_key", "webhook_secret"} <= set(registered["required"])


def test_without_api_keys_the_document_is_the_repositorys(client: AppClient) -> None:
    document = client.get("/openapi.json").json
    assert "securitySchemes" not in document["components"]
    assert "/brokers/{broker_id}/api_key" not in document["paths"]
