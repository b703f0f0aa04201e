"""The exchange's HTTP/1.1 connection: uvicorn's httptools protocol, with a bounded cost
for every connection (header size and time, body time, connections served at once).

Why a subclass: uvicorn 0.54.0 over httptools 0.9.0 bounds none of this. httptools keeps
a header of any size (joining its pieces by repeated concatenation); nothing times a
header section, so a silent connection stays open forever; uvicorn hands the app its
first `http.request` event only with body bytes, while Falcon routes only after that
event, so a declared body that never came was never answered, not even with its 413;
and `limit_concurrency` answers in plain text and counts tasks, not connections.

Pinned to uvicorn 0.54.0 (`UVICORN_VERSION`, and constraints.txt): this overrides
`connection_made`, `connection_lost`, `data_received`, `on_headers_complete`,
`on_message_complete`, `on_response_complete`, `pause_writing` and `resume_writing` of
`HttpToolsProtocol`, and reads its
per-connection state (`parser`, `cycle`, `headers`, `timeout_keep_alive_task`) and the
cycle's (`message_event`, `response_started`, `response_complete`, `keep_alive`).
`tests/http/test_protocol.py` fails if any of that code changes: read the new version
before moving the pin.

A connection's life here:

- Header section: its bytes are counted from its first one, request line included, and
  the parser is fed exactly up to its end (the first CRLF CRLF: llhttp accepts no bare
  LF), and a body of declared length exactly to its end, so each request's count
  starts where that request starts, a pipelined one too (after a chunked body, whose
  end is the parser's to find, a request in the same read is counted from the next).
  Past 16,384 bytes: 431, and nothing more is parsed. Not complete within READ_TIMEOUT
  of the accept, or of its first byte after a response: closed without an answer. An
  idle keep-alive connection (no byte since its last response) has IDLE_TIMEOUT.
- Body: the app gets its first event at the end of the headers, so it routes and
  refuses at once (413 for a declared length over 1 MiB); the body reader's deadline
  answers 408 (`http.core`). Here, a body still incomplete READ_TIMEOUT after its
  headers ends the connection once an answer has left (a 413, or a route that reads no
  body), so that nothing waits for a body that never comes.
- Response: a body that the client does not read for WRITE_TIMEOUT (the send buffer
  stays full, so writing stays paused) ends the connection; the app's waiting send then
  returns and its request ends. Only paused writing arms the timer, and event streams
  (`STREAMING`) are left to the stream hub, which ends a stream stuck in a write.
- Connections: at most MAX_CONNECTIONS are served at once. One more is read up to the
  end of its header section, with the same limits, and answered 503 `overloaded`
  (event streams are counted by `http.stream_hub`, within this).
- A refused connection (431, 503) is closed with care: the answer, then the end of our
  side (FIN), then what the client still sends is read and dropped until it closes or
  READ_TIMEOUT passes. Closing with unread bytes would reset the connection, and the
  client could lose the answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Final

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from miniexchange.http.errors import (
    HEADERS_TOO_LARGE_MESSAGE,
    MAX_HEADER_BYTES,
    OVERLOADED_MESSAGE,
    error_body,
)
from miniexchange.http.observability import request_id_of
from miniexchange.http.timeouts import STREAMING
from miniexchange.settings import Settings, to_seconds

__all__ = ["UVICORN_VERSION", "ConnectionLimits", "ExchangeProtocol", "serving_protocol"]

log = logging.getLogger("miniexchange.http")

UVICORN_VERSION: Final = "0.54.0"
"""The uvicorn whose `HttpToolsProtocol` this subclass was written against."""

HEAD_END: Final = b"\r\n\r\n"
HEAD_END_LEN: Final = 4
UNREAD: Final = -1
"""`_body_left` before the declared length was looked up."""
CHUNKED: Final = -2
"""`_body_left` of a chunked body: its end is the parser's to find."""


class ConnectionLimits:
    """One server's limits, and its count of the connections it serves."""

    __slots__ = (
        "idle_timeout_s",
        "max_connections",
        "read_timeout_s",
        "served",
        "write_timeout_s",
    )

    def __init__(
        self,
        read_timeout_s: float,
        idle_timeout_s: float,
        max_connections: int,
        write_timeout_s: float,
    ) -> None:
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.write_timeout_s = write_timeout_s
        self.served = 0

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            to_seconds(settings.read_timeout_us),
            to_seconds(settings.idle_timeout_us),
            settings.max_connections,
            to_seconds(settings.write_timeout_us),
        )


def serving_protocol(settings: Settings) -> type[ExchangeProtocol]:
    """The class for uvicorn's `Config(http=...)`: the protocol with these settings' limits
    (set by `config/gunicorn.conf.py` on the worker's config)."""

    class ServingProtocol(ExchangeProtocol):
        limits = ConnectionLimits.of(settings)

    return ServingProtocol


