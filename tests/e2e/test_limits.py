"""The HTTP limits on the real server, through raw sockets: header size and time, body
time and declared size, connections and event streams served at once.

The servers run with small limits (READ_TIMEOUT=1s, MAX_CONNECTIONS=3, MAX_STREAMS=1) so
that the tests are quick. No test measures time: the order of events shows what was
waited for (a 413 arrives while a request sent before it still waits for its 408; a
connection closed for its half header section while an older idle one still serves).
The socket timeout only stops a broken server from hanging the suite.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import requests

from tests.e2e.conftest import ENGINES, Server, engine_or_skip

GUARD_S = 15.0
"""Socket timeout: a server that never answers fails the test instead of hanging it."""
READ_TIMEOUT = "1s"
MAX_HEADER_BYTES = 16_384
HEADERS_TOO_LARGE = {
    "error": "headers_too_large",
    "message": "Request headers must not exceed 16384 bytes",
}
OVERLOADED = {
    "error": "overloaded",
    "message": "The exchange is at its connection limit; retry later",
}
ORDER_HEAD = (
    b"POST /orders HTTP/1.1\r\nHost: exchange\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n"
)


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def start(tmp_path: Path, engine: str = "embedded", **env: str) -> Server:
    return Server(
        {"DATABASE_PATH": ":memory:", "READ_TIMEOUT": READ_TIMEOUT, **env},
        tmp_path / "server.log",
        engine=engine,
    )


@pytest.fixture(scope="module", params=ENGINES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    running = start(tmp_path_factory.mktemp("limits"), engine_or_skip(request.param))
    try:
        yield running
    finally:
        running.stop()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=GUARD_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class Reader:
    """The responses on one connection, one at a time (pipelined ones included)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def response(self) -> Response:
        """The next response; its body by Content-Length (none without one: a stream)."""
        while True:
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if found:
                status_line, *lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    return Response(int(status_line.split()[1]), headers, rest[:length])
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed after {self.buffer!r}"
            self.buffer += chunk

    def closed(self) -> bool:
        """Nothing more came before the server closed the connection."""
        return self.buffer == b"" and read_to_end(self.sock) == b""


def read_response(sock: socket.socket) -> Response:
    """One response on a connection that stays open, with nothing sent after it yet."""
    return Reader(sock).response()


def final_response(sock: socket.socket, status: int) -> Response:
    """The one response, of this status, before the server closes the connection."""
    reader = Reader(sock)
    response = reader.response()
    assert response.status == status, response
    assert reader.closed()
    return response


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: exchange\r\n" + extra + b"\r\n"


def head_of_size(size: int) -> bytes:
    """A GET /healthz whose header section, request line included, is `size` bytes."""
    base = get("/healthz", b"X-Padding: \r\n")
    padded = get("/healthz", b"X-Padding: " + b"p" * (size - len(base)) + b"\r\n")
    assert len(padded) == size
    return padded


# -- headers -------------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server: Server) -> None:
    with connect(server) as sock:
        assert read_to_end(sock) == b""


def test_half_a_header_section_then_silence_is_closed_without_an_answer(
    server: Server,
) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: exch")
        assert read_to_end(sock) == b""


def test_an_idle_keep_alive_connection_waits_for_idle_timeout_not_read_timeout(
    server: Server,
) -> None:
    """Idle after a response, a connection has IDLE_TIMEOUT (60s) for its next byte; a new
    connection has READ_TIMEOUT (1s) for its header section, and so does one whose next
    request has begun. The idle one is still served after both others were closed."""
    with connect(server) as idle, connect(server) as started:
        idle.sendall(get("/healthz"))
        assert read_response(idle).status == 200
        started.sendall(get("/healthz"))
        assert read_response(started).status == 200
        started.sendall(b"GET /healthz HTTP/1.1\r\n")
        with connect(server) as fresh:
            assert read_to_end(fresh) == b""
        assert read_to_end(started) == b""
        idle.sendall(get("/healthz"))
        assert read_response(idle).status == 200


def test_a_header_section_over_16384_bytes_is_refused_431_and_the_connection_closes(
    server: Server,
) -> None:
    with connect(server) as sock:
        sock.sendall(get("/healthz", b"X-Big: " + b"b" * 17 * 1024 + b"\r\n"))
        response = final_response(sock, 431)
    assert response.json() == HEADERS_TOO_LARGE
    assert response.headers["content-type"] == "application/json"
    assert response.headers["connection"] == "close"
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(("size", "status"), [(MAX_HEADER_BYTES, 200), (MAX_HEADER_BYTES + 1, 431)])
def test_the_header_limit_counts_every_byte_of_the_section(
    server: Server, size: int, status: int
) -> None:
    with connect(server) as sock:
        sock.sendall(head_of_size(size))
        if status == 200:
            assert read_response(sock).status == 200
            sock.sendall(get("/healthz"))  # the connection goes on
            assert read_response(sock).status == 200
        else:
            final_response(sock, 431)


