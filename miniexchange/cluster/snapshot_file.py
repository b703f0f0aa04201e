"""The cluster's snapshot: every shard's snapshot at one batch and the sequencer's state
then, in one file beside the command journal (`<DATABASE_PATH>.ray-snapshot`).

The sequencer takes it with nothing in flight (`Sequencer.hold`, then the last batch
settles), so every shard stands after the same batch `k`, and the journal's facts up to
`seq` are all it covers: a rebuild starts each shard from its document here and replays
only the batches after `k`, and the sequencer forgets the facts up to `seq`.

The file is lines, each one orjson document, so that a shard's document (the bytes its
host encoded, `cluster.snapshot_format`) is stored as it came and read back as bytes:

    {"format": "miniexchange-ray-snapshot", "version": 1, "k", "seq", "account_shards",
     "symbol_shards"}
    ["sequencer", k, seq, at, [listed symbol, ...], [kept answer, ...]]
    ["accounts", i]              then the account shard's document on a line of its own
    ["symbols", j, {symbol: steps}]   then the symbol shard's document
    ["end", count of the lines between the header and it]

A kept `Idempotency-Key` answer is written as the journal's answer fact records it.
A symbol shard's entry keeps its symbols' step counts (`cluster.news`): the workers'
stream polls count steps since the cluster started, and a shard started from here
counts on from them. The file is written atomically (`write_atomically`); a file of
another format, cut short or not matching the shard counts is refused at start with one
line naming it (`JournalFormatError`), never guessed at.
"""

from __future__ import annotations

from typing import IO, Any, NamedTuple

import orjson

from miniexchange.cluster.sequencer import SequencerState
from miniexchange.cluster.shards import Placement
from miniexchange.journal.facts import answer_fact, stored_answer
from miniexchange.journal.snapshot import write_atomically
from miniexchange.journal.store import JournalFormatError

FORMAT = "miniexchange-ray-snapshot"
VERSION = 1


class ClusterSnapshot(NamedTuple):
    k: int
    """The batch every shard stands after."""
    seq: int
    """The last journal fact the snapshot covers."""
    sequencer: SequencerState
    accounts: tuple[bytes, ...]
    """Account shard `i`'s document (`encode_account_snapshot`)."""
    symbols: tuple[tuple[bytes, dict[str, int]], ...]
    """Symbol shard `j`'s document (`encode_symbol_snapshot`) and its symbols' steps."""


def snapshot_file(database_path: str) -> str:
    """Where the cluster snapshot of the command journal at `database_path` lives (apart
    from the embedded engine's `<path>.snapshot`, which a journal of its own would read)."""
    return f"{database_path}.ray-snapshot"


def write_cluster_snapshot(path: str, snapshot: ClusterSnapshot) -> int:
    """Write `snapshot` atomically to `path`; return its size."""

    def write(out: IO[bytes]) -> None:
        state = snapshot.sequencer
        header = {
            "format": FORMAT,
            "version": VERSION,
            "k": snapshot.k,
            "seq": snapshot.seq,
            "account_shards": len(snapshot.accounts),
            "symbol_shards": len(snapshot.symbols),
        }
        answers = [orjson.Fragment(answer_fact(key, kept)[1]) for key, kept in state.answers]
        lines = [
            orjson.dumps(["sequencer", state.k, state.seq, state.at, state.listed, answers]),
        ]
        for i, document in enumerate(snapshot.accounts):
            lines += (orjson.dumps(["accounts", i]), document)
        for j, (document, steps) in enumerate(snapshot.symbols):
            lines += (orjson.dumps(["symbols", j, steps]), document)
        out.write(orjson.dumps(header) + b"\n")
        for line in lines:
            out.write(line + b"\n")
        out.write(orjson.dumps(["end", len(lines)]) + b"\n")

    return write_atomically(path, write)


def read_cluster_snapshot(path: str, placement: Placement) -> ClusterSnapshot | None:
    """The snapshot at `path` (None: there is none); one that is not one of these, is
    damaged or was taken with other shard counts is a `JournalFormatError`."""
    try:
        with open(path, "rb") as source:
            lines = source.read().split(b"\n")
    except FileNotFoundError:
        return None
    try:
        return _parse(lines, placement)
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, IndexError) as error:
        # (binascii.Error, of a damaged answer's base64, is a ValueError)
        raise JournalFormatError(f"{path}: an unreadable cluster snapshot ({error})") from None
    except _Refused as refused:
        raise JournalFormatError(f"{path}: {refused}") from None


class _Refused(Exception):
    pass


def _parse(lines: list[bytes], placement: Placement) -> ClusterSnapshot:
    header = orjson.loads(lines[0])
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _Refused("not a miniexchange cluster snapshot")
    if header["version"] != VERSION:
        raise _Refused(
            f"cluster snapshot version {header['version']}, this version reads {VERSION}"
        )
    if (header["account_shards"], header["symbol_shards"]) != tuple(placement):
        raise _Refused(
            f"taken with {header['account_shards']} account and {header['symbol_shards']} "
            f"symbol shards, started with {placement.account_shards} and "
            f"{placement.symbol_shards}: the counts are fixed for a journal's life"
        )
    body = lines[1:]
    tag, k, seq, at, listed, answers = orjson.loads(body[0])
    _expect(tag == "sequencer" and all(type(v) is int for v in (k, seq, at)), "its sequencer")
    _expect(all(type(symbol) is str for symbol in listed), "its listing")
    kept = tuple(stored_answer(answer) for answer in answers)
    accounts: list[bytes] = []
    symbols: list[tuple[bytes, dict[str, int]]] = []
    at_line = 1
    for i in range(placement.account_shards):
        _expect(orjson.loads(body[at_line]) == ["accounts", i], f"account shard {i}")
        accounts.append(body[at_line + 1])
        at_line += 2
    for j in range(placement.symbol_shards):
        tag, index, steps = orjson.loads(body[at_line])
        _expect(tag == "symbols" and index == j, f"symbol shard {j}")
        _expect(
            isinstance(steps, dict) and all(type(n) is int for n in steps.values()),
            f"symbol shard {j}'s steps",
        )
        symbols.append((body[at_line + 1], steps))
        at_line += 2
    end = body[at_line] if at_line < len(body) else b""
    _expect(end and orjson.loads(end) == ["end", at_line], "its end (cut short?)")
    _expect(type(header["k"]) is int and header["k"] == k, "its batch")
    _expect(type(header["seq"]) is int, "its journal position")
    return ClusterSnapshot(
        k,
        header["seq"],
        SequencerState(k, seq, at, tuple(listed), kept),
        tuple(accounts),
        tuple(symbols),
    )


def _expect(condition: Any, what: str) -> None:
    if not condition:
        raise _Refused(f"a damaged cluster snapshot: {what}")
