"""The OpenAPI document and its pages, and schemathesis against the app in process.

- The document is valid OpenAPI 3.1, documents every endpoint of the API with the
  statuses and error codes each may answer, gives every JSON answer its JSON schema, and
  is served as-is at `/openapi.json`.
- `/docs` is Swagger UI whose every asset is served by the app itself.
- schemathesis generates requests from the document (the file `/openapi.json` serves, as
  checked above) and runs them against the ASGI app in process (real actors, manual clock,
  seeded state; webhooks recorded, never sent), checking for server errors, undocumented
  statuses, response bodies off their schema and wrong content types.
  `tests/e2e/test_schemathesis.py` runs schemathesis' own command against the real server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import hypothesis
import orjson
import pykka
import pytest
import schemathesis
import yaml
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import miniexchange.http
from miniexchange.actors.exchange import Exchange
from miniexchange.actors.seam import EmbeddedEngine
from miniexchange.http.app import create_app
from miniexchange.http.docs import OpenApiResource
from miniexchange.settings import Settings, load_settings
from miniexchange.testing import FakeDeliveries, ManualClock, SequentialIds, run_expiration
from tests.conftest import START, AppClient
from tests.http.helpers import FAR
from tests.seeded_generation import EVENTS, GENERATION_HOOKS, SEEDS, Seeds, seeded

OPENAPI_FILE = Path(miniexchange.http.__file__).with_name("openapi.yaml")

# -- the API's endpoint index --------------------------------------------------------------

BODY_POST_ERRORS = {
    413: {"payload_too_large"},
    409: {"idempotency_key_in_progress"},
    422: {"idempotency_key_reused"},
}

# (method, path) -> {status: error codes}; an empty set for a success status.
ENDPOINT_INDEX: dict[tuple[str, str], dict[int, set[str]]] = {
    ("POST", "/brokers"): {
        201: set(),
        400: {"invalid_request", "validation_error"},
        409: {"broker_already_exists"},
    },
    ("POST", "/orders"): {
        201: set(),
        400: {"invalid_request", "validation_error"},
        404: {"broker_not_found"},
        409: {"no_liquidity", "insufficient_balance", "insufficient_holdings"},
    },
    ("GET", "/orders/{order_id}"): {200: set(), 404: {"order_not_found"}},
    ("DELETE", "/orders/{order_id}"): {
        200: set(),
        404: {"order_not_found"},
        409: {"order_not_cancellable"},
    },
    ("GET", "/stocks/{symbol}/price"): {200: set(), 404: {"symbol_not_found"}},
    ("GET", "/stocks/{symbol}/book"): {
        200: set(),
        400: {"validation_error"},
        404: {"symbol_not_found"},
    },
    ("GET", "/stocks/{symbol}/quote"): {
        200: set(),
        400: {"validation_error"},
        404: {"symbol_not_found"},
    },
    ("GET", "/brokers/{broker_id}/balance"): {200: set(), 404: {"broker_not_found"}},
    ("GET", "/brokers/{broker_id}/orders"): {
        200: set(),
        400: {"validation_error"},
        404: {"broker_not_found"},
    },
    ("POST", "/webhooks"): {
        201: set(),
        200: set(),
        400: {"invalid_request", "validation_error"},
        404: {"broker_not_found"},
    },
    ("GET", "/webhooks"): {200: set(), 400: {"validation_error"}, 404: {"broker_not_found"}},
    ("DELETE", "/webhooks/{webhook_id}"): {204: set(), 404: {"webhook_not_found"}},
    ("GET", "/healthz"): {200: set()},
    ("GET", "/stocks"): {200: set()},
    ("GET", "/stocks/{symbol}/trades"): {
        200: set(),
        400: {"validation_error"},
        404: {"symbol_not_found"},
    },
    ("GET", "/stocks/{symbol}/candles"): {
        200: set(),
        400: {"validation_error"},
        404: {"symbol_not_found"},
    },
    ("GET", "/stocks/{symbol}/stream"): {200: set(), 404: {"symbol_not_found"}},
    ("GET", "/metrics"): {200: set()},
    ("GET", "/openapi.json"): {200: set()},
    ("GET", "/docs"): {200: set()},
    ("GET", "/"): {200: set()},
    ("GET", "/static/{path}"): {200: set(), 404: {"not_found"}},
}
for _method, _path in (("POST", "/brokers"), ("POST", "/orders"), ("POST", "/webhooks")):
    for _status, _codes in BODY_POST_ERRORS.items():
        ENDPOINT_INDEX[_method, _path].setdefault(_status, set()).update(_codes)

# Every body is JSON except a 204's (none) and the successes of these: the event stream,
# the Prometheus text, the two pages for people and the market page's files. Their errors
# are JSON too.
SUCCESS_MEDIA_TYPES = {
    ("GET", "/stocks/{symbol}/stream"): "text/event-stream",
    ("GET", "/metrics"): "text/plain",
    ("GET", "/docs"): "text/html",
    ("GET", "/"): "text/html",
    ("GET", "/static/{path}"): "text/javascript",
}

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


# -- reading the document ------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a repeated mapping key (PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return yaml.load(OPENAPI_FILE.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)


def resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def error_codes(document: dict[str, Any], schema: Any) -> set[str]:
    """The `error` codes an error schema allows (its narrowest enum or const)."""
    schema = resolve(document, schema)
    codes: set[str] | None = None
    for part in schema.get("allOf", []):
        part = resolve(document, part)
        error = resolve(document, part.get("properties", {}).get("error", {}))
        if "const" in error:
            codes = {error["const"]}
        elif "enum" in error and codes is None:
            codes = set(error["enum"])
    if codes is None:
        error = resolve(document, schema.get("properties", {}).get("error", {}))
        codes = set(error.get("enum", []))
    return codes


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def json_only(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(json_only(item) for item in value)
    return value is None or isinstance(value, str | int | float | bool)


# -- the document --------------------------------------------------------------------------


def test_document_is_valid_openapi_31(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(document).validate()
    # YAML would turn an unquoted timestamp into a datetime: only JSON values are allowed,
    # so that /openapi.json is exactly this file.
    assert json_only(document)


def test_every_endpoint_is_documented(document: dict[str, Any]) -> None:
    assert set(operations(document)) == set(ENDPOINT_INDEX)


@pytest.mark.parametrize("endpoint", sorted(ENDPOINT_INDEX), ids=" ".join)
def test_statuses_and_error_codes_of_the_index(
    document: dict[str, Any], endpoint: tuple[str, str]
) -> None:
    responses = operations(document)[endpoint]["responses"]
    for status, codes in ENDPOINT_INDEX[endpoint].items():
        assert str(status) in responses, f"{endpoint} lacks {status}"
        response = resolve(document, responses[str(status)])
        headers = response.get("headers", {})
        assert "X-Request-Id" in headers, f"{endpoint} {status} lacks X-Request-Id"
        if status == 204:
            assert "content" not in response
            continue
        content = response["content"]
        if not codes:  # a success
            media_type = SUCCESS_MEDIA_TYPES.get(endpoint, "application/json")
            assert any(name.split(";")[0] == media_type for name in content), endpoint
            continue
        schema = content["application/json"]["schema"]
        assert codes <= error_codes(document, schema), (endpoint, status)
    for status, response in responses.items():  # every error status has the error shape
        if status.startswith(("4", "5")):
            schema = resolve(document, response)["content"]["application/json"]["schema"]
            assert error_codes(document, schema), (endpoint, status)


def _api_key_document() -> dict[str, Any]:
    """What an app built with `AUTH=api_key` serves at `/openapi.json` (no lifespan needed):
    the document plus the bearer scheme, 401/403 and the routes that issue credentials."""
    clock = ManualClock.at(START)
    settings = load_settings({"AUTH": "api_key", "ADMIN_TOKEN": "t" * 32})
    exchange = Exchange(clock, SequentialIds(), FakeDeliveries(), expiration_interval_s=None)
    resource, *_ = create_app(settings, clock=clock, engine=EmbeddedEngine(exchange))._router.find(
        "/openapi.json"
    )
    assert isinstance(resource, OpenApiResource)
    return orjson.loads(resource.body)


@pytest.mark.parametrize("auth", ["none", "api_key"])
def test_every_json_answer_has_a_json_schema(document: dict[str, Any], auth: str) -> None:
    """Each documented response whose body is JSON (all but a 204 and the successes of
    `SUCCESS_MEDIA_TYPES`) offers `application/json` alone, with a schema, so that a client
    and schemathesis know the body's shape."""
    served = document if auth == "none" else _api_key_document()
    gaps = []
    for (method, path), operation in operations(served).items():
        for status, response in operation["responses"].items():
            response = resolve(served, response)
            content = response.get("content", {})
            if status == "204":
                assert not content, (method, path, status)
                continue
            if status.startswith("2") and (method, path) in SUCCESS_MEDIA_TYPES:
                continue
            schema = content.get("application/json", {}).get("schema")
            if set(content) != {"application/json"} or not isinstance(schema, dict) or not schema:
                gaps.append(f"{method} {path} {status}: {sorted(content)}")
    assert gaps == []


