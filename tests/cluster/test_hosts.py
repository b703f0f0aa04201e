"""The sequencer and the shards as Ray actors on a real local head: writes sent as a
worker sends them are sequenced, journaled, matched and settled across processes, and
answered as the shards decided.

Skipped without the `ray` extra (the default test venv has none)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from miniexchange.clock import SystemClock
from miniexchange.cluster.batches import CancelOrder, Part, Write, WriteCommand, encode_part
from miniexchange.cluster.head import Head
from miniexchange.cluster.hosts import Hosts, start_hosts
from miniexchange.cluster.parts import decode_answers
from miniexchange.cluster.sequencer import journaled
from miniexchange.cluster.shards import Placement
from miniexchange.journal.store import SqliteJournal
from miniexchange.model.commands import ASK, BID, RegisterBroker
from miniexchange.model.errors import ExchangeError
from miniexchange.model.ledger import Balance, Holding
from miniexchange.model.orders import CANCELLED, FILLED, PENDING, Order
from miniexchange.testing import FakeDeliveries
from tests.cluster.helpers import joined_head, ray_or_skip
from tests.cluster.test_shards import limit, market

ray: Any = ray_or_skip()

WAIT_S = 60.0
"""How long to wait for an answer that must come; never an upper bound on speed."""
LATER = SystemClock().now() + 3_600_000_000  # the hosts stamp real time: an hour ahead


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    with joined_head() as started:
        yield started


@pytest.fixture
def journal_path(tmp_path: Path) -> str:
    return str(tmp_path / "commands.db")


@pytest.fixture
def hosts(head: Head, journal_path: str) -> Iterator[Hosts]:
    started = start_hosts(Placement(2, 2), FakeDeliveries, journal_path)
    try:
        yield started
    finally:
        stop_hosts(started)


def stop_hosts(hosts: Hosts) -> None:
    for host in (*hosts.accounts, *hosts.symbols):
        with contextlib.suppress(ray.exceptions.RayActorError):  # a test killed it
            ray.get(host.stop.remote(), timeout=WAIT_S)
    for host in (hosts.sequencer, *hosts.accounts, *hosts.symbols):
        ray.kill(host)


class Worker:
    """What an ingress worker sends: its writes, numbered, in one part per call."""

    def __init__(self, hosts: Hosts, name: str) -> None:
        self.hosts, self.name, self.sent = hosts, name, 0

    def call(self, *commands: WriteCommand) -> Any:
        """One call's ObjectRef (not waited for)."""
        first = self.sent + 1
        self.sent += len(commands)
        writes = tuple(Write(n, c) for n, c in enumerate(commands, start=first))
        return self.hosts.sequencer.submit.remote(encode_part(Part(self.name, writes)))

    def answers(self, *commands: WriteCommand) -> list[Any]:
        _, _, answers = decode_answers(ray.get(self.call(*commands), timeout=WAIT_S))
        return [answer for _, answer in answers]


def balance(hosts: Hosts, broker_id: str) -> Any:
    shard = Placement(2, 2).account_shard(broker_id)
    return ray.get(hosts.accounts[shard].balance.remote(broker_id), timeout=WAIT_S)


def test_orders_are_matched_and_settled_across_the_shards_processes(
    hosts: Hosts, journal_path: str
) -> None:
    worker = Worker(hosts, "w1")
    seller, buyer = worker.answers(  # account shards 0 and 1
        RegisterBroker("seller", 0, (("AAPL", 10),)), RegisterBroker("buyer", 10_000, ())
    )
    assert isinstance(seller, Balance) and isinstance(buyer, Balance)
    assert (seller.holdings, buyer.cash_balance) == ((Holding("AAPL", 10, 0),), 10_000)
    (ask,) = worker.answers(limit("seller", ASK, 1_000, 3, expires=LATER))
    assert isinstance(ask, Order) and ask.status == PENDING
    (bid,) = worker.answers(market("buyer", BID, 2))
    assert isinstance(bid, Order)
    assert (bid.status, bid.filled_quantity, bid.filled_value) == (FILLED, 2, 2_000)
    after = balance(hosts, "buyer")
    assert (after.cash_balance, after.reserved_cash, after.holdings) == (
        8_000,
        0,
        (Holding("AAPL", 2, 0),),
    )
    (refused,) = worker.answers(limit("buyer", BID, 100_000, 1, expires=LATER))
    assert isinstance(refused, ExchangeError) and refused.code == "insufficient_balance"
    journal = SqliteJournal(journal_path, engine="ray")
    try:  # every batch journaled before its answers came
        commands = [c.command for entry in journaled(journal.facts()) for c in entry.batch.commands]
    finally:
        journal.close()
    assert [type(c).__name__ for c in commands if type(c).__name__ != "Tick"] == [
        "RegisterBroker",
        "RegisterBroker",
        "SubmitOrder",
        "SubmitOrder",
        "SubmitOrder",
    ]


