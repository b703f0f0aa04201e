"""The whole cycle of ENGINE=ray on this machine, without HTTP (docs/ray.md, "Capacity").

`python -m bench.ray_cycle` starts a local tamed head, the sequencer and the shards as
Ray actors (`cluster.hosts.start_hosts`, a command journal in a temporary file), and
drives them the way one ingress worker would: a `RayEngine` on one event loop keeps
`--in-flight` limit orders outstanding, a seller's asks and a buyer's bids at one price,
so every other order trades. It reports orders/s, the orders each sequencer call and
each batch carried, and the CPU per order of each kind of process (the driver as the
ingress, the sequencer, the account shards, the symbol shards, Ray's own daemons), read
from `/proc`; with `--reference`, the embedded actors' rate measured in the same run
(`bench.engine`'s actors measurement, a different order mix: a reference, not a twin).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from bench.engine import measure_actors
from bench.ray_hop import clock_ticks_us, cpu_us
from bench.report import machine_line, table
from miniexchange.clock import SystemClock
from miniexchange.cluster.engine import RayEngine
from miniexchange.cluster.head import connect, disconnect, start_head
from miniexchange.cluster.hosts import ACCOUNTS, SEQUENCER, SYMBOLS, start_hosts
from miniexchange.cluster.sequencer import journaled
from miniexchange.cluster.shards import Placement
from miniexchange.journal.store import SqliteJournal
from miniexchange.model.commands import ASK, BID, LIMIT, RegisterBroker, SubmitOrder
from miniexchange.testing import FakeDeliveries

KINDS = {"SequencerHost": SEQUENCER, "AccountShardHost": ACCOUNTS, "SymbolShardHost": SYMBOLS}
SYMBOL_NAMES = ("AAA", "BBB", "CCC", "DDD")
DOC = "12345678900"


def host_pids(
    processes: Iterable[int], kinds_by_name: Mapping[str, str] = KINDS
) -> dict[str, list[int]]:
    """The processes by kind: each host (its command line names its class; or another
    name of `kinds_by_name`), and Ray's own daemons (the rest, workers without a host
    included)."""
    kinds: dict[str, list[int]] = {kind: [] for kind in (*kinds_by_name.values(), "ray")}
    for pid in processes:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        kind = next((k for name, k in kinds_by_name.items() if name in command), "ray")
        kinds[kind].append(pid)
    return kinds


async def drive(engine: RayEngine, count: int, in_flight: int, symbols: int) -> float:
    """`count` limit orders, `in_flight` outstanding; the seconds they took."""
    expires = SystemClock().now() + 3_600_000_000
    slots = asyncio.Semaphore(in_flight)

    async def one(n: int) -> None:
        side, broker = (ASK, "seller") if n % 2 == 0 else (BID, "buyer")
        symbol = SYMBOL_NAMES[(n // 2) % symbols]
        order = SubmitOrder(LIMIT, broker, DOC, side, symbol, 1, 10_000, expires)
        async with slots:
            await engine.submit(order, None, None)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    return time.perf_counter() - started


async def prepare(engine: RayEngine, options: argparse.Namespace) -> None:
    """The two brokers, then a warm-up the measurement leaves out."""
    engine.start()
    names = SYMBOL_NAMES[: options.symbols]
    await engine.register(RegisterBroker("seller", 0, tuple((s, 10**9) for s in names)), None)
    await engine.register(RegisterBroker("buyer", 10**15, ()), None)
    await drive(engine, options.warmup, options.in_flight, options.symbols)


def batches_in(journal_path: str) -> int:
    journal = SqliteJournal(journal_path, engine="ray")
    try:
        return sum(1 for _ in journaled(journal.facts()))
    finally:
        journal.close()


def measure(options: argparse.Namespace) -> tuple[list[tuple[str, ...]], list[str]]:
    placement = Placement(options.account_shards, options.symbol_shards)
    with tempfile.TemporaryDirectory(prefix="mx-cycle-") as directory:
        journal_path = str(Path(directory) / "commands.db")
        with start_head(num_cpus=os.cpu_count() or 1) as head:
            connect(head.address)
            try:
                # kept: an actor that is not detached ends with its creator's last handle
                hosts = start_hosts(placement, FakeDeliveries, journal_path)
                engine = RayEngine(placement, 10_000, worker="bench")
                loop = asyncio.new_event_loop()
                loop.run_until_complete(prepare(engine, options))
                batches_before = batches_in(journal_path)
                pids = host_pids(head.processes())
                before = {kind: clock_ticks_us(p) for kind, p in pids.items()}
                driver_before = cpu_us()
                seconds = loop.run_until_complete(
                    drive(engine, options.orders, options.in_flight, options.symbols)
                )
                driver_cpu = cpu_us() - driver_before
                after = {kind: clock_ticks_us(p) for kind, p in pids.items()}
                loop.close()
                batches = batches_in(journal_path) - batches_before
                del hosts
            finally:
                disconnect()
    count = options.orders
    per_order = {kind: (after[kind] - before[kind]) / count for kind in after}
    rows = [
        (
            f"{placement.account_shards} + {placement.symbol_shards}",
            str(options.symbols),
            str(options.in_flight),
            f"{count / seconds:,.0f}",
            f"{count / max(batches, 1):,.1f}",
            f"{driver_cpu / count:,.0f}",
            f"{per_order[SEQUENCER]:,.0f}",
            f"{per_order[ACCOUNTS]:,.0f}",
            f"{per_order[SYMBOLS]:,.0f}",
            f"{per_order['ray']:,.0f}",
        )
    ]
    notes = [f"{count:,} orders in {seconds:.2f} s; {batches:,} batches journaled."]
    return rows, notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_cycle", description=__doc__)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--account-shards", type=int, default=1)
    parser.add_argument("--symbol-shards", type=int, default=1)
    parser.add_argument("--symbols", type=int, default=1, choices=range(1, 5))
    parser.add_argument("--reference", action="store_true", help="the embedded actors too")
    options = parser.parse_args(argv)
    rows, notes = measure(options)
    header = (
        "shards (A + S)",
        "symbols",
        "in flight",
        "orders/s",
        "orders per batch",
        "ingress CPU µs/order",
        "sequencer",
        "account shards",
        "symbol shards",
        "Ray's daemons",
    )
    lines = [*table(header, rows), "", *notes]
    if options.reference:
        reference = measure_actors(options.orders)
        lines.append(
            f"Embedded actors in the same run (`bench.engine`, its own order mix): "
            f"{reference['orders_per_s']:,.0f} orders/s, "
            f"{reference['cpu_s'] * 1e6 / reference['ops']:,.0f} µs CPU per order."
        )
    lines += ["", machine_line()]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
