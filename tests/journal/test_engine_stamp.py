"""A journal belongs to one engine: `PRAGMA application_id` says which, a new file gets
its engine's mark, and a start of the other engine refuses the file with one line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from miniexchange.journal.store import ENGINE_STAMPS, JournalFormatError, SqliteJournal


def opened(path: Path, engine: str) -> None:
    """Open the journal as a start does (reading its facts), then close it."""
    journal = SqliteJournal(str(path), engine=engine)
    try:
        list(journal.facts())
    finally:
        journal.close()


def stamp_of(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (stamp,) = db.execute("PRAGMA application_id").fetchone()
    return stamp


def test_a_new_journal_gets_its_engines_mark(tmp_path: Path) -> None:
    opened(tmp_path / "embedded.db", "embedded")
    opened(tmp_path / "ray.db", "ray")
    assert stamp_of(tmp_path / "embedded.db") == 0
    assert stamp_of(tmp_path / "ray.db") == ENGINE_STAMPS["ray"] == 0x4D585259  # "MXRY"


def test_an_embedded_journal_is_refused_by_the_ray_engine(tmp_path: Path) -> None:
    path = tmp_path / "exchange.db"
    opened(path, "embedded")
    opened(path, "embedded")  # its own engine reads it again
    with pytest.raises(JournalFormatError) as refused:
        opened(path, "ray")
    assert str(refused.value) == (
        f"{path}: a journal of ENGINE=embedded, and this start is ENGINE=ray; start it "
        "with ENGINE=embedded, or give DATABASE_PATH another file"
    )
    assert stamp_of(path) == 0  # the refusal changed nothing


def test_a_ray_journal_is_refused_by_the_embedded_engine(tmp_path: Path) -> None:
    path = tmp_path / "exchange.db"
    opened(path, "ray")
    opened(path, "ray")
    with pytest.raises(JournalFormatError) as refused:
        opened(path, "embedded")
    assert str(refused.value) == (
        f"{path}: a journal of ENGINE=ray, and this start is ENGINE=embedded; start it "
        "with ENGINE=ray, or give DATABASE_PATH another file"
    )


def test_an_unstamped_journal_from_before_the_mark_is_the_embedded_engines(
    tmp_path: Path,
) -> None:
    """Version 0, a facts table, application_id 0: written before any stamp."""
    path = tmp_path / "exchange.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE facts (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, body BLOB NOT NULL)"
        )
    opened(path, "embedded")
    with pytest.raises(JournalFormatError):
        opened(path, "ray")


def test_another_programs_database_is_not_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA application_id=1234")
    with pytest.raises(JournalFormatError) as refused:
        opened(path, "embedded")
    assert str(refused.value) == f"{path}: not a miniexchange journal (application_id 1234)"
