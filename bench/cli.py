"""`python -m bench [--engine] [--http] [--memory] [--footprint] [--journal] [--observability]
[--profile] [--quick] [--duration N]`, or `python -m bench --compare REF [--pairs N] [--quick]
[--duration N]`.

Without a part flag every part runs except `--profile` (py-spy is optional). Prints one
markdown table (metric | value | target | ok?) with the targets of issue 6 and the
machine, and writes it to `bench/results/latest.md` (the README links that file).
Every process a part starts is stopped by that part, even on error or Ctrl-C.

`--compare REF` runs no part: it measures the code at REF (a commit-ish, checked out in
a temporary git worktree) and this tree alternately, `--pairs` times (default 5), the
`actors` measurement and one HTTP `limit` run per side, and prints each side's median
and new/old (targets: HTTP limit orders/s ≥ 0.90, p99 ≤ 1.25) with every pair's raw
figures; written to `bench/results/compare.md`. See `bench.compare`: on this VM only a
same-run comparison tells a change from the minute's noise.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.compare import PAIRS, UnknownRef, compare_report
from bench.engine import engine_rows
from bench.footprint import NOTE as FOOTPRINT_NOTE
from bench.footprint import footprint_rows
from bench.http_load import (
    HEALTHZ_ROUNDS,
    OBSERVABILITY_ROUNDS,
    account_actor_rows,
    http_rows,
    journal_http_rows,
    observability_rows,
)
from bench.journal import NOTE as JOURNAL_NOTE
from bench.journal import journal_rows
from bench.memory import memory_rows
from bench.profile import profile_limit
from bench.ray_http import DEFAULT_SHAPES
from bench.ray_http import report as ray_http_report
from bench.report import Row, render
from bench.wrk import CONNECTIONS, WrkMissing

RESULTS = Path(__file__).resolve().parent / "results"
LATEST = RESULTS / "latest.md"
PROFILE = RESULTS / "profile.md"
ACCOUNTS = RESULTS / "accounts.md"
RAY = RESULTS / "ray_http.md"
RAY_CONNECTIONS = 256
"""Enough requests in flight that the cluster's batches amortise their calls."""
COMPARE = RESULTS / "compare.md"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _load_note(load: float) -> str:
    return f"Load average (1 min) before the run: {load:.2f}."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--engine", action="store_true", help="engine benchmarks (no HTTP)")
    parser.add_argument("--http", action="store_true", help="HTTP load with wrk")
    parser.add_argument("--memory", action="store_true", help="RSS per resting order")
    parser.add_argument(
        "--footprint",
        action="store_true",
        help="memory and threads per listed symbol, broker and resting order (no HTTP)",
    )
    parser.add_argument(
        "--journal", action="store_true", help="journal cost and restart time (issue 5)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy profile under `limit` (needs py-spy)"
    )
    parser.add_argument(
        "--observability",
        action="store_true",
        help="`limit` with the access log and metrics on vs off (issue 7)",
    )
    parser.add_argument(
        "--accounts",
        action="store_true",
        help="`limit` with ACCOUNT_ACTORS 1, 2 and 4, alternating (its default's figures)",
    )
    parser.add_argument(
        "--ray",
        action="store_true",
        help="ENGINE=ray over HTTP: orders/s and CPU per process kind (bench.ray_http)",
    )
    parser.add_argument("--quick", action="store_true", help="3 s HTTP runs, shorter flows")
    parser.add_argument("--duration", type=float, help="seconds per HTTP run (default 10)")
    parser.add_argument(
        "--compare",
        metavar="REF",
        help="instead of the parts: the code at REF (a commit-ish) against this tree, "
        "measured alternately (actors and HTTP limit); writes bench/results/compare.md",
    )
    parser.add_argument(
        "--pairs", type=int, help=f"with --compare: old/new pairs to measure (default {PAIRS})"
    )
    args = parser.parse_args(argv)
    parts = (
        args.engine,
        args.http,
        args.memory,
        args.footprint,
        args.journal,
        args.profile,
        args.observability,
        args.accounts,
        args.ray,
    )
    everything = not any(parts)
    if args.compare is None and args.pairs is not None:
        parser.error("--pairs goes with --compare REF")
    if args.compare is not None and any(parts):
        parser.error("--compare REF runs on its own: no part flags with it")
    if args.pairs is not None and args.pairs < 1:
        parser.error("--pairs must be at least 1")
    duration = args.duration or (3.0 if args.quick else 10.0)

    # SIGTERM (e.g. from `timeout`) must unwind through the parts' `finally` blocks, which
    # stop the servers and wrk they started; Python's default would exit on the spot.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    load = _load_average()
    if load is not None and load > 0.5:
        log(f"warning: load average {load:.2f} before starting: other work shares the CPUs")
    if args.compare is not None:
        return _compare(args.compare, args.pairs or PAIRS, args.quick, duration, load)
    started = time.monotonic()
    rows: list[Row] = []
    notes: list[str] = []
    try:
        if everything or args.engine:
            rows += engine_rows(args.quick, log)
            notes.append(
                "Engine: one seeded flow (4 symbols, 20 brokers; 80% limit within 1.00 of "
                "100.00, 10% market, 10% cancels of resting orders), each measurement in a "
                "fresh interpreter pinned to core 0, best of 3 alternating rounds (1 with "
                "--quick); orders/s counts submits and cancels. Actors: one driver thread, "
                "32 orders in flight, latency from send to reply."
            )
        if everything or args.http:
            rows += http_rows(duration, log)
            rows += journal_http_rows(duration, log)
            notes.append(
                f"HTTP: gunicorn -c config/gunicorn.conf.py (DATABASE_PATH=:memory:) pinned "
                f"to core 0, wrk -t1 -c{CONNECTIONS} -d{duration:g}s pinned to core 1, "
                "127.0.0.1 only; a fresh server per scenario, the three limit runs share one. "
                "The bare app: a `falcon.asgi.App` answering a constant (`bench/bare.py`) "
                "under the same gunicorn configuration; every share of 'bare' is of its "
                "GET /healthz rate. The bare app in the exchange's process: the same app "
                "served from inside our worker (`bench/bare_in_exchange.py`: our lifespan, "
                "so actors, log writer and GC settings, no middleware). GET /healthz "
                f"against the bare app, that one and ours alternates for {HEALTHZ_ROUNDS} "
                "rounds, one server each, and each figure is its median run. "
                "The fixed order: `limit` against our "
                "server whose POST /orders only reads and parses the body and answers a "
                "fixed order (`bench/ceiling.py`). The journal rows: `limit` with "
                "DATABASE_SYNC=full (a file on the local disk) against :memory:, a fresh "
                "server each, at 32 and 256 connections."
            )
        if everything or args.memory:
            rows += memory_rows(log)
            notes.append(
                "Memory: worker VmRSS before and after 100,000 non-crossing limit orders "
                "(after a 2,000-order warm-up), posted by wrk."
            )
        if everything or args.footprint:
            rows += footprint_rows(args.quick, log)
            notes.append(FOOTPRINT_NOTE)
        if everything or args.journal:
            rows += journal_rows(args.quick, log)
            notes.append(JOURNAL_NOTE)
        if everything or args.observability:
            rows += observability_rows(duration, log)
            notes.append(
                "Observability: `limit` on a fresh server per run with the access log (JSON "
                "lines to a file) and the HTTP metrics on, and with MINIEXCHANGE_OBSERVABILITY"
                f"=off; alternating, best of {OBSERVABILITY_ROUNDS} each."
            )
        if args.accounts:  # its own file: the default's figures, not a target
            text = render(
                account_actor_rows(duration, log),
                [
                    "`limit` (wrk, 32 connections) on a fresh server per run with "
                    "ACCOUNT_ACTORS 1, 2 and 4, alternating; the median run of each."
                ],
            )
            print(text)
            ACCOUNTS.write_text(text)
            log(f"written to {ACCOUNTS}")
        if everything or args.ray:  # its own file: another engine, its own table
            text = ray_http_report(DEFAULT_SHAPES, duration, RAY_CONNECTIONS)
            print(text)
            RAY.write_text("# ENGINE=ray over HTTP (`python -m bench --ray`)\n\n" + text + "\n")
            log(f"written to {RAY}")
        if args.profile:
            text = profile_limit(duration, 5, log)
            PROFILE.write_text("# py-spy profile of the server under `limit`\n\n" + text)
            log(f"profile written to {PROFILE}")
    except WrkMissing as missing:
        log(str(missing))
        return 2
    if load is not None:
        notes.append(_load_note(load))
    notes.append(f"Total bench time: {time.monotonic() - started:.0f} s.")
    if not rows:
        return 0
    report = render(rows, notes)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    LATEST.write_text(report)
    checked = [row.ok for row in rows if row.ok is not None]
    log(f"{sum(checked)} of {len(checked)} targets met; written to {LATEST}")
    return 0  # the measurement succeeded; the table says which targets are met


def _compare(ref: str, pairs: int, quick: bool, duration: float, load: float | None) -> int:
    """`--compare REF`: the report goes to standard output and `bench/results/compare.md`."""
    notes = [] if load is None else [_load_note(load)]
    try:
        report, checked = compare_report(ref, pairs, quick, duration, log, notes)
    except (WrkMissing, UnknownRef) as error:
        log(str(error))
        return 2
    print(report)
    RESULTS.mkdir(exist_ok=True)
    COMPARE.write_text(report)
    log(f"{sum(checked)} of {len(checked)} targets met; written to {COMPARE}")
    return 0
