"""The Server-Sent Events wire format, rendered once for every reader of a symbol."""

from __future__ import annotations

PING = b": keep-alive\n\n"
"""A comment line: keeps idle proxies from dropping a quiet stream."""


def sse(event: str, data: bytes) -> bytes:
    """One event in the SSE wire format (`data` is one line of JSON)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class Chunk:
    """Events already in the wire format. Falcon's SSE sends whatever `serialize()`
    returns, so one rendering serves every subscriber and a batch is one write."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self, handler: object = None) -> bytes:
        return self.data
