"""Snapshots: a folded state written to a file and read back is the state the facts
make, wherever the journal is cut; a restart reads the latest snapshot and the facts
after it; a snapshot or journal of another format is refused with one line.

The facts come from a real exchange (real actors, a manual clock) driven by the seeded
random flow of `test_recovery`, plus hand-written subscriptions, credentials and stored
answers; the oracle is `recover` over every fact, which the recovery tests hold to the
live exchange.
"""

from __future__ import annotations

import base64
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pykka
import pytest

from miniexchange.actors.exchange import Exchange, history_retention
from miniexchange.journal import facts
from miniexchange.journal.facts import Fact
from miniexchange.journal.recovery import Recovered, Retention, fold, recover
from miniexchange.journal.snapshot import (
    SnapshotSchedule,
    read_snapshot,
    snapshot_path,
    take_snapshot,
    write_snapshot,
)
from miniexchange.journal.store import JournalFormatError, SqliteJournal
from miniexchange.testing import FakeDeliveries, ManualClock, SequentialIds
from tests.journal.support import ids_after, ids_used
from tests.journal.test_recovery import BROKERS, SYMBOLS, T0, Twin, begin, random_flow

SECOND = 1_000_000


@pytest.fixture(autouse=True)
def stop_all_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


def flow_facts(seed: int) -> list[Fact]:
    """A live exchange's facts, with the kinds the random flow does not make mixed in."""
    live, _, _ = begin(seed)
    live.stop()
    recorded = list(live.journal.recorded)
    extra = [
        facts.webhook_saved({"webhook_id": "w1", "broker_id": "b1", "url": "https://a/1"}),
        facts.webhook_saved({"webhook_id": "w2", "broker_id": "b2", "url": "https://a/2"}),
        facts.api_key_issued("b1", "ab" * 32, T0 + 1),
        facts.webhook_secret_issued("b2", "s3cret", T0 + 2),
        answer_fact("k1", 201, T0 + 4),
        facts.webhook_deleted("w1"),
        facts.api_key_issued("b1", "cd" * 32, T0 + 3),
        answer_fact("k2", 409, T0 + 5),
    ]
    spacing = len(recorded) // len(extra)
    for n, fact in enumerate(extra):
        recorded.insert(5 + n * spacing, fact)
    return recorded


def answer_fact(key: str, status: int, at: int) -> Fact:
    return facts.idempotent_answer(
        {
            "endpoint": "POST /orders",
            "key": key,
            "digest": base64.b64encode(bytes(32)).decode(),
            "status": status,
            "body": base64.b64encode(b'{"order_id": "o1"}').decode(),
            "at": at,
        }
    )


def comparable(state: Recovered) -> dict[str, Any]:
    """Every part of a recovered state, as plain values (a `Ledger` has no `==`)."""
    return {
        "ledgers": {
            broker_id: (
                ledger.cash,
                ledger.holdings,
                ledger.reserved_cash,
                ledger.cash_held_on,
                ledger.reserved_shares,
                ledger.created_at,
                ledger.updated_at,
            )
            for broker_id, ledger in state.ledgers.items()
        },
        "orders": list(state.orders.items()),  # in order of acceptance
        "trades": {symbol: list(kept) for symbol, kept in state.trades.items()},
        "volumes": state.volumes,
        "candles": state.candles,
        "known_symbols": state.known_symbols,
        "webhooks": state.webhooks,
        "credentials": state.credentials,
        "answers": list(state.answers.items()),
        "fact_count": state.fact_count,
        "last_at": state.last_at,
    }


@pytest.mark.parametrize("seed", range(4))
def test_a_snapshot_and_the_facts_after_it_recover_what_every_fact_does(
    tmp_path: Path, seed: int
) -> None:
    recorded = flow_facts(seed)
    assert sum(kind == facts.TRADE_EXECUTED for kind, _ in recorded) > 50
    expected = comparable(recover(recorded))
    path = str(tmp_path / "state.snapshot")
    cuts = {0, 1, len(recorded) // 2, len(recorded)} | set(
        random.Random(seed).sample(range(len(recorded)), 5)
    )
    for cut in sorted(cuts):
        write_snapshot(path, cut, fold(recorded[:cut]))
        loaded = read_snapshot(path)
        assert loaded is not None
        seq, state = loaded
        assert seq == cut
        assert comparable(recover(recorded[cut:], state)) == expected, cut


