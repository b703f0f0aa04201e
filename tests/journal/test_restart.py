"""Restart round trips through the public API: nothing acknowledged is lost.

Each test runs the in-process app with real actors and an SQLite journal on a temporary
file, stops it, builds a fresh app on the same file and compares what every endpoint
answers, field by field. The manual clock does not move across a restart unless the
test says so, so `snapshot_at`, `quoted_at` and the VWAP window read alike.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.seam import EmbeddedEngine
from miniexchange.http.app import create_app
from miniexchange.journal.store import Journal, SqliteJournal
from miniexchange.settings import load_settings
from miniexchange.testing import FakeDeliveries, ManualClock, SequentialIds
from tests.conftest import START, AppClient
from tests.http.helpers import FAR, balance, limit, market, register
from tests.journal.support import FailingJournal, SlowJournal, ids_after, ids_used

STATUSES = ("pending", "partially_filled", "filled", "cancelled", "expired")
JOURNAL_UNAVAILABLE = {
    "error": "journal_unavailable",
    "message": "The exchange cannot record this request; retry later",
}


@pytest.fixture(autouse=True)
def stop_all_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


def open_app(clock: ManualClock, journal: Journal, ids: SequentialIds | None = None) -> AppClient:
    exchange = Exchange(
        clock, ids or SequentialIds(), FakeDeliveries(), expiration_interval_s=None, journal=journal
    )
    return AppClient(create_app(load_settings({}), clock=clock, engine=EmbeddedEngine(exchange)))


def created(result: Any) -> dict[str, Any]:
    assert result.status_code == 201, result.text
    return result.json


def snapshot(
    client: AppClient, brokers: list[str], symbols: list[str], order_ids: list[str]
) -> dict[str, tuple[int, Any]]:
    """What every read endpoint answers: path -> (status, body)."""
    views: dict[str, tuple[int, Any]] = {}

    def read(path: str, query: str | None = None) -> Any:
        result = client.get(path, query=query)
        views[f"{path}?{query or ''}"] = (result.status_code, result.json)
        return result.json

    for order_id in order_ids:
        read(f"/orders/{order_id}")
    read("/orders/ord-nonexistent")
    for broker_id in brokers:
        read(f"/brokers/{broker_id}/balance")
        for status in (None, *STATUSES):
            page = 1
            while True:  # every page, and the first one past the end
                query = f"limit=2&page={page}" + (f"&status={status}" if status else "")
                if not read(f"/brokers/{broker_id}/orders", query)["orders"]:
                    break
                page += 1
        read("/webhooks", f"broker_id={broker_id}")
    read("/brokers/nobody/balance")
    for symbol in [*symbols, "NOPE"]:
        read(f"/stocks/{symbol}/book", "depth=50")
        read(f"/stocks/{symbol}/price")
        for side in ("bid", "ask"):
            read(f"/stocks/{symbol}/quote", f"side={side}&quantity=100000")
            read(f"/stocks/{symbol}/quote", f"side={side}&quantity=7")
    return views


def listed(views: dict[str, tuple[int, Any]], broker_id: str) -> list[str]:
    """The order ids of a broker, from the snapshot's unfiltered listing pages."""
    ids: list[str] = []
    page = 1
    while orders := views[f"/brokers/{broker_id}/orders?limit=2&page={page}"][1]["orders"]:
        ids.extend(order["order_id"] for order in orders)
        page += 1
    return ids


BROKERS = ["alice", "bob", "carol", "dave"]
SYMBOLS = ["AAPL", "GOOG", "MSFT", "TSLA"]  # TSLA: known from holdings, never traded


