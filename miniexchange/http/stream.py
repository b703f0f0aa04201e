"""`GET /stocks/{symbol}/stream`: one symbol's book and trades as Server-Sent Events (§6.6).

How news travels, and why a slow reader never slows matching:

- A symbol actor publishes each durable step into its `SymbolFeed` (`actors.market_data`)
  and, while the symbol has subscribers, wakes this module's `SymbolFanout` on the event
  loop, at most once until the fan-out has taken what was published.
- The fan-out renders each new trade once and offers it to every `Subscriber`; when the
  book changed it asks the actor for ONE L2 snapshot (`ReadBook`, depth 10), at most
  every 200 ms per symbol however many subscribers or changes there are, and offers it.
- A subscriber keeps only the latest book (an older one is overwritten, never queued)
  and at most `MAX_UNSENT_TRADES` unsent trade events; past that its stream is closed
  and the reader reconnects to a fresh book. Nothing here waits for a reader.
- The response is Falcon's SSE (`resp.sse`), fed by `StreamHub.events`. A comment line
  goes out every 15 s so that idle proxies keep the connection.

At most `MAX_STREAMS` streams are open at once (`StreamHub.admit`); one more is answered
503 `overloaded`, as a connection past `MAX_CONNECTIONS` is (`http.protocol`). A stream
counts from its request until that request's task ends, however it ends.

Ending a stream: the reader disconnects (seen at once through `EventStreamGuard`, which
watches the request's `receive`), its backlog overflows, or the server shuts down:
`StreamHub.start` hooks SIGTERM/SIGINT so that open streams close at once, before the
server waits for in-flight requests (§5.3: streams are not in-flight requests). A
stream whose reader stopped reading may be stuck in a write that never completes; it
is ended by cancelling its request, and the guard then lets the server drop the
connection. Each stream is logged once, when it ends, with its duration (§6.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from types import FrameType
from typing import Any

import falcon
import falcon.asgi
import orjson
import pykka

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.market_data import SymbolFeed
from miniexchange.actors.messages import ReadBook
from miniexchange.clock import Clock
from miniexchange.http.bridge import call
from miniexchange.http.errors import overloaded
from miniexchange.http.market import SymbolResource
from miniexchange.http.render import book_json, trade_dict
from miniexchange.http.timeouts import STREAMING

log = logging.getLogger("miniexchange.http")

ROUTE = "/stocks/{symbol}/stream"
BOOK_DEPTH = 10
BOOK_INTERVAL_S = 0.2
"""Book events of one symbol go out at most this often (§6.6)."""
PING_INTERVAL_S = 15.0
MAX_UNSENT_TRADES = 1000
ABORT_GRACE_S = 0.5
"""After the server ends a stream, how long its last write may take before the request
is cancelled: a reader that stopped reading never lets that write complete."""
RETRY_MS = 1000
"""Sent with the first event: how soon `EventSource` reconnects after the stream ends."""

PING = b": keep-alive\n\n"

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def sse(event: str, data: bytes) -> bytes:
    """One event in the SSE wire format (`data` is one line of JSON)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class Chunk:
    """Events already in the wire format. Falcon's SSE sends whatever `serialize()`
    returns, so one rendering serves every subscriber and a batch is one write."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self, handler: object = None) -> bytes:
        return self.data


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
        self.aborted = False  # its request was cancelled (read by `EventStreamGuard`)
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


class SymbolFanout:
    """The streams of one symbol: takes the feed's news on the event loop and offers
    it to each subscriber; reads the book at most every `BOOK_INTERVAL_S`."""

    def __init__(self, hub: StreamHub, feed: SymbolFeed) -> None:
        self.hub = hub
        self.feed = feed
        self.subscribers: set[Subscriber] = set()
        self._loop = asyncio.get_running_loop()
        self._book_version = feed.book_version
        self._book_task: asyncio.Task[None] | None = None
        self._last_book_at = float("-inf")
        self._detached = False
        feed.listen(self._wake_from_writer)

    def _wake_from_writer(self) -> None:
        """Called on the writer's thread (journal writer or actor)."""
        with contextlib.suppress(RuntimeError):  # a closed loop: the server is gone
            self._loop.call_soon_threadsafe(self._take_news)

    def _take_news(self) -> None:
        if self._detached:
            return
        trades, overflowed = self.feed.take()
        subscribers = list(self.subscribers)
        if overflowed:  # every stream of the symbol would be past its limit
            for subscriber in subscribers:
                subscriber.close("overflow")
        elif trades:
            events = b"".join(sse("trade", orjson.dumps(trade_dict(trade))) for trade in trades)
            for subscriber in subscribers:
                subscriber.offer_trades(events, len(trades))
        if self._book_task is None and self.feed.book_version != self._book_version:
            self._book_task = self._loop.create_task(self._refresh_book())

    async def _refresh_book(self) -> None:
        """Read the book while it keeps changing, never more often than every 200 ms."""
        loop = self._loop
        try:
            while not self._detached:
                delay = self._last_book_at + BOOK_INTERVAL_S - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                version = self.feed.book_version
                if version == self._book_version or self._detached:
                    return
                self._last_book_at = loop.time()
                seq, event = await self.hub.read_book(self.feed.symbol)
                self._book_version = version
                for subscriber in list(self.subscribers):
                    subscriber.offer_book(seq, event)
        except pykka.ActorDeadError:
            pass  # the exchange is stopping; the streams close with it
        except Exception:
            log.exception("book refresh failed for %s", self.feed.symbol)
        finally:
            self._book_task = None

    def detach(self) -> None:
        """The last subscriber left: stop hearing the feed."""
        self._detached = True
        self.feed.listen(None)
        if self._book_task is not None:
            self._book_task.cancel()


