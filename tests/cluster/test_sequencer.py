"""The sequencer: stamps, cuts, the order of the shards' phases, and the rules only it
can apply, alone and driving real shards (no Ray)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pykka
import pytest
from hypothesis import strategies as st

from miniexchange.cluster.batches import (
    CancelOrder,
    IssueCredentials,
    Part,
    SubscribeWebhooks,
    Write,
    WriteCommand,
)
from miniexchange.cluster.doors import AccountDoor, Matched, SymbolDoor
from miniexchange.cluster.sequencer import (
    COMMANDS,
    KEY_LEASE_US,
    Cut,
    Sent,
    Sequencer,
    SequencerState,
    Ticket,
    journaled,
)
from miniexchange.cluster.shards import AccountShard, Answer, Placement, SymbolShard
from miniexchange.cluster.stamped import Batch, Go, Tick
from miniexchange.ids import seeded_uuid4
from miniexchange.journal.store import JournalFormatError, SqliteJournal
from miniexchange.model.commands import ASK, BID, RegisterBroker
from miniexchange.model.errors import ExchangeError
from miniexchange.model.idempotency import Decided, InFlight, StoredAnswer
from miniexchange.model.ledger import Balance
from miniexchange.model.orders import FILLED, PENDING, Order
from miniexchange.testing import ManualClock
from tests.cluster.shard_support import SECOND, T0, Shards, comparable, observe_shards
from tests.cluster.test_shards import limit, market, refused

INTERVAL = SECOND  # the expiration tick's
BATCH = Batch(1, 0, ())


def seeded() -> Any:
    numbers = itertools.count(1)
    return lambda: seeded_uuid4(0, next(numbers))


def sequencer(
    clock: ManualClock,
    placement: Placement | None = None,
    max_symbols: int = 10,
    interval: int | None = None,
) -> Sequencer:
    seeds = itertools.count(1000)
    return Sequencer(
        placement or Placement(4, 2), clock, max_symbols, interval, seeded(), lambda: next(seeds)
    )


def part(worker: str, *commands: WriteCommand, first: int = 1) -> Part:
    return Part(worker, tuple(Write(n, c, f"req-{n}") for n, c in enumerate(commands, start=first)))


def batch_of(cut: Cut | None) -> Batch:
    assert cut is not None and cut.batch is not None, cut
    return cut.batch


# -- stamps -------------------------------------------------------------------------------


def test_a_cut_numbers_and_stamps_each_command_once_in_arrival_order() -> None:
    clock = ManualClock(T0)  # standing still: `at` still strictly increases
    seq = sequencer(clock)
    seq.accept(
        part(
            "w1",
            limit("alice", BID, 100, 1),
            SubscribeWebhooks("bob", "https://x.test/h", ("order.filled", "order.expired")),
            IssueCredentials("carol", True, True),
            CancelOrder("ord-x"),
        )
    )
    batch = batch_of(seq.cut())
    assert (batch.k, batch.after) == (1, 0)
    assert [(c.seq, c.at, c.request_id) for c in batch.commands] == [
        (1, T0, "req-1"),
        (2, T0 + 1, "req-2"),
        (3, T0 + 2, "req-3"),
        (4, T0 + 3, "req-4"),
    ]
    order, subscribe, issue, cancel = batch.commands
    placement = seq.placement
    assert order.order_id is not None and order.order_id.startswith("ord-")
    assert placement.account_shard(order.order_id) == placement.account_shard("alice")
    assert order.trade_seed == 1000
    assert len(subscribe.webhook_ids) == 2 and len(set(subscribe.webhook_ids)) == 2
    assert all(
        i.startswith("wh-") and placement.account_shard(i) == placement.account_shard("bob")
        for i in subscribe.webhook_ids
    )
    assert issue.secrets is not None
    assert issue.secrets[0].startswith("mx_") and issue.secrets[1].startswith("whsec_")
    assert (cancel.order_id, cancel.trade_seed, cancel.webhook_ids, cancel.secrets) == (
        None,
        None,
        (),
        None,
    )
    clock.advance(microseconds=10)
    seq.go()
    seq.accept(part("w1", CancelOrder("ord-y"), first=5))
    (later,) = batch_of(seq.cut()).commands
    assert (later.seq, later.at) == (5, T0 + 10)  # the clock again once it is ahead


def test_an_api_key_names_its_brokers_account_shard() -> None:
    """A worker asks the one account shard a key names whose key it is."""
    seq = sequencer(ManualClock(T0))
    brokers = [f"broker-{n}" for n in range(12)]
    seq.accept(part("w1", *(IssueCredentials(b, True, False) for b in brokers)))
    placement = seq.placement
    keys = [c.secrets[0] for c in batch_of(seq.cut()).commands if c.secrets is not None]
    assert len(set(keys)) == 12
    assert [placement.account_shard(key) for key in keys] == [
        placement.account_shard(broker) for broker in brokers
    ]


def test_a_write_sent_again_is_sequenced_once_and_answered_again() -> None:
    seq = sequencer(ManualClock(T0))
    registration = RegisterBroker("alice", 100, ())
    assert seq.accept(part("w1", registration)) == []
    assert seq.accept(part("w1", registration)) == []  # queued already
    batch = batch_of(seq.cut())
    assert len(batch.commands) == 1
    assert seq.accept(part("w1", registration)) == []  # in the shards
    assert seq.cut() is None
    answer = Balance("alice", 100, 0, (), T0, T0)
    assert seq.settled(1, [(1, answer)]) == [(Ticket("w1", 1), answer)]
    assert seq.accept(part("w1", registration)) == [(Ticket("w1", 1), answer)]
    assert seq.cut() is None  # nothing queued


# -- the order of the phases ----------------------------------------------------------------


def test_two_batches_in_flight_and_after_names_the_r2_each_r1_follows() -> None:
    seq = sequencer(ManualClock(T0))
    orders = iter(range(1, 100))

    def write() -> None:
        seq.accept(part("w1", CancelOrder("ord-x"), first=next(orders)))

    write()
    assert batch_of(seq.cut())[:2] == (1, 0)
    write()
    assert batch_of(seq.cut())[:2] == (2, 0)  # R1 of 2 before R2 of 1
    write()
    assert seq.cut() is None  # two in flight
    assert seq.go() is None  # something waits: R2 of 2 waits for the next R1
    seq.settled(1, [(1, None)])
    assert batch_of(seq.cut())[:2] == (3, 1)  # R2 of 2 after R1 of 3
    assert seq.go() == Go(3)  # nothing queued: R2 of 3 may run at once
    assert seq.go() is None
    seq.settled(2, [(2, None)])
    write()
    assert batch_of(seq.cut())[:2] == (4, 3)  # after R2 of 3, as the word said


def test_a_hold_lets_the_last_batch_settle_and_cuts_nothing_until_released() -> None:
    """A snapshot's rest: with the cuts held, the word for the last batch is given even
    though writes wait, and the state is taken only once nothing is in flight."""
    clock = ManualClock(T0)
    seq = sequencer(clock)
    seq.accept(part("w1", RegisterBroker("alice", 1_000, (("AAPL", 5),))))
    assert batch_of(seq.cut())[:2] == (1, 0)
    seq.accept(part("w1", CancelOrder("ord-x"), first=2))
    seq.hold()
    assert seq.cut() is None  # held, though a write waits
    assert seq.go() == Go(1)  # held: the last batch may settle now
    with pytest.raises(ValueError, match="in flight"):
        seq.state()
    seq.settled(1, [(1, Balance("alice", 1_000, 0, (("AAPL", 5),), T0, T0))])
    assert seq.state() == SequencerState(1, 1, T0, ("AAPL",))
    seq.release()
    cut = batch_of(seq.cut())
    assert (cut.k, cut.after, [c.seq for c in cut.commands]) == (2, 1, [2])


def test_a_sequencer_resumed_from_a_snapshot_skips_the_batches_it_covers() -> None:
    """The numbers, clock floor and listing come from the snapshot; journaled batches
    it covers (not yet forgotten) are skipped, those after it taken."""
    clock = ManualClock(T0)
    first = sequencer(clock, max_symbols=2)
    first.accept(part("w1", RegisterBroker("alice", 1_000, (("AAPL", 5),))))
    one = first.cut()
    first.go()
    first.settled(1, [(1, Balance("alice", 1_000, 0, (("AAPL", 5),), T0, T0))])
    state = first.state()
    first.accept(part("w1", limit("alice", BID, 100, 1, "MSFT"), first=2))
    two = first.cut()
    assert one is not None and two is not None
    again = sequencer(ManualClock(T0 - SECOND), max_symbols=2)  # a clock behind
    assert again.resume([one.fact, two.fact], state) == 2
    again.accept(part("w2", limit("alice", BID, 100, 1, "TSLA"), CancelOrder("ord-x")))
    cut = again.cut()
    assert cut is not None and cut.batch is not None
    assert [(c.seq, c.at) for c in cut.batch.commands] == [(3, T0 + 2)]  # the cancel
    assert [(t, e.code) for t, e in cut.refused] == [(Ticket("w2", 1), "symbol_limit_reached")]


def test_kept_answers_are_journaled_and_a_resumed_sequencer_replays_them() -> None:
    """A kept `Idempotency-Key` answer comes back as a journal fact; a sequencer resumed
    from a snapshot and the facts after it replays both the snapshot's answers and the
    journaled ones, refuses another body under a key, and keeps no refusal it must not."""
    clock = ManualClock(T0)
    first = sequencer(clock)
    digest, other = b"\x01" * 32, b"\x02" * 32
    assert isinstance(first.begin_key(("/brokers", "k-1"), digest), InFlight)
    assert first.finish_key(("/brokers", "k-1"), 201, b'{"one":1}') is not None
    state = first.state()  # holds k-1
    assert isinstance(first.begin_key(("/brokers", "k-2"), digest), InFlight)
    fact = first.finish_key(("/brokers", "k-2"), 409, b'{"two":2}')
    assert fact is not None and fact[0] == "idempotent_answer"
    assert isinstance(first.begin_key(("/brokers", "k-3"), digest), InFlight)
    assert first.finish_key(("/brokers", "k-3"), 422, b'{"bad":3}') is None  # not kept
    again = sequencer(ManualClock(T0 + SECOND))
    again.resume([fact], state)
    assert again.begin_key(("/brokers", "k-1"), digest) == StoredAnswer(
        digest, 201, b'{"one":1}', T0
    )
    assert again.begin_key(("/brokers", "k-2"), digest) == StoredAnswer(
        digest, 409, b'{"two":2}', T0
    )
    assert isinstance(again.begin_key(("/brokers", "k-3"), digest), InFlight)
    with pytest.raises(ExchangeError) as reused:
        again.begin_key(("/brokers", "k-1"), other)
    assert reused.value.code == "idempotency_key_reused"


def test_a_retry_of_a_key_whose_worker_died_gets_its_writes_outcome_to_render() -> None:
    """A keyed write travels with its key: once it is answered, a retry of a first use
    never finished (its worker died) gets the outcome, `Decided`, rather than 409 for
    ever; before that, 409 (it is in progress); the retry's answer is then kept."""
    clock = ManualClock(T0)
    seq = sequencer(clock)
    key, digest = ("/brokers", "k-1"), b"\x01" * 32
    assert isinstance(seq.begin_key(key, digest), InFlight)
    seq.accept(Part("w1", (Write(1, RegisterBroker("alice", 1_000, ()), "req-1", key),)))
    with pytest.raises(ExchangeError) as busy:
        seq.begin_key(key, digest)
    assert busy.value.code == "idempotency_key_in_progress"
    batch_of(seq.cut())
    seq.go()
    balance = Balance("alice", 1_000, 0, (), T0, T0)
    assert seq.settled(1, [(1, balance)]) == [(Ticket("w1", 1), balance)]  # to a dead worker
    clock.advance(microseconds=KEY_LEASE_US)  # no lease for a key whose write came
    assert seq.begin_key(key, digest) == Decided(balance)
    with pytest.raises(ExchangeError) as reused:
        seq.begin_key(key, b"\x02" * 32)
    assert reused.value.code == "idempotency_key_reused"
    assert seq.finish_key(key, 201, b'{"broker_id":"alice"}') is not None
    assert seq.begin_key(key, digest) == StoredAnswer(digest, 201, b'{"broker_id":"alice"}', T0)


