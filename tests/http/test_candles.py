"""`GET /stocks/{symbol}/candles` through the ASGI app: every outcome,
the check order interval → limit → symbol, and what a restart recovers.

Bodies are parsed with `Money` for every JSON number with a fraction, so a candle's
prices are compared as the exact literals (`150.50`, never `150.5`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pykka
import pytest
from falcon import testing

from miniexchange.testing import ManualClock
from tests.conftest import START, AppClient
from tests.http.helpers import journaled_app, limit, market, register
from tests.http.test_stocks import M, accepted, body, cross, error

INTERVAL_MESSAGE = "interval must be one of 1s, 1m, 5m, 1h, 1d"
LIMIT_MESSAGE = "limit must be an integer between 1 and 1000"
FIELDS = ["start", "open", "high", "low", "close", "volume", "trades"]


@pytest.fixture
def traders(client: AppClient) -> AppClient:
    """S sells (shares, no cash), B buys (cash, no shares); AAPL and MSFT become known."""
    register(client, "S", 0, AAPL=1_000_000, MSFT=1_000_000)
    register(client, "B", 100_000_000)
    return client


def get(client: AppClient, symbol: str = "AAPL", query: str | None = None) -> testing.Result:
    return client.get(f"/stocks/{symbol}/candles", query=query)


def candles(
    client: AppClient, symbol: str = "AAPL", query: str | None = None, interval: str = "1m"
) -> list[dict[str, Any]]:
    result = get(client, symbol, query)
    assert result.status_code == 200, result.text
    parsed = body(result)
    assert list(parsed) == ["symbol", "interval", "candles"]
    assert (parsed["symbol"], parsed["interval"]) == (symbol, interval)
    assert all(list(candle) == FIELDS for candle in parsed["candles"])
    return parsed["candles"]


def candle(start: str, o: str, h: str, lo: str, c: str, volume: int, trades: int) -> dict[str, Any]:
    return {"start": start, "open": M(o), "high": M(h), "low": M(lo), "close": M(c),
            "volume": volume, "trades": trades}  # fmt: skip


def three_trades(client: AppClient, clock: ManualClock) -> None:
    """09:00:00 150 × 10, 09:00:30 151 × 2, 09:01:15 149.50 × 4."""
    cross(client, 150, 10)
    clock.advance(seconds=30)
    cross(client, 151, 2)
    clock.advance(seconds=45)
    cross(client, 149.5, 4)


def test_the_default_is_1m_candles_oldest_first(traders: AppClient, clock: ManualClock) -> None:
    assert START == "2026-02-17T09:00:00Z"
    three_trades(traders, clock)
    assert candles(traders) == [
        candle("2026-02-17T09:00:00Z", "150.00", "151.00", "150.00", "151.00", 12, 2),
        candle("2026-02-17T09:01:00Z", "149.50", "149.50", "149.50", "149.50", 4, 1),
    ]
    assert candles(traders, query="interval=") == candles(traders)  # empty counts as absent


def test_each_interval_is_aligned_to_the_epoch(traders: AppClient, clock: ManualClock) -> None:
    three_trades(traders, clock)
    assert candles(traders, query="interval=1s", interval="1s") == [
        candle("2026-02-17T09:00:00Z", "150.00", "150.00", "150.00", "150.00", 10, 1),
        candle("2026-02-17T09:00:30Z", "151.00", "151.00", "151.00", "151.00", 2, 1),
        candle("2026-02-17T09:01:15Z", "149.50", "149.50", "149.50", "149.50", 4, 1),
    ]
    assert candles(traders, query="interval=1m", interval="1m") == candles(traders)
    whole = ("150.00", "151.00", "149.50", "149.50", 16, 3)
    assert candles(traders, query="interval=5m", interval="5m") == [
        candle("2026-02-17T09:00:00Z", *whole)
    ]
    assert candles(traders, query="interval=1h", interval="1h") == [
        candle("2026-02-17T09:00:00Z", *whole)
    ]
    assert candles(traders, query="interval=1d", interval="1d") == [
        candle("2026-02-17T00:00:00Z", *whole)
    ]


def test_a_sweep_opens_with_its_first_fill_and_closes_with_its_last(traders: AppClient) -> None:
    accepted(limit(traders, "S", "ask", 10, 5))
    accepted(limit(traders, "S", "ask", 12, 5))
    accepted(limit(traders, "S", "ask", 11, 5))
    sweep = accepted(market(traders, "B", "bid", 12))  # 10 × 5, 11 × 5, 12 × 2
    assert len({t["executed_at"] for t in sweep["trades"]}) == 1
    assert candles(traders) == [
        candle("2026-02-17T09:00:00Z", "10.00", "12.00", "10.00", "12.00", 12, 3)
    ]


def test_limit_default_and_bounds(traders: AppClient, clock: ManualClock) -> None:
    """301 one-second intervals with a trade each: one more than the default shows."""
    for _ in range(301):
        accepted(limit(traders, "S", "ask", 10, 1))
    for _ in range(301):
        accepted(market(traders, "B", "bid", 1))
        clock.advance(seconds=1)
    starts = [c["start"] for c in candles(traders, query="interval=1s", interval="1s")]
    assert len(starts) == 300
    assert starts[0] == "2026-02-17T09:00:01Z" and starts[-1] == "2026-02-17T09:05:00Z"
    everything = candles(traders, query="interval=1s&limit=1000", interval="1s")
    assert len(everything) == 301 and everything[0]["start"] == START
    assert candles(traders, query="interval=1s&limit=1", interval="1s") == everything[-1:]
    assert candles(traders, query="interval=1s&limit=007", interval="1s") == everything[-7:]
    assert candles(traders, query="limit=2&limit=400&interval=1s", interval="1s") == everything[-2:]
    minutes = [f"2026-02-17T09:0{n}:00Z" for n in range(5)]
    assert candles(traders, query="interval=1m") == [
        *(candle(start, "10.00", "10.00", "10.00", "10.00", 60, 60) for start in minutes),
        candle("2026-02-17T09:05:00Z", "10.00", "10.00", "10.00", "10.00", 1, 1),
    ]


def test_an_invalid_interval_is_400(traders: AppClient) -> None:
    for value in ("1M", "2m", "60s", "1w", "1d%20", "%201m", "1", "m", "1h1", "1D", "x" * 3000):
        error(get(traders, query=f"interval={value}"), 400, "validation_error", INTERVAL_MESSAGE)


def test_an_invalid_limit_is_400(traders: AppClient) -> None:
    for value in ("0", "1001", "-1", "+5", "1.5", "1e2", "abc", "%205", "9" * 30, "9" * 5000):
        error(get(traders, query=f"limit={value}"), 400, "validation_error", LIMIT_MESSAGE)
        query = f"interval=1h&limit={value}"
        error(get(traders, query=query), 400, "validation_error", LIMIT_MESSAGE)


def test_an_unknown_symbol_is_404(traders: AppClient) -> None:
    for symbol in ("XYZZ", "aapl", "TOOLONGSYMBOL", "A-B"):
        message = f"Symbol {symbol} is not listed on this exchange"
        error(get(traders, symbol), 404, "symbol_not_found", message)
        error(get(traders, symbol, "interval=5m&limit=10"), 404, "symbol_not_found", message)


def test_interval_then_limit_then_the_symbol(traders: AppClient) -> None:
    error(get(traders, "XYZZ", "interval=2m&limit=0"), 400, "validation_error", INTERVAL_MESSAGE)
    error(get(traders, "AAPL", "interval=2m&limit=0"), 400, "validation_error", INTERVAL_MESSAGE)
    error(get(traders, "XYZZ", "limit=0"), 400, "validation_error", LIMIT_MESSAGE)
    error(get(traders, "XYZZ", "interval=1d&limit=0"), 400, "validation_error", LIMIT_MESSAGE)


def test_a_known_symbol_without_trades_has_no_candles(traders: AppClient) -> None:
    assert get(traders, "MSFT").text == '{"symbol":"MSFT","interval":"1m","candles":[]}'
    accepted(limit(traders, "S", "ask", 300, 1, "MSFT"))  # an order, still no trade
    for interval in ("1s", "1m", "5m", "1h", "1d"):
        assert candles(traders, "MSFT", f"interval={interval}", interval) == []
    cross(traders, 150, 1)  # another symbol's trade
    assert candles(traders, "MSFT") == []


def test_the_candles_are_read_only(traders: AppClient) -> None:
    result = traders.post("/stocks/AAPL/candles", json={})
    assert result.status_code == 405, result.text


def test_a_restart_shows_the_same_candles(tmp_path: Path) -> None:
    clock = ManualClock.at(START)
    path = str(tmp_path / "journal.db")

    def every_interval(client: AppClient) -> dict[str, Any]:
        return {
            (symbol, interval): candles(client, symbol, f"interval={interval}", interval)
            for interval in ("1s", "1m", "5m", "1h", "1d")
            for symbol in ("AAPL", "MSFT")
        }

    live = journaled_app(clock, path)
    register(live, "S", 0, AAPL=1000, MSFT=5)
    register(live, "B", 1_000_000)
    three_trades(live, clock)
    clock.advance(seconds=3600)
    cross(live, 152, 1)
    before = every_interval(live)
    assert len(before["AAPL", "1h"]) == 2 and before["MSFT", "1m"] == []
    live.close()
    pykka.ActorRegistry.stop_all()

    restarted = journaled_app(clock, path)
    try:
        assert every_interval(restarted) == before
        cross(restarted, 153, 1)  # the current candle goes on
        assert candles(restarted)[-1] == candle(
            "2026-02-17T10:01:00Z", "152.00", "153.00", "152.00", "153.00", 2, 2
        )
    finally:
        restarted.close()
        pykka.ActorRegistry.stop_all()
