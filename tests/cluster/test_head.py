"""A real local Ray head: an actor answers through it, every socket of its processes
listens on loopback only, usage statistics and the dashboard are off (stopping it:
test_head_stop.py).

Skipped without the `ray` extra (the default test venv has none)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from miniexchange.cluster import head as head_module
from miniexchange.cluster.head import (
    Head,
    listening_sockets,
)
from tests.cluster.helpers import joined_head, ray_or_skip

ray: Any = ray_or_skip()


@ray.remote
class Counter:
    def __init__(self) -> None:
        self.count = 0

    def add(self, amount: int) -> tuple[int, int]:
        self.count += amount
        return self.count, os.getpid()


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    with joined_head() as started:
        yield started


def test_an_actor_answers_in_a_process_of_the_head(head: Head) -> None:
    counter = Counter.remote()
    assert ray.get(counter.add.remote(2))[0] == 2
    total, pid = ray.get(counter.add.remote(3))
    assert total == 5
    assert pid != os.getpid()
    assert pid in head.processes()  # a worker of the head's session, stopped with it


def test_every_socket_of_rays_processes_listens_on_loopback_only(head: Head) -> None:
    counter = Counter.remote()  # a worker of its own: its server listens too
    ray.get(counter.add.remote(1))
    ours = {**head.processes(), os.getpid(): "the test (a Ray driver)"}
    sockets = listening_sockets(ours)
    port = int(head.address.rsplit(":", 1)[1])
    assert any(s.process == "gcs_server" and s.port == port for s in sockets), sockets
    assert {s.process for s in sockets} >= {"gcs_server", "raylet", "ray::Counter"}
    assert [s for s in sockets if not s.loopback] == []


def test_usage_statistics_and_dashboard_are_off(head: Head) -> None:
    assert "Usage stats collection is disabled." in head.log_path.read_text()
    listening = listening_sockets(head.processes())
    assert [s for s in listening if s.port == 8265] == []  # Ray's dashboard port


def test_ray_leaves_the_log_records_of_the_process_alone(head: Head) -> None:
    """Imported bare, Ray makes every record carry `_ray_timestamp_ns`, which the JSON
    log lines would print (it failed tests/test_logs.py when these tests ran first)."""
    record = logging.getLogRecordFactory()("miniexchange.test", logging.INFO, "f", 1, "m", (), None)
    assert "_ray_timestamp_ns" not in record.__dict__


def test_the_gcs_port_is_never_one_ray_keeps_for_its_own_components(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The OS offered 52365 (the dashboard agent's, which `ray start` then refused to
    start with) and a worker port before a free one: both are passed over."""
    offered = iter((52365, 15000, 41234))

    class Probe:
        def __init__(self, *args: Any) -> None:
            self.port = next(offered)

        def __enter__(self) -> Probe:
            return self

        def __exit__(self, *args: Any) -> None:
            pass

        def bind(self, address: tuple[str, int]) -> None:
            assert address == ("127.0.0.1", 0)

        def getsockname(self) -> tuple[str, int]:
            return "127.0.0.1", self.port

    monkeypatch.setattr(head_module.socket, "socket", Probe)
    assert head_module.free_loopback_port() == 41234