class StreamHub:
    """Every open stream of the app, by symbol; closes them all at shutdown."""

    def __init__(self, exchange: Exchange, clock: Clock, max_streams: int = 100) -> None:
        self.exchange = exchange
        self.clock = clock
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
        (the actor answers in that order), so a subscriber never goes back in time."""
        self._reads += 1
        seq = self._reads
        actor = self.exchange.existing_symbol_actor(symbol)
        if actor is None:  # known from holdings only: no order yet, an empty book
            return seq, sse("book", book_json(symbol, [], [], self.clock.now()))
        view = await call(actor, partial(ReadBook, BOOK_DEPTH))
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
            feed = self.exchange.market_data.feed(symbol)
            fanout = self._fanouts[symbol] = SymbolFanout(self, feed)
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
            except pykka.ActorDeadError:
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


class StreamResource(SymbolResource):
    def __init__(self, exchange: Exchange, clock: Clock, hub: StreamHub) -> None:
        super().__init__(exchange, clock)
        self.hub = hub

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        if self.hub.full():  # a connection limit: before anything else (§1.2)
            raise overloaded()
        self.actor_of_known(symbol)  # 404 symbol_not_found before anything streams
        subscriber = Subscriber(symbol, req.path)
        self.hub.admit(subscriber)
        req.scope[STREAMING] = subscriber  # no WRITE_TIMEOUT; seen by `EventStreamGuard`
        resp.set_header("Cache-Control", "no-store")
        resp.set_header("X-Accel-Buffering", "no")  # proxies must not hold events back
        resp.sse = self.hub.events(subscriber)


class EventStreamGuard:
    """ASGI wrapper around the app for the two things an event stream needs from the
    connection that Falcon's SSE does not give it:

    - the reader's disconnect, at once: Falcon notices it only after its next write,
      which for a quiet symbol is the next 15 s ping;
    - a quiet end when the hub cancelled a stream stuck in a write (`Subscriber.abort`):
      the app returns without finishing the response, so the server drops the
      connection instead of logging the cancellation as a crash.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").endswith("/stream"):
            await self.app(scope, receive, send)
            return

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                subscriber = scope.get(STREAMING)
                if isinstance(subscriber, Subscriber):
                    subscriber.close("client")
            return message

        try:
            await self.app(scope, watched_receive, send)
        except asyncio.CancelledError:
            subscriber = scope.get(STREAMING)
            if not (isinstance(subscriber, Subscriber) and subscriber.aborted):
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
