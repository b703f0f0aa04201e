"""A guard for tests that must not reach the network beyond loopback.

Inside `loopback_only()`, a name lookup of anything but a loopback name or address and a
connection to anything but a loopback address are refused (an `OSError`, as a network
without a route would answer) and recorded, so that a test can assert that none was
even tried. It patches the `socket` module, so it covers every thread of the process.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def is_loopback(host: Any) -> bool:
    if host is None or (isinstance(host, str) and host.lower() in LOOPBACK_NAMES):
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@contextmanager
def loopback_only() -> Iterator[list[str]]:
    """Yields the list of refused attempts (`lookup <host>`, `connect <host>`)."""
    refused: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_loopback(host):
            refused.append(f"lookup {host}")
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: beyond loopback, refused")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and not is_loopback(address[0]):
            refused.append(f"connect {address[0]}")
            raise OSError(f"{address[0]}: beyond loopback, refused")
        real_connect(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        patch.setattr(socket.socket, "connect", connect)
        yield refused
