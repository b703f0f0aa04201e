"""The SQLite journal alone: commit order, group commit, callbacks, failure, close.

Nothing here sleeps to synchronise: the writer thread is held at a known point through
the `on_commit` hook (called after a commit, before its callbacks) or a failing `_write`,
and a test waits on events and conditions that the callbacks set.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from miniexchange.journal import facts
from miniexchange.journal.facts import Fact
from miniexchange.journal.store import (
    Durable,
    JournalUnavailable,
    MemoryJournal,
    SqliteJournal,
    open_journal,
)
from tests.journal.support import DISK_FULL, WAIT_S, FailingJournal


def fact(n: int) -> Fact:
    """A real, small fact whose body tells which one it is."""
    return facts.webhook_deleted(f"wh-{n}")


def bodies(path: Path) -> list[bytes]:
    """What another connection sees committed in the file, in commit order."""
    with sqlite3.connect(path) as reader:
        return [row[0] for row in reader.execute("SELECT body FROM facts ORDER BY seq")]


class Told:
    """Records what each append's callback was told, in the order the callbacks ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, BaseException | None]] = []
        self._changed = threading.Condition()

    def callback(self, tag: int) -> Durable:
        def done(error: BaseException | None) -> None:
            with self._changed:
                self.calls.append((tag, error))
                self._changed.notify_all()

        return done

    def wait_for(self, count: int) -> list[tuple[int, BaseException | None]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.calls) >= count, WAIT_S)
            return list(self.calls)


class HeldWriter:
    """An `on_commit` hook that records each commit and holds the writer thread after
    its first commit (before that commit's callbacks) until `release` is set."""

    def __init__(self) -> None:
        self.commits: list[int] = []  # facts per commit
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, seconds: float, count: int) -> None:
        assert seconds >= 0
        self.commits.append(count)
        if len(self.commits) == 1:
            self.inside.set()
            assert self.release.wait(WAIT_S)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def held() -> HeldWriter:
    return HeldWriter()


@pytest.fixture
def journal(path: Path, held: HeldWriter) -> Iterator[SqliteJournal]:
    journal = SqliteJournal(str(path), on_commit=held)
    journal.start()
    yield journal
    held.release.set()
    journal.close()


def test_nothing_is_opened_before_use(tmp_path: Path) -> None:
    """The app is built at import: the journal touches the disk only at start."""
    path = tmp_path / "data" / "journal.db"
    journal = SqliteJournal(str(path))
    assert not path.parent.exists()
    journal.start()
    assert path.exists()
    journal.close()


def test_facts_come_back_in_commit_order(path: Path) -> None:
    journal = SqliteJournal(str(path))
    journal.start()
    told = Told()
    appended = [fact(n) for n in range(10)]
    journal.append(appended[:1], told.callback(0))
    journal.append(appended[1:4], told.callback(1))
    told.wait_for(2)
    journal.append(appended[4:9], told.callback(2))
    journal.append(appended[9:], told.callback(3))
    journal.close()
    assert told.calls == [(0, None), (1, None), (2, None), (3, None)]

    reopened = SqliteJournal(str(path))
    assert list(reopened.facts()) == appended
    reopened.close()
    assert list(reopened.facts()) == appended  # a closed journal reopens to read
    reopened.close()


def test_numbering_goes_on_past_every_fact_a_snapshot_of_its_own_covers(path: Path) -> None:
    """The Ray engine keeps its snapshot apart (`covered_seq`): once it covers every fact
    and they are forgotten, a journal reopened over the empty table numbers on past it,
    so that `facts(after=covered)` finds the new facts; numbered from 1 again, it would
    skip them."""
    journal = SqliteJournal(str(path), engine="ray")
    journal.start()
    told = Told()
    journal.append([fact(1), fact(2), fact(3)], told.callback(0))
    told.wait_for(1)
    assert journal.committed_seq == 3
    journal.forget_through(3)
    journal.close()
    assert bodies(path) == []

    reopened = SqliteJournal(str(path), engine="ray", covered_seq=3)
    reopened.start()
    reopened.append([fact(4)], told.callback(1))
    told.wait_for(2)
    assert reopened.committed_seq == 4
    reopened.close()
    assert list(SqliteJournal(str(path), engine="ray").facts(after=3)) == [fact(4)]


