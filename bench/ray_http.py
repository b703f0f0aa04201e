"""`ENGINE=ray` over HTTP, as `make run-ray` serves it (docs/ray.md, "Capacity").

`python -m bench.ray_http` starts the exchange with `make run-ray`'s command for each
shape asked (`WORKERS`, `ACCOUNT_SHARDS`, `SYMBOL_SHARDS`; no journal, as `bench.http_load`
measures the embedded server), registers the benchmark brokers, warms it up, and runs
wrk's `limit` scenario (random limit orders around the mid, about half crossing) for
`--duration` seconds. It reports orders/s and the CPU per order of each kind of process,
read from `/proc` over the run: the ingress workers (gunicorn's), the sequencer, the
account shards, the symbol shards, and the rest (Ray's daemons, the launcher). The
embedded server (`make run`) runs the same scenario in the same run, as the reference.

The capacity model below the table takes one shape's figures as constant per order
(they fall as batches grow with load, so it errs low) and bounds the rate by each
kind's processes and by the machine's cores:
orders/s ≈ min(W ÷ c_ingress, A ÷ c_account, S ÷ c_symbol, 1 ÷ c_sequencer,
cores ÷ (c_ingress + c_sequencer + c_account + c_symbol + c_rest)).

On a machine with more cores, `--cores N` runs the shape the goal names (N workers, a
quarter of N account shards and as many symbol shards) besides the others.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import NamedTuple

from bench.ray_cycle import KINDS as HOST_KINDS
from bench.ray_cycle import host_pids
from bench.ray_hop import clock_ticks_us
from bench.report import machine_line, table
from bench.server import running_server
from bench.wrk import WrkResult, run_wrk
from miniexchange.cluster.hosts import ACCOUNTS, SEQUENCER, SYMBOLS
from miniexchange.testing import descendant_pids

INGRESS = "ingress"
KINDS = {**HOST_KINDS, "gunicorn": INGRESS}
"""Every process of `make run-ray` by kind; "ray" is the rest (Ray's daemons, the launcher)."""
COLUMNS = (INGRESS, SEQUENCER, ACCOUNTS, SYMBOLS, "ray")
CONNECTIONS = 64
WARMUP_S = 3.0


class Shape(NamedTuple):
    workers: int
    account_shards: int
    symbol_shards: int

    def label(self) -> str:
        return f"{self.workers} / {self.account_shards} + {self.symbol_shards}"


class Measured(NamedTuple):
    orders_per_s: float
    cpu_us: dict[str, float]  # per order, by kind


def measure(shape: Shape, duration_s: float, connections: int) -> Measured:
    env = {
        "WORKERS": str(shape.workers),
        "ACCOUNT_SHARDS": str(shape.account_shards),
        "SYMBOL_SHARDS": str(shape.symbol_shards),
    }
    with running_server(extra_env=env, ray=True) as server:
        run_wrk("limit", server.url, WARMUP_S, connections=connections)
        launcher = server.process.pid
        by_kind = host_pids([launcher, *descendant_pids(launcher)], KINDS)
        before = {kind: clock_ticks_us(pids) for kind, pids in by_kind.items()}
        result = run_wrk("limit", server.url, duration_s, connections=connections)
        after = {kind: clock_ticks_us(pids) for kind, pids in by_kind.items()}
    orders = accepted(result)
    return Measured(
        orders / result.duration_s,
        {kind: (after[kind] - before[kind]) / orders for kind in after},
    )


def accepted(result: WrkResult) -> int:
    failed = {kind: n for kind, n in result.errors.items() if n}
    if result.non_2xx() or failed:
        raise RuntimeError(f"unexpected answers: {result.non_2xx()} {failed}")
    return result.count("201")


def embedded(duration_s: float, connections: int) -> Measured:
    with running_server() as server:
        run_wrk("limit", server.url, WARMUP_S, connections=connections)
        cpu_before = server.cpu_seconds()
        result = run_wrk("limit", server.url, duration_s, connections=connections)
        cpu = server.cpu_seconds() - cpu_before
    orders = accepted(result)
    return Measured(orders / result.duration_s, {INGRESS: cpu * 1e6 / orders})


def predicted(cpu_us: dict[str, float], cores: int, shape: Shape) -> float:
    """The capacity model's orders/s for `shape` on `cores` cores."""
    c = {kind: cpu_us.get(kind, 0.0) / 1e6 for kind in COLUMNS}
    bounds = [
        shape.workers / c[INGRESS],
        shape.account_shards / c[ACCOUNTS],
        shape.symbol_shards / c[SYMBOLS],
        1 / c[SEQUENCER],
        cores / sum(c.values()),
    ]
    return min(bounds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_http", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--shapes",
        default=",".join("/".join(map(str, shape)) for shape in DEFAULT_SHAPES),
        help="WORKERS/ACCOUNT_SHARDS/SYMBOL_SHARDS, comma-separated",
    )
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--cores", type=int, default=None, help="add the goal's shape for N cores")
    options = parser.parse_args(argv)
    shapes = [Shape(*map(int, text.split("/"))) for text in options.shapes.split(",")]
    print(report(shapes, options.duration, options.connections, options.cores))
    return 0


DEFAULT_SHAPES = (Shape(1, 1, 1), Shape(2, 1, 1), Shape(2, 1, 2))


def report(
    shapes: Sequence[Shape], duration_s: float, connections: int, cores: int | None = None
) -> str:
    """Every shape measured, the embedded reference first, as a Markdown report."""
    shapes = list(shapes)
    if cores:
        quarter = max(1, cores // 4)
        shapes.append(Shape(cores, quarter, quarter))
    options = argparse.Namespace(duration=duration_s, connections=connections)
    reference = embedded(options.duration, options.connections)
    rows, figures = [], []
    for shape in shapes:
        measured = measure(shape, options.duration, options.connections)
        figures.append((shape, measured))
        cpu = measured.cpu_us
        rows.append(
            (
                shape.label(),
                f"{measured.orders_per_s:,.0f}",
                f"{measured.orders_per_s / reference.orders_per_s:.2f}",
                *(f"{cpu.get(kind, 0.0):,.0f}" for kind in COLUMNS),
            )
        )
    header = (
        "workers / shards (A + S)",
        "orders/s",
        "× embedded",
        "ingress CPU µs/order",
        "sequencer",
        "account shards",
        "symbol shards",
        "rest (Ray, launcher)",
    )
    cores = os.cpu_count() or 1
    lines = [
        *table(header, rows),
        "",
        f"Embedded (`make run`) in the same run: {reference.orders_per_s:,.0f} orders/s, "
        f"{reference.cpu_us['ingress']:,.0f} µs of CPU per order.",
        "",
        "The capacity model from each shape's figures (orders/s; see the module's doc):",
    ]
    for shape, measured in figures:
        here = predicted(measured.cpu_us, cores, shape)
        eight = predicted(measured.cpu_us, 8, Shape(8, 2, 2))
        sixteen = predicted(measured.cpu_us, 16, Shape(12, 2, 2))
        lines.append(
            f"- from {shape.label()}: here ({cores} cores) {here:,.0f}; 8 cores with 8 workers "
            f"and 2 + 2 shards {eight:,.0f} ({eight / reference.orders_per_s:.1f}× embedded); "
            f"16 cores with 12 workers and 2 + 2 shards {sixteen:,.0f} "
            f"({sixteen / reference.orders_per_s:.1f}×)"
        )
    lines += [
        "",
        f"{options.connections} connections, {options.duration:.0f} s per run.",
        machine_line(),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
