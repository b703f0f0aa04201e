"""Stopping the real server while orders are being submitted: SIGTERM, SIGINT, Ctrl-C.

Every stop is graceful: a request the server had begun is answered in full, a request
it had not begun gets a connection error (never a 5xx or half an answer), the server
exits 0 after its lifespan shutdown (no worker SIGKILLed at the end of the graceful
timeout), and every acknowledged order is there after a restart on the same journal.

"In flight" is made certain rather than likely: one request sends its headers with
`Expect: 100-continue` and holds its body back until the server's `100 Continue` shows
that the app is reading it; then the signal goes, and the body is sent only once a new
connection is refused, that is once the worker has stopped listening and is shutting
down. Meanwhile client threads submit orders without pause, on keep-alive connections.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from miniexchange.testing import descendant_pids
from tests.e2e.conftest import ENGINES, RAY_ENV, Server, engine_or_skip

WAIT_S = 60.0
"""How long to wait for what must happen; never an upper bound on speed."""
CLIENTS = 6
BROKER = "stopper"

WORKERS = int(RAY_ENV["WORKERS"])
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def order_body(n: int) -> dict[str, Any]:
    """A limit order that never trades: bids at 50.00, asks at 200.00. Its answer is
    then its final state, so the restarted server must show exactly that."""
    side = "bid" if n % 2 else "ask"
    return {
        "type": "limit", "broker_id": BROKER, "document_number": "1", "side": side,
        "symbol": "AAPL", "price": 50.0 if side == "bid" else 200.0, "quantity": 1 + n % 7,
        "expires_at": "2099-01-01T00:00:00Z",
    }  # fmt: skip


@dataclass
class Outcomes:
    """What the clients got: every 201 by its key, the keys of requests left without an
    answer, and anything else (which the test forbids)."""

    answered: dict[str, tuple[dict[str, Any], bytes]] = field(default_factory=dict)
    unanswered: dict[str, dict[str, Any]] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, session: requests.Session, url: str, n: int) -> bool:
        """One POST /orders; False once the server no longer answers."""
        key = str(uuid.uuid4())
        body = order_body(n)
        try:
            response = session.post(
                f"{url}/orders", json=body, headers={"Idempotency-Key": key}, timeout=WAIT_S
            )
        except requests.ConnectionError:  # refused, reset, or closed before any answer
            with self.lock:
                self.unanswered[key] = body
            return False
        except requests.RequestException as error:  # an answer cut short, a timeout
            with self.lock:
                self.wrong.append(f"{type(error).__name__}: {error}")
            return False
        with self.lock:
            if response.status_code == 201 and response.json()["order_id"]:
                self.answered[key] = (body, response.content)
            else:
                self.wrong.append(f"{response.status_code} {response.text}")
        return True


def submit_until_refused(url: str, seed: int, outcomes: Outcomes) -> None:
    session = requests.Session()
    n = seed
    while outcomes.submit(session, url, n):
        n += CLIENTS


class HeldRequest:
    """A POST /orders whose body waits for `finish()`: in flight while the server stops."""

    def __init__(self, port: int, key: str, body: dict[str, Any]) -> None:
        self.key = key
        self.body = orjson.dumps(body)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        head = (
            f"POST /orders HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
            f"Idempotency-Key: {key}\r\nExpect: 100-continue\r\n\r\n"
        )
        self.sock.sendall(head.encode())
        interim = self._read_until(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim  # the app reads the body

    def _read_until(self, end: bytes, buffer: bytes = b"") -> bytes:
        while end not in buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        return buffer

    def finish(self) -> tuple[int, bytes]:
        """Send the body; the status and body of the whole answer (its length checked)."""
        try:
            try:
                self.sock.sendall(self.body)
                raw = self._read_until(b"\r\n\r\n")
            except OSError as error:
                raise AssertionError(f"the request in flight got no answer: {error}") from None
            head, _, rest = raw.partition(b"\r\n\r\n")
            assert head, "the request in flight got no answer"
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)[1])  # type: ignore[index]
            while len(rest) < length:
                chunk = self.sock.recv(65536)
                assert chunk, f"answer cut short: {len(rest)} of {length} bytes"
                rest += chunk
            assert len(rest) == length, rest
            return int(head.split()[1]), rest
        finally:
            self.sock.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_S).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until_refused(port: int) -> None:
    """Until nothing listens on `port`: the master and the worker have both let go."""
    deadline = time.monotonic() + WAIT_S
    while not refused(port):
        assert time.monotonic() < deadline, "the server never stopped listening"
        time.sleep(0.02)


def tracebacks(output: str) -> list[str]:
    """Every line of the server's output that shows an exception or a failed log line."""
    return [
        line
        for line in output.splitlines()
        if line.startswith("Traceback")
        or line == "--- Logging error ---"
        or EXCEPTION_LINE.match(line)
    ]


def send_stop(server: Server, how: str) -> None:
    """`server.process` is gunicorn's master (`make run`) or `make run-ray`'s command,
    whose gunicorn master and workers are its children, and its Ray head processes
    descendants in a session of their own."""
    master = server.process.pid
    if how == "SIGTERM":  # an operator's `kill`, `docker stop`, systemd
        os.kill(master, signal.SIGTERM)
    elif how == "SIGINT":  # `kill -INT` of the master alone
        os.kill(master, signal.SIGINT)
    else:  # Ctrl-C in the terminal: every process of the foreground group gets SIGINT
        group = os.getpgid(master)
        in_group = [p for p in (master, *descendant_pids(master)) if os.getpgid(p) == group]
        assert len(in_group) == (2 if server.engine == "embedded" else 2 + WORKERS)
        for pid in in_group:
            os.kill(pid, signal.SIGINT)


