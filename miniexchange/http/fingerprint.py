"""The idempotency fingerprint: one canonical encoding per request body.

Two retries under one `Idempotency-Key` are the same request exactly when their
fingerprints are equal: member order, whitespace and the spelling of a number do not
count, types do.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from miniexchange.http.json_body import ExtremeDecimal
from miniexchange.model.values import EXACT_CONTEXT


def fingerprint(body: dict[str, Any]) -> bytes:
    """A canonical encoding of a parsed body: equal exactly when two bodies mean the same.

    JSON with members sorted by name, no whitespace, and each number as the text of its
    normalized exact value (`10`, `10.0`, `1e1` -> `1E+1`; `150.00` -> `1.5E+2`; any zero
    -> `0`), so types stay distinct (`true`, `1`, `"1"`). orjson writes it; past its 255
    levels a plain writer takes over. Callers that keep many may hash it (sha256).
    """
    try:
        return orjson.dumps(_with_canonical_numbers(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # deeper than orjson's recursion limit
        parts: list[bytes] = []
        _canonical(body, parts)
        return b"".join(parts)


def _with_canonical_numbers(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _with_canonical_numbers(item) for key, item in value.items()}
    if kind is list:
        return [_with_canonical_numbers(item) for item in value]
    if kind is str or kind is bool or value is None:
        return value
    return orjson.Fragment(_canonical_number(value))


def _canonical(value: Any, parts: list[bytes]) -> None:
    """The same encoding as orjson's with OPT_SORT_KEYS, for documents it cannot nest."""
    kind = type(value)
    if kind is str:
        parts.append(orjson.dumps(value))
    elif kind is dict:
        parts.append(b"{")
        for index, key in enumerate(sorted(value)):
            if index:
                parts.append(b",")
            parts.append(orjson.dumps(key))
            parts.append(b":")
            _canonical(value[key], parts)
        parts.append(b"}")
    elif kind is list:
        parts.append(b"[")
        for index, item in enumerate(value):
            if index:
                parts.append(b",")
            _canonical(item, parts)
        parts.append(b"]")
    elif kind is bool or value is None:
        parts.append(orjson.dumps(value))
    else:
        parts.append(_canonical_number(value))


def _canonical_number(value: int | Decimal) -> bytes:
    """Text of the normalized exact value; one text per value, whatever the literal."""
    if not value:
        return b"0"  # 0, -0, 0.0, -0.0, 0e400
    if type(value) is ExtremeDecimal:
        return value.canonical
    return str(Decimal(value).normalize(EXACT_CONTEXT)).encode()
