"""From the event loop to an actor and back, without ever blocking the loop.

The responder creates an asyncio future and sends the actor a message carrying a reply
callback; the actor thread completes the future with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pykka

from miniexchange.actors.base import Reply


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


async def call(actor: pykka.ActorRef, message_with: Callable[[Reply], Any]) -> Any:
    """Send `message_with(reply)` to `actor` and await its answer (raising a refusal)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def reply(value: Any) -> None:
        loop.call_soon_threadsafe(_resolve, future, value)

    actor.tell(message_with(reply))
    value = await future
    if isinstance(value, BaseException):
        raise value
    return value
