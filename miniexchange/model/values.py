"""Domain values at the edge of the model: identifier patterns, bounds, money and time text.

Everything here is pure and exact: money is integer cents and never passes through a
binary float; timestamps are integer microseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Clamped,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Underflow,
)
from typing import Final

# --- identifiers ------------------------------------------------------------------------
# The API's patterns, as text for messages (`symbol must match ^[A-Z]{1,10}$`) and
# compiled for `fullmatch` with re.ASCII: whole string only, so "AAPL\n" never matches
# (a `$` anchor with `match` would accept that trailing newline).

SYMBOL_PATTERN: Final = "^[A-Z]{1,10}$"
BROKER_ID_PATTERN: Final = "^[a-zA-Z0-9_-]{1,64}$"
DOCUMENT_NUMBER_PATTERN: Final = "^[a-zA-Z0-9]{1,32}$"

SYMBOL_RE: Final = re.compile(r"[A-Z]{1,10}", re.ASCII)
BROKER_ID_RE: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}", re.ASCII)
DOCUMENT_NUMBER_RE: Final = re.compile(r"[a-zA-Z0-9]{1,32}", re.ASCII)


def is_symbol(text: str) -> bool:
    """Whether `text` is a syntactically valid symbol."""
    return SYMBOL_RE.fullmatch(text) is not None


def is_broker_id(text: str) -> bool:
    """Whether `text` is a syntactically valid broker id."""
    return BROKER_ID_RE.fullmatch(text) is not None


# --- bounds ----------------------------------------------------------------------------
# Chosen so that price x quantity stays below 10**17 cents, far inside a signed 64-bit int.

MAX_PRICE_CENTS: Final = 100_000_000  # 1000000.00
MAX_QUANTITY: Final = 1_000_000_000
MAX_CASH_CENTS: Final = 100_000_000_000_000  # 1000000000000.00

# --- money ------------------------------------------------------------------------------

# Exact decimal arithmetic: enough precision and exponent range that no operation on a
# parsed literal rounds, and every signal that would mean "not exact" raises instead.
EXACT_CONTEXT: Final = Context(
    prec=MAX_PREC,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Underflow, Clamped, Inexact, Rounded],
)

# `integer_cents` caps magnitudes at this many cents: every bound is far below it, and a
# literal such as 1e999999999 must not cost a billion-digit integer.
CENTS_CAP: Final = 10**20
_INT_CAP: Final = CENTS_CAP // 100


def format_cents(cents: int) -> str:
    """Render cents with exactly two decimals (`14850` -> `"148.50"`), by integer math only."""
    if cents < 0:
        units, rest = divmod(-cents, 100)
        return f"-{units}.{rest:02d}"
    units, rest = divmod(cents, 100)
    return f"{units}.{rest:02d}"


def integer_cents(value: int | Decimal) -> int | None:
    """Exact cents of a JSON number, or None when it has more than 2 decimal places.

    The decimal-places rule is judged on the exact value (`150.000` and `1.5E+2` are fine,
    `10.005` is not), so nothing here may round: Decimal work goes through EXACT_CONTEXT,
    never the thread's context. Magnitudes beyond every bound come back as +/-CENTS_CAP:
    callers only compare with bounds, and the cost stays proportional to the digits
    actually written (`1e999999999` never becomes an integer).
    """
    if type(value) is int:
        if -_INT_CAP <= value <= _INT_CAP:
            return value * 100
        return CENTS_CAP if value > 0 else -CENTS_CAP
    if value.adjusted() < 17:  # below 10**17: the cents fit an int cheaply (usual case)
        scaled = value.scaleb(2, EXACT_CONTEXT)
        cents = int(scaled)
        return cents if cents == scaled else None
    return _large_cents(value)


def _large_cents(value: Decimal) -> int | None:
    """`integer_cents` for |value| >= 10**17: the decimals rule still first, then the cap."""
    sign, digits, exponent = value.as_tuple()
    if digits == (0,):  # zero: its `adjusted()` is just its exponent (0E+400)
        return 0
    cut = -2 - exponent  # type: ignore[operator]  # finite: parsed literals are never NaN/inf
    if cut > 0 and any(digits[-cut:]):
        return None
    return -CENTS_CAP if sign else CENTS_CAP


# --- time -------------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1)
_US_PER_SECOND: Final = 1_000_000
_US_PER_DAY: Final = 86_400 * _US_PER_SECOND

_format_cache: dict[int, str] = {}
_FORMAT_CACHE_SIZE: Final = 8192


def format_timestamp(us: int) -> str:
    """Render `YYYY-MM-DDTHH:MM:SSZ`, sub-second digits truncated (floor), never rounded.

    Runs on every response, and the timestamps of a burst share their second, so the
    formatted second is cached: a hit is a dict lookup, ~15x cheaper than formatting.
    Raises OverflowError outside years 1..9999, which no internal timestamp reaches.
    """
    second = us // _US_PER_SECOND
    text = _format_cache.get(second)
    if text is None:
        if len(_format_cache) >= _FORMAT_CACHE_SIZE:
            _format_cache.clear()
        text = (_EPOCH + timedelta(seconds=second)).isoformat() + "Z"
        _format_cache[second] = text
    return text


# RFC 3339 `date-time` (section 5.6). Its ABNF is case-insensitive, so `t` and `z` are
# valid and accepted; the space separator is only mentioned in a note, is not part of the
# grammar, and is rejected. More than 6 fractional digits are rejected by the pattern.
_RFC3339_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_YEAR_0_SHIFT: Final = 5 * 146_097  # days from 0000-01-01 to 2000-01-01: five 400-year cycles

MIN_TIMESTAMP_US: Final = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY
MAX_TIMESTAMP_US: Final = (date(9999, 12, 31).toordinal() + 1 - _EPOCH_ORDINAL) * _US_PER_DAY - 1

# Valid results by text: clients tend to reuse an expiry, and a hit costs a dict lookup
# instead of ~2 us. Bounded; the pattern caps the key at 35 characters.
_parse_cache: dict[str, int] = {}
_PARSE_CACHE_SIZE: Final = 4096


def parse_rfc3339(text: str) -> int | None:
    """Microseconds since the epoch (UTC) of an RFC 3339 date-time, or None if invalid.

    Rejected: no offset, an impossible date, hour > 23, minute > 59, a
    leap second (`:60`: it has no place on the POSIX timeline we keep), more than 6
    fractional digits, an offset hour > 23 or minute > 59, and a UTC value outside years
    1..9999 (judged after conversion: `0000-12-31T23:30:00-00:30` is year 1 in UTC and
    valid). `-00:00` ("offset unknown" in RFC 3339) is read as UTC. Fractional seconds
    are kept exactly.
    """
    cached = _parse_cache.get(text)
    if cached is not None:
        return cached
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset_sign, offset_h, offset_m = (
        match.groups()
    )
    y = int(year)
    try:
        days = date(y, int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        if y != 0:
            return None
        try:  # year 0 is a leap year, like 2000, and `date` stops at year 1
            days = date(2000, int(month), int(day)).toordinal() - _YEAR_0_SHIFT - _EPOCH_ORDINAL
        except ValueError:
            return None
    h = int(hour)
    mi = int(minute)
    s = int(second)
    if h > 23 or mi > 59 or s > 59:
        return None
    seconds = ((days * 24 + h) * 60 + mi) * 60 + s
    if offset_sign is not None:
        oh = int(offset_h)
        om = int(offset_m)
        if oh > 23 or om > 59:
            return None
        offset = (oh * 60 + om) * 60
        seconds -= offset if offset_sign == "+" else -offset
    us = seconds * _US_PER_SECOND
    if fraction is not None:
        us += int(fraction.ljust(6, "0"))
    if not MIN_TIMESTAMP_US <= us <= MAX_TIMESTAMP_US:
        return None
    if len(_parse_cache) >= _PARSE_CACHE_SIZE:
        _parse_cache.clear()
    _parse_cache[text] = us
    return us
