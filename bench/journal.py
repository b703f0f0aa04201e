"""Journal benchmarks (issue 5): what the write-ahead journal costs, and how long a
restart takes with a large journal.

- `throughput`: orders/s through a real `Exchange` (its actors, no HTTP), with the
  journal off (`DATABASE_PATH=:memory:`) and with the SQLite journal at
  `DATABASE_SYNC=full` and `normal`. The driver keeps a window of orders in flight
  (like HTTP connections), so group commit can batch what arrives together; the commit
  count and the facts per commit come from the journal's `on_commit` hook. The target:
  the journal costs less than 20%, i.e. SQLite orders/s >= 0.8 x `:memory:` orders/s.
- `restart`: a journal of 200,000 accepted orders (with their trades and cancels), made
  by pushing the seeded flow through an `Exchange`; then the time of `recover()` alone,
  of `Exchange.start()` (recovery, actors, expiry of what fell due), and of a real server
  start (`gunicorn -c config/gunicorn.conf.py`) until `/healthz` answers, beside the same
  start on an empty journal.

Each measurement runs in a fresh interpreter pinned to core 0 (as the server would be),
so one measurement's heap and garbage collector cannot slow down the next.

    python -m bench.journal [--quick]        # run everything, print the table
    python -m bench.journal throughput --journal sqlite --sync full --ops 60000  # one, JSON
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests

from bench.driver import Driver, start_exchange
from bench.flow import (
    OP_CANCEL,
    Op,
    order_flow,
)
from bench.report import Row, percentile, render
from bench.server import pinned
from miniexchange.actors.exchange import Exchange
from miniexchange.clock import SystemClock
from miniexchange.ids import RandomIds
from miniexchange.journal.recovery import recover
from miniexchange.journal.store import Journal, MemoryJournal, SqliteJournal
from miniexchange.model.orders import Order
from miniexchange.testing import FakeDeliveries, SequentialIds

ROOT = Path(__file__).resolve().parents[1]
GUNICORN = Path(sys.executable).with_name("gunicorn")
DAY_US = 86_400_000_000
SEED = 5  # issue 5
WINDOW = 32  # orders in flight, like 32 HTTP connections
RESTART_ORDERS = 200_000
TARGET_RATIO = 0.80

NOTE = (
    "Journal: orders/s through a real Exchange (actors, no HTTP; the engine flow, "
    f"{WINDOW} in flight), median of the runs, each in a fresh interpreter "
    "pinned to core 0; the SQLite file on the local disk. Restart: a journal of 200,000 "
    "accepted orders made from the same flow; recover() alone, Exchange.start(), and a "
    "real server start until /healthz answers."
)


# -- driving an exchange ---------------------------------------------------------------


def drive(exchange: Exchange, ops: Sequence[Op]) -> tuple[float, Driver]:
    """Run `ops` through the actors, `WINDOW` in flight; the seconds it took."""
    driver = Driver(exchange, WINDOW)
    gc.collect()
    started = time.perf_counter()
    driver.run(ops)
    return time.perf_counter() - started, driver


class Commits:
    """The journal's `on_commit` hook: how many commits, how many facts, how long."""

    def __init__(self) -> None:
        self.count = 0
        self.facts = 0
        self.seconds = 0.0

    def __call__(self, seconds: float, facts: int) -> None:
        self.count += 1
        self.facts += facts
        self.seconds += seconds


# -- the measurements (each in its own interpreter) ------------------------------------


