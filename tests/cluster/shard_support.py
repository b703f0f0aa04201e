"""What the shard tests share: a stamper that numbers and stamps commands as the
sequencer will."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from miniexchange.actors.accounts import account_index
from miniexchange.cluster.batches import SubscribeWebhooks
from miniexchange.cluster.stamped import Batch, Command, Stamped
from miniexchange.ids import seeded_uuid4
from miniexchange.model.commands import SubmitOrder
from miniexchange.testing import ManualClock

SECOND = 1_000_000
T0 = ManualClock.at("2026-02-17T09:00:00Z").now()
STEP = SECOND // 2  # between two stamped commands
WAIT_S = 60.0
"""How long to wait for an answer that must come; never an upper bound on speed."""


class Stamper:
    """Stamps commands as the sequencer will: `seq` from 1, `at` `STEP` apart after
    `start`, a submission's trade seed its `seq`, and order and webhook ids drawn (from
    `seeded_uuid4`, so runs repeat) until they name the broker's account shard among
    `account_shards` (then among any divisor of it too)."""

    def __init__(self, account_shards: int = 2, start: int = T0) -> None:
        self.account_shards = account_shards
        self.start = start
        self.seq = 0
        self.k = 0

    def at(self, seq: int) -> int:
        return self.start + seq * STEP

    def stamp(self, command: Command, request_id: str | None = None) -> Stamped:
        self.seq += 1
        seq = self.seq
        at = self.at(seq)
        if isinstance(command, SubmitOrder):
            (order_id,) = self._draw("ord", seq, command.broker_id, 1)
            return Stamped(seq, at, command, request_id, order_id, seq)
        if isinstance(command, SubscribeWebhooks):
            ids = self._draw("wh", seq, command.broker_id, len(command.events))
            return Stamped(seq, at, command, request_id, webhook_ids=ids)
        return Stamped(seq, at, command, request_id)

    def _draw(self, prefix: str, seed: int, broker_id: str, count: int) -> tuple[str, ...]:
        shard = account_index(broker_id, self.account_shards)
        drawn = (f"{prefix}-{seeded_uuid4(seed, number)}" for number in itertools.count(1))
        naming = (i for i in drawn if account_index(i, self.account_shards) == shard)
        return tuple(itertools.islice(naming, count))

    def batch(self, commands: Sequence[Stamped], after: int | None = None) -> Batch:
        """The next batch; `after` defaults to the batch before it (nothing in flight)."""
        self.k += 1
        return Batch(self.k, self.k - 1 if after is None else after, tuple(commands))
