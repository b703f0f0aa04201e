"""Snapshots: the folded state of the journal up to a sequence number, in a file.

Restart time must not grow with the journal's age, so every `SNAPSHOT_INTERVAL` while
facts arrive a separate process (`python -m miniexchange.journal.snapshot`) reads the
previous snapshot, folds the committed facts after it with the recovery code itself
(`recovery.fold`) and writes the result next to the journal. It is consistent by
construction (the same fold a restart runs), and the matching process pays no CPU and
no pause for it: it only learns the new sequence number, then deletes the facts the
snapshot covers, a few thousand rows per writer pass.

A start loads the latest snapshot and replays only the facts after it. The file is one
JSON header line, then one JSON array per record (ledgers, credentials, subscriptions,
trades, orders, symbols, candles, stored answers) and an `end` line with the record
count; it is written to a temporary file, synced and renamed, so a crash leaves the old
one or the new one, never half of one. A snapshot of another format is refused at start
with one line naming the file: it is never guessed at.

Version 2 added the candles (one record per symbol and interval). A version 1 snapshot
is still read: it has no candles, and the trades it covers are no longer in the journal
to rebuild them from, so the candles then start with the facts after it (history before
such a snapshot has no candles; the next snapshot, version 2, carries what there is).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

import orjson

from miniexchange.journal.recovery import DEFAULT_RETENTION, Recovered, Retention, fold
from miniexchange.model.candles import Candle, SymbolCandles
from miniexchange.model.commands import BID, SubmitOrder
from miniexchange.model.credentials import Credentials
from miniexchange.model.idempotency import StoredAnswer
from miniexchange.model.ledger import Ledger
from miniexchange.model.orders import CANCELLED, EXPIRED, Order, Trade, new_order

log = logging.getLogger("miniexchange.journal")

FORMAT = "miniexchange-snapshot"
VERSION = 2
"""The format this code writes; it reads this one and those in `READS`."""
READS = (1, 2)
"""The versions this code reads (1: before the candles); any other is refused at start."""


class SnapshotError(Exception):
    """A snapshot file cannot be read; `str(error)` is one line that names the file."""


def snapshot_path(database_path: str) -> str:
    """Where the snapshot of the journal at `database_path` lives: beside it."""
    return f"{database_path}.snapshot"


# -- writing ------------------------------------------------------------------------------


def write_snapshot(path: str, seq: int, state: Recovered) -> int:
    """Write `state` (folded up to fact `seq`) atomically to `path`; return its size."""

    def write(out: IO[bytes]) -> None:
        count = _write_records(out, seq, state)
        out.write(orjson.dumps(["end", count]) + b"\n")

    return write_atomically(path, write)


def write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> int:
    """Whatever `write` writes, in a temporary file beside `path` (the journal's
    permissions: a snapshot holds what the journal holds), synced, then renamed over
    `path`, the rename synced too: a crash leaves the old file or the new one, never
    half of one. Returns the new file's size."""
    temporary = f"{path}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb", buffering=1 << 20) as out:
        write(out)
        out.flush()
        os.fsync(out.fileno())
        size = out.tell()
    os.replace(temporary, path)
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)
    return size


def _write_records(out: IO[bytes], seq: int, state: Recovered) -> int:
    header = {
        "format": FORMAT,
        "version": VERSION,
        "seq": seq,
        "fact_count": state.fact_count,
        "last_at": state.last_at,
    }
    out.write(orjson.dumps(header) + b"\n")
    count = 0
    for record in _records(state):
        out.write(orjson.dumps(record) + b"\n")
        count += 1
    return count


