"""`python -m bench --compare REF [--pairs N] [--quick] [--duration N]`: the code at REF
(OLD) against the tree the bench runs from (NEW), measured alternately in one run.

On this 2-core VM a figure drifts by up to 20% from one minute to the next, so a change
is judged against the code before it measured in the same minutes, never against an
older table. OLD is checked out with `git worktree add --detach` in a temporary
directory, removed again at the end whatever happens (error, Ctrl-C, SIGTERM); NEW is
this tree as it is, uncommitted changes included.

Each pair measures both sides, alternating which goes first (old-new, new-old, ...) so
that a drift during the run hits both alike. A side's measurement:

- `actors`: that tree's own `python -m bench.engine actors` in a fresh interpreter with
  cwd and PYTHONPATH = that tree (`bench.engine.measure_actors`), so each tree's bench
  code drives its own API: orders/s, p99, and context switches per order, both as the
  engine prints them (its threads, timed run; trees from before this mode do not print
  them) and from `getrusage(RUSAGE_CHILDREN)` around the child (the whole process);
- HTTP `limit`: a fresh server of that tree (gunicorn -c config/gunicorn.conf.py, cwd and
  PYTHONPATH = that tree, DATABASE_PATH=:memory:, core 0) loaded by one wrk run on core 1
  (`bench.http_load.measured`): orders/s, p99 and the worker's context switches per
  order. The load (wrk, the Lua scripts, the brokers registered) is this tree's for both
  sides, so only the server differs.

The table gives each side's median and new/old, with targets for HTTP `limit` (orders/s
new/old ≥ 0.90, p99 new/old ≤ 1.25), then every pair's raw figures so the spread shows.
"""

from __future__ import annotations

import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.engine import ACTOR_OPS, ACTOR_OPS_QUICK, WINDOW, context_switches, measure_actors
from bench.http_load import measured, unexpected
from bench.report import machine_line, ok_mark, table
from bench.server import ROOT, running_server, tree_env
from bench.wrk import CONNECTIONS, ensure_wrk

PAIRS = 5
OLD, NEW = "old", "new"
RATE_TARGET = 0.90  # HTTP limit orders/s, new/old
P99_TARGET = 1.25  # HTTP limit p99, new/old
ERRORS = "http_errors"

Figures = dict[str, float | None]
"""One side's figures in one pair, by `Metric.key` (None: that tree does not report it)."""


class UnknownRef(ValueError):
    """REF names no commit of this repository."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One compared figure; `check` judges new/old against the target."""

    key: str
    name: str
    digits: int
    target: str = ""
    check: Callable[[float], bool] | None = None


METRICS = (
    Metric("actors_rate", "actors: orders/s", 0),
    Metric("actors_p99", "actors: latency p99 (ms)", 2),
    Metric("actors_switches", "actors: context switches per order (its threads, timed run)", 2),
    Metric("actors_child_switches", "actors: context switches per order (whole child)", 2),
    Metric(
        "http_rate",
        "http limit: orders/s",
        0,
        f"new/old ≥ {RATE_TARGET:.2f}",
        lambda ratio: ratio >= RATE_TARGET,
    ),
    Metric(
        "http_p99",
        "http limit: p99 (ms)",
        2,
        f"new/old ≤ {P99_TARGET:.2f}",
        lambda ratio: ratio <= P99_TARGET,
    ),
    Metric("http_switches", "http limit: worker context switches per order", 2),
)


@dataclass(frozen=True, slots=True)
class Tree:
    side: str  # OLD or NEW
    root: Path
    label: str  # what the report calls it


def git(*args: str, check: bool = True) -> str:
    """`git -C <this tree> <args>`'s output."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout.strip()


def resolve(ref: str) -> str:
    """The full sha of the commit `ref` names."""
    sha = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not sha:
        raise UnknownRef(f"--compare {ref}: not a commit of {ROOT}")
    return sha


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A detached worktree of `commit` in a temporary directory, removed and unregistered
    on the way out, whatever happens: a leftover would stay registered in the repository.
    Ctrl-C is ignored while it is being removed, so that a second one cannot cut that
    short."""
    parent = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    path = parent / "old"
    try:
        git("worktree", "add", "--detach", "--quiet", str(path), commit)
        yield path
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            git("worktree", "remove", "--force", str(path), check=False)
            shutil.rmtree(parent, ignore_errors=True)
            git("worktree", "prune", check=False)
        finally:
            signal.signal(signal.SIGINT, previous)


