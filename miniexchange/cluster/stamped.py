"""What the sequencer hands the shards: stamped commands, cut into numbered batches.

A shard may use nothing that is not in a batch or a peer's part of one: no clock, no
randomness, no id generation (docs/ray.md, "What must be deterministic"). So everything
a command's effects depend on is stamped on it once, by the sequencer, and journaled
with it; replaying the same batches through the same shards rebuilds the same state.

Plain values, no behaviour: the sequencer (landing step 6) makes them, the shards
(`cluster.shards`) consume them, and the tests build them by hand.
"""

from __future__ import annotations

from typing import NamedTuple, TypeAlias

from miniexchange.cluster.batches import WriteCommand


class Tick(NamedTuple):
    """The expiration sweep as a command: the sequencer puts one into a batch every
    `EXPIRATION_INTERVAL` (also when idle), so that expiries happen at journaled times
    and a replay expires the same orders. Its time is the stamped command's `at`."""


Command: TypeAlias = WriteCommand | Tick
"""What a stamped command carries: a worker's write, or the sequencer's own tick."""


class Stamped(NamedTuple):
    """One command as the sequencer numbered and stamped it."""

    seq: int
    """Its place in the whole stream (strictly increasing across batches): the order in
    which every shard handles what it merges from several senders."""
    at: int
    """The time its step runs at, microseconds: the sequencer's clock, strictly
    increasing with `seq`, so time priority follows the sequence."""
    command: Command
    request_id: str | None = None
    """The request's X-Request-Id, carried to the events (webhook logs); no decision
    depends on it."""
    order_id: str | None = None
    """A submission's id, drawn by the sequencer so that it names the broker's account
    shard (`account_index(order_id, ACCOUNT_SHARDS)`): `GET /orders/{id}` routes itself."""
    trade_seed: int | None = None
    """A submission's trades' ids derive from it and the fill number (`ids.StampedIds`)."""
    webhook_ids: tuple[str, ...] = ()
    secrets: tuple[str, str] | None = None
    """An issue's new API key and webhook secret, drawn by the sequencer from OS
    randomness: a shard draws nothing, so a replay issues the same credentials."""
    """A subscription's ids for the subscriptions it creates, in the order of its events:
    each names the broker's account shard, like an order id."""


class Batch(NamedTuple):
    """What one cut of the sequencer took: the unit every phase of every shard handles
    whole (R1, ME, R2: docs/ray.md, "Batches")."""

    k: int
    """The batch's number, from 1, consecutive: each shard runs each phase of each
    batch once, in `k` order."""
    after: int
    """The last batch whose settlement (R2) had completed at the cut (0: none): an
    account shard runs this batch's R1 right after its R2 of `after`, so the order of
    its R1s and R2s, which two batches in flight make ambiguous, is fixed and journaled."""
    commands: tuple[Stamped, ...]
    """In `seq` order."""


class Go(NamedTuple):
    """The sequencer's word to every account shard: settle batch `k`, the last cut,
    before any other R1 (`AccountShard.allow_r2`); the next batch will say `after = k`."""

    k: int