def test_the_request_id_header_is_never_refused(document: dict[str, Any]) -> None:
    """An unusable `X-Request-Id` is replaced by a generated one, never refused: the
    parameter accepts every string, so that no client (nor schemathesis) reads a rule
    into it whose breach would be an error. Its description says what happens instead."""
    seen = 0
    for (method, path), operation in operations(document).items():
        parameters = [
            *document["paths"][path].get("parameters", []),
            *operation.get("parameters", []),
        ]
        for parameter in (resolve(document, p) for p in parameters):
            if parameter["name"] == "X-Request-Id":
                seen += 1
                assert parameter["schema"] == {"type": "string"}, (method, path)
                assert "replaced" in parameter["description"], (method, path)
    assert seen == len(operations(document))


def test_only_optional_query_parameters_may_be_empty(document: dict[str, Any]) -> None:
    """An empty query value counts as absent: an optional parameter then takes its
    default (`allowEmptyValue`), a required one is missing (a 400)."""
    for (_method, path), operation in operations(document).items():
        for parameter in (resolve(document, p) for p in operation.get("parameters", [])):
            if parameter["in"] == "query":
                optional = not parameter.get("required", False)
                assert parameter.get("allowEmptyValue", False) is optional, (path, parameter)


REQUIRED_QUERY = {"side": "bid", "quantity": "1", "broker_id": "B"}


