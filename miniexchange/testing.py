"""Test doubles for developers who test an actor alone: a manual clock, predictable ids,
a recording fake account actor, a reply collector, and a recording stand-in for the
webhook delivery pool.

    clock = ManualClock.at("2026-02-17T09:00:00Z")
    accounts = FakeAccountActor.start(brokers={"buyer"})
    ...
    clock.advance(seconds=1)

Everything here is real code used by this project's own tests (`tests/actors`).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pykka

from miniexchange.actors.messages import Apply, Hold, Recheck, Tick
from miniexchange.journal.facts import Fact
from miniexchange.journal.recovery import Recovered
from miniexchange.journal.store import Durable, Journal
from miniexchange.model.errors import ExchangeError, broker_not_found
from miniexchange.model.ledger import Balance, LedgerChange, Released, Settled, SettlementLeg
from miniexchange.webhooks.delivery import Delivery

__all__ = [
    "Accept",
    "FakeAccountActor",
    "FakeDeliveries",
    "ManualClock",
    "RecordingJournal",
    "Release",
    "Replies",
    "ReserveCash",
    "ReserveShares",
    "SequentialIds",
    "Settle",
    "WithholdingJournal",
    "child_pids",
    "read_balance",
    "run_expiration",
    "stop_all_actors",
]


class ManualClock:
    """A clock that moves only when told to; thread-safe, never goes backwards."""

    def __init__(self, now_us: int) -> None:
        self._now = now_us
        self._lock = threading.Lock()

    @classmethod
    def at(cls, iso: str) -> ManualClock:
        """A clock showing an ISO 8601 instant with an offset, e.g. `2026-02-17T09:00:00Z`."""
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return cls((moment - epoch) // _ONE_MICROSECOND)

    def now(self) -> int:
        with self._lock:
            return self._now

    def advance(self, *, seconds: float = 0, microseconds: int = 0) -> int:
        """Move forward; returns the new reading."""
        if seconds < 0 or microseconds < 0:
            raise ValueError("a clock never goes backwards")
        with self._lock:
            self._now += round(seconds * 1_000_000) + microseconds
            return self._now

    def not_before(self, floor_us: int) -> None:
        with self._lock:
            self._now = max(self._now, floor_us)

    def set(self, now_us: int) -> None:
        with self._lock:
            if now_us < self._now:
                raise ValueError("a clock never goes backwards")
            self._now = now_us


_ONE_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


class SequentialIds:
    """Ids in the production shape whose order is the order of creation.

    `ord-00000000-0000-4000-8000-000000000001`, ... so tests can predict them and the
    book's `order_id` tie-break follows creation order.
    """

    def __init__(self) -> None:
        # `next()` of an `itertools.count` is one C call: atomic under the GIL, so
        # symbol actors on several threads never get the same number.
        self._counter = itertools.count(1)

    def _next(self, prefix: str) -> str:
        return f"{prefix}-00000000-0000-4000-8000-{next(self._counter):012d}"

    def order_id(self) -> str:
        return self._next("ord")

    def trade_id(self) -> str:
        return self._next("trd")

    def webhook_id(self) -> str:
        return self._next("wh")


class Replies:
    """A `reply` callback that a test can wait on: `replies.get()` returns the next answer."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()

    def __call__(self, value: Any) -> None:
        self._queue.put(value)

    def get(self, timeout: float = 5.0) -> Any:
        return self._queue.get(timeout=timeout)


# -- what a symbol actor asked of and told a broker's account actor, as
# `FakeAccountActor` records it. `at` is the time of the symbol actor's step that made
# the change (None: no time, a hold); it takes no part in equality: a test states it apart.


@dataclass(frozen=True, slots=True)
class ReserveCash:
    """A market bid's hold of its sweep cost (`Hold`, asked)."""

    amount: int
    at: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ReserveShares:
    """A market ask's hold of its shares (`Hold`, asked)."""

    symbol: str
    quantity: int
    at: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Accept:
    """The broker's order was accepted (`Accepted`, told)."""

    at: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Release:
    cash: int = 0
    symbol: str = ""
    quantity: int = 0
    at: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Settle:
    symbol: str
    legs: tuple[SettlementLeg, ...]
    at: int | None = field(default=None, compare=False)


