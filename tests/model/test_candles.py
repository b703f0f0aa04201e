"""The candle aggregation: epoch-aligned intervals, execution order within one,
the 1000 bound, and the latest N oldest first."""

from __future__ import annotations

from datetime import UTC, datetime

from miniexchange.model.candles import CANDLES_KEPT, INTERVALS, Candle, SymbolCandles


def us(text: str) -> int:
    """Microseconds since the epoch of an ISO time in UTC."""
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return (int(moment.timestamp()) * 1_000_000) + moment.microsecond


def test_a_trade_just_before_a_minute_and_one_at_it_fall_in_two_1m_candles() -> None:
    candles = SymbolCandles()
    candles.add(10_000, 5, us("2026-12-03T09:00:59.999999"))
    candles.add(10_100, 7, us("2026-12-03T09:01:00"))
    assert candles.latest("1m", 10) == [
        Candle(us("2026-12-03T09:00:00"), 10_000, 10_000, 10_000, 10_000, 5, 1),
        Candle(us("2026-12-03T09:01:00"), 10_100, 10_100, 10_100, 10_100, 7, 1),
    ]
    assert candles.latest("1s", 10) == [
        Candle(us("2026-12-03T09:00:59"), 10_000, 10_000, 10_000, 10_000, 5, 1),
        Candle(us("2026-12-03T09:01:00"), 10_100, 10_100, 10_100, 10_100, 7, 1),
    ]
    # 5m, 1h and 1d hold both trades in one candle
    for name, start in (
        ("5m", "2026-12-03T09:00:00"),
        ("1h", "2026-12-03T09:00:00"),
        ("1d", "2026-12-03T00:00:00"),
    ):
        assert candles.latest(name, 10) == [
            Candle(us(start), 10_000, 10_100, 10_000, 10_100, 12, 2)
        ], name


def test_five_minutes_and_a_day_are_aligned_to_the_epoch_in_utc() -> None:
    candles = SymbolCandles()
    candles.add(500, 1, us("2026-12-03T23:59:59.999999"))
    candles.add(600, 1, us("2026-12-04T00:00:00"))
    candles.add(700, 1, us("2026-12-04T00:07:30"))
    assert [c.start for c in candles.latest("1d", 10)] == [
        us("2026-12-03T00:00:00"),
        us("2026-12-04T00:00:00"),
    ]
    assert [c.start for c in candles.latest("5m", 10)] == [
        us("2026-12-03T23:55:00"),
        us("2026-12-04T00:00:00"),
        us("2026-12-04T00:05:00"),
    ]
    assert [c.start for c in candles.latest("1h", 10)] == [
        us("2026-12-03T23:00:00"),
        us("2026-12-04T00:00:00"),
    ]


def test_open_is_the_first_trade_and_close_the_last_in_execution_order() -> None:
    candles = SymbolCandles()
    at = us("2026-12-03T09:00:10")
    # one matching pass: three fills sharing executed_at, in match order
    candles.add(10_300, 1, at)
    candles.add(9_900, 2, at)
    candles.add(10_050, 3, at)
    candles.add(10_500, 4, at + 20_000_000)
    candles.add(10_000, 5, at + 20_000_000)
    assert candles.latest("1m", 1) == [
        Candle(us("2026-12-03T09:00:00"), 10_300, 10_500, 9_900, 10_000, 15, 5)
    ]


def test_a_thousand_candles_are_kept_per_interval_and_the_oldest_goes() -> None:
    candles = SymbolCandles()
    first = us("2026-12-03T00:00:00")
    for n in range(CANDLES_KEPT + 1):  # 1001 one-second intervals
        candles.add(100 + n, 1, first + n * 1_000_000)
    kept = candles.latest("1s", CANDLES_KEPT)
    assert len(candles.series["1s"]) == CANDLES_KEPT
    assert len(kept) == CANDLES_KEPT
    assert kept[0] == Candle(first + 1_000_000, 101, 101, 101, 101, 1, 1)  # the first went
    assert kept[-1].start == first + CANDLES_KEPT * 1_000_000
    # the other intervals hold them in a few candles
    assert [c.trades for c in candles.latest("1m", 100)] == [60] * 16 + [41]


def test_limit_returns_the_latest_n_oldest_first() -> None:
    candles = SymbolCandles()
    first = us("2026-12-03T00:00:00")
    for n in range(10):
        candles.add(100 + n, 1, first + n * 60_000_000)
    assert [c.open for c in candles.latest("1m", 3)] == [107, 108, 109]
    assert [c.open for c in candles.latest("1m", 300)] == list(range(100, 110))
    assert SymbolCandles().latest("1m", 300) == []


def test_a_trade_stamped_before_the_current_candle_joins_it_instead_of_reopening() -> None:
    candles = SymbolCandles()
    candles.add(100, 1, us("2026-12-03T09:01:00"))
    candles.add(90, 1, us("2026-12-03T09:00:30"))  # a clock that stepped back
    assert candles.latest("1m", 10) == [Candle(us("2026-12-03T09:01:00"), 100, 100, 90, 90, 2, 2)]


def test_every_interval_has_a_series() -> None:
    assert set(SymbolCandles().series) == set(INTERVALS) == {"1s", "1m", "5m", "1h", "1d"}