def test_an_empty_optional_query_parameter_counts_as_absent(
    client: AppClient, document: dict[str, Any]
) -> None:
    assert client.post("/brokers", json={"broker_id": "B", "initial_cash": 1, "initial_holdings": [{"symbol": "AAPL", "quantity": 1}]}).status_code == 201  # fmt: skip
    checked = 0
    for (method, path), operation in operations(document).items():
        parameters = [resolve(document, p) for p in operation.get("parameters", [])]
        required = "&".join(
            f"{p['name']}={REQUIRED_QUERY[p['name']]}"
            for p in parameters
            if p["in"] == "query" and p.get("required")
        )
        for parameter in parameters:
            if parameter.get("allowEmptyValue"):
                url = path.format(symbol="AAPL", broker_id="B")
                empty = "&".join(filter(None, [required, f"{parameter['name']}="]))
                absent = client.request(method, url, query=required or None)
                sent = client.request(method, url, query=empty)
                assert (sent.status_code, sent.text) == (200, absent.text), (path, empty)
                checked += 1
    assert checked == 9


def test_headers_of_the_posts(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document).items():
        names = {resolve(document, p)["name"] for p in operation.get("parameters", [])}
        names |= {
            resolve(document, p)["name"] for p in document["paths"][path].get("parameters", [])
        }
        assert "X-Request-Id" in names, (method, path)
        if method == "POST":
            assert "Idempotency-Key" in names, path
            created = resolve(document, operation["responses"]["201"])
            assert "Idempotent-Replayed" in created["headers"], path


