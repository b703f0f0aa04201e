"""`WRITE_TIMEOUT`: a response body that cannot be written in time ends
its connection, so a client that stops reading cannot hold a response forever.

Only body messages are timed (the response start is buffered by the server); event
streams mark their scope with `STREAMING` and are not timed. On the exchange's own
connections (`http.protocol` puts their flow control in the scope) a body send waits
only while the connection's writing is paused, so only then does it need a timer: a
send to a client that keeps reading costs no timer at all.

`Deadline` is the timeout of both this and the request body's `READ_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STREAMING = "miniexchange.streaming"
"""A scope key a long-lived response (an event stream) sets to opt out of the timeout."""

CONNECTION_FLOW = "miniexchange.flow"
"""A scope key `http.protocol` sets: the connection's flow control, whose `write_paused`
says whether the next send will wait for the client to read."""


class Deadline:
    """`async with Deadline(seconds):` raises `TimeoutError` if the block is still
    waiting when the time is up, like `asyncio.timeout`, for less: one timer and a flag
    (every request uses one or two). Not reentrant, not reschedulable: one use per
    instance.

    When the timer fires the task is suspended inside the block (a loop callback never
    runs while the task does), so the cancellation arrives there, at its `await`; it
    becomes the `TimeoutError` unless someone else also cancelled the task.
    """

    __slots__ = ("_delay_s", "_fired", "_handle", "_task")

    def __init__(self, delay_s: float) -> None:
        self._delay_s = delay_s
        self._fired = False

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None, "Deadline is used inside a task"
        self._task = task
        self._handle = asyncio.get_running_loop().call_later(self._delay_s, self._fire)

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: object, tb: object
    ) -> None:
        self._handle.cancel()
        if self._fired and self._task.uncancel() == 0 and exc_type is asyncio.CancelledError:
            raise TimeoutError from None


class WriteTimeout:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timeout_s = self.timeout_s
        flow = scope.get(CONNECTION_FLOW)

        async def timed_send(message: Message) -> None:
            if (
                message["type"] != "http.response.body"
                or (flow is not None and not flow.write_paused)
                or scope.get(STREAMING)
            ):
                await send(message)  # no wait to bound: the bytes go to the send buffer
                return
            # Past the deadline the TimeoutError ends the request, and the server
            # closes the connection.
            async with Deadline(timeout_s):
                await send(message)

        await self.app(scope, receive, timed_send)