def test_a_keys_first_use_that_sent_no_write_is_taken_over_after_a_lease() -> None:
    """Its worker died before sending anything (or refused it and died before keeping
    that): 409 until the lease ends, then a retry is the first use."""
    clock = ManualClock(T0)
    seq = sequencer(clock)
    key, digest = ("/orders", "k-2"), b"\x01" * 32
    assert seq.begin_key(key, digest) == InFlight(digest, T0)
    clock.advance(microseconds=KEY_LEASE_US - 1)
    with pytest.raises(ExchangeError) as busy:
        seq.begin_key(key, digest)
    assert busy.value.code == "idempotency_key_in_progress"
    clock.advance(microseconds=1)
    assert seq.begin_key(key, digest) == InFlight(digest, T0 + KEY_LEASE_US)


# -- the rules of the cut ---------------------------------------------------------------------


def test_a_brokers_market_bids_in_one_batch_are_on_one_symbol() -> None:
    seq = sequencer(ManualClock(T0))
    seq.accept(
        part(
            "w1",
            market("alice", BID, 1, "AAPL"),
            market("alice", BID, 1, "MSFT"),  # waits
            market("alice", BID, 2, "AAPL"),
            market("alice", ASK, 1, "MSFT"),  # an ask holds shares, not cash
            market("bob", BID, 1, "MSFT"),
        )
    )
    first = batch_of(seq.cut())
    assert [(c.command.side, c.command.symbol, c.request_id) for c in first.commands] == [  # type: ignore[union-attr]
        (BID, "AAPL", "req-1"),
        (BID, "AAPL", "req-3"),
        (ASK, "MSFT", "req-4"),
        (BID, "MSFT", "req-5"),
    ]
    (second,) = batch_of(seq.cut()).commands
    assert (second.request_id, second.seq) == ("req-2", 5)


