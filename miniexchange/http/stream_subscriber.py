"""One open event stream: what it has not sent yet, and how it ends.

A subscriber keeps only the latest book (an older one is overwritten, never queued) and
at most `MAX_UNSENT_TRADES` unsent trade events; past that its stream is closed and the
reader reconnects to a fresh book. Nothing here waits for a reader.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from miniexchange.http.sse import PING

PING_INTERVAL_S = 15.0
MAX_UNSENT_TRADES = 1000
ABORT_GRACE_S = 0.5
"""After the server ends a stream, how long its last write may take before the request
is cancelled: a reader that stopped reading never lets that write complete."""


class Subscriber:
    """One open stream: the latest unsent book, the unsent trades, and how it ends."""

    __slots__ = (
        "_book",
        "_book_seq",
        "_ping_due",
        "_ping_handle",
        "_task",
        "_trades",
        "_unsent",
        "_wake",
        "aborted",
        "closed",
        "counted",
        "ended",
        "path",
        "reason",
        "started",
        "symbol",
        "writing",
    )

    def __init__(self, symbol: str, path: str) -> None:
        self.symbol = symbol
        self.path = path
        self.started = time.monotonic()
        self.closed = False  # no more events: the generator ends at its next step
        self.ended = False  # left the hub and logged (once)
        self.counted = False  # among the hub's open streams
        self.reason = "client"
        self.writing = False  # a chunk was handed to the server and its write is pending
        self.aborted = False  # its request was cancelled (read by `guard_stream`)
        self._book: bytes | None = None
        self._book_seq = -1
        self._trades: list[bytes] = []
        self._unsent = 0
        self._wake = asyncio.Event()
        self._ping_due = False
        self._ping_handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None

    # -- offers from the fan-out (on the event loop) --------------------------------

    def offer_book(self, seq: int, event: bytes) -> None:
        """Replace the unsent book, unless this one is older (reads answer in order)."""
        if self.closed or seq <= self._book_seq:
            return
        self._book_seq = seq
        self._book = event
        self._wake.set()

    def offer_trades(self, events: bytes, count: int) -> None:
        """Queue `count` trade events; past `MAX_UNSENT_TRADES` unsent the stream ends."""
        if self.closed:
            return
        self._unsent += count
        if self._unsent > MAX_UNSENT_TRADES:
            self.close("overflow")
            return
        self._trades.append(events)
        self._wake.set()

    def start_pings(self) -> None:
        self._ping_handle = asyncio.get_running_loop().call_later(PING_INTERVAL_S, self._ping)

    def stop_pings(self) -> None:
        if self._ping_handle is not None:
            self._ping_handle.cancel()

    def _ping(self) -> None:
        self._ping_due = True
        self._wake.set()
        self.start_pings()

    # -- the generator's side -------------------------------------------------------

    def next_chunk(self, first: bool = False) -> bytes | None:
        """What to write next, or None: the trades, then the latest book (which may
        already include them), then a ping. The first chunk starts with the book."""
        if self.closed:
            return None
        parts = self._trades
        self._trades = []
        self._unsent = 0
        if self._book is not None:
            if first:
                parts.insert(0, self._book)
            else:
                parts.append(self._book)
            self._book = None
        if self._ping_due:
            parts.append(PING)
            self._ping_due = False
        if not parts:
            self._wake.clear()
            return None
        return b"".join(parts)

    async def wait(self) -> None:
        await self._wake.wait()

    # -- ending ---------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """End the stream. A write that the reader does not take (it stopped reading)
        would never complete, so the request is cancelled: at once if a write is
        pending now, else if the final write is still pending after `ABORT_GRACE_S`."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        self._wake.set()
        if reason == "client":
            return  # the server has nothing left to write to a disconnected reader
        if self.writing:
            self.abort()
        else:  # the generator ends now; its final write may still be stuck
            asyncio.get_running_loop().call_later(ABORT_GRACE_S, self.abort)

    def abort(self) -> None:
        task = self._task
        if task is not None and not task.done():
            self.aborted = True
            task.cancel()
