"""The real server, started the way `make run` starts it, on a free loopback port."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.receiver import Receiver, receiving

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ENGINES = ("embedded", "ray")
"""The two ways to run the exchange: `make run` (one gunicorn worker holding all of it)
and `make run-ray` (a local Ray head, the sequencer and shards, two gunicorn workers)."""

RAY_ENV = {"WORKERS": "2", "ACCOUNT_SHARDS": "2", "SYMBOL_SHARDS": "2"}
"""Ray mode as the e2e tests run it: two workers, so that a test's requests cross from
one to the other, and two shards of each kind, so that brokers and symbols are split."""


def engine_or_skip(engine: str) -> str:
    """`engine`, or the test skipped in Ray mode without the `ray` extra (`make test`
    installs it)."""
    if engine == "ray" and importlib.util.find_spec("ray") is None:
        pytest.skip("the ray extra is not installed (make .venv/.installed-ray installs it)")
    return engine


class Server:
    """The exchange as an operator starts it: `make run` (gunicorn running
    `config/gunicorn.conf.py`) or, with `engine="ray"`, `make run-ray`."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        stderr_path: Path | None = None,
        port: int | None = None,
        engine: str = "embedded",
    ) -> None:
        """Standard output goes to `log_path`; standard error too, or to `stderr_path`.
        `port`: a restart where the last server listened; by default a free port."""
        self.port = free_port() if port is None else port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.engine = engine
        ray = engine == "ray"
        full_env = {**os.environ, **(RAY_ENV if ray else {}), "PORT": str(self.port), **env}
        self._log = log_path.open("wb")
        self._stderr = stderr_path.open("wb") if stderr_path is not None else None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "miniexchange.cluster.serve"]
            if ray
            else [str(GUNICORN), "-c", "config/gunicorn.conf.py"],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=self._stderr if self._stderr is not None else subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:  # never leave a server running behind a failed start
            self.stop()
            raise

    def _wait_ready(self) -> None:
        # a head, its hosts and the workers joining it take seconds; never a speed test
        for _ in range(1200 if self.engine == "ray" else 300):
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.output()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or the worker is still booting
            time.sleep(0.1)
        raise RuntimeError(f"server not ready:\n{self.output()}")

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM, as an operator would, and wait for the exit (SIGKILL after 30 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> int:
        """SIGTERM, as an operator would; returns the exit status."""
        self.terminate()
        self._log.close()
        if self._stderr is not None:
            self._stderr.close()
        return self.process.returncode


def refused_start(database: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Start the real server on `database` in the foreground, for a start that must fail:
    its exit status and its output, standard output and error apart."""
    return subprocess.run(
        [str(GUNICORN), "-c", "config/gunicorn.conf.py"],
        cwd=ROOT,
        env={**os.environ, "PORT": str(free_port()), "DATABASE_PATH": str(database)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(params=ENGINES)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    running = Server(
        {"DATABASE_PATH": ":memory:", "EXPIRATION_INTERVAL": "100ms"},
        tmp_path / "server.log",
        engine=engine_or_skip(request.param),
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """A local HTTPS webhook receiver shared by a module's tests (its CA at `ca_path`)."""
    with receiving(tmp_path_factory.mktemp("receiver")) as running:
        yield running


# -- a real browser: Debian's Chromium, driven by Playwright (nothing downloads one) --

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One browser for the module; None when Debian's Chromium is not installed."""
    if not CHROMIUM.exists():
        yield None
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def require(chromium: Any) -> Any:
    """The browser, or a failed test (never a skip) saying in one line what to install."""
    if chromium is None:
        pytest.fail(
            f"{CHROMIUM} is missing: run `apt-get install -y chromium` (as root)", pytrace=False
        )
    return chromium


# -- a server whose output goes through a pipe (the journal's fault tests) ---------------


class PipedServer(Server):
    """A `Server` whose standard output and error reach `log_path` through a pipe: a pipe
    is not a file, so a file-size limit put on the worker (RLIMIT_FSIZE) fails the
    journal's writes and none of its log lines."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.engine = "embedded"
        self._log = log_path.open("wb")
        self._stderr = None
        self.process = subprocess.Popen(
            [str(GUNICORN), "-c", "config/gunicorn.conf.py"],
            cwd=ROOT,
            env={**os.environ, "PORT": str(self.port), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._copier = threading.Thread(target=self._copy, daemon=True)
        self._copier.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _copy(self) -> None:
        pipe = self.process.stdout
        assert pipe is not None
        while chunk := pipe.read1(65536):
            self._log.write(chunk)
            self._log.flush()

    def stop(self) -> int:
        self.terminate()
        self._copier.join(timeout=30)  # every line is in the file before it closes
        return super().stop()
