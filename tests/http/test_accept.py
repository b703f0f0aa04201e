"""`http.accept`: the worker's loop accepts a burst of connections in a few passes of
the event loop, where uvloop's own server takes one connection per pass; it stops on
`close`, and waits when out of file descriptors instead of spinning.

Real loops, real loopback sockets; a pass is one `asyncio.sleep(0)`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import runpy
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop
from uvicorn.config import Config

from miniexchange.http import accept
from miniexchange.http.accept import BatchAcceptingServer, ExchangeLoop

ROOT = Path(__file__).resolve().parents[2]
BURST = 64
WAIT_S = 10.0
"""How long to wait for what must happen; never an upper bound on speed."""


class Recorder(asyncio.Protocol):
    """Notes each connection made, and keeps its transport open."""

    def __init__(self, made: list[asyncio.BaseTransport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


def on(loop: asyncio.AbstractEventLoop, main: Coroutine[Any, Any, Any]) -> Any:
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()


def listening(sock_type: Callable[..., socket.socket] = socket.socket) -> socket.socket:
    sock = sock_type(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    return sock


async def passes_until(made: list[Any], count: int, limit: int = 10_000) -> int:
    """Passes of the running loop until `count` connections are made (at most `limit`)."""
    for passes in range(1, limit + 1):
        await asyncio.sleep(0)
        if len(made) >= count:
            return passes
    return limit


async def burst() -> tuple[int, Any]:
    """A burst of `BURST` connections against a server on a listening socket: how many
    passes until all are made, and the server."""
    made: list[asyncio.BaseTransport] = []
    sock = listening()
    server = await asyncio.get_running_loop().create_server(lambda: Recorder(made), sock=sock)
    clients = [socket.create_connection(sock.getsockname()) for _ in range(BURST)]
    try:
        return await passes_until(made, BURST), server
    finally:
        server.close()
        for transport in made:
            transport.close()
        for client in clients:
            client.close()
        sock.close()


def test_the_uvloop_whose_accept_this_was_written_against() -> None:
    assert uvloop.__version__ == "0.23.0"


def test_a_burst_of_connections_gets_in_within_a_few_passes() -> None:
    passes, server = on(ExchangeLoop(), burst())
    assert isinstance(server, BatchAcceptingServer)
    assert passes <= 5


def test_uvloops_own_server_takes_one_connection_per_pass() -> None:
    """Why `http.accept` exists: if this fails, libuv accepts in batches again, and
    `ExchangeLoop` may go."""
    passes, server = on(uvloop.new_event_loop(), burst())
    assert not isinstance(server, BatchAcceptingServer)
    assert passes >= BURST


def test_a_closed_server_accepts_nothing_more() -> None:
    async def main() -> tuple[bool, int]:
        made: list[asyncio.BaseTransport] = []
        sock = listening()
        server = await asyncio.get_running_loop().create_server(lambda: Recorder(made), sock=sock)
        server.close()
        client = socket.create_connection(sock.getsockname())
        for _ in range(20):
            await asyncio.sleep(0)
        client.close()
        sock.close()
        return server.is_serving(), len(made)

    assert on(ExchangeLoop(), main()) == (False, 0)


def test_a_connection_accepted_as_the_server_closes_is_told_to_shut_down() -> None:
    """Accepted, then the server closed (uvicorn's graceful stop) before its transport
    was made: uvicorn's sweep of the connections missed it, so the server tells it (one
    made just before may be told twice: harmless, a stopping connection stays stopping).
    Without it, it served keep-alive requests until the graceful timeout cut one."""
    protocols: list[asyncio.Protocol] = []
    told: list[asyncio.Protocol] = []

    class Stopping(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            protocols.append(self)

        def shutdown(self) -> None:
            told.append(self)

    async def main() -> None:
        sock = listening()
        server = await asyncio.get_running_loop().create_server(Stopping, sock=sock)
        early = socket.create_connection(sock.getsockname())
        await passes_until(protocols, 1)
        late = socket.create_connection(sock.getsockname())
        server._accept()  # type: ignore[attr-defined]  # readable now: as the loop would
        server.close()  # in the same pass, before its transport is made
        await passes_until(protocols, 2)
        for _ in range(5):
            await asyncio.sleep(0)
        for client in (early, late):
            client.close()
        sock.close()

    on(ExchangeLoop(), main())
    assert len(protocols) == 2 and protocols[1] in told


class Exhausted(socket.socket):
    """A listening socket whose first `accept` fails as in a process out of descriptors."""

    failures = 1

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_out_of_descriptors_it_logs_waits_and_accepts_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(accept, "ACCEPT_RETRY_S", 0.2)

    async def main() -> tuple[bool, int]:
        made: list[asyncio.BaseTransport] = []
        sock = listening(Exhausted)
        assert isinstance(sock, Exhausted)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Recorder(made), sock=sock)
        client = socket.create_connection(sock.getsockname())
        while sock.failures:  # the failing accept
            await asyncio.sleep(0)
        paused = server.is_serving()  # not watched until the retry
        deadline = loop.time() + WAIT_S
        while not made and loop.time() < deadline:
            await asyncio.sleep(0.01)
        server.close()
        for transport in made:
            transport.close()
        client.close()
        sock.close()
        return paused, len(made)

    with caplog.at_level(logging.ERROR, logger="miniexchange.http"):
        assert on(ExchangeLoop(), main()) == (False, 1)
    assert [record.getMessage() for record in caplog.records] == [
        "cannot accept connections: Too many open files; retrying in 0.2 s"
    ]


def test_the_served_worker_runs_this_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """`config/gunicorn.conf.py` names `ExchangeLoop` in the worker's uvicorn config, as
    the worker's `post_worker_init` hook leaves it."""
    monkeypatch.chdir(ROOT)
    hooks = runpy.run_path(str(ROOT / "config" / "gunicorn.conf.py"))
    worker = SimpleNamespace(config=Config(app="miniexchange.http.app:app"))
    hooks["post_worker_init"](worker)
    assert worker.config.get_loop_factory() is ExchangeLoop
