"""schemathesis' own command against the real server, from the document it serves.

The server is gunicorn as `make run` starts it, on a loopback port, seeded over HTTP
with brokers, orders in every state and subscriptions, so that generated requests reach
real states (an order to cancel, a broker with funds). Its webhooks go to a local HTTPS
receiver only (see `schemathesis_hooks.py`): nothing leaves the machine.

`schemathesis run` then generates requests for every operation but the event stream
(which does not end by itself), over the phases examples, coverage and fuzzing, and
checks every answer. Generation is deterministic (`--generation-deterministic`:
Hypothesis derandomized, no example database; one worker), so CI sends the same cases
each time; `MAX_EXAMPLES` bounds the fuzzing phase per operation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ENGINES, ROOT, Server, engine_or_skip
from tests.e2e.receiver import Receiver, receiving
from tests.seeded_generation import EVENTS, SEEDS_VARIABLE, Seeds, seeded

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,negative_data_rejection,unsupported_method,"
    "allow_header_conformance"
)
MAX_EXAMPLES = 30
"""Fuzzed cases per operation: with it the run sends about 1,250 requests, about 90 s
on a loaded 2-core machine (the coverage phase alone is about 600)."""
FAR = "2099-01-01T00:00:00Z"
HOOK_PATHS = ("/hooks/a", "/hooks/b", "/hooks/c")
"""The receiver's paths: the seeded subscriptions use the first; a generated one any."""
WAIT_S = 60.0
"""How long to wait for what must happen; never an upper bound on speed."""


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with receiving(tmp_path) as running:
        yield running


@pytest.fixture(params=ENGINES)
def server(request: pytest.FixtureRequest, receiver: Receiver, tmp_path: Path) -> Iterator[Server]:
    env = {
        "DATABASE_PATH": ":memory:",
        "EXPIRATION_INTERVAL": "100ms",
        "WEBHOOK_CA_BUNDLE": str(receiver.ca_path),
        "WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on 127.0.0.1
    }
    running = Server(env, tmp_path / "server.log", engine=engine_or_skip(request.param))
    try:
        yield running
    finally:
        running.stop()


class Seeding:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(f"{self.base}{path}", json=body, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()

    def register(self, broker_id: str, cash: float, **holdings: int) -> None:
        holdings_list = [{"symbol": s, "quantity": q} for s, q in holdings.items()]
        self.post(
            "/brokers",
            {"broker_id": broker_id, "initial_cash": cash, "initial_holdings": holdings_list},
        )

    def order(self, **fields: Any) -> str:
        body = {"document_number": "12345678900", "symbol": "AAPL", **fields}
        if body["type"] == "limit":
            body.setdefault("expires_at", FAR)
        order_id: str = self.post("/orders", body)["order_id"]
        return order_id

    def status(self, order_id: str) -> str:
        status: str = self.http.get(f"{self.base}/orders/{order_id}", timeout=30).json()["status"]
        return status


def seed(server: Server, receiver: Receiver) -> Seeds:
    """Brokers, and orders in every state: pending, partly filled, filled, cancelled by
    DELETE and by IOC, expired; symbols with trades, and one only named in holdings;
    subscriptions (at the receiver) that see trades, a cancel and an expiry."""
    seeding = Seeding(server.url)
    seeding.register("alice", 1_000_000, AAPL=5000, GOOG=200)
    seeding.register("bob", 500_000.5, AAPL=1000)
    seeding.register("carol", 0, MSFT=10)  # MSFT: known, no orders
    urls = [receiver.url(path) for path in HOOK_PATHS]
    webhook_ids = []
    for broker_id in ("alice", "bob"):
        subscribed = seeding.post(
            "/webhooks", {"broker_id": broker_id, "url": urls[0], "events": EVENTS}
        )
        webhook_ids += [webhook["webhook_id"] for webhook in subscribed["webhooks"]]
    soon = (datetime.now(UTC) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ids = [
        seeding.order(type="limit", broker_id="alice", side="ask", price=150, quantity=100),
        seeding.order(type="limit", broker_id="bob", side="bid", price=149.5, quantity=50),
        seeding.order(type="limit", broker_id="bob", side="bid", price=151, quantity=30),
        seeding.order(type="market", broker_id="bob", side="bid", quantity=10),
        seeding.order(type="market", broker_id="alice", side="ask", quantity=80),
        seeding.order(type="limit", broker_id="alice", side="ask", price=2800, quantity=5,
                      symbol="GOOG"),
        seeding.order(type="limit", broker_id="alice", side="ask", price=160, quantity=7,
                      expires_at=soon),
        seeding.order(type="limit", broker_id="bob", side="bid", price=140, quantity=5),
    ]  # fmt: skip
    cancelled = seeding.http.delete(f"{server.url}/orders/{ids[-1]}", timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    deadline = time.monotonic() + WAIT_S
    while seeding.status(ids[6]) != "expired" and time.monotonic() < deadline:
        time.sleep(0.1)
    statuses = {seeding.status(order_id) for order_id in ids}
    assert statuses == {"pending", "partially_filled", "filled", "cancelled", "expired"}
    return seeded(ids, webhook_ids, urls, expires_at=FAR, server=server.url)


def summary(output: str) -> dict[str, int]:
    """The figures of schemathesis' closing summary."""
    tested = re.search(r"Tested: (\d+)", output)
    generated = re.search(r"(\d+) generated", output)
    assert tested and generated, output[-3000:]
    return {"operations": int(tested.group(1)), "cases": int(generated.group(1))}


@pytest.mark.timeout(900)  # a hang guard for a loaded machine, not a speed limit
def test_schemathesis_run_finds_nothing(server: Server, receiver: Receiver, tmp_path: Path) -> None:
    seeds = seed(server, receiver)
    command = [
        str(SCHEMATHESIS), "run", f"{server.url}/openapi.json",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "--exclude-path", "/stocks/{symbol}/stream",
        "--max-examples", str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers", "1",
        "--request-timeout", "30",
        "--no-color",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        SEEDS_VARIABLE: json.dumps(asdict(seeds)),
    }
    output_path = tmp_path / "schemathesis.txt"
    with output_path.open("w") as output:
        # in tmp_path: whatever the command leaves behind stays out of the repository
        finished = subprocess.run(
            command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT, check=False
        )
    text = output_path.read_text()
    assert finished.returncode == 0, text[-6000:]
    figures = summary(text)
    assert figures["operations"] == 20, text[-3000:]  # every operation but the stream
    print(f"schemathesis: {figures}, {len(receiver.received(HOOK_PATHS[0]))} deliveries")
    # the seeded subscriptions saw the seeding's trades, cancel and expiry at least
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and arrived(receiver) != set(EVENTS):
        time.sleep(0.1)
    assert arrived(receiver) == set(EVENTS)


def arrived(receiver: Receiver) -> set[str]:
    return {delivery.headers["x-event-type"] for delivery in receiver.received(HOOK_PATHS[0])}
