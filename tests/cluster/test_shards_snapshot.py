"""Shards started from snapshots (docs/ray.md, "The command journal and recovery").

The cut: every account shard after its R2 of batch `n`, every symbol shard after its ME
of the last batch cut before that R2: `n`, or `n + 1` when that batch was in flight (its
R1 ran before R2 of `n`, its R1 answers wait in the account snapshot for its R2). What
was in flight at the cut, the symbol shards' parts of batch `n + 1`, is carried over
from the run's outboxes, as a restart takes it from its peers' outboxes.

- A run split by the cut: shards started from the snapshots go on with the batches
  after it and end in the state, answers, parts and webhook deliveries of the straight
  run (the same run, which went on after the snapshots were read, and a fresh one).
- One shard rebuilt from its snapshot, the batches after it and its peers' parts sends
  what the original sent after the cut and ends in its state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis
import pykka
from hypothesis import strategies as st

from miniexchange.cluster.batches import CancelOrder, SubscribeWebhooks
from miniexchange.cluster.shard_snapshots import AccountSnapshot, SymbolSnapshot
from miniexchange.cluster.shards import AccountShard, SymbolShard
from miniexchange.cluster.stamped import Batch, Tick
from miniexchange.model.candles import INTERVALS
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from miniexchange.model.events import ORDER_EXPIRED, TRADE_EXECUTED
from miniexchange.model.ledger import Balance, Holding
from miniexchange.model.orders import CANCELLED, EXPIRED, FILLED
from miniexchange.model.subscriptions import Upserted
from miniexchange.model.vwap import Price
from miniexchange.testing import FakeDeliveries, ManualClock
from tests.cluster.shard_support import (
    T0,
    Outboxes,
    Shards,
    Stamper,
    comparable,
    delivered,
    observe_shards,
    observe_webhooks_and_quotes,
)
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
from tests.cluster.test_shards_replay import settled

DOC = "12345678900"
URL = "https://hooks.example/x"


@dataclass
class Cut:
    """The snapshots of a run at a cut, and what it had done by then."""

    n: int  # the account shards' last R2
    accounts: list[AccountSnapshot]
    symbols: list[SymbolSnapshot]
    in_flight: list[int]  # the batches whose ME ran and whose R2 did not
    delivered: dict[str, list[tuple[Any, ...]]]


Stored = Callable[[Cut], Cut]
"""How the snapshots are kept until shards start from them: as values (`as_taken`), or
through bytes (`tests.cluster.test_snapshot_format`)."""


def as_taken(taken: Cut) -> Cut:
    return taken


def run_with_cut(
    shards: Shards, batches: list[Batch], i: int, stored: Stored = as_taken
) -> tuple[Outboxes, Cut]:
    """`batches[:i]`, then the R2s `batches[i].after` names, snapshots, then the rest."""
    sent = shards.drive(batches[:i], settle=False)
    shards.settle(batches[i].after, sent)
    taken = Cut(
        batches[i].after,
        [account.snapshot() for account in shards.accounts],
        [symbol.snapshot() for symbol in shards.symbols],
        list(sent.matched),
        delivered(shards),
    )
    shards.drive(batches[i:], sent=sent)
    return sent, stored(taken)


def since(cut: Cut, now: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """The deliveries made after the cut, per subscription."""
    later = {w: made[len(cut.delivered.get(w, [])) :] for w, made in now.items()}
    return {w: made for w, made in later.items() if made}


def answers_after(sent: Outboxes, batches: list[Batch], n: int) -> dict[int, Any]:
    """The answers of the commands of the batches after `n`, as values."""
    seqs = {c.seq for b in batches if b.k > n for c in b.commands}
    return {seq: comparable(a) for seq, a in sent.answers.items() if seq in seqs}


def observe(shards: Shards) -> tuple[dict[str, Any], ...]:
    """Every read of the shards, and what the symbols publish for `/stocks`, candles and
    the streams (the version they count from)."""
    published: dict[str, Any] = {}
    for symbol in SYMBOLS:
        feed = shards.symbol(symbol).market_data.get(symbol)
        published[symbol] = feed and (
            feed.summary,
            feed.book_version,
            [feed.latest_candles(interval, 1_000) for interval in INTERVALS],
        )
    return (
        observe_shards(shards, BROKERS, SYMBOLS),
        observe_webhooks_and_quotes(shards, BROKERS, SYMBOLS),
        published,
    )


def check_split_run(
    batches: list[Batch], i: int, account_actors: int, stored: Stored = as_taken
) -> Cut:
    """A run split by a snapshot ends as the straight run (the same, and a fresh one)."""
    straight = Shards(2, 2, ManualClock(READ_AT), VWAP_WINDOW, account_actors)
    original = Shards(2, 2, ManualClock(READ_AT), VWAP_WINDOW, account_actors)
    sent, taken = run_with_cut(original, batches, i, stored)
    fresh = straight.drive(batches)
    seen = observe(original)
    assert observe(straight) == seen
    assert answers_after(fresh, batches, 0) == answers_after(sent, batches, 0)
    # after the cut: shards started from the snapshots, the parts in flight carried over
    resumed = Shards(
        2,
        2,
        ManualClock(READ_AT),
        VWAP_WINDOW,
        3 - account_actors,  # a snapshot places its brokers again on any count of actors
        snapshots=(taken.accounts, taken.symbols),
    )
    carried = Outboxes(
        settle={k: sent.settle[k] for k in taken.in_flight}, matched=list(taken.in_flight)
    )
    again = resumed.drive(batches[i:], sent=carried)
    assert answers_after(again, batches, taken.n) == answers_after(sent, batches, taken.n)
    for batch in batches[i:]:
        assert again.match[batch.k] == sent.match[batch.k]
        for j in range(2):
            assert settled(again.settle[batch.k][j]) == settled(sent.settle[batch.k][j])
    assert observe(resumed) == seen
    assert delivered(resumed) == since(taken, delivered(original))
    return taken


def rebuild_account(
    snapshot: AccountSnapshot, batches: list[Batch], sent: Outboxes
) -> tuple[AccountShard, dict[int, Any], FakeDeliveries]:
    """Account shard `snapshot.index` from its snapshot through the batches after it, in
    the original's phase order, with the symbol shards' parts it was sent; each R1's
    parts are checked against the original's, the answers returned."""
    i = snapshot.index
    deliveries = FakeDeliveries()
    shard = AccountShard.from_snapshot(snapshot, deliveries.submit, account_actors=2)
    matched = list(range(snapshot.r2_done + 1, snapshot.r1_done + 1))
    answers: dict[int, Any] = {}

    def r2(k: int) -> None:
        if not shard.may_settle(k):  # R2 of `k` before R1 of `k + 1`: as the cut said
            shard.allow_r2(k)
        answers.update(
            (seq, comparable(a)) for seq, a in shard.r2(k, [parts[i] for parts in sent.settle[k]])
        )

    for batch in batches:
        if batch.k <= snapshot.r1_done:
            continue
        while matched and matched[0] <= batch.after:
            r2(matched.pop(0))
        assert shard.r1(batch) == sent.match[batch.k][i]
        matched.append(batch.k)
    for k in matched:
        r2(k)
    return shard, answers, deliveries


