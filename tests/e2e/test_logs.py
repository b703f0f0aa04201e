"""The real server's logs: every line of standard output is one JSON
object; the access line of a request carries its request id; `startup` lists every
setting with the secret as `"<set>"`; `shutdown` comes last; the secret never appears,
on standard output or standard error (where gunicorn's own lines go)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson
import requests

from miniexchange.settings import Settings
from tests.e2e.conftest import Server

SECRET = "e2e-Secret-7f3a9c1d"
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
FAR = "2099-12-31T18:00:00Z"


def run_and_stop(tmp_path: Path) -> tuple[list[dict[str, Any]], str, str]:
    """Start, drive, stop; returns (stdout lines parsed, stdout, stderr)."""
    stdout_path, stderr_path = tmp_path / "stdout.log", tmp_path / "stderr.log"
    env = {
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "WEBHOOK_SECRET": SECRET,
        "DATABASE_PATH": ":memory:",
    }
    server = Server(env, stdout_path, stderr_path)
    try:
        drive(server.url)
    finally:
        status = server.stop()
    assert status == 0
    stdout = stdout_path.read_text()
    stderr = stderr_path.read_text()
    return [orjson.loads(line) for line in stdout.splitlines()], stdout, stderr


def drive(url: str) -> None:
    def call(method: str, path: str, request_id: str, **kwargs: Any) -> requests.Response:
        headers = {"X-Request-Id": request_id}
        answer = requests.request(method, url + path, headers=headers, timeout=60, **kwargs)
        assert answer.headers["X-Request-Id"] == request_id
        return answer

    assert call("GET", "/healthz", "e2e-healthz").status_code == 200
    seller = {
        "broker_id": "S",
        "initial_cash": 0,
        "initial_holdings": [{"symbol": "AAPL", "quantity": 10}],
    }
    assert call("POST", "/brokers", "e2e-register-s", json=seller).status_code == 201
    buyer = {"broker_id": "B", "initial_cash": 1000}
    assert call("POST", "/brokers", "e2e-register-b", json=buyer).status_code == 201
    hook = {"broker_id": "B", "url": "https://127.0.0.1:9/hook", "events": ["trade.executed"]}
    assert call("POST", "/webhooks", "e2e-subscribe", json=hook).status_code == 201
    order = {
        "type": "limit", "broker_id": "S", "document_number": "1", "side": "ask",
        "symbol": "AAPL", "price": 10, "quantity": 1, "expires_at": FAR,
    }  # fmt: skip
    assert call("POST", "/orders", "e2e-sell", json=order).status_code == 201
    bid = {**order, "broker_id": "B", "side": "bid"}
    assert call("POST", "/orders", "e2e-buy", json=bid).status_code == 201
    assert call("GET", "/no/such/route", "e2e-missing").status_code == 404
    assert call("GET", "/metrics", "e2e-metrics").status_code == 200
    # the delivery to a loopback address is refused (and logged) on a delivery thread
    deadline = time.monotonic() + 60
    while "refused" not in call("GET", "/metrics", "e2e-poll").text:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_stdout_is_json_lines_with_the_access_lines_and_no_secret(tmp_path: Path) -> None:
    lines, stdout, stderr = run_and_stop(tmp_path)
    assert SECRET not in stdout
    assert SECRET not in stderr
    assert "Booting worker" in stderr  # gunicorn's own lines are on standard error

    for line in lines:
        assert {"ts", "level", "event", "message"} <= set(line), line
        assert line["ts"].endswith("Z") and len(line["ts"]) == len("2026-02-17T09:00:00.000Z")
    events = [line["event"] for line in lines]
    assert events[0] == "startup" and events[-1] == "shutdown"
    assert events.count("startup") == 1 and events.count("shutdown") == 1

    startup = lines[0]
    assert startup["level"] == "info"
    assert startup["settings"] == {
        **Settings(log_format="json", webhook_secret=SECRET).public_items(),
        "port": startup["settings"]["port"],
        "database_path": ":memory:",
    }
    assert startup["settings"]["webhook_secret"] == "<set>"

    access = {line["request_id"]: line for line in lines if line["event"] == "request"}
    assert access["e2e-register-s"] | {"ts": "", "duration_ms": 0} == {
        "ts": "", "level": "info", "event": "request", "message": "POST /brokers 201",
        "logger": "miniexchange.http", "request_id": "e2e-register-s", "method": "POST",
        "route": "/brokers", "path": "/brokers", "status": 201, "duration_ms": 0,
    }  # fmt: skip
    assert access["e2e-missing"]["route"] == "not_found"
    assert access["e2e-missing"]["status"] == 404
    assert access["e2e-healthz"]["route"] == "/healthz"
    assert access["e2e-metrics"]["route"] == "/metrics"
    assert isinstance(access["e2e-buy"]["duration_ms"], float)
    for line in lines:
        if line["event"] == "request":  # the readiness probe's id was generated
            assert line["request_id"].startswith("e2e-") or UUID4.fullmatch(line["request_id"])

    (refused,) = [line for line in lines if line["event"] == "webhook_delivery_refused"]
    assert refused["level"] == "warn" and refused["event_type"] == "trade.executed"
    assert {"delivery_id", "webhook_id", "reason"} <= set(refused)
    assert refused["request_id"] == "e2e-buy"