def test_symbol_places_are_claimed_at_the_cut_and_listed_or_given_back_with_the_answers() -> None:
    seq = sequencer(ManualClock(T0), max_symbols=2)
    seq.accept(
        part(
            "w1",
            RegisterBroker("alice", 1_000, (("AAPL", 5),)),
            limit("alice", BID, 100, 1, "MSFT"),
            limit("alice", BID, 100, 1, "TSLA"),  # no place left
            market("alice", BID, 1, "IBM"),  # nor for a market order
            limit("alice", BID, 100, 1, "AAPL"),  # AAPL's place is claimed already
        )
    )
    cut = seq.cut()
    assert [(ticket.number, error.code) for ticket, error in cut.refused] == [  # type: ignore[union-attr]
        (3, "symbol_limit_reached"),
        (4, "symbol_limit_reached"),
    ]
    batch = batch_of(cut)
    assert [c.seq for c in batch.commands] == [1, 2, 3]
    seq.go()
    refusal = ExchangeError("insufficient_balance", "no")
    answers = seq.settled(1, [(1, Balance("alice", 1_000, 0, (), T0, T0)), (2, refusal), (3, None)])
    assert [ticket.number for ticket, _ in answers] == [1, 2, 5]
    assert seq.listing.listed == {"AAPL"}  # MSFT's place given back with the refusal
    seq.accept(part("w1", limit("alice", BID, 100, 1, "TSLA"), first=6))
    cut = seq.cut()
    assert cut is not None and cut.refused == () and cut.listed == ("AAPL",)
    ((ticket, again),) = seq.accept(part("w1", limit("alice", BID, 100, 1, "TSLA"), first=3))
    assert (ticket, refused(again)) == (
        Ticket("w1", 3),
        ("symbol_limit_reached", "The exchange lists at most 2 symbols"),
    )