def rebuild_symbol(snapshot: SymbolSnapshot, batches: list[Batch], sent: Outboxes) -> SymbolShard:
    j = snapshot.index
    shard = SymbolShard.from_snapshot(snapshot, ManualClock(READ_AT), VWAP_WINDOW)
    for batch in batches:
        if batch.k > snapshot.me_done:
            parts = [mine[j] for mine in sent.match[batch.k]]
            assert settled(shard.me(batch.k, parts)) == settled(sent.settle[batch.k][j])
    return shard


def batches_and_a_cut(
    stream: Stream, sizes: list[int], in_flight: bool, data: st.DataObject
) -> tuple[list[Batch], int]:
    """The stream's batches and a drawn batch (not the first) before which to snapshot."""
    batches = cut(stamped_stream(stream), sizes, in_flight)
    return batches, data.draw(st.integers(1, len(batches) - 1), label="cut before batch")


def check_rebuilt_shards(batches: list[Batch], i: int, stored: Stored = as_taken) -> None:
    """Each shard in turn rebuilt from its snapshot at the cut and its peers' parts."""
    original = Shards(2, 2, ManualClock(READ_AT), VWAP_WINDOW, account_actors=2)
    sent, taken = run_with_cut(original, batches, i, stored)
    seen = observe(original)
    after_cut = since(taken, delivered(original))
    placement = original.placement
    for snapshot in taken.accounts:
        shard, answers, deliveries = rebuild_account(snapshot, batches, sent)
        decided = {
            c.seq
            for b in batches
            if b.k > snapshot.r2_done
            for c in b.commands
            if type(c.command) is not Tick and placement.deciding_shard(c.command) == shard.index
        }
        assert answers == {seq: comparable(sent.answers[seq]) for seq in decided}
        rebuilt = copy.copy(original)
        rebuilt.accounts = list(original.accounts)
        rebuilt.accounts[shard.index] = shard
        assert observe(rebuilt) == seen
        rebuilt.deliveries = deliveries
        mine = {
            w: made for w, made in after_cut.items() if placement.account_shard(w) == shard.index
        }
        assert delivered(rebuilt) == mine  # its own deliveries only
    for snapshot in taken.symbols:
        rebuilt = copy.copy(original)
        rebuilt.symbols = list(original.symbols)
        rebuilt.symbols[snapshot.index] = rebuild_symbol(snapshot, batches, sent)
        assert observe(rebuilt) == seen