def test_snapshots_of_snapshots_fold_like_one(tmp_path: Path) -> None:
    """The snapshot process folds onto the previous snapshot, over and over."""
    recorded = flow_facts(7)
    path = str(tmp_path / "state.snapshot")
    write_snapshot(path, 0, Recovered())
    step = len(recorded) // 6
    for start in range(0, len(recorded), step):
        loaded = read_snapshot(path)
        assert loaded is not None
        write_snapshot(path, start + step, fold(recorded[start : start + step], loaded[1]))
    loaded = read_snapshot(path)
    assert loaded is not None
    assert comparable(recover([], loaded[1])) == comparable(recover(recorded))


def test_the_kept_trades_are_the_tape_and_the_vwap_window_not_the_history() -> None:
    retention = Retention(tape_length=3, vwap_window_us=10 * SECOND)
    recorded = flow_facts(3)
    state = recover(recorded, None, retention)
    everything = recover(recorded)
    for symbol, kept in state.trades.items():
        trades = list(everything.trades[symbol])
        latest = trades[-1].executed_at
        shown = [t for t in trades if t.executed_at >= latest - retention.vwap_window_us]
        assert list(kept) == trades[-max(len(shown), 3) :]
        assert state.volumes[symbol] == sum(t.quantity for t in trades)
    assert any(len(state.trades[s]) < len(everything.trades[s]) for s in state.trades)


def test_a_snapshot_keeps_the_answers_the_fold_keeps_within_the_cap_and_the_ttl(
    tmp_path: Path,
) -> None:
    """Five answers a second apart, at most three kept, a ten-second TTL: a snapshot
    taken after any of them and the facts after it keep what one fold keeps."""
    retention = Retention(idempotency_max_keys=3, idempotency_ttl_us=10 * SECOND)
    recorded = [answer_fact(f"k{n}", 201, T0 + n * SECOND) for n in range(5)]
    recorded.append(answer_fact("late", 201, T0 + 12 * SECOND))
    expected = recover(recorded, None, retention)
    assert [key for (_, key), _ in expected.answers.items()] == ["k3", "k4", "late"]
    path = str(tmp_path / "state.snapshot")
    for cut in range(len(recorded) + 1):
        write_snapshot(path, cut, fold(recorded[:cut], None, retention))
        loaded = read_snapshot(path, retention)
        assert loaded is not None
        resumed = recover(recorded[cut:], loaded[1], retention)
        assert list(resumed.answers.items()) == list(expected.answers.items()), cut


def test_an_expired_key_leaves_the_journal_with_the_first_snapshot_after_its_ttl(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "exchange.db")
    retention = Retention(idempotency_ttl_us=10 * SECOND)
    journal = SqliteJournal(path, retention=retention)
    journal.start()
    journal.append(
        [answer_fact("old", 201, T0), answer_fact("new", 201, T0 + 5 * SECOND)], lambda e: None
    )
    later = facts.api_key_issued("b1", "ab" * 32, T0 + 11 * SECOND)  # time goes on
    journal.append([later], lambda error: None)
    journal.close()
    take_snapshot(path, 3, retention)
    journal = SqliteJournal(path, retention=retention)
    journal.forget_through(3)
    journal.start()
    journal.close()  # the writer forgets before it stops
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM facts").fetchone() == (0,)
    snapshot, _ = SqliteJournal(path, retention=retention).history()
    assert snapshot is not None
    assert [key for (_, key), _ in snapshot.answers.items()] == ["new"]
    assert b'"old"' not in Path(snapshot_path(path)).read_bytes()


# -- the journal: sequence numbers, the snapshot process, forgetting covered facts ------


def started(journal: SqliteJournal, clock: ManualClock, ids: SequentialIds) -> Twin:
    exchange = Exchange(clock, ids, FakeDeliveries(), expiration_interval_s=None, journal=journal)
    exchange.start()
    return Twin(exchange, clock, journal)  # type: ignore[arg-type]