def _records(state: Recovered) -> Iterator[list[Any]]:
    for ledger in state.ledgers.values():
        yield [
            "ledger",
            ledger.broker_id,
            ledger.cash,
            list(ledger.holdings.items()),
            ledger.created_at,
            ledger.updated_at,
        ]
    for broker_id, held in state.credentials.items():
        yield ["credentials", broker_id, held.api_key_digest, held.webhook_secret]
    for subscription in state.webhooks.values():
        yield ["webhook", subscription]
    for order in state.orders.values():  # each trade once: with its bid
        if order.side == BID:
            for trade in order.trades:
                yield ["trade", *trade]
    for order in state.orders.values():
        yield ["order", *order_fields(order), [trade.trade_id for trade in order.trades]]
    for symbol in sorted(state.known_symbols):
        kept = state.trades.get(symbol, ())
        yield ["symbol", symbol, state.volumes.get(symbol, 0), [t.trade_id for t in kept]]
    for symbol, candles in state.candles.items():
        for interval, kept in candles.items():
            if kept:
                yield ["candles", symbol, interval, [list(candle) for candle in kept]]
    for (endpoint, key), answer in state.answers.items():  # oldest first use first
        yield [
            "answer",
            endpoint,
            key,
            base64.b64encode(answer.digest).decode(),
            answer.status,
            base64.b64encode(answer.body).decode(),
            answer.first_used_at,
        ]


# -- reading ------------------------------------------------------------------------------


def read_header(path: str) -> dict[str, Any] | None:
    """The header of the snapshot at `path` (None: there is none), its format checked."""
    try:
        with open(path, "rb") as source:
            return _header(path, source.readline())
    except FileNotFoundError:
        return None


def read_snapshot(
    path: str, retention: Retention = DEFAULT_RETENTION
) -> tuple[int, Recovered] | None:
    """The sequence number and folded state of the snapshot at `path`; None: none.
    `retention` bounds the state's stored answers as the fold would."""
    try:
        source = open(path, "rb")  # noqa: SIM115 (closed below, after a streamed read)
    except FileNotFoundError:
        return None
    with source:
        header = _header(path, source.readline())
        state = Recovered(
            answers=retention.kept_answers(),
            fact_count=header["fact_count"],
            last_at=header["last_at"],
        )
        try:
            count = _read_records(source, state)
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, IndexError) as error:
            raise SnapshotError(f"{path}: unreadable snapshot record ({error})") from None
    if count is None:
        raise SnapshotError(f"{path}: the snapshot is incomplete (no end record)")
    return header["seq"], state


def _header(path: str, line: bytes) -> dict[str, Any]:
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SnapshotError(f"{path}: not a miniexchange snapshot")
    if header.get("version") not in READS:
        raise SnapshotError(
            f"{path}: snapshot format version {header.get('version')!r}, this version reads "
            f"{' and '.join(map(str, READS))}; move the file away to recover from the journal alone "
            "(if it still holds every fact)"
        )
    return header


def _read_records(lines: Iterable[bytes], state: Recovered) -> int | None:
    """Fill `state` from the records; the count of the end record, None without one."""
    trades: dict[str, Trade] = {}
    for count, line in enumerate(lines):
        record = orjson.loads(line)
        tag = record[0]
        if tag == "trade":
            trade = Trade(*record[1:])
            trades[trade.trade_id] = trade
        elif tag == "order":
            order = _order(record, trades)
            state.orders[order.order_id] = order
        elif tag == "ledger":
            _, broker_id, cash, holdings, created_at, updated_at = record
            ledger = Ledger(broker_id, cash, dict(holdings), created_at)
            ledger.updated_at = updated_at
            state.ledgers[broker_id] = ledger
        elif tag == "credentials":
            state.credentials[record[1]] = Credentials(record[2], record[3])
        elif tag == "webhook":
            state.webhooks[record[1]["webhook_id"]] = record[1]
        elif tag == "symbol":
            _, symbol, volume, kept = record
            state.known_symbols.add(symbol)
            if volume:
                state.volumes[symbol] = volume
            if kept:
                state.trades[symbol] = deque(trades[trade_id] for trade_id in kept)
        elif tag == "candles":
            _, symbol, interval, kept = record
            candles = state.candles.get(symbol)
            if candles is None:
                candles = state.candles[symbol] = SymbolCandles()
            if interval not in candles.series:
                raise ValueError(f"unknown candle interval {interval!r}")
            candles.series[interval].extend(Candle(*candle) for candle in kept)
        elif tag == "answer":
            _, endpoint, key, digest, status, body, first_used_at = record
            answer = StoredAnswer(
                base64.b64decode(digest), status, base64.b64decode(body), first_used_at
            )
            state.answers.put((endpoint, key), answer, state.last_at)
        elif tag == "end":
            if record[1] != count:
                raise ValueError(f"{count} records, the end record says {record[1]}")
            return count
        else:
            raise ValueError(f"unknown record {tag!r}")
    return None


