"""The event stream on the real server, read with `requests`.

A reader sees the book on connect, then a `trade` and a new `book` once orders cross. A
reader that stops reading holds up nothing: orders keep being answered while it is
paused, and the server does not keep its backlog: past 1000 unsent trade events it
closes the stream (asserted from the reader's side: the events stop short and the
connection ends). On SIGTERM open streams end at once, before the server waits for
in-flight requests.
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

from tests.e2e.conftest import Server

FAR = "2030-01-01T00:00:00Z"
READ_GUARD_S = 60  # a socket timeout only so that a broken server fails the test, not hangs it


class Api:
    """Register brokers and submit orders over one keep-alive session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def register(self, broker_id: str, cash: int, **holdings: int) -> None:
        body = {
            "broker_id": broker_id,
            "initial_cash": cash,
            "initial_holdings": [{"symbol": s, "quantity": q} for s, q in holdings.items()],
        }
        response = self.session.post(f"{self.url}/brokers", json=body, timeout=READ_GUARD_S)
        assert response.status_code == 201, response.text

    def order(
        self, broker_id: str, side: str, quantity: int, price: float | None = None,
        symbol: str = "AAPL",
    ) -> Any:  # fmt: skip
        body: dict[str, Any] = {
            "type": "market" if price is None else "limit", "broker_id": broker_id,
            "document_number": "1", "side": side, "symbol": symbol, "quantity": quantity,
        }  # fmt: skip
        if price is not None:
            body |= {"price": price, "expires_at": FAR}
        response = self.session.post(f"{self.url}/orders", json=body, timeout=READ_GUARD_S)
        assert response.status_code == 201, response.text
        return response.json()


class Events:
    """Server-sent events read from a streamed response, as they arrive."""

    def __init__(self, response: requests.Response) -> None:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/event-stream"
        self._chunks = response.iter_content(chunk_size=None)
        self._buffer = b""
        self.comments = 0

    def next(self) -> tuple[str, Any] | None:
        """The next event as (name, parsed data), or None once the server closed the
        stream: cleanly, or cut off (a stream ended while a write was stuck)."""
        while True:
            while b"\n\n" not in self._buffer:
                try:
                    chunk = next(self._chunks, None)
                except requests.exceptions.ChunkedEncodingError:
                    chunk = None
                if chunk is None:
                    return None
                self._buffer += chunk
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            name, data = "message", None
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    data = json.loads(line[len("data: ") :])
            if data is not None:
                return name, data

    def expect(self, name: str) -> Any:
        event = self.next()
        assert event is not None, f"the stream ended before a {name!r} event"
        assert event[0] == name, event
        return event[1]