def test_a_restart_reads_the_snapshot_and_replays_only_the_facts_after_it(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "exchange.db")
    clock, ids = ManualClock(T0), SequentialIds()
    live = started(SqliteJournal(path), clock, ids)
    for broker in BROKERS:
        live.register(broker, 5_000_00, dict.fromkeys(SYMBOLS, 60))
    random_flow(live, random.Random(11), 300)
    journal = live.exchange.journal
    assert isinstance(journal, SqliteJournal)
    covered = journal.committed_seq  # everything committed so far
    schedule = SnapshotSchedule(
        path,
        3600.0,
        history_retention(300 * SECOND, 1000, 3600 * SECOND),
        lambda: covered,
        journal.forget_through,
    )
    assert schedule.take(covered)  # the real snapshot process
    journal.forget_through(covered)  # as the schedule does once its snapshot is durable
    random_flow(live, random.Random(12), 100)  # the tail
    before = live.state()
    live.exchange.stop()  # closes the journal: the forget and the tail are committed

    with sqlite3.connect(path) as db:
        (oldest,) = db.execute("SELECT min(seq) FROM facts").fetchone()
        (kept,) = db.execute("SELECT count(*) FROM facts").fetchone()
    assert oldest == covered + 1  # what the snapshot covers left the journal
    reopened = SqliteJournal(path)
    snapshot, tail = reopened.history()
    assert snapshot is not None and snapshot.fact_count == covered
    assert len(list(tail)) == kept
    reopened.close()

    twin = started(SqliteJournal(path), ManualClock(clock.now()), ids_after(ids_used(ids)))
    assert twin.state() == before
    twin.exchange.stop()


def test_sequence_numbers_go_on_past_a_snapshot_the_journal_lost(tmp_path: Path) -> None:
    """A power loss with DATABASE_SYNC=normal can take facts a snapshot already holds:
    new facts must still be numbered after the snapshot, or a restart would skip them."""
    path = str(tmp_path / "exchange.db")
    write_snapshot(snapshot_path(path), 40, Recovered())
    journal = SqliteJournal(path)
    journal.start()
    done: list[BaseException | None] = []
    journal.append([facts.webhook_deleted("w9")], done.append)
    journal.close()
    assert done == [None]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT seq FROM facts").fetchall() == [(41,)]


def test_take_snapshot_folds_only_committed_facts_up_to_its_bound(tmp_path: Path) -> None:
    path = str(tmp_path / "exchange.db")
    journal = SqliteJournal(path)
    journal.start()
    recorded = flow_facts(5)
    journal.append(recorded, lambda error: None)
    journal.close()
    written = take_snapshot(path, 100, Retention())
    assert (written["seq"], written["facts"]) == (100, 100)
    loaded = read_snapshot(snapshot_path(path))
    assert loaded is not None
    assert comparable(recover([], loaded[1])) == comparable(recover(recorded[:100]))
    written = take_snapshot(path, len(recorded), Retention())  # onto the previous one
    assert written["facts"] == len(recorded) - 100
    loaded = read_snapshot(snapshot_path(path))
    assert loaded is not None
    assert comparable(recover([], loaded[1])) == comparable(recover(recorded))


# -- formats ---------------------------------------------------------------------------


def test_a_snapshot_of_another_format_version_is_refused_with_one_line(tmp_path: Path) -> None:
    path = str(tmp_path / "exchange.db")
    with open(snapshot_path(path), "wb") as out:
        out.write(orjson.dumps({"format": "miniexchange-snapshot", "version": 3, "seq": 1}))
        out.write(b"\n")
    with pytest.raises(JournalFormatError) as refused:
        SqliteJournal(path).history()
    assert str(refused.value) == (
        f"{path}.snapshot: snapshot format version 3, this version reads 1 and 2; move the "
        "file away to recover from the journal alone (if it still holds every fact)"
    )


