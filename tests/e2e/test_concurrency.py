"""Many clients at once against the real server; afterwards every invariant holds: quantity
and cash conservation, reservations equal to what the active orders hold, nothing negative,
and a book that is never crossed and totals what the active orders have left."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from decimal import Decimal
from typing import Any

import requests

from tests.e2e.conftest import Server

BROKERS = [f"broker-{i}" for i in range(6)]
SYMBOLS = ["AAPL", "GOOG", "MSFT"]
INITIAL_CASH = Decimal("50000.00")
INITIAL_SHARES = 400
THREADS = 8
REQUESTS_PER_THREAD = 150
WAIT_S = 60.0
"""A request's timeout on a loaded machine: never an upper bound on speed."""


def cents(value: Any) -> int:
    return int(Decimal(str(value)) * 100)


def fire(
    server: Server,
    seed: int,
    accepted: list[dict[str, Any]],
    errors: list[str],
    requests_count: int = REQUESTS_PER_THREAD,
    cancel_answers: tuple[int, ...] = (200, 409),
) -> None:
    """One client: random limit and market orders, and cancels of its own orders.
    `cancel_answers`: the statuses a cancel may get (with a shard down, 503 too: a
    cancel reads the order first)."""
    rng = random.Random(seed)
    session = requests.Session()
    mine: list[str] = []
    for _ in range(requests_count):
        roll = rng.random()
        if roll < 0.15 and mine:
            order_id = rng.choice(mine)
            response = session.delete(f"{server.url}/orders/{order_id}", timeout=WAIT_S)
            if response.status_code not in cancel_answers:
                errors.append(f"DELETE {response.status_code} {response.text}")
            continue
        body: dict[str, Any] = {
            "broker_id": rng.choice(BROKERS),
            "document_number": "12345678900",
            "side": rng.choice(["bid", "ask"]),
            "symbol": rng.choice(SYMBOLS),
            "quantity": rng.randint(1, 60),
        }
        if roll < 0.3:
            body["type"] = "market"
        else:
            body |= {
                "type": "limit",
                "price": float(Decimal(rng.randint(9000, 11000)) / 100),
                "expires_at": "2099-01-01T00:00:00Z",
            }
        response = session.post(f"{server.url}/orders", json=body, timeout=WAIT_S)
        if response.status_code == 201:
            order = response.json()
            accepted.append(order)
            if order["type"] == "limit":
                mine.append(order["order_id"])
        elif response.status_code != 409:
            errors.append(f"POST {response.status_code} {response.text}")


def register_brokers(server: Server) -> None:
    for broker_id in BROKERS:
        response = requests.post(
            f"{server.url}/brokers",
            json={
                "broker_id": broker_id,
                "initial_cash": float(INITIAL_CASH),
                "initial_holdings": [{"symbol": s, "quantity": INITIAL_SHARES} for s in SYMBOLS],
            },
            timeout=WAIT_S,
        )
        assert response.status_code == 201


def test_concurrent_orders_keep_every_invariant(server: Server) -> None:
    register_brokers(server)
    accepted: list[dict[str, Any]] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=fire, args=(server, seed, accepted, errors))
        for seed in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(accepted) > THREADS * REQUESTS_PER_THREAD // 2
    assert_invariants(server, accepted)
    assert server.stop() == 0


def assert_invariants(server: Server, accepted: list[dict[str, Any]]) -> None:
    """Every accepted order as the server has it now, its trades, the brokers' balances
    and the books agree; cash and shares are conserved."""
    orders = [
        requests.get(f"{server.url}/orders/{o['order_id']}", timeout=WAIT_S).json()
        for o in accepted
    ]
    trades: dict[str, list[tuple[str, str, int, int]]] = defaultdict(list)
    reserved_cash: dict[str, int] = defaultdict(int)
    reserved_shares: dict[tuple[str, str], int] = defaultdict(int)
    for order in orders:
        assert order["quantity"] == (
            order["filled_quantity"] + order["remaining_quantity"] + order["cancelled_quantity"]
        )
        assert order["filled_quantity"] == sum(t["quantity"] for t in order["trades"])
        if order["status"] in ("filled", "cancelled", "expired"):
            assert order["remaining_quantity"] == 0
        if order["type"] == "market":
            assert order["status"] in ("filled", "cancelled")
            assert order["trades"], "an accepted market order always trades"
        active = order["status"] in ("pending", "partially_filled")
        if active and order["side"] == "bid":
            reserved_cash[order["broker_id"]] += cents(order["price"]) * order["remaining_quantity"]
        if active and order["side"] == "ask":
            key = (order["broker_id"], order["symbol"])
            reserved_shares[key] += order["remaining_quantity"]
        for trade in order["trades"]:
            trades[trade["trade_id"]].append(
                (order["side"], order["symbol"], cents(trade["price"]), trade["quantity"])
            )
    # every trade is listed by exactly one bid and one ask, with the same price and size
    for sides in trades.values():
        assert sorted(side for side, *_ in sides) == ["ask", "bid"]
        assert sides[0][1:] == sides[1][1:]

    total_cash = 0
    shares: dict[str, int] = defaultdict(int)
    for broker_id in BROKERS:
        balance = requests.get(f"{server.url}/brokers/{broker_id}/balance", timeout=WAIT_S).json()
        total_cash += cents(balance["cash_balance"])
        assert cents(balance["reserved_cash"]) == reserved_cash[broker_id]
        assert cents(balance["available_cash"]) >= 0
        for holding in balance["holdings"]:
            shares[holding["symbol"]] += holding["quantity"]
            key = (broker_id, holding["symbol"])
            assert holding["reserved_quantity"] == reserved_shares[key]
            assert holding["available_quantity"] >= 0
    for symbol in SYMBOLS:  # no crossed book, and it shows exactly the active orders
        book = requests.get(f"{server.url}/stocks/{symbol}/book?depth=50", timeout=WAIT_S).json()
        if book["bids"] and book["asks"]:
            assert cents(book["bids"][0]["price"]) < cents(book["asks"][0]["price"])
        for side in ("bids", "asks"):
            shown = sum(level["total_quantity"] for level in book[side])
            active = sum(
                o["remaining_quantity"]
                for o in orders
                if o["symbol"] == symbol
                and o["side"] == side[:-1]
                and o["status"] in ("pending", "partially_filled")
            )
            # depth 50 shows the whole side unless it has more levels than that
            assert shown == active if len(book[side]) < 50 else shown <= active
    assert total_cash == cents(INITIAL_CASH) * len(BROKERS)
    assert dict(shares) == {symbol: INITIAL_SHARES * len(BROKERS) for symbol in SYMBOLS}
