"""Memory: the server worker's RSS per resting order.

A fresh server gets a warm-up of resting orders first (so that lazily started symbol
actors, imports and first-use caches are in the "before" figure), then exactly
`RESTING` more limit orders far from the mid, none of which can trade, posted by wrk.
(RSS after - RSS before) / RESTING is what one resting order costs, everything
included: the book entry, the order history, the read index and allocator overhead.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.report import Row
from bench.server import running_server
from bench.wrk import run_wrk

RESTING = 100_000
WARM_UP = 2_000
LIMIT_S = 300  # wrk's duration is only a cap: it is stopped once every order is answered


def memory_rows(log: Callable[[str], None] = print) -> list[Row]:
    with running_server() as server:
        log(f"memory: warm-up with {WARM_UP:,} resting orders ...")
        warm = run_wrk(
            "resting",
            server.url,
            LIMIT_S,
            extra_env={"BENCH_RESTING_COUNT": str(WARM_UP), "BENCH_SEED": "1"},
            stop_on="BENCH resting_done",
        )
        before = server.rss_bytes()
        log(f"memory: {RESTING:,} resting orders (RSS before: {before / 2**20:.1f} MiB) ...")
        run = run_wrk(
            "resting",
            server.url,
            LIMIT_S,
            extra_env={"BENCH_RESTING_COUNT": str(RESTING), "BENCH_SEED": "2"},
            stop_on="BENCH resting_done",
        )
        after = server.rss_bytes()
    created = run.count("201")
    refused = {key: n for key, n in run.non_2xx().items()} | {
        key: n for key, n in warm.non_2xx().items()
    }
    per_order = (after - before) / RESTING
    log(f"  RSS after: {after / 2**20:.1f} MiB, {per_order:,.0f} B per resting order")
    rows = [
        Row(
            f"memory: RSS per resting order ({RESTING:,} resting)",
            f"{per_order:,.0f} B ({before / 2**20:.0f} → {after / 2**20:.0f} MiB)",
            "< 1 KB",
            per_order < 1024,
        )
    ]
    if created != RESTING or refused:
        rows.append(
            Row(
                "memory: orders not accepted",
                f"{RESTING - created:,} ({refused})",
                "0",
                False,
            )
        )
    return rows