def rich_scenario(client: AppClient, clock: ManualClock) -> dict[str, dict[str, Any]]:
    """Brokers with holdings; resting orders at several prices and times; partial fills;
    a market sweep with an IOC remainder; cancels; an expiry. Returns the orders by name."""
    register(client, "alice", 100_000, AAPL=1000, MSFT=300)
    register(client, "bob", 50_000.0, AAPL=500)
    clock.advance(seconds=1)
    register(client, "carol", 250_000)
    register(client, "dave", 0, GOOG=400, TSLA=50)
    soon = "2026-02-17T09:05:00Z"
    o: dict[str, dict[str, Any]] = {}
    # webhook subscriptions: created, updated, deleted (deliveries to 127.0.0.1 are refused)
    subscribe(client, "alice", "https://127.0.0.1:9/alice", "trade.executed", "order.expired")
    subscribe(client, "bob", "https://127.0.0.1:9/bob", "order.cancelled")
    carol = subscribe(client, "carol", "https://127.0.0.1:9/c", "trade.executed", "order.cancelled")

    def step(name: str, result: Any, seconds: float = 1) -> None:
        o[name] = created(result)
        clock.advance(seconds=seconds)

    step("a1", limit(client, "alice", "ask", 150, 100))
    step("b1", limit(client, "bob", "ask", 150.0, 50), seconds=0.5)
    step("a2", limit(client, "alice", "ask", 151, 200))
    step("b2", limit(client, "bob", "ask", 152, 100))
    step("c1", limit(client, "carol", "bid", 149, 30))
    step("c2", limit(client, "carol", "bid", 148.5, 20))
    step("c3", limit(client, "carol", "bid", 150, 120))  # takes a1, 20 of b1
    assert o["c3"]["status"] == "filled"
    step("d1", limit(client, "dave", "ask", 2800, 100, symbol="GOOG"))
    step("c4", limit(client, "carol", "bid", 2805, 40, symbol="GOOG"))  # d1 partly filled
    step("c5", market(client, "carol", "bid", 500))  # 30 + 200 + 100, IOC-cancels 170
    assert (o["c5"]["status"], o["c5"]["cancelled_quantity"]) == ("cancelled", 170)
    step("b3", limit(client, "bob", "ask", 149, 10))  # c1 partly filled
    step("a3", market(client, "alice", "ask", 25))  # c1's 20, then 5 of c2
    step("a4", limit(client, "alice", "ask", 300, 100, symbol="MSFT", expires_at=soon))
    step("c6", limit(client, "carol", "bid", 300, 40, symbol="MSFT"))  # a4 partly filled
    step("a5", limit(client, "alice", "ask", 310, 50, symbol="MSFT"))
    cancelled = client.delete(f"/orders/{o['c2']['order_id']}")
    assert cancelled.status_code == 200
    assert (cancelled.json["filled_quantity"], cancelled.json["cancelled_quantity"]) == (5, 15)
    step("c7", limit(client, "carol", "bid", 140, 10))
    assert client.delete(f"/orders/{o['c7']['order_id']}").status_code == 200
    step("b4", limit(client, "bob", "bid", 2700, 5, symbol="GOOG"))
    subscribe(client, "bob", "https://127.0.0.1:9/bob2", "order.cancelled", "trade.executed")
    assert client.delete(f"/webhooks/{carol[1]['webhook_id']}").status_code == 204
    clock.set(ManualClock.at("2026-02-17T09:06:00Z").now())  # a4 is due
    step("c8", limit(client, "carol", "bid", 305.0, 10, symbol="MSFT"))  # a4 expires first
    expired = client.get(f"/orders/{o['a4']['order_id']}").json
    assert (expired["status"], expired["expired_at"], expired["filled_quantity"]) == (
        "expired",
        soon,
        40,
    )
    # equal prices: two at the same instant (order_id breaks the tie), one later
    o["c9"] = created(limit(client, "carol", "bid", 147, 10))
    o["b5"] = created(limit(client, "bob", "bid", 147, 10))
    clock.advance(microseconds=1)
    step("a6", limit(client, "alice", "bid", 147, 5))
    step("d2", limit(client, "dave", "ask", 2790, 30, symbol="GOOG"), seconds=0)
    return o


def subscribe(client: AppClient, broker_id: str, url: str, *events: str) -> list[dict[str, Any]]:
    result = client.post("/webhooks", json={"broker_id": broker_id, "url": url, "events": events})
    assert result.status_code in (200, 201), result.text
    return result.json["webhooks"]


