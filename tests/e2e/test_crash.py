"""Crash test: SIGKILL the real server mid-load, restart it on the same journal, and
nothing acknowledged is lost, nothing is duplicated, every invariant holds.

Several client threads fire limit and market orders and cancels. Once `kill_after`
orders have been acknowledged, the gunicorn master is frozen (SIGSTOP, so that it cannot
start a new worker) and the worker that holds the exchange is SIGKILLed, then the master.
A new server starts on the same `DATABASE_PATH` and is compared with every 2xx a client
got: an acknowledged order is there, at least as advanced as acknowledged, and a retry
of an acknowledged submission with its `Idempotency-Key` is a replay (the stored answer,
byte for byte), never a second order.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from miniexchange.testing import child_pids
from tests.e2e.conftest import Server

BROKERS = [f"crash-{n}" for n in range(6)]
SYMBOLS = ["AAPL", "GOOG"]
INITIAL_CASH = Decimal("200000.00")
INITIAL_SHARES = 600
THREADS = 6
ACTIVE = ("pending", "partially_filled")
TERMINAL = ("filled", "cancelled", "expired")
WAIT_S = 60.0
"""How long to wait for what must happen; never an upper bound on speed."""
TOO_LATE = {"error": "validation_error", "message": "expires_at must be a future timestamp"}
"""The answer to an order sent to expire soon that reached the server after that."""


def cents(value: Any) -> int:
    return int(Decimal(str(value)) * 100)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Acknowledged:
    """Every 2xx the clients got: each order's acknowledged states, in arrival order."""

    def __init__(self) -> None:
        self.states: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.orders = 0  # acknowledged submissions
        self.refused: dict[int, int] = defaultdict(int)
        self.unexpected: list[str] = []
        self.last_short_expiry = datetime.now(UTC)  # of the orders sent to expire soon
        self.answers: dict[str, tuple[dict[str, Any], bytes]] = {}  # key -> (body, answer)
        self._changed = threading.Condition()

    def expiring(self, at: datetime) -> None:
        with self._changed:
            self.last_short_expiry = max(self.last_short_expiry, at)

    def record(self, order: dict[str, Any], submitted: bool) -> None:
        with self._changed:
            self.states[order["order_id"]].append(order)
            self.orders += submitted
            self._changed.notify_all()

    def wait_for_orders(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.orders >= count, WAIT_S)


def client(url: str, seed: int, acks: Acknowledged, stop: threading.Event) -> None:
    """One client until the server goes away: limit orders (a few expiring within two
    seconds), market orders, and cancels of its own resting orders."""
    rng = random.Random(seed)
    session = requests.Session()
    mine: list[str] = []
    try:
        while not stop.is_set():
            if mine and rng.random() < 0.15:
                response = session.delete(f"{url}/orders/{rng.choice(mine)}", timeout=WAIT_S)
                if response.status_code == 200:
                    acks.record(response.json(), submitted=False)
                elif response.status_code != 409:
                    acks.unexpected.append(f"DELETE {response.status_code} {response.text}")
                continue
            body: dict[str, Any] = {
                "broker_id": rng.choice(BROKERS),
                "document_number": "12345678900",
                "side": rng.choice(["bid", "ask"]),
                "symbol": rng.choice(SYMBOLS),
                "quantity": rng.randint(1, 40),
            }
            short = False
            if rng.random() < 0.2:
                body["type"] = "market"
            else:
                expires_at = "2099-01-01T00:00:00Z"
                short = rng.random() < 0.1
                if short:
                    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
                    acks.expiring(soon)
                    expires_at = rfc3339(soon)
                body |= {
                    "type": "limit",
                    "price": rng.randint(95, 105) + rng.choice([0, 0.5]),
                    "expires_at": expires_at,
                }
            key = f"{seed}-{uuid.UUID(int=rng.getrandbits(128))}"
            response = session.post(
                f"{url}/orders", json=body, headers={"Idempotency-Key": key}, timeout=WAIT_S
            )
            if response.status_code == 201:
                order = response.json()
                acks.answers[key] = (body, response.content)
                acks.record(order, submitted=True)
                if order["status"] in ACTIVE:
                    mine.append(order["order_id"])
            elif response.status_code == 409:
                acks.refused[409] += 1
            elif short and response.json() == TOO_LATE:
                acks.refused[400] += 1  # a loaded machine: it arrived after its expires_at
            else:
                acks.unexpected.append(f"POST {response.status_code} {response.text}")
    except requests.RequestException:
        return  # the server was killed: this request's outcome is unknown, and ignored


