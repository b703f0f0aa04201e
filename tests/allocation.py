"""Counting the copying work of a step by the memory it allocates (tracemalloc).

A step that copies n references allocates at least 8·n bytes at its peak, so the bytes
a step allocates tell whether it copies what came before it, with no clock involved:
the count does not depend on the machine's speed or load.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


@contextmanager
def tracing() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def peak_of(step: Callable[[], T]) -> tuple[T, int]:
    """`step()`'s result and the most bytes it had allocated at once (inside `tracing`)."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = step()
    return result, tracemalloc.get_traced_memory()[1] - before


def peaks_between(items: Iterable[T], peaks: list[int]) -> Iterator[T]:
    """`items`, appending to `peaks` what the consumer allocated at its peak while it
    handled each item (from the item's hand-over until it asked for the next one)."""
    for item in items:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        yield item
        peaks.append(tracemalloc.get_traced_memory()[1] - before)
