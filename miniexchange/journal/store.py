"""Where facts become durable: an SQLite file in WAL mode, written with group commit.

Writers (symbol actors, the registry, the webhook dispatcher) `append` facts with a
callback and go on; one writer thread takes everything appended meanwhile, writes it
in one transaction, commits, and then runs the callbacks in append order. So a burst
of orders costs one disk sync, not one each, and nobody is told of a fact (no 2xx, no
webhook) before the commit that holds it.

If a commit fails, every waiting and later append is answered with the error and the
`on_failure` hook runs once (production: log and stop the worker so that it restarts
from the journal; memory never runs ahead of disk for long).

The writer numbers the facts itself (`seq`, never reused, also past a snapshot whose
facts a power loss took from the file), and with snapshots on it deletes the facts a
durable snapshot covers, a bounded chunk per pass so that commits go on between them.
The file's `user_version` says its format: 0 (before it was stamped) and 1 are read,
anything newer is refused at start with one line naming the file; so is a file SQLite
cannot read (garbage, cut short), rather than a traceback. Its `application_id` says
which engine wrote it (a journal belongs to one: the embedded one journals facts, the
Ray one of docs/ray.md commands): 0, every journal before the stamp, is the embedded
engine's, and a start of the other engine refuses the file the same way.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeGuard

from miniexchange.journal.facts import Fact
from miniexchange.journal.recovery import DEFAULT_RETENTION, Recovered, Retention
from miniexchange.journal.snapshot import (
    SnapshotError,
    SnapshotSchedule,
    read_header,
    read_snapshot,
    snapshot_path,
)

log = logging.getLogger("miniexchange.journal")

Durable = Callable[[BaseException | None], None]
"""Called once the facts are committed (None) or could not be (the error)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS facts (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    body BLOB NOT NULL
)
"""


JOURNAL_FORMAT = 1
"""`PRAGMA user_version` of a journal this code writes; 0 is the same layout, unstamped."""

ENGINE_STAMPS = {"embedded": 0, "ray": 0x4D58_5259}
"""`PRAGMA application_id` of a journal written by each engine (`ENGINE`); the Ray
engine's spells "MXRY". 0 is SQLite's default, so every embedded journal has it."""

FORGET_CHUNK = 10_000
"""Facts deleted per writer pass once a snapshot covers them (about 10 ms here)."""


class JournalUnavailable(Exception):
    """The journal failed earlier; nothing more can be recorded in this process."""


class JournalFormatError(Exception):
    """The journal or its snapshot cannot be read (another version wrote it, or it is
    damaged); its message is one line naming the file, shown instead of a traceback."""


def damaged(error: BaseException) -> TypeGuard[sqlite3.DatabaseError]:
    """SQLite says the file is not a database or is corrupt (garbage, cut short); a
    locked or unopenable file is another matter and keeps its own error."""
    return isinstance(error, sqlite3.DatabaseError) and (
        error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    )


def unreadable(path: str, error: Exception) -> JournalFormatError:
    """SQLite's own reason ("file is not a database", "database disk image is
    malformed") or recovery's (a fact it cannot replay), with the file it concerns and
    what the operator can do."""
    return JournalFormatError(
        f"{path}: the journal cannot be read ({error}); restore it from a copy, or move "
        "it away to start an empty exchange"
    )


class _Forget:
    """A writer-queue item: delete the facts up to `upto` (a durable snapshot has them)."""

    __slots__ = ("upto",)

    def __init__(self, upto: int) -> None:
        self.upto = upto


class MemoryJournal:
    """No persistence (`DATABASE_PATH=:memory:`): every append is durable at once."""

    path = ":memory:"
    keeps_facts = False
    """Nothing reads what is appended: a writer may append no facts, only its callback
    (the symbol actors' hot path skips encoding them)."""

    def append(self, facts: Sequence[Fact], done: Durable) -> None:
        done(None)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def facts(self) -> Iterator[tuple[str, bytes]]:
        return iter(())

    def history(self) -> tuple[Recovered | None, Iterator[tuple[str, bytes]]]:
        return None, iter(())


class SqliteJournal:
    keeps_facts = True

    def __init__(
        self,
        path: str,
        synchronous: str = "full",
        on_failure: Callable[[BaseException], None] | None = None,
        on_commit: Callable[[float, int], None] | None = None,
        snapshot_interval_s: float | None = None,
        retention: Retention = DEFAULT_RETENTION,
        engine: str = "embedded",
        covered_seq: int = 0,
    ) -> None:
        """`on_commit(seconds, fact_count)` is told of each commit (for metrics).
        `snapshot_interval_s`: snapshots at most this far apart while facts arrive
        (None: never; recovery then replays every fact). `retention`: what of the trade
        history a snapshot keeps beside the orders (the exchange's tape and VWAP window).
        `engine`: whose journal this is (`ENGINE_STAMPS`); another engine's is refused.
        `covered_seq`: the facts up to it are held by a snapshot this journal does not
        read itself (the Ray engine's): the numbering goes on past it even when every
        fact it covers was forgotten.

        Nothing is opened here (the app is built at import): see `_connect`."""
        self.path = path
        self._engine = engine
        self._snapshot_interval_s = snapshot_interval_s
        self._retention = retention
        self._snapshots: SnapshotSchedule | None = None
        self._last_seq = 0  # the last fact's sequence number, written by the writer only
        self._snapshot_seq = covered_seq  # what the snapshot found at start covers
        self._synchronous = "FULL" if synchronous == "full" else "NORMAL"
        self._connection: sqlite3.Connection | None = None
        self._queue: queue.SimpleQueue[tuple[Sequence[Fact], Durable] | _Forget | None] = (
            queue.SimpleQueue()
        )
        self._on_failure = on_failure
        self._on_commit = on_commit
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)

    def _connect(self) -> sqlite3.Connection:
        """Open the file on first use (at start, in the worker; never at import)."""
        if self._connection is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                self._open(connection)
            except BaseException as error:
                connection.close()
                if damaged(error):
                    raise unreadable(self.path, error) from None
                raise
            self._connection = connection
        return self._connection

    def _open(self, connection: sqlite3.Connection) -> None:
        """Check the file's format, set it up for writing, and find the last `seq`."""
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        if version > JOURNAL_FORMAT:
            raise JournalFormatError(
                f"{self.path}: journal format {version}, this version reads formats 0 "
                f"to {JOURNAL_FORMAT}; run the version that wrote it"
            )
        self._check_engine(connection, fresh=version == 0 and not _has_facts_table(connection))
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        connection.execute(SCHEMA)
        if version < JOURNAL_FORMAT:
            connection.execute(f"PRAGMA user_version={JOURNAL_FORMAT}")
        (last,) = connection.execute("SELECT coalesce(max(seq), 0) FROM facts").fetchone()
        try:
            header = read_header(snapshot_path(self.path))
        except SnapshotError as error:
            raise JournalFormatError(str(error)) from None
        if header is not None:
            self._snapshot_seq = header["seq"]
        self._last_seq = max(last, self._snapshot_seq)

    def _check_engine(self, connection: sqlite3.Connection, fresh: bool) -> None:
        """Refuse another engine's journal; stamp a new file with this engine's mark."""
        (stamp,) = connection.execute("PRAGMA application_id").fetchone()
        wanted = ENGINE_STAMPS[self._engine]
        if stamp == wanted:
            return
        if fresh and stamp == 0:
            connection.execute(f"PRAGMA application_id={wanted}")
            return
        writer = next((name for name, mark in ENGINE_STAMPS.items() if mark == stamp), None)
        raise JournalFormatError(
            f"{self.path}: a journal of ENGINE={writer}, and this start is ENGINE="
            f"{self._engine}; start it with ENGINE={writer}, or give DATABASE_PATH another file"
            if writer is not None
            else f"{self.path}: not a miniexchange journal (application_id {stamp})"
        )

    # -- reading (recovery, before start) ----------------------------------------

    def facts(self, after: int = 0) -> Iterator[tuple[str, bytes]]:
        """Every recorded fact after sequence number `after`, in commit order."""
        connection = self._connect()
        try:
            cursor = connection.execute(
                "SELECT kind, body FROM facts WHERE seq > ? ORDER BY seq", (after,)
            )
            while rows := cursor.fetchmany(4096):
                yield from rows
        except sqlite3.DatabaseError as error:
            if damaged(error):  # a page past the damage, found while reading
                raise unreadable(self.path, error) from None
            raise

    def history(self) -> tuple[Recovered | None, Iterator[tuple[str, bytes]]]:
        """The latest snapshot's folded state (None: none) and the facts after it."""
        self._connect()
        try:
            snapshot = read_snapshot(snapshot_path(self.path), self._retention)
        except SnapshotError as error:
            raise JournalFormatError(str(error)) from None
        if snapshot is None:
            return None, self.facts()
        seq, state = snapshot
        return state, self.facts(after=seq)

    # -- writing -----------------------------------------------------------------

    def start(self) -> None:
        self._connect()
        self._thread.start()
        if self._snapshot_interval_s is not None:
            self._snapshots = SnapshotSchedule(
                self.path,
                self._snapshot_interval_s,
                self._retention,
                committed=lambda: self.committed_seq,
                covered=self.forget_through,
                seq=self._snapshot_seq,
            )
            self._snapshots.start()

    def append(self, facts: Sequence[Fact], done: Durable) -> None:
        if self._failure is not None:
            done(JournalUnavailable(str(self._failure)))
            return
        self._queue.put((facts, done))

    @property
    def committed_seq(self) -> int:
        """The sequence number of the last committed fact (of the snapshot's, if later)."""
        return self._last_seq

    def forget_through(self, upto: int) -> None:
        """Delete the facts up to `upto`, which a durable snapshot holds: in chunks,
        in the writer, between the commits of what is appended meanwhile."""
        self._queue.put(_Forget(upto))

    def close(self) -> None:
        """Stop taking snapshots, commit what was appended, then stop the writer."""
        if self._snapshots is not None:
            self._snapshots.stop()
            self._snapshots = None
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _run(self) -> None:
        pending = self._queue
        while True:
            item = pending.get()
            if item is None:
                return
            batch = []
            forget: _Forget | None = None
            stop = False
            while True:  # group commit: take everything appended meanwhile
                if item is None:
                    stop = True
                    break
                if isinstance(item, _Forget):
                    forget = item
                else:
                    batch.append(item)
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(batch)
            if forget is not None and self._failure is None:
                self._forget(forget)
            if stop:
                return

    def _commit(self, batch: list[tuple[Sequence[Fact], Durable]]) -> None:
        error: BaseException | None = self._failure
        if error is None:
            started = time.perf_counter()
            rows = [fact for facts, _ in batch for fact in facts]
            try:
                self._write(rows)
            except Exception as failure:  # disk full, I/O error, ...
                error = self._fail(failure)
            else:
                if self._on_commit is not None:
                    try:
                        self._on_commit(time.perf_counter() - started, len(rows))
                    except Exception:  # a metrics hook must not silence the callbacks
                        log.exception("journal commit hook failed")
        else:
            error = JournalUnavailable(str(error))
        for _, done in batch:
            try:
                done(error)
            except Exception:
                log.exception("journal callback failed")

    def _write(self, rows: list[Fact]) -> None:
        connection = self._connect()
        first = self._last_seq + 1
        connection.execute("BEGIN")
        try:
            connection.executemany(
                "INSERT INTO facts (seq, kind, body) VALUES (?, ?, ?)",
                [(seq, kind, body) for seq, (kind, body) in enumerate(rows, first)],
            )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        self._last_seq = first + len(rows) - 1

    def _forget(self, item: _Forget) -> None:
        """Delete one chunk of the covered facts; queue the rest behind waiting commits."""
        connection = self._connect()
        (oldest,) = connection.execute("SELECT min(seq) FROM facts").fetchone()
        if oldest is None or oldest > item.upto:
            return
        bound = min(item.upto, oldest + FORGET_CHUNK - 1)
        try:
            connection.execute("DELETE FROM facts WHERE seq <= ?", (bound,))
        except sqlite3.Error as error:  # the facts stay; the next snapshot tries again
            log.warning(
                "journal forget failed",
                extra={"event": "journal_forget_failed", "reason": repr(error)},
            )
            return
        if bound < item.upto:
            self._queue.put(item)

    def _fail(self, failure: BaseException) -> BaseException:
        self._failure = failure
        log.error(
            "journal write failed",
            extra={"event": "journal_write_failed", "reason": repr(failure)},
        )
        if self._on_failure is not None:
            try:
                self._on_failure(failure)
            except Exception:  # every waiting append must still get its answer
                log.exception("journal failure hook failed")
        return failure


Journal = MemoryJournal | SqliteJournal


def _has_facts_table(connection: sqlite3.Connection) -> bool:
    found = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'facts'"
    ).fetchone()
    return found is not None


def open_journal(
    path: str,
    synchronous: str = "full",
    on_failure: Callable[[BaseException], None] | None = None,
    on_commit: Callable[[float, int], None] | None = None,
    snapshot_interval_s: float | None = None,
    retention: Retention = DEFAULT_RETENTION,
) -> Journal:
    if path == ":memory:":
        return MemoryJournal()
    return SqliteJournal(path, synchronous, on_failure, on_commit, snapshot_interval_s, retention)