def run_throughput(journal_kind: str, sync: str, ops_count: int) -> dict[str, Any]:
    commits = Commits()
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as directory:
        journal: Journal = (
            MemoryJournal()
            if journal_kind == "memory"
            else SqliteJournal(str(Path(directory) / "journal.db"), sync, on_commit=commits)
        )
        exchange = start_exchange(journal, SequentialIds())
        try:
            ops = order_flow(ops_count, SEED, SystemClock().now() + DAY_US)
            elapsed, driver = drive(exchange, ops)
        finally:
            exchange.stop()
    latencies = sorted(driver.latencies_ns)
    return {
        "journal": journal_kind,
        "sync": sync,
        "ops": len(latencies),
        "elapsed_s": elapsed,
        "orders_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) / 1e6,
        "p99_ms": percentile(latencies, 99) / 1e6,
        "commits": commits.count,
        "facts_per_commit": commits.facts / commits.count if commits.count else 0.0,
        "commit_ms": 1000 * commits.seconds / commits.count if commits.count else 0.0,
    }


def run_generate(path: str, orders: int) -> dict[str, Any]:
    """Push the flow through an exchange journaling to `path` until `orders` are accepted."""
    started = time.perf_counter()
    exchange = start_exchange(SqliteJournal(path, "normal"), RandomIds())
    accepted = 0
    chunk = 0
    try:
        expires_at = SystemClock().now() + 30 * DAY_US
        while accepted < orders:
            ops = order_flow(
                min(50_000, int((orders - accepted) * 1.15) + 100), SEED + chunk, expires_at
            )
            _, driver = drive(exchange, ops)
            accepted += sum(
                isinstance(value, Order) for kind, value in driver.outcomes if kind != OP_CANCEL
            )
            chunk += 1
    finally:
        exchange.stop()
    with sqlite3.connect(path) as reader:
        kinds = dict(reader.execute("SELECT kind, count(*) FROM facts GROUP BY kind").fetchall())
    return {
        "accepted": kinds.get("order_accepted", 0),
        "facts": sum(kinds.values()),
        "kinds": kinds,
        "bytes": sum(
            p.stat().st_size for p in Path(path).parent.iterdir() if p.name.startswith("journal")
        ),
        "elapsed_s": time.perf_counter() - started,
    }