def test_every_endpoint_answers_alike_after_a_restart(tmp_path: Path) -> None:
    live_file, copy_file = tmp_path / "live.db", tmp_path / "copy.db"
    clock = ManualClock.at(START)
    ids = SequentialIds()
    live = open_app(clock, SqliteJournal(str(live_file)), ids)
    orders = rich_scenario(live, clock)
    order_ids = [order["order_id"] for order in orders.values()]
    before = snapshot(live, BROKERS, SYMBOLS, order_ids)
    assert sorted(order_ids) == sorted(oid for b in BROKERS for oid in listed(before, b))
    hooks = {b: before[f"/webhooks?broker_id={b}"][1]["webhooks"] for b in BROKERS}
    assert {b: [(h["event"], h["url"][-5:]) for h in hooks[b]] for b in BROKERS} == {
        "alice": [("trade.executed", "alice"), ("order.expired", "alice")],
        "bob": [("order.cancelled", "/bob2"), ("trade.executed", "/bob2")],
        "carol": [("trade.executed", "1:9/c")],
        "dave": [],
    }
    assert hooks["bob"][0]["created_at"] < hooks["bob"][0]["updated_at"]
    with sqlite3.connect(live_file) as source, sqlite3.connect(copy_file) as copy:
        source.backup(copy)  # the journal as it stands, while the live exchange runs on

    # what the live exchange answers next: price-time priority decides each answer
    used = ids_used(ids)
    probes = [
        ("POST", market_body("bob", "ask", "AAPL", 12)),  # c9's 10, then 2 of b5
        ("POST", limit_body("carol", "bid", "MSFT", 310, 60)),  # a5's 50, 10 rest
        ("POST", limit_body("alice", "bid", "GOOG", 2800, 50)),  # d2's 30, 20 of d1
        ("DELETE", orders["b5"]["order_id"]),
        ("POST", market_body("alice", "ask", "AAPL", 20)),  # a6's 5, 15 IOC-cancelled
    ]
    live_answers = probe(live, probes)
    assert [status for status, _ in live_answers] == [201, 201, 201, 200, 201]
    assert [len(body["trades"]) for _, body in live_answers] == [2, 1, 2, 1, 1]
    after_ids = order_ids + [body["order_id"] for status, body in live_answers if status == 201]
    live_after = snapshot(live, BROKERS, SYMBOLS, after_ids)
    live.close()

    # restarted from the copy: the state before the probes, and the same answers to them
    restarted = open_app(ManualClock(clock.now()), SqliteJournal(str(copy_file)), ids_after(used))
    assert snapshot(restarted, BROKERS, SYMBOLS, order_ids) == before
    assert probe(restarted, probes) == live_answers
    assert snapshot(restarted, BROKERS, SYMBOLS, after_ids) == live_after
    restarted.close()

    # restarted from the live file: the state after the probes
    again = open_app(ManualClock(clock.now()), SqliteJournal(str(live_file)), ids_after(used + 50))
    assert snapshot(again, BROKERS, SYMBOLS, after_ids) == live_after
    again.close()


def market_body(broker_id: str, side: str, symbol: str, quantity: int) -> dict[str, Any]:
    return {
        "type": "market", "broker_id": broker_id, "document_number": "1", "side": side,
        "symbol": symbol, "quantity": quantity,
    }  # fmt: skip


def limit_body(broker_id: str, side: str, symbol: str, price: int, quantity: int) -> dict[str, Any]:
    return {
        "type": "limit", "broker_id": broker_id, "document_number": "2", "side": side,
        "symbol": symbol, "price": price, "quantity": quantity, "expires_at": FAR,
    }  # fmt: skip


def probe(client: AppClient, requests: list[tuple[str, Any]]) -> list[tuple[int, Any]]:
    answers = []
    for method, what in requests:
        if method == "POST":
            result = client.post("/orders", json=what)
        else:
            result = client.delete(f"/orders/{what}")
        answers.append((result.status_code, result.json))
    return answers


def test_the_probes_exercise_time_priority(tmp_path: Path) -> None:
    """The probes of the round trip are not trivial: they pick among equal prices."""
    clock = ManualClock.at(START)
    client = open_app(clock, SqliteJournal(str(tmp_path / "j.db")))
    orders = rich_scenario(client, clock)
    sold = created(client.post("/orders", json=market_body("bob", "ask", "AAPL", 12)))
    c9 = client.get(f"/orders/{orders['c9']['order_id']}").json
    b5 = client.get(f"/orders/{orders['b5']['order_id']}").json
    a6 = client.get(f"/orders/{orders['a6']['order_id']}").json
    assert [t["quantity"] for t in sold["trades"]] == [10, 2]
    assert [t["trade_id"] for t in sold["trades"]] == [
        c9["trades"][0]["trade_id"],
        b5["trades"][0]["trade_id"],
    ]
    assert (c9["status"], b5["status"], a6["status"]) == ("filled", "partially_filled", "pending")
    client.close()


