"""The worker's event loop: uvloop's, with new connections admitted in batches.

Why: libuv, under uvloop, accepts one connection each time it polls the listening
socket (since libuv 1.45, "don't accept() connections in a loop"), and polls it once
per pass of the event loop. Under load a pass serves many requests (tens of ms with
256 connections in flight), so a burst of new connections got in one per pass:
measured here, 256 connections opened at once against a loaded worker waited up to
2.3 s for their first answer, in the order they connected, while every later request
was answered within 140 ms.

`ExchangeLoop` is uvloop's loop whose `create_server(sock=...)`, the call through which
uvicorn serves each of gunicorn's listening sockets, watches the socket itself and
accepts up to `ACCEPT_BATCH` connections each time it is readable. Each one goes to
uvloop's `connect_accepted_socket`, which makes its transport (TCP_NODELAY included)
and protocol as uvloop's own server would. A connection past `MAX_CONNECTIONS` is still
accepted and answered 503 by the protocol (`http.protocol`). `config/gunicorn.conf.py`
names this loop in the worker's uvicorn config.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any, Final

import uvloop

__all__ = ["ACCEPT_BATCH", "BatchAcceptingServer", "ExchangeLoop"]

log = logging.getLogger("miniexchange.http")

ACCEPT_BATCH: Final = 128
"""Connections accepted per readiness of a listening socket, at most: a burst gets in
within a few passes, and one pass still cannot be taken over by accepting alone."""

ACCEPT_RETRY_S: Final = 1.0
"""Out of file descriptors or memory: accepting waits this long, as asyncio's does, rather
than finding the socket readable again on every pass."""

_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class BatchAcceptingServer:
    """One listening socket served by `ExchangeLoop`: what uvicorn uses of a server is
    `close` (stop accepting; uvicorn then closes the socket) and `wait_closed`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
    ) -> None:
        self._loop = loop
        self._protocol_factory = protocol_factory
        self._sock = sock
        self._retry: asyncio.TimerHandle | None = None
        self._serving = False
        self._closed = False
        self._connecting: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)
        self._start()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,)

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        self._closed = True
        self._pause()

    def _pause(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._serving:
            self._serving = False
            self._loop.remove_reader(self._sock.fileno())

    async def wait_closed(self) -> None:
        """Nothing to wait for: uvicorn waits for the connections themselves."""

    def _start(self) -> None:
        self._retry = None
        self._serving = True
        self._loop.add_reader(self._sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                connection, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # all taken: the next readiness brings the next ones
            except ConnectionAbortedError:
                continue  # the client gave up before we took it
            except OSError as error:
                if error.errno not in _OUT_OF_RESOURCES:
                    raise
                log.error(
                    "cannot accept connections: %s; retrying in %g s",
                    error.strerror,
                    ACCEPT_RETRY_S,
                    extra={"event": "accept_failed"},
                )
                self._pause()
                self._retry = self._loop.call_later(ACCEPT_RETRY_S, self._start)
                return
            connection.setblocking(False)
            task = self._loop.create_task(
                self._loop.connect_accepted_socket(self._protocol_factory, connection)
            )
            self._connecting.add(task)
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        """A connection reset before its transport was made is closed by uvloop; its
        error is taken here so that it is not logged as a lost task's. One accepted
        before `close` but made after it missed uvicorn's graceful-shutdown sweep of the
        connections: it is told to shut down here, or it would serve keep-alive requests
        until the graceful timeout cancelled one mid-request (a 500)."""
        self._connecting.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        _, protocol = task.result()
        if self._closed:
            shutdown = getattr(protocol, "shutdown", None)
            if shutdown is not None:
                shutdown()


class ExchangeLoop(uvloop.Loop):  # type: ignore[misc]
    """uvloop's event loop, serving a listening socket it is handed with a
    `BatchAcceptingServer`; a server it must bind itself (or with TLS) is uvloop's own."""

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        *,
        sock: socket.socket | None = None,
        ssl: Any = None,
        **kwargs: Any,
    ) -> Any:
        if sock is None or ssl is not None:
            return await super().create_server(
                protocol_factory, host, port, sock=sock, ssl=ssl, **kwargs
            )
        return BatchAcceptingServer(self, protocol_factory, sock)