def test_a_tick_enters_the_stream_every_interval_also_when_idle() -> None:
    clock = ManualClock(T0)
    seq = sequencer(clock, interval=INTERVAL)
    assert seq.cut() is None
    seq.accept(part("w1", CancelOrder("ord-x")))
    clock.advance(microseconds=INTERVAL)
    batch = batch_of(seq.cut())
    assert [type(c.command) for c in batch.commands] == [CancelOrder, Tick]
    assert batch.commands[1].at == T0 + INTERVAL + 1
    seq.go()
    seq.settled(1, [(1, None)])
    clock.advance(microseconds=INTERVAL - 1)
    assert seq.cut() is None
    clock.advance(microseconds=1)
    (tick,) = batch_of(seq.cut()).commands
    assert (tick.seq, tick.command, tick.at) == (3, Tick(), T0 + 2 * INTERVAL)


# -- driving real shards, every phase when a drawn schedule says ------------------------------


class Cluster:
    """The sequencer and 2 + 2 shards behind their doors in this process. Every message
    between them is in transit until `deliver` hands it over, in any order a test
    draws: as separate processes at any relative speed would receive them."""

    def __init__(self, clock: ManualClock) -> None:
        self.shards = Shards(2, 2, clock, VWAP_WINDOW, account_actors=2)
        self.sequencer = sequencer(clock, self.shards.placement)
        self.accounts = [AccountDoor(shard) for shard in self.shards.accounts]
        self.symbols = [SymbolDoor(shard) for shard in self.shards.symbols]
        self.transit: list[tuple[AccountDoor | SymbolDoor, object]] = []
        self.batches: list[Batch] = []
        self.r2_answers: dict[int, list[list[Answer]]] = {}  # k -> the accounts' answers
        self.answers: dict[Ticket, Any] = {}
        self.sent = 0

    def send(self, *commands: WriteCommand) -> list[int]:
        numbers = list(range(self.sent + 1, self.sent + 1 + len(commands)))
        self.sent += len(commands)
        writes = tuple(Write(n, c) for n, c in zip(numbers, commands, strict=True))
        assert self.sequencer.accept(Part("w", writes)) == []
        return numbers

    def cut(self) -> bool:
        cut = self.sequencer.cut()
        if cut is None:
            return False
        self.give(cut.refused)
        if cut.batch is not None:
            self.batches.append(cut.batch)
            self.transit.extend((door, cut.batch) for door in self.accounts)
        return True

    def go(self) -> bool:
        go = self.sequencer.go()
        if go is not None:
            self.transit.extend((door, go) for door in self.accounts)
        return go is not None

    def deliver(self, index: int = 0) -> bool:
        """Hand over one message in transit (the oldest by default), and run its door."""
        if not self.transit:
            return False
        door, message = self.transit.pop(index % len(self.transit))
        if isinstance(door, SymbolDoor):
            door.take_match_part(message)  # type: ignore[arg-type]
            for _, parts in door.run():
                self.transit.extend(zip(self.accounts, parts, strict=True))
            return True
        if type(message) is Batch:
            door.take_batch(message)
        elif type(message) is Go:
            door.take_go(message)
        else:
            door.take_settle_part(message)  # type: ignore[arg-type]
        for sent in door.run():
            if isinstance(sent, Matched):
                self.transit.extend(zip(self.symbols, sent.parts, strict=True))
                continue
            answers = self.r2_answers.setdefault(sent.k, [])
            answers.append(sent.answers)
            if len(answers) == len(self.accounts):
                self.give(self.sequencer.settled(sent.k, [a for s in answers for a in s]))
        return True

    def give(self, answers: Any) -> None:
        for ticket, answer in answers:
            assert ticket not in self.answers, ticket
            self.answers[ticket] = answer

    def drain(self) -> None:
        """Every message delivered, words included, until all is answered."""
        while self.cut() or self.deliver() or self.go():
            pass


