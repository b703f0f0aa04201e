"""WRITE_TIMEOUT: a body that cannot be written in time ends the request; `Deadline`,
the timeout it and READ_TIMEOUT use."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from miniexchange.http.timeouts import CONNECTION_FLOW, STREAMING, Deadline, WriteTimeout


async def respond(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x"})


def run(scope: dict[str, Any], send: Any) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    asyncio.run(WriteTimeout(respond, 0.05)(scope, receive, send))


def test_a_stalled_body_write_times_out() -> None:
    sent: list[str] = []

    async def stalled_send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the client never reads

    with pytest.raises(TimeoutError):
        run({"type": "http"}, stalled_send)
    assert sent == ["http.response.start", "http.response.body"]


def test_streams_and_prompt_writes_are_untouched() -> None:
    sent: list[str] = []

    async def slow_send(message: dict[str, Any]) -> None:
        await asyncio.sleep(0.1 if message["type"] == "http.response.body" else 0)
        sent.append(message["type"])

    run({"type": "http", STREAMING: True}, slow_send)
    assert sent == ["http.response.start", "http.response.body"]

    async def prompt_send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    run({"type": "http"}, prompt_send)
    assert sent[2:] == ["http.response.start", "http.response.body"]


class Flow:
    """A connection's flow control as the exchange's protocol puts it in the scope."""

    def __init__(self, write_paused: bool) -> None:
        self.write_paused = write_paused


def test_on_the_exchanges_connections_only_a_send_while_writing_is_paused_is_timed() -> None:
    sent: list[str] = []

    async def stalled_send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the client stopped reading: the buffer is full

    with pytest.raises(TimeoutError):
        run({"type": "http", CONNECTION_FLOW: Flow(write_paused=True)}, stalled_send)
    assert sent == ["http.response.start", "http.response.body"]

    timers: list[float] = []

    async def unpaused_send(message: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        timers.extend(handle.when() for handle in loop._scheduled)  # type: ignore[attr-defined]
        sent.append(message["type"])

    run({"type": "http", CONNECTION_FLOW: Flow(write_paused=False)}, unpaused_send)
    assert sent[2:] == ["http.response.start", "http.response.body"]
    assert timers == []  # no timer armed around either send


def test_a_deadline_raises_timeout_error_when_the_block_is_still_waiting() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with Deadline(0.01):
                await asyncio.Event().wait()
        await asyncio.sleep(0.02)  # no cancellation is left pending on the task

    asyncio.run(main())


def test_a_deadline_met_leaves_the_task_alone() -> None:
    async def main() -> str:
        async with Deadline(0.01):
            await asyncio.sleep(0)
        await asyncio.sleep(0.03)  # past the deadline: the timer was cancelled
        return "done"

    assert asyncio.run(main()) == "done"


def test_an_outside_cancellation_is_not_a_timeout() -> None:
    async def waiter(entered: asyncio.Event) -> None:
        async with Deadline(10):
            entered.set()
            await asyncio.Event().wait()

    async def main() -> None:
        entered = asyncio.Event()
        task = asyncio.create_task(waiter(entered))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
