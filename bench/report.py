"""The one table every part reports into, and the machine it was measured on.

Figures without the machine are meaningless (the issue's targets are for a 2-core box
with the server on one core), so the machine is part of the report, not a footnote.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table; `ok` is None for a figure that has no target."""

    metric: str
    value: str
    target: str = ""
    ok: bool | None = None


def percentile(sorted_values: Sequence[int | float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(pct / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> list[tuple[str, str]]:
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu_model()),
        ("Python", platform.python_version()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def ok_mark(ok: bool | None) -> str:
    """The ok? cell: blank for a figure without a target."""
    return "" if ok is None else ("✅" if ok else "❌")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table's lines: every report (`render`, `bench.compare`) draws its tables
    the same way."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def machine_line() -> str:
    return "Machine: " + "; ".join(f"{key} {value}" for key, value in machine()) + "."


def render(rows: Sequence[Row], notes: Sequence[str] = ()) -> str:
    """The markdown report: the table, the machine, then how it was measured."""
    cells = [(row.metric, row.value, row.target, ok_mark(row.ok)) for row in rows]
    lines = table(("metric", "value", "target", "ok?"), cells)
    lines.append("")
    lines.append(machine_line())
    if notes:
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines) + "\n"
