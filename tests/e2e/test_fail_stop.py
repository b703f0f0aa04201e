"""The journal's fail-stop path on the real server: when a commit fails, the request gets
503 `journal_unavailable`, `journal_write_failed` is logged, the worker stops, gunicorn
starts a fresh one, and that one has recovered every acknowledged fact and nothing of
the refused request.

The failure is the kernel's, not a test hook: the worker's file-size limit
(RLIMIT_FSIZE) is set to 0 bytes while it runs, so every write SQLite makes to its files
from then on fails with EFBIG, as on a full disk. Python ignores SIGXFSZ, so the
process lives on to handle the error. (Root ignores permission bits and this machine
has no small filesystem to fill; a limit on one process is the honest equivalent.)
The server's output goes through a pipe, which no file-size limit touches.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import orjson
import requests

from miniexchange.testing import child_pids
from tests.e2e.conftest import PipedServer

WAIT_S = 60.0
"""How long to wait for what must happen; never an upper bound on speed."""

SYMBOL = "FAIL"
FAR = "2099-01-01T00:00:00Z"


def post(url: str, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=WAIT_S)


def limit(broker_id: str, side: str, price: float, quantity: int) -> dict[str, Any]:
    return {
        "type": "limit", "broker_id": broker_id, "document_number": "1", "side": side,
        "symbol": SYMBOL, "price": price, "quantity": quantity, "expires_at": FAR,
    }  # fmt: skip


def get(url: str, path: str) -> Any:
    response = requests.get(f"{url}{path}", timeout=WAIT_S)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def replacement_worker(server: PipedServer, failed: int) -> int:
    """Wait until the worker that failed is gone and a fresh one answers."""
    deadline = time.monotonic() + WAIT_S
    while True:
        assert server.process.poll() is None, server.output()  # the master stays
        workers = child_pids(server.process.pid)
        if workers and failed not in workers:
            try:
                if requests.get(f"{server.url}/healthz", timeout=WAIT_S).status_code == 200:
                    (worker,) = workers
                    return worker
            except requests.ConnectionError:
                pass  # between the old worker's socket and the new one's start
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)


def test_a_failed_commit_stops_the_worker_and_a_fresh_one_recovers_every_acknowledged_fact(
    tmp_path: Path,
) -> None:
    server = PipedServer({"DATABASE_PATH": str(tmp_path / "exchange.db")}, tmp_path / "log")
    try:
        url = server.url
        for body in (
            {"broker_id": "seller", "initial_cash": 0,
             "initial_holdings": [{"symbol": SYMBOL, "quantity": 100}]},
            {"broker_id": "buyer", "initial_cash": 10_000, "initial_holdings": []},
        ):  # fmt: skip
            assert post(url, "/brokers", body).status_code == 201
        acked: dict[str, dict[str, Any]] = {}
        for body in (
            limit("seller", "ask", 10, 50),
            limit("buyer", "bid", 10, 20),  # trades 20 at 10.00
            limit("buyer", "bid", 9, 5),  # rests
        ):
            response = post(url, "/orders", body)
            assert response.status_code == 201, response.text
            acked[response.json()["order_id"]] = response.json()
        ask_id = next(iter(acked))
        acked[ask_id] = get(url, f"/orders/{ask_id}")  # 20 of 50 filled since
        assert acked[ask_id]["filled_quantity"] == 20
        balances = {b: get(url, f"/brokers/{b}/balance") for b in ("seller", "buyer")}
        assert balances["buyer"]["cash_balance"] == 9800.0
        assert balances["buyer"]["reserved_cash"] == 45.0

        (worker,) = child_pids(server.process.pid)
        resource.prlimit(worker, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        refused = post(url, "/orders", limit("buyer", "bid", 10, 3))  # would trade 3
        assert (refused.status_code, refused.json()) == (
            503,
            {
                "error": "journal_unavailable",
                "message": "The exchange cannot record this request; retry later",
            },
        )

        fresh = replacement_worker(server, worker)
        assert fresh != worker
        lines = [orjson.loads(line) for line in server.output().splitlines() if line[:1] == "{"]
        failed = [line for line in lines if line["event"] == "journal_write_failed"]
        assert len(failed) == 1, failed
        assert failed[0]["level"] == "error"
        assert failed[0]["reason"] == "OperationalError('disk I/O error')", failed[0]

        # every acknowledged fact, and nothing of the refused order
        for order_id, order in acked.items():
            assert get(url, f"/orders/{order_id}") == order
        assert {b: get(url, f"/brokers/{b}/balance") for b in balances} == balances
        assert get(url, "/brokers/buyer/orders")["total"] == 2
        book = get(url, f"/stocks/{SYMBOL}/book")
        assert [(level["price"], level["total_quantity"]) for level in book["asks"]] == [(10.0, 30)]
        assert [(level["price"], level["total_quantity"]) for level in book["bids"]] == [(9.0, 5)]

        # and the fresh worker records again: the same order now goes through
        again = post(url, "/orders", limit("buyer", "bid", 10, 3))
        assert again.status_code == 201, again.text
        assert again.json()["filled_quantity"] == 3
    finally:
        assert server.stop() == 0
