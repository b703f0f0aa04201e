"""Idempotent retries with `Idempotency-Key` on the three POSTs."""

from __future__ import annotations

import asyncio
import base64
import gc
import sqlite3
import threading
import tracemalloc
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pykka
import pytest

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.seam import EmbeddedEngine, Engine
from miniexchange.http.app import Lifespan, create_app
from miniexchange.http.core import MAX_BODY_BYTES
from miniexchange.http.fingerprint import fingerprint
from miniexchange.http.json_body import parse_json_object
from miniexchange.model.errors import ExchangeError
from miniexchange.settings import load_settings
from miniexchange.testing import FakeDeliveries, ManualClock
from tests.conftest import AppClient
from tests.http.helpers import FAR, balance, journaled_app, register

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

    client = journaled_app(clock, path)
    register(client, "b1", 1000)
    first = client.post("/orders", json=order_body(), headers=keyed("after-crash"))
    refused = client.post("/orders", json=order_body(quantity=999), headers=keyed("too-big"))
    client.close()
    pykka.ActorRegistry.stop_all()

    client = journaled_app(clock, path)
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


# -- bounds on what is kept (IDEMPOTENCY_MAX_KEYS, IDEMPOTENCY_TTL, the digest) ------------


def lifespan_of(app: Any) -> Lifespan:
    return next(ware for ware in app._unprepared_middleware if isinstance(ware, Lifespan))


class Restarts:
    """The app as served, on one journal file, started again and again like a restarted
    worker (`create_app` builds the exchange from the settings)."""

    def __init__(self, path: Path, clock: ManualClock, **env: str) -> None:
        self.path = str(path)
        self.clock = clock
        self.settings = load_settings({"DATABASE_PATH": self.path, **env})
        self.exchange: Engine | None = None

    def start(self) -> AppClient:
        app = create_app(self.settings, clock=self.clock)
        self.exchange = lifespan_of(app).engine
        return AppClient(app)

    def answer_facts(self) -> list[dict[str, Any]]:
        with closing(sqlite3.connect(self.path)) as db:
            rows = db.execute(
                "SELECT body FROM facts WHERE kind = 'idempotent_answer' ORDER BY seq"
            )
            return [orjson.loads(body) for (body,) in rows]


def stop(client: AppClient) -> None:
    client.close()
    pykka.ActorRegistry.stop_all()


def assert_replays(client: AppClient, key: str, answered: Any) -> None:
    """The same order under `key` is the stored answer, replayed byte for byte."""
    replay = client.post("/orders", json=order_body(), headers=keyed(key))
    assert (replay.content, replay.headers.get("idempotent-replayed")) == (
        answered.content,
        "true",
    )


def test_past_max_keys_the_oldest_key_is_forgotten_also_after_a_restart(tmp_path: Path) -> None:
    clock = ManualClock.at("2026-02-17T09:00:00Z")
    app = Restarts(tmp_path / "journal.db", clock, IDEMPOTENCY_MAX_KEYS="3")
    client = app.start()
    try:
        register(client, "b1", 1000)
        first = {}
        for key in ("k1", "k2", "k3", "k4"):
            first[key] = client.post("/orders", json=order_body(), headers=keyed(key))
            assert first[key].status_code == 201
            clock.advance(seconds=1)
        for key in ("k2", "k3", "k4"):
            assert_replays(client, key, first[key])
        anew = client.post("/orders", json=order_body(), headers=keyed("k1"))
        assert (anew.status_code, anew.headers.get("idempotent-replayed")) == (201, None)
        assert anew.json["order_id"] != first["k1"].json["order_id"]  # a fifth order
        assert client.get("/brokers/b1/orders").json["total"] == 5
    finally:
        stop(client)

    client = app.start()  # the journal holds k1, k2, k3, k4 and k1 again: k2 went last
    try:
        assert app.exchange is not None and len(app.exchange.recovered_answers) == 0
        for key, answered in (("k3", first["k3"]), ("k4", first["k4"]), ("k1", anew)):
            assert_replays(client, key, answered)
        again = client.post("/orders", json=order_body(), headers=keyed("k2"))
        assert (again.status_code, again.headers.get("idempotent-replayed")) == (201, None)
        assert client.get("/brokers/b1/orders").json["total"] == 6
    finally:
        stop(client)


def test_a_restart_forgets_what_is_over_max_keys_in_the_journal(tmp_path: Path) -> None:
    """Four keys kept under the default cap; restarted with IDEMPOTENCY_MAX_KEYS=3,
    recovery itself forgets the oldest."""
    clock = ManualClock.at("2026-02-17T09:00:00Z")
    client = Restarts(tmp_path / "journal.db", clock).start()
    try:
        register(client, "b1", 1000)
        first = {}
        for key in ("k1", "k2", "k3", "k4"):
            first[key] = client.post("/orders", json=order_body(), headers=keyed(key))
            clock.advance(seconds=1)
    finally:
        stop(client)
    app = Restarts(tmp_path / "journal.db", clock, IDEMPOTENCY_MAX_KEYS="3")
    client = app.start()
    try:
        for key in ("k2", "k3", "k4"):
            assert_replays(client, key, first[key])
        anew = client.post("/orders", json=order_body(), headers=keyed("k1"))
        assert (anew.status_code, anew.headers.get("idempotent-replayed")) == (201, None)
        assert client.get("/brokers/b1/orders").json["total"] == 5
        assert app.exchange is not None and len(app.exchange.recovered_answers) == 0  # taken
    finally:
        stop(client)


def ghost_order(client: AppClient, key: str, padding: str) -> None:
    """An order of an unknown broker with a member the endpoint ignores: its 404 is kept."""
    body = order_body(broker_id="ghost", padding=padding)
    result = client.post("/orders", json=body, headers=keyed(key))
    assert result.json["error"] == "broker_not_found"


