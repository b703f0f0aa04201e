"""The journal's file going wrong, on the real server: a file SQLite cannot read stops the
start with one line naming it (no traceback); a torn last write of the WAL loses only
that write.

The fail-stop path (a write that fails while serving) is in `test_fail_stop.py`.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from miniexchange.testing import child_pids
from tests.e2e.conftest import Server, refused_start

WAIT_S = 60.0
"""How long to wait for what must happen; never an upper bound on speed."""

BROKERS = 300
"""Enough registrations that the journal spans many pages, so that a cut loses some."""

SQLITE_HEADER = b"SQLite format 3\x00"


def register(server: Server, count: int, prefix: str = "fault") -> None:
    with requests.Session() as http:
        for n in range(count):
            body = {"broker_id": f"{prefix}-{n}", "initial_cash": 1000, "initial_holdings": []}
            response = http.post(f"{server.url}/brokers", json=body, timeout=WAIT_S)
            assert response.status_code == 201, response.text


def written_journal(directory: Path) -> Path:
    """A journal the real server wrote (BROKERS registrations), closed cleanly."""
    database = directory / "exchange.db"
    server = Server({"DATABASE_PATH": str(database)}, directory / "writer.log")
    try:
        register(server, BROKERS)
    finally:
        assert server.stop() == 0
    assert not Path(f"{database}-wal").exists()  # checkpointed: the file holds it all
    return database


def garbage(directory: Path) -> None:
    (directory / "exchange.db").write_bytes(bytes(range(256)) * 40)


def header_only(directory: Path) -> None:
    """What a first write torn after SQLite's 16-byte magic leaves."""
    (directory / "exchange.db").write_bytes(SQLITE_HEADER + b"\x10\x00")


def cut_in_half(directory: Path) -> None:
    database = written_journal(directory)
    content = database.read_bytes()
    database.write_bytes(content[: len(content) // 2])


def a_middle_page_overwritten(directory: Path) -> None:
    """Damage that opening the file does not see: found while the facts are read."""
    database = written_journal(directory)
    content = bytearray(database.read_bytes())
    middle = len(content) // 4096 // 2 * 4096
    content[middle : middle + 4096] = bytes(range(256)) * 16
    database.write_bytes(bytes(content))


def _rewrite_one_fact(directory: Path, body: bytes) -> int:
    """Damage SQLite cannot see: a row's body changed in place (its pages stay valid).
    Returns the fact's position in the journal."""
    database = written_journal(directory)
    with sqlite3.connect(database) as connection:
        (seq,) = connection.execute(
            "SELECT seq FROM facts ORDER BY seq LIMIT 1 OFFSET 9"
        ).fetchone()
        connection.execute("UPDATE facts SET body = ? WHERE seq = ?", (body, seq))
    connection.close()
    return 10


def a_fact_flipped_to_garbage(directory: Path) -> None:
    _rewrite_one_fact(directory, b'{"broker_id": \xff')


def a_fact_missing_a_field(directory: Path) -> None:
    _rewrite_one_fact(directory, b'{"broker_id": "fault-9", "at": 1}')


def first_page_only(directory: Path) -> None:
    database = written_journal(directory)
    database.write_bytes(database.read_bytes()[:4096])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (garbage, "file is not a database"),
        (header_only, "file is not a database"),
        (cut_in_half, "database disk image is malformed"),
        (first_page_only, "database disk image is malformed"),
        (a_middle_page_overwritten, "database disk image is malformed"),
        (
            a_fact_flipped_to_garbage,
            "fact 10 (broker_registered) cannot be replayed: JSONDecodeError('str is not "
            "valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)')",
        ),
        (
            a_fact_missing_a_field,
            "fact 10 (broker_registered) cannot be replayed: KeyError('holdings')",
        ),
    ],
)
def test_a_journal_sqlite_cannot_read_stops_the_start_with_one_line(
    tmp_path: Path, damage: Callable[[Path], None], reason: str
) -> None:
    damage(tmp_path)
    database = tmp_path / "exchange.db"
    done = refused_start(database, WAIT_S)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 3, output  # gunicorn's boot error: the master does not retry
    ours = [line for line in done.stderr.splitlines() if line.startswith("miniexchange:")]
    assert ours == [
        f"miniexchange: {database}: the journal cannot be read ({reason}); restore it from "
        "a copy, or move it away to start an empty exchange"
    ], output


def test_a_torn_last_write_of_the_wal_loses_only_that_write(tmp_path: Path) -> None:
    """SIGKILL leaves the WAL unmerged; a half-written frame appended to it (a power
    loss mid-write) fails SQLite's checksum and is ignored: every commit before it is
    there, and the server starts."""
    database = tmp_path / "exchange.db"
    env = {"DATABASE_PATH": str(database)}
    server = Server(env, tmp_path / "first.log")
    try:
        register(server, 20, "torn")
    finally:
        os.kill(server.process.pid, signal.SIGSTOP)  # no new worker, no checkpoint
        for pid in child_pids(server.process.pid):
            os.kill(pid, signal.SIGKILL)
        os.kill(server.process.pid, signal.SIGKILL)
        server.stop()
    wal = Path(f"{database}-wal")
    committed = wal.stat().st_size
    assert committed > 32  # the WAL holds the commits (past its 32-byte header)
    with wal.open("ab") as torn:  # half a frame: a 24-byte frame header and part of a page
        torn.write(bytes(range(24)) + b"\xab" * 1000)
    server = Server(env, tmp_path / "second.log")
    try:
        with requests.Session() as http:
            for n in range(20):
                response = http.get(f"{server.url}/brokers/torn-{n}/balance", timeout=WAIT_S)
                assert response.status_code == 200, response.text
            response = http.get(f"{server.url}/brokers/torn-20/balance", timeout=WAIT_S)
            assert response.status_code == 404, response.text
            register(server, 1, "after")  # and it writes on after the torn frame
    finally:
        assert server.stop() == 0
