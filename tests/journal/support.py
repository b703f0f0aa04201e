"""Journals that misbehave on purpose, and ids that continue where others stopped.

Only the write is replaced: everything else (the group-commit writer thread, the
callbacks, the failure hook) is the real `SqliteJournal`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

from miniexchange.journal.facts import Fact
from miniexchange.journal.store import SqliteJournal
from miniexchange.testing import SequentialIds

WAIT_S = 60.0
"""How long to wait for something that must happen; never an upper bound on speed."""

DISK_FULL = "database or disk is full"


class FailingJournal(SqliteJournal):
    """Writes like the real journal until `failing` is set, then every write raises the
    error SQLite gives on a full disk (the same exception object each time)."""

    def __init__(
        self,
        path: str,
        on_failure: Callable[[BaseException], None] | None = None,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        super().__init__(path, on_failure=on_failure, on_commit=on_commit)
        self.failing = threading.Event()
        self.error = sqlite3.OperationalError(DISK_FULL)

    def _write(self, rows: list[Fact]) -> None:
        if self.failing.is_set():
            raise self.error
        super()._write(rows)


class SlowJournal(SqliteJournal):
    """A slow disk: every commit takes `delay_s` longer (fault injection, not a wait)."""

    def __init__(self, path: str, delay_s: float) -> None:
        super().__init__(path, synchronous="normal")
        self.delay_s = delay_s

    def _write(self, rows: list[Fact]) -> None:
        time.sleep(self.delay_s)
        super()._write(rows)


def ids_after(count: int) -> SequentialIds:
    """Fresh ids that continue after the first `count`: a restarted exchange then hands
    out the ids the live one would have (production ids are random UUIDs)."""
    ids = SequentialIds()
    for _ in range(count):
        ids.order_id()
    return ids


def ids_used(ids: SequentialIds) -> int:
    """How many ids `ids` has handed out, counting the one this call takes."""
    return int(ids.order_id()[-12:])
