"""What the request-parsing tests share: bodies go through `parse_json_object` first, so
the validators see exactly what a request produces (ints, Decimals, HugeInt, ...), not
hand-made Python values."""

from __future__ import annotations

from typing import Any

import pytest

from miniexchange.http.json_body import parse_json_object
from miniexchange.model.errors import ExchangeError
from miniexchange.model.values import parse_rfc3339

JSON = "application/json"
NOW = parse_rfc3339("2026-02-17T19:00:00Z")
assert NOW is not None
EXPIRES = "2026-02-20T18:00:00Z"
EXPIRES_US = parse_rfc3339(EXPIRES)
DELETE = object()  # an override that removes the member

BIG = str(2**70)
DEEP_OK = b'{"a":' + b"[" * 1023 + b"]" * 1023 + b"}"  # 1024 levels
HUGE = "1" + "0" * 5000  # beyond Python's int-from-text digit limit


def body(text: str | bytes) -> dict[str, Any]:
    return parse_json_object(JSON, text.encode() if isinstance(text, str) else text)


def assert_validation(call: Any, message: str) -> None:
    with pytest.raises(ExchangeError) as caught:
        call()
    assert (caught.value.code, caught.value.message) == ("validation_error", message)


def merged(base: dict[str, str], overrides: dict[str, Any]) -> dict[str, Any]:
    """A body from JSON literal texts: base members, then overrides (DELETE removes one)."""
    members = {**base, **overrides}
    text = ", ".join(
        f'"{name}": {literal}' for name, literal in members.items() if literal is not DELETE
    )
    return body("{" + text + "}")
