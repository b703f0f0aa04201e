"""The streams of one symbol: the feed's news, rendered once, offered to each reader.

A symbol actor publishes each durable step into its `SymbolFeed` (`actors.market_data`)
and, while the symbol has subscribers, wakes the fan-out on the event loop, at most
once until the fan-out has taken what was published. The fan-out renders each new
trade once and offers it to every subscriber; when the book changed it asks for ONE L2
snapshot at most every `BOOK_INTERVAL_S` per symbol, however many subscribers or
changes there are, and offers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import orjson

from miniexchange.actors.seam import EngineStopped, SymbolFeed
from miniexchange.http.render import trade_dict
from miniexchange.http.sse import sse
from miniexchange.http.stream_subscriber import Subscriber

log = logging.getLogger("miniexchange.http")

BOOK_INTERVAL_S = 0.2
"""Book events of one symbol go out at most this often."""

ReadBookEvent = Callable[[str], Awaitable[tuple[int, bytes]]]
"""A symbol's book as a numbered `book` event (`StreamHub.read_book`)."""


class SymbolFanout:
    """The streams of one symbol: takes the feed's news on the event loop and offers
    it to each subscriber; reads the book at most every `BOOK_INTERVAL_S`."""

    def __init__(self, feed: SymbolFeed, read_book: ReadBookEvent) -> None:
        self._read_book = read_book
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
                seq, event = await self._read_book(self.feed.symbol)
                self._book_version = version
                for subscriber in list(self.subscribers):
                    subscriber.offer_book(seq, event)
        except EngineStopped:
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
