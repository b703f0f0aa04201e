"""Money and timestamps as the JSON of the API and of webhook payloads write them.

Both the HTTP renderers and the webhook payloads use these, so they sit below both.
Amounts become `orjson.Fragment`s holding the pre-formatted literal (`148.50`): a
number with exactly two decimals, never a float; timestamps `YYYY-MM-DDTHH:MM:SSZ`
(sub-seconds truncated).
"""

from __future__ import annotations

import orjson

from miniexchange.model.values import format_cents, format_timestamp

__all__ = ["money", "timestamp"]


def money(cents: int | None) -> orjson.Fragment | None:
    """Cents as a JSON number literal with two decimals; None stays null."""
    if cents is None:
        return None
    return orjson.Fragment(format_cents(cents).encode())


def timestamp(us: int | None) -> str | None:
    """Microseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`; None stays null."""
    return None if us is None else format_timestamp(us)