def crash(server: Server) -> None:
    """Kill the worker (the exchange) with SIGKILL, the master with it, no cleanup."""
    master = server.process.pid
    os.kill(master, signal.SIGSTOP)  # a frozen master starts no replacement worker
    workers = child_pids(master)
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)
    os.kill(master, signal.SIGKILL)
    server.process.wait(timeout=WAIT_S)
    server.stop()  # closes its log


def get(url: str, path: str) -> Any:
    response = requests.get(f"{url}{path}", timeout=WAIT_S)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def all_orders(url: str) -> dict[str, dict[str, Any]]:
    """Every order of every broker, as `GET /orders/{id}` shows it."""
    orders = {}
    for broker_id in BROKERS:
        page, total, seen = 1, None, 0
        while True:
            listing = get(url, f"/brokers/{broker_id}/orders?limit=100&page={page}")
            total = listing["total"]
            if not listing["orders"]:
                break
            for summary in listing["orders"]:
                order = get(url, f"/orders/{summary['order_id']}")
                assert order["broker_id"] == broker_id
                orders[order["order_id"]] = order
                seen += 1
            page += 1
        assert seen == total
    return orders


def assert_at_least_as_advanced(order: dict[str, Any], acked: dict[str, Any]) -> None:
    assert order["filled_quantity"] >= acked["filled_quantity"], (order, acked)
    assert order["trades"][: len(acked["trades"])] == acked["trades"], (order, acked)
    if acked["status"] in TERMINAL:
        assert order == acked  # a terminal state never changes
    for key in ("type", "side", "symbol", "quantity", "price", "created_at", "expires_at"):
        assert order.get(key) == acked.get(key)


@pytest.mark.parametrize("kill_after", [20, 150, 400])
def test_sigkill_mid_load_loses_nothing_acknowledged(tmp_path: Path, kill_after: int) -> None:
    env = {"DATABASE_PATH": str(tmp_path / "exchange.db"), "EXPIRATION_INTERVAL": "100ms"}
    crash_restart_and_check(tmp_path, env, kill_after)


def test_sigkill_after_snapshots_restarts_from_the_latest_and_its_tail(tmp_path: Path) -> None:
    """Snapshots every 200 ms under load; the kill comes once one has been taken and the
    facts it covers left the journal, so the restart must read the snapshot (the facts
    alone no longer hold the state) and replay the tail written after it."""
    database = tmp_path / "exchange.db"
    env = {
        "DATABASE_PATH": str(database),
        "EXPIRATION_INTERVAL": "100ms",
        "SNAPSHOT_INTERVAL": "200ms",
    }

    def snapshot_covers_facts() -> bool:
        if not Path(f"{database}.snapshot").exists():
            return False
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            (oldest,) = db.execute("SELECT min(seq) FROM facts").fetchone()
        return oldest is not None and oldest > 1

    crash_restart_and_check(tmp_path, env, 300, before_kill=snapshot_covers_facts)


