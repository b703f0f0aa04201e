"""Every open event stream of the app: admission, the streams' bodies, and shutdown.

At most `max_streams` streams are open at once (`StreamHub.admit`); a stream counts
from its request until that request's task ends, however it ends. `StreamHub.start`
chains onto SIGTERM/SIGINT so that open streams close at once, before the server
waits for in-flight requests (streams are not in-flight requests). Each stream is
logged once, when it ends, with its duration.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

from miniexchange.actors.seam import Engine, EngineStopped
from miniexchange.http.render import book_json
from miniexchange.http.sse import Chunk, sse
from miniexchange.http.stream_fanout import SymbolFanout
from miniexchange.http.stream_subscriber import Subscriber

log = logging.getLogger("miniexchange.http")

ROUTE = "/stocks/{symbol}/stream"
BOOK_DEPTH = 10
RETRY_MS = 1000
"""Sent with the first event: how soon `EventSource` reconnects after the stream ends."""


class StreamHub:
    """Every open stream of the app, by symbol; closes them all at shutdown."""

    def __init__(self, engine: Engine, max_streams: int = 100) -> None:
        self.engine = engine
        self.max_streams = max_streams
        self.open_streams = 0
        self.closed = False
        self._fanouts: dict[str, SymbolFanout] = {}
        self._reads = 0
        self._signal_handlers: list[tuple[int, Any, Any]] = []

    # -- lifespan -------------------------------------------------------------------

    def start(self) -> None:
        """At lifespan startup, on the event loop: close every stream as soon as the
        server is told to stop, before it waits for in-flight requests."""
        self.closed = False
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread (an in-process test's loop is not)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue  # no handler to chain to: the server does not stop gracefully

            def on_exit_signal(
                sig: int, frame: FrameType | None, previous: Callable[..., Any] = previous
            ) -> None:
                loop.call_soon_threadsafe(self.close_all)
                previous(sig, frame)

            signal.signal(signum, on_exit_signal)
            self._signal_handlers.append((signum, previous, on_exit_signal))

    def stop(self) -> None:
        """At lifespan shutdown: close what is still open, unhook the signals."""
        self.close_all()
        for signum, previous, ours in self._signal_handlers:
            if signal.getsignal(signum) is ours:
                signal.signal(signum, previous)
        self._signal_handlers.clear()

    def close_all(self) -> None:
        self.closed = True
        for fanout in list(self._fanouts.values()):
            for subscriber in list(fanout.subscribers):
                subscriber.close("shutdown")

    # -- streams --------------------------------------------------------------------

    async def read_book(self, symbol: str) -> tuple[int, bytes]:
        """One L2 snapshot as a `book` event, numbered in the order the reads were sent
        (the engine answers in that order), so a subscriber never goes back in time."""
        self._reads += 1
        seq = self._reads
        view = await self.engine.book(symbol, BOOK_DEPTH)
        return seq, sse("book", book_json(symbol, view.bids, view.asks, view.snapshot_at))

    def full(self) -> bool:
        return self.open_streams >= self.max_streams

    def admit(self, subscriber: Subscriber) -> None:
        """Count the stream until its request's task ends (whether or not its body ran)."""
        self.open_streams += 1
        subscriber.counted = True
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(lambda _: self._leave(subscriber))

    def _join(self, subscriber: Subscriber) -> None:
        symbol = subscriber.symbol
        fanout = self._fanouts.get(symbol)
        if fanout is None:
            feed = self.engine.feed(symbol)
            fanout = self._fanouts[symbol] = SymbolFanout(feed, self.read_book)
        fanout.subscribers.add(subscriber)
        subscriber.start_pings()

    def _leave(self, subscriber: Subscriber) -> None:
        """Once per stream, whichever comes first: the generator's end or its request's."""
        if subscriber.ended:
            return
        subscriber.ended = True
        subscriber.closed = True
        if subscriber.counted:
            subscriber.counted = False
            self.open_streams -= 1
        subscriber.stop_pings()
        fanout = self._fanouts.get(subscriber.symbol)
        if fanout is not None:
            fanout.subscribers.discard(subscriber)
            if not fanout.subscribers:
                fanout.detach()
                del self._fanouts[subscriber.symbol]
        duration_ms = round((time.monotonic() - subscriber.started) * 1000, 3)
        log.info(
            "stream ended",
            extra={
                "event": "stream",
                "method": "GET",
                "route": ROUTE,
                "path": subscriber.path,
                "symbol": subscriber.symbol,
                "status": 200,
                "reason": subscriber.reason,
                "duration_ms": duration_ms,
            },
        )

    async def events(self, subscriber: Subscriber) -> AsyncIterator[Chunk]:
        """The stream's SSE body: the book on connect, then trades and books as they come."""
        task = asyncio.current_task()
        subscriber._task = task
        if task is not None:  # the request may end without resuming this generator
            task.add_done_callback(lambda _: self._leave(subscriber))
        self._join(subscriber)
        if self.closed:
            subscriber.close("shutdown")
        try:
            try:
                seq, book = await self.read_book(subscriber.symbol)
            except EngineStopped:
                subscriber.close("shutdown")
                return
            subscriber.offer_book(seq, book)
            prefix = b"retry: " + str(RETRY_MS).encode() + b"\n"  # the first event's
            while True:
                chunk = subscriber.next_chunk(first=bool(prefix))
                if chunk is None:
                    if subscriber.closed:
                        return
                    await subscriber.wait()
                    continue
                subscriber.writing = True
                yield Chunk(prefix + chunk)
                subscriber.writing = False
                prefix = b""
        finally:
            self._leave(subscriber)
