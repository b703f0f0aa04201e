"""The cluster snapshot file: written atomically, read back as written, and refused
with one line naming the file when it is not one, is cut short or was taken with
other shard counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from miniexchange.cluster.sequencer import SequencerState
from miniexchange.cluster.shards import Placement
from miniexchange.cluster.snapshot_file import (
    ClusterSnapshot,
    read_cluster_snapshot,
    snapshot_file,
    write_cluster_snapshot,
)
from miniexchange.journal.store import JournalFormatError
from miniexchange.model.idempotency import StoredAnswer

SNAPSHOT = ClusterSnapshot(
    7,
    12,
    SequencerState(
        7,
        40,
        1_700_000_000_000_000,
        ("AAPL", "MSFT"),
        ((("/brokers", "k-1"), StoredAnswer(b"\x01" * 32, 201, b'{"broker_id":"a"}', 17)),),
    ),
    (b'{"part":"account_snapshot","index":0}', b'{"part":"account_snapshot","index":1}'),
    ((b'{"part":"symbol_snapshot","index":0}', {"AAPL": 3, "MSFT": 0}),),
)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return snapshot_file(str(tmp_path / "commands.db"))


def test_a_snapshot_reads_back_as_written(path: str) -> None:
    assert path.endswith("commands.db.ray-snapshot")
    assert read_cluster_snapshot(path, Placement(2, 1)) is None  # none yet
    size = write_cluster_snapshot(path, SNAPSHOT)
    assert size == Path(path).stat().st_size
    assert not Path(path + ".tmp").exists()
    assert read_cluster_snapshot(path, Placement(2, 1)) == SNAPSHOT


def test_other_shard_counts_are_refused_naming_both(path: str) -> None:
    write_cluster_snapshot(path, SNAPSHOT)
    with pytest.raises(JournalFormatError) as refused:
        read_cluster_snapshot(path, Placement(1, 1))
    assert str(refused.value) == (
        f"{path}: taken with 2 account and 1 symbol shards, started with 1 and 1: "
        "the counts are fixed for a journal's life"
    )


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda data: data[: data.rindex(b'["end"')], "a damaged cluster snapshot: its end"),
        (lambda data: b"garbage\n" + data, "an unreadable cluster snapshot"),
        (lambda data: data.replace(b'"version":1', b'"version":2'), "cluster snapshot version 2"),
        (lambda data: b'{"format":"miniexchange-snapshot"}\n', "not a miniexchange cluster"),
        (lambda data: data.replace(b'["accounts",1]', b'["accounts",2]'), "account shard 1"),
    ],
)
def test_a_damaged_or_foreign_file_is_refused_with_one_line(
    path: str, damage: object, says: str
) -> None:
    write_cluster_snapshot(path, SNAPSHOT)
    Path(path).write_bytes(damage(Path(path).read_bytes()))  # type: ignore[operator]
    with pytest.raises(JournalFormatError) as refused:
        read_cluster_snapshot(path, Placement(2, 1))
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message