def test_a_new_file_has_no_facts(path: Path) -> None:
    journal = SqliteJournal(str(path))
    assert list(journal.facts()) == []
    journal.close()


def test_appends_while_the_writer_is_busy_share_one_commit(
    path: Path, journal: SqliteJournal, held: HeldWriter
) -> None:
    told = Told()
    journal.append((fact(0),), told.callback(0))
    assert held.inside.wait(WAIT_S)  # the first commit is done, its callbacks wait
    threads_count, per_thread = 4, 50
    order: list[int] = []  # the order of appends, as the appends happened
    lock = threading.Lock()

    def appender(first: int) -> None:
        for n in range(first, first + per_thread):
            with lock:  # so that `order` is the exact order of the appends
                journal.append((fact(n),), told.callback(n))
                order.append(n)

    threads = [
        threading.Thread(target=appender, args=(1 + t * per_thread,)) for t in range(threads_count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert told.calls == []  # nobody hears of anything before its commit

    held.release.set()
    calls = told.wait_for(1 + threads_count * per_thread)
    assert held.commits == [1, threads_count * per_thread]  # 201 appends, 2 commits
    assert calls == [(n, None) for n in [0, *order]]  # callbacks in append order
    assert bodies(path) == [fact(n)[1] for n in [0, *order]]


def test_a_callback_runs_only_once_its_facts_are_committed(path: Path) -> None:
    journal = SqliteJournal(str(path))
    journal.start()
    seen: list[tuple[int, bool]] = []
    finished = threading.Event()

    def check(n: int) -> Durable:
        def done(error: BaseException | None) -> None:
            assert error is None
            seen.append((n, fact(n)[1] in bodies(path)))
            if n == 9:
                finished.set()

        return done

    for n in range(10):
        journal.append((fact(n),), check(n))
    assert finished.wait(WAIT_S)
    journal.close()
    assert seen == [(n, True) for n in range(10)]


def test_one_append_may_carry_several_facts_and_none(path: Path) -> None:
    journal = SqliteJournal(str(path))
    journal.start()
    told = Told()
    journal.append((fact(1), fact(2), fact(3)), told.callback(1))
    journal.append((), told.callback(2))  # a barrier: committed after what came before
    assert told.wait_for(2) == [(1, None), (2, None)]
    journal.close()
    assert bodies(path) == [fact(n)[1] for n in (1, 2, 3)]


def test_close_commits_what_was_appended(path: Path) -> None:
    journal = SqliteJournal(str(path))
    told = Told()
    for n in range(100):  # appended before the writer even runs
        journal.append((fact(n),), told.callback(n))
    journal.start()
    journal.close()
    assert told.calls == [(n, None) for n in range(100)]  # no waiting: close waited
    assert bodies(path) == [fact(n)[1] for n in range(100)]


def test_close_of_a_journal_never_started_is_harmless(path: Path) -> None:
    journal = SqliteJournal(str(path))
    journal.close()
    journal.close()
    assert not path.exists()


def test_a_failed_write_answers_every_waiting_append_and_every_later_one(
    path: Path, held: HeldWriter
) -> None:
    failures: list[BaseException] = []
    journal = FailingJournal(str(path), on_failure=failures.append, on_commit=held)
    journal.start()
    told = Told()
    journal.append((fact(0),), told.callback(0))
    assert held.inside.wait(WAIT_S)  # committed; the writer is held before its callback
    for n in range(1, 6):  # these wait for the next commit, which will fail
        journal.append((fact(n),), told.callback(n))
    journal.failing.set()
    held.release.set()
    calls = told.wait_for(6)
    assert calls == [(0, None)] + [(n, journal.error) for n in range(1, 6)]
    assert failures == [journal.error]

    journal.append((fact(6),), told.callback(6))  # answered at once, nothing written
    assert len(told.calls) == 7
    tag, error = told.calls[6]
    assert tag == 6
    assert isinstance(error, JournalUnavailable)
    assert str(error) == DISK_FULL
    journal.close()
    assert failures == [journal.error]  # the hook ran once
    assert held.commits == [1]
    assert bodies(path) == [fact(0)[1]]  # the failed transaction left nothing behind


class FailingSlowly(FailingJournal):
    """A failing write that first waits for `proceed`, so appends can queue behind it."""

    def __init__(self, path: str, on_failure: Callable[[BaseException], None]) -> None:
        super().__init__(path, on_failure=on_failure)
        self.writing = threading.Event()
        self.proceed = threading.Event()

    def _write(self, rows: list[Fact]) -> None:
        if self.failing.is_set():
            self.writing.set()
            assert self.proceed.wait(WAIT_S)
        super()._write(rows)


def test_appends_queued_behind_a_failing_write_get_journal_unavailable(path: Path) -> None:
    failures: list[BaseException] = []
    journal = FailingSlowly(str(path), on_failure=failures.append)
    journal.start()
    journal.failing.set()
    told = Told()
    journal.append((fact(0),), told.callback(0))
    assert journal.writing.wait(WAIT_S)
    for n in range(1, 4):  # queued before anyone knows the write will fail
        journal.append((fact(n),), told.callback(n))
    journal.proceed.set()
    calls = told.wait_for(4)
    assert calls[0] == (0, journal.error)
    assert [tag for tag, _ in calls[1:]] == [1, 2, 3]
    for _, error in calls[1:]:
        assert isinstance(error, JournalUnavailable)
        assert str(error) == DISK_FULL
    journal.close()
    assert failures == [journal.error]
    assert bodies(path) == []


class CappedJournal(SqliteJournal):
    """A real full disk, as SQLite reports it: the file may not grow past its size."""

    def fill_the_disk(self) -> None:
        connection = self._connect()
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
        connection.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_fails_the_commit_and_keeps_what_was_committed(path: Path) -> None:
    failures: list[BaseException] = []
    journal = CappedJournal(str(path), on_failure=failures.append)
    journal.start()
    told = Told()
    journal.append((fact(1), fact(2)), told.callback(1))
    told.wait_for(1)
    journal.fill_the_disk()
    big = facts.webhook_saved({"webhook_id": "wh-big", "url": "https://x.test/" + "a" * 65536})
    journal.append((big,), told.callback(2))
    calls = told.wait_for(2)
    journal.close()
    assert calls[0] == (1, None)
    tag, error = calls[1]
    assert tag == 2
    assert isinstance(error, sqlite3.OperationalError)
    assert str(error) == DISK_FULL
    assert failures == [error]
    reopened = SqliteJournal(str(path))
    assert list(reopened.facts()) == [fact(1), fact(2)]
    reopened.close()


def test_a_failure_hook_that_raises_does_not_stop_the_callbacks(path: Path) -> None:
    def broken_hook(failure: BaseException) -> None:
        raise RuntimeError("the hook itself failed")

    journal = FailingJournal(str(path), on_failure=broken_hook)
    journal.start()
    journal.failing.set()
    told = Told()
    journal.append((fact(1),), told.callback(1))
    assert told.wait_for(1) == [(1, journal.error)]
    journal.close()


def test_a_commit_hook_that_raises_does_not_stop_the_callbacks(path: Path) -> None:
    def broken_hook(seconds: float, count: int) -> None:
        raise RuntimeError("the metrics hook failed")

    journal = SqliteJournal(str(path), on_commit=broken_hook)
    journal.start()
    told = Told()
    journal.append((fact(1),), told.callback(1))
    journal.append((fact(2),), told.callback(2))
    assert told.wait_for(2) == [(1, None), (2, None)]
    journal.close()


def test_a_callback_that_raises_does_not_stop_the_writer(path: Path) -> None:
    journal = SqliteJournal(str(path))
    journal.start()

    def broken(error: BaseException | None) -> None:
        raise RuntimeError("a broken callback")

    told = Told()
    journal.append((fact(1),), broken)
    journal.append((fact(2),), told.callback(2))
    assert told.wait_for(1) == [(2, None)]
    journal.close()
    assert bodies(path) == [fact(1)[1], fact(2)[1]]


def test_memory_journal_answers_at_once_and_keeps_nothing() -> None:
    journal = open_journal(":memory:")
    assert isinstance(journal, MemoryJournal)
    journal.start()
    told = Told()
    journal.append((fact(1),), told.callback(1))
    assert told.calls == [(1, None)]
    assert list(journal.facts()) == []
    journal.close()


def test_open_journal_opens_sqlite_for_a_path(path: Path) -> None:
    journal = open_journal(str(path), "normal")
    assert isinstance(journal, SqliteJournal)
    journal.start()
    told = Told()
    journal.append((fact(1),), told.callback(1))
    assert told.wait_for(1) == [(1, None)]
    journal.close()
    with sqlite3.connect(path) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
