"""What one access line costs through the served logging pipeline (issue 16).

`python -m bench.access_line [--base DIR] [--rounds N]`

Each measurement runs in a fresh interpreter: `configure_logging` as the served app does
(LOG_FORMAT=json, LOG_LEVEL=info) writing to a file, then `log_access` called as the HTTP
middleware calls it, then `LogSetup.stop()`, which writes what is queued. Two loads:

- burst: 50,000 lines back to back (below the queue's limit: none is dropped);
- paced: 5,000 lines 200 µs apart, as requests arrive, so that a writer thread which
  wakes per line pays for it here.

Two paths: `access`, `log_access` as served; `record`, the same line made a `LogRecord`
through `logging` (what `log_access` does without our queue), for comparison.

Per line: `emit`, the calling thread's CPU time (the request's own cost), and `total`,
the process' CPU time from the first call to the last line written (the formatting and
the writing on the writer thread included), each less the same loop calling a function
that does nothing (clock reads, sleeps). Every line written is counted.

`--base DIR`: a checkout of another commit (e.g. a `git worktree` of main); it and this
tree are measured alternately, `--rounds` times each, and the medians compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, logging, sys, tempfile, time
from pathlib import Path
from miniexchange import logs
from miniexchange.settings import Settings

mode, count = sys.argv[1], int(sys.argv[2])
gap = 0.0002 if mode == "paced" else 0.0
REQUEST_ID = "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
access_logger = logging.getLogger("miniexchange.http")


def nothing(*args: object) -> None:
    pass


def record(request_id, method, route, path, status, seconds) -> None:
    # what log_access does without our queue: the same line as a LogRecord
    access_logger.info("%s %s %d", method, path, status, extra={
        "event": "request", "request_id": request_id, "method": method, "route": route,
        "path": path, "status": status, "duration_ms": round(seconds * 1000, 3)})


def run(call, out) -> tuple[float, float]:
    setup = logs.configure_logging(Settings(log_format="json", log_level="info"), out)
    process_started = time.process_time()
    emit = 0.0
    for n in range(count):
        started = time.thread_time()
        call(REQUEST_ID, "POST", "/orders", "/orders", 201, 0.000123 + n * 1e-9)
        emit += time.thread_time() - started
        if gap:
            time.sleep(gap)
    setup.stop()
    out.flush()
    return emit, time.process_time() - process_started


figures = {"module": logs.__file__}
with tempfile.TemporaryDirectory() as directory:
    path = Path(directory) / "out.log"
    with path.open("w") as out:
        for name, call in (("access", logs.log_access), ("record", record)):
            for _ in range(2):  # warm-up, then the loop alone, then the lines
                run(nothing, out)
                run(call, out)
            empty = run(nothing, out)
            full = run(call, out)
            figures[name] = {"emit": (full[0] - empty[0]) / count * 1e6,
                             "total": (full[1] - empty[1]) / count * 1e6}
    lines = path.read_text().splitlines()
    assert sum(1 for line in lines if REQUEST_ID in line) == 6 * count, len(lines)
print(json.dumps(figures))
"""

LOADS = {"burst": 50_000, "paced": 5_000}
PATHS = ("access", "record")


def measure(tree: Path, mode: str) -> dict[str, Any]:
    """One fresh interpreter importing `miniexchange` from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(LOADS[mode])],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    if not str(result["module"]).startswith(str(tree)):
        raise RuntimeError(f"imported {result['module']}, not from {tree}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.access_line", description=__doc__)
    parser.add_argument("--base", type=Path, help="another checkout, measured alternately")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    trees = {"this": ROOT}
    if args.base is not None:
        trees = {"base": args.base.resolve(), "this": ROOT}
    figures: dict[tuple[str, str, str, str], list[float]] = {}
    for round_number in range(1, args.rounds + 1):
        for mode in LOADS:
            for name, tree in trees.items():
                result = measure(tree, mode)
                for path in PATHS:
                    for key in ("emit", "total"):
                        figures.setdefault((name, mode, path, key), []).append(result[path][key])
                print(
                    f"round {round_number} {mode:5} {name:4}: "
                    + ", ".join(
                        f"{path} emit {result[path]['emit']:.2f} total {result[path]['total']:.2f}"
                        for path in PATHS
                    )
                    + " µs per line",
                    file=sys.stderr,
                    flush=True,
                )
    names = list(trees)
    header = f"| load | path | figure (median of {args.rounds}, µs per line) | " + " | ".join(names)
    print(header + (" | this/base |" if "base" in trees else " |"))
    print("|---|---|---|" + "---|" * len(names) + ("---|" if "base" in trees else ""))
    for mode in LOADS:
        for path in PATHS:
            for key in ("emit", "total"):
                medians = {n: statistics.median(figures[n, mode, path, key]) for n in names}
                row = f"| {mode} | {path} | {key} | " + " | ".join(
                    f"{value:.2f}" for value in medians.values()
                )
                if "base" in trees:
                    row += f" | {medians['this'] / medians['base']:.2f}"
                print(row + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
