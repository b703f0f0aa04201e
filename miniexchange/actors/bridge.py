"""From the event loop to an actor (or the journal) and back, never blocking the loop.

The responder creates an asyncio future and hands a reply callback to whoever answers
(an actor's message, the journal); that thread completes the future with
`loop.call_soon_threadsafe`. The engine seam (`actors.seam`) answers the HTTP layer
this way.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pykka

from miniexchange.actors.base import Reply


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reply(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: Any) -> None:
    loop.call_soon_threadsafe(_resolve, future, value)


async def answer(send: Callable[[Reply], object]) -> Any:
    """Call `send(reply)` and await what is passed to `reply` (raising a refusal)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    send(functools.partial(_reply, loop, future))
    value = await future
    if isinstance(value, BaseException):
        # A raised refusal's traceback holds this frame: were the refusal (or the future
        # and callback that hold it) still among its locals, the two would form a cycle
        # keeping the request and its body alive until the garbage collector runs.
        del future, send
        try:
            raise value
        finally:
            del value
    return value


def call(actor: pykka.ActorRef, message_with: Callable[[Reply], Any]) -> Coroutine[Any, Any, Any]:
    """Send `message_with(reply)` to `actor` and await its answer (`answer`'s coroutine
    itself: no second layer)."""
    return answer(lambda reply: actor.tell(message_with(reply)))
