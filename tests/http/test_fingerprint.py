"""The idempotency fingerprint: equal exactly when two bodies mean the same."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniexchange.http.fingerprint import fingerprint
from miniexchange.http.json_body import parse_json_object
from tests.http.parsing_support import BIG, DEEP_OK, HUGE, JSON, body


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ('{"a": 1, "b": 2}', '{"b": 2, "a": 1}'),
        ('{"a":1,"b":[1,2]}', ' {\n "a" : 1 ,\t"b" : [ 1 , 2 ] } '),
        ('{"n": 10}', '{"n": 10.0}'),
        ('{"n": 10}', '{"n": 1e1}'),
        ('{"n": 10}', '{"n": 1.0E+1}'),
        ('{"n": 10}', '{"n": 100e-1}'),
        ('{"n": 150.00}', '{"n": 150}'),
        ('{"n": 150.00}', '{"n": 1.5e2}'),
        ('{"n": 0}', '{"n": -0}'),
        ('{"n": 0}', '{"n": -0.0}'),
        ('{"n": 0}', '{"n": 0e400}'),
        ('{"n": -12.50}', '{"n": -1.25e1}'),
        ('{"n": ' + BIG + "}", '{"n": ' + BIG + ".000}"),
        ('{"n": ' + HUGE + "}", '{"n": 1e5000}'),
        ('{"n": 1e99999999999999999999}', '{"n": 10e99999999999999999998}'),
        ('{"n": 1e99999999999999999999}', '{"n": 0.10e100000000000000000000}'),
        ('{"n": -2.5e-99999999999999999999}', '{"n": -25e-100000000000000000000}'),
        ('{"n": 12e99999999999999999999}', '{"n": 1.2e100000000000000000000}'),
        ('{"n": -0.00012e-99999999999999999999}', '{"n": -1.2e-100000000000000000003}'),
        ('{"n": 1e999999999999999999}', '{"n": 0.1e1000000000000000000}'),
        ('{"n": 1e999999999999999999}', '{"n": 0.000000000000000000001e1000000000000000020}'),
        ('{"a": 1, "a": 2}', '{"a": 2}'),
        ('{"o": {"y": 1, "x": [true, null]}}', '{"o": {"x": [true, null], "y": 1.0}}'),
        ('{"s": "\\u00e9"}', '{"s": "é"}'),
    ],
)
def test_equal_fingerprints(left: str, right: str) -> None:
    assert fingerprint(body(left)) == fingerprint(body(right))


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ('{"n": true}', '{"n": 1}'),
        ('{"n": false}', '{"n": 0}'),
        ('{"n": "10"}', '{"n": 10}'),
        ('{"n": null}', "{}"),
        ('{"n": null}', '{"n": 0}'),
        ('{"n": null}', '{"n": "null"}'),
        ('{"n": [1, 2]}', '{"n": [2, 1]}'),
        ('{"n": [1]}', '{"n": 1}'),
        ('{"n": "a"}', '{"n": ["a"]}'),
        ('{"n": {}}', '{"n": []}'),
        ('{"n": 1}', '{"n": 1.01}'),
        ('{"n": 10}', '{"n": 100}'),
        ('{"n": 1}', '{"n": -1}'),
        ('{"n": 1e400}', '{"n": 1e401}'),
        ('{"n": 1e99999999999999999999}', '{"n": 1e99999999999999999998}'),
        ('{"n": 1e99999999999999999999}', '{"n": -1e99999999999999999999}'),
        ('{"a": 1}', '{"b": 1}'),
        ('{"a": {"b": 1}}', '{"a.b": 1}'),
        ('{"s": "x"}', '{"s": "x "}'),
    ],
)
def test_different_fingerprints(left: str, right: str) -> None:
    assert fingerprint(body(left)) != fingerprint(body(right))


def test_fingerprint_is_canonical_json() -> None:
    raw = '{"b": [1, 10.0, true, null, "x", -0.0], "a": {"z": 1, "y": 2.50}}'
    expected = b'{"a":{"y":2.5,"z":1},"b":[1,1E+1,true,null,"x",0]}'
    assert fingerprint(body(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    [
        '{"b": [1, 10.0, true, false, null, "x", -0.0], "a": {"z": 1, "y": 2.50}}',
        r'{"\u00e9": 1, "e": 2, "\ud83d\ude00": [], "E": {}, "": "\u0000\"\\"}',
        '{"n": 1e99999999999999999999, "m": ' + HUGE + ', "k": -1e-400}',
    ],
)
def test_both_fingerprint_writers_agree(raw: str) -> None:
    """Past 255 levels a plain writer replaces orjson: it must write the same bytes."""
    from miniexchange.http.fingerprint import _canonical

    parts: list[bytes] = []
    _canonical(body(raw), parts)
    assert b"".join(parts) == fingerprint(body(raw))


def test_fingerprint_of_1024_levels() -> None:
    assert fingerprint(parse_json_object(JSON, DEEP_OK)).count(b"[") == 1023


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.one_of(st.integers(), st.booleans(), st.none(), st.text(max_size=5)),
        max_size=6,
    )
)
def test_fingerprint_ignores_member_order(members: dict[str, Any]) -> None:
    import json

    forward = json.dumps(members)
    backward = json.dumps(dict(reversed(list(members.items()))))
    assert fingerprint(body(forward)) == fingerprint(body(backward))