PROBE = (
    "import compileall, bench, miniexchange\n"
    "for package in ('bench', 'miniexchange'): compileall.compile_dir(package, quiet=1)\n"
    "print(bench.__file__); print(miniexchange.__file__)"
)
"""Run in each tree as its measurements are: which files it imports (the venv's editable
install points at one checkout, which must not win), and byte-compile it, so that the
first measured child of a fresh worktree does not pay for compiling."""


def prepare(tree: Tree) -> None:
    """Check that a child started for `tree` runs `tree`'s code."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tree.root,
        env=tree_env(tree.root),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree.side} tree {tree.root}: cannot import:\n{done.stderr[-2000:]}")
    root = tree.root.resolve()
    for imported in done.stdout.split():
        if not Path(imported).resolve().is_relative_to(root):
            raise RuntimeError(f"{tree.side} tree {root}: its child imported {imported}")


def measure(tree: Tree, ops: int, duration_s: float) -> Figures:
    """One side of one pair: `actors` in a fresh interpreter, then `limit` on a fresh
    server, both of `tree`."""
    children_before = context_switches(resource.RUSAGE_CHILDREN)
    actors = measure_actors(ops, tree.root)  # the only child reaped meanwhile
    child_switches = context_switches(resource.RUSAGE_CHILDREN) - children_before
    in_process = actors.get("context_switches")
    with running_server(root=tree.root) as server:
        http = measured(server, "limit", duration_s)
    return {
        "actors_rate": actors["orders_per_s"],
        "actors_p99": actors["p99_ms"],
        "actors_switches": None if in_process is None else in_process / actors["ops"],
        "actors_child_switches": child_switches / actors["ops"],
        "http_rate": http.rps,
        "http_p99": http.p99_ms,
        "http_switches": http.switches_per_request,
        ERRORS: sum(unexpected(http).values()),
    }


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _median(runs: Sequence[Figures], key: str) -> float | None:
    values = [run[key] for run in runs]
    present = [value for value in values if value is not None]
    return statistics.median(present) if len(present) == len(values) else None


def summary(runs: dict[str, list[Figures]]) -> tuple[list[tuple[str, ...]], list[bool]]:
    """The medians table's rows, and the targets' verdicts."""
    rows: list[tuple[str, ...]] = []
    checked: list[bool] = []
    for metric in METRICS:
        old, new = _median(runs[OLD], metric.key), _median(runs[NEW], metric.key)
        ratio = new / old if old and new is not None else None
        ok = metric.check(ratio) if metric.check and ratio is not None else None
        if ok is not None:
            checked.append(ok)
        cells = (_fmt(old, metric.digits), _fmt(new, metric.digits), _fmt(ratio, 2))
        rows.append((metric.name, *cells, metric.target, ok_mark(ok)))
    errors = {side: sum(run[ERRORS] or 0 for run in runs[side]) for side in (OLD, NEW)}
    clean = not any(errors.values())
    checked.append(clean)
    errors_row = ("http limit: non-2xx + socket errors (all runs)", *map(str, errors.values()))
    rows.append((*errors_row, "", "0", ok_mark(clean)))
    return rows, checked


def raw_rows(measured_runs: Sequence[tuple[int, str, Figures]]) -> list[tuple[str, ...]]:
    """Every side of every pair in the order measured."""
    keys = [*(metric.key for metric in METRICS), ERRORS]
    digits = [*(metric.digits for metric in METRICS), 0]
    return [
        (str(pair), side, *(_fmt(figures[key], d) for key, d in zip(keys, digits, strict=True)))
        for pair, side, figures in measured_runs
    ]


RAW_HEADER = (
    "pair",
    "side",
    "actors orders/s",
    "actors p99 ms",
    "actors cs/order (threads)",
    "actors cs/order (child)",
    "http orders/s",
    "http p99 ms",
    "http cs/order",
    "http errors",
)


def describe_new(commit: str) -> tuple[str, bool]:
    """How the report names this tree, and whether it is exactly `commit` (then the
    ratios show the noise alone). The results files a run rewrites do not count."""
    head = git("log", "-1", "--format=%h %s")
    dirty = bool(git("status", "--porcelain", "--", ".", ":!bench/results"))
    label = f"`{ROOT}` at {head}" + (" + uncommitted changes" if dirty else "")
    return label, not dirty and git("rev-parse", "HEAD") == commit


def compare_report(
    ref: str,
    pairs: int,
    quick: bool,
    duration_s: float,
    log: Callable[[str], None] = print,
    notes: Sequence[str] = (),
) -> tuple[str, list[bool]]:
    """Measure OLD (REF) and NEW `pairs` times alternately; the markdown report and the
    targets' verdicts."""
    commit = resolve(ref)
    ensure_wrk()  # before minutes of work, not after them
    ops = ACTOR_OPS_QUICK if quick else ACTOR_OPS
    started = time.monotonic()
    old_label = f"`{ref}` = {git('log', '-1', '--format=%h %s', commit)}"
    new_label, identical = describe_new(commit)
    runs: dict[str, list[Figures]] = {OLD: [], NEW: []}
    measured_runs: list[tuple[int, str, Figures]] = []
    with worktree(commit) as old_root:
        trees = {OLD: Tree(OLD, old_root, old_label), NEW: Tree(NEW, ROOT, new_label)}
        for tree in trees.values():
            prepare(tree)
            log(f"compare: {tree.side} = {tree.label} ({tree.root})")
        for pair in range(1, pairs + 1):
            for side in (OLD, NEW) if pair % 2 else (NEW, OLD):
                log(f"compare: pair {pair}/{pairs}, {side}: actors, then http limit ...")
                figures = measure(trees[side], ops, duration_s)
                runs[side].append(figures)
                measured_runs.append((pair, side, figures))
                log(
                    f"  actors {figures['actors_rate']:,.0f} orders/s, p99 "
                    f"{figures['actors_p99']:.2f} ms; http limit {figures['http_rate']:,.0f} "
                    f"orders/s, p99 {figures['http_p99']:.2f} ms"
                )
    rows, checked = summary(runs)
    lines = [
        f"# `python -m bench --compare {ref}`: new against old, {pairs} alternating "
        f"pair{'s' * (pairs != 1)}",
        "",
        f"- old: {old_label} (a temporary worktree)",
        f"- new: {new_label}",
        *(
            ["- Identical code on both sides: the ratios show the noise alone."]
            if identical
            else []
        ),
        "",
        *table(("metric", "old median", "new median", "new/old", "target", "ok?"), rows),
        "",
        "Each pair's raw figures, in the order measured:",
        "",
        *table(RAW_HEADER, raw_rows(measured_runs)),
        "",
        machine_line(),
        "",
        f"- Actors: each tree's own `python -m bench.engine actors --ops {ops} --window "
        f"{WINDOW}` in a fresh interpreter pinned to core 0. Context switches per order: "
        "'threads' is what that engine prints (all its threads, timed run only; n/a for a "
        "tree that does not print it), 'child' is getrusage(RUSAGE_CHILDREN) around the "
        "child, so it includes its start, the flow's generation and the exchange's start "
        "and stop.",
        f"- HTTP: a fresh server of each tree (gunicorn -c config/gunicorn.conf.py, "
        f"DATABASE_PATH=:memory:) on core 0, one `limit` run of wrk -t1 -c{CONNECTIONS} "
        f"-d{duration_s:g}s on core 1 with this tree's Lua scripts, 127.0.0.1 only.",
        "- Pairs alternate which side goes first; medians of each side.",
        *(f"- {note}" for note in notes),
        f"- Total compare time: {time.monotonic() - started:.0f} s.",
    ]
    return "\n".join(lines) + "\n", checked
