"""`GET /metrics` of the real server, in both modes: after requests spread over several
connections (with `make run-ray`, two workers take them), every scrape, whichever
worker answers it, counts every request once and every order's outcome and trade
exactly; the same traffic gives the same order figures in both modes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict

from tests.e2e.conftest import (
    ENGINES,
    GUNICORN,
    RAY_ENV,
    ROOT,
    Server,
    engine_or_skip,
    free_port,
)
from tests.http.test_metrics import CONTENT_TYPE, FAMILIES, Scrape, labels, order_outcome

WAIT_S = 60.0
"""A request's timeout on a loaded machine: never an upper bound on speed."""
FAR = "2099-01-01T00:00:00Z"
CONNECTIONS = 4
REQUESTS = "miniexchange_http_requests_total"

STALE_RUN = """
from miniexchange.metrics import Metrics
metrics = Metrics()
for _ in range(1000):
    metrics.observe_request("GET", "/stocks", 200, 0.001)
"""


@pytest.fixture(params=[*ENGINES, "ray, the operator's directory"])
def metered(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, Path | None]]:
    """The server and, with the operator's `PROMETHEUS_MULTIPROC_DIR` (Ray mode), that
    directory, where an earlier run left its workers' files (the start empties it).
    `ray` alone: a temporary directory of gunicorn's own. The embedded mode runs as ever,
    with no such variable."""
    engine = engine_or_skip(request.param.split(",")[0])
    env = {"DATABASE_PATH": ":memory:"}
    directory = None
    if request.param != engine:
        directory = tmp_path / "metrics"
        directory.mkdir()
        subprocess.run(
            [sys.executable, "-c", STALE_RUN],
            cwd=ROOT,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
            check=True,
            timeout=60,
        )
        assert requests_per_process(directory) != {}
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    running = Server(env, tmp_path / "server.log", engine=engine)
    try:
        yield running, directory
    finally:
        running.stop()


def requests_per_process(directory: Path) -> dict[str, float]:
    """The requests counted by each process whose values are in `directory`."""
    counted: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == REQUESTS:
                counted[path.stem] = counted.get(path.stem, 0.0) + value
    return counted


def order(
    broker: str, side: str, order_type: str = "limit", symbol: str = "AAPL"
) -> dict[str, Any]:
    body = {
        "type": order_type, "broker_id": broker, "document_number": "1", "side": side,
        "symbol": symbol, "quantity": 1,
    }  # fmt: skip
    if order_type == "limit":
        body |= {"price": 10, "expires_at": FAR}
    return body


