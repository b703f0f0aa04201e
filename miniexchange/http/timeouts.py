"""`WRITE_TIMEOUT` (contract §5.2): a response body that cannot be written in time ends
its connection, so a client that stops reading cannot hold a response forever.

Only body messages are timed (the response start is buffered by the server); event
streams (§6.6) mark their scope with `STREAMING` and are not timed.
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


class WriteTimeout:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timeout_s = self.timeout_s

        async def timed_send(message: Message) -> None:
            if message["type"] != "http.response.body" or scope.get(STREAMING):
                await send(message)
                return
            # Past the deadline the TimeoutError ends the request, and the server
            # closes the connection.
            async with asyncio.timeout(timeout_s):
                await send(message)

        await self.app(scope, receive, timed_send)