class _Refusal:
    """The parser's callbacks on a connection past MAX_CONNECTIONS: only what its 503
    needs (the client's request id), then the answer."""

    __slots__ = ("protocol", "request_id")

    def __init__(self, protocol: ExchangeProtocol) -> None:
        self.protocol = protocol
        self.request_id: bytes | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-request-id":  # several fields: joined, so unusable (replaced)
            self.request_id = value if self.request_id is None else self.request_id + b", " + value

    def on_headers_complete(self) -> None:
        self.protocol.refuse(503, "overloaded", OVERLOADED_MESSAGE, self.request_id)


def _raw_length(data: bytes, end: int) -> int:
    """The `Content-Length` of the header section `data[:end]`, read from the raw bytes
    in its two usual spellings, or -1 (none found, or not a number: the slow path
    decides). llhttp refuses a section with two, or with a bad one."""
    found = data.find(b"\r\nContent-Length:")  # unbounded finds: cheaper arguments
    if not 0 <= found < end:
        found = data.find(b"\r\ncontent-length:")
        if not 0 <= found < end:
            return -1
    value_at = found + 17
    try:
        return int(data[value_at : data.find(b"\r\n", value_at)])
    except ValueError:
        return -1


class ExchangeProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # IDLE_TIMEOUT as set, not gunicorn's `keepalive` (whole seconds)
        self.timeout_keep_alive = self.limits.idle_timeout_s  # type: ignore[assignment]
        self._in_head = True  # reading a header section (or waiting for one)
        self._head_bytes = 0  # of the current header section, so far
        self._tail = b""  # its last 3 bytes: its end may straddle two reads
        self._body_left = UNREAD
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._counted = False  # among the `limits.served`
        self._stopped = False  # nothing more is parsed: refused, or not HTTP
        self._unsent_refusal = b""  # a refusal's answer not yet written

    # -- the connection ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        if limits.served < limits.max_connections:
            limits.served += 1
            self._counted = True
        else:
            self.parser = httptools.HttpRequestParser(_Refusal(self))
        self._head_timer = self.loop.call_later(limits.read_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self._cancel_timers()
        super().connection_lost(exc)

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.limits.served -= 1

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._close_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._close_timer = self._write_timer = None

    def _idle(self) -> bool:
        """No request in flight: an answer written now would overtake none."""
        cycle = self.cycle
        return cycle is None or cycle.response_complete

    # -- reading -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return  # a refused connection: what it still sends is read and dropped
        self._unset_keepalive_if_required()
        if self._in_head and not self._head_bytes:
            # The common read first: one whole request, or one request's start (its whole
            # header section, then body bytes only). One feed, no slices.
            size = len(data)
            end = data.find(HEAD_END) + HEAD_END_LEN
            # found, within the limit, and not within empty lines before a request line
            if HEAD_END_LEN < end <= MAX_HEADER_BYTES:
                left = UNREAD if end == size else _raw_length(data, end)
                if end == size or left >= size - end:
                    if self._feed(data) and not self._in_head:
                        self._body_left = UNREAD if end == size else left - (size - end)
                        self._await_body()
                    return
        self._read(data)

    def _read(self, data: bytes) -> None:
        """Any read: header sections counted and fed to their exact end, bodies of a
        declared length to theirs, so a request that follows starts its own count."""
        size = len(data)
        start = 0
        while start < size:
            if self._in_head:
                room = MAX_HEADER_BYTES - self._head_bytes
                end = self._head_end(data, start, room)
                if end < 0:  # the section goes on past this read
                    if size - start > room:
                        self.refuse(431, "headers_too_large", HEADERS_TOO_LARGE_MESSAGE)
                        return
                    self._head_bytes += size - start
                    self._tail = (self._tail + data[max(start, size - 3) :])[-3:]
                    if not self._feed(data if start == 0 else memoryview(data)[start:]):
                        return
                    break
                self._head_bytes += end - start
                piece = data if start == 0 and end == size else memoryview(data)[start:end]
                if not self._feed(piece):
                    return
                if self._head_bytes:  # still counting: empty lines before a request line
                    self._tail = (self._tail + data[max(start, end - 3) : end])[-3:]
                start = end
            else:
                left = self._body_left
                if left == UNREAD:
                    left = self._body_left = self._declared_length()
                rest = size - start
                if 0 < left < rest:  # the body ends in this read; a request may follow
                    end = start + left
                    self._body_left = 0
                    if not self._feed(memoryview(data)[start:end]):
                        return
                    start = end
                    continue
                if left > 0:
                    self._body_left = left - rest
                if not self._feed(data if start == 0 else memoryview(data)[start:]):
                    return
                break
        if self._in_head:
            if self._head_bytes and self._head_timer is None and self._idle():
                # a request's first bytes after a response: READ_TIMEOUT from now
                self._head_timer = self.loop.call_later(
                    self.limits.read_timeout_s, self._head_timed_out
                )
        elif self._body_timer is None:
            self._await_body()

    def _await_body(self) -> None:
        """The headers ended in this read, the body did not: wake the app now (Falcon
        routes only after the first `http.request` event, which uvicorn sends with body
        bytes), and time the body."""
        self.cycle.message_event.set()
        self._body_timer = self.loop.call_later(self.limits.read_timeout_s, self._body_timed_out)

    def _head_end(self, data: bytes, start: int, room: int) -> int:
        """Where the header section ends in `data` (the index after its CRLF CRLF), if it
        does within `room` bytes from `start`; else -1."""
        tail = self._tail
        if tail:
            found = (tail + data[start : start + 3]).find(HEAD_END)
            if found >= 0:
                end = start + found + HEAD_END_LEN - len(tail)
                return end if end - start <= room else -1
        found = data.find(HEAD_END, start, start + room)
        return -1 if found < 0 else found + HEAD_END_LEN

    def _declared_length(self) -> int:
        """The current request's `Content-Length` (as parsed), or CHUNKED."""
        for name, value in self.headers:
            if name == b"content-length":
                return int(value)
        return CHUNKED

    def _feed(self, data: bytes | memoryview) -> bool:
        """Parse as uvicorn's `data_received` does; False once nothing more may be."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
            self._stopped = True
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return not self._stopped

    # -- parser callbacks and the response's end ----------------------------------------

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._tail = b""
        timer = self._head_timer
        if timer is not None:
            timer.cancel()
            self._head_timer = None
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._body_left = UNREAD
        timer = self._body_timer
        if timer is not None:
            timer.cancel()
            self._body_timer = None
        HttpToolsProtocol.on_message_complete(self)

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        if self._unsent_refusal:  # a refused request waits for the answers before it
            if self._idle() and not self.transport.is_closing():
                self._unset_keepalive_if_required()
                self._send_refusal()
            return
        if self._head_bytes and self.timeout_keep_alive_task is not None:
            # the next request's header section has begun: READ_TIMEOUT, not IDLE_TIMEOUT
            self._unset_keepalive_if_required()
            self._head_timer = self.loop.call_later(
                self.limits.read_timeout_s, self._head_timed_out
            )

    # -- writing -----------------------------------------------------------------------

    def pause_writing(self) -> None:
        """The send buffer is full: the client has WRITE_TIMEOUT to read some of it."""
        HttpToolsProtocol.pause_writing(self)
        cycle = self.cycle
        streaming = cycle is not None and STREAMING in cycle.scope
        if self._write_timer is None and not streaming:
            self._write_timer = self.loop.call_later(
                self.limits.write_timeout_s, self._write_timed_out
            )

    def resume_writing(self) -> None:
        HttpToolsProtocol.resume_writing(self)
        timer = self._write_timer
        if timer is not None:
            timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        """Dropped, not closed: a close would wait for the unread bytes to leave. The
        connection's loss resumes the app's waiting send, and its request ends."""
        self._write_timer = None
        log.info(
            "response not read within WRITE_TIMEOUT: connection dropped",
            extra={"event": "write_timeout"},
        )
        self.transport.abort()

    # -- timeouts and refusals ---------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            # the app answers (408 if it is reading the body), then the connection closes
            cycle.keep_alive = False
        elif not self.transport.is_closing():
            self.transport.close()

    def refuse(self, status: int, code: str, message: str, request_id: bytes | None = None) -> None:
        """Answer `status` with the error, end our side, drop what still comes. Behind
        requests still being answered (pipelined), the answer waits for theirs."""
        self._stopped = True
        self._release()
        self._cancel_timers()
        chosen_id = request_id_of(request_id.decode("latin-1") if request_id else None)
        body = error_body(code, message)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nx-request-id: %s\r\n"
            % (len(body), chosen_id.encode())
        )
        if status == 503:
            head.append(b"retry-after: 1\r\n")
        head += [b"connection: close\r\n\r\n", body]
        log.info(
            "request refused",
            extra={
                "event": "request_refused",
                "request_id": chosen_id,
                "status": status,
                "error": code,
            },
        )
        self._unsent_refusal = b"".join(head)
        if self._idle():
            self._send_refusal()

    def _send_refusal(self) -> None:
        transport = self.transport
        transport.write(self._unsent_refusal)
        self._unsent_refusal = b""
        if transport.can_write_eof():
            transport.write_eof()
        self._close_timer = self.loop.call_later(self.limits.read_timeout_s, transport.close)
