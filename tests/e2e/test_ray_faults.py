"""`make run-ray` when a shard's process is killed (`kill -9`): until shards rebuild
themselves from the journal (docs/ray.md, landing step 8), the exchange must say it is
down, 503 `unavailable`, for every request that needs the dead shard, within a bounded
time, never hang, never answer from an empty state, never a 500; and what needs no
shard (`/healthz`, the OpenAPI document) is still served."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import Server, engine_or_skip

FAR = "2099-01-01T00:00:00Z"
WAIT_S = 60.0
"""How long the exchange may take to find the shard dead; never a speed bound."""
UNAVAILABLE = {"error": "unavailable", "message": "A part of the exchange is down; retry later"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(
        {"DATABASE_PATH": ":memory:", "ACCOUNT_SHARDS": "1", "SYMBOL_SHARDS": "1"},
        tmp_path / "server.log",
        engine=engine_or_skip("ray"),
    )
    try:
        yield running
    finally:
        running.stop()


def process_titled(title: str) -> int:
    """The pid of the one process whose title (Ray sets `ray::<class>`) starts so."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:  # ended meanwhile
                continue
            if command.startswith(title.encode()):
                found.append(int(entry.name))
    assert len(found) == 1, f"{len(found)} processes titled {title!r}"
    return found[0]


@pytest.mark.parametrize("shard", ["AccountShardHost", "SymbolShardHost"])
def test_a_killed_shard_makes_its_requests_503_not_hang(server: Server, shard: str) -> None:
    http = requests.Session()
    url = server.url
    broker = {"broker_id": "B", "initial_cash": 1_000}
    assert http.post(f"{url}/brokers", json=broker, timeout=WAIT_S).status_code == 201
    order = {
        "type": "limit", "broker_id": "B", "document_number": "1", "side": "bid",
        "symbol": "AAPL", "price": 10, "quantity": 1, "expires_at": FAR,
    }  # fmt: skip
    assert http.post(f"{url}/orders", json=order, timeout=WAIT_S).status_code == 201

    os.kill(process_titled(f"ray::{shard}"), signal.SIGKILL)

    read = "/brokers/B/balance" if shard == "AccountShardHost" else "/stocks/AAPL/book"
    deadline = time.monotonic() + WAIT_S
    while (answer := http.get(f"{url}{read}", timeout=WAIT_S)).status_code == 200:
        assert time.monotonic() < deadline, "the dead shard's data is still served"
        time.sleep(0.2)
    assert (answer.status_code, answer.json()) == (503, UNAVAILABLE)
    for _ in range(2):  # the write that finds the shard dead, and one after it
        refused = http.post(f"{url}/orders", json=order, timeout=WAIT_S)
        assert (refused.status_code, refused.json()) == (503, UNAVAILABLE)
    assert http.get(f"{url}/healthz", timeout=WAIT_S).status_code == 200
    assert http.get(f"{url}/openapi.json", timeout=WAIT_S).status_code == 200