AccountRecord = ReserveCash | ReserveShares | Accept | Release | Settle


class FakeAccountActor(pykka.ThreadingActor):
    """Stands in for the account actors beside a `SymbolActor` under test: answers
    `Hold` asks as told (brokers in `refusing` lack the funds, unknown ones do not
    exist) and records, per broker and in order, every hold asked and every change told,
    so a test can assert exactly what the symbol actor decided. `Recheck`s (orders sent
    back after `ExpireThenCheck`) are kept in `rechecked`.

        accounts = FakeAccountActor.start(brokers={"buyer", "seller"})
        context = SymbolContext(..., accounts=lambda broker_id: accounts)
        ...
        accounts.proxy().recorded("buyer").get()
    """

    def __init__(self, brokers: Iterable[str] = (), refusing: Iterable[str] = ()) -> None:
        super().__init__()
        self.brokers = set(brokers)
        self.refusing = set(refusing)
        self.changes: dict[str, list[AccountRecord]] = {}
        self.rechecked: list[Recheck] = []

    def add_broker(self, broker_id: str, reserve: bool = True) -> None:
        self.brokers.add(broker_id)
        if not reserve:
            self.refusing.add(broker_id)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Hold):
            if message.broker_id not in self.brokers:
                raise broker_not_found(message.broker_id)
            if message.cash:
                self._record(message.broker_id, ReserveCash(message.cash))
            else:
                self._record(message.broker_id, ReserveShares(message.symbol, message.quantity))
            return message.broker_id not in self.refusing
        if isinstance(message, Apply):
            for change in message.changes:
                self._record(change.broker_id, _as_record(change))
        elif isinstance(message, Recheck):
            self.rechecked.append(message)
        return None

    def _record(self, broker_id: str, record: AccountRecord) -> None:
        self.changes.setdefault(broker_id, []).append(record)

    def recorded(self, broker_id: str) -> list[AccountRecord]:
        return list(self.changes.get(broker_id, ()))


def _as_record(change: LedgerChange) -> AccountRecord:
    if isinstance(change, Settled):
        return Settle(change.symbol, change.legs, change.at)
    if isinstance(change, Released):
        return Release(
            change.cash, change.symbol if change.quantity else "", change.quantity, change.at
        )
    return Accept(change.at)


class RecordingJournal:
    """A journal for actor tests: durable at once (no disk), keeping every fact in
    append order; it starts from `recorded` (what an earlier exchange journaled), and
    `facts()` replays them as recovery reads a real journal."""

    keeps_facts = True

    def __init__(self, recorded: Iterable[Fact] = ()) -> None:
        self.recorded: list[Fact] = list(recorded)
        self._lock = threading.Lock()

    def append(self, new: Sequence[Fact], done: Durable) -> None:
        with self._lock:
            self.recorded.extend(new)
        done(None)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def facts(self) -> Iterator[Fact]:
        with self._lock:
            return iter(list(self.recorded))

    def history(self) -> tuple[Recovered | None, Iterator[Fact]]:
        return None, self.facts()


class FakeDeliveries:
    """Stands in for the delivery pool: records every delivery handed over, sends none.

    Give `submit` to a `WebhookDispatcherActor` (or the object to an `Exchange` as
    `deliveries`); `get()` waits for the next delivery, `recorded()` lists them all.
    """

    def __init__(self) -> None:
        self._recorded: list[Delivery] = []
        self._queue: queue.Queue[Delivery] = queue.Queue()
        self._lock = threading.Lock()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def submit(self, delivery: Delivery) -> None:
        with self._lock:
            self._recorded.append(delivery)
        self._queue.put(delivery)

    def get(self, timeout: float = 5.0) -> Delivery:
        return self._queue.get(timeout=timeout)

    def recorded(self) -> list[Delivery]:
        with self._lock:
            return list(self._recorded)