class Pipeline:
    """`POST /orders` pipelined on raw HTTP/1.1 connections: thousands of orders in a
    few seconds from one thread, where a round trip each would take a minute or more
    on a busy machine. Several connections, so that the server has several orders at
    once (it answers a connection's requests one after the other): with `ENGINE=ray`
    an order's answer waits for its batch to pass the shards, and a batch carries what
    came meanwhile."""

    CONNECTIONS = 8

    def __init__(self, port: int) -> None:
        self._sockets = [
            socket.create_connection(("127.0.0.1", port), timeout=READ_GUARD_S)
            for _ in range(self.CONNECTIONS)
        ]
        self._responses = [sock.makefile("rb") for sock in self._sockets]

    def post(self, bodies: list[dict[str, Any]]) -> list[Any]:
        """Send every order at once, spread over the connections, then read the
        answers, in the orders' order; each must be a 201."""
        lanes = list(zip(self._sockets, self._responses, strict=True))
        chunk = -(-len(bodies) // len(lanes))
        sent = []
        for start, (sock, responses) in zip(range(0, len(bodies), chunk), lanes, strict=False):
            mine = bodies[start : start + chunk]
            sock.sendall(b"".join(self._request(body) for body in mine))
            sent.append((responses, len(mine)))
        return [self._read_answer(responses) for responses, count in sent for _ in range(count)]

    @staticmethod
    def _request(body: dict[str, Any]) -> bytes:
        data = json.dumps(body).encode()
        head = f"POST /orders HTTP/1.1\r\nHost: exchange\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        return head.encode() + data

    @staticmethod
    def _read_answer(responses: Any) -> Any:
        status = int(responses.readline().split()[1])
        length = 0
        while (line := responses.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answer = responses.read(length)
        assert status == 201, answer
        return json.loads(answer)

    def close(self) -> None:
        for responses, sock in zip(self._responses, self._sockets, strict=True):
            responses.close()
            sock.close()


def open_stream(url: str, session: requests.Session | None = None) -> requests.Response:
    return (session or requests.Session()).get(
        f"{url}/stocks/AAPL/stream", stream=True, timeout=READ_GUARD_S
    )


class SmallReceiveBuffer(HTTPAdapter):
    """A client socket with a 4 KiB receive buffer: a paused reader's window fills up
    after a few KiB, so the server's writes block as they would for a stalled phone."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = [
            *HTTPConnection.default_socket_options,
            (socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),
        ]
        super().init_poolmanager(*args, **kwargs)


@pytest.fixture
def api(server: Server) -> Iterator[Api]:
    client = Api(server.url)
    client.register("S", 0, AAPL=10_000_000)
    client.register("B", 1_000_000_000)
    yield client
    client.session.close()


def level(price: float, total: int, count: int) -> dict[str, Any]:
    return {"price": price, "total_quantity": total, "order_count": count}


def test_a_reader_sees_the_book_then_a_trade_and_the_new_book(server: Server, api: Api) -> None:
    api.order("S", "ask", 10, 150.0)
    api.order("B", "bid", 5, 149.5)
    with open_stream(server.url) as response:
        events = Events(response)
        book = events.expect("book")
        assert (book["bids"], book["asks"], book["spread"]) == (
            [level(149.5, 5, 1)],
            [level(150.0, 10, 1)],
            0.5,
        )
        bid = api.order("B", "bid", 4, 150.0)
        assert bid["status"] == "filled"
        trade = events.expect("trade")
        assert trade == bid["trades"][0]  # the public trade object: no broker or order ids
        assert set(trade) == {"trade_id", "price", "quantity", "executed_at"}
        book = events.expect("book")
        assert book["asks"] == [level(150.0, 6, 1)]
        assert book["bids"] == [level(149.5, 5, 1)]


ROUND = 200  # resting asks swept by one market bid: ROUND trades per matching pass
ROUNDS = 50
ASK = {
    "type": "limit", "broker_id": "S", "document_number": "1", "side": "ask",
    "symbol": "AAPL", "price": 100, "quantity": 1, "expires_at": FAR,
}  # fmt: skip
SWEEP = {
    "type": "market", "broker_id": "B", "document_number": "1", "side": "bid",
    "symbol": "AAPL", "quantity": ROUND,
}  # fmt: skip


def test_a_stalled_reader_holds_up_no_order_and_is_cut_off(server: Server, api: Api) -> None:
    """10,000 trades (~1.3 MiB of trade events) against a reader that stops after the
    first book. What can wait for it: its socket's buffers (the server caps its send
    buffer at 512 KiB, config/gunicorn.conf.py; the reader's is 4 KiB), the server's
    64 KiB transport buffer, and at most 1000 unsent trade events in the stream. That is
    about 5000 events: past them the server must close the stream, not keep the rest."""
    stalled_session = requests.Session()
    stalled_session.mount("http://", SmallReceiveBuffer())
    pipeline = Pipeline(server.port)
    with open_stream(server.url, stalled_session) as stalled:
        stalled_events = Events(stalled)
        assert stalled_events.expect("book")["asks"] == []
        # The reader is paused from here on. Every order is still answered with a 201
        # (`Pipeline.post` asserts it) while it does not read.
        trade_ids: list[str] = []
        for _ in range(ROUNDS):
            pipeline.post([ASK] * ROUND)
            (sweep,) = pipeline.post([SWEEP])
            trade_ids += [trade["trade_id"] for trade in sweep["trades"]]
        assert len(trade_ids) == ROUND * ROUNDS

        # Another reader connects meanwhile and is served at once, from a fresh book.
        with open_stream(server.url) as fresh:
            book = Events(fresh).expect("book")
            assert (book["bids"], book["asks"]) == ([], [])

        # The paused reader resumes: it gets what was already on its way, in order, and
        # then the end of the stream, well short of every trade.
        received = []
        while (event := stalled_events.next()) is not None:
            if event[0] == "trade":
                received.append(event[1]["trade_id"])
        assert 0 < len(received) < len(trade_ids)
        assert received == trade_ids[: len(received)]
    stalled_session.close()
    pipeline.close()
    assert api.order("S", "ask", 1, 100.0)["status"] == "pending"  # the exchange goes on


def test_shutdown_closes_open_streams_at_once(tmp_path: Any) -> None:
    """With an hour of SHUTDOWN_TIMEOUT, a stream that stayed open would hold the server
    that long: the stream's end, then the server's exit, show it was closed at once."""
    server = Server(
        {"DATABASE_PATH": ":memory:", "SHUTDOWN_TIMEOUT": "1h"}, tmp_path / "server.log"
    )
    try:
        Api(server.url).register("S", 0, AAPL=1)
        with open_stream(server.url) as response:
            events = Events(response)
            events.expect("book")
            server.process.send_signal(signal.SIGTERM)
            assert events.next() is None  # the server ended the stream
        assert server.process.wait(timeout=READ_GUARD_S) == 0
        assert "timeout graceful shutdown exceeded" not in server.output()
    finally:
        server.stop()
