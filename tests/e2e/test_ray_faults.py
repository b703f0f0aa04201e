"""`make run-ray` when a shard's process is killed (`kill -9`).

With a journal, Ray restarts the process and the sequencer rebuilds every shard from the
latest cluster snapshot and the journal after it: under load, the requests succeed again once it is back (waited for, bounded),
no acknowledged order is lost and every invariant holds. Without one (`:memory:`),
nothing could rebuild it: the exchange says it is down, 503 `unavailable`, for every
request that needs the dead shard, within a bounded time, never hangs, never answers
from an empty state, never a 500; what needs no shard (`/healthz`, the OpenAPI
document) is still served."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from miniexchange.journal.store import SqliteJournal
from miniexchange.testing import child_pids, descendant_pids
from tests.e2e.conftest import ROOT, Server, engine_or_skip, free_port
from tests.e2e.test_concurrency import (
    BROKERS,
    SYMBOLS,
    THREADS,
    assert_invariants,
    fire,
    register_brokers,
)

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
    (pid,) = processes_titled(title)
    return pid


def processes_titled(title: str) -> list[int]:
    """The pids of the processes whose title starts so."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if command_of(pid).startswith(title.encode())]


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


def test_a_shard_killed_under_load_is_rebuilt_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    """With a cluster snapshot every second: the rebuild starts each shard from the
    latest snapshot (waited for before the kill) and replays the batches after it."""
    database = tmp_path / "exchange.db"
    server = Server(
        {"DATABASE_PATH": str(database), "SNAPSHOT_INTERVAL": "1s"},  # two shards of each kind
        tmp_path / "server.log",
        engine=engine_or_skip("ray"),
    )
    snapshot = Path(f"{database}.ray-snapshot")
    try:
        register_brokers(server)
        accepted: list[dict[str, Any]] = []
        errors: list[str] = []
        clients = [
            threading.Thread(
                target=fire, args=(server, seed, accepted, errors, 120, (200, 409, 503))
            )
            for seed in range(THREADS)
        ]
        for client in clients:
            client.start()
        deadline = time.monotonic() + WAIT_S
        while len(accepted) < 100 or not snapshot.exists():  # under load, from a snapshot
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.05)
        os.kill(processes_titled("ray::AccountShardHost")[0], signal.SIGKILL)
        killed_at = len(accepted)
        for client in clients:
            client.join()
        assert errors == []  # every order answered 201 or 409, never a 500 or a 503
        assert len(accepted) > killed_at + 100  # and the exchange went on after the kill
        assert_invariants(server, accepted)
    finally:
        assert server.stop() == 0


def test_the_sequencer_killed_under_load_is_restarted_and_nothing_is_lost_or_doubled(
    tmp_path: Path,
) -> None:
    """`kill -9` of the sequencer's process: Ray restarts it, it resumes its journal and
    rebuilds the shards, and the workers send the writes of their failed calls again;
    every order is answered 201 or 409 (never 503), each once: the brokers' orders are
    exactly those answered 201, and every invariant holds."""
    server = Server(
        {"DATABASE_PATH": str(tmp_path / "exchange.db")},
        tmp_path / "server.log",
        engine=engine_or_skip("ray"),
    )
    try:
        register_brokers(server)
        accepted: list[dict[str, Any]] = []
        errors: list[str] = []
        clients = [
            threading.Thread(target=fire, args=(server, seed, accepted, errors, 100))
            for seed in range(THREADS)
        ]
        for client in clients:
            client.start()
        deadline = time.monotonic() + WAIT_S
        while len(accepted) < 100:  # under load
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.05)
        os.kill(process_titled("ray::SequencerHost"), signal.SIGKILL)
        killed_at = len(accepted)
        for client in clients:
            client.join()
        assert errors == []
        assert len(accepted) > killed_at + 100  # and the exchange went on after the kill
        listed = [
            requests.get(f"{server.url}/brokers/{b}/orders?limit=1", timeout=WAIT_S).json()
            for b in BROKERS
        ]
        assert sum(page["total"] for page in listed) == len(accepted)
        assert_invariants(server, accepted)
    finally:
        assert server.stop() == 0


