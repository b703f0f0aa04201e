"""`Idempotency-Key` retries against the real server, each on a connection of its own:
with `make run-ray` two workers take them, so a retry often reaches the worker that did
not take the first use, and must be replayed all the same."""

from __future__ import annotations

import threading
from typing import Any

import requests

from tests.e2e.conftest import Server

WAIT_S = 60.0
"""A request's timeout on a loaded machine: never an upper bound on speed."""
ORDER = {
    "type": "limit", "broker_id": "B", "document_number": "1", "side": "bid",
    "symbol": "AAPL", "price": 10, "quantity": 1, "expires_at": "2099-01-01T00:00:00Z",
}  # fmt: skip


def post(server: Server, body: dict[str, Any], key: str) -> requests.Response:
    """On a new connection (no session): the server may hand it to any worker."""
    return requests.post(
        f"{server.url}/orders", json=body, headers={"Idempotency-Key": key}, timeout=WAIT_S
    )


def orders_of_b(server: Server) -> int:
    listing = requests.get(f"{server.url}/brokers/B/orders", timeout=WAIT_S).json()
    return int(listing["total"])


def test_retries_on_other_connections_replay_the_first_answer(server: Server) -> None:
    broker = {"broker_id": "B", "initial_cash": 1_000}
    assert requests.post(f"{server.url}/brokers", json=broker, timeout=WAIT_S).status_code == 201
    first = post(server, ORDER, "retry-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    for _ in range(12):
        again = post(server, ORDER, "retry-1")
        assert (again.status_code, again.content) == (201, first.content)
        assert again.headers["Idempotent-Replayed"] == "true"
    other = post(server, {**ORDER, "quantity": 2}, "retry-1")
    assert (other.status_code, other.json()["error"]) == (422, "idempotency_key_reused")
    assert orders_of_b(server) == 1


def test_the_same_key_at_once_on_many_connections_runs_once(server: Server) -> None:
    broker = {"broker_id": "B", "initial_cash": 1_000}
    assert requests.post(f"{server.url}/brokers", json=broker, timeout=WAIT_S).status_code == 201
    answers: list[requests.Response] = []
    start = threading.Barrier(8)

    def client() -> None:
        start.wait()
        answers.append(post(server, ORDER, "at-once"))

    clients = [threading.Thread(target=client) for _ in range(8)]
    for each in clients:
        each.start()
    for each in clients:
        each.join()
    firsts = [a for a in answers if a.status_code == 201 and "Idempotent-Replayed" not in a.headers]
    assert len(firsts) == 1
    for answer in answers:
        if answer.status_code == 201:
            assert answer.content == firsts[0].content
        else:
            assert (answer.status_code, answer.json()["error"]) == (
                409,
                "idempotency_key_in_progress",
            )
    assert orders_of_b(server) == 1