# -- generated streams ----------------------------------------------------------------------


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(
    streams(),
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
    st.booleans(),
    st.integers(1, 2),
    st.data(),
)
def test_a_run_split_by_a_snapshot_ends_as_the_straight_run(
    stream: Stream, sizes: list[int], in_flight: bool, account_actors: int, data: st.DataObject
) -> None:
    batches, i = batches_and_a_cut(stream, sizes, in_flight, data)
    try:
        check_split_run(batches, i, account_actors)
    finally:
        pykka.ActorRegistry.stop_all()


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(
    streams(), st.lists(st.integers(1, 6), min_size=1, max_size=4), st.booleans(), st.data()
)
def test_a_shard_rebuilt_from_its_snapshot_and_its_peers_parts_equals_the_one_it_replaces(
    stream: Stream, sizes: list[int], in_flight: bool, data: st.DataObject
) -> None:
    batches, i = batches_and_a_cut(stream, sizes, in_flight, data)
    try:
        check_rebuilt_shards(batches, i)
    finally:
        pykka.ActorRegistry.stop_all()


# -- one exact scenario ---------------------------------------------------------------------


def scenario() -> tuple[Stamper, list[Batch]]:
    """Batch 3 is in flight at the cut (cut after R2 of 2): it holds the buyer's market
    bid, which fills 2 more of the seller's resting ask, and a subscription R1 answered
    before the cut. After the cut the ask, 6 of 10 filled, expires (batch 4's tick) and
    the buyer cancels its resting bid (batch 5)."""
    stamper = Stamper(account_shards=2)
    expires = stamper.at(9) + 1  # after every command before the cut, before the tick
    first = stamper.batch(
        [
            stamper.stamp(RegisterBroker("seller", 0, (("AAPL", 10),))),
            stamper.stamp(RegisterBroker("buyer", 10_000, ())),
            stamper.stamp(SubscribeWebhooks("buyer", URL, (TRADE_EXECUTED,))),
        ]
    )
    ask = SubmitOrder(LIMIT, "seller", DOC, ASK, "AAPL", 10, 100, expires)
    second = stamper.batch(
        [
            stamper.stamp(ask, request_id="req-ask"),
            stamper.stamp(
                SubmitOrder(LIMIT, "buyer", DOC, BID, "AAPL", 4, 100, T0 + 3_600_000_000),
                request_id="req-bid",
            ),
            stamper.stamp(SubscribeWebhooks("seller", URL, (ORDER_EXPIRED,))),
        ]
    )
    third = stamper.batch(
        [
            stamper.stamp(SubmitOrder(LIMIT, "buyer", DOC, BID, "AAPL", 1, 99, T0 + 3_600_000_000)),
            stamper.stamp(SubmitOrder(MARKET, "buyer", DOC, BID, "AAPL", 2), request_id="req-mkt"),
            stamper.stamp(SubscribeWebhooks("buyer", URL, ("order.cancelled",))),
        ],
        after=1,
    )
    tick = stamper.batch([stamper.stamp(Tick())], after=2)
    resting_bid = third.commands[0].order_id
    assert resting_bid is not None
    cancel = stamper.batch([stamper.stamp(CancelOrder(resting_bid))], after=3)
    return stamper, [first, second, third, tick, cancel]


