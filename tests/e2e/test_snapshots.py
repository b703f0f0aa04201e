"""Snapshots on the real server: written while facts arrive (a log line says so), and a
journal or snapshot this version must not read stops the start with one line naming
the file, gunicorn's boot-error status and no traceback.

The SIGKILL-under-load restart from a snapshot and its tail is in `test_crash.py`.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import orjson
import requests

from miniexchange.journal.store import ENGINE_STAMPS
from tests.e2e.conftest import Server, refused_start

WAIT_S = 60.0
"""How long to wait for what must happen; never an upper bound on speed."""


def failed_start(database: Path) -> tuple[int, str]:
    """Start the real server on `database`; its exit status and its whole output."""
    done = refused_start(database, WAIT_S)
    return done.returncode, done.stdout + done.stderr


def test_a_journal_of_a_newer_format_stops_the_start_with_one_line(tmp_path: Path) -> None:
    database = tmp_path / "exchange.db"
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA user_version=2")
    status, output = failed_start(database)
    assert status == 3, output
    assert (
        f"miniexchange: {database}: journal format 2, this version reads formats 0 to 1; "
        "run the version that wrote it\n"
    ) in output
    assert "Traceback" not in output


def test_a_journal_of_the_ray_engine_stops_the_start_with_one_line(tmp_path: Path) -> None:
    database = tmp_path / "exchange.db"
    with sqlite3.connect(database) as db:
        db.execute(f"PRAGMA application_id={ENGINE_STAMPS['ray']}")
    status, output = failed_start(database)
    assert status == 3, output
    assert (
        f"miniexchange: {database}: a journal of ENGINE=ray, and this start is "
        "ENGINE=embedded; start it with ENGINE=ray, or give DATABASE_PATH another file\n"
    ) in output
    assert "Traceback" not in output


def test_a_snapshot_of_another_version_stops_the_start_with_one_line(tmp_path: Path) -> None:
    database = tmp_path / "exchange.db"
    header = {"format": "miniexchange-snapshot", "version": 0, "seq": 5}
    Path(f"{database}.snapshot").write_bytes(orjson.dumps(header) + b"\n")
    status, output = failed_start(database)
    assert status == 3, output
    assert (
        f"miniexchange: {database}.snapshot: snapshot format version 0, this version reads "
        "1 and 2; move the file away to recover from the journal alone (if it still holds "
        "every fact)\n"
    ) in output
    assert "Traceback" not in output


def test_snapshots_are_written_while_facts_arrive_and_logged(tmp_path: Path) -> None:
    database = tmp_path / "exchange.db"
    env = {"DATABASE_PATH": str(database), "SNAPSHOT_INTERVAL": "300ms"}
    server = Server(env, tmp_path / "server.log", tmp_path / "server.err")
    try:
        for n in range(3):
            body = {"broker_id": f"snap-{n}", "initial_cash": 100.0, "initial_holdings": []}
            response = requests.post(f"{server.url}/brokers", json=body, timeout=WAIT_S)
            assert response.status_code == 201, response.text
        # snapshots follow each other while facts arrive: on a busy machine one may come
        # between two registrations; each folds only the facts after the previous one
        deadline = time.monotonic() + WAIT_S
        written: list[dict[str, object]] = []
        while not written or written[-1]["seq"] != 3:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
            lines = [orjson.loads(line) for line in server.output().splitlines() if line]
            written = [line for line in lines if line.get("event") == "snapshot_written"]
        assert sum(line["facts"] for line in written) == 3, written  # type: ignore[misc]
        assert [line["level"] for line in written] == ["info"] * len(written)
        # the facts it covers leave the journal
        deadline = time.monotonic() + WAIT_S
        while True:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
                remaining = db.execute("SELECT seq FROM facts").fetchall()
            if remaining == []:
                break
            assert time.monotonic() < deadline, remaining
            time.sleep(0.1)
    finally:
        assert server.stop() == 0
    server = Server(env, tmp_path / "again.log")
    try:
        for n in range(3):
            response = requests.get(f"{server.url}/brokers/snap-{n}/balance", timeout=WAIT_S)
            assert response.status_code == 200, response.text
    finally:
        server.stop()
