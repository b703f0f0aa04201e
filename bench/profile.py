"""An optional py-spy profile of the server worker under the `limit` load.

The issue asks to remove what the profile shows, not what we guess; this makes the
profile one command (`python -m bench --profile`). py-spy is not a dependency of the
project: install it into the venv (`.venv/bin/pip install py-spy`) to use this part.

py-spy samples the worker from outside (`--nonblocking`: the process is never
paused), so the server runs as shipped. Only the thread holding the GIL is sampled
(`--gil`): with every actor a thread, the waiting ones would otherwise fill the profile
with `Condition.wait`, and on one core the GIL holder is where the CPU goes. A sample's
innermost frame is where the time is spent ("own" time); every frame of it gets
"total" time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.server import running_server
from bench.wrk import WrkResult, run_wrk

_LINE = re.compile(r":\d+\)$")
RATE = 200  # samples per second


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def summarize(raw: str, top: int = 15, expected: int = 0) -> str:
    """Markdown tables of the top functions by own and by total time (collapsed stacks
    as py-spy's `--format raw` writes them: `frame;frame;... count`)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return "py-spy collected no samples.\n"
    held = f" (the GIL was held at {samples / expected:.0%} of the sampling instants)"
    out = [f"{samples:,} samples of the thread holding the GIL{held if expected else ''}.", ""]
    # Inclusive time only for the project's own functions: the outer frames (gunicorn,
    # the event loop, the actor loop) are in every sample and say nothing.
    ours = Counter({fn: n for fn, n in total.items() if "(miniexchange/" in fn})
    for title, counter in (("own time", own), ("total time, miniexchange functions", ours)):
        out += [f"Top {top} by {title}:", "", "| % | function (file) |", "|---|---|"]
        out += [f"| {n / samples:.1%} | `{fn}` |" for fn, n in counter.most_common(top)]
        out.append("")
    return "\n".join(out)


def profile_limit(
    duration_s: float = 10,
    sample_s: int = 5,
    log: Callable[[str], None] = print,
    scenario: str = "limit",
) -> str:
    """Profile the worker for `sample_s` seconds in the middle of a `scenario` run."""
    spy = py_spy()
    if spy is None:
        return "py-spy is not installed: run `.venv/bin/pip install py-spy` and try again.\n"
    with running_server() as server, tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / f"{scenario}.raw"
        holder: dict[str, WrkResult] = {}
        load = threading.Thread(
            target=lambda: holder.update(result=run_wrk(scenario, server.url, duration_s))
        )
        log(f"profile: {scenario} load for {duration_s:g} s, py-spy for {sample_s} s ...")
        load.start()
        try:
            time.sleep(min(2.0, max(0.0, duration_s - sample_s) / 2))
            subprocess.run(
                [
                    spy,
                    "record",
                    "--pid",
                    str(server.worker_pid()),
                    "--duration",
                    str(sample_s),
                    "--rate",
                    str(RATE),
                    "--nonblocking",
                    "--gil",
                    "--format",
                    "raw",
                    "--output",
                    str(output),
                ],
                check=True,
                capture_output=True,
            )
        finally:
            load.join()
        raw = output.read_text() if output.exists() else ""
    result = holder.get("result")
    heading = (
        f"Server under `{scenario}` ({result.rps:,.0f} req/s while sampled, py-spy --nonblocking "
        "adds some load).\n\n"
        if result
        else ""
    )
    return heading + summarize(raw, expected=RATE * sample_s)
