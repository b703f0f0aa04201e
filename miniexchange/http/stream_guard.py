"""What an event stream needs from its connection that Falcon's SSE does not give it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from miniexchange.http.stream_subscriber import Subscriber
from miniexchange.http.timeouts import STREAMING

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def guard_stream(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve a request for an event stream with `app`, adding:

    - the reader's disconnect, at once: Falcon notices it only after its next write,
      which for a quiet symbol is the next 15 s ping;
    - a quiet end when the hub cancelled a stream stuck in a write (`Subscriber.abort`):
      the app returns without finishing the response, so the server drops the
      connection instead of logging the cancellation as a crash.
    """

    async def watched_receive() -> Message:
        message = await receive()
        if message["type"] == "http.disconnect":
            subscriber = scope.get(STREAMING)
            if isinstance(subscriber, Subscriber):
                subscriber.close("client")
        return message

    try:
        await app(scope, watched_receive, send)
    except asyncio.CancelledError:
        subscriber = scope.get(STREAMING)
        if not (isinstance(subscriber, Subscriber) and subscriber.aborted):
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
