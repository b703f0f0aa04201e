"""`http.protocol`, the subclass of uvicorn's httptools protocol: what it relies on in the
pinned uvicorn and httptools, and its header count wherever reads split a request.

The first tests fail when uvicorn or httptools change (a new version, or the code the
subclass overrides or reads): read the new code, adapt `http.protocol`, then update the
pins and fingerprints here. The others feed one server-side connection (a real loopback
TCP connection, a real uvicorn request cycle, a small ASGI app) exactly the reads they
name, so the split of a header section between two reads is chosen, not left to the
kernel; the limits on the real server are in `tests/e2e/test_limits.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
from typing import Any

import httptools
import pytest
import uvicorn
import uvicorn_worker
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import Server, ServerState

from miniexchange.http.errors import MAX_HEADER_BYTES
from miniexchange.http.protocol import UVICORN_VERSION, ConnectionLimits, ExchangeProtocol
from miniexchange.http.timeouts import STREAMING

# -- the pins ------------------------------------------------------------------------------

OWNERS: dict[str, type] = {
    "HttpToolsProtocol": HttpToolsProtocol,
    "RequestResponseCycle": RequestResponseCycle,
    "Config": Config,
    "Server": Server,
    "UvicornWorker": uvicorn_worker.UvicornWorker,
}

FINGERPRINTS = {
    "HttpToolsProtocol.__init__": "4f08999410347141",
    "HttpToolsProtocol.connection_made": "6efb565ff3d36b91",
    "HttpToolsProtocol.connection_lost": "c91a4c9bf2e29c55",
    "HttpToolsProtocol.data_received": "010a7ae59a5d3b1a",
    "HttpToolsProtocol._unset_keepalive_if_required": "00a6a4e47214e68e",
    "HttpToolsProtocol.on_message_begin": "96d377fdc7c2baef",
    "HttpToolsProtocol.on_header": "65d62c044f61fdbd",
    "HttpToolsProtocol.on_headers_complete": "1ea8589acfad92d8",
    "HttpToolsProtocol.on_body": "dba9c32aeba35b6a",
    "HttpToolsProtocol.on_message_complete": "1fbad42dc31fc01f",
    "HttpToolsProtocol.on_response_complete": "64e254f28e389e76",
    "HttpToolsProtocol.pause_writing": "17a8fd215d96a13c",
    "HttpToolsProtocol.resume_writing": "7844bbaa8cceb1ef",
    "HttpToolsProtocol.shutdown": "d7351fa33f00d430",
    "HttpToolsProtocol.send_400_response": "ae5a4a3782b646fd",
    "RequestResponseCycle.__init__": "4d2f220910c33c12",
    "RequestResponseCycle.send": "abdd8601b326a8da",
    "RequestResponseCycle.receive": "8124ae006be71184",
    "Config.load": "92b7159dce105a9c",
    "UvicornWorker.__init__": "d51a1f9f91fdc5da",
    "Config.get_loop_factory": "de5a9cb6dc6b3129",
    "Server.startup": "2aa1d70a244bfcf2",
    "Server.shutdown": "9b33c50562992b1e",
}
"""The code `http.protocol` overrides, calls or reads the state of, and where the
worker's config gets its protocol class (`config/gunicorn.conf.py` sets it); and for
`http.accept`, how uvicorn makes the loop from `config.loop` and serves a listening
socket through `loop.create_server(sock=...)`, closing it at shutdown: the first 16
hex digits of the SHA-256 of each one's source in the pinned versions."""


def fingerprint(name: str) -> str:
    owner, attribute = name.split(".")
    source = inspect.getsource(getattr(OWNERS[owner], attribute))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def test_uvicorn_and_httptools_are_the_pinned_versions() -> None:
    assert (uvicorn.__version__, httptools.__version__) == (UVICORN_VERSION, "0.9.0")


def test_the_uvicorn_code_the_protocol_relies_on_is_unchanged() -> None:
    changed = [name for name, expected in FINGERPRINTS.items() if fingerprint(name) != expected]
    assert not changed, f"uvicorn changed {changed}: review http.protocol"


