"""Test doubles for developers who test an actor alone: a manual clock, predictable ids,
a recording fake broker account, a reply collector, and a recording stand-in for the
webhook delivery pool.

    clock = ManualClock.at("2026-02-17T09:00:00Z")
    broker = FakeBrokerAccount(reserve=True)
    ...
    clock.advance(seconds=1)

Everything here is real code used by this project's own tests (`tests/actors`).
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pykka

from miniexchange.actors.messages import Tick
from miniexchange.model.ledger import SettlementLeg
from miniexchange.webhooks.delivery import Delivery

__all__ = [
    "FakeBrokerAccount",
    "FakeDeliveries",
    "ManualClock",
    "Release",
    "Replies",
    "ReserveCash",
    "ReserveShares",
    "SequentialIds",
    "Settle",
    "child_pids",
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


# -- what a symbol actor did to a broker's account, as `FakeBrokerAccount` records it --
#
# `at` is the time of the symbol actor's step that made the change (see
# `actors.accounts`). It takes no part in equality: a test states it apart.


@dataclass(frozen=True, slots=True)
class ReserveCash:
    amount: int
    at: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ReserveShares:
    symbol: str
    quantity: int
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


class FakeBrokerAccount:
    """Stands in for a `BrokerAccount`: answers reservations as told and records every
    change asked of it, in order, so a test can assert exactly which reservations,
    settlements and releases a symbol actor made."""

    def __init__(self, reserve: bool = True) -> None:
        self.reserve = reserve
        self.changes: list[ReserveCash | ReserveShares | Release | Settle] = []
        self._lock = threading.Lock()

    def _record(self, change: ReserveCash | ReserveShares | Release | Settle) -> None:
        with self._lock:
            self.changes.append(change)

    def reserve_cash(self, amount: int, at: int) -> bool:
        self._record(ReserveCash(amount, at))
        return self.reserve

    def reserve_shares(self, symbol: str, quantity: int, at: int) -> bool:
        self._record(ReserveShares(symbol, quantity, at))
        return self.reserve

    def release(self, cash: int, symbol: str, quantity: int, at: int) -> None:
        self._record(Release(cash, symbol, quantity, at))

    def settle(self, symbol: str, legs: tuple[SettlementLeg, ...], at: int) -> None:
        self._record(Settle(symbol, legs, at))

    def recorded(self) -> list[ReserveCash | ReserveShares | Release | Settle]:
        """The changes so far (the symbol actor makes them before it answers)."""
        with self._lock:
            return list(self.changes)


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
