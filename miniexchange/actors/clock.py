"""ClockActor: triggers expirations every `EXPIRATION_INTERVAL` (an order past its
`expires_at` expires at the next sweep, or before any request touches its book).

Symbol actors announce their earliest `expires_at`; the clock actor keeps a heap of
(due time, symbol) and on each tick sends `ExpireDue` only to the symbols that are
due, so a sweep costs in proportion to what is due, never to the number of books.
Stale heap entries (a symbol announced a new time since) are skipped when popped.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
from collections.abc import Callable

import pykka

from miniexchange.actors.base import ExchangeActor
from miniexchange.actors.messages import ExpireDue, NextExpiry, Tick
from miniexchange.clock import Clock


class ClockActor(ExchangeActor):
    def __init__(self, clock: Clock, symbols: Callable[[str], pykka.ActorRef | None]) -> None:
        super().__init__()
        self.clock = clock
        self.symbols = symbols
        self._due: list[tuple[int, str]] = []
        self._announced: dict[str, int] = {}

    def _next_expiry(self, message: NextExpiry) -> None:
        if message.at is None:
            self._announced.pop(message.symbol, None)
            return
        self._announced[message.symbol] = message.at
        heapq.heappush(self._due, (message.at, message.symbol))

    def _tick(self, message: Tick) -> list[str]:
        """Send `ExpireDue` to every symbol due at the tick's time; returns their names
        (for tests)."""
        now = self.clock.now() if message.at is None else message.at
        due = self._due
        sent = []
        while due and due[0][0] <= now:
            at, symbol = heapq.heappop(due)
            if self._announced.get(symbol) != at:
                continue  # superseded by a later announcement
            del self._announced[symbol]
            actor = self.symbols(symbol)
            if actor is not None:
                with contextlib.suppress(pykka.ActorDeadError):  # stopping
                    actor.tell(ExpireDue(message.at))
                sent.append(symbol)
        return sent

    handlers = {NextExpiry: _next_expiry, Tick: _tick}  # noqa: RUF012


class Ticker:
    """A daemon thread that sends `Tick` to the clock actor every interval."""

    def __init__(self, clock_actor: pykka.ActorRef, interval_s: float) -> None:
        self._clock_actor = clock_actor
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="expiration-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            try:
                self._clock_actor.tell(Tick())
            except pykka.ActorDeadError:
                return