def test_a_version_1_snapshot_is_read_and_candles_start_with_the_facts_after_it(
    tmp_path: Path,
) -> None:
    """Version 1 had no candle records: the state is read whole, and the candles hold
    the trades after the snapshot only (those before it left the journal)."""
    recorded = flow_facts(2)
    cut = len(recorded) // 2
    path = str(tmp_path / "state.snapshot")
    write_snapshot(path, cut, fold(recorded[:cut]))
    lines = Path(path).read_bytes().splitlines()
    header = orjson.loads(lines[0])
    assert header["version"] == 2
    records = [line for line in lines[1:-1] if orjson.loads(line)[0] != "candles"]
    assert len(records) < len(lines) - 2  # the version 2 snapshot had candle records
    header["version"] = 1
    Path(path).write_bytes(
        b"\n".join([orjson.dumps(header), *records, orjson.dumps(["end", len(records)])]) + b"\n"
    )
    loaded = read_snapshot(path)
    assert loaded is not None
    state = loaded[1]
    assert state.candles == {}
    everything = comparable(recover(recorded))
    recovered = comparable(recover(recorded[cut:], state))
    assert {k: v for k, v in recovered.items() if k != "candles"} == {
        k: v for k, v in everything.items() if k != "candles"
    }
    after: dict[str, int] = {}
    for kind, body in recorded[cut:]:
        if kind == facts.TRADE_EXECUTED:
            trade = orjson.loads(body)
            after[trade["symbol"]] = after.get(trade["symbol"], 0) + trade["quantity"]
    assert after  # the tail has trades
    assert {
        symbol: sum(c.volume for c in candles.series["1d"])
        for symbol, candles in recovered["candles"].items()
    } == after


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a miniexchange snapshot"),
        (b'{"format": "other"}\n', "not a miniexchange snapshot"),
        (
            b'{"format": "miniexchange-snapshot", "version": 1, "seq": 3, "fact_count": 3,'
            b' "last_at": 0}\n["ledger", "b1", 100, [], 0, 0]\n',
            "the snapshot is incomplete (no end record)",
        ),
        (
            b'{"format": "miniexchange-snapshot", "version": 1, "seq": 3, "fact_count": 3,'
            b' "last_at": 0}\n["mystery"]\n["end", 1]\n',
            "unreadable snapshot record (unknown record 'mystery')",
        ),
    ],
)
def test_a_damaged_snapshot_is_refused_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = str(tmp_path / "exchange.db")
    Path(snapshot_path(path)).write_bytes(content)
    with pytest.raises(JournalFormatError) as refused:
        SqliteJournal(path).history()
    assert str(refused.value) == f"{path}.snapshot: {message}"


def test_a_snapshot_left_half_written_by_a_killed_process_is_not_read(tmp_path: Path) -> None:
    path = str(tmp_path / "exchange.db")
    recorded = flow_facts(1)
    write_snapshot(snapshot_path(path), 40, fold(recorded[:40]))
    Path(f"{snapshot_path(path)}.tmp").write_bytes(b'{"format": "miniexchange-snapshot"')
    snapshot, _ = SqliteJournal(path).history()
    assert snapshot is not None
    assert comparable(recover([], snapshot)) == comparable(recover(recorded[:40]))


def test_a_journal_of_a_newer_format_is_refused_with_one_line(tmp_path: Path) -> None:
    path = str(tmp_path / "exchange.db")
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=7")
    with pytest.raises(JournalFormatError) as refused:
        SqliteJournal(path).history()
    assert str(refused.value) == (
        f"{path}: journal format 7, this version reads formats 0 to 1; "
        "run the version that wrote it"
    )


def test_a_journal_written_before_formats_were_stamped_is_read_and_continued(
    tmp_path: Path,
) -> None:
    """The layout the previous version wrote: no user_version, rowids it numbered."""
    path = str(tmp_path / "exchange.db")
    recorded = flow_facts(2)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE facts (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, body BLOB NOT NULL)"
        )
        db.executemany("INSERT INTO facts (kind, body) VALUES (?, ?)", recorded)
    journal = SqliteJournal(path)
    snapshot, tail = journal.history()
    assert snapshot is None
    assert comparable(recover(tail)) == comparable(recover(recorded))
    journal.start()
    journal.append([facts.webhook_deleted("w9")], lambda error: None)
    journal.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        assert db.execute("SELECT max(seq) FROM facts").fetchone() == (len(recorded) + 1,)
