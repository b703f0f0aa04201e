"""Domain values: identifier patterns, money in cents, timestamp text, exactly."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniexchange.model import values
from miniexchange.model.values import (
    BROKER_ID_PATTERN,
    BROKER_ID_RE,
    CENTS_CAP,
    DOCUMENT_NUMBER_PATTERN,
    DOCUMENT_NUMBER_RE,
    MAX_CASH_CENTS,
    MAX_PRICE_CENTS,
    MAX_QUANTITY,
    MAX_TIMESTAMP_US,
    MIN_TIMESTAMP_US,
    SYMBOL_PATTERN,
    SYMBOL_RE,
    format_cents,
    format_timestamp,
    integer_cents,
    is_broker_id,
    is_symbol,
    parse_rfc3339,
)

EPOCH = datetime(1970, 1, 1)
ONE_US = timedelta(microseconds=1)


def us_of(moment: datetime) -> int:
    """Microseconds since the epoch of a naive UTC datetime (the test's own arithmetic)."""
    return (moment - EPOCH) // ONE_US


# --- patterns ---------------------------------------------------------------------------


def test_pattern_texts_are_the_contracts() -> None:
    assert SYMBOL_PATTERN == "^[A-Z]{1,10}$"
    assert BROKER_ID_PATTERN == "^[a-zA-Z0-9_-]{1,64}$"
    assert DOCUMENT_NUMBER_PATTERN == "^[a-zA-Z0-9]{1,32}$"


def test_bounds_are_the_contracts() -> None:
    assert (MAX_PRICE_CENTS, MAX_QUANTITY, MAX_CASH_CENTS) == (
        100_000_000,
        1_000_000_000,
        100_000_000_000_000,
    )


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("A", True),
        ("AAPL", True),
        ("ABCDEFGHIJ", True),
        ("", False),
        ("ABCDEFGHIJK", False),
        ("aapl", False),
        ("AAPl", False),
        ("AAPL\n", False),
        ("\nAAPL", False),
        ("AAPL ", False),
        ("AA PL", False),
        ("AA1", False),
        ("ÄAPL", False),
        ("ＡAPL", False),  # fullwidth A
    ],
)
def test_symbol_pattern(text: str, valid: bool) -> None:
    assert is_symbol(text) is valid
    assert (SYMBOL_RE.fullmatch(text) is not None) is valid


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("broker-123", True),
        ("B_1-x", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("bad id", False),
        ("broker\n", False),
        ("brokér", False),
        ("broker.1", False),
        ("b/1", False),
    ],
)
def test_broker_id_pattern(text: str, valid: bool) -> None:
    assert is_broker_id(text) is valid
    assert (BROKER_ID_RE.fullmatch(text) is not None) is valid


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("12345678900", True),
        ("abcXYZ09", True),
        ("1" * 32, True),
        ("1" * 33, False),
        ("", False),
        ("123-456", False),
        ("123_456", False),
        ("123\n", False),
        ("١٢٣", False),  # Arabic-Indic digits: ASCII only
    ],
)
def test_document_number_pattern(text: str, valid: bool) -> None:
    assert (DOCUMENT_NUMBER_RE.fullmatch(text) is not None) is valid


# --- money ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cents", "text"),
    [
        (0, "0.00"),
        (1, "0.01"),
        (10, "0.10"),
        (99, "0.99"),
        (100, "1.00"),
        (14850, "148.50"),
        (14860, "148.60"),
        (-1, "-0.01"),
        (-105, "-1.05"),
        (-100, "-1.00"),
        (MAX_PRICE_CENTS, "1000000.00"),
        (MAX_CASH_CENTS, "1000000000000.00"),
        (10**30 + 7, "10000000000000000000000000000.07"),
    ],
)
def test_format_cents(cents: int, text: str) -> None:
    assert format_cents(cents) == text


