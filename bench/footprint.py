"""Footprint: the memory and threads one listed symbol, one broker and one resting order
cost (`python -m bench --footprint`).

Each kind is measured in a fresh interpreter (`python -m bench.footprint KIND N`, which
prints one JSON object) on a real `Exchange` with the memory journal, started as the
server starts it (small actor stacks, the collector settled after start-up), and driven
through the registry's API the way the HTTP layer drives it, at most `WINDOW` requests
in flight. A warm-up first registers brokers, lists a few symbols and rests a few orders,
so imports, first-use caches and the first actors are in the "before" figures. Then:

- `symbols`: N symbols, each listed by one resting limit bid on it, so each starts its
  actor (a thread) and its book, market data and metrics; the figure includes that one
  resting order (see `resting` for its share).
- `brokers`: N cash-only registrations.
- `resting`: N limit bids on the warm-up symbols at prices no ask meets, so all rest.

The figures are (VmRSS after - before) / N and (OS threads after - before) / N, after a
full collection: what one more of each costs the process, allocator overhead included.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.report import Row
from miniexchange.actors.base import Reply
from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import Submit
from miniexchange.clock import SystemClock
from miniexchange.http.app import settle_garbage_collector
from miniexchange.ids import RandomIds
from miniexchange.model.commands import BID, LIMIT, RegisterBroker, SubmitOrder
from miniexchange.testing import FakeDeliveries, Replies

ROOT = Path(__file__).resolve().parents[1]
COUNTS = {"symbols": 2_000, "brokers": 100_000, "resting": 100_000}
QUICK_COUNTS = {"symbols": 500, "brokers": 20_000, "resting": 20_000}
WINDOW = 256
"""Requests in flight at most: queued messages must not inflate the "after" figure."""
WARM_SYMBOLS = ("AAPL", "GOOG", "MSFT", "AMZN")
WARM_BROKERS = 20
CASH = 10**14  # cents: enough for every bid of a run
DAY_US = 86_400_000_000
REPLY_TIMEOUT_S = 120


def status_field(name: str) -> int:
    """A number from /proc/self/status (VmRSS in kB, Threads)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} line")


def symbol_name(n: int) -> str:
    """The n-th of the made-up symbols: `Z` and base-26 letters, never a warm-up one."""
    letters = ""
    while True:
        n, digit = divmod(n, 26)
        letters = chr(ord("A") + digit) + letters
        if n == 0:
            return "Z" + letters


def windowed(sends: Iterator[Callable[[Reply], None]]) -> int:
    """Send every request of `sends`, at most `WINDOW` unanswered; raise on a refusal.
    Returns how many were answered."""
    replies = Replies()
    in_flight = answered = 0
    for send in sends:
        if in_flight == WINDOW:
            _check(replies.get(timeout=REPLY_TIMEOUT_S))
            in_flight -= 1
            answered += 1
        send(replies)
        in_flight += 1
    for _ in range(in_flight):
        _check(replies.get(timeout=REPLY_TIMEOUT_S))
        answered += 1
    return answered


def _check(answer: Any) -> None:
    if isinstance(answer, BaseException):
        raise RuntimeError(f"refused during the footprint run: {answer!r}")


def registrations(exchange: Exchange, prefix: str, count: int, holdings: tuple = ()) -> Iterator:
    for n in range(count):
        command = RegisterBroker(f"{prefix}{n}", CASH, holdings)
        yield lambda reply, command=command: exchange.register_broker(command, reply)


def bids(exchange: Exchange, symbols: Callable[[int], str], count: int) -> Iterator:
    expires_at = exchange.clock.now() + DAY_US  # never due during a run
    for n in range(count):
        price = 1_00 + n % 9_000  # 1.00 … 90.99: many levels, no ask anywhere
        broker = f"warm{n % WARM_BROKERS}"
        command = SubmitOrder(LIMIT, broker, "1", BID, symbols(n), 1 + n % 7, price, expires_at)
        yield lambda reply, command=command: exchange.submit(Submit(command, reply))


def measure(kind: str, count: int) -> dict[str, Any]:
    exchange = Exchange(
        SystemClock(),
        RandomIds(),
        FakeDeliveries(),
        expiration_interval_s=None,
        max_symbols=count + len(WARM_SYMBOLS),
    )
    exchange.start()
    try:
        holdings = tuple((symbol, 1_000_000) for symbol in sorted(WARM_SYMBOLS))
        windowed(registrations(exchange, "warm", WARM_BROKERS, holdings))
        windowed(bids(exchange, lambda n: WARM_SYMBOLS[n % len(WARM_SYMBOLS)], 2_000))
        settle_garbage_collector()
        gc.collect()
        rss_before, threads_before = status_field("VmRSS"), status_field("Threads")
        if kind == "symbols":
            done = windowed(bids(exchange, symbol_name, count))
            assert len(exchange.known_symbols) == count + len(WARM_SYMBOLS)
        elif kind == "brokers":
            done = windowed(registrations(exchange, "b", count))
        else:
            done = windowed(bids(exchange, lambda n: WARM_SYMBOLS[n % len(WARM_SYMBOLS)], count))
        gc.collect()
        rss_after, threads_after = status_field("VmRSS"), status_field("Threads")
    finally:
        exchange.stop()
    return {
        "kind": kind,
        "count": done,
        "rss_before": rss_before * 1024,
        "rss_after": rss_after * 1024,
        "threads_before": threads_before,
        "threads_after": threads_after,
    }


def run_child(kind: str, count: int) -> dict[str, Any]:
    """`measure` in a fresh interpreter: a clean heap for each kind."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.footprint", kind, str(count)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


LABELS = {"symbols": "listed symbol", "brokers": "broker", "resting": "resting order"}
NOTE = (
    "Footprint: a real Exchange (memory journal, no HTTP) in a fresh interpreter per kind, "
    "after a warm-up; (VmRSS after - before) / N and OS threads likewise. A listed symbol is "
    "listed by one resting bid (its actor, book, market data and metrics, and that order); "
    "a broker is a cash-only registration; resting orders are bids no ask meets."
)


def footprint_rows(quick: bool, log: Callable[[str], None] = print) -> list[Row]:
    rows = []
    for kind, count in (QUICK_COUNTS if quick else COUNTS).items():
        log(f"footprint: {count:,} {kind} ...")
        result = run_child(kind, count)
        grown = result["rss_after"] - result["rss_before"]
        threads = (result["threads_after"] - result["threads_before"]) / count
        log(f"  {grown / count:,.0f} B and {threads:.2f} threads per {LABELS[kind]}")
        rows.append(
            Row(
                f"footprint: per {LABELS[kind]} ({count:,})",
                f"{_size(grown / count)}, {threads:.2f} threads "
                f"(RSS {result['rss_before'] / 2**20:.0f} → {result['rss_after'] / 2**20:.0f} MiB)",
            )
        )
    return rows


def _size(size: float) -> str:
    return f"{size / 1024:,.1f} KiB" if size >= 10 * 1024 else f"{size:,.0f} B"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint")
    parser.add_argument("kind", choices=sorted(COUNTS))
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    print(json.dumps(measure(args.kind, args.count)))


if __name__ == "__main__":
    main()