def test_concurrent_calls_of_several_workers_are_all_answered_and_conserve_cash(
    hosts: Hosts,
) -> None:
    brokers = ("seller", "buyer", "bob", "alice")
    Worker(hosts, "setup").answers(
        *(RegisterBroker(b, 10_000, (("AAPL", 50), ("MSFT", 50))) for b in brokers)
    )
    workers = [Worker(hosts, f"w{n}") for n in range(3)]
    calls = []
    for round_ in range(10):
        for n, worker in enumerate(workers):
            broker = brokers[(round_ + n) % 4]
            symbol = ("AAPL", "MSFT")[round_ % 2]
            calls.append(
                worker.call(
                    limit(broker, (BID, ASK)[n % 2], 99 + round_ % 3, 2, symbol, LATER),
                    market(brokers[(round_ + n + 1) % 4], (ASK, BID)[n % 2], 1, symbol),
                )
            )
    answered = [decode_answers(document)[2] for document in ray.get(calls, timeout=WAIT_S)]
    assert [len(answers) for answers in answered] == [2] * 30
    orders = [a for answers in answered for _, a in answers if isinstance(a, Order)]
    assert all(isinstance(a, Order | ExchangeError) for answers in answered for _, a in answers)
    assert sum(order.filled_quantity for order in orders) > 0  # they traded
    balances = [balance(hosts, b) for b in brokers]
    assert sum(b.cash_balance for b in balances) == 40_000
    for symbol in ("AAPL", "MSFT"):
        held = [h.quantity for b in balances for h in b.holdings if h.symbol == symbol]
        assert sum(held) == 200
    assert all(b.available_cash >= 0 for b in balances)


def test_hosts_started_again_over_their_journal_rebuild_the_state_and_go_on(
    head: Head, journal_path: str
) -> None:
    """What `make run-ray` does at a start over a journal: the shards start empty, the
    sequencer sends them every journaled batch again (`replay`), and they end where the
    hosts before them were; new writes then follow the replayed ones."""
    first = start_hosts(Placement(2, 2), FakeDeliveries, journal_path)
    try:
        assert ray.get(first.sequencer.replay.remote(), timeout=WAIT_S) == 0  # a new journal
        worker = Worker(first, "w1")
        asks = asks_of_a_seller(worker)
        worker.answers(market("buyer", BID, 4))
        (resting,) = worker.answers(limit("buyer", BID, 800, 2, expires=LATER, symbol="MSFT"))
        (cancelled,) = worker.answers(CancelOrder(asks[2].order_id))
        assert cancelled.status == CANCELLED
        before = state(first, [*asks, resting])
    finally:
        stop_hosts(first)

    second = start_hosts(Placement(2, 2), FakeDeliveries, journal_path)
    try:
        assert ray.get(second.sequencer.replay.remote(), timeout=WAIT_S) >= 5  # ticks too
        assert state(second, [*asks, resting]) == before
        (sweep,) = Worker(second, "w2").answers(market("buyer", BID, 2))
        assert (sweep.status, sweep.filled_value) == (FILLED, 2 * 1_100)  # the rest of ask 2
        assert balance(second, "buyer").cash_balance == 100_000 - 3_000 - 1_100 * 3
    finally:
        stop_hosts(second)