def started_with_broker(env: dict[str, str], log_path: Path, engine: str = "embedded") -> Server:
    """A server on `env` where `BROKER` is registered with cash and AAPL to sell."""
    server = Server(env, log_path, engine=engine_or_skip(engine))
    registered = requests.post(
        f"{server.url}/brokers",
        json={
            "broker_id": BROKER,
            "initial_cash": 100_000_000,
            "initial_holdings": [{"symbol": "AAPL", "quantity": 1_000_000}],
        },
        timeout=WAIT_S,
    )
    assert registered.status_code == 201, registered.text
    return server


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "Ctrl-C"])
def test_stopping_mid_load_answers_what_it_began_and_loses_nothing_acknowledged(
    tmp_path: Path, how: str, engine: str
) -> None:
    """With `ENGINE=ray`, `make run-ray` stops gunicorn first (its workers finish what
    they began, their writes still reaching the shards), then the shards and the head."""
    # READ_TIMEOUT: the held body must not time out however long the stop takes to begin
    env = {"DATABASE_PATH": str(tmp_path / "exchange.db"), "READ_TIMEOUT": "5m"}
    server = started_with_broker(env, tmp_path / "first.log", engine)

    outcomes = Outcomes()
    threads = [
        threading.Thread(target=submit_until_refused, args=(server.url, n, outcomes))
        for n in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WAIT_S
    while len(outcomes.answered) < 50 and not outcomes.wrong:  # the clients are under way
        assert time.monotonic() < deadline, "no orders acknowledged"
        time.sleep(0.01)
    held_key = str(uuid.uuid4())
    held = HeldRequest(server.port, held_key, order_body(1))

    send_stop(server, how)
    wait_until_refused(server.port)  # the worker is shutting down, the request still open
    status, answer = held.finish()
    assert status == 201, answer
    outcomes.answered[held_key] = (order_body(1), answer)

    assert server.process.wait(timeout=WAIT_S) == 0
    for thread in threads:
        thread.join(WAIT_S)
    output = server.output()
    server.stop()
    assert outcomes.wrong == []
    assert tracebacks(output) == []
    assert "was sent SIGKILL" not in output  # nothing outlived the graceful timeout
    assert '"event":"shutdown"' in output  # the lifespan shutdown ran: the journal closed

    # Restarted on the same journal: every acknowledged order exactly as acknowledged.
    server = Server(env, tmp_path / "second.log", engine=engine)
    try:
        session = requests.Session()
        for key, (body, answer) in outcomes.answered.items():
            order = orjson.loads(answer)
            shown = session.get(f"{server.url}/orders/{order['order_id']}", timeout=WAIT_S)
            assert (shown.status_code, shown.json()) == (200, order), key
            retry = session.post(
                f"{server.url}/orders", json=body, headers={"Idempotency-Key": key}, timeout=WAIT_S
            )
            assert (retry.status_code, retry.content) == (201, answer), key
            assert retry.headers["Idempotent-Replayed"] == "true"
        # A request left without an answer is retried with its key: it was taken at most
        # once, so afterwards the broker has exactly one order per submission.
        for key, body in outcomes.unanswered.items():
            retry = session.post(
                f"{server.url}/orders", json=body, headers={"Idempotency-Key": key}, timeout=WAIT_S
            )
            assert retry.status_code == 201, retry.text
        listing = session.get(f"{server.url}/brokers/{BROKER}/orders?limit=1", timeout=WAIT_S)
        assert listing.json()["total"] == len(outcomes.answered) + len(outcomes.unanswered)
    finally:
        server.stop()


def test_a_second_ctrl_c_stops_at_once_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """An operator who will not wait for a request in flight presses Ctrl-C again: the
    server stops without it (that request gets no answer), exits 0, and every order
    answered before is on the journal: each is written there before it is answered."""
    env = {"DATABASE_PATH": str(tmp_path / "exchange.db"), "READ_TIMEOUT": "5m"}
    server = started_with_broker(env, tmp_path / "first.log")
    session = requests.Session()
    outcomes = Outcomes()
    for n in range(20):
        assert outcomes.submit(session, server.url, n)
    session.close()
    held = HeldRequest(server.port, str(uuid.uuid4()), order_body(1))
    send_stop(server, "Ctrl-C")
    wait_until_refused(server.port)  # shutting down, waiting for the held request
    send_stop(server, "Ctrl-C")
    assert server.process.wait(timeout=WAIT_S) == 0
    with pytest.raises(AssertionError, match="got no answer"):
        held.finish()
    output = server.output()
    server.stop()
    assert outcomes.wrong == [] and outcomes.unanswered == {}
    assert tracebacks(output) == []

    server = Server(env, tmp_path / "second.log")
    try:
        for answer in (answer for _, answer in outcomes.answered.values()):
            order = orjson.loads(answer)
            shown = requests.get(f"{server.url}/orders/{order['order_id']}", timeout=WAIT_S)
            assert (shown.status_code, shown.json()) == (200, order)
        listing = requests.get(f"{server.url}/brokers/{BROKER}/orders?limit=1", timeout=WAIT_S)
        assert listing.json()["total"] == 20
    finally:
        server.stop()