class Traffic:
    """Requests sent by `CONNECTIONS` clients at once, each request on a new connection
    (which either worker may take), counted."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.sent = 0

    def at_once(self, calls: list[Callable[[Any], requests.Response]]) -> list[int]:
        """Call `n` by client `n % CONNECTIONS`, the clients at the same time; the
        statuses, in the calls' order."""
        statuses: list[int] = [0] * len(calls)

        def connection(i: int) -> None:
            for n in range(i, len(calls), CONNECTIONS):
                statuses[n] = calls[n](requests).status_code

        threads = [threading.Thread(target=connection, args=(i,)) for i in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.sent += len(calls)
        return statuses

    def post(self, path: str, body: dict[str, Any]) -> Callable[[Any], requests.Response]:
        return lambda client: client.post(f"{self.server.url}{path}", json=body, timeout=WAIT_S)

    def get(self, path: str) -> Callable[[Any], requests.Response]:
        return lambda client: client.get(f"{self.server.url}{path}", timeout=WAIT_S)


def scrape(server: Server) -> Scrape:
    """On a new connection: with two workers, either may take it."""
    answer = requests.get(f"{server.url}/metrics", timeout=WAIT_S)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == CONTENT_TYPE
    return Scrape(answer.text)


def test_every_scrape_counts_every_request_and_order_once(
    metered: tuple[Server, Path | None],
) -> None:
    server, directory = metered
    traffic = Traffic(server)
    assert traffic.at_once(
        [
            traffic.post("/brokers", {"broker_id": "S", "initial_cash": 0,
                                      "initial_holdings": [{"symbol": "AAPL", "quantity": 100}]}),
            traffic.post("/brokers", {"broker_id": "B", "initial_cash": 1_000_000}),
        ]
    ) == [201, 201]  # fmt: skip
    hook = {"broker_id": "B", "url": "https://127.0.0.1:9/hook", "events": ["trade.executed"]}
    assert traffic.at_once([traffic.post("/webhooks", hook)]) == [201]
    asks = traffic.at_once([traffic.post("/orders", order("S", "ask")) for _ in range(16)])
    assert asks == [201] * 16
    bids = traffic.at_once([traffic.post("/orders", order("B", "bid")) for _ in range(10)])
    assert bids == [201] * 10  # each fills one resting ask: one trade each, one event to B
    refused = traffic.at_once(
        [
            traffic.post("/orders", order("NOBODY", "bid")),  # 404 broker_not_found
            traffic.post("/orders", order("NOBODY", "bid")),
            traffic.post("/orders", order("B", "ask", symbol="MSFT")),  # 409: no shares
            traffic.post("/orders", order("B", "bid", "market", "NEWCO")),  # no book: 409
            # no book either, but the broker is checked first, in both modes: 404
            traffic.post("/orders", order("NOBODY", "bid", "market", "NEWCO")),
            traffic.post("/orders", {**order("B", "bid"), "quantity": 0}),  # 400: not counted
        ]
    )
    assert refused == [404, 404, 409, 409, 404, 400]
    reads = traffic.at_once(
        [traffic.get("/stocks"), traffic.get("/brokers/B/balance"), traffic.get("/nowhere")] * 4
    )
    assert reads == [200, 200, 404] * 4
    assert traffic.sent == 2 + 1 + 16 + 10 + 6 + 12
    # a loopback address is refused (WEBHOOK_ALLOW_PRIVATE is false): counted when decided
    refused_deliveries = {labels(event="trade.executed", outcome="refused"): 10}
    deadline = time.monotonic() + WAIT_S
    while scrape(server).samples("miniexchange_webhook_deliveries") != refused_deliveries:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    for _ in range(6):  # fresh connections: with two workers, both answer some of them
        page = scrape(server)
        requests_by_labels = page.samples("miniexchange_http_requests")
        assert sum(requests_by_labels.values()) == traffic.sent, requests_by_labels
        assert requests_by_labels[labels(method="POST", route="/orders", status="201")] == 26
        assert requests_by_labels[labels(method="GET", route="not_found", status="404")] == 4
        durations = page.samples("miniexchange_http_request_duration_seconds", "_count")
        assert sum(durations.values()) == traffic.sent
        assert page.samples("miniexchange_orders") == {
            order_outcome("limit", "ask", "accepted"): 16,
            order_outcome("limit", "bid", "accepted"): 10,
            order_outcome("limit", "bid", "broker_not_found"): 2,
            order_outcome("limit", "ask", "insufficient_holdings"): 1,
            order_outcome("market", "bid", "no_liquidity"): 1,
            order_outcome("market", "bid", "broker_not_found"): 1,
        }
        assert page.samples("miniexchange_trades")[labels(symbol="AAPL")] == 10
        assert page.samples("miniexchange_traded_quantity")[labels(symbol="AAPL")] == 10
        resting = page.samples("miniexchange_resting_orders")
        assert (
            resting[labels(symbol="AAPL", side="ask")],
            resting[labels(symbol="AAPL", side="bid")],
        ) == (6, 0)
        assert set(page.families) == set(FAMILIES)  # no other process's, no journal's
        for family in page.families.values():  # each family once, described once
            name = family.name + ("_total" if family.type == "counter" else "")
            assert page.text.count(f"# TYPE {name} ") == 1
    if directory is not None:  # the page summed workers: both took some of the requests
        counted = requests_per_process(directory)
        assert sum(counted.values()) == traffic.sent  # the earlier run's files are gone
        assert len([n for n in counted.values() if n]) == 2, counted


# -- two gunicorns on one cluster, as on two machines -----------------------------------------

HEAD = re.compile(r"Ray head at (127\.0\.0\.1:\d+)")


def test_a_scrape_sums_the_workers_of_every_gunicorn_of_the_cluster(tmp_path: Path) -> None:
    """`make run-ray`, and a second gunicorn joining its head (as machine B's would, with
    a directory of its own): a scrape of either sums both gunicorns' workers; once the
    second has stopped, its reader ends and its figures leave the page."""
    engine_or_skip("ray")
    first = Server({"DATABASE_PATH": ":memory:"}, tmp_path / "first.log", engine="ray")
    second: subprocess.Popen[bytes] | None = None
    try:
        found = HEAD.search(first.output())
        assert found is not None, first.output()
        port = free_port()
        joining = {"WORKERS": "1", "ENGINE": "ray", "RAY_ADDRESS": found.group(1)}
        env = {**os.environ, **RAY_ENV, **joining, "PORT": str(port), "DATABASE_PATH": ":memory:"}
        with (tmp_path / "second.log").open("wb") as log:
            second = subprocess.Popen(
                [str(GUNICORN), "-c", "config/gunicorn.conf.py"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        second_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT_S
        while True:
            assert second.poll() is None, (tmp_path / "second.log").read_text()
            try:
                if requests.get(f"{second_url}/healthz", timeout=1).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # still starting
                pass
            assert time.monotonic() < deadline, (tmp_path / "second.log").read_text()
            time.sleep(0.1)

        broker = {"broker_id": "B", "initial_cash": 1_000}
        assert requests.post(f"{first.url}/brokers", json=broker, timeout=WAIT_S).status_code == 201
        for _ in range(5):
            assert requests.get(f"{first.url}/stocks", timeout=WAIT_S).status_code == 200
        for _ in range(7):
            balance = requests.get(f"{second_url}/brokers/B/balance", timeout=WAIT_S)
            assert balance.status_code == 200
        both = {
            labels(method="POST", route="/brokers", status="201"): 1,
            labels(method="GET", route="/stocks", status="200"): 5,
            labels(method="GET", route="/brokers/{broker_id}/balance", status="200"): 7,
        }
        for url in (first.url, second_url) * 3:
            answer = requests.get(f"{url}/metrics", timeout=WAIT_S)
            assert Scrape(answer.text).samples("miniexchange_http_requests") == both

        second.terminate()
        assert second.wait(timeout=WAIT_S) == 0
        del both[labels(method="GET", route="/brokers/{broker_id}/balance", status="200")]
        deadline = time.monotonic() + WAIT_S
        while (seen := scrape(first).samples("miniexchange_http_requests")) != both:
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)
    finally:
        if second is not None and second.poll() is None:
            second.terminate()
            try:
                second.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                second.kill()
                second.wait()
        first.stop()
