"""The worker's outbox on a real asyncio loop, against a fake destination (no Ray).

The destination records each call's batch and answers only when the test says so, so
the tests decide exactly which calls are in flight; `turns()` only lets the loop run
what is ready (no timing is asserted anywhere).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from miniexchange.cluster.batches import BatchAnswerError, Outbox
from miniexchange.model.errors import ExchangeError, order_not_found


class Destination:
    """A fake destination: each call returns a future the test resolves, as a Ray
    actor method returns an `ObjectRef` that the worker awaits."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.replies: list[asyncio.Future[Sequence[Any]]] = []
        self.most_in_flight = 0

    def __call__(self, batch: Sequence[int], /) -> Awaitable[Sequence[Any]]:
        self.batches.append(list(batch))
        reply: asyncio.Future[Sequence[Any]] = asyncio.get_running_loop().create_future()
        self.replies.append(reply)
        self.most_in_flight = max(self.most_in_flight, self.in_flight())
        return reply

    def in_flight(self) -> int:
        return sum(not reply.done() for reply in self.replies)

    def answer(self, call: int, answers: Sequence[Any] | None = None) -> None:
        """Answer call `call` (from 0): by default each request `n` gets `n * 10`."""
        batch = self.batches[call]
        self.replies[call].set_result([n * 10 for n in batch] if answers is None else answers)


async def turns(count: int = 5) -> None:
    """Let the loop run a few passes: flushes scheduled, answers delivered."""
    for _ in range(count):
        await asyncio.sleep(0)


def run(scenario: Callable[[Destination, Outbox[int]], Awaitable[None]]) -> Destination:
    destination = Destination()

    async def main() -> None:
        await scenario(destination, Outbox(destination))

    asyncio.run(main())
    return destination


def start(outbox: Outbox[int], *items: int) -> list[asyncio.Task[Any]]:
    """Requests started in the same pass of the loop."""
    return [asyncio.create_task(outbox.request(item)) for item in items]


def test_the_requests_of_one_pass_leave_as_one_call_and_get_their_own_answers() -> None:
    async def scenario(destination: Destination, outbox: Outbox[int]) -> None:
        requests = start(outbox, 1, 2, 3, 4, 5)
        await turns()
        assert destination.batches == [[1, 2, 3, 4, 5]]
        destination.answer(0)
        assert await asyncio.gather(*requests) == [10, 20, 30, 40, 50]
        await turns()
        assert destination.batches == [[1, 2, 3, 4, 5]]  # nothing sent twice

    run(scenario)


def test_at_most_two_calls_are_in_flight_and_what_waits_leaves_in_one_call() -> None:
    async def scenario(destination: Destination, outbox: Outbox[int]) -> None:
        first = start(outbox, 1)
        await turns()
        second = start(outbox, 2, 3)
        await turns()
        assert destination.batches == [[1], [2, 3]]
        waiting = start(outbox, 4)
        await turns()
        waiting += start(outbox, 5, 6)
        await turns()
        waiting += start(outbox, 7)
        await turns()
        assert destination.batches == [[1], [2, 3]]  # two in flight: 4 to 7 wait
        destination.answer(0)
        assert await asyncio.gather(*first) == [10]
        await turns()
        assert destination.batches == [[1], [2, 3], [4, 5, 6, 7]]
        destination.answer(2)  # the later call answered first: each gets its own
        assert await asyncio.gather(*waiting) == [40, 50, 60, 70]
        destination.answer(1)
        assert await asyncio.gather(*second) == [20, 30]
        assert destination.most_in_flight == 2

    run(scenario)


def test_a_busy_outbox_sends_fewer_larger_calls() -> None:
    """One request per pass, the destination answering its oldest call every third
    pass: once two calls are in flight, each call carries what came during three
    passes, every request once and in arrival order."""

    async def scenario(destination: Destination, outbox: Outbox[int]) -> None:
        requests: list[asyncio.Task[Any]] = []
        answered = 0
        for item in range(1, 31):
            requests += start(outbox, item)
            await asyncio.sleep(0)
            if item % 3 == 0 and answered < len(destination.batches):
                destination.answer(answered)
                answered += 1
        while not all(request.done() for request in requests):
            await turns()
            if answered < len(destination.batches):
                destination.answer(answered)
                answered += 1
        assert await asyncio.gather(*requests) == [item * 10 for item in range(1, 31)]
        assert destination.batches == [
            [1],
            [2],
            [3, 4],
            *([item, item + 1, item + 2] for item in range(5, 27, 3)),
            [29, 30],
        ]
        assert destination.most_in_flight == 2

    run(scenario)