IGNORED_MEMBER = MAX_BODY_BYTES - 1024  # the rest of the body fits in the last KiB


def kept_bytes() -> int:
    """What is still referenced (a refusal's traceback holds its request's frames in a
    cycle until the collector runs: garbage, not kept)."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_a_kept_key_costs_the_same_whatever_the_request_carried(tmp_path: Path) -> None:
    """Twenty keys with a 1-byte ignored member, then twenty with a 1 MiB one: the
    journal's answer facts are the same size, and so is what memory keeps of them."""
    app = Restarts(tmp_path / "journal.db", ManualClock.at("2026-02-17T09:00:00Z"))
    client = app.start()
    try:
        ghost_order(client, "warm-up", "x")
        tracemalloc.start()
        try:
            before = kept_bytes()
            for index in range(20):
                ghost_order(client, f"small-{index:02}", "x")
            small = kept_bytes() - before
            for index in range(20):
                ghost_order(client, f"large-{index:02}", "x" * IGNORED_MEMBER)
            ghost_order(client, "last", "x")  # the idle journal writer holds its last batch
            large = kept_bytes() - before - small
        finally:
            tracemalloc.stop()
        sizes = {fact["key"]: len(orjson.dumps(fact)) for fact in app.answer_facts()}
    finally:
        stop(client)
    assert {sizes[f"large-{index:02}"] for index in range(20)} == {sizes["small-00"]}
    assert large < small + 64 * 1024, (small, large)  # not one ignored member kept


def refusals_left_in_cycles(requests: Callable[[], None]) -> list[ExchangeError]:
    """The refusals the collector finds unreachable (in a cycle) after `requests`: had
    a refusal's traceback and the frame raising it held each other, the request and its
    body would stay in memory until the garbage collector happened to run."""
    gc.collect()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable is kept to look at
    try:
        requests()
        gc.collect()
        return [found for found in gc.garbage if isinstance(found, ExchangeError)]
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()


def test_a_refusal_decided_here_holds_no_request_in_a_cycle(client: AppClient) -> None:
    """An order of an unknown broker, without a key (decided by the HTTP layer)."""

    def requests() -> None:
        result = client.post("/orders", json=order_body(broker_id="ghost", padding="x" * 1000))
        assert result.json["error"] == "broker_not_found"

    assert refusals_left_in_cycles(requests) == []


def test_a_refusal_an_actor_decides_holds_no_request_in_a_cycle(client: AppClient) -> None:
    """A bid the broker cannot fund, a registration twice: the actors' refusals travel
    back through the bridge to the event loop."""
    register(client, "poor", 0)
    register(client, "twice", 0)

    def requests() -> None:
        result = client.post("/orders", json=order_body(broker_id="poor", padding="x" * 1000))
        assert result.json["error"] == "insufficient_balance"
        again = {"broker_id": "twice", "initial_cash": 1, "initial_holdings": [], "x": "x" * 1000}
        assert client.post("/brokers", json=again).json["error"] == "broker_already_exists"

    assert refusals_left_in_cycles(requests) == []


def test_answers_journaled_in_the_earlier_encoding_still_replay(tmp_path: Path) -> None:
    """Journals written before kept each request's whole fingerprint (base64) where the
    digest now is; such a journal is read, and its answers replay after the restart."""
    app = Restarts(tmp_path / "journal.db", ManualClock.at("2026-02-17T09:00:00Z"))
    bodies = {"placed": order_body(), "ghost": order_body(broker_id="ghost")}
    client = app.start()
    try:
        register(client, "b1", 1000)
        first = {key: client.post("/orders", json=body, headers=keyed(key))
                 for key, body in bodies.items()}  # fmt: skip
    finally:
        stop(client)
    with closing(sqlite3.connect(app.path)) as db, db:
        rows = db.execute("SELECT seq, body FROM facts WHERE kind = 'idempotent_answer'")
        answer_rows = rows.fetchall()
        assert len(answer_rows) == 2
        for seq, fact_body in answer_rows:
            fact = orjson.loads(fact_body)
            assert len(base64.b64decode(fact.pop("digest"))) == 32
            request = parse_json_object("application/json", orjson.dumps(bodies[fact["key"]]))
            fact["fingerprint"] = base64.b64encode(fingerprint(request)).decode()
            db.execute("UPDATE facts SET body = ? WHERE seq = ?", (orjson.dumps(fact), seq))
    client = app.start()
    try:
        for key, body in bodies.items():
            replay = client.post("/orders", json=body, headers=keyed(key))
            assert (replay.status_code, replay.content) == (
                first[key].status_code,
                first[key].content,
            )
            assert replay.headers["idempotent-replayed"] == "true"
        other = client.post("/orders", json=order_body(quantity=6), headers=keyed("placed"))
        assert other.json["error"] == "idempotency_key_reused"
        assert client.get("/brokers/b1/orders").json["total"] == 1
    finally:
        stop(client)


def test_the_served_app_forgets_expired_keys_while_no_request_comes(
    clock: ManualClock, exchange: Exchange
) -> None:
    app = create_app(load_settings({}), clock=clock, engine=EmbeddedEngine(exchange))
    store = lifespan_of(app).idempotency
    assert store is not None
    client = AppClient(app)
    try:
        register(client, "b1", 1000)
        assert client.post("/orders", json=order_body(), headers=keyed("k")).status_code == 201
        assert len(store) == 1
        clock.advance(seconds=24 * 3600)
        # The sweep runs every second on the event loop: one falls due before this wakes.
        client.run(lambda conductor: asyncio.sleep(1.5))
        assert len(store) == 0
    finally:
        stop(client)