VWAP_WINDOW = 3_000_000


@st.composite
def writes(draw: st.DrawFn, answered: list[str]) -> WriteCommand:
    broker = draw(st.sampled_from(BROKERS))
    symbol = draw(st.sampled_from(("AAPL", "MSFT")))
    side = draw(st.sampled_from((BID, ASK)))
    quantity = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(("limit", "limit", "market", "cancel")))
    if kind == "cancel" and answered:
        return CancelOrder(draw(st.sampled_from(answered)))
    if kind == "market":
        return market(broker, side, quantity, symbol)
    return limit(broker, side, draw(st.integers(98, 102)), quantity, symbol)


BROKERS = ("seller", "buyer", "bob", "alice")


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(st.data())
def test_any_relative_speed_of_the_shards_runs_the_phases_the_journaled_batches_order(
    data: st.DataObject,
) -> None:
    """Writes arrive between phases run in a drawn order; no phase is ever refused, every
    write is answered once, and the batches the sequencer cut, replayed through fresh
    shards in the order their `after` records, give the same answers and state."""
    clock, replay_clock = ManualClock(T0), ManualClock(T0)
    cluster = Cluster(clock)
    replay = Shards(2, 2, replay_clock, VWAP_WINDOW, account_actors=2)
    try:  # a failing example must not leave threads behind
        run_and_replay(data, clock, cluster, replay, replay_clock)
    finally:
        cluster.shards.stop()
        replay.stop()


