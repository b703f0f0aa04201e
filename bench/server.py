"""The real server, started exactly as `make run` starts it, pinned to core 0.

`make run` is `gunicorn -c config/gunicorn.conf.py`; here it runs under `taskset -c 0`
with `PORT=<free port>` and `DATABASE_PATH=:memory:` (the issue measures the journal's
cost apart), so the load generator gets the other core to itself. Everything else comes
from the environment as it would for an operator.

The gunicorn master only supervises; the worker process (its only child) holds the
exchange, so RSS and profiles are read from the worker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from bench.flow import BROKERS, INITIAL_CASH_DOLLARS, INITIAL_SHARES, SYMBOLS
from miniexchange.testing import child_pids

ROOT = Path(__file__).resolve().parents[1]
GUNICORN = Path(sys.executable).with_name("gunicorn")
HOST = "127.0.0.1"  # all benchmark traffic stays on the loopback interface


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tree_env(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child that must run the code of the tree at `root`
    (`bench.compare` runs two trees): the venv's editable install points at one checkout,
    and PYTHONPATH comes before it, so the child imports that tree's `miniexchange`."""
    return {**os.environ, "PYTHONPATH": str(root), **(extra or {})}


def pinned(command: list[str], core: int) -> list[str]:
    """`command` under `taskset -c <core>`: on 2 cores the server and the load generator
    must not steal each other's CPU, or the figures measure the scheduler."""
    if (os.cpu_count() or 1) < 2:
        return command
    return ["taskset", "-c", str(core), *command]


def process_cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (utime + stime of /proc/<pid>/stat), every
    thread included; `OSError` once it has ended."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One gunicorn process tree on a free loopback port; `stop()` always cleans up."""

    def __init__(
        self,
        extra_env: dict[str, str] | None = None,
        app: str | None = None,
        root: Path = ROOT,
        ray: bool = False,
    ) -> None:
        """`app`: serve this ASGI app (`module:name`) instead of the configured one;
        `root`: the tree whose code (and `config/`) the server runs; `ray`: start it as
        `make run-ray` does (a head, the shards, gunicorn's workers), on every core."""
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        env = tree_env(root, {"PORT": str(self.port), "DATABASE_PATH": ":memory:"})
        env.update(extra_env or {})
        command = (
            [sys.executable, "-m", "miniexchange.cluster.serve"]
            if ray
            else pinned(
                [str(GUNICORN), "-c", "config/gunicorn.conf.py", *([app] if app else [])], core=0
            )
        )
        # The server's log (access lines included) goes to a file, as under a supervisor;
        # a pipe nobody reads would block the server once full.
        self._log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our own process group: a stray worker is stoppable
        )
        self.session = requests.Session()

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited at start:\n{self.log_tail()}")
            try:
                if self.session.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or slow to answer
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server was not ready within {timeout_s} s:\n{self.log_tail()}")

    def worker_pid(self) -> int:
        """The gunicorn worker: the master's only child (taskset execs, so the Popen pid
        is the master's)."""
        master = self.process.pid
        for attempt in range(50):
            children = child_pids(master)
            if children:
                return children[0]
            time.sleep(0.1 * (attempt > 0))
        raise RuntimeError(f"no gunicorn worker under pid {master}")

    def rss_bytes(self) -> int:
        """The worker's resident set size (VmRSS in /proc/<pid>/status)."""
        for line in Path(f"/proc/{self.worker_pid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def cpu_seconds(self) -> float:
        """CPU time the worker has used so far: dividing requests by it gives a rate
        that other processes on the machine barely disturb."""
        return process_cpu_seconds(self.worker_pid())

    def context_switches(self) -> int:
        """Voluntary and involuntary context switches of every thread of the worker so
        far: a thread hand-off (an actor woken, the event loop woken by a reply) costs
        one or two, so per request they count the hand-offs the architecture warns of."""
        worker = self.worker_pid()
        total = 0
        for task in Path(f"/proc/{worker}/task").iterdir():
            try:
                status = (task / "status").read_text()
            except OSError:  # a thread that just ended
                continue
            for line in status.splitlines():
                if "ctxt_switches:" in line:  # voluntary_ and nonvoluntary_
                    total += int(line.split()[1])
        return total

    def register_brokers(self) -> None:
        """Every benchmark broker, with ample cash and shares of every symbol."""
        holdings = [{"symbol": symbol, "quantity": INITIAL_SHARES} for symbol in SYMBOLS]
        for broker in BROKERS:
            answer = self.session.post(
                f"{self.url}/brokers",
                json={
                    "broker_id": broker,
                    "initial_cash": INITIAL_CASH_DOLLARS,
                    "initial_holdings": holdings,
                },
                timeout=10,
            )
            if answer.status_code != 201:
                raise RuntimeError(f"registering {broker}: {answer.status_code} {answer.text}")

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, as an operator would; SIGKILL the whole group if it hangs."""
        self.session.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@contextmanager
def running_server(
    register: bool = True,
    extra_env: dict[str, str] | None = None,
    app: str | None = None,
    root: Path = ROOT,
    ray: bool = False,
) -> Iterator[Server]:
    """A ready server with the benchmark brokers registered, stopped on the way out."""
    server = Server(extra_env, app, root, ray)
    try:
        server.wait_ready()
        if register:
            server.register_brokers()
        yield server
    finally:
        server.stop()