def asks_of_a_seller(worker: Worker) -> list[Any]:
    """A seller of AAPL and MSFT and a buyer registered; the seller's three asks resting
    (AAPL at 10.00 and 11.00, MSFT at 9.00)."""
    worker.answers(
        RegisterBroker("seller", 0, (("AAPL", 10), ("MSFT", 5))),
        RegisterBroker("buyer", 100_000, ()),
    )
    return worker.answers(
        limit("seller", ASK, 1_000, 3, expires=LATER),
        limit("seller", ASK, 1_100, 3, expires=LATER),
        limit("seller", ASK, 900, 2, expires=LATER, symbol="MSFT"),
    )


def state(hosts: Hosts, orders: list[Order]) -> Any:
    """Both brokers' balances, the orders' states, and both books, as the shards answer."""
    placement = Placement(2, 2)
    books = [
        ray.get(hosts.symbols[placement.symbol_shard(s)].book.remote(s, 10), timeout=WAIT_S)
        for s in ("AAPL", "MSFT")
    ]
    return (
        [balance(hosts, broker) for broker in ("seller", "buyer")],
        [
            ray.get(
                hosts.accounts[placement.account_shard(order.order_id)].order.remote(
                    order.order_id
                ),
                timeout=WAIT_S,
            )
            for order in orders
        ],
        [(book.bids, book.asks) for book in books],
    )


def test_the_first_write_is_answered_however_fast_the_ticks(head: Head) -> None:
    """The ticks start once the shards are built: a tick's batch sent while the start
    reset the shards reached an old shard and was wiped with it, and with no journal to
    replay it every later batch waited for it (4 starts in 8 hung before the fix)."""
    for _ in range(8):
        hosts = start_hosts(Placement(2, 2), FakeDeliveries, expiration_interval_us=1_000)
        try:
            (registered,) = Worker(hosts, "w1").answers(RegisterBroker("b", 100, ()))
            assert isinstance(registered, Balance) and registered.cash_balance == 100
        finally:
            stop_hosts(hosts)


def test_a_start_from_a_cluster_snapshot_replays_only_the_batches_after_it(
    head: Head, journal_path: str
) -> None:
    """A snapshot holds the cuts until every batch settled, has every shard capture its
    state there and forgets the journal's facts it covers; a start over the journal
    starts each shard from it and replays only the batches after it, and ends where
    the hosts before were (orders resting from before the snapshot trade after it)."""
    first = start_hosts(Placement(2, 2), FakeDeliveries, journal_path)
    try:
        worker = Worker(first, "w1")
        asks = asks_of_a_seller(worker)
        taken = ray.get(first.sequencer.snapshot.remote(), timeout=WAIT_S)
        assert taken >= 2  # the two calls' batches, and any tick's
        assert Path(journal_path + ".ray-snapshot").exists()
        deadline = time.monotonic() + WAIT_S
        while min(batches_in(journal_path), default=taken + 1) <= taken:  # the writer forgets
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (sweep,) = worker.answers(market("buyer", BID, 4))
        assert (sweep.status, sweep.filled_value) == (FILLED, 3 * 1_000 + 1_100)
        (resting,) = worker.answers(limit("buyer", BID, 800, 2, expires=LATER, symbol="MSFT"))
        (cancelled,) = worker.answers(CancelOrder(asks[2].order_id))
        assert cancelled.status == CANCELLED
        before = state(first, [*asks, sweep, resting])
        after_snapshot = batches_in(journal_path)
        assert after_snapshot and min(after_snapshot) == taken + 1
    finally:
        stop_hosts(first)

    second = start_hosts(Placement(2, 2), FakeDeliveries, journal_path)
    try:
        assert second.replayed == len(batches_in(journal_path)) == len(after_snapshot)
        assert state(second, [*asks, sweep, resting]) == before
        (rest,) = Worker(second, "w2").answers(market("buyer", BID, 2))
        assert (rest.status, rest.filled_value) == (FILLED, 2 * 1_100)
        assert balance(second, "buyer").cash_balance == 100_000 - 3_000 - 1_100 * 3
    finally:
        stop_hosts(second)


def batches_in(journal_path: str) -> list[int]:
    """The numbers of the batches the journal holds now."""
    journal = SqliteJournal(journal_path, engine="ray")
    try:
        return [entry.batch.k for entry in journaled(journal.facts())]
    finally:
        journal.close()