@pytest.mark.parametrize(
    ("value", "cents"),
    [
        (0, 0),
        (150, 15000),
        (-3, -300),
        (Decimal("150"), 15000),
        (Decimal("150.0"), 15000),
        (Decimal("150.00"), 15000),
        (Decimal("150.000"), 15000),
        (Decimal("150." + "0" * 200), 15000),
        (Decimal("1.5E+2"), 15000),
        (Decimal("1.5e2"), 15000),
        (Decimal("15000e-2"), 15000),
        (Decimal("148.5"), 14850),
        (Decimal("0.01"), 1),
        (Decimal("-0.01"), -1),
        (Decimal("0.0"), 0),
        (Decimal("-0.0"), 0),
        (Decimal("0E-400"), 0),
        (Decimal("0E+400"), 0),
        (Decimal("1000000.00"), MAX_PRICE_CENTS),
        (Decimal("1000000000000.00"), MAX_CASH_CENTS),
        (Decimal("999999999999999.99"), 99_999_999_999_999_999),
        # beyond every bound: capped, sign kept
        (Decimal("1E+400"), CENTS_CAP),
        (Decimal("-1E+400"), -CENTS_CAP),
        (Decimal("1E+999999999999999999"), CENTS_CAP),
        (Decimal("100000000000000000000.00"), CENTS_CAP),
        (2**70, CENTS_CAP),
        (-(2**70), -CENTS_CAP),
        # more than 2 decimal places, judged on the exact value
        (Decimal("10.005"), None),
        (Decimal("0.001"), None),
        (Decimal("-0.001"), None),
        (Decimal("1E-400"), None),
        (Decimal("150.0000000000000000000000000000000001"), None),
        (Decimal("100000000000000000000.001"), None),  # large and fractional: decimals first
        (Decimal("-1000000000000000000000000000000.005"), None),
    ],
)
def test_integer_cents(value: int | Decimal, cents: int | None) -> None:
    assert integer_cents(value) == cents


def test_integer_cents_does_not_depend_on_the_thread_context() -> None:
    """A 40-digit literal would round under the default 28-digit context."""
    from decimal import localcontext

    value = Decimal("1234567.0000000000000000000000000000000001")
    with localcontext() as context:
        context.prec = 5
        assert integer_cents(value) is None
        assert integer_cents(Decimal("123456.78")) == 12345678


@given(st.integers(min_value=-MAX_CASH_CENTS, max_value=MAX_CASH_CENTS))
def test_format_cents_round_trips_through_the_money_parser(cents: int) -> None:
    text = format_cents(cents)
    assert integer_cents(Decimal(text)) == cents
    # the same amount as an exponent literal, the way `1.5e2` reaches us
    assert integer_cents(Decimal(f"{cents}E-2")) == cents


# --- timestamps: output -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("us", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (999_999, "1970-01-01T00:00:00Z"),  # truncated, never rounded
        (1_000_000, "1970-01-01T00:00:01Z"),
        (-1, "1969-12-31T23:59:59Z"),  # floor: the second it is in
        (-1_000_000, "1969-12-31T23:59:59Z"),
        (-1_000_001, "1969-12-31T23:59:58Z"),
        (1_771_354_800_000_000, "2026-02-17T19:00:00Z"),
        (1_771_354_800_999_999, "2026-02-17T19:00:00Z"),
        (us_of(datetime(2024, 2, 29, 23, 59, 59, 999_999)), "2024-02-29T23:59:59Z"),
        (MIN_TIMESTAMP_US, "0001-01-01T00:00:00Z"),
        (MAX_TIMESTAMP_US, "9999-12-31T23:59:59Z"),
        (us_of(datetime(999, 3, 4, 5, 6, 7)), "0999-03-04T05:06:07Z"),
    ],
)
def test_format_timestamp(us: int, text: str) -> None:
    assert format_timestamp(us) == text
    assert format_timestamp(us) == text  # second call: from the cache


def test_format_timestamp_cache_stays_bounded() -> None:
    for second in range(values._FORMAT_CACHE_SIZE + 10):
        format_timestamp(second * 1_000_000)
    assert len(values._format_cache) <= values._FORMAT_CACHE_SIZE
    assert format_timestamp(0) == "1970-01-01T00:00:00Z"


# --- timestamps: input (RFC 3339 with an offset) ----------------------------------------

BASE = us_of(datetime(2026, 2, 20, 18, 0, 0))


