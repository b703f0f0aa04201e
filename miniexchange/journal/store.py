"""Where facts become durable: an SQLite file in WAL mode, written with group commit.

Writers (symbol actors, the registry, the webhook dispatcher) `append` facts with a
callback and go on; one writer thread takes everything appended meanwhile, writes it
in one transaction, commits, and then runs the callbacks in append order. So a burst
of orders costs one disk sync, not one each, and nobody is told of a fact (no 2xx, no
webhook) before the commit that holds it.

If a commit fails, every waiting and later append is answered with the error and the
`on_failure` hook runs once (production: log and stop the worker so that it restarts
from the journal; memory never runs ahead of disk for long).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from miniexchange.journal.facts import Fact

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


class JournalUnavailable(Exception):
    """The journal failed earlier; nothing more can be recorded in this process."""


class MemoryJournal:
    """No persistence (`DATABASE_PATH=:memory:`): every append is durable at once."""

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


class SqliteJournal:
    keeps_facts = True

    def __init__(
        self,
        path: str,
        synchronous: str = "full",
        on_failure: Callable[[BaseException], None] | None = None,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        """`on_commit(seconds, fact_count)` is told of each commit (for metrics).

        Nothing is opened here (the app is built at import): see `_connect`."""
        self.path = path
        self._synchronous = "FULL" if synchronous == "full" else "NORMAL"
        self._connection: sqlite3.Connection | None = None
        self._queue: queue.SimpleQueue[tuple[Sequence[Fact], Durable] | None] = queue.SimpleQueue()
        self._on_failure = on_failure
        self._on_commit = on_commit
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)

    def _connect(self) -> sqlite3.Connection:
        """Open the file on first use (at start, in the worker; never at import)."""
        if self._connection is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            connection.execute(SCHEMA)
            self._connection = connection
        return self._connection

    # -- reading (recovery, before start) ----------------------------------------

    def facts(self) -> Iterator[tuple[str, bytes]]:
        """Every recorded fact in commit order."""
        cursor = self._connect().execute("SELECT kind, body FROM facts ORDER BY seq")
        while rows := cursor.fetchmany(4096):
            yield from rows

    # -- writing -----------------------------------------------------------------

    def start(self) -> None:
        self._connect()
        self._thread.start()

    def append(self, facts: Sequence[Fact], done: Durable) -> None:
        if self._failure is not None:
            done(JournalUnavailable(str(self._failure)))
            return
        self._queue.put((facts, done))

    def close(self) -> None:
        """Commit what was appended, then stop the writer."""
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
            batch = [item]
            stop = False
            while True:  # group commit: take everything appended meanwhile
                try:
                    more = pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
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
        connection.execute("BEGIN")
        try:
            connection.executemany("INSERT INTO facts (kind, body) VALUES (?, ?)", rows)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

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


def open_journal(
    path: str,
    synchronous: str = "full",
    on_failure: Callable[[BaseException], None] | None = None,
    on_commit: Callable[[float, int], None] | None = None,
) -> Journal:
    if path == ":memory:":
        return MemoryJournal()
    return SqliteJournal(path, synchronous, on_failure, on_commit)