def run_and_replay(
    data: st.DataObject,
    clock: ManualClock,
    cluster: Cluster,
    replay: Shards,
    replay_clock: ManualClock,
) -> None:
    cluster.send(*(RegisterBroker(b, 1_000, (("AAPL", 10), ("MSFT", 10))) for b in BROKERS))
    cluster.drain()
    order_ids: list[str] = []
    for _ in range(data.draw(st.integers(5, 60))):
        action = data.draw(st.sampled_from(("send", "cut", "go", "deliver", "deliver")))
        if action == "send":
            cluster.send(*data.draw(st.lists(writes(order_ids), min_size=1, max_size=3)))
        elif action == "deliver":
            cluster.deliver(data.draw(st.integers(0, 50)))
        else:
            getattr(cluster, action)()
        clock.advance(microseconds=1_000)
        order_ids[:] = [a.order_id for a in cluster.answers.values() if isinstance(a, Order)]
    cluster.drain()
    assert sorted(cluster.answers) == [Ticket("w", n) for n in range(1, cluster.sent + 1)]
    replay_clock.set(clock.now())  # the reads' time, in both
    sent = replay.drive(cluster.batches)
    assert comparable_answers(sent.answers) == comparable_answers(
        {
            seq: answer
            for k in cluster.r2_answers
            for shard in cluster.r2_answers[k]
            for seq, answer in shard
        }
    )
    assert observe_shards(replay, BROKERS, ("AAPL", "MSFT")) == observe_shards(
        cluster.shards, BROKERS, ("AAPL", "MSFT")
    )
    cash = sum(cluster.shards.account(b).balance(b).cash_balance for b in BROKERS)
    assert cash == 4_000


def comparable_answers(answers: dict[int, Any]) -> dict[int, Any]:
    return {seq: comparable(answer) for seq, answer in sorted(answers.items())}


def test_a_sequential_market_order_fills_against_the_book_through_the_sequencer() -> None:
    cluster = Cluster(ManualClock(T0))
    cluster.send(RegisterBroker("seller", 0, (("AAPL", 10),)), RegisterBroker("buyer", 10_000, ()))
    cluster.drain()
    (ask,) = cluster.send(limit("seller", ASK, 1_000, 3))
    cluster.drain()
    (bid,) = cluster.send(market("buyer", BID, 2))
    cluster.drain()
    resting, filled = cluster.answers[Ticket("w", ask)], cluster.answers[Ticket("w", bid)]
    assert (resting.status, filled.status, filled.filled_value) == (PENDING, FILLED, 2_000)
    balance = cluster.shards.account("buyer").balance("buyer")
    assert (balance.cash_balance, balance.reserved_cash) == (8_000, 0)
    assert [b.after for b in cluster.batches] == [0, 1, 2]  # each settled on the word


def test_a_batch_cut_after_the_word_follows_the_r2_a_shard_may_have_run_on_it() -> None:
    """Batch 1 settled in account shard 0 on the sequencer's word, not yet in shard 1
    (not seen settled by the sequencer): batch 2, cut now, must say `after = 1`, which
    shard 0 has run and shard 1 will run first."""
    cluster = Cluster(ManualClock(T0))
    cluster.send(RegisterBroker("seller", 0, (("AAPL", 10),)))  # account shard 0
    assert cluster.cut()
    for _ in range(6):  # the batch to both account shards, then R1's parts to both symbols
        assert cluster.deliver()
    assert cluster.go()
    first = cluster.accounts[0]
    while any(door is first for door, _ in cluster.transit):  # ME's parts and the word
        cluster.deliver(next(i for i, (door, _) in enumerate(cluster.transit) if door is first))
    assert first.shard.settled_through == 1
    assert cluster.accounts[1].shard.settled_through == 0
    assert cluster.sequencer.in_flight == 1
    cluster.send(RegisterBroker("buyer", 5, ()))  # account shard 1
    assert cluster.cut()
    assert cluster.batches[-1][:2] == (2, 1)
    cluster.drain()
    assert sorted(cluster.answers) == [Ticket("w", 1), Ticket("w", 2)]
    assert cluster.shards.account("buyer").balance("buyer").cash_balance == 5


