"""Stopping a local head ends every process it started, its workers and a detached
actor's included, and removes its directory; nothing else is touched. Joining it leaves
the process's SIGTERM handler in place.

Skipped without the `ray` extra (the default test venv has none)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from miniexchange.cluster.head import connect, disconnect, start_head
from tests.cluster.helpers import ray_or_skip

ray: Any = ray_or_skip()


@ray.remote
class Echo:
    def pid(self) -> int:
        return os.getpid()


def alive(pid: int) -> bool:
    """Neither ended nor a zombie (ended, not yet reaped by the init process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_stop_leaves_no_process_behind() -> None:
    head = start_head(num_cpus=1)
    own_handler = signal.getsignal(signal.SIGTERM)
    try:
        connect(head.address)
        # ray.init alone would have put `sys.exit` there: a server's shutdown would break
        assert signal.getsignal(signal.SIGTERM) is own_handler
        echo = Echo.options(name="echo", lifetime="detached").remote()
        worker = ray.get(echo.pid.remote())
        started = head.processes()
        assert worker in started
        assert {"gcs_server", "raylet"} <= set(started.values())
    finally:
        disconnect()
        head.stop()
    assert head.processes() == {}
    assert [pid for pid in started if alive(pid)] == []
    assert alive(os.getpid())  # the caller, which is no process of the head
    assert not head.temp_dir.exists()