@pytest.mark.parametrize(
    ("text", "us"),
    [
        ("2026-02-20T18:00:00Z", BASE),
        ("2026-02-20t18:00:00z", BASE),  # RFC 3339's ABNF is case-insensitive
        ("2026-02-20T18:00:00+00:00", BASE),
        ("2026-02-20T18:00:00-00:00", BASE),  # "offset unknown": read as UTC
        ("2026-02-20T23:30:00+05:30", BASE),
        ("2026-02-20T13:00:00-05:00", BASE),
        ("2026-02-21T17:59:00+23:59", BASE),
        ("2026-02-20T18:00:00.5Z", BASE + 500_000),
        ("2026-02-20T18:00:00.05Z", BASE + 50_000),
        ("2026-02-20T18:00:00.123456Z", BASE + 123_456),
        ("2026-02-20T18:00:00.000001Z", BASE + 1),
        ("2026-02-20T18:00:00.000000Z", BASE),
        ("2024-02-29T00:00:00Z", us_of(datetime(2024, 2, 29))),
        ("2000-02-29T00:00:00Z", us_of(datetime(2000, 2, 29))),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999999Z", -1),
        ("0001-01-01T00:00:00Z", MIN_TIMESTAMP_US),
        ("9999-12-31T23:59:59.999999Z", MAX_TIMESTAMP_US),
        ("0000-12-31T23:30:00-00:30", MIN_TIMESTAMP_US),  # year 0 locally, year 1 in UTC
        ("10000-01-01T00:00:00Z", None),
        ("9999-12-31T23:30:00-01:00", None),  # year 10000 once converted to UTC
        ("0001-01-01T00:30:00+01:00", None),  # year 0 once converted to UTC
        ("0000-01-01T00:00:00Z", None),
        ("0000-12-31T23:59:59.5-00:01", MIN_TIMESTAMP_US + 59_500_000),
        ("0000-02-30T23:30:00-23:59", None),  # impossible even in year 0
        ("0000-02-29T23:30:00-23:59", None),  # a real day of year 0, still year 0 in UTC
    ],
)
def test_parse_rfc3339_values(text: str, us: int | None) -> None:
    assert parse_rfc3339(text) == us
    assert parse_rfc3339(text) == us  # second call: from the cache when valid


def test_parse_cache_stays_bounded() -> None:
    for minute in range(values._PARSE_CACHE_SIZE + 10):
        parse_rfc3339(
            f"2030-01-01T{minute // 60 % 24:02d}:{minute % 60:02d}:00+{minute % 7:02d}:00"
        )
    assert len(values._parse_cache) <= values._PARSE_CACHE_SIZE
    assert parse_rfc3339("1970-01-01T00:00:00Z") == 0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-02-20",
        "18:00:00Z",
        "2026-02-20T18:00:00",  # no offset
        "2026-02-20T18:00Z",  # no seconds
        "2026-02-20 18:00:00Z",  # space: only a note in RFC 3339, not its grammar
        "2026-02-20_18:00:00Z",
        "2026-02-20T18:00:00+0530",
        "2026-02-20T18:00:00+05",
        "2026-02-20T18:00:00+24:00",
        "2026-02-20T18:00:00+05:60",
        "2026-02-20T18:00:00.Z",
        "2026-02-20T18:00:00.1234567Z",  # more than 6 fractional digits
        "2026-02-20T18:00:00,5Z",
        "2030-02-30T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-02-20T24:00:00Z",
        "2026-02-20T18:60:00Z",
        "2026-12-31T23:59:60Z",  # leap second
        "2026-02-20T18:00:00Z\n",
        " 2026-02-20T18:00:00Z",
        "2026-02-20T18:00:00ZZ",
        "2026-2-20T18:00:00Z",
        "+2026-02-20T18:00:00Z",
        "２０２６-02-20T18:00:00Z",  # fullwidth digits: ASCII only
        "2026-02-20T18:00:00UTC",
        "now",
    ],
)
def test_parse_rfc3339_rejects(text: str) -> None:
    assert parse_rfc3339(text) is None


_OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offset_minutes=_OFFSETS,
    digits=st.integers(min_value=0, max_value=6),
)
def test_parse_then_format_truncates_sub_seconds(
    moment: datetime, offset_minutes: int, digits: int
) -> None:
    """Any offset and 0..6 fractional digits: exact microseconds in, whole second out."""
    local = moment + timedelta(minutes=offset_minutes)
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    fraction = f"{local.microsecond:06d}"[:digits]
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}T"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
        f"{'.' + fraction if digits else ''}{sign}{hours:02d}:{minutes:02d}"
    )
    kept = int(fraction.ljust(6, "0")) if digits else 0
    expected = moment.replace(microsecond=kept)
    parsed = parse_rfc3339(text)
    assert parsed == us_of(expected)
    assert format_timestamp(parsed) == (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )
