"""What `listening_sockets` reports, read from /proc (no Ray needed): a loopback socket is
found and judged loopback, and every other address is judged not to be."""

from __future__ import annotations

import ipaddress
import os
import socket

from miniexchange.cluster.head import Listening, listening_sockets, proc_address


def test_a_socket_listening_on_loopback_is_found_with_its_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        found = [s for s in listening_sockets({os.getpid(): "test"}) if s.port == port]
    assert [(s.protocol, str(s.address), s.loopback) for s in found] == [("tcp", "127.0.0.1", True)]


def test_a_bound_socket_that_does_not_listen_is_not_reported() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        assert [s for s in listening_sockets({os.getpid(): "test"}) if s.port == port] == []


def test_proc_addresses_are_decoded_word_by_word() -> None:
    assert proc_address("0100007F") == ipaddress.ip_address("127.0.0.1")
    assert proc_address("0000000000000000FFFF00000100007F") == ipaddress.ip_address(
        "::ffff:127.0.0.1"
    )
    assert proc_address("00000000000000000000000001000000") == ipaddress.ip_address("::1")


def test_only_loopback_addresses_count_as_loopback() -> None:
    def judged(address: str) -> bool:
        return Listening(1, "p", "tcp", ipaddress.ip_address(address), 1).loopback

    assert [judged(a) for a in ("127.0.0.1", "127.5.0.1", "::1", "::ffff:127.0.0.1")] == [True] * 4
    assert [judged(a) for a in ("0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2")] == [False] * 4