# -- the command journal ----------------------------------------------------------------------


def test_a_restarted_sequencer_recognises_the_writes_it_journaled_when_sent_again(
    tmp_path: Path,
) -> None:
    """A worker whose call failed with the sequencer sends its writes again: those the
    journal holds are not sequenced twice but answered with what the replay gives them;
    a key's first use among them is in flight again, and a retry under it gets that
    answer to render (`Decided`), another body under it 422."""
    path = str(tmp_path / "commands.db")
    clock = ManualClock(T0)
    first = sequencer(clock)
    journal = SqliteJournal(path, engine="ray")
    journal.start()
    key, digest = ("/orders", "k-1"), b"\x01" * 32
    assert isinstance(first.begin_key(key, digest), InFlight)
    order = limit("alice", BID, 100, 1)
    first.accept(Part("w1", (Write(1, order, "req-1", key), Write(2, CancelOrder("ord-x")))))
    cut = first.cut()
    assert cut is not None and cut.batch is not None
    assert cut.tickets == (
        Sent(1, Ticket("w1", 1), key, digest),
        Sent(2, Ticket("w1", 2)),
    )
    durable: list[BaseException | None] = []
    journal.append([cut.fact], durable.append)
    journal.close()
    assert durable == [None]  # then the sequencer died, its batch unanswered

    reopened = SqliteJournal(path, engine="ray")
    again = sequencer(ManualClock(T0 + SECOND))
    assert again.resume(reopened.facts()) == 1
    reopened.close()
    resent = Part("w1", (Write(1, order, "req-1", key), Write(2, CancelOrder("ord-x"))))
    assert again.accept(resent) == []  # recognised: waits for the replay's answers
    assert again.cut() is None  # nothing sequenced twice
    with pytest.raises(ExchangeError) as busy:
        again.begin_key(key, digest)
    assert busy.value.code == "idempotency_key_in_progress"
    accepted = "the order, as the replay's R2 answers it"  # opaque to the sequencer
    not_found = ExchangeError("order_not_found", "Order ord-x not found")
    given = [(Ticket("w1", 1), accepted), (Ticket("w1", 2), not_found)]
    assert again.replayed([(1, accepted), (2, not_found)]) == given
    assert again.accept(resent) == given
    assert again.begin_key(key, digest) == Decided(accepted)
    with pytest.raises(ExchangeError) as reused:
        again.begin_key(key, b"\x02" * 32)
    assert reused.value.code == "idempotency_key_reused"


def test_a_restarted_sequencer_goes_on_from_its_journal(tmp_path: Path) -> None:
    """Batches journaled (a real file, the Ray engine's mark) and read back equal; a new
    sequencer over them goes on numbering, never stamps earlier than the last `at` even
    on a clock that is behind, and keeps the listing's limit."""
    path = str(tmp_path / "commands.db")
    clock = ManualClock(T0)
    first = sequencer(clock, max_symbols=2)
    journal = SqliteJournal(path, engine="ray")
    journal.start()
    durable: list[BaseException | None] = []
    first.accept(part("w1", RegisterBroker("alice", 1_000, (("AAPL", 5),))))
    one = first.cut()
    assert one is not None and one.batch is not None
    journal.append([one.fact], durable.append)
    first.go()
    first.settled(1, [(1, Balance("alice", 1_000, 0, (("AAPL", 5),), T0, T0))])
    clock.advance(microseconds=5)
    first.accept(part("w1", limit("alice", BID, 100, 1, "MSFT"), first=2))
    two = first.cut()
    assert two is not None and two.batch is not None and two.listed == ("AAPL",)
    journal.append([two.fact], durable.append)
    journal.close()
    assert durable == [None, None]

    reopened = SqliteJournal(path, engine="ray")
    assert list(journaled(reopened.facts())) == [
        (one.batch, (), 0, (Sent(1, Ticket("w1", 1)),)),
        (two.batch, ("AAPL",), 1, (Sent(2, Ticket("w1", 2)),)),
    ]
    behind = ManualClock(T0)
    again = sequencer(behind, max_symbols=2)
    assert again.resume(reopened.facts()) == 2
    reopened.close()
    again.accept(part("w2", limit("alice", BID, 100, 1, "TSLA"), CancelOrder("ord-x")))
    cut = again.cut()
    assert cut is not None and cut.batch is not None
    assert [(c.seq, c.at) for c in cut.batch.commands] == [(3, T0 + 6)]  # the cancel
    assert (cut.batch.k, cut.batch.after) == (3, 2)
    # AAPL listed; batch 2's answer unknown, so its MSFT keeps its place: none for TSLA
    assert [(t, e.code) for t, e in cut.refused] == [(Ticket("w2", 1), "symbol_limit_reached")]


