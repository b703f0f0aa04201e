"""The shards' phases in one process, without Ray: CPU per order of R1, ME and R2.

`python -m bench.shards_cycle` drives a real `AccountShard` and `SymbolShard` (1 + 1)
phase by phase, as the shard tests' `Shards` does: batches of `--per-batch` stamped
limit orders, a seller's asks and a buyer's bids of one share at one price, so every
other order trades. Each phase is timed by the CPU of the whole process
(`time.process_time`: the shard's own thread and its pykka actors' threads), which is
what the phase costs the shard's process; the parts are passed as objects (their
encoding is measured elsewhere). The first `--warm-up` batches are left out.

`--compare TREE` measures this tree and another checkout of the project (e.g. a
`git worktree` of main) in alternating child processes, `--rounds` of each, so that both
see the same noise, and reports each round, the medians and their ratios (this tree ÷
the other). A child imports `miniexchange` from its tree (`PYTHONPATH`) and only that,
so the same file measures code that predates it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PHASES = ("r1", "me", "r2")
SYMBOL = "AAA"
PRICE = 10_000
DOC = "12345678900"
T0 = 1_771_318_800_000_000  # 2026-02-17T09:00:00Z
STEP = 1_000  # µs between two stamped commands
EXPIRES = T0 + 10 * 86_400_000_000


def measure(batches: int, per_batch: int, warm_up: int, account_actors: int) -> dict[str, Any]:
    """CPU µs per order of each phase over `batches` measured batches."""
    from miniexchange.cluster.shards import AccountShard, Placement, SymbolShard
    from miniexchange.cluster.stamped import Batch, Stamped
    from miniexchange.model.commands import ASK, BID, LIMIT, RegisterBroker, SubmitOrder
    from miniexchange.testing import FakeDeliveries, ManualClock

    placement = Placement(1, 1)
    account = AccountShard(0, placement, FakeDeliveries().submit, account_actors)
    symbols = SymbolShard(0, placement, ManualClock(T0))
    seq = 0
    k = 0

    def stamped(command: Any) -> Stamped:
        nonlocal seq
        seq += 1
        at = T0 + seq * STEP
        if isinstance(command, SubmitOrder):
            return Stamped(seq, at, command, None, f"ord-{seq:012d}", seq)
        return Stamped(seq, at, command)

    def run(commands: list[Any]) -> tuple[float, float, float, Any]:
        nonlocal k
        k += 1
        batch = Batch(k, k - 1, tuple(stamped(command) for command in commands))
        started = time.process_time()
        match = account.r1(batch)
        matched = time.process_time()
        settle = symbols.me(k, match)
        account.allow_r2(k)  # the sequencer's word: nothing cut behind `k`
        settling = time.process_time()
        answers = account.r2(k, settle)
        done = time.process_time()
        return matched - started, settling - matched, done - settling, answers

    try:
        run(
            [
                RegisterBroker("seller", 0, ((SYMBOL, 10**12),)),
                RegisterBroker("buyer", 10**15, ()),
            ]
        )
        spent = dict.fromkeys(PHASES, 0.0)
        orders = 0
        for n in range(warm_up + batches):
            commands = [
                SubmitOrder(LIMIT, *trader, SYMBOL, 1, PRICE, EXPIRES)
                for trader in (
                    ("seller", DOC, ASK) if i % 2 == 0 else ("buyer", DOC, BID)
                    for i in range(per_batch)
                )
            ]
            r1, me, r2, answers = run(commands)
            if len(answers) != per_batch or any(isinstance(a, Exception) for _, a in answers):
                raise RuntimeError(f"batch {k} was not answered as expected: {answers[:3]}")
            if n >= warm_up:
                spent["r1"] += r1
                spent["me"] += me
                spent["r2"] += r2
                orders += per_batch
        figures = {phase: spent[phase] * 1e6 / orders for phase in PHASES}
        figures["total"] = sum(figures[phase] for phase in PHASES)
        return figures
    finally:
        account.stop()
        symbols.stop()


def child(tree: Path, options: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh process importing `miniexchange` from `tree`."""
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--json",
            f"--batches={options.batches}",
            f"--per-batch={options.per_batch}",
            f"--warm-up={options.warm_up}",
            f"--account-actors={options.account_actors}",
        ],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(out.stdout)
    if not figures["module"].startswith(str(tree.resolve())):
        raise RuntimeError(f"{tree}: measured {figures['module']} instead")
    return figures


def line(name: str, figures: dict[str, float]) -> str:
    return f"{name:>10}  " + "  ".join(f"{p} {figures[p]:7.1f}" for p in (*PHASES, "total"))


def compare(other: Path, options: argparse.Namespace) -> None:
    here = Path(__file__).resolve().parent.parent
    runs: dict[str, list[dict[str, Any]]] = {"this": [], "other": []}
    print(f"CPU µs per order; this tree {here}, other {other}")
    for round_ in range(options.rounds):
        for name, tree in (
            (("this", here), ("other", other))
            if round_ % 2 == 0
            else (
                ("other", other),
                ("this", here),
            )
        ):
            figures = child(tree, options)
            runs[name].append(figures)
            print(line(f"{name} {round_ + 1}", figures), flush=True)
    medians = {
        name: {p: statistics.median(run[p] for run in done) for p in (*PHASES, "total")}
        for name, done in runs.items()
    }
    for name in ("other", "this"):
        print(line(f"median {name}", medians[name]))
    print(
        "     ratio  "
        + "  ".join(
            f"{p} {medians['this'][p] / medians['other'][p]:7.2f}" for p in (*PHASES, "total")
        )
        + "   (this ÷ other)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--per-batch", type=int, default=100)
    parser.add_argument("--warm-up", type=int, default=20)
    parser.add_argument("--account-actors", type=int, default=1)
    parser.add_argument("--compare", type=Path, help="another checkout to measure against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one measurement, as JSON")
    options = parser.parse_args()
    if options.compare is not None:
        compare(options.compare.resolve(), options)
        return
    figures = measure(options.batches, options.per_batch, options.warm_up, options.account_actors)
    if options.json:
        import miniexchange

        print(json.dumps({**figures, "module": str(Path(miniexchange.__file__).resolve())}))
        return
    print("CPU µs per order")
    print(line("shards", figures))


if __name__ == "__main__":
    main()
