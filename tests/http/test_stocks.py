"""Market data for people through the ASGI app (listed symbols only, due orders left
out): every outcome of `GET /stocks` and of the public tape, the stream's 404 and its
first events, and the read side they are served from, including what recovery seeds
into it.

Bodies are parsed with `Money` for every JSON number with a fraction, so comparing a
parsed body with an expected dict checks the exact literal (`150.50`, never `150.5`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
import pytest
from falcon import testing

from miniexchange.actors.market_data import STREAM_BACKLOG, TAPE_LENGTH, SymbolFeed
from miniexchange.http import stream_subscriber
from miniexchange.http.stream_fanout import BOOK_INTERVAL_S
from miniexchange.http.stream_subscriber import MAX_UNSENT_TRADES, Subscriber
from miniexchange.model.orders import Trade
from miniexchange.testing import ManualClock
from tests.conftest import START, AppClient
from tests.http.helpers import FAR, journaled_app, limit, market, register

LIMIT_MESSAGE = "limit must be an integer between 1 and 500"


@dataclass(frozen=True, slots=True)
class Money:
    """A JSON number literal with a fraction, exactly as written in the response."""

    literal: str


M = Money


def body(result: testing.Result) -> Any:
    assert result.headers["content-type"] == "application/json"
    return json.loads(result.text, parse_float=Money)


def error(result: testing.Result, status: int, code: str, message: str) -> None:
    assert result.status_code == status, result.text
    assert body(result) == {"error": code, "message": message}


def accepted(result: testing.Result) -> dict[str, Any]:
    assert result.status_code == 201, result.text
    return body(result)


def entry(
    symbol: str,
    last: str | None = None,
    bid: str | None = None,
    ask: str | None = None,
    volume: int = 0,
) -> dict[str, Any]:
    money = {name: None if value is None else M(value) for name, value in
             (("last_price", last), ("best_bid", bid), ("best_ask", ask))}  # fmt: skip
    return {"symbol": symbol, **money, "volume": volume}


def stocks(client: AppClient) -> list[dict[str, Any]]:
    result = client.get("/stocks")
    assert result.status_code == 200, result.text
    parsed = body(result)
    assert list(parsed) == ["symbols"]
    return parsed["symbols"]


def tape(client: AppClient, symbol: str = "AAPL", query: str | None = None) -> testing.Result:
    return client.get(f"/stocks/{symbol}/trades", query=query)


def tape_trades(client: AppClient, symbol: str = "AAPL", query: str | None = None) -> list[Any]:
    result = tape(client, symbol, query)
    assert result.status_code == 200, result.text
    parsed = body(result)
    assert list(parsed) == ["symbol", "trades"] and parsed["symbol"] == symbol
    return parsed["trades"]


@pytest.fixture
def traders(client: AppClient) -> AppClient:
    """S sells (shares, no cash), B buys (cash, no shares); AAPL and MSFT become known."""
    register(client, "S", 0, AAPL=1_000_000, MSFT=1_000_000)
    register(client, "B", 100_000_000)
    return client


def cross(client: AppClient, price: Any, quantity: int, symbol: str = "AAPL") -> dict[str, Any]:
    """Exactly one trade at `price`: S asks, B bids the same. Returns the trade."""
    accepted(limit(client, "S", "ask", price, quantity, symbol))
    bid = accepted(limit(client, "B", "bid", price, quantity, symbol))
    assert bid["status"] == "filled" and len(bid["trades"]) == 1
    return bid["trades"][0]


# -- GET /stocks --------------------------------------------------------------------------


def test_no_symbols(client: AppClient) -> None:
    result = client.get("/stocks")
    assert result.status_code == 200
    assert result.text == '{"symbols":[]}'


def test_symbols_known_only_from_holdings_have_nulls_and_no_volume(client: AppClient) -> None:
    register(client, "H", 0, ZETA=5, AAPL=1, MSFT=2)
    assert stocks(client) == [entry("AAPL"), entry("MSFT"), entry("ZETA")]
    nulls = '"last_price":null,"best_bid":null,"best_ask":null,"volume":0'
    assert nulls in client.get("/stocks").text


def test_last_price_best_prices_and_volume(traders: AppClient) -> None:
    cross(traders, 150, 10)
    cross(traders, 150.5, 5)
    accepted(limit(traders, "B", "bid", 149, 7))
    accepted(limit(traders, "B", "bid", 149.75, 3))
    accepted(limit(traders, "S", "ask", 152, 4))
    accepted(limit(traders, "S", "ask", 151.25, 4))
    accepted(limit(traders, "S", "ask", 300, 1, "MSFT"))
    assert stocks(traders) == [
        entry("AAPL", "150.50", "149.75", "151.25", 15),
        entry("MSFT", None, None, "300.00", 0),
    ]


def test_the_last_price_is_the_last_fill_of_a_sweep(traders: AppClient) -> None:
    accepted(limit(traders, "S", "ask", 10, 5))
    accepted(limit(traders, "S", "ask", 11, 5))
    accepted(limit(traders, "S", "ask", 12, 5))
    sweep = accepted(market(traders, "B", "bid", 12))
    assert [t["price"] for t in sweep["trades"]] == [M("10.00"), M("11.00"), M("12.00")]
    assert stocks(traders)[0] == entry("AAPL", "12.00", None, "12.00", 12)


def test_cancelled_orders_leave_the_best_prices(traders: AppClient) -> None:
    cross(traders, 100, 1)
    bid = accepted(limit(traders, "B", "bid", 99, 1))
    ask = accepted(limit(traders, "S", "ask", 101, 1))
    assert stocks(traders)[0] == entry("AAPL", "100.00", "99.00", "101.00", 1)
    for order in (bid, ask):
        assert traders.delete(f"/orders/{order['order_id']}").status_code == 200
    assert stocks(traders)[0] == entry("AAPL", "100.00", None, None, 1)


def test_due_orders_are_left_out_of_best_prices(traders: AppClient, clock: ManualClock) -> None:
    """No sweep runs in these tests: the summary still shows the due orders, and the
    endpoint must notice that they are due and ask the actor, which expires them."""
    due_bid = accepted(limit(traders, "B", "bid", 140, 10, expires_at="2026-02-17T09:02:00Z"))
    accepted(limit(traders, "B", "bid", 130, 10))
    due_ask = accepted(limit(traders, "S", "ask", 160, 10, expires_at="2026-02-17T09:02:00.5Z"))
    accepted(limit(traders, "S", "ask", 170, 10, "MSFT", expires_at="2026-02-17T09:01:00Z"))
    assert stocks(traders) == [
        entry("AAPL", None, "140.00", "160.00"),
        entry("MSFT", None, None, "170.00"),
    ]
    clock.advance(seconds=119.999999)  # nothing is due yet
    assert stocks(traders)[0] == entry("AAPL", None, "140.00", "160.00")
    clock.advance(microseconds=1)  # expires_at <= now: the 140.00 bid is due, MSFT's ask too
    assert stocks(traders) == [
        entry("AAPL", None, "130.00", "160.00"),
        entry("MSFT"),
    ]
    clock.advance(seconds=0.5)
    assert stocks(traders)[0] == entry("AAPL", None, "130.00", None)
    for order in (due_bid, due_ask):
        assert body(traders.get(f"/orders/{order['order_id']}"))["status"] == "expired"
    assert stocks(traders)[0] == entry("AAPL", None, "130.00", None)  # published since


def test_rejected_orders_do_not_list_a_symbol(traders: AppClient) -> None:
    register(traders, "P", 0)
    assert market(traders, "B", "bid", 1, "NVDA").status_code == 409  # no_liquidity
    assert limit(traders, "P", "bid", 1, 1, "NVDA").status_code == 409  # insufficient cash
    assert [e["symbol"] for e in stocks(traders)] == ["AAPL", "MSFT"]
    accepted(limit(traders, "B", "bid", 1, 1, "NVDA"))
    assert stocks(traders)[2] == entry("NVDA", None, "1.00", None)


def test_stocks_is_read_only(client: AppClient) -> None:
    for method in ("POST", "PUT", "DELETE", "HEAD", "OPTIONS"):
        result = client.request(method, "/stocks")
        assert result.status_code == 405
        assert result.headers["allow"] == "GET"
        if method != "HEAD":  # a HEAD response has no body
            message = f"Method {method} is not allowed on /stocks"
            error(result, 405, "method_not_allowed", message)


def test_stocks_with_a_trailing_slash_is_no_route(client: AppClient) -> None:
    error(client.get("/stocks/"), 404, "not_found", "No route matches GET /stocks/")


# -- GET /stocks/{symbol}/trades ----------------------------------------------------------


def test_the_tape_is_anonymous_and_newest_first(traders: AppClient, clock: ManualClock) -> None:
    first = cross(traders, 150, 10)
    clock.advance(seconds=1.5)
    second = cross(traders, 150.5, 3)
    trades = tape_trades(traders)
    assert trades == [
        {"trade_id": second["trade_id"], "price": M("150.50"), "quantity": 3,
         "executed_at": "2026-02-17T09:00:01Z"},
        {"trade_id": first["trade_id"], "price": M("150.00"), "quantity": 10,
         "executed_at": "2026-02-17T09:00:00Z"},
    ]  # fmt: skip
    assert all(list(trade) == ["trade_id", "price", "quantity", "executed_at"] for trade in trades)


def test_fills_of_one_pass_share_executed_at_and_the_later_comes_first(traders: AppClient) -> None:
    accepted(limit(traders, "S", "ask", 10, 5))
    accepted(limit(traders, "S", "ask", 11, 5))
    sweep = accepted(limit(traders, "B", "bid", 11, 8))
    fills = sweep["trades"]
    assert [(t["price"], t["quantity"]) for t in fills] == [(M("10.00"), 5), (M("11.00"), 3)]
    assert tape_trades(traders) == list(reversed(fills))
    assert len({t["executed_at"] for t in fills}) == 1


def test_a_symbol_without_trades_has_an_empty_tape(traders: AppClient) -> None:
    assert tape(traders, "MSFT").text == '{"symbol":"MSFT","trades":[]}'
    accepted(limit(traders, "S", "ask", 300, 1, "MSFT"))  # an order, still no trade
    assert tape_trades(traders, "MSFT") == []


def test_the_tape_is_per_symbol(traders: AppClient) -> None:
    aapl = cross(traders, 150, 1)
    msft = cross(traders, 300, 2, "MSFT")
    assert tape_trades(traders) == [aapl]
    assert tape_trades(traders, "MSFT") == [msft]


def test_limit_default_and_bounds(traders: AppClient) -> None:
    """A sweep of 501 resting asks: one more than the tape keeps."""
    for _ in range(TAPE_LENGTH + 1):
        accepted(limit(traders, "S", "ask", 10, 1))
    sweep = accepted(market(traders, "B", "bid", TAPE_LENGTH + 1))
    fills = sweep["trades"]
    newest_first = [t["trade_id"] for t in reversed(fills)]
    assert [t["trade_id"] for t in tape_trades(traders)] == newest_first[:50]
    assert [t["trade_id"] for t in tape_trades(traders, query="limit=1")] == newest_first[:1]
    assert [t["trade_id"] for t in tape_trades(traders, query="limit=007")] == newest_first[:7]
    full = tape_trades(traders, query="limit=500")
    assert [t["trade_id"] for t in full] == newest_first[:500]  # the oldest fill fell off
    assert [t["trade_id"] for t in tape_trades(traders, query="limit=")] == newest_first[:50]
    repeated = tape_trades(traders, query="limit=2&limit=400")  # the first occurrence counts
    assert len(repeated) == 2
    assert len(tape_trades(traders, query="limit=&limit=3")) == 3  # empty counts as absent
    assert stocks(traders)[0]["volume"] == TAPE_LENGTH + 1


def test_an_invalid_limit_is_400(traders: AppClient) -> None:
    for value in ("0", "501", "-1", "+5", "1.5", "1e2", "abc", "%205", "9" * 30):
        error(tape(traders, query=f"limit={value}"), 400, "validation_error", LIMIT_MESSAGE)


def test_an_unknown_symbol_is_404(traders: AppClient) -> None:
    for symbol in ("XYZZ", "aapl", "TOOLONGSYMBOL", "A-B"):
        message = f"Symbol {symbol} is not listed on this exchange"
        error(tape(traders, symbol), 404, "symbol_not_found", message)
        error(tape(traders, symbol, "limit=10"), 404, "symbol_not_found", message)


def test_limit_is_checked_before_the_symbol(traders: AppClient) -> None:
    error(tape(traders, "XYZZ", "limit=0"), 400, "validation_error", LIMIT_MESSAGE)


# -- GET /stocks/{symbol}/stream ------------------------------------------------------------


@pytest.fixture
def streaming(client: AppClient) -> AppClient:
    register(client, "S", 0, AAPL=1_000_000, MSFT=1_000_000)
    register(client, "B", 100_000_000)
    return client


def parse_events(text: str) -> list[tuple[str, Any]]:
    """Complete SSE events -> (event name, parsed data); comments as ("comment", text)."""
    events = []
    for block in text.split("\n\n")[:-1]:
        name, data = "message", None
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data = json.loads(value, parse_float=Money)
            elif line.startswith(":"):
                name, data = "comment", line[1:].strip()
        events.append((name, data))
    return events


async def read_until(stream: Any, received: list[str], done: Any) -> list[tuple[str, Any]]:
    """Read chunks until `done(events)`; the test's timeout bounds a stream that stalls."""
    while True:
        chunk = await stream.read()
        if chunk:
            received.append(chunk.decode())
            events = parse_events("".join(received))
            if done(events):
                return events
        else:
            await asyncio.sleep(0.005)


