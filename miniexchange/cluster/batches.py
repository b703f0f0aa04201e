"""Batches between processes: the worker's outbox.

A Ray call costs about 650 µs of CPU on each side (975 µs for an awaiting event loop)
whatever it carries, while each order in it costs a few µs (docs/ray.md, "Capacity"), so
every cross-process hop carries a batch, and batches grow with load:

- `Outbox`: one per destination in each ingress worker. Requests queued during one pass
  of the event loop leave as one call; at most two calls are in flight, and what comes
  meanwhile waits for the next call (exchange-core's "smart batching").

Nothing here imports Ray: a destination is any callable whose result can be awaited
(an async function in the tests, a Ray actor method's `ObjectRef` later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Generic, Protocol, TypeVar

# -- the outbox ---------------------------------------------------------------------

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

IN_FLIGHT = 2  # calls per destination: one being answered while the next one fills


class Send(Protocol[T_contra]):
    """One call to a destination: the answers come back in the order of `batch`, one
    per request; an answer that is an exception is that request's refusal."""

    def __call__(self, batch: Sequence[T_contra], /) -> Awaitable[Sequence[Any]]: ...


class BatchAnswerError(RuntimeError):
    """A destination answered a batch with the wrong number of answers: which answer is
    whose is unknown, so every request of the batch fails with this."""


class Outbox(Generic[T]):
    """One destination's outbox, on one event loop (not thread-safe: the loop's only)."""

    def __init__(self, send: Send[T], in_flight: int = IN_FLIGHT) -> None:
        self._send = send
        self._limit = in_flight
        self._in_flight = 0
        self._queued: list[tuple[T, asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._calls: set[asyncio.Task[None]] = set()  # referenced until done

    async def request(self, item: T) -> Any:
        """Queue `item` for the next call and await its answer (raising a refusal, or
        the failure of the call that carried it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((item, future))
        self._schedule_flush(loop)
        value = await future
        if isinstance(value, BaseException):
            # As in the HTTP bridge's `answer`: the raised exception's traceback holds this
            # frame, so nothing that holds the exception may stay among its locals.
            del future, item
            try:
                raise value
            finally:
                del value
        return value

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """The first request of a pass schedules the flush: it runs after every request
        of this pass is queued, so they all leave in one call."""
        if self._queued and not self._flush_scheduled and self._in_flight < self._limit:
            self._flush_scheduled = True
            loop.call_soon(self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_scheduled = False
        # A request cancelled while it waited (its client went away) is not sent.
        queued = [(item, future) for item, future in self._queued if not future.done()]
        self._queued = []
        if not queued:
            return
        self._in_flight += 1
        call = loop.create_task(self._call(loop, queued))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _call(
        self, loop: asyncio.AbstractEventLoop, queued: list[tuple[T, asyncio.Future[Any]]]
    ) -> None:
        futures = [future for _, future in queued]
        try:
            answers = await self._send([item for item, _ in queued])
            if len(answers) != len(futures):
                raise BatchAnswerError(
                    f"{len(answers)} answers to a batch of {len(futures)} requests"
                )
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as failure:
            answers = [failure] * len(futures)
        finally:
            self._in_flight -= 1
            self._schedule_flush(loop)  # what waited meanwhile leaves now
        for future, answer in zip(futures, answers, strict=True):
            if not future.done():  # cancelled after it left: its answer has no taker
                future.set_result(answer)