def test_a_command_journal_with_anything_but_batches_is_refused_with_one_line() -> None:
    with pytest.raises(JournalFormatError, match="a fact of kind 'order_accepted'"):
        list(journaled([("order_accepted", b"{}")]))
    with pytest.raises(JournalFormatError, match="a damaged batch in a command journal"):
        list(journaled([("commands", b'{"batch": {"format": 9}, "listed": []}')]))
    kind, body = Cut(BATCH, (), ()).fact
    with pytest.raises(JournalFormatError, match="its listing"):
        list(journaled([(kind, body.replace(b'"listed":[]', b'"listed":[1]'))]))
    with pytest.raises(JournalFormatError, match="its listing"):
        list(journaled([(kind, body.replace(b'"settled":0', b'"settled":0.5'))]))
    with pytest.raises(JournalFormatError, match="a damaged batch in a command journal"):
        list(journaled([(kind, body.replace(b'"tickets":[]', b'"tickets":[[1,"w"]]'))]))
    assert list(journaled([(COMMANDS, body)])) == [(BATCH, (), 0, ())]


def test_a_message_delivered_twice_is_taken_once() -> None:
    """A sender's call repeated after a failure: each door takes a batch, a word or a
    part once, whenever the copy comes."""
    cluster = Cluster(ManualClock(T0))
    cluster.send(RegisterBroker("seller", 0, (("AAPL", 10),)), RegisterBroker("buyer", 5_000, ()))
    cluster.drain()
    cluster.send(limit("seller", ASK, 1_000, 3), market("buyer", BID, 2))
    assert cluster.cut() and cluster.go()
    copied: set[int] = set()
    while cluster.transit:
        door, message = cluster.transit[0]
        if id(message) not in copied:
            copied.add(id(message))
            cluster.transit.append((door, message))  # again, after everything sent so far
        cluster.deliver(0)
    ask, bid = cluster.answers[Ticket("w", 3)], cluster.answers[Ticket("w", 4)]
    assert (ask.status, bid.status, bid.filled_value) == (PENDING, FILLED, 2_000)
    balance = cluster.shards.account("buyer").balance("buyer")
    assert (balance.cash_balance, balance.reserved_cash, balance.holdings[0].quantity) == (
        3_000,
        0,
        2,
    )


def test_doors_around_shards_started_from_snapshots_go_on_from_where_they_were() -> None:
    """A door runs its shard's next phase, whatever batch the shard had reached."""
    clock = ManualClock(T0)
    cluster = Cluster(clock)
    cluster.send(RegisterBroker("seller", 0, (("AAPL", 10),)), RegisterBroker("buyer", 5_000, ()))
    cluster.send(limit("seller", ASK, 1_000, 3))
    cluster.drain()
    accounts = [
        AccountShard.from_snapshot(door.shard.snapshot(), cluster.shards.deliveries.submit, 2)
        for door in cluster.accounts
    ]
    symbols = [
        SymbolShard.from_snapshot(door.shard.snapshot(), clock, VWAP_WINDOW)
        for door in cluster.symbols
    ]
    cluster.shards.stop()
    cluster.accounts = [AccountDoor(shard) for shard in accounts]
    cluster.symbols = [SymbolDoor(shard) for shard in symbols]
    assert [shard.matched_through for shard in (*accounts, *symbols)] == [1, 1, 1, 1]
    (bid,) = cluster.send(market("buyer", BID, 2))
    cluster.drain()
    filled = cluster.answers[Ticket("w", bid)]
    assert (filled.status, filled.filled_value) == (FILLED, 2_000)
    buyer = accounts[cluster.shards.placement.account_shard("buyer")].balance("buyer")
    assert (buyer.cash_balance, buyer.reserved_cash) == (3_000, 0)