def run_restart(path: str, part: str) -> dict[str, Any]:
    """`recover`: read and replay the facts; `start`: a whole `Exchange.start()`."""
    journal = SqliteJournal(path, "normal")
    started = time.perf_counter()
    if part == "recover":
        state = recover(journal.facts())
        elapsed = time.perf_counter() - started
        journal.close()
        result: dict[str, Any] = {"orders": len(state.orders), "facts": state.fact_count}
    else:
        exchange = Exchange(
            SystemClock(),
            RandomIds(),
            FakeDeliveries(),
            expiration_interval_s=None,
            journal=journal,
        )
        exchange.start()
        elapsed = time.perf_counter() - started
        result = {
            "orders": len(exchange.read_index.orders),
            "resting": sum(order.is_active for order in exchange.read_index.orders.values()),
        }
        exchange.stop()
    result["elapsed_s"] = elapsed
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def server_start_s(path: str) -> float:
    """Seconds from launching the real server on `path` until `/healthz` answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "DATABASE_PATH": path, "LOG_LEVEL": "warn"}
    started = time.perf_counter()
    process = subprocess.Popen(
        pinned([str(GUNICORN), "-c", "config/gunicorn.conf.py"], core=0),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server on {path} exited at start")
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    return time.perf_counter() - started
            except requests.RequestException:
                pass
            time.sleep(0.02)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


# -- running them and reporting ---------------------------------------------------------


def _measure(args: list[str]) -> dict[str, Any]:
    command = pinned([sys.executable, "-m", "bench.journal", *args], core=0)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def journal_rows(quick: bool, log: Callable[[str], Any] = print) -> list[Row]:
    ops = 20_000 if quick else 60_000
    runs = 1 if quick else 3
    results: dict[str, list[dict[str, Any]]] = {}
    for run in range(runs):  # interleaved, so that a slow spell hits every variant alike
        for journal_kind, sync in (("memory", "-"), ("sqlite", "full"), ("sqlite", "normal")):
            log(f"journal: {journal_kind} {sync}, {ops:,} ops, run {run + 1}/{runs} ...")
            result = _measure(
                ["throughput", "--journal", journal_kind, "--sync", sync, "--ops", str(ops)]
            )
            results.setdefault(f"{journal_kind} {sync}", []).append(result)

    def median(key: str, field: str = "orders_per_s") -> float:
        return statistics.median(result[field] for result in results[key])

    memory = median("memory -")
    rows = [Row("journal off (:memory:): orders/s through the actors", f"{memory:,.0f}")]
    for sync in ("full", "normal"):
        key = f"sqlite {sync}"
        rate = median(key)
        ratio = rate / memory
        best = max(results[key], key=lambda r: r["orders_per_s"])
        rows += [
            Row(f"journal SQLite, DATABASE_SYNC={sync}: orders/s", f"{rate:,.0f}"),
            Row(
                f"journal SQLite, DATABASE_SYNC={sync}: / :memory:",
                f"{ratio:.2f} (cost {1 - ratio:.0%})",
                f"≥ {TARGET_RATIO:.2f} (cost < 20%)",
                ratio >= TARGET_RATIO,
            ),
            Row(
                f"journal SQLite, DATABASE_SYNC={sync}: group commit",
                f"{best['facts_per_commit']:.1f} facts/commit, {best['commit_ms']:.2f} ms/commit, "
                f"p50 {median(key, 'p50_ms'):.2f} ms / p99 {median(key, 'p99_ms'):.2f} ms",
            ),
        ]

    orders = 20_000 if quick else RESTART_ORDERS
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as directory:
        path = str(Path(directory) / "journal.db")
        log(f"journal: generating a journal of {orders:,} accepted orders ...")
        made = _measure(["generate", "--path", path, "--orders", str(orders)])
        log("journal: recover() alone ...")
        replay = _measure(["restart", "--path", path, "--part", "recover"])
        log("journal: Exchange.start() ...")
        start = _measure(["restart", "--path", path, "--part", "start"])
        log("journal: real server start until /healthz answers (full, then empty journal) ...")
        full_server = server_start_s(path)
        empty_server = server_start_s(str(Path(directory) / "empty.db"))
    rows += [
        Row(
            f"restart: journal of {made['accepted']:,} orders",
            f"{made['facts']:,} facts, {made['bytes'] / 1e6:.0f} MB, "
            f"{replay['orders']:,} orders / {start['resting']:,} resting after restart",
        ),
        Row("restart: recover() (read + replay the facts)", f"{replay['elapsed_s']:.2f} s"),
        Row(
            "restart: Exchange.start() (recover + actors + expiry)",
            f"{start['elapsed_s']:.2f} s, max RSS {start['max_rss_mb']:.0f} MB",
        ),
        Row(
            "restart: real server until /healthz answers",
            f"{full_server:.2f} s (empty journal: {empty_server:.2f} s)",
            "< 120 s (gunicorn worker timeout)",
            full_server < 120,
        ),
    ]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.journal", description=__doc__)
    parser.add_argument("kind", nargs="?", choices=("throughput", "generate", "restart"))
    parser.add_argument("--quick", action="store_true", help="shorter runs, a smaller journal")
    parser.add_argument("--journal", choices=("memory", "sqlite"), default="sqlite")
    parser.add_argument("--sync", choices=("full", "normal", "-"), default="full")
    parser.add_argument("--ops", type=int, default=60_000)
    parser.add_argument("--path")
    parser.add_argument("--orders", type=int, default=RESTART_ORDERS)
    parser.add_argument("--part", choices=("recover", "start"), default="start")
    args = parser.parse_args(argv)
    if args.kind is None:
        rows = journal_rows(args.quick, lambda message: print(message, file=sys.stderr))
        print(render(rows, [NOTE]))
        return 0
    if args.kind == "throughput":
        result = run_throughput(args.journal, args.sync, args.ops)
    elif args.kind == "generate":
        result = run_generate(args.path, args.orders)
    else:
        result = run_restart(args.path, args.part)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
