"""The one injectable clock: integer microseconds since the Unix epoch, UTC."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> int:
        """Microseconds since the epoch; never less than an earlier reading."""
        ...

    def not_before(self, floor_us: int) -> None:
        """From now on, never read earlier than `floor_us`."""
        ...


class SystemClock:
    """The wall clock, clamped so that it never goes backwards.

    A wall-clock step back (NTP) must not break `created_at <= executed_at` or the
    time priority of the book, so a reading is never earlier than the previous one.
    """

    __slots__ = ("_last", "_lock")

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def not_before(self, floor_us: int) -> None:
        """Never read earlier than `floor_us` (the latest time in the journal), so that
        a restart onto a wall clock that is behind keeps time priority and
        `created_at <= executed_at` across the restart."""
        with self._lock:
            self._last = max(self._last, floor_us)

    def now(self) -> int:
        reading = time.time_ns() // 1000
        with self._lock:
            if reading < self._last:
                return self._last
            self._last = reading
            return reading