def order_fields(order: Order) -> list[Any]:
    """An order's own fields as a record keeps them: what the rest derives from, with
    its trades (`rebuilt_order`). The shards' parts carry orders so too."""
    return [
        order.order_id,
        order.type,
        order.broker_id,
        order.document_number,
        order.side,
        order.symbol,
        order.price,
        order.quantity,
        order.expires_at,
        order.created_at,
        order.status,
        order.cancelled_at,
        order.expired_at,
    ]


def _order(record: list[Any], trades: dict[str, Trade]) -> Order:
    """A snapshot's order record, its trades given by id."""
    return rebuilt_order(record[1:-1], [trades[trade_id] for trade_id in record[-1]])


def rebuilt_order(fields: Sequence[Any], trades: Iterable[Trade]) -> Order:
    """The order of `order_fields` and its trades, rebuilt by the transitions that made
    it; a ValueError if its status does not follow from them."""
    (
        order_id,
        type_,
        broker_id,
        document_number,
        side,
        symbol,
        price,
        quantity,
        expires_at,
        created_at,
        status,
        cancelled_at,
        expired_at,
    ) = fields
    command = SubmitOrder(
        type_, broker_id, document_number, side, symbol, quantity, price, expires_at
    )
    order = new_order(command, order_id, created_at)
    for trade in trades:
        order = order.filled(trade)
    if status in (CANCELLED, EXPIRED):
        order = order.closed(status, cancelled_at, expired_at)
    if order.status != status:
        raise ValueError(f"order {order_id}: status {status!r} does not follow from its fills")
    return order


# -- the snapshot process -----------------------------------------------------------------


