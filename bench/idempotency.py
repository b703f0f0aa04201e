"""What a stored `Idempotency-Key` costs (issue 14, item 1).

- `server`: a real server (gunicorn, SQLite journal) gets one warm-up request, then
  `REQUESTS` keyed `POST /orders` of an unknown broker, each with a member of almost
  1 MiB the endpoint ignores and a fresh key; the worker's RSS and the journal's size
  (database + WAL, and the answer facts' own bytes) before and after. `--root` runs
  another tree's code (for instance an export of an earlier commit) for comparison.
- `app`: in one process, the app with a journal; what memory keeps per key after a
  collection (tracemalloc), for requests with a 1-byte and with the large member.
- `store`: the store alone, `KEYS` keys: bytes per kept key, and the bytes of one
  journaled answer fact for a small and a large request, beside the answer's size.

    python -m bench.idempotency [--only server|app|store]
    # an earlier tree, e.g. `git archive <commit> | tar -x -C /tmp/base` (no `store`):
    PYTHONPATH=/tmp/base python bench/idempotency.py --root /tmp/base --only server
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

from bench.server import ROOT, running_server

REQUESTS = 20
KEYS = 100_000
IGNORED = 1_048_576 - 1024  # the body stays within the 1 MiB limit


def order(padding: str) -> dict[str, Any]:
    return {
        "type": "limit", "broker_id": "ghost", "document_number": "1", "side": "bid",
        "symbol": "AAPL", "price": 10, "quantity": 5, "expires_at": "2099-01-01T00:00:00Z",
        "padding": padding,
    }  # fmt: skip


def journal_bytes(path: Path) -> tuple[int, int]:
    """(database + WAL file sizes, bytes of the answer facts' bodies)."""
    files = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    with sqlite3.connect(path) as db:
        (answers,) = db.execute(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM facts WHERE kind = 'idempotent_answer'"
        ).fetchone()
    return files, answers


def server_figures(root: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-idem-") as tmp:
        path = Path(tmp) / "journal.db"
        env = {"DATABASE_PATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"}
        with running_server(register=False, extra_env=env, root=root) as server:
            post = server.session.post
            headers = {"Idempotency-Key": "warm-up"}
            assert post(f"{server.url}/orders", json=order("x"), headers=headers).status_code == 404
            rss_before, (files_before, answers_before) = server.rss_bytes(), journal_bytes(path)
            for index in range(REQUESTS):
                headers = {"Idempotency-Key": f"key-{index}"}
                answer = post(f"{server.url}/orders", json=order("x" * IGNORED), headers=headers)
                assert answer.status_code == 404, answer.text
            rss_after, (files_after, answers_after) = server.rss_bytes(), journal_bytes(path)
    mib = 2**20
    return {
        "rss_before_mib": rss_before / mib,
        "rss_after_mib": rss_after / mib,
        "journal_growth_mib": (files_after - files_before) / mib,
        "answer_fact_bytes_per_key": (answers_after - answers_before) / REQUESTS,
    }


def app_figures(keys: int = REQUESTS) -> dict[str, float]:
    """In one process, the app with a journal: what memory keeps per key (tracemalloc,
    after a collection), for small requests and for requests with the large member.
    Uses only what every version has, so `--root` can measure an earlier tree."""
    import asyncio

    from falcon import testing

    from miniexchange.http.app import create_app
    from miniexchange.settings import load_settings
    from miniexchange.testing import ManualClock

    async def measure(path: Path) -> dict[str, float]:
        settings = load_settings({"DATABASE_PATH": str(path), "EXPIRATION_INTERVAL": "1h"})
        app = create_app(settings, clock=ManualClock.at("2026-02-17T09:00:00Z"))
        async with testing.ASGIConductor(app) as conductor:

            async def send(key: str, padding: str) -> None:
                answer = await conductor.simulate_post(
                    "/orders", json=order(padding), headers={"Idempotency-Key": key}
                )
                assert answer.status_code == 404, answer.text

            def kept() -> int:
                gc.collect()
                return tracemalloc.get_traced_memory()[0]

            await send("warm-up", "x")
            tracemalloc.start()
            try:
                before = kept()
                for index in range(keys):
                    await send(f"small-{index:04}", "x")
                small = kept() - before
                for index in range(keys):
                    await send(f"large-{index:04}", "x" * IGNORED)
                await send("last", "x")  # the idle journal writer holds its last batch
                large = kept() - before - small
            finally:
                tracemalloc.stop()
        return {
            "app_bytes_per_key_small_request": small / keys,
            "app_bytes_per_key_large_request": large / keys,
        }

    with tempfile.TemporaryDirectory(prefix="bench-idem-") as tmp:
        return asyncio.run(measure(Path(tmp) / "journal.db"))


def store_figures() -> dict[str, float]:
    """The store alone (this version): bytes per kept key, and one answer fact's size."""
    from miniexchange.http.fingerprint import fingerprint
    from miniexchange.http.idempotency import IdempotencyStore, IdempotentAnswer
    from miniexchange.model.idempotency import fingerprint_digest
    from miniexchange.testing import ManualClock

    body = b'{"error":"broker_not_found","message":"Broker ghost does not exist"}'
    clock = ManualClock.at("2026-02-17T09:00:00Z")
    store = IdempotencyStore(clock, 24 * 3600 * 1_000_000, KEYS)
    keys = [f"{index:08d}-3f1c-4a6e-9b7d-2c5e8f0a1b3c" for index in range(KEYS)]  # UUID-long
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for key in keys:  # a digest per request; answers rendered by orjson, as served
        store.begin("/orders", key, fingerprint_digest(fingerprint(order(key))))
        store.finish("/orders", key, 404, orjson.dumps(orjson.loads(body)))
        clock.advance(microseconds=1)
    gc.collect()
    memory = (tracemalloc.get_traced_memory()[0] - before) / KEYS
    tracemalloc.stop()
    facts = {}
    for name, padding in (("small", "x"), ("large", "x" * IGNORED)):
        keep = IdempotentAnswer("/orders", keys[0], fingerprint_digest(fingerprint(order(padding))), 0,
                          lambda outcome: (404, body))  # fmt: skip
        fact = keep.fact(None)
        assert fact is not None
        facts[name] = len(fact[1])
    return {
        "answer_bytes": len(body),
        "store_bytes_per_key": memory,
        "fact_bytes_small_request": facts["small"],
        "fact_bytes_large_request": facts["large"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree whose code runs")
    parser.add_argument("--only", choices=("server", "app", "store"))
    arguments = parser.parse_args()
    if arguments.only in (None, "server"):
        print(orjson.dumps(server_figures(arguments.root.resolve())).decode())
    if arguments.only in (None, "app"):
        print(orjson.dumps(app_figures()).decode())
    if arguments.only in (None, "store"):
        print(orjson.dumps(store_figures()).decode())


if __name__ == "__main__":
    main()
