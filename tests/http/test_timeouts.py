"""`Deadline`, the timeout of a request body's READ_TIMEOUT. (WRITE_TIMEOUT is the
connection's: `tests/http/test_protocol.py`.)"""

from __future__ import annotations

import asyncio

import pytest

from miniexchange.http.timeouts import Deadline


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
