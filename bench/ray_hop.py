"""What one Ray hop costs here, for ENGINE=ray's capacity model (docs/ray.md).

`python -m bench.ray_hop` starts a local tamed head (`miniexchange.cluster.head`), then
measures, one call in flight unless said otherwise:

- a bare actor call's round trip (latency, and CPU per call of the caller, the actor,
  and Ray's own processes: GCS, raylet, agents);
- a call carrying a batch of N sequenced orders (N = 1, 10, 100, 1000), answered by a
  batch of N results, as a shard would be called: orders/s and CPU µs per order on
  each side; N = 100 and 1000 also as one orjson document each way instead of
  pickled tuples; N = 100 also with 8 calls in flight;
- the same awaited from an asyncio event loop (an ingress worker), N = 1 and 100;
- the same from one actor to another (a sequencer to a shard);
- a named detached actor looked up from a second process, as an ingress worker would
  at start: the time to join the cluster, to find the actor, the first call, and the
  round trips after.

It prints one markdown table, the sockets Ray's processes listen on, and the machine.
The caller is pinned to core 0 and the called actor to core 1 (the actor-to-actor
caller to core 0), like the HTTP bench's server and load generator. CPU is each
process's own (`getrusage`, all its threads, Ray's included), so it holds even when
the neighbours slow the clock down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.report import machine_line, percentile, table
from bench.server import process_cpu_seconds
from miniexchange.cluster.head import (
    Head,
    connect,
    disconnect,
    listening_sockets,
    start_head,
)
from miniexchange.model.commands import BID, LIMIT, SubmitOrder

BATCHES = (1, 10, 100, 1000)
CALLS = {1: 2000, 10: 2000, 100: 1000, 1000: 200}  # per measurement (--quick: a fifth)
WARMUP = 100
IN_FLIGHT = 8  # the pipelined variant of N = 100


def cpu_us() -> float:
    """This process's CPU time, every thread (Ray's own threads included), in µs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1e6


def pin(core: int) -> None:
    """Pin every thread of this process (Ray starts its threads before our code runs:
    `sched_setaffinity(0)` alone would pin the calling thread only)."""
    if (os.cpu_count() or 1) < 2:
        return
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            os.sched_setaffinity(int(task.name), {core})