def test_a_refusal_raises_for_its_request_only() -> None:
    async def scenario(destination: Destination, outbox: Outbox[int]) -> None:
        requests = start(outbox, 1, 2, 3)
        await turns()
        destination.answer(0, [10, order_not_found("ord-x"), 30])
        results = await asyncio.gather(*requests, return_exceptions=True)
        assert results[0] == 10 and results[2] == 30
        refusal = results[1]
        assert isinstance(refusal, ExchangeError)
        assert (refusal.code, refusal.message) == ("order_not_found", "Order ord-x does not exist")

    run(scenario)


def test_a_failed_call_fails_every_request_of_its_batch_and_the_next_call_goes_out() -> None:
    failure = ConnectionError("the sequencer is gone")

    async def scenario(destination: Destination, outbox: Outbox[int]) -> None:
        doomed = start(outbox, 1, 2)
        await turns()
        spared = start(outbox, 3)
        await turns()
        later = start(outbox, 4)
        await turns()
        destination.replies[0].set_exception(failure)
        results = await asyncio.gather(*doomed, return_exceptions=True)
        assert results == [failure, failure]
        assert all(result is failure for result in results)
        await turns()
        assert destination.batches == [[1, 2], [3], [4]]  # the freed place is used
        destination.answer(1)
        destination.answer(2)
        assert await asyncio.gather(*spared, *later) == [30, 40]

    run(scenario)


def test_a_wrong_number_of_answers_fails_the_whole_batch() -> None:
    async def scenario(destination: Destination, outbox: Outbox[int]) -> None:
        requests = start(outbox, 1, 2, 3)
        await turns()
        destination.answer(0, [10, 20])
        results = await asyncio.gather(*requests, return_exceptions=True)
        assert [type(result) for result in results] == [BatchAnswerError] * 3
        assert str(results[0]) == "2 answers to a batch of 3 requests"

    run(scenario)


def test_a_request_cancelled_while_it_waits_is_not_sent_and_the_others_go_on() -> None:
    async def scenario(destination: Destination, outbox: Outbox[int]) -> None:
        in_flight = start(outbox, 1)
        await turns()
        in_flight += start(outbox, 2, 3)
        await turns()
        gone, stays = start(outbox, 4, 5)
        await turns()
        assert destination.batches == [[1], [2, 3]]
        gone.cancel()
        destination.answer(0)
        await turns()
        assert destination.batches == [[1], [2, 3], [5]]
        destination.answer(1)
        destination.answer(2)
        assert await asyncio.gather(*in_flight, stays) == [10, 20, 30, 50]
        with pytest.raises(asyncio.CancelledError):
            await gone

    run(scenario)


def test_a_request_cancelled_after_it_left_leaves_its_batch_answered() -> None:
    async def scenario(destination: Destination, outbox: Outbox[int]) -> None:
        first, gone, last = start(outbox, 1, 2, 3)
        await turns()
        gone.cancel()
        await turns()
        destination.answer(0)
        assert await asyncio.gather(first, last) == [10, 30]
        assert gone.cancelled()
        assert destination.batches == [[1, 2, 3]]

    run(scenario)


def test_when_every_waiting_request_is_cancelled_no_empty_call_is_made() -> None:
    async def scenario(destination: Destination, outbox: Outbox[int]) -> None:
        in_flight = start(outbox, 1)
        await turns()
        in_flight += start(outbox, 2)
        await turns()
        waiting = start(outbox, 3, 4)
        await turns()
        for request in waiting:
            request.cancel()
        destination.answer(0)
        destination.answer(1)
        assert await asyncio.gather(*in_flight) == [10, 20]
        await turns()
        assert destination.batches == [[1], [2]]
        assert [request.cancelled() for request in waiting] == [True, True]
        later = start(outbox, 5)  # the outbox still works
        await turns()
        destination.answer(2)
        assert await asyncio.gather(*later) == [50]
        assert destination.batches == [[1], [2], [5]]

    run(scenario)
