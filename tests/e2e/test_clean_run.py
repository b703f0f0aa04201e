"""A first run as a new user makes it: the server started the way `make run` starts it
(gunicorn with `config/gunicorn.conf.py`, every setting at its default but the port and
the journal's file), or `make run-ray`, a few requests, a graceful stop. Nothing it prints is a traceback or
a `--- Logging error ---`: standard output is the app's JSON lines, standard error
gunicorn's and uvicorn's own lines, each in its own format (and with Ray, the one line
`make run-ray` says of the cluster it started)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
import requests

from tests.e2e.conftest import ENGINES, Server, engine_or_skip

FAR = "2099-12-31T18:00:00Z"
# gunicorn's error-log format: `[2026-12-03 22:18:35 +0000] [3401] [INFO] Starting ...`
GUNICORN_LINE = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] \S")


CLUSTER_LINE = re.compile(r"miniexchange: Ray head at 127\.0\.0\.1:\d+: a sequencer, ")


@pytest.mark.parametrize("engine", ENGINES)
def test_make_run_prints_no_traceback_from_start_to_graceful_stop(
    tmp_path: Path, engine: str
) -> None:
    stdout_path, stderr_path = tmp_path / "stdout.log", tmp_path / "stderr.log"
    server = Server(
        {"DATABASE_PATH": str(tmp_path / "exchange.db")},
        stdout_path,
        stderr_path,
        engine=engine_or_skip(engine),
    )
    try:
        url = server.url
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        broker = {"broker_id": "B", "initial_cash": 1000}
        assert requests.post(f"{url}/brokers", json=broker, timeout=10).status_code == 201
        order = {
            "type": "limit", "broker_id": "B", "document_number": "1", "side": "bid",
            "symbol": "AAPL", "price": 10, "quantity": 1, "expires_at": FAR,
        }  # fmt: skip
        assert requests.post(f"{url}/orders", json=order, timeout=10).status_code == 201
        bad = requests.post(f"{url}/orders", data=b"{not json", timeout=10)
        assert bad.status_code == 400
        assert requests.get(f"{url}/no/such/route", timeout=10).status_code == 404
    finally:
        status = server.stop()
    stdout, stderr = stdout_path.read_text(), stderr_path.read_text()
    output = stdout + stderr
    assert "--- Logging error ---" not in output, output
    assert "Traceback" not in output, output
    assert status == 0, output

    events = [orjson.loads(line)["event"] for line in stdout.splitlines()]
    assert events[0] == "startup" and events[-1] == "shutdown"
    workers = 2 if engine == "ray" else 1
    assert (events.count("startup"), events.count("shutdown")) == (workers, workers)
    assert events.count("request") >= 5  # the readiness probe's, and the five above
    assert "Booting worker" in stderr and "Application startup complete" in stderr
    assert "Shutting down" in stderr
    lines = stderr.splitlines()
    if engine == "ray":
        assert CLUSTER_LINE.match(lines.pop(0)), stderr
    for line in lines:
        assert GUNICORN_LINE.match(line), line
