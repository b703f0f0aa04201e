"""Request bodies as JSON objects with exact numbers, or `invalid_request`.

Strict JSON only (UTF-8, no NaN, at most 1024 levels, an object at the top), and every
number kept exact (int, Decimal), since money must never pass through a binary float.
"""

from __future__ import annotations

import json
import re
import sys
from decimal import Decimal
from typing import Any, Final, NoReturn

import orjson

from miniexchange.model.errors import ExchangeError
from miniexchange.model.values import EXACT_CONTEXT

INVALID_REQUEST_MESSAGE: Final = (
    "Request body must be valid JSON with Content-Type: application/json"
)
MAX_NESTING: Final = 1024  # orjson's own limit, and the most levels a body may have

RECURSION_LIMIT: Final = 4000
"""The process' recursion limit, raised here once (never lowered), the only place it is
set: the stdlib decoder and the fingerprint recurse once or twice per nesting level, on
top of the server's own frames, so 1024 levels do not fit in the default 1000. Parse
on the event loop's thread: a thread with a small C stack (an actor's) could overflow."""
if sys.getrecursionlimit() < RECURSION_LIMIT:
    sys.setrecursionlimit(RECURSION_LIMIT)

_INT_DIGITS: Final = 4300  # Python's default int-from-text limit; longer literals: HugeInt

# orjson refuses a finite literal that overflows a double (1e400); that is valid JSON.
_ORJSON_INFINITY: Final = "number is infinity"


class HugeInt(Decimal):
    """An integer literal longer than Python's int-from-text digit limit (4300 digits).

    Still an *integer literal* (so `quantity` says "must be <= 1000000000", not "must be an
    integer"), kept exactly as a Decimal because int() would refuse it (and is quadratic).
    """

    __slots__ = ()


class ExtremeDecimal(Decimal):
    """A number literal with an exponent beyond Decimal's range (`1e99999999999999999999`).

    The value is a stand-in of the same sign and "size class" (huge, or tiny but not zero),
    which is all validation needs; `canonical` keeps the exact value for fingerprints.
    """

    __slots__ = ("canonical",)
    canonical: bytes


class _RejectedConstant(ValueError):
    """NaN, Infinity and -Infinity: accepted by Python's json module, not by JSON."""


def _reject_constant(name: str) -> NoReturn:
    raise _RejectedConstant(name)


_NUMBER_RE: Final = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]+))?", re.ASCII)


def _exact_number(text: str) -> Decimal:
    """parse_float of the slow decoder: exact, whatever the size of the exponent."""
    try:
        return EXACT_CONTEXT.create_decimal(text)
    except ArithmeticError:
        pass
    match = _NUMBER_RE.fullmatch(text)
    if match is None:  # unreachable: the scanner only hands over JSON number literals
        raise _RejectedConstant(text)
    sign, whole, fraction, exponent_text = match.groups()
    fraction = fraction or ""
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return Decimal(0)
    stripped = digits.rstrip("0")
    # the exponent of the leading digit, exactly, however long its text
    adjusted = EXACT_CONTEXT.add(Decimal(exponent_text or 0), len(whole.lstrip("0")) - 1)
    if not whole.lstrip("0"):  # 0.000123e...: the leading digit sits inside the fraction
        adjusted = EXACT_CONTEXT.subtract(adjusted, len(fraction) - len(fraction.lstrip("0")))
    # Body size bounds the digits, so such an exponent means astronomically large or small.
    stand_in = ExtremeDecimal(
        (1 if sign else 0, (1,), EXACT_CONTEXT.Emax if adjusted > 0 else EXACT_CONTEXT.Emin)
    )
    # what str() of the normalized Decimal would say, had the exponent fit
    mantissa = stripped[0] + ("." + stripped[1:] if len(stripped) > 1 else "")
    stand_in.canonical = f"{sign}{mantissa}E{'+' if adjusted >= 0 else ''}{adjusted}".encode()
    return stand_in


def _exact_int(text: str) -> int | Decimal:
    """parse_int of the slow decoder: any length, without int()'s quadratic conversion."""
    if len(text) <= _INT_DIGITS:
        try:
            return int(text)
        except ValueError:  # a process that lowered sys.set_int_max_str_digits()
            pass
    return HugeInt(text, EXACT_CONTEXT)


# Fast pass: C-speed int and Decimal. Rare literals (beyond the int digit limit, or an
# exponent beyond Decimal's range) make it raise, and the slow pass handles them.
_FAST_DECODER: Final = json.JSONDecoder(
    parse_float=EXACT_CONTEXT.create_decimal, parse_constant=_reject_constant
)
_EXACT_DECODER: Final = json.JSONDecoder(
    parse_float=_exact_number, parse_int=_exact_int, parse_constant=_reject_constant
)


def _invalid_request() -> ExchangeError:
    return ExchangeError("invalid_request", INVALID_REQUEST_MESSAGE)


def _is_json_media_type(content_type: str) -> bool:
    """`application/json`, case-insensitively, parameters (`; charset=utf-8`) ignored."""
    if content_type == "application/json":
        return True
    return content_type.partition(";")[0].strip(" \t").lower() == "application/json"


def parse_json_object(content_type: str | None, body: bytes) -> dict[str, Any]:
    """The body as a JSON object, numbers exact (int, Decimal), or `invalid_request`.

    Two passes. orjson is the structural gate: strict UTF-8, no lone surrogate escapes (so
    nothing unencodable reaches a response), no NaN/Infinity, at most 1024 levels, and a
    cheap exit for non-objects. The stdlib then builds the value with exact numbers
    (orjson would turn `10.005` into a binary float). Duplicate names: the last one wins.
    """
    if content_type is None or not _is_json_media_type(content_type):
        raise _invalid_request()
    try:
        gate = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not str(exc).startswith(_ORJSON_INFINITY):
            raise _invalid_request() from None
        return _parse_without_gate(body)
    if type(gate) is not dict:
        raise _invalid_request()
    text = body.decode()  # cannot fail: orjson has checked the UTF-8
    try:
        value = _FAST_DECODER.decode(text)
    except (ValueError, ArithmeticError, RecursionError):
        value = _exact_decode(text)
    return value  # type: ignore[no-any-return]


def _exact_decode(text: str) -> Any:
    try:
        return _EXACT_DECODER.decode(text)
    except (ValueError, ArithmeticError, RecursionError):
        raise _invalid_request() from None


def _parse_without_gate(body: bytes) -> dict[str, Any]:
    """The rare body orjson stopped reading at a number too big for a double.

    Only the stdlib pass reads what follows that number, and it allows what orjson would
    have refused there (lone surrogates, any depth its recursion limit reaches), so those
    two checks are made here on the value. Syntax, UTF-8 and NaN it checks itself.
    """
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise _invalid_request() from None
    value = _exact_decode(text)
    if type(value) is not dict or not _structure_ok(value):
        raise _invalid_request()
    return value


def _structure_ok(root: Any) -> bool:
    """At most MAX_NESTING levels and no lone surrogate in any string (iteratively)."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            return False
        items: Any
        if type(node) is dict:
            if not all(_encodable(key) for key in node):
                return False
            items = node.values()
        else:
            items = node
        for item in items:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append((item, depth + 1))
            elif kind is str and not _encodable(item):
                return False
    return True


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
