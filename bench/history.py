"""What a long history costs (issue 14): recovery of one order filled many times, and
one page of a broker's listing when the broker has many orders.

- `recovery`: facts of one resting ask of N shares filled by N one-share bids (N
  trades of the same order), then the time of `recover()` alone.
- `listing`: one broker with N orders in the read index (published directly, as the
  symbol actors do), then `GET /brokers/{id}/orders` through the ASGI app: the first
  page, a deep page, and the first page filtered by a status.

Each figure is the median of a few runs in this interpreter. Not part of `make bench`:

    python -m bench.history [--fills 40000] [--orders 500000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable

from falcon import testing

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.seam import EmbeddedEngine
from miniexchange.http.app import create_app
from miniexchange.journal import facts
from miniexchange.journal.facts import Fact
from miniexchange.journal.recovery import recover
from miniexchange.model.commands import ASK, BID, LIMIT, RegisterBroker, SubmitOrder
from miniexchange.model.orders import CANCELLED, FILLED, Trade, new_order
from miniexchange.settings import load_settings
from miniexchange.testing import FakeDeliveries, ManualClock, SequentialIds

START = "2026-02-17T09:00:00Z"
T0 = ManualClock.at(START).now()
FAR = T0 + 86_400_000_000


def median_s(run: Callable[[], object], times: int) -> float:
    samples = []
    for _ in range(times):
        gc.collect()
        began = time.perf_counter()
        run()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def one_order_filled(fills: int) -> list[Fact]:
    """One ask of `fills` shares, then `fills` one-share bids that each trade with it."""
    recorded = [
        facts.broker_registered(RegisterBroker("seller", 0, (("AAPL", fills),)), T0),
        facts.broker_registered(RegisterBroker("buyer", 100 * fills, ()), T0),
    ]
    ask = new_order(SubmitOrder(LIMIT, "seller", "1", ASK, "AAPL", fills, 100, FAR), "ask", T0)
    recorded.append(facts.order_accepted(ask))
    for n in range(fills):
        at = T0 + 1 + n
        command = SubmitOrder(LIMIT, "buyer", "1", BID, "AAPL", 1, 100, FAR)
        bid = new_order(command, f"bid-{n}", at)
        recorded.append(facts.order_accepted(bid))
        trade = Trade(f"trd-{n}", "AAPL", 100, 1, at, bid.order_id, "ask", "buyer", "seller")
        recorded.append(facts.trade_executed(trade))
    return recorded


def recovery(fills: int) -> None:
    recorded = one_order_filled(fills)
    state = recover(recorded)  # once, to check what it rebuilt
    assert len(state.orders["ask"].trades) == fills and state.orders["ask"].status == FILLED
    seconds = median_s(lambda: recover(recorded), 3)
    print(f"recover(): {fills:,} fills of one order: {seconds:.3f} s")


def listing(orders: int) -> None:
    clock = ManualClock.at(START)
    exchange = Exchange(clock, SequentialIds(), FakeDeliveries(), expiration_interval_s=None)
    app = create_app(load_settings({}), clock=clock, engine=EmbeddedEngine(exchange))

    async def measure() -> None:
        async with testing.ASGIConductor(app) as conductor:
            body = {"broker_id": "B", "initial_cash": 1, "initial_holdings": []}
            assert (await conductor.simulate_post("/brokers", json=body)).status_code == 201
            index = exchange.read_index
            command = SubmitOrder(LIMIT, "B", "1", BID, "AAPL", 1, 100, FAR)
            for n in range(orders):
                order = new_order(command, f"ord-{n}", T0 + n)
                if n % 10 == 0:  # a tenth of them end cancelled (published as the actors do)
                    index.publish_new(order)
                    index.publish(order.closed(CANCELLED, T0 + n, None))
                else:
                    index.publish_new(order)
            for query in ("", f"page={orders // 40}&limit=20", "status=cancelled"):
                result = await conductor.simulate_get("/brokers/B/orders", query_string=query)
                assert result.status_code == 200 and len(result.json["orders"]) == 20, query
                samples = []
                for _ in range(7):
                    began = time.perf_counter()
                    await conductor.simulate_get("/brokers/B/orders", query_string=query)
                    samples.append(time.perf_counter() - began)
                shown = query or "(first page)"
                print(
                    f"GET /brokers/B/orders?{shown}: {orders:,} orders: "
                    f"{statistics.median(samples) * 1000:.2f} ms"
                )

    asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fills", type=int, default=40_000)
    parser.add_argument("--orders", type=int, default=500_000)
    args = parser.parse_args()
    recovery(args.fills)
    listing(args.orders)


if __name__ == "__main__":
    main()
