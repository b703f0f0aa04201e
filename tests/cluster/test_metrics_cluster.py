"""`GET /metrics` of `ENGINE=ray` on a real local head: a worker's page sums its own
families and every host's (`cluster.scrape`); each order's outcome is counted once,
where it was decided (account shard, symbol shard or sequencer); a closed or dead host
leaves its figures out of the page and does not fail it.

Skipped without the `ray` extra (the default test venv has none)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from miniexchange.cluster.engine import RayEngine
from miniexchange.cluster.hosts import Hosts, start_hosts
from miniexchange.cluster.scrape import SCRAPE_TIMEOUT_S
from miniexchange.cluster.shards import Placement
from miniexchange.model.commands import ASK, BID, RegisterBroker
from miniexchange.model.errors import ExchangeError
from miniexchange.testing import FakeDeliveries
from tests.cluster.helpers import ray_or_skip
from tests.cluster.test_engine import killed
from tests.cluster.test_hosts import (  # noqa: F401 (fixtures)
    LATER,
    WAIT_S,
    head,
    journal_path,
    stop_hosts,
)
from tests.cluster.test_shards import limit, market
from tests.http.test_metrics import JOURNAL_FAMILY, Scrape, labels, order_outcome

ray: Any = ray_or_skip()

PLACEMENT = Placement(2, 2)  # AAPL on symbol shard 0, MSFT on 1; seller 0, buyer 1


@pytest.fixture
def hosts(head: Any, journal_path: str) -> Iterator[Hosts]:  # noqa: F811
    """Hosts with room for three symbols: a fourth is refused at the sequencer's cut."""
    started = start_hosts(PLACEMENT, FakeDeliveries, journal_path, max_symbols=3)
    try:
        yield started
    finally:
        stop_hosts(started)


async def code(awaitable: Any) -> str:
    with pytest.raises(ExchangeError) as refused:
        await awaitable
    return refused.value.code