def clock_ticks_us(pids: Sequence[int]) -> float:
    """CPU time of other processes, those still running, in µs."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # it ended meanwhile
            total += process_cpu_seconds(pid)
    return total * 1e6


def orders(count: int, start: int = 0) -> list[Sequenced]:
    """Sequenced commands as the sequencer would send them: (seq, at, order id, command)."""
    at = 1_790_000_000_000_000
    return [
        (
            seq,
            at + seq,
            f"ord-{seq:08d}-0000-4000-8000-000000000000",
            SubmitOrder(
                LIMIT,
                f"broker-{seq % 50}",
                "12345678",
                BID,
                "AAPL",
                100,
                15025,
                at + 86_400_000_000,
            ),
        )
        for seq in range(start, start + count)
    ]


Sequenced = tuple[int, int, str, SubmitOrder]


def encode(batch: list[Sequenced]) -> bytes:
    """A batch as one orjson document (a `SubmitOrder` as a plain array)."""
    return orjson.dumps(
        [(seq, at, order_id, tuple(command)) for seq, at, order_id, command in batch]
    )


def decode(document: bytes) -> list[Sequenced]:
    return [
        (seq, at, order_id, SubmitOrder(*command))
        for seq, at, order_id, command in orjson.loads(document)
    ]


def define_actors() -> tuple[Any, Any]:
    """The two actor classes (defined once `ray` is importable)."""
    import ray

    @ray.remote(num_cpus=0)
    class Sink:
        """Answers a batch with one small result per order: the hop, not the work."""

        def __init__(self, core: int) -> None:
            pin(core)

        def ping(self, value: int) -> int:
            return value

        def take(self, batch: list[Sequenced]) -> list[tuple[str, str]]:
            return [(order_id, "accepted") for _seq, _at, order_id, _command in batch]

        def take_encoded(self, batch: bytes) -> bytes:
            """The same batch as one orjson document each way."""
            return orjson.dumps([(order_id, "accepted") for _s, _a, order_id, _c in decode(batch)])

        def cpu(self) -> tuple[int, float]:
            return os.getpid(), cpu_us()

    @ray.remote(num_cpus=0)
    class Caller:
        """Calls a sink from inside Ray: the sequencer-to-shard hop."""

        def __init__(self, core: int) -> None:
            pin(core)

        def run(self, sink: Any, size: int, calls: int) -> dict[str, Any]:
            for _ in range(WARMUP):
                ray.get(sink.take.remote(orders(size)))
            batches = [orders(size, i * size) for i in range(calls)]
            return timed_calls(lambda batch: ray.get(sink.take.remote(batch)), batches)

        def cpu(self) -> tuple[int, float]:
            return os.getpid(), cpu_us()

    return Sink, Caller


def timed_calls(call: Any, arguments: Sequence[Any]) -> dict[str, Any]:
    """Run `call` on each argument in turn: wall time, caller CPU, latencies."""
    latencies = []
    cpu_before = cpu_us()
    started = time.perf_counter()
    for argument in arguments:
        sent = time.perf_counter()
        call(argument)
        latencies.append(time.perf_counter() - sent)
    return {
        "wall_s": time.perf_counter() - started,
        "caller_cpu_us": cpu_us() - cpu_before,
        "latencies": sorted(latencies),
    }


class Bench:
    def __init__(self, head: Head, quick: bool) -> None:
        import ray

        self.ray = ray
        self.head = head
        self.quick = quick
        self.Sink, self.Caller = define_actors()
        self.sink = self.Sink.remote(1)
        self.sink_pid, _ = ray.get(self.sink.cpu.remote())
        self.rows: list[list[str]] = []

    def calls(self, size: int) -> int:
        return max(50, CALLS[size] // 5) if self.quick else CALLS[size]

    def daemons(self, *actors: int) -> list[int]:
        """Ray's own processes of the head: all but the actors' workers and us."""
        return [pid for pid in self.head.processes() if pid not in actors and pid != os.getpid()]

    def measure(
        self,
        hop: str,
        size: int,
        calls: int,
        run: Any,
        actor: Any,
        caller_pid: int | None = None,
        wire: int | None = None,
    ) -> None:
        """One row: `run()` makes `calls` calls of `size` orders and reports its own
        CPU (this process's, or the calling actor's, `caller_pid`); the called actor's
        and Ray's daemons' CPU are read around it."""
        ray = self.ray
        actor_pid, actor_before = ray.get(actor.cpu.remote())
        daemons = self.daemons(actor_pid, *([caller_pid] if caller_pid else []))
        daemons_before = clock_ticks_us(daemons)
        result = run()
        daemons_cpu = clock_ticks_us(daemons) - daemons_before
        _, actor_after = ray.get(actor.cpu.remote())
        wall, latencies = result["wall_s"], result["latencies"]
        count = calls * max(size, 1)
        per = "call" if size == 0 else "order"
        if wire is None:  # what Ray sends: the arguments pickled
            wire = len(pickle.dumps(orders(size), protocol=5))
        self.rows.append(
            [
                hop,
                "—" if size == 0 else f"{size:,} ({wire / 1024:,.1f} KiB)",
                f"{calls / wall:,.0f}",
                "—" if size == 0 else f"{count / wall:,.0f}",
                f"{percentile(latencies, 50) * 1e3:.2f} / {percentile(latencies, 99) * 1e3:.2f}",
                f"{result['caller_cpu_us'] / count:,.1f} µs/{per}",
                f"{(actor_after - actor_before) / count:,.1f} µs/{per}",
                f"{daemons_cpu / count:,.1f} µs/{per}",
            ]
        )

    def bare_call(self) -> None:
        ping = self.sink.ping.remote
        for i in range(WARMUP):
            self.ray.get(ping(i))
        calls = self.calls(1)
        self.measure(
            "driver → actor, bare call",
            0,
            calls,
            lambda: timed_calls(lambda i: self.ray.get(ping(i)), range(calls)),
            self.sink,
        )

    def batch(self, size: int) -> None:
        take = self.sink.take.remote
        for _ in range(WARMUP):
            self.ray.get(take(orders(size)))
        calls = self.calls(size)
        batches = [orders(size, i * size) for i in range(calls)]
        self.measure(
            "driver → actor",
            size,
            calls,
            lambda: timed_calls(lambda batch: self.ray.get(take(batch)), batches),
            self.sink,
        )

    def encoded(self, size: int) -> None:
        """The batch as orjson bytes (encoded and decoded inside the timed calls, on
        both sides), not pickled `SubmitOrder`s."""
        take = self.sink.take_encoded.remote
        for _ in range(WARMUP):
            self.ray.get(take(encode(orders(size))))
        calls = self.calls(size)
        batches = [orders(size, i * size) for i in range(calls)]

        def call(batch: list[Any]) -> None:
            orjson.loads(self.ray.get(take(encode(batch))))

        self.measure(
            "driver → actor, orjson bytes",
            size,
            calls,
            lambda: timed_calls(call, batches),
            self.sink,
            wire=len(encode(orders(size))),
        )

    def pipelined(self, size: int = 100) -> None:
        """`IN_FLIGHT` calls outstanding: a new one leaves as each answer comes."""
        ray, take = self.ray, self.sink.take.remote
        calls = self.calls(size)
        batches = [orders(size, i * size) for i in range(calls)]

        def run() -> dict[str, Any]:
            latencies, pending = [], {}
            cpu_before, started = cpu_us(), time.perf_counter()
            queue = iter(batches)
            for batch in queue:
                pending[take(batch)] = time.perf_counter()
                if len(pending) == IN_FLIGHT:
                    break
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ray.get(done[0])
                latencies.append(time.perf_counter() - pending.pop(done[0]))
                batch = next(queue, None)
                if batch is not None:
                    pending[take(batch)] = time.perf_counter()
            return {
                "wall_s": time.perf_counter() - started,
                "caller_cpu_us": cpu_us() - cpu_before,
                "latencies": sorted(latencies),
            }

        self.measure(f"driver → actor, {IN_FLIGHT} in flight", size, calls, run, self.sink)

    def actor_to_actor(self, size: int) -> None:
        caller = self.Caller.remote(0)
        caller_pid, _ = self.ray.get(caller.cpu.remote())
        calls = self.calls(size)
        self.measure(
            "actor → actor",
            size,
            calls,
            lambda: self.ray.get(caller.run.remote(self.sink, size, calls)),
            self.sink,
            caller_pid,
        )
        self.ray.kill(caller)

    def awaited(self, size: int) -> None:
        """From an asyncio event loop, as an ingress worker would: `await` the call."""
        take = self.sink.take.remote
        calls = self.calls(size)
        batches = [orders(size, i * size) for i in range(calls)]

        async def run() -> dict[str, Any]:
            for _ in range(WARMUP):
                await take(orders(size))
            latencies = []
            cpu_before, started = cpu_us(), time.perf_counter()
            for batch in batches:
                sent = time.perf_counter()
                await take(batch)
                latencies.append(time.perf_counter() - sent)
            return {
                "wall_s": time.perf_counter() - started,
                "caller_cpu_us": cpu_us() - cpu_before,
                "latencies": sorted(latencies),
            }

        self.measure(
            "event loop → actor (await)", size, calls, lambda: asyncio.run(run()), self.sink
        )

    def second_process(self) -> dict[str, float]:
        """A named detached actor, found and called from another process."""
        name = "hop-sink"
        named = self.Sink.options(name=name, lifetime="detached").remote(1)
        self.ray.get(named.ping.remote(0))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bench.ray_hop", "--lookup", self.head.address, name],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
        finally:
            self.ray.kill(named)
        return json.loads(done.stdout.strip().splitlines()[-1])


def lookup(address: str, name: str, calls: int = 1000) -> dict[str, float]:
    """In a second process: join, find the named actor, call it (an ingress worker's
    start and its steady state)."""
    pin(0)
    started = time.perf_counter()
    connect(address)
    joined = time.perf_counter()
    import ray

    actor = ray.get_actor(name)
    found = time.perf_counter()
    ray.get(actor.ping.remote(0))
    first = time.perf_counter()
    result = timed_calls(lambda i: ray.get(actor.ping.remote(i)), range(calls))
    latencies = result["latencies"]
    disconnect()
    return {
        "join_ms": (joined - started) * 1e3,
        "lookup_ms": (found - joined) * 1e3,
        "first_call_ms": (first - found) * 1e3,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "caller_cpu_us_per_call": result["caller_cpu_us"] / calls,
    }


def listening_report(head: Head) -> list[str]:
    """Which of Ray's processes listen where (every address should be loopback)."""
    names = head.processes()
    rows = []
    for found in sorted(listening_sockets(names), key=lambda s: (s.process, s.port)):
        try:
            role = Path(f"/proc/{found.pid}/cmdline").read_bytes().split(b"\0")
            what = next(
                (Path(part.decode()).name for part in role if part.endswith(b".py")),
                found.process,
            )
        except OSError:
            what = found.process
        address = found.address.ipv4_mapped if hasattr(found.address, "ipv4_mapped") else None
        shown = f"{address or found.address}:{found.port} ({found.protocol})"
        rows.append([what, shown, "✅" if found.loopback else "❌"])
    return table(("process", "listens on", "loopback?"), rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_hop", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fifth of the calls")
    parser.add_argument("--lookup", nargs=2, metavar=("ADDRESS", "NAME"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.lookup:
        print(json.dumps(lookup(*options.lookup)))
        return 0
    load = os.getloadavg()[0]
    started = time.monotonic()
    with start_head(num_cpus=os.cpu_count() or 1) as head:
        connect(head.address)
        pin(0)
        try:
            bench = Bench(head, options.quick)
            bench.bare_call()
            for size in BATCHES:
                bench.batch(size)
            for size in (100, 1000):
                bench.encoded(size)
            bench.pipelined()
            for size in (1, 100):
                bench.awaited(size)
            for size in BATCHES:
                bench.actor_to_actor(size)
            second = bench.second_process()
            listening = listening_report(head)
        finally:
            disconnect()
    header = (
        "hop",
        "orders per call (bytes)",
        "calls/s",
        "orders/s",
        "p50 / p99 ms",
        "caller CPU",
        "called actor CPU",
        "Ray's daemons CPU",
    )
    lines = table(header, bench.rows)
    lines += [
        "",
        "A named detached actor from a second process (an ingress worker's start): "
        f"join {second['join_ms']:,.0f} ms, lookup {second['lookup_ms']:.1f} ms, "
        f"first call {second['first_call_ms']:.1f} ms; then a bare call "
        f"p50 {second['p50_ms']:.2f} / p99 {second['p99_ms']:.2f} ms, "
        f"{second['caller_cpu_us_per_call']:,.0f} µs caller CPU per call.",
        "",
        *listening,
        "",
        machine_line(),
        "",
        f"- Ray {bench.ray.__version__}, a local head (`miniexchange.cluster.head`), "
        "caller pinned to core 0, the called actor to core 1; one call in flight unless "
        "said; an order is (seq, at, order id, `SubmitOrder`), answered by (order id, "
        "status). Ray's daemons: GCS, raylet, agents (unpinned).",
        f"- Load average (1 min) before the run: {load:.2f}. Total time: "
        f"{time.monotonic() - started:.0f} s.",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
