"""The ingress engine of `ENGINE=ray` against real hosts on a real local head: two
workers' engines, each write answered as the shards decided, each read on either worker
seeing every answer given before it.

Skipped without the `ray` extra (the default test venv has none)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from miniexchange.actors.market_data import Summary
from miniexchange.clock import SystemClock
from miniexchange.cluster.engine import RayEngine
from miniexchange.cluster.hosts import Hosts, start_hosts
from miniexchange.cluster.shards import Placement
from miniexchange.model.commands import ASK, BID, RegisterBroker
from miniexchange.model.errors import ExchangeError
from miniexchange.model.idempotency import InFlight, StoredAnswer
from miniexchange.model.ledger import Holding
from miniexchange.model.orders import CANCELLED, EXPIRED, FILLED, PARTIALLY_FILLED, PENDING
from miniexchange.testing import FakeDeliveries
from tests.cluster.helpers import ray_or_skip
from tests.cluster.test_hosts import (  # noqa: F401 (fixtures)
    LATER,
    WAIT_S,
    head,
    hosts,
    journal_path,
    stop_hosts,
)
from tests.cluster.test_shards import limit, market

ray: Any = ray_or_skip()


def engines(journal: bool = False) -> tuple[RayEngine, RayEngine]:
    """Two workers' engines (as two gunicorn workers would have), started; `journal`:
    the cluster journals (a call failed with the sequencer is sent again)."""
    pair = (
        RayEngine(Placement(2, 2), 100, worker="w1", journal=journal),
        RayEngine(Placement(2, 2), 100, worker="w2", journal=journal),
    )
    for engine in pair:
        engine.start()
    return pair


async def refusal(awaitable: Any) -> tuple[str, str]:
    with pytest.raises(ExchangeError) as refused:
        await awaitable
    return refused.value.code, refused.value.message


def test_writes_on_one_worker_are_seen_by_reads_on_the_other(hosts: Hosts) -> None:  # noqa: F811
    one, two = engines()

    async def scenario() -> None:
        seller, buyer = await asyncio.gather(  # one pass: one call to the sequencer
            one.register(RegisterBroker("seller", 0, (("AAPL", 10), ("MSFT", 1))), None),
            one.register(RegisterBroker("buyer", 10_000, ()), None),
        )
        assert (seller.holdings[0], buyer.cash_balance) == (Holding("AAPL", 10, 0), 10_000)
        assert (await two.balance("buyer")).cash_balance == 10_000
        ask = await one.submit(limit("seller", ASK, 1_000, 5, expires=LATER), None, "req-1")
        assert ask.status == PENDING
        bid = await two.submit(market("buyer", BID, 2), None, "req-2")
        assert (bid.status, bid.filled_value) == (FILLED, 2_000)
        resting = await two.order(ask.order_id)
        assert resting is not None
        assert (resting.status, resting.filled_quantity) == (PARTIALLY_FILLED, 2)
        assert await one.order("ord-00000000-0000-4000-8000-000000000000") is None
        listed, total = await one.broker_orders("seller", None, 0, 10)
        assert ([o.order_id for o in listed], total) == ([ask.order_id], 1)
        book = await two.book("AAPL", 5)
        assert ([(level.price, level.quantity) for level in book.asks], book.bids) == (
            [(1_000, 3)],
            [],
        )
        quote = await one.quote("AAPL", BID, 3)
        assert [(level.price, level.quantity) for level in quote.levels] == [(1_000, 3)]
        assert (await one.price("AAPL")).current_price == 1_000
        assert await two.stocks() == [
            ("AAPL", Summary(1_000, 2, None, 1_000, LATER)),
            ("MSFT", Summary()),  # listed by a registration: no book yet
        ]
        (trade,) = await one.trades("AAPL", 5)
        assert (trade.price, trade.quantity, trade.bid_order_id) == (1_000, 2, bid.order_id)
        (candle,) = await two.candles("AAPL", "1m", 5)
        assert (candle.open, candle.close, candle.volume) == (1_000, 1_000, 2)
        assert (await two.book("MSFT", 5)).asks == []
        for read in (two.book("ZZZ", 5), one.trades("ZZZ", 5), one.price("ZZZ")):
            assert await refusal(read) == (
                "symbol_not_found",
                "Symbol ZZZ is not listed on this exchange",
            )
        cancelled = await one.cancel("AAPL", ask.order_id, "req-3")
        assert (cancelled.status, cancelled.filled_quantity) == (CANCELLED, 2)
        after = await two.balance("seller")
        assert (after.cash_balance, after.holdings[0]) == (2_000, Holding("AAPL", 8, 0))

    asyncio.run(scenario())


def test_refusals_are_raised_where_the_data_is(hosts: Hosts) -> None:  # noqa: F811
    one, two = engines()

    async def scenario() -> None:
        await one.register(RegisterBroker("buyer", 100, ()), None)
        assert await refusal(two.register(RegisterBroker("buyer", 1, ()), None)) == (
            "broker_already_exists",
            "Broker buyer is already registered",
        )
        assert (await refusal(two.balance("nobody")))[0] == "broker_not_found"
        assert (await refusal(two.broker_orders("nobody", None, 0, 10)))[0] == "broker_not_found"
        assert (await refusal(one.webhooks("nobody")))[0] == "broker_not_found"
        assert (await refusal(one.submit(limit("nobody", BID, 1, 1, expires=LATER), None, None)))[
            0
        ] == "broker_not_found"
        assert await refusal(one.submit(market("buyer", BID, 1, "TSLA"), None, None)) == (
            "no_liquidity",
            "No matching orders available for market order on TSLA",
        )
        big = limit("buyer", BID, 1_000, 1, expires=LATER)
        assert (await refusal(two.submit(big, None, None)))[0] == "insufficient_balance"
        upserted = await two.subscribe("buyer", "https://hooks.test/x", ("order.filled",), None)
        (subscription,) = await one.webhooks("buyer")
        assert subscription.webhook_id == upserted.subscriptions[0].webhook_id
        assert await refusal(one.unsubscribe(subscription.webhook_id, "seller")) == (
            "webhook_not_found",
            f"Webhook {subscription.webhook_id} does not exist",
        )
        await one.unsubscribe(subscription.webhook_id, "buyer")
        assert await two.webhooks("buyer") == []

    asyncio.run(scenario())


def test_a_workers_stream_feed_hears_the_trades_made_through_another_worker(
    hosts: Hosts,  # noqa: F811
) -> None:
    one, two = engines()

    async def scenario() -> None:
        await one.register(RegisterBroker("seller", 0, (("AAPL", 10),)), None)
        await one.register(RegisterBroker("buyer", 10_000, ()), None)
        before = await two.submit(limit("seller", ASK, 900, 1, expires=LATER), None, None)
        await one.submit(market("buyer", BID, 1), None, None)  # before the stream joined
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        feed = one.feed("AAPL")  # as the stream hub does for a symbol's first stream
        feed.listen(lambda: loop.call_soon_threadsafe(woken.set))
        version = feed.book_version
        ask = await two.submit(limit("seller", ASK, 1_000, 3, expires=LATER), None, None)
        bid = await two.submit(market("buyer", BID, 2), None, None)
        heard: list[Any] = []
        async with asyncio.timeout(WAIT_S):
            while len(heard) < 1:
                await woken.wait()
                woken.clear()
                trades, overflowed = feed.take()
                assert not overflowed
                heard.extend(trades)
        (trade,) = heard  # the trade before the stream joined is not news
        assert (trade.bid_order_id, trade.ask_order_id, trade.quantity) == (
            bid.order_id,
            ask.order_id,
            2,
        )
        assert before.order_id != trade.ask_order_id
        assert feed.book_version > version  # the fan-out reads the book again
        one.stop()

    asyncio.run(scenario())


def test_an_order_expires_on_the_sequencers_tick_with_no_request_after_it(
    hosts: Hosts,  # noqa: F811
) -> None:
    """The tick enters the stream every second (`start_hosts`' default), idle or not."""
    one, _ = engines()

    async def scenario() -> None:
        await one.register(RegisterBroker("buyer", 1_000, ()), None)
        soon = SystemClock().now() + 1_500_000
        order = await one.submit(limit("buyer", BID, 1_000, 1, expires=soon), None, None)
        assert (await one.balance("buyer")).reserved_cash == 1_000
        async with asyncio.timeout(WAIT_S):
            while (expired := await one.order(order.order_id)) is not None and (
                expired.status != EXPIRED
            ):
                await asyncio.sleep(0.2)
        assert expired is not None and expired.expired_at is not None
        assert expired.expired_at >= soon
        assert (await one.balance("buyer")).reserved_cash == 0

    asyncio.run(scenario())


UNAVAILABLE = ("unavailable", "A part of the exchange is down; retry later")


def test_a_shard_whose_process_died_is_rebuilt_from_the_journal(
    hosts: Hosts,  # noqa: F811 (its journal is a file)
) -> None:
    """Ray restarts a killed shard's process empty; the sequencer finds it and rebuilds
    every shard from the journal. Meanwhile a read answers `unavailable`, never from the
    empty shard (which would say `broker_not_found`); a write sent meanwhile is
    answered once its batch settles; afterwards everything is as before the kill."""
    one, two = engines()

    async def scenario() -> None:
        await one.register(RegisterBroker("seller", 0, (("AAPL", 10),)), None)
        await one.register(RegisterBroker("buyer", 10_000, ()), None)
        ask = await one.submit(limit("seller", ASK, 1_000, 5, expires=LATER), None, None)
        await one.submit(market("buyer", BID, 2), None, None)
        ray.kill(hosts.accounts[Placement(2, 2).account_shard("buyer")], no_restart=False)
        # sent while it is down
        bid = asyncio.ensure_future(one.submit(market("buyer", BID, 1), None, None))
        answers = []
        for _ in range(int(WAIT_S * 5)):
            try:
                answers.append((await two.balance("buyer")).cash_balance)
            except ExchangeError as refused:
                answers.append((refused.code, refused.message))
            if answers[-1] == 7_000:
                break
            await asyncio.sleep(0.2)
        assert set(answers) <= {UNAVAILABLE, 8_000, 7_000}, answers  # never an empty shard
        assert answers[-1] == 7_000, answers
        assert ((await bid).status, (await bid).filled_value) == (FILLED, 1_000)
        resting = await two.order(ask.order_id)
        assert resting is not None and resting.filled_quantity == 3
        again = await two.submit(market("buyer", BID, 1), None, None)
        assert again.filled_value == 1_000

    asyncio.run(scenario())


def test_a_sequencer_whose_process_died_is_restarted_and_answers_each_write_once(
    hosts: Hosts,  # noqa: F811 (its journal is a file)
) -> None:
    """Ray restarts a killed sequencer's process; it resumes its journal and rebuilds
    the shards. The workers send the writes whose calls failed again, under the same
    numbers: those the journal holds are answered as the replay decides them, the
    others sequenced once. No write is refused, none taken twice."""
    one, two = engines(journal=True)

    async def scenario() -> None:
        await one.register(RegisterBroker("seller", 0, (("AAPL", 100),)), None)
        await one.register(RegisterBroker("buyer", 1_000_000, ()), None)
        ask = await one.submit(limit("seller", ASK, 1_000, 60, expires=LATER), None, None)
        bids = [
            asyncio.ensure_future(engine.submit(market("buyer", BID, 1), None, None))
            for _ in range(20)
            for engine in (one, two)
        ]
        await asyncio.sleep(0.01)  # some on their way, some answered
        ray.kill(hosts.sequencer, no_restart=False)
        filled = await asyncio.gather(*bids)  # no `unavailable`: each sent until answered
        assert [(b.status, b.filled_value) for b in filled] == [(FILLED, 1_000)] * 40
        assert len({b.order_id for b in filled}) == 40
        resting = await two.order(ask.order_id)
        assert resting is not None and resting.filled_quantity == 40  # none taken twice
        assert (await one.balance("buyer")).cash_balance == 1_000_000 - 40 * 1_000
        again = await two.submit(market("buyer", BID, 1), None, None)
        assert again.filled_value == 1_000

    asyncio.run(scenario())


def test_a_restarted_sequencer_rebuilds_and_ticks_before_any_call_comes(
    hosts: Hosts,  # noqa: F811 (its journal is a file)
) -> None:
    """Restarted with nothing sent to it, the sequencer still rebuilds the shards and
    its ticks go on: an order falls due and is expired, seen by a read of its shard
    (reads never call the sequencer)."""
    one, _ = engines()

    async def scenario() -> None:
        await one.register(RegisterBroker("seller", 0, (("AAPL", 10),)), None)
        soon = SystemClock().now() + 3_000_000
        ask = await one.submit(limit("seller", ASK, 1_000, 5, expires=soon), None, None)
        killed(hosts.sequencer)
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                order = await one.order(ask.order_id)
            except ExchangeError:  # closed while the restarted sequencer rebuilds it
                order = None
            if order is not None and order.status == EXPIRED:
                break
            assert time.monotonic() < deadline, order
            await asyncio.sleep(0.2)

    asyncio.run(scenario())


def killed(host: Any, restart: bool = True) -> None:
    """`kill -9` of a host's process, returned once it is dead: `ray.kill` only asks
    for it, and a call sent at once may still be answered. `restart=False`: for good,
    Ray does not start it again."""
    ray.kill(host, no_restart=not restart)
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            ray.get(host.__ray_ready__.remote(), timeout=WAIT_S)
        except ray.exceptions.RayActorError:
            return
        assert time.monotonic() < deadline, "the host outlived its kill"
        time.sleep(0.05)


def test_without_a_journal_a_dead_shard_stops_the_exchange(head: Any) -> None:  # noqa: F811
    """With `DATABASE_PATH=:memory:` nothing could rebuild a shard: Ray does not
    restart it, a read it would answer is refused `unavailable` (a 503), and a write,
    whose batch that shard would have to settle, is refused so once the sequencer
    finds the shard dead; so is every write after it."""
    started = start_hosts(Placement(2, 2), FakeDeliveries)
    try:
        one, _ = engines()

        async def scenario() -> None:
            await one.register(RegisterBroker("buyer", 1_000, ()), None)
            killed(started.accounts[Placement(2, 2).account_shard("buyer")])
            for _ in range(5):  # over seconds: long enough for Ray to have restarted it
                assert await refusal(one.balance("buyer")) == UNAVAILABLE
                await asyncio.sleep(1)
            for broker in ("seller", "other"):  # the waiting one, then a later one
                assert await refusal(one.register(RegisterBroker(broker, 1, ()), None)) == (
                    UNAVAILABLE
                )

        asyncio.run(scenario())
    finally:
        stop_hosts(started)


def test_two_processes_never_share_a_worker_name_even_with_one_pid() -> None:
    """The sequencer recognises a write sent again by (worker, number): a worker
    restarted under a pid used before must not be answered its predecessor's answers."""
    first, second = RayEngine(Placement(1, 1), 1), RayEngine(Placement(1, 1), 1)
    assert first.worker != second.worker
    assert first.worker.split("-")[:-1] == second.worker.split("-")[:-1]  # host, pid


def test_an_idempotency_key_is_one_for_every_worker(hosts: Hosts) -> None:  # noqa: F811
    """Any worker may take a retry: the sequencer holds the keys of all of them."""
    one, two = engines()
    digest, other = b"d" * 32, b"e" * 32

    async def scenario() -> None:
        first = await one.keys.begin("/orders", "k1", digest)
        assert isinstance(first, InFlight) and first.digest == digest
        assert await refusal(two.keys.begin("/orders", "k1", digest)) == (
            "idempotency_key_in_progress",
            "A request with Idempotency-Key k1 is still being processed",
        )
        assert await refusal(two.keys.begin("/orders", "k1", other)) == (
            "idempotency_key_reused",
            "Idempotency-Key k1 was already used with a different request",
        )
        await one.keys.finish("/orders", "k1", 201, b'{"order_id":"x"}')
        assert await two.keys.begin("/orders", "k1", digest) == StoredAnswer(
            digest, 201, b'{"order_id":"x"}', first.first_used_at
        )
        assert isinstance(await two.keys.begin("/brokers", "k1", digest), InFlight)
        await two.keys.finish("/brokers", "k1", 422, b"{}")  # not kept: free again
        assert isinstance(await one.keys.begin("/brokers", "k1", other), InFlight)

    asyncio.run(scenario())