def keyed_client(
    server: Server, seed: int, answers: dict[str, tuple[int, Any]], errors: list[str]
) -> None:
    """Orders, each under an `Idempotency-Key`, each sent until answered: a connection
    lost with its worker, or a 409 `idempotency_key_in_progress` (the first use still
    running, or its worker died), is retried under the same key."""
    rng = random.Random(seed)
    session = requests.Session()
    for n in range(40):
        key = f"client-{seed}-{n}"
        body = {
            "type": "limit", "broker_id": rng.choice(BROKERS), "document_number": "1",
            "side": rng.choice(["bid", "ask"]), "symbol": rng.choice(SYMBOLS),
            "price": float(rng.randint(90, 110)), "quantity": rng.randint(1, 20),
            "expires_at": FAR,
        }  # fmt: skip
        deadline = time.monotonic() + 2 * WAIT_S
        while True:
            if time.monotonic() > deadline:
                errors.append(f"{key}: never answered")
                return
            try:
                headers = {"Idempotency-Key": key}
                response = session.post(
                    f"{server.url}/orders", json=body, headers=headers, timeout=WAIT_S
                )
            except requests.ConnectionError:  # its worker was killed: a new connection
                session = requests.Session()
                continue
            if response.status_code == 409 and response.json()["error"] == (
                "idempotency_key_in_progress"
            ):
                time.sleep(0.1)
                continue
            break
        if response.status_code not in (201, 409):
            errors.append(f"{key}: {response.status_code} {response.text}")
        answers[key] = (response.status_code, response.json())


def test_a_worker_killed_under_load_is_replaced_and_each_keyed_order_is_taken_once(
    tmp_path: Path,
) -> None:
    """`kill -9` of a gunicorn worker while clients send keyed orders: gunicorn starts
    another, the clients' retries under their keys are answered (the sequencer hands the
    outcome of a write whose worker died to the worker that takes the retry), and every
    key is one order: the brokers' orders are exactly the ones answered 201."""
    server = Server(
        {"DATABASE_PATH": ":memory:"}, tmp_path / "server.log", engine=engine_or_skip("ray")
    )
    try:
        register_brokers(server)
        answers: dict[str, tuple[int, Any]] = {}
        errors: list[str] = []
        clients = [
            threading.Thread(target=keyed_client, args=(server, seed, answers, errors))
            for seed in range(THREADS)
        ]
        for client in clients:
            client.start()
        (master,) = [
            pid for pid in child_pids(server.process.pid) if b"gunicorn" in command_of(pid)
        ]
        workers = child_pids(master)
        deadline = time.monotonic() + WAIT_S
        while len(answers) < 40:  # under load
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.02)
        os.kill(workers[0], signal.SIGKILL)
        for client in clients:
            client.join()
        assert errors == []
        assert len(answers) == THREADS * 40
        replaced = child_pids(master)
        assert len(replaced) == len(workers) and workers[0] not in replaced
        placed = [answer for status, answer in answers.values() if status == 201]
        listed = [
            requests.get(f"{server.url}/brokers/{b}/orders?limit=1", timeout=WAIT_S).json()["total"]
            for b in BROKERS
        ]
        assert sum(listed) == len(placed)  # no key taken twice, none lost
        assert len({order["order_id"] for order in placed}) == len(placed)
        assert_invariants(server, placed)
    finally:
        assert server.stop() == 0


def test_make_run_ray_refuses_an_embedded_journal_with_one_line(tmp_path: Path) -> None:
    """A journal belongs to one engine: the refusal comes before any Ray process starts."""
    engine_or_skip("ray")
    database = tmp_path / "embedded.db"
    journal = SqliteJournal(str(database))  # ENGINE=embedded's
    next(journal.facts(), None)  # opened: the file is stamped as the embedded engine's
    journal.close()
    done = subprocess.run(
        [sys.executable, "-m", "miniexchange.cluster.serve"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_PATH": str(database), "PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 3
    assert done.stderr == (
        f"miniexchange: {database}: a journal of ENGINE=embedded, and this start is "
        "ENGINE=ray; start it with ENGINE=embedded, or give DATABASE_PATH another file\n"
    )


def test_make_run_ray_stopped_while_it_starts_leaves_no_ray_process(tmp_path: Path) -> None:
    """SIGTERM once the head runs, before gunicorn does: the head goes with it."""
    engine_or_skip("ray")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "miniexchange.cluster.serve"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_PATH": ":memory:", "PORT": str(free_port())},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: set[int] = set()
    deadline = time.monotonic() + WAIT_S
    while not any(command_of(pid).startswith(b"ray::") for pid in seen):  # hosts starting
        assert time.monotonic() < deadline and launcher.poll() is None
        seen |= set(descendant_pids(launcher.pid))
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=WAIT_S) != 0
    deadline = time.monotonic() + WAIT_S
    while alive := [pid for pid in seen if command_of(pid)]:
        assert time.monotonic() < deadline, f"left running: {alive}"
        time.sleep(0.1)


def command_of(pid: int) -> bytes:
    """A live process's command line; b"" once it has ended (or is a zombie)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
