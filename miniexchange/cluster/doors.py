"""A shard's doorway: what reaches a shard, in whatever order it arrives, run in the order
the sequencer's cuts fixed (docs/ray.md, "Batches: the cycle of one batch").

Across processes, a shard's inputs come from several senders at their own speeds: the
sequencer's batches and words (`Go`) to the account shards, every account shard's part
of a batch to each symbol shard, every symbol shard's part back to each account shard.
A door keeps what came, keyed by batch and sender, and runs each phase once everything
it needs is there and the phases before it have run:

- an account shard runs R1 of batch `k` once it has the batch and has settled (R2) the
  batch its `after` names, and R2 of `k` once the sequencer let it (R1 of `k + 1`, or
  `Go(k)`) and it has every symbol shard's part of `k`;
- a symbol shard runs ME of `k` once it has every account shard's part of `k` and has
  run ME of `k - 1`.

A part that comes twice (a sender's call repeated after a failure) is taken once. The
door runs in whatever thread its host gives it (a Ray actor's, or a test's); it is not
thread-safe: the host holds one lock around `take_*` and `run`.
"""

from __future__ import annotations

from typing import NamedTuple

from miniexchange.cluster.shards import AccountShard, Answer, MatchPart, SettlePart, SymbolShard
from miniexchange.cluster.stamped import Batch, Go


class Matched(NamedTuple):
    """R1 of batch `k` ran: `parts[j]` goes to symbol shard `j`."""

    k: int
    parts: list[MatchPart]


class Settled(NamedTuple):
    """R2 of batch `k` ran: its answers go to the sequencer."""

    k: int
    answers: list[Answer]


class AccountDoor:
    def __init__(self, shard: AccountShard) -> None:
        self.shard = shard
        self._batches: dict[int, Batch] = {}
        self._words: set[int] = set()
        self._parts: dict[int, dict[int, SettlePart]] = {}  # k -> symbol shard -> part

    def take_batch(self, batch: Batch) -> None:
        if batch.k > self.shard.matched_through:
            self._batches[batch.k] = batch

    def take_go(self, go: Go) -> None:
        if go.k > self.shard.settled_through:
            self._words.add(go.k)

    def take_settle_part(self, part: SettlePart) -> None:
        if part.k > self.shard.settled_through:
            self._parts.setdefault(part.k, {}).setdefault(part.sender, part)

    def run(self) -> list[Matched | Settled]:
        """Every phase that can run now, in order; what each sends."""
        shard = self.shard
        sent: list[Matched | Settled] = []
        symbol_shards = shard.placement.symbol_shards
        while True:
            matched = shard.matched_through
            batch = self._batches.get(matched + 1)
            if batch is not None and batch.after == shard.settled_through:
                del self._batches[batch.k]
                sent.append(Matched(batch.k, shard.r1(batch)))
                continue
            if matched in self._words:
                self._words.discard(matched)
                shard.allow_r2(matched)
            k = shard.settled_through + 1
            parts = self._parts.get(k)
            if parts is None or len(parts) < symbol_shards or not shard.may_settle(k):
                return sent
            del self._parts[k]
            sent.append(Settled(k, shard.r2(k, [parts[j] for j in range(symbol_shards)])))


class SymbolDoor:
    def __init__(self, shard: SymbolShard) -> None:
        self.shard = shard
        self._parts: dict[int, dict[int, MatchPart]] = {}  # k -> account shard -> part

    def take_match_part(self, part: MatchPart) -> None:
        if part.k > self.shard.matched_through:
            self._parts.setdefault(part.k, {}).setdefault(part.sender, part)

    def run(self) -> list[tuple[int, list[SettlePart]]]:
        """ME of every batch that can run now, in order: (k, one part per account shard)."""
        account_shards = self.shard.placement.account_shards
        sent: list[tuple[int, list[SettlePart]]] = []
        while True:
            k = self.shard.matched_through + 1
            parts = self._parts.get(k)
            if parts is None or len(parts) < account_shards:
                return sent
            del self._parts[k]
            sent.append((k, self.shard.me(k, [parts[i] for i in range(account_shards)])))