def crash_restart_and_check(
    tmp_path: Path,
    env: dict[str, str],
    kill_after: int,
    before_kill: Callable[[], bool] = lambda: True,
) -> None:
    """Load the server, SIGKILL it once `kill_after` orders were acknowledged and
    `before_kill()` holds, restart it on the same journal and check every invariant."""
    server = Server(env, tmp_path / "first.log")
    for broker_id in BROKERS:
        response = requests.post(
            f"{server.url}/brokers",
            json={
                "broker_id": broker_id,
                "initial_cash": float(INITIAL_CASH),
                "initial_holdings": [{"symbol": s, "quantity": INITIAL_SHARES} for s in SYMBOLS],
            },
            timeout=WAIT_S,
        )
        assert response.status_code == 201

    acks = Acknowledged()
    stop = threading.Event()
    threads = [
        threading.Thread(target=client, args=(server.url, kill_after * 100 + n, acks, stop))
        for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    acks.wait_for_orders(kill_after)
    deadline = time.monotonic() + WAIT_S
    while not before_kill():
        assert time.monotonic() < deadline, "the condition before the kill never held"
        time.sleep(0.05)
    crash(server)
    stop.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert acks.unexpected == []
    assert acks.orders >= kill_after

    # Down until every short-lived order has fallen due: the restart must expire them.
    time.sleep(max(0.0, (acks.last_short_expiry - datetime.now(UTC)).total_seconds()))
    restarted_at = datetime.now(UTC)
    server = Server(env, tmp_path / "second.log")
    url = server.url
    orders = all_orders(url)

    # every acknowledged order is there, at least as advanced as acknowledged
    for order_id, states in acks.states.items():
        assert order_id in orders, order_id
        for acked in states:
            assert_at_least_as_advanced(orders[order_id], acked)

    # a client that lost an acknowledged answer retries with its key: a replay, byte for
    # byte, and still exactly one such order; every acknowledged key, the oldest included
    for key, (body, answer) in acks.answers.items():
        retry = requests.post(
            f"{url}/orders", json=body, headers={"Idempotency-Key": key}, timeout=WAIT_S
        )
        assert (retry.status_code, retry.content) == (201, answer), key
        assert retry.headers["Idempotent-Replayed"] == "true"
    assert all_orders(url) == orders

    # no trade lost or duplicated: each listed by exactly one bid and one ask, alike
    sides: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for order in orders.values():
        for trade in order["trades"]:
            sides[trade["trade_id"]].append((order["side"], order["symbol"]))
            assert instant(trade["executed_at"]) >= instant(order["created_at"])
        assert len({t["trade_id"] for t in order["trades"]}) == len(order["trades"])
    for trade_id, listed in sides.items():
        assert sorted(side for side, _ in listed) == ["ask", "bid"], trade_id
        assert listed[0][1] == listed[1][1]
    trades = {
        t["trade_id"]: (o["side"], t) for o in orders.values() for t in o["trades"]
    }  # either side's copy: both must be equal
    for order in orders.values():
        for trade in order["trades"]:
            assert trades[trade["trade_id"]][1] == trade

    # each order: quantity conservation, fills add up, terminal means nothing remains
    reserved_cash: dict[str, int] = defaultdict(int)
    reserved_shares: dict[tuple[str, str], int] = defaultdict(int)
    levels: dict[tuple[str, str], dict[int, list[int]]] = defaultdict(dict)
    for order in orders.values():
        assert order["quantity"] == (
            order["filled_quantity"] + order["remaining_quantity"] + order["cancelled_quantity"]
        )
        assert order["filled_quantity"] == sum(t["quantity"] for t in order["trades"])
        if order["type"] == "market":
            assert order["status"] in ("filled", "cancelled")
            assert order["trades"]
        if order["status"] == "expired":
            assert order["expired_at"] == order["expires_at"]
        if order["status"] not in ACTIVE:
            assert order["remaining_quantity"] == 0
            continue
        assert instant(order["expires_at"]) > restarted_at  # what fell due has expired
        assert order["expires_at"] == "2099-01-01T00:00:00Z"
        price = cents(order["price"])
        if order["side"] == "bid":
            reserved_cash[order["broker_id"]] += price * order["remaining_quantity"]
        else:
            reserved_shares[order["broker_id"], order["symbol"]] += order["remaining_quantity"]
        level = levels[order["symbol"], order["side"]].setdefault(price, [0, 0])
        level[0] += order["remaining_quantity"]
        level[1] += 1

    # cash and holdings conservation; reservations are what the active orders hold
    total_cash = 0
    shares: dict[str, int] = defaultdict(int)
    for broker_id in BROKERS:
        balance = get(url, f"/brokers/{broker_id}/balance")
        total_cash += cents(balance["cash_balance"])
        assert cents(balance["reserved_cash"]) == reserved_cash[broker_id]
        assert cents(balance["available_cash"]) >= 0
        for holding in balance["holdings"]:
            shares[holding["symbol"]] += holding["quantity"]
            assert holding["reserved_quantity"] == reserved_shares[broker_id, holding["symbol"]]
            assert holding["available_quantity"] >= 0
        held = {h["symbol"] for h in balance["holdings"]}
        assert all(reserved_shares[broker_id, s] == 0 for s in SYMBOLS if s not in held)
    assert total_cash == cents(INITIAL_CASH) * len(BROKERS)
    assert dict(shares) == dict.fromkeys(SYMBOLS, INITIAL_SHARES * len(BROKERS))

    # the book: never crossed, and exactly the active orders
    for symbol in SYMBOLS:
        book = get(url, f"/stocks/{symbol}/book?depth=50")
        if book["bids"] and book["asks"]:
            assert cents(book["bids"][0]["price"]) < cents(book["asks"][0]["price"])
        for side, key in (("bid", "bids"), ("ask", "asks")):
            shown = {cents(level["price"]): [level["total_quantity"], level["order_count"]]
                     for level in book[key]}  # fmt: skip
            assert shown == levels[symbol, side]

    assert server.stop() == 0