def test_the_page_sums_every_hosts_figures_each_outcome_counted_once(hosts: Hosts) -> None:
    one, two = (RayEngine(PLACEMENT, 3, worker=name, journal=True) for name in ("w1", "w2"))
    for engine in (one, two):
        engine.start()

    async def scenario() -> tuple[Scrape, Scrape, Scrape, float]:
        await one.register(RegisterBroker("seller", 0, (("AAPL", 10),)), None)
        await two.register(RegisterBroker("buyer", 100_000, ()), None)
        # symbol shard 0 decides: no book for ZZZ (a market order lists nothing)
        assert await code(one.submit(market("buyer", BID, 1, symbol="ZZZ"), None, None)) == (
            "no_liquidity"
        )
        # account shard 1 decides: no such broker (the worker's check said "maybe")
        assert await code(two.submit(limit("nobody", BID, 10, 1, expires=LATER), None, None)) == (
            "broker_not_found"
        )
        await one.submit(limit("seller", ASK, 1_000, 5, expires=LATER), None, None)
        await two.submit(market("buyer", BID, 2), None, None)  # 1 trade of 2 on AAPL
        await one.submit(limit("buyer", BID, 900, 1, expires=LATER), None, None)
        await two.submit(limit("buyer", BID, 10, 1, symbol="MSFT", expires=LATER), None, None)
        await one.submit(limit("buyer", BID, 10, 1, symbol="NEWCO", expires=LATER), None, None)
        # the sequencer decides: a fourth symbol has no place
        assert await code(
            two.submit(limit("buyer", BID, 10, 1, symbol="OTHER", expires=LATER), None, None)
        ) == ("symbol_limit_reached")
        assert await code(one.submit(market("seller", ASK, 1, symbol="IBM"), None, None)) == (
            "symbol_limit_reached"
        )
        whole = Scrape((await one.metrics.page()).decode())
        assert Scrape((await two.metrics.page()).decode()).samples("miniexchange_orders") == (
            whole.samples("miniexchange_orders")
        )
        ray.get(hosts.symbols[1].reset.remote(0), timeout=WAIT_S)  # closed: MSFT's shard
        closed = Scrape((await one.metrics.page()).decode())
        killed(hosts.sequencer, restart=False)
        # the worker finds the sequencer gone for good: decided, and counted, in the worker
        assert await code(two.submit(limit("buyer", BID, 10, 1, expires=LATER), None, None)) == (
            "unavailable"
        )
        started = time.monotonic()
        down = Scrape((await two.metrics.page()).decode())
        return whole, closed, down, time.monotonic() - started

    whole, closed, down, seconds = asyncio.run(scenario())
    assert whole.samples("miniexchange_orders") == {
        order_outcome("market", "bid", "no_liquidity"): 1,
        order_outcome("limit", "bid", "broker_not_found"): 1,
        order_outcome("limit", "ask", "accepted"): 1,
        order_outcome("market", "bid", "accepted"): 1,
        order_outcome("limit", "bid", "accepted"): 3,
        order_outcome("limit", "bid", "symbol_limit_reached"): 1,
        order_outcome("market", "ask", "symbol_limit_reached"): 1,
    }
    assert 'miniexchange_orders_total{outcome="accepted",side="bid",type="limit"} 3.0\n' in (
        whole.text
    )
    assert whole.samples("miniexchange_trades") == {
        labels(symbol="AAPL"): 1,
        labels(symbol="MSFT"): 0,
        labels(symbol="NEWCO"): 0,
        labels(symbol="ZZZ"): 0,
    }
    assert whole.samples("miniexchange_traded_quantity")[labels(symbol="AAPL")] == 2
    assert whole.samples("miniexchange_resting_orders") == {
        labels(symbol="AAPL", side="bid"): 1,
        labels(symbol="AAPL", side="ask"): 1,
        labels(symbol="MSFT", side="bid"): 1,
        labels(symbol="MSFT", side="ask"): 0,
        labels(symbol="NEWCO", side="bid"): 1,
        labels(symbol="NEWCO", side="ask"): 0,
        labels(symbol="ZZZ", side="bid"): 0,
        labels(symbol="ZZZ", side="ask"): 0,
    }
    # the sequencer's journal: a commit per batch, each write its own batch here but the
    # two refused at the cut (and the ticks' batches)
    assert whole.samples(JOURNAL_FAMILY, "_count")[()] >= 9
    for family in ("miniexchange_orders", "miniexchange_http_requests", JOURNAL_FAMILY):
        assert whole.text.count(f"# TYPE {family}") == 1  # one family, whoever counted

    # symbol shard 1 closed (being rebuilt): its symbol's figures are left out
    accepted_bids = order_outcome("limit", "bid", "accepted")
    assert closed.samples("miniexchange_orders") == {
        **whole.samples("miniexchange_orders"),
        accepted_bids: 2,  # MSFT's bid was accepted by its symbol's actor, in shard 1
    }
    assert labels(symbol="MSFT") not in closed.samples("miniexchange_trades")
    assert closed.samples("miniexchange_trades")[labels(symbol="AAPL")] == 1
    # the sequencer dead: its refusals and commits are left out, every family still there
    assert order_outcome("limit", "bid", "symbol_limit_reached") not in down.samples(
        "miniexchange_orders"
    )
    assert down.samples("miniexchange_orders")[accepted_bids] == 2
    assert down.samples("miniexchange_orders")[order_outcome("limit", "bid", "unavailable")] == 1
    assert down.samples(JOURNAL_FAMILY, "_count") == {(): 0}  # the workers' empty one
    assert seconds < WAIT_S  # answered, not hung (at most SCRAPE_TIMEOUT_S per host, at once)
    assert SCRAPE_TIMEOUT_S < WAIT_S


def test_orders_the_sequencer_answers_unavailable_are_counted_there(head: Any) -> None:  # noqa: F811
    """Without a journal a dead shard stops the exchange: the sequencer answers every
    write `unavailable`, the one waiting and every later one; no shard saw them."""
    started = start_hosts(PLACEMENT, FakeDeliveries)
    try:
        engine = RayEngine(PLACEMENT, 100, worker="w1")
        engine.start()

        async def scenario() -> Scrape:
            await engine.register(RegisterBroker("buyer", 1_000, ()), None)
            killed(started.accounts[PLACEMENT.account_shard("buyer")])
            for side in (BID, ASK):  # the waiting one, then a later one
                order = limit("buyer", side, 10, 1, expires=LATER)
                assert await code(engine.submit(order, None, None)) == "unavailable"
            return Scrape((await engine.metrics.page()).decode())

        page = asyncio.run(scenario())
        assert page.samples("miniexchange_orders") == {
            order_outcome("limit", "bid", "unavailable"): 1,
            order_outcome("limit", "ask", "unavailable"): 1,
        }
    finally:
        stop_hosts(started)