def test_a_10_mib_header_is_refused_after_its_first_16384_bytes(server: Server) -> None:
    """The server stops reading the header at the limit, answers, and drops the rest."""
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: ")
        sent = 0
        try:
            while sent < 10 * 1024 * 1024:
                sock.sendall(b"b" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed its side: the answer is already here
        response = final_response(sock, 431)
    assert response.json() == HEADERS_TOO_LARGE


def test_a_pipelined_request_has_its_own_header_limit(server: Server) -> None:
    """Three requests in one write: each header section is counted from its own start."""
    with connect(server) as sock:
        sock.sendall(
            head_of_size(MAX_HEADER_BYTES)
            + head_of_size(MAX_HEADER_BYTES)
            + get("/healthz", b"X-Big: " + b"b" * MAX_HEADER_BYTES + b"\r\n")
        )
        reader = Reader(sock)
        statuses = [reader.response().status for _ in range(2)]
        third = reader.response()
        assert (statuses, third.status, third.json()) == ([200, 200], 431, HEADERS_TOO_LARGE)
        assert reader.closed()


# -- body ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b'{"broker_id": "broker-1",'])
def test_a_body_not_complete_within_read_timeout_is_answered_408_and_closed(
    server: Server, sent: bytes
) -> None:
    with connect(server) as sock:
        sock.sendall(ORDER_HEAD % 50 + sent)
        response = final_response(sock, 408)
    assert response.json() == {
        "error": "request_timeout",
        "message": "Request body not received within 1s",
    }
    assert response.headers["connection"] == "close"


def test_a_declared_body_over_1_mib_is_refused_413_without_waiting_for_it(
    server: Server,
) -> None:
    """Sent after a request that waits for its body, the 10 GiB one is answered first."""
    with connect(server) as waiting, connect(server) as huge:
        waiting.sendall(ORDER_HEAD % 50)
        huge.sendall(ORDER_HEAD % (10 * 1024**3))
        readable, _, _ = select.select([waiting, huge], [], [], GUARD_S)
        assert readable == [huge]
        response = read_response(huge)
        assert response.status == 413
        assert response.json() == {
            "error": "payload_too_large",
            "message": "Request body must not exceed 1048576 bytes",
        }
        final_response(waiting, 408)


def test_a_complete_body_is_served_and_the_connection_goes_on(server: Server) -> None:
    body = json.dumps(
        {"broker_id": "broker-limits", "initial_cash": 100, "initial_holdings": []}
    ).encode()
    head = (
        b"POST /brokers HTTP/1.1\r\nHost: exchange\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with connect(server) as sock:
        sock.sendall(head + body[:10])
        sock.sendall(body[10:] + get("/brokers/broker-limits/balance"))
        reader = Reader(sock)  # both answers may come in one read
        assert (reader.response().status, reader.response().status) == (201, 200)


# -- connections and streams ---------------------------------------------------------------


def served(server: Server, attempts: int = 100) -> socket.socket:
    """A connection the server serves: once a closed connection's place is free (the server
    sees the close a moment after the client), a new one is answered 200."""
    for _ in range(attempts):
        sock = connect(server)
        sock.sendall(get("/healthz"))
        if read_response(sock).status == 200:
            return sock
        sock.close()
        time.sleep(0.05)
    raise AssertionError(f"no connection served in {attempts} attempts")


def test_past_max_connections_a_new_connection_gets_503_and_is_closed(tmp_path: Path) -> None:
    server = start(tmp_path, MAX_CONNECTIONS="3")
    try:
        held = [served(server) for _ in range(3)]
        with connect(server) as extra:
            extra.sendall(get("/healthz", b"X-Request-Id: over-the-limit\r\n"))
            response = final_response(extra, 503)
        assert response.json() == OVERLOADED
        assert response.headers["retry-after"] == "1"
        assert response.headers["connection"] == "close"
        assert response.headers["x-request-id"] == "over-the-limit"
        for sock in held:  # the three served connections are still served
            sock.sendall(get("/healthz"))
            assert read_response(sock).status == 200
        held.pop().close()
        held.append(served(server))  # its place is free again, and only its place:
        with connect(server) as extra:
            extra.sendall(get("/healthz"))
            final_response(extra, 503)
        for sock in held:
            sock.close()
    finally:
        server.stop()


def test_a_stream_past_max_streams_gets_the_same_503(tmp_path: Path) -> None:
    server = start(tmp_path, MAX_STREAMS="1")
    try:
        registration = {
            "broker_id": "broker-1",
            "initial_cash": 0,
            "initial_holdings": [{"symbol": "AAPL", "quantity": 1}],
        }
        created = requests.post(f"{server.url}/brokers", json=registration, timeout=GUARD_S)
        assert created.status_code == 201
        with connect(server) as first:
            first.sendall(get("/stocks/AAPL/stream"))
            assert first.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            with connect(server) as second:
                second.sendall(get("/stocks/AAPL/stream"))
                response = final_response(second, 503)
            assert response.json() == OVERLOADED
            assert response.headers["retry-after"] == "1"
        # the first stream has ended: its place is free again
        for _ in range(100):
            with connect(server) as third:
                third.sendall(get("/stocks/AAPL/stream"))
                if third.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n"):
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("the stream's place was not freed")
    finally:
        server.stop()