def test_httptools_takes_memoryviews_and_no_bare_lf() -> None:
    """The protocol feeds slices as memoryviews, and finds a header section's end as the
    first CRLF CRLF: llhttp must accept no other line end."""
    events: list[str] = []

    class Callbacks:
        def on_headers_complete(self) -> None:
            events.append("headers")

    parser = httptools.HttpRequestParser(Callbacks())
    parser.feed_data(memoryview(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert events == ["headers"]
    for bare_lf in (b"GET / HTTP/1.1\nHost: x\n\n", b"GET / HTTP/1.1\r\nHost: x\n\r\n"):
        with pytest.raises(httptools.HttpParserError):
            httptools.HttpRequestParser(Callbacks()).feed_data(bare_lf)


# -- one connection, fed read by read ------------------------------------------------------


class Connection:
    """One accepted connection of a real loopback server: `read` hands the protocol a
    read, as the event loop would; `answers` is what the client received."""

    def __init__(self, write_timeout_s: float = 30.0) -> None:
        self.write_timeout_s = write_timeout_s
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        """(method, path, first receive event) of each request the app got."""
        self.state = ServerState()
        self.protocol: ExchangeProtocol | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None  # kept: dropping it would close

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        first = await receive()
        self.requests.append((scope["method"], scope["path"], first))
        body, more = first["body"], first["more_body"]
        while more:
            event = await receive()
            body, more = body + event.get("body", b""), event.get("more_body", False)
        answer = str(len(body)).encode()
        headers = [(b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def open(self) -> None:
        class Protocol(ExchangeProtocol):
            limits = ConnectionLimits(30.0, 30.0, 10, self.write_timeout_s)

        config = Config(
            app=self.app, interface="asgi3", lifespan="off", log_config=None, http=Protocol
        )
        config.load()

        def accept() -> ExchangeProtocol:
            self.protocol = Protocol(config=config, server_state=self.state, app_state={})
            return self.protocol

        server = await asyncio.get_running_loop().create_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        while self.protocol is None:
            await asyncio.sleep(0)

    async def read(self, data: bytes) -> None:
        assert self.protocol is not None
        self.protocol.data_received(data)
        for _ in range(10):  # the app's tasks run
            await asyncio.sleep(0)

    async def answers(self) -> bytes:
        """What the client received, once the server has answered and closed."""
        assert self.protocol is not None and self._reader is not None
        while self.state.tasks:
            await asyncio.sleep(0)
        self.protocol.transport.close()
        return await asyncio.wait_for(self._reader.read(), 10)

    async def body_received(self, length: int) -> int:
        """How many body bytes the client reads of a response of that body `length`,
        until it has them all or the connection ends (an end or a reset)."""
        assert self._reader is not None
        received = b""
        try:
            head = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 ")
            while len(received) < length:
                chunk = await asyncio.wait_for(self._reader.read(1 << 20), 10)
                if not chunk:
                    break
                received += chunk
        except (ConnectionResetError, asyncio.IncompleteReadError):
            pass
        return len(received)


def exchange(reads: list[bytes]) -> tuple[list[tuple[str, str, dict[str, Any]]], bytes]:
    """The requests the app got from these reads, and the bytes the client received."""

    async def run() -> tuple[list[tuple[str, str, dict[str, Any]]], bytes]:
        connection = Connection()
        await connection.open()
        for data in reads:
            await connection.read(data)
        return connection.requests, await connection.answers()

    return asyncio.run(run())


def get_of_size(size: int) -> bytes:
    """A GET whose header section, request line included, is `size` bytes."""
    base = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: \r\n\r\n"
    return base[:-4] + b"p" * (size - len(base)) + b"\r\n\r\n"


def statuses(answers: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)


SPLITS = [1, 2, 3, 4, 5, 100, -100, -5, -4, -3, -2, -1]
"""Where a header section is cut into two reads: near its end, its CRLF CRLF straddles them."""


@pytest.mark.parametrize("split", SPLITS)
def test_a_header_section_at_the_limit_is_served_wherever_the_reads_split_it(split: int) -> None:
    head = get_of_size(MAX_HEADER_BYTES)
    requests, answers = exchange([head[:split], head[split:]])
    assert [path for _, path, _ in requests] == ["/"]
    assert statuses(answers) == [b"200"]


@pytest.mark.parametrize("split", SPLITS)
def test_one_byte_over_the_limit_is_refused_wherever_the_reads_split_it(split: int) -> None:
    head = get_of_size(MAX_HEADER_BYTES + 1)
    requests, answers = exchange([head[:split], head[split:]])
    assert requests == []
    assert statuses(answers) == [b"431"]


def test_a_request_after_a_body_in_the_same_read_has_its_own_count() -> None:
    """A body's bytes count toward no header section: the GET after a POST's body in the
    same read may have 16384 bytes of its own, and one byte more is refused."""
    post = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"b" * 5000
    requests, answers = exchange(
        [post + get_of_size(MAX_HEADER_BYTES)[:9000], get_of_size(MAX_HEADER_BYTES)[9000:]]
    )
    assert [(method, path) for method, path, _ in requests] == [("POST", "/p"), ("GET", "/")]
    assert statuses(answers) == [b"200", b"200"]
    assert b"\r\n\r\n5000HTTP/1.1 200" in answers  # the POST's body, read whole
    requests, answers = exchange([post + get_of_size(MAX_HEADER_BYTES + 1)])
    assert [(method, path) for method, path, _ in requests] == [("POST", "/p")]
    assert statuses(answers) == [b"200", b"431"]


def test_the_app_gets_its_first_event_at_the_end_of_the_headers() -> None:
    """uvicorn alone sends the first `http.request` with the first body bytes; Falcon
    routes only after it, so a body that never came held the request before its 413."""

    async def run() -> tuple[list[tuple[str, str, dict[str, Any]]], bytes]:
        connection = Connection()
        await connection.open()
        await connection.read(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        first_events = [event for _, _, event in connection.requests]
        assert first_events == [{"type": "http.request", "body": b"", "more_body": True}]
        await connection.read(b"12345")
        return connection.requests, await connection.answers()

    requests, answers = asyncio.run(run())
    assert len(requests) == 1
    assert answers.endswith(b"\r\n\r\n5")


BIG_BODY = 32 * 1024 * 1024
"""More than the kernel's buffers on both sides hold: the server's writing pauses."""


async def unread_response(streaming: bool) -> tuple[bool, bool, int]:
    """A GET answered with `BIG_BODY` that the client does not read for 3 x WRITE_TIMEOUT
    (0.2 s): whether the app's last send returned by then, whether the connection was
    closing, and how many bytes the client then received."""
    sent = asyncio.Event()
    connection = Connection(write_timeout_s=0.2)

    async def big(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if streaming:
            scope[STREAMING] = True
        headers = [(b"content-length", str(BIG_BODY).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        half = b"x" * (BIG_BODY // 2)
        await send({"type": "http.response.body", "body": half, "more_body": True})
        await send({"type": "http.response.body", "body": half})  # waits: writing paused
        sent.set()

    connection.app = big  # type: ignore[method-assign]
    await connection.open()
    await connection.read(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.6)
    assert connection.protocol is not None
    closing = connection.protocol.transport.is_closing()
    returned = sent.is_set()
    return returned, closing, await connection.body_received(BIG_BODY)


def test_a_response_the_client_does_not_read_is_dropped_after_write_timeout() -> None:
    """The app's send, waiting for the client, returns once the connection is dropped:
    the request ends instead of holding its task and buffers forever."""
    returned, closing, received = asyncio.run(unread_response(streaming=False))
    assert (returned, closing) == (True, True)
    assert received < BIG_BODY


def test_an_event_stream_is_left_to_the_stream_hub() -> None:
    """A `STREAMING` response is not timed: its reader gets everything, however late."""
    returned, closing, received = asyncio.run(unread_response(streaming=True))
    assert (returned, closing) == (False, False)
    assert received == BIG_BODY


@pytest.mark.parametrize("name", [b"Content-Length", b"content-length", b"CONTENT-LENGTH"])
@pytest.mark.parametrize(
    ("size", "expected"), [(MAX_HEADER_BYTES, b"200"), (MAX_HEADER_BYTES + 1, b"431")]
)
def test_a_request_after_a_body_split_over_two_reads_has_its_own_count(
    name: bytes, size: int, expected: bytes
) -> None:
    """The first read holds a POST's head and part of its body, the second the rest of
    the body and a GET: the body's end is known from its declared length, however the
    header is spelled."""
    post = b"POST /p HTTP/1.1\r\nHost: x\r\n" + name + b": 5000\r\n\r\n" + b"b" * 5000
    split = len(post) - 4000
    requests, answers = exchange([post[:split], post[split:] + get_of_size(size)])
    methods = [method for method, _, _ in requests]
    assert methods == (["POST", "GET"] if expected == b"200" else ["POST"])
    assert statuses(answers) == [b"200", expected]
    assert b"\r\n\r\n5000HTTP/1.1 " in answers  # the POST's body, read whole