def test_error_codes_are_the_apis(document: dict[str, Any]) -> None:
    codes = set(document["components"]["schemas"]["ErrorCode"]["enum"])
    assert codes == {
        "invalid_request", "validation_error", "not_found", "broker_not_found",
        "order_not_found", "symbol_not_found", "webhook_not_found", "method_not_allowed",
        "broker_already_exists", "insufficient_balance", "insufficient_holdings",
        "no_liquidity", "order_not_cancellable", "payload_too_large",
        "idempotency_key_in_progress", "idempotency_key_reused", "journal_unavailable",
        "request_timeout", "symbol_limit_reached", "symbol_unavailable",
        "headers_too_large", "overloaded",
    }  # fmt: skip


# -- serving it ----------------------------------------------------------------------------


def test_openapi_json_is_the_repository_document(
    client: AppClient, document: dict[str, Any]
) -> None:
    first = client.get("/openapi.json")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert orjson.loads(first.content) == document
    assert client.get("/openapi.json").content == first.content  # built once, not per request


class _AssetLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_docs_is_html_whose_every_asset_the_app_serves(client: AppClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text
    assert "validatorUrl: null" in page.text  # Swagger UI would call an online validator
    parser = _AssetLinks()
    parser.feed(page.text)
    urls = [url for url in parser.urls if not url.startswith("data:")]
    assert len(urls) >= 2  # the script and the stylesheet
    kinds = set()
    for url in urls:
        absolute = urlsplit(urljoin("http://testserver/docs", url))
        assert absolute.netloc == "testserver", f"{url} is not served by the exchange"
        asset = client.get(absolute.path)
        assert asset.status_code == 200, url
        assert asset.content, url
        kind = asset.headers["content-type"].split(";")[0]
        kinds.add(kind)
        # a source map the asset names is served too
        match = re.search(rb"sourceMappingURL=(\S+?)(?:\s*\*/)?\s*$", asset.content[-300:])
        if match:
            source_map = client.get(urljoin(absolute.path, match.group(1).decode()))
            assert source_map.status_code == 200, match.group(1)
    assert kinds == {"text/javascript", "text/css"}


def test_docs_assets_outside_the_list_are_not_found(client: AppClient) -> None:
    for path in ("/docs/nope.js", "/docs/index.html", "/docs/..%2F..%2Fpyproject.toml"):
        result = client.get(path)
        assert result.status_code == 404
        assert result.json["error"] == "not_found"


def test_docs_methods(client: AppClient) -> None:
    for method, path in (("HEAD", "/docs"), ("POST", "/openapi.json"), ("DELETE", "/docs/x")):
        result = client.request(method, path)
        assert result.status_code == 405
        assert result.headers["allow"] == "GET"


# -- schemathesis --------------------------------------------------------------------------


class WithoutLifespan:
    """The app as schemathesis gets it: schemathesis' lifespan messages are answered here.

    The `served` fixture runs the app's real lifespan once (startup starts the actors,
    shutdown stops them). schemathesis' ASGI client would run it again for each test and
    end it after, and an `Exchange` cannot start twice, so its messages stop here.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


NEVER_CALLED = ["https://receiver.test/a", "https://receiver.test/b"]
"""Subscription URLs of the runs in process. Their deliveries go to a `FakeDeliveries`,
which records them and sends nothing (`.test` names do not resolve either)."""


def _register(client: AppClient, broker_id: str, cash: float, **holdings: int) -> None:
    body = {
        "broker_id": broker_id,
        "initial_cash": cash,
        "initial_holdings": [{"symbol": s, "quantity": q} for s, q in holdings.items()],
    }
    assert client.post("/brokers", json=body).status_code == 201


def _order(client: AppClient, **fields: Any) -> str:
    body = {"document_number": "12345678900", "symbol": "AAPL", **fields}
    if body["type"] == "limit":
        body.setdefault("expires_at", FAR)
    result = client.post("/orders", json=body)
    assert result.status_code == 201, result.text
    order_id: str = result.json["order_id"]
    return order_id


def seed(client: AppClient, clock: ManualClock, exchange: Exchange) -> Seeds:
    """Brokers, and orders in every state: pending, partly filled, filled, cancelled by
    DELETE and by IOC, expired; symbols with trades, and one only named in holdings;
    subscriptions that see trades, a cancel and an expiry."""
    _register(client, "alice", 1_000_000, AAPL=5000, GOOG=200)
    _register(client, "bob", 500_000.5, AAPL=1000)
    _register(client, "carol", 0, MSFT=10)  # MSFT: known, no orders
    webhook_ids = []
    for broker_id in ("alice", "bob"):
        subscribed = client.post(
            "/webhooks", json={"broker_id": broker_id, "url": NEVER_CALLED[0], "events": EVENTS}
        )
        assert subscribed.status_code == 201, subscribed.text
        webhook_ids += [webhook["webhook_id"] for webhook in subscribed.json["webhooks"]]
    ids = [
        _order(client, type="limit", broker_id="alice", side="ask", price=150, quantity=100),
        _order(client, type="limit", broker_id="bob", side="bid", price=149.5, quantity=50),
        _order(client, type="limit", broker_id="bob", side="bid", price=151, quantity=30),
        _order(client, type="market", broker_id="bob", side="bid", quantity=10),
        _order(client, type="market", broker_id="alice", side="ask", quantity=80),
        _order(client, type="limit", broker_id="alice", side="ask", price=2800, quantity=5,
               symbol="GOOG"),
        _order(client, type="limit", broker_id="alice", side="ask", price=160, quantity=7,
               expires_at="2026-02-17T09:00:01Z"),
        _order(client, type="limit", broker_id="bob", side="bid", price=140, quantity=5),
    ]  # fmt: skip
    assert client.delete(f"/orders/{ids[-1]}").status_code == 200
    clock.advance(seconds=2)
    run_expiration(exchange)
    statuses = {client.get(f"/orders/{order_id}").json["status"] for order_id in ids}
    assert statuses == {"pending", "partially_filled", "filled", "cancelled", "expired"}
    return seeded(ids, webhook_ids, NEVER_CALLED, expires_at=FAR)


def serve_seeded(
    settings: Settings, recorder: FakeDeliveries, client_class: type[AppClient] = AppClient
) -> Iterator[WithoutLifespan]:
    """The app with real actors and a manual clock, started by its own lifespan (through
    the conductor of `client_class`, which also seeds it), with seeded state; shared by a
    module's tests, so the state grows from one operation's run to the next."""
    clock = ManualClock.at(START)
    exchange = Exchange(clock, SequentialIds(), recorder, expiration_interval_s=None)
    app = create_app(settings, clock=clock, engine=EmbeddedEngine(exchange))
    client = client_class(app)  # lifespan startup: the exchange starts
    try:
        SEEDS.replace(seed(client, clock, exchange))
        yield WithoutLifespan(app)
    finally:
        SEEDS.replace(Seeds())
        client.close()  # lifespan shutdown: the exchange stops
        pykka.ActorRegistry.stop_all()


@pytest.fixture(scope="module")
def served(refused: list[str], recorder: FakeDeliveries) -> Iterator[WithoutLifespan]:
    yield from serve_seeded(load_settings({}), recorder)


SCHEMA = schemathesis.openapi.from_path(OPENAPI_FILE)
for _hook in GENERATION_HOOKS:
    SCHEMA.hook(_hook)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]


@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.filter_too_much],
)
def test_schemathesis_finds_nothing(case: Any, served: WithoutLifespan) -> None:
    # An event stream does not end by itself: the client keeps what arrived by the deadline.
    timeout = 0.25 if case.path.endswith("/stream") else 30
    case.call_and_validate(app=served, checks=CHECKS, timeout=timeout)


def test_webhooks_were_due_and_none_left_the_machine(
    served: WithoutLifespan, recorder: FakeDeliveries, refused: list[str]
) -> None:
    """The seeded subscriptions saw trades, a cancel and an expiry, so the exchange had
    deliveries to make; the recorder took them, and nothing tried to reach the network."""
    assert {delivery.event_type for delivery in recorder.recorded()} == set(EVENTS)
    assert refused == []
