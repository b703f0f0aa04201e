"""Running `wrk` (a compiled load generator, Debian's `wrk` package) pinned to core 1.

A Python load generator would need more CPU than the server it loads; `wrk` with LuaJIT
scripts keeps up on one core. The scripts in `bench/lua/` print `BENCH ...` lines from
their `done()` (request count, exact latency percentiles, responses by status and
error code), which is what this module parses; wrk's own text summary is not used.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.flow import (
    BROKERS,
    DOCUMENT_NUMBER,
    FAR_ASK_CENTS,
    FAR_BID_CENTS,
    MAX_MARKET_QUANTITY,
    MAX_QUANTITY,
    MID_CENTS,
    SPREAD_CENTS,
    SYMBOLS,
)
from bench.server import pinned

LUA_DIR = Path(__file__).resolve().parent / "lua"
CONNECTIONS = 32


class WrkMissing(RuntimeError):
    """wrk is not installed and this process cannot install it."""


@dataclass(slots=True)
class WrkResult:
    scenario: str
    requests: int = 0
    duration_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    crossed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # "201", "409 no_liquidity", ...
    errors: dict[str, int] = field(default_factory=dict)  # wrk: connect, read, timeout, status
    server_cpu_s: float = 0.0  # CPU time the server worker used during the run
    server_switches: int = 0  # context switches of the worker's threads during the run

    @property
    def switches_per_request(self) -> float:
        return self.server_switches / self.requests if self.requests else 0.0

    @property
    def per_cpu_s(self) -> float:
        """Requests per CPU-second of the server worker."""
        return self.requests / self.server_cpu_s if self.server_cpu_s else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def count(self, prefix: str) -> int:
        return sum(n for key, n in self.statuses.items() if key.startswith(prefix))

    def non_2xx(self) -> dict[str, int]:
        return {key: n for key, n in self.statuses.items() if not key.startswith("2")}


def ensure_wrk() -> str:
    """The path of `wrk`, installing Debian's package first when we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing it with apt-get (we are root) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, env=env)
        found = shutil.which("wrk")
        if found:
            return found
    raise WrkMissing(
        "wrk is not installed. On Debian/Ubuntu run: sudo apt-get update && "
        "sudo apt-get install -y wrk   (then run `make bench` again)"
    )


def scenario_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The market's parameters for the Lua scripts (see `bench/lua/common.lua`)."""
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    env = {
        **os.environ,
        "BENCH_LUA_DIR": str(LUA_DIR),
        "BENCH_BROKERS": ",".join(BROKERS),
        "BENCH_SYMBOLS": ",".join(SYMBOLS),
        "BENCH_MID_CENTS": str(MID_CENTS),
        "BENCH_SPREAD_CENTS": str(SPREAD_CENTS),
        "BENCH_MAX_QUANTITY": str(MAX_QUANTITY),
        "BENCH_MAX_MARKET_QUANTITY": str(MAX_MARKET_QUANTITY),
        "BENCH_FAR_BID_LOW": str(FAR_BID_CENTS[0]),
        "BENCH_FAR_BID_HIGH": str(FAR_BID_CENTS[1] - 1),
        "BENCH_FAR_ASK_LOW": str(FAR_ASK_CENTS[0]),
        "BENCH_FAR_ASK_HIGH": str(FAR_ASK_CENTS[1] - 1),
        "BENCH_EXPIRES_AT": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "BENCH_DOCUMENT": DOCUMENT_NUMBER,
    }
    env.update(extra or {})
    return env


def run_wrk(
    scenario: str,
    url: str,
    duration_s: float,
    *,
    extra_env: dict[str, str] | None = None,
    stop_on: str | None = None,
    connections: int = CONNECTIONS,
) -> WrkResult:
    """`taskset -c 1 wrk -t1 -c<connections> -d<N>s --latency -s bench/lua/<scenario>.lua <url>`.

    With `stop_on`, wrk is interrupted (SIGINT: it then prints its summary and calls
    `done()`) as soon as the script prints that line, since wrk always runs its full
    duration otherwise.
    """
    wrk = ensure_wrk()
    command = pinned(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            "--latency",
            "-s",
            str(LUA_DIR / f"{scenario}.lua"),
            url,
        ],
        core=1,
    )
    process = subprocess.Popen(
        command,
        env=scenario_env(extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if stop_on is not None and line.strip() == stop_on:
                process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n" + "\n".join(lines[-30:]))
    return parse(scenario, lines)


def parse(scenario: str, lines: list[str]) -> WrkResult:
    result = WrkResult(scenario)
    for line in lines:
        parts = line.split(maxsplit=3)
        if len(parts) < 3 or parts[0] != "BENCH":
            continue
        _, key, value = parts[:3]
        if key == "requests":
            result.requests = int(value)
        elif key == "duration_us":
            result.duration_s = int(value) / 1e6
        elif key in ("p50_us", "p99_us", "max_us"):
            setattr(result, key.replace("_us", "_ms"), int(value) / 1e3)
        elif key == "crossed":
            result.crossed = int(value)
        elif key == "status" and len(parts) == 4:
            result.statuses[parts[3]] = result.statuses.get(parts[3], 0) + int(value)
        elif key == "error" and len(parts) == 4:
            result.errors[parts[3]] = int(value)
    if not result.requests:
        raise RuntimeError("wrk printed no summary:\n" + "\n".join(lines[-30:]))
    return result
