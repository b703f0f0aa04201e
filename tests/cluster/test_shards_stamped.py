"""The sequencer's stamps as the shard tests make them (`shard_support.Stamper`): one
`seq` and one strictly later `at` per command, a submission's order id and trade seed, a
subscription's webhook ids, each id naming its broker's account shard; batches numbered
from 1, each after the one before unless told."""

from __future__ import annotations

from miniexchange.actors.accounts import account_index
from miniexchange.cluster.batches import CancelOrder, SubscribeWebhooks
from miniexchange.cluster.stamped import Batch, Stamped, Tick
from miniexchange.ids import seeded_uuid4
from miniexchange.model.commands import BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from tests.cluster.shard_support import STEP, T0, Stamper

DOC = "12345678900"


def test_commands_are_numbered_and_timed_in_order_and_batched_after_the_one_before() -> None:
    stamper = Stamper(account_shards=2)
    register = stamper.stamp(RegisterBroker("b1", 1_000, ()), request_id="req-1")
    tick = stamper.stamp(Tick())
    cancel = stamper.stamp(CancelOrder("ord-x"))
    assert register == Stamped(1, T0 + STEP, RegisterBroker("b1", 1_000, ()), "req-1")
    assert tick == Stamped(2, T0 + 2 * STEP, Tick())
    assert cancel == Stamped(3, T0 + 3 * STEP, CancelOrder("ord-x"))
    first = stamper.batch([register, tick])
    second = stamper.batch([cancel])
    third = stamper.batch([], after=1)
    assert first == Batch(1, 0, (register, tick))
    assert (second.k, second.after, second.commands) == (2, 1, (cancel,))
    assert (third.k, third.after) == (3, 1)


def test_a_submissions_ids_name_its_brokers_account_shard() -> None:
    stamper = Stamper(account_shards=2)
    for broker in ("b1", "b2", "b3", "b4"):
        stamped = stamper.stamp(SubmitOrder(MARKET, broker, DOC, BID, "AAA", 1))
        seq = stamped.seq
        assert stamped.trade_seed == seq
        assert stamped.order_id is not None
        assert account_index(stamped.order_id, 2) == account_index(broker, 2)
        # the first seeded id that names the shard: a function of the seq alone
        drawn = [f"ord-{seeded_uuid4(seq, n)}" for n in range(1, 20)]
        assert stamped.order_id == next(
            i for i in drawn if account_index(i, 2) == account_index(broker, 2)
        )


def test_a_subscriptions_webhook_ids_are_distinct_and_name_its_brokers_shard() -> None:
    stamper = Stamper(account_shards=2)
    stamper.stamp(SubmitOrder(LIMIT, "b1", DOC, BID, "AAA", 1, 100, T0 + 60 * STEP))
    stamped = stamper.stamp(
        SubscribeWebhooks("b2", "https://example.com/hook", ("trade.executed", "order.expired"))
    )
    assert stamped.order_id is None
    assert len(set(stamped.webhook_ids)) == 2
    assert all(i.startswith("wh-") for i in stamped.webhook_ids)
    assert {account_index(i, 2) for i in stamped.webhook_ids} == {account_index("b2", 2)}