def read_balance(exchange: Any, broker_id: str, timeout: float = 5.0) -> Balance | None:
    """A broker's balance, read through its account actor like `GET .../balance`
    (None: not registered)."""
    replies = Replies()
    exchange.read_balance(broker_id, replies)
    answer = replies.get(timeout)
    if isinstance(answer, ExchangeError) and answer.code == "broker_not_found":
        return None
    if isinstance(answer, BaseException):
        raise answer
    return answer


def stop_all_actors() -> None:
    """Stop every actor of the process (a test fixture's teardown)."""
    pykka.ActorRegistry.stop_all()


def run_expiration(exchange: Any) -> list[str]:
    """One expiration sweep of an `Exchange`, waited for: tick its clock actor, then
    let every symbol actor it woke finish. Returns the symbols that were due."""
    due: list[str] = exchange.clock_actor.ask(Tick())
    for symbol in due:
        actor = exchange.existing_symbol_actor(symbol)
        if actor is not None:
            actor.proxy().symbol.get()  # queued behind ExpireDue, so answered after it
    return due


def child_pids(pid: int) -> list[int]:
    """The pids of a process' children: a gunicorn master's workers, for the end-to-end
    tests and the benchmarks that start a real server."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(child) for child in text.split()]
    except OSError:  # no CONFIG_PROC_CHILDREN: scan /proc for the parent pid
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
        return found


def descendant_pids(pid: int) -> list[int]:
    """Every process below `pid`: `make run-ray`'s head, hosts and gunicorn workers."""
    found, todo = [], [pid]
    while todo:
        children = child_pids(todo.pop())
        found += children
        todo += children
    return found


# -- a commit that never comes ----------------------------------------------------------


class WithholdingJournal:
    """Wraps a real journal and withholds one append: the first whose facts match
    `withhold`. Those facts never reach the inner journal and their `done` is never
    called, as if the process died before that commit; every other append is
    forwarded unchanged (one made after another returned also reaches the inner journal
    after it). So a test can ask what became
    visible or durable while that fact was still uncommitted (causal durability: on a
    correct exchange, nothing that rests on it).

        journal = WithholdingJournal(SqliteJournal(path), withhold=lambda facts: ...)
        ...
        assert journal.withheld.wait(timeout=30)

    Thread-safe: any number of actors may append at once; exactly one append is
    withheld.
    """

    def __init__(self, inner: Journal, withhold: Callable[[Sequence[Fact]], bool]) -> None:
        self.inner = inner
        self._withhold = withhold
        self._lock = threading.Lock()
        self.withheld = threading.Event()
        """Set once the matching append has been made (and withheld)."""
        self.withheld_facts: tuple[Fact, ...] = ()

    @property
    def keeps_facts(self) -> bool:
        """As the inner journal: the predicate only sees facts a keeping journal gets."""
        return self.inner.keeps_facts

    def append(self, facts: Sequence[Fact], done: Durable) -> None:
        with self._lock:  # decide under the lock; forward outside (`done` may re-enter)
            hold = not self.withheld.is_set() and self._withhold(facts)
            if hold:
                self.withheld_facts = tuple(facts)
                self.withheld.set()
        if not hold:
            self.inner.append(facts, done)

    def start(self) -> None:
        self.inner.start()

    def close(self) -> None:
        """Close the inner journal; the withheld append stays unanswered."""
        self.inner.close()

    def facts(self) -> Iterator[tuple[str, bytes]]:
        return self.inner.facts()

    def history(self) -> tuple[Recovered | None, Iterator[tuple[str, bytes]]]:
        return self.inner.history()


# -- counting the work a read does --------------------------------------------------------


class CountingDict(dict[str, Any]):
    """A dict that counts the entries read (`reads`): put in place of an index's dict,
    it tells how much of it a request visits, whatever the machine's speed."""

    reads = 0

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)