def test_an_order_that_expires_while_down_is_expired_right_after_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    clock = ManualClock.at(START)
    client = open_app(clock, SqliteJournal(str(path)))
    register(client, "buyer", 10_000)
    register(client, "seller", 0, AAPL=100)
    soon = "2026-02-17T09:01:00Z"
    due = created(limit(client, "buyer", "bid", 100, 10, expires_at=soon))
    clock.advance(seconds=10)
    created(limit(client, "seller", "ask", 100, 4))  # `due` partly filled: 6 reserved
    later = created(limit(client, "buyer", "bid", 90, 5))
    assert balance(client, "buyer")["reserved_cash"] == 600 + 450
    client.close()

    clock.set(ManualClock.at("2026-02-17T11:00:00Z").now())  # two hours down
    # A slow disk: the expiry's commit takes a while; the app must not answer before it.
    client = open_app(clock, SlowJournal(str(path), delay_s=0.1), ids_after(100))
    expired = client.get(f"/orders/{due['order_id']}").json
    assert expired["status"] == "expired"
    assert expired["expired_at"] == expired["expires_at"] == soon
    assert (
        expired["filled_quantity"],
        expired["remaining_quantity"],
        expired["cancelled_quantity"],
    ) == (4, 0, 6)
    assert client.get(f"/orders/{later['order_id']}").json["status"] == "pending"
    assert balance(client, "buyer") == {
        "broker_id": "buyer",
        "cash_balance": 9600.00,
        "reserved_cash": 450.00,  # only `later` holds cash now
        "available_cash": 9150.00,
        "holdings": [
            {"symbol": "AAPL", "quantity": 4, "reserved_quantity": 0, "available_quantity": 4}
        ],
        "updated_at": "2026-02-17T11:00:00Z",  # the expiry released cash at restart
    }
    book = client.get("/stocks/AAPL/book").json
    assert book["bids"] == [{"price": 90.00, "total_quantity": 5, "order_count": 1}]
    client.close()

    # the expiry itself was journaled: a second restart has it without expiring again
    client = open_app(clock, SqliteJournal(str(path)), ids_after(200))
    assert client.get(f"/orders/{due['order_id']}").json == expired
    assert balance(client, "buyer")["updated_at"] == "2026-02-17T11:00:00Z"
    client.close()


def test_a_failed_journal_write_answers_503_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    clock = ManualClock.at(START)
    failures: list[BaseException] = []
    journal = FailingJournal(str(path), on_failure=failures.append)
    client = open_app(clock, journal)
    register(client, "buyer", 10_000)
    register(client, "seller", 0, AAPL=100)
    resting = created(limit(client, "seller", "ask", 100, 40))
    clock.advance(seconds=1)
    before = snapshot(client, ["buyer", "seller"], ["AAPL"], [resting["order_id"]])

    journal.failing.set()
    refused = limit(client, "buyer", "bid", 101, 10)  # would trade with `resting`
    assert refused.status_code == 503
    assert refused.json == JOURNAL_UNAVAILABLE
    assert refused.headers["content-type"] == "application/json"
    assert failures == [journal.error]
    lost_order_id = "ord-00000000-0000-4000-8000-000000000002"  # id 1: `resting`
    assert client.get(f"/orders/{lost_order_id}").status_code == 404  # never published
    # once failed, the journal refuses everything that would change state
    assert market(client, "buyer", "bid", 5).json == JOURNAL_UNAVAILABLE
    assert client.delete(f"/orders/{resting['order_id']}").json == JOURNAL_UNAVAILABLE
    late = client.post("/brokers", json={"broker_id": "late", "initial_cash": 1})
    assert (late.status_code, late.json) == (503, JOURNAL_UNAVAILABLE)
    assert failures == [journal.error]  # the hook fired once
    client.close()

    client = open_app(clock, SqliteJournal(str(path)), ids_after(1000))
    after = snapshot(client, ["buyer", "seller"], ["AAPL"], [resting["order_id"]])
    assert after == before
    assert client.get(f"/orders/{lost_order_id}").status_code == 404
    assert client.get("/brokers/late/balance").status_code == 404
    client.close()