def take_snapshot(database_path: str, upto: int, retention: Retention) -> dict[str, Any]:
    """Fold the previous snapshot and the facts after it up to `upto` into a new one.

    Reads the journal through its own read-only connection: only committed facts, and
    never the writer's lock. One snapshot process at a time per journal (a lock file):
    one left running by a killed worker finishes first, and the next folds onto its
    snapshot instead of writing an older state over a newer one."""
    with open(f"{snapshot_path(database_path)}.lock", "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _take_snapshot(database_path, upto, retention)


def _take_snapshot(database_path: str, upto: int, retention: Retention) -> dict[str, Any]:
    path = snapshot_path(database_path)
    started = time.perf_counter()
    previous = read_snapshot(path, retention)
    base, state = (
        previous if previous is not None else (0, Recovered(answers=retention.kept_answers()))
    )
    if upto <= base:
        return {"seq": base, "facts": 0, "bytes": 0, "seconds": 0.0}
    folded_before = state.fact_count
    connection = sqlite3.connect(f"file:{database_path}?mode=ro", uri=True)
    try:
        cursor = connection.execute(
            "SELECT kind, body FROM facts WHERE seq > ? AND seq <= ? ORDER BY seq", (base, upto)
        )
        state = fold(_rows(cursor), state, retention)
    finally:
        connection.close()
    size = write_snapshot(path, upto, state)
    return {
        "seq": upto,
        "facts": state.fact_count - folded_before,
        "bytes": size,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _rows(cursor: sqlite3.Cursor) -> Iterator[tuple[str, bytes]]:
    while rows := cursor.fetchmany(4096):
        yield from rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m miniexchange.journal.snapshot",
        description="Fold a miniexchange journal's committed facts into its snapshot.",
    )
    parser.add_argument("database_path")
    parser.add_argument("upto", type=int, help="the last fact's sequence number to include")
    parser.add_argument("--tape-length", type=int, default=Retention.tape_length)
    parser.add_argument("--vwap-window-us", type=int, default=Retention.vwap_window_us)
    parser.add_argument("--idempotency-max-keys", type=int, default=Retention.idempotency_max_keys)
    parser.add_argument("--idempotency-ttl-us", type=int, default=Retention.idempotency_ttl_us)
    arguments = parser.parse_args(argv)
    os.nice(10)  # the matching process comes first on a shared core
    retention = Retention(
        arguments.tape_length,
        arguments.vwap_window_us,
        arguments.idempotency_max_keys,
        arguments.idempotency_ttl_us,
    )
    try:
        written = take_snapshot(arguments.database_path, arguments.upto, retention)
    except (SnapshotError, sqlite3.Error, OSError) as error:
        print(f"snapshot failed: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(written).decode() + "\n")
    return 0


class SnapshotSchedule:
    """Starts the snapshot process at most `interval_s` after the previous one while
    facts arrive (one at a time: a snapshot being written delays the next), then has
    the journal forget the facts it covers."""

    def __init__(
        self,
        database_path: str,
        interval_s: float,
        retention: Retention,
        committed: Callable[[], int],
        covered: Callable[[int], None],
        seq: int = 0,
    ) -> None:
        """`committed()`: the last committed fact's sequence number; `covered(seq)`:
        told once the facts up to `seq` are in a durable snapshot; `seq`: what the
        latest snapshot covers (0: there is none)."""
        self._database_path = database_path
        self._interval_s = interval_s
        self._retention = retention
        self._committed = committed
        self._covered = covered
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="journal-snapshots", daemon=True)
        self.seq = seq
        """The sequence number the latest snapshot covers."""

    def start(self) -> None:
        if self.seq:
            self._covered(self.seq)  # a deletion the previous process did not finish
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling; a snapshot being written is abandoned (the old one stays)."""
        self._stopping.set()
        with self._lock:
            if self._process is not None:
                self._process.kill()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        last_started = time.monotonic()
        poll_s = min(self._interval_s, 1.0)
        while not self._stopping.wait(max(0.0, last_started + self._interval_s - time.monotonic())):
            upto = self._committed()
            if upto <= self.seq:  # no fact since the last snapshot: look again soon
                if self._stopping.wait(poll_s):
                    return
                continue
            last_started = time.monotonic()
            if self.take(upto):
                self._covered(upto)

    def take(self, upto: int) -> bool:
        """Run the snapshot process up to fact `upto`; True once its file is durable."""
        command = [
            sys.executable,
            "-m",
            "miniexchange.journal.snapshot",
            self._database_path,
            str(upto),
            f"--tape-length={self._retention.tape_length}",
            f"--vwap-window-us={self._retention.vwap_window_us}",
            f"--idempotency-max-keys={self._retention.idempotency_max_keys}",
            f"--idempotency-ttl-us={self._retention.idempotency_ttl_us}",
        ]
        with self._lock:
            if self._stopping.is_set():
                return False
            self._process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        out, err = self._process.communicate()
        code = self._process.returncode
        with self._lock:
            self._process = None
        if code != 0:
            if not self._stopping.is_set():
                log.error(
                    "snapshot failed",
                    extra={
                        "event": "snapshot_failed",
                        "reason": err.decode(errors="replace").strip()[-2000:] or f"exit {code}",
                    },
                )
            return False
        written = orjson.loads(out)
        self.seq = upto
        log.info("snapshot written", extra={"event": "snapshot_written", **written})
        return True


if __name__ == "__main__":
    sys.exit(main())