def test_the_stream_of_an_unknown_symbol_is_404(traders: AppClient) -> None:
    for symbol in ("XYZZ", "aapl"):
        result = traders.get(f"/stocks/{symbol}/stream")
        error(result, 404, "symbol_not_found", f"Symbol {symbol} is not listed on this exchange")


def test_the_stream_starts_with_the_book_at_depth_10(streaming: AppClient) -> None:
    for cents in range(12):
        accepted(limit(streaming, "B", "bid", float(f"100.{cents:02d}"), 1 + cents))
    accepted(limit(streaming, "S", "ask", 101, 5))
    book = body(streaming.get("/stocks/AAPL/book"))

    async def first_event(conductor: testing.ASGIConductor) -> Any:
        async with conductor.simulate_get_stream("/stocks/AAPL/stream") as result:
            assert result.status_code == 200
            assert result.headers["content-type"] == "text/event-stream"
            assert result.headers["cache-control"] == "no-store"
            return await read_until(result.stream, [], lambda events: events)

    events = streaming.run(first_event)
    assert events == [("book", book)]
    assert len(book["bids"]) == 10 and book["bids"][0]["price"] == M("100.11")
    assert book["spread"] == M("0.89")


def test_the_stream_sends_trades_and_the_new_book(
    streaming: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    accepted(limit(streaming, "S", "ask", 150, 10))

    async def watch(conductor: testing.ASGIConductor) -> list[tuple[str, Any]]:
        async with conductor.simulate_get_stream("/stocks/AAPL/stream") as result:
            received: list[str] = []
            await read_until(result.stream, received, lambda events: events)
            order = {
                "type": "limit", "broker_id": "B", "document_number": "1", "side": "bid",
                "symbol": "AAPL", "price": 150, "quantity": 4, "expires_at": FAR,
            }  # fmt: skip
            posted = await conductor.simulate_post("/orders", json=order)
            assert posted.status_code == 201
            return await read_until(
                result.stream, received, lambda events: [e for e, _ in events][-1:] == ["book"]
            )

    with caplog.at_level(logging.INFO, logger="miniexchange.http"):
        events = streaming.run(watch)
    trade = tape_trades(streaming)[0]
    assert [name for name, _ in events] == ["book", "trade", "book"]
    assert events[1][1] == trade
    assert events[2][1]["asks"] == [{"price": M("150.00"), "total_quantity": 6, "order_count": 1}]
    ended = [r for r in caplog.records if getattr(r, "event", None) == "stream"]
    assert len(ended) == 1  # logged once, when the reader went away
    assert ended[0].symbol == "AAPL" and ended[0].reason == "client"  # type: ignore[attr-defined]
    assert ended[0].duration_ms >= 0  # type: ignore[attr-defined]


def test_a_stream_opened_before_the_first_order_hears_it(streaming: AppClient) -> None:
    """MSFT is known from holdings only: no actor yet, an empty book, then its first order."""

    async def watch(conductor: testing.ASGIConductor) -> list[tuple[str, Any]]:
        async with conductor.simulate_get_stream("/stocks/MSFT/stream") as result:
            received: list[str] = []
            await read_until(result.stream, received, lambda events: events)
            order = {
                "type": "limit", "broker_id": "S", "document_number": "1", "side": "ask",
                "symbol": "MSFT", "price": 300, "quantity": 2, "expires_at": FAR,
            }  # fmt: skip
            assert (await conductor.simulate_post("/orders", json=order)).status_code == 201
            return await read_until(result.stream, received, lambda events: len(events) == 2)

    events = streaming.run(watch)
    assert events[0][0] == "book" and events[0][1]["asks"] == []
    assert events[1][0] == "book"
    assert events[1][1]["asks"] == [{"price": M("300.00"), "total_quantity": 2, "order_count": 1}]


def test_a_quiet_stream_sends_comment_lines(
    streaming: AppClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every PING_INTERVAL_S (15 s; shortened here) a comment keeps proxies from closing."""
    monkeypatch.setattr(stream_subscriber, "PING_INTERVAL_S", 0.05)

    async def watch(conductor: testing.ASGIConductor) -> str:
        async with conductor.simulate_get_stream("/stocks/AAPL/stream") as result:
            received: list[str] = []
            await read_until(
                result.stream, received, lambda events: ("comment", "keep-alive") in events
            )
            return "".join(received)

    text = streaming.run(watch)
    assert text.startswith("retry: 1000\nevent: book\ndata: ")  # reconnect after 1 s
    assert "\n\n: keep-alive\n\n" in text


def test_book_events_are_coalesced(streaming: AppClient) -> None:
    """Many changes in a row: the reader gets book events at most every 200 ms, each the
    latest book, never a queue of every state, and the last one shows every change."""
    changes = 30

    async def watch(conductor: testing.ASGIConductor) -> tuple[list[Any], float]:
        async with conductor.simulate_get_stream("/stocks/AAPL/stream") as result:
            received: list[str] = []
            await read_until(result.stream, received, lambda events: events)
            started = time.monotonic()
            for n in range(changes):
                order = {
                    "type": "limit", "broker_id": "B", "document_number": "1", "side": "bid",
                    "symbol": "AAPL", "price": 100 + n, "quantity": 1, "expires_at": FAR,
                }  # fmt: skip
                assert (await conductor.simulate_post("/orders", json=order)).status_code == 201

            def complete(events: list[tuple[str, Any]]) -> bool:
                book = events[-1][1]
                return events[-1][0] == "book" and book["bids"][0]["price"] == M("129.00")

            events = await read_until(result.stream, received, complete)
            return [data for name, data in events if name == "book"], time.monotonic() - started

    books, elapsed = streaming.run(watch)
    assert [level["price"] for level in books[-1]["bids"]] == [
        M(f"{price}.00") for price in range(129, 119, -1)
    ]  # depth 10
    assert len(books) - 1 <= elapsed / BOOK_INTERVAL_S + 1  # one per 200 ms at most
    assert len(books) - 1 < changes


# -- the read side ------------------------------------------------------------------------


def a_trade(n: int) -> Trade:
    return Trade(f"trd-{n}", "AAPL", 100 + n, 1, n, "b", "a", "B", "S")


def test_a_feed_wakes_no_one_while_nobody_streams_and_once_per_take() -> None:
    feed = SymbolFeed("AAPL")
    wakes: list[int] = []
    feed.publish([a_trade(1)], 99, 101, None)
    feed.listen(lambda: wakes.append(1))
    for n in range(2, 5):
        feed.publish([a_trade(n)], 99, 101, None)
    assert wakes == [1]  # one wake-up until the loop takes the news
    trades, overflowed = feed.take()
    assert [t.trade_id for t in trades] == ["trd-2", "trd-3", "trd-4"] and not overflowed
    feed.publish([], 98, 101, 7)
    assert wakes == [1, 1]
    assert feed.take() == ([], False)
    feed.listen(None)
    feed.publish([a_trade(5)], 98, 101, 7)
    assert wakes == [1, 1]
    assert feed.summary.last_price == 105 and feed.summary.volume == 5
    assert feed.book_version == 6


def test_a_feed_backlog_past_its_limit_is_dropped_and_flagged() -> None:
    feed = SymbolFeed("AAPL")
    feed.listen(lambda: None)
    feed.publish([a_trade(n) for n in range(STREAM_BACKLOG)], None, None, None)
    feed.publish([a_trade(STREAM_BACKLOG)], None, None, None)
    assert feed.take() == ([], True)
    assert len(feed.latest_trades(TAPE_LENGTH + 10)) == TAPE_LENGTH


def test_a_subscriber_past_1000_unsent_trades_is_closed() -> None:
    async def scenario() -> Subscriber:
        subscriber = Subscriber("AAPL", "/stocks/AAPL/stream")
        subscriber.offer_trades(b"x" * 10, MAX_UNSENT_TRADES - 1)
        assert subscriber.next_chunk() == b"x" * 10  # handed over: no longer unsent
        subscriber.offer_trades(b"y", MAX_UNSENT_TRADES)
        assert not subscriber.closed
        subscriber.offer_book(1, b"book-1")
        subscriber.offer_book(3, b"book-3")
        subscriber.offer_book(2, b"book-2")  # an older read answered later: ignored
        subscriber.offer_trades(b"z", 1)
        return subscriber

    subscriber = asyncio.run(scenario())
    assert subscriber.closed and subscriber.reason == "overflow"
    assert subscriber.next_chunk() is None


def test_recovery_seeds_the_summaries_and_the_tape(tmp_path: Path) -> None:
    clock = ManualClock.at(START)
    path = str(tmp_path / "journal.db")

    live = journaled_app(clock, path)
    register(live, "S", 0, AAPL=1000, MSFT=5, ZETA=1)
    register(live, "B", 1_000_000)
    cross(live, 150, 10)
    cross(live, 151, 2)
    accepted(limit(live, "B", "bid", 149, 1))
    accepted(limit(live, "S", "ask", 300, 1, "MSFT"))
    before = (stocks(live), tape_trades(live), tape_trades(live, "MSFT"))
    live.close()
    pykka.ActorRegistry.stop_all()

    restarted = journaled_app(clock, path)
    try:
        assert (stocks(restarted), tape_trades(restarted), tape_trades(restarted, "MSFT")) == before
        assert before[0] == [
            entry("AAPL", "151.00", "149.00", None, 12),
            entry("MSFT", None, None, "300.00", 0),
            entry("ZETA"),
        ]
    finally:
        restarted.close()
        pykka.ActorRegistry.stop_all()
