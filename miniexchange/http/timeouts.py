"""The request's deadlines: `Deadline`, the timeout of a request body's `READ_TIMEOUT`,
and `STREAMING`, the mark of a response that `WRITE_TIMEOUT` leaves alone.

`WRITE_TIMEOUT` itself is the connection's (`http.protocol`): it arms a timer only while
the connection's writing is paused (the client stopped reading and the send buffer is
full), so a response to a client that keeps reading costs no timer and no wrapper
around the app's `send`.
"""

from __future__ import annotations

import asyncio

STREAMING = "miniexchange.streaming"
"""A scope key a long-lived response (an event stream) sets: `WRITE_TIMEOUT` does not end
it (the stream hub ends a stream stuck in a write)."""


class Deadline:
    """`async with Deadline(seconds):` raises `TimeoutError` if the block is still
    waiting when the time is up, like `asyncio.timeout`, for less: one timer and a flag
    (every request body read uses one). Not reentrant, not reschedulable: one use per
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
