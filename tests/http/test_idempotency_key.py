"""The `Idempotency-Key` header's own check."""

from __future__ import annotations

import pytest

from miniexchange.http.idempotency import validate_idempotency_key
from tests.http.parsing_support import assert_validation


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (["abc"], "abc"),
        (["550e8400-e29b-41d4-a716-446655440000"], "550e8400-e29b-41d4-a716-446655440000"),
        ([" \tkey-1\t "], "key-1"),
        (["a,b"], "a,b"),  # one field whose value holds a comma
        (["!~"], "!~"),
        (["x" * 255], "x" * 255),
        (["  " + "x" * 255 + "  "], "x" * 255),
    ],
)
def test_idempotency_key_accepted(values: list[str], expected: str | None) -> None:
    assert validate_idempotency_key(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        [""],
        ["   "],
        [" \t "],
        ["x" * 256],
        ["a b"],
        ["a\tb"],
        ["é"],
        ["key\x7f"],
        ["key\x00"],
        ["key\n"],
        ["a", "b"],
        ["same", "same"],
    ],
)
def test_idempotency_key_rejected(values: list[str]) -> None:
    assert_validation(
        lambda: validate_idempotency_key(values),
        "Idempotency-Key must be 1 to 255 visible ASCII characters",
    )