def test_an_exact_scenario_split_by_a_snapshot_and_one_shard_rebuilt_from_it() -> None:
    check_exact_scenario(as_taken)


def check_exact_scenario(stored: Stored) -> None:
    """The scenario split at its cut, each shard rebuilt from it, the cut's snapshots as
    expected, and the straight run's end."""
    stamper, batches = scenario()
    ask_id = batches[1].commands[0].order_id
    bid_id = batches[2].commands[0].order_id
    try:
        taken = check_split_run(batches, 3, account_actors=2, stored=stored)
        check_rebuilt_shards(batches, 3, stored)
        # the cut: after R2 of 2, batch 3 in flight with one answer R1 gave
        assert (taken.n, taken.in_flight) == (2, [3])
        buyer_shard = taken.accounts[1]
        assert (buyer_shard.r1_done, buyer_shard.r2_done, buyer_shard.r2_allowed) == (3, 2, 2)
        ((k, ((seq, upserted),)),) = buyer_shard.decided
        assert (k, seq) == (3, 9)
        assert isinstance(upserted, Upserted) and upserted.created
        (buyer,) = buyer_shard.ledgers  # R1 of 3 held a bid's 99 and the rest as a budget
        assert (buyer.cash, buyer.reserved_cash, buyer.cash_held_on) == (
            9_600,
            9_600,
            (("AAPL", 9_600),),
        )
        assert [s.me_done for s in taken.symbols] == [3, 3]
        assert [book.symbol for book in taken.symbols[0].books] == ["AAPL"]
        # what the straight run ends in, as the split run and each rebuilt shard do
        shards = Shards(2, 2, ManualClock(READ_AT), VWAP_WINDOW, account_actors=2)
        sent = shards.drive(batches)
        at = stamper.at
        assert shards.account("seller").balance("seller") == Balance(
            "seller", 600, 0, (Holding("AAPL", 4, 0),), at(1), at(10)
        )
        assert shards.account("buyer").balance("buyer") == Balance(
            "buyer", 9_400, 0, (Holding("AAPL", 6, 0),), at(2), at(11)
        )
        ask = shards.account("seller").order(ask_id or "")
        assert ask is not None
        assert (ask.status, ask.filled_quantity, ask.expired_at) == (EXPIRED, 6, at(9) + 1)
        bid = shards.account("buyer").order(bid_id or "")
        assert bid is not None and bid.status == CANCELLED
        statuses = [o.status for o in shards.account("buyer").broker_orders("buyer", None, 0, 9)[0]]
        assert statuses == [FILLED, CANCELLED, FILLED]  # newest first: market, resting, first
        aapl = shards.symbol("AAPL")
        assert aapl.book("AAPL", 10).asks == [] and aapl.book("AAPL", 10).bids == []
        assert aapl.price("AAPL") == Price(100, 2, at(8))
        assert [t.quantity for t in aapl.market_data.feed("AAPL").latest_trades(10)] == [2, 4]
        assert [s.event for s in shards.account("buyer").webhooks("buyer")] == [
            TRADE_EXECUTED,
            "order.cancelled",
        ]
        assert [s.event for s in shards.account("seller").webhooks("seller")] == [ORDER_EXPIRED]
        events = [(w[1], w[3]) for made in delivered(shards).values() for w in made]
        assert sorted(events, key=str) == sorted(
            [
                (TRADE_EXECUTED, "req-bid"),
                (TRADE_EXECUTED, "req-mkt"),
                (ORDER_EXPIRED, None),
                ("order.cancelled", None),
            ],
            key=str,
        )
        assert comparable(sent.answers[11]) == bid
        after_cut = since(taken, delivered(shards))
        assert sorted((w[1], w[3]) for made in after_cut.values() for w in made) == [
            ("order.cancelled", None),  # batch 5
            (ORDER_EXPIRED, None),  # batch 4's tick
            (TRADE_EXECUTED, "req-mkt"),  # batch 3's R2, after the cut
        ]
    finally:
        pykka.ActorRegistry.stop_all()
