"""Restart time against the journal's age, with and without a snapshot.

Three journals, written fact by fact with the journal's own encoders (fast enough to
reach millions of facts; the exchange would take hours to make them):

- `direct`: N resting limit orders of 100 brokers on 4 symbols (N + 100 facts);
- `aged`: the same final state after 11 times as many facts: between the orders,
  subscriptions saved and deleted again, which leave nothing behind;
- `churned`: 11 times as many facts, of orders placed and cancelled (a cancelled order
  stays in the state, since `GET /orders/{id}` answers it forever: this state is
  larger, and its restart is bounded by that size, not by the facts).

For each: `Exchange.start()` in a fresh interpreter pinned to core 0 (its time and peak
RSS) replaying every fact; then the snapshot process (`take_snapshot`, its time, peak
RSS and file size) over all but the last 1% of the facts, and the start again, which
reads the snapshot and replays that tail.

    python -m bench.snapshot [--orders N]     # the table (bench/results/snapshot.md)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.server import pinned
from miniexchange.actors.exchange import Exchange, history_retention
from miniexchange.clock import SystemClock
from miniexchange.ids import RandomIds
from miniexchange.journal import facts
from miniexchange.journal.facts import Fact
from miniexchange.journal.snapshot import snapshot_path, take_snapshot
from miniexchange.journal.store import SqliteJournal
from miniexchange.model.commands import ASK, BID, LIMIT, RegisterBroker, SubmitOrder
from miniexchange.model.orders import CANCELLED, new_order
from miniexchange.settings import Settings
from miniexchange.testing import FakeDeliveries

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "snapshot.md"
BROKERS = 100
SYMBOLS = ("AAPL", "GOOG", "MSFT", "AMZN")
T0 = 1_800_000_000_000_000  # 2027-01-15, microseconds
FAR = 4_000_000_000_000_000  # 2096: nothing expires during the bench
VWAP_WINDOW_US = 300_000_000
CHURN_PAIRS = 5
"""Churn fact pairs per resting order: 11 facts each in `aged` and `churned`."""


def registrations() -> Iterator[Fact]:
    for n in range(BROKERS):
        holdings = tuple((symbol, 10**9) for symbol in SYMBOLS)
        yield facts.broker_registered(RegisterBroker(f"b{n}", 10**15, holdings), T0)


def resting(n: int) -> Fact:
    """The n-th resting order: bids under 100.00, asks over it, so nothing crosses."""
    side = BID if n % 2 else ASK
    price = 100_00 - 1 - n % 500 if side == BID else 100_00 + 1 + n % 500
    command = SubmitOrder(
        LIMIT, f"b{n % BROKERS}", "12345678900", side, SYMBOLS[n % 4], 10, price, FAR
    )
    return facts.order_accepted(new_order(command, f"o{n:012d}", T0 + n))


def churn(n: int, kind: str) -> list[Fact]:
    """Two facts that leave nothing (`aged`) or a cancelled order (`churned`)."""
    at = T0 + n
    if kind == "aged":
        webhook_id = f"w{n:012d}"
        subscription = {
            "webhook_id": webhook_id,
            "broker_id": f"b{n % BROKERS}",
            "url": "https://receiver.example/hook",
            "events": ["trade.executed"],
            "created_at": at,
        }
        return [facts.webhook_saved(subscription), facts.webhook_deleted(webhook_id)]
    command = SubmitOrder(
        LIMIT, f"b{n % BROKERS}", "12345678900", BID, SYMBOLS[n % 4], 10, 50_00, FAR
    )
    order = new_order(command, f"c{n:012d}", at)
    return [facts.order_accepted(order), facts.order_closed(order.closed(CANCELLED, at, None), at)]


def journal_facts(kind: str, orders: int) -> Iterator[Fact]:
    yield from registrations()
    pairs = 0 if kind == "direct" else CHURN_PAIRS
    for n in range(orders):
        yield resting(n)
        for k in range(pairs):
            yield from churn(n * pairs + k, kind)


def run_write(path: str, kind: str, orders: int) -> dict[str, Any]:
    journal = SqliteJournal(path, "normal")
    journal.start()
    batch: list[Fact] = []
    count = 0
    for fact in journal_facts(kind, orders):
        batch.append(fact)
        if len(batch) == 10_000:
            journal.append(batch, lambda error: None)
            count += len(batch)
            batch = []
    journal.append(batch, lambda error: None)
    count += len(batch)
    journal.close()
    return {"facts": count}


def run_start(path: str) -> dict[str, Any]:
    journal = SqliteJournal(path, "normal")
    started = time.perf_counter()
    exchange = Exchange(
        SystemClock(),
        RandomIds(),
        FakeDeliveries(),
        expiration_interval_s=None,
        vwap_window_us=VWAP_WINDOW_US,
        journal=journal,
    )
    exchange.start()
    elapsed = time.perf_counter() - started
    result = {
        "orders": len(exchange.read_index.orders),
        "resting": sum(order.is_active for order in exchange.read_index.orders.values()),
        "elapsed_s": elapsed,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    exchange.stop()
    return result


def run_snapshot(path: str, upto: int) -> dict[str, Any]:
    defaults = Settings()
    retention = history_retention(
        VWAP_WINDOW_US, defaults.idempotency_max_keys, defaults.idempotency_ttl_us
    )
    result = take_snapshot(path, upto, retention)
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _measure(args: list[str]) -> dict[str, Any]:
    command = pinned([sys.executable, "-m", "bench.snapshot", *args], core=0)
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def snapshot_table(orders: int, log: Callable[[str], Any] = print) -> str:
    lines = [
        "# Restart time against the journal's age (snapshots)",
        "",
        f"{orders:,} resting orders of {BROKERS} brokers on {len(SYMBOLS)} symbols. Each "
        "start and each snapshot in a fresh interpreter pinned to core 0; the snapshot "
        "covers all but the last 1% of the facts, which the start replays after it.",
        "",
        "| journal | facts | orders in the state | start, every fact replayed | peak RSS "
        "| snapshot: time, peak RSS, size | start from the snapshot + 1% tail | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as directory:
        for kind in ("direct", "aged", "churned"):
            path = str(Path(directory) / f"{kind}.db")
            log(f"snapshot: writing the {kind} journal ...")
            written = _measure(["write", path, kind, str(orders)])
            log(f"snapshot: {kind}: start replaying {written['facts']:,} facts ...")
            full = _measure(["start", path])
            upto = written["facts"] - written["facts"] // 100
            log(f"snapshot: {kind}: snapshot up to fact {upto:,} ...")
            snap = _measure(["snapshot", path, str(upto)])
            log(f"snapshot: {kind}: start from the snapshot ...")
            tail = _measure(["start", path])
            assert (tail["orders"], tail["resting"]) == (full["orders"], full["resting"])
            lines.append(
                f"| {kind} | {written['facts']:,} | {full['orders']:,} "
                f"| {full['elapsed_s']:.2f} s | {full['max_rss_mb']:.0f} MB "
                f"| {snap['seconds']:.2f} s, {snap['max_rss_mb']:.0f} MB, "
                f"{snap['bytes'] / 1e6:.1f} MB | {tail['elapsed_s']:.2f} s "
                f"| {tail['max_rss_mb']:.0f} MB |"
            )
            for leftover in (path, snapshot_path(path)):
                Path(leftover).unlink(missing_ok=True)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshot", description=__doc__)
    parser.add_argument("part", nargs="?", choices=("write", "start", "snapshot"))
    parser.add_argument("args", nargs="*")
    parser.add_argument("--orders", type=int, default=100_000)
    parsed = parser.parse_args(argv)
    if parsed.part == "write":
        path, kind, orders = parsed.args
        print(json.dumps(run_write(path, kind, int(orders))))
    elif parsed.part == "start":
        print(json.dumps(run_start(parsed.args[0])))
    elif parsed.part == "snapshot":
        print(json.dumps(run_snapshot(parsed.args[0], int(parsed.args[1]))))
    else:
        table = snapshot_table(parsed.orders, lambda text: print(text, file=sys.stderr))
        print(table)
        RESULT.parent.mkdir(exist_ok=True)
        RESULT.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
