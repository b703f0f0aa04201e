"""A shard rebuilt from the batches and its peers' outboxes equals the one it replaces.

The recovery of docs/ray.md ("One shard killed"), from the start of the journal (no
snapshot yet): a fresh shard replays every batch, taking the parts its peers sent it the
first time, and sends nothing. What it would have sent must be what the original sent,
and its state the original's: every input of a shard is a journaled command or a peer's
part, processed in an order fixed by (batch, phase, `seq`), never by arrival.
"""

from __future__ import annotations

import copy
from typing import Any

import hypothesis
import pykka
from hypothesis import strategies as st

from miniexchange.cluster.shards import AccountShard, SettlePart, SymbolShard
from miniexchange.cluster.stamped import Batch
from miniexchange.testing import FakeDeliveries, ManualClock
from tests.cluster.shard_support import Outboxes, Shards, comparable, observe_shards
from tests.cluster.test_shards_embedded import (
    BROKERS,
    READ_AT,
    SYMBOLS,
    VWAP_WINDOW,
    Stream,
    cut,
    stamped_stream,
    streams,
)


def settled(parts: list[SettlePart]) -> list[Any]:
    """Parts as values: a refusal by its code and message (exceptions compare by id)."""
    return [
        part._replace(answers=tuple((seq, comparable(a)) for seq, a in part.answers))
        for part in parts
    ]


def replay_account(i: int, shards: Shards, batches: list[Batch], sent: Outboxes) -> AccountShard:
    """A fresh account shard `i` through every batch, in the original's phase order
    (`after`), with the symbol shards' parts it was sent; what it sends is checked."""
    shard = AccountShard(i, shards.placement, FakeDeliveries().submit, account_actors=2)
    matched: list[int] = []
    for batch in batches:
        while matched and matched[0] <= batch.after:
            k = matched.pop(0)
            if not shard.may_settle(k):  # R2 of `k` before R1 of `k + 1`: as the cut said
                shard.allow_r2(k)
            shard.r2(k, [parts[i] for parts in sent.settle[k]])
        assert shard.r1(batch) == sent.match[batch.k][i]
        matched.append(batch.k)
    for k in matched:
        if not shard.may_settle(k):
            shard.allow_r2(k)
        shard.r2(k, [parts[i] for parts in sent.settle[k]])
    return shard


def replay_symbol(j: int, shards: Shards, batches: list[Batch], sent: Outboxes) -> SymbolShard:
    shard = SymbolShard(j, shards.placement, ManualClock(READ_AT), VWAP_WINDOW)
    for batch in batches:
        parts = [mine[j] for mine in sent.match[batch.k]]
        assert settled(shard.me(batch.k, parts)) == settled(sent.settle[batch.k][j])
    return shard


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(streams(), st.lists(st.integers(1, 6), min_size=1, max_size=4), st.booleans())
def test_a_shard_rebuilt_from_the_batches_and_its_peers_parts_equals_the_one_it_replaces(
    stream: Stream, sizes: list[int], in_flight: bool
) -> None:
    batches = cut(stamped_stream(stream), sizes, in_flight)
    original = Shards(2, 2, ManualClock(READ_AT), VWAP_WINDOW, account_actors=2)
    try:
        sent = original.drive(batches)
        seen = observe_shards(original, BROKERS, SYMBOLS)
        for i in range(2):
            rebuilt = copy.copy(original)
            rebuilt.accounts = list(original.accounts)
            rebuilt.accounts[i] = replay_account(i, original, batches, sent)
            assert observe_shards(rebuilt, BROKERS, SYMBOLS) == seen
        for j in range(2):
            rebuilt = copy.copy(original)
            rebuilt.symbols = list(original.symbols)
            rebuilt.symbols[j] = replay_symbol(j, original, batches, sent)
            assert observe_shards(rebuilt, BROKERS, SYMBOLS) == seen
    finally:
        pykka.ActorRegistry.stop_all()
