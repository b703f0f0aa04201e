"""Every outcome of the market-data endpoints (symbols, price, book, quote, due orders)
and the broker listing through the ASGI app, plus a hypothesis test that checks every
order answer, the book, quotes and the price against `tests.reference`, an independent
matcher fed only the submitted orders and the clock.

Bodies are parsed with `Money` for every JSON number with a fraction, so comparing a
parsed body with an expected dict checks the exact literal: `Money("149.50")` matches
`149.50` in the response, never `149.5`, `149` or the string `"149.50"`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka
import pytest
from falcon import testing
from hypothesis import given, settings
from hypothesis import strategies as st

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.seam import EmbeddedEngine
from miniexchange.http.app import create_app
from miniexchange.settings import load_settings
from miniexchange.testing import FakeDeliveries, ManualClock, SequentialIds, run_expiration
from tests.conftest import START, AppClient
from tests.http.helpers import FAR, balance, limit, market, register
from tests.reference import ReferenceMarket, RefOrder

T0 = ManualClock.at(START).now()
SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class Money:
    """A JSON number literal with a fraction, exactly as written in the response."""

    literal: str


M = Money  # short, so that expected bodies read like the response literals


def body(result: testing.Result) -> Any:
    assert result.headers["content-type"] == "application/json"
    return json.loads(result.text, parse_float=Money)


def cents(money: Money) -> int:
    assert re.fullmatch(r"[0-9]+\.[0-9]{2}", money.literal), money.literal
    return int(money.literal.replace(".", ""))


def money(amount: int) -> Money:
    return Money(f"{amount // 100}.{amount % 100:02d}")


def iso(us: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def at(seconds: float) -> int:
    """The instant `seconds` after START."""
    return T0 + round(seconds * SECOND)


def error(result: testing.Result, status: int, code: str, message: str) -> None:
    assert result.status_code == status, result.text
    assert body(result) == {"error": code, "message": message}


def accepted(result: testing.Result) -> dict[str, Any]:
    assert result.status_code == 201, result.text
    return body(result)


def get_price(client: AppClient, symbol: str = "AAPL") -> testing.Result:
    return client.get(f"/stocks/{symbol}/price")


def get_book(client: AppClient, symbol: str = "AAPL", query: str | None = None) -> testing.Result:
    return client.get(f"/stocks/{symbol}/book", query=query)


def get_quote(client: AppClient, side: str, quantity: int, symbol: str = "AAPL") -> testing.Result:
    return client.get(f"/stocks/{symbol}/quote", query=f"side={side}&quantity={quantity}")


def listing(client: AppClient, broker_id: str, query: str | None = None) -> testing.Result:
    return client.get(f"/brokers/{broker_id}/orders", query=query)


def price_body(current: str | None, trades: int, last: str | None, symbol: str = "AAPL") -> Any:
    return {
        "symbol": symbol,
        "current_price": None if current is None else M(current),
        "window": "5m",
        "trades_in_window": trades,
        "last_trade_at": last,
    }


def empty_quote(side: str, quantity: int, quoted_at: str, symbol: str = "AAPL") -> Any:
    return {
        "symbol": symbol, "side": side, "quantity_requested": quantity,
        "quantity_available": 0, "fully_fillable": False,
        "estimated_average_price": None, "estimated_total": None,
        "price_levels": [], "quoted_at": quoted_at,
    }  # fmt: skip


def level(price: str, total: int, count: int) -> dict[str, Any]:
    return {"price": M(price), "total_quantity": total, "order_count": count}


@pytest.fixture
def traders(client: AppClient) -> AppClient:
    """S sells (shares, no cash), B buys (cash, no shares); AAPL and MSFT become known."""
    register(client, "S", 0, AAPL=1_000_000, MSFT=1_000_000)
    register(client, "B", 100_000_000)
    return client


def trade(client: AppClient, price: Any, quantity: int, symbol: str = "AAPL") -> None:
    """Exactly one trade at `price`: S asks, B bids the same."""
    assert accepted(limit(client, "S", "ask", price, quantity, symbol))["status"] == "pending"
    bid = accepted(limit(client, "B", "bid", price, quantity, symbol))
    assert (bid["status"], len(bid["trades"])) == ("filled", 1)


# -- symbols: known once listed by an order or a holding ------------------------------

SYMBOL_PATHS = ("/price", "/book", "/quote")


def read_symbol(client: AppClient, symbol: str, path: str) -> testing.Result:
    query = "side=bid&quantity=1000" if path == "/quote" else None
    return client.get(f"/stocks/{symbol}{path}", query=query)


@pytest.mark.parametrize("path", SYMBOL_PATHS)
@pytest.mark.parametrize("symbol", ["XYZZ", "aapl", "TOOLONGSYMBOL", "AAPL1", "A-B"])
def test_unknown_or_invalid_symbol_is_404(traders: AppClient, symbol: str, path: str) -> None:
    error(
        read_symbol(traders, symbol, path),
        404,
        "symbol_not_found",
        f"Symbol {symbol} is not listed on this exchange",
    )


def test_symbol_known_only_from_holdings(traders: AppClient, clock: ManualClock) -> None:
    clock.advance(seconds=90.75)  # snapshot_at and quoted_at are the clock, truncated
    price = get_price(traders, "MSFT")
    assert price.status_code == 200
    assert body(price) == price_body(None, 0, None, "MSFT")
    assert '"current_price":null' in price.text and '"last_trade_at":null' in price.text
    book = get_book(traders, "MSFT")
    assert book.status_code == 200
    assert body(book) == {
        "symbol": "MSFT", "bids": [], "asks": [], "spread": None,
        "snapshot_at": "2026-02-17T09:01:30Z",
    }  # fmt: skip
    for side in ("bid", "ask"):
        quote = get_quote(traders, side, 1000, "MSFT")
        assert quote.status_code == 200
        assert body(quote) == empty_quote(side, 1000, "2026-02-17T09:01:30Z", "MSFT")


def test_rejected_orders_do_not_make_a_symbol_known(traders: AppClient) -> None:
    register(traders, "P", 0)  # no cash, no shares

    def assert_unknown() -> None:
        for path in SYMBOL_PATHS:
            error(
                read_symbol(traders, "NVDA", path),
                404,
                "symbol_not_found",
                "Symbol NVDA is not listed on this exchange",
            )

    attempts = [
        (limit(traders, "P", "bid", 1, 1, "NVDA"), 409, "insufficient_balance"),
        (limit(traders, "P", "ask", 1, 1, "NVDA"), 409, "insufficient_holdings"),
        (market(traders, "P", "bid", 1, "NVDA"), 409, "no_liquidity"),
        (market(traders, "B", "ask", 1, "NVDA"), 409, "no_liquidity"),
        (limit(traders, "B", "bid", 0, 1, "NVDA"), 400, "validation_error"),
        (limit(traders, "ghost", "bid", 1, 1, "NVDA"), 404, "broker_not_found"),
    ]
    for result, status, code in attempts:
        assert (result.status_code, body(result)["error"]) == (status, code)
        assert_unknown()

    # Accepted once, whatever happens to the order later: known for good.
    order = accepted(limit(traders, "B", "bid", 1, 1, "NVDA"))
    assert traders.delete(f"/orders/{order['order_id']}").status_code == 200
    assert body(get_price(traders, "NVDA")) == price_body(None, 0, None, "NVDA")
    book = body(get_book(traders, "NVDA"))
    assert (book["bids"], book["asks"], book["spread"]) == ([], [], None)
    assert body(get_quote(traders, "ask", 5, "NVDA")) == empty_quote(
        "ask", 5, "2026-02-17T09:00:00Z", "NVDA"
    )


# -- price: VWAP of the trades in the window, else the last trade's price -------------


def test_price_of_a_symbol_with_orders_but_no_trade(traders: AppClient) -> None:
    accepted(limit(traders, "S", "ask", 150, 10))
    result = get_price(traders)
    assert result.status_code == 200
    assert body(result) == price_body(None, 0, None)


def test_vwap_of_the_trades_in_the_window(traders: AppClient, clock: ManualClock) -> None:
    trade(traders, 150, 100)  # 09:00:00
    clock.advance(seconds=60)
    trade(traders, 149, 200)  # 09:01:00
    clock.advance(seconds=30)
    result = get_price(traders)
    # (15000*100 + 14900*200) / 300 = 14933.33 cents; four order sides, two trades
    assert body(result) == price_body("149.33", 2, "2026-02-17T09:01:00Z")
    assert '"current_price":149.33' in result.text
    assert '"window":"5m"' in result.text


def test_vwap_is_truncated_to_the_cent(traders: AppClient, clock: ManualClock) -> None:
    trade(traders, 10, 100)
    clock.advance(seconds=1)
    trade(traders, 10.01, 200)
    result = get_price(traders)
    # 300200 cents / 300 = 1000.67: truncated, not rounded to 10.01
    assert body(result) == price_body("10.00", 2, "2026-02-17T09:00:01Z")
    assert '"current_price":10.00' in result.text


def test_vwap_example_price(traders: AppClient) -> None:
    trade(traders, 149.5, 100)
    result = get_price(traders)
    assert '"current_price":149.50' in result.text
    assert body(result) == price_body("149.50", 1, "2026-02-17T09:00:00Z")


def test_trade_ages_out_of_the_window_then_the_fallback(
    traders: AppClient, clock: ManualClock
) -> None:
    trade(traders, 150, 100)  # t0 = 09:00:00
    clock.set(at(60))
    trade(traders, 148, 200)  # t1 = 09:01:00
    both = price_body("148.66", 2, "2026-02-17T09:01:00Z")  # 4460000 / 300 = 14866.67
    clock.set(at(300))  # now - window == t0: still in
    assert body(get_price(traders)) == both
    clock.advance(microseconds=1)  # t0 is out
    assert body(get_price(traders)) == price_body("148.00", 1, "2026-02-17T09:01:00Z")
    clock.set(at(360))  # now - window == t1: still in
    assert body(get_price(traders)) == price_body("148.00", 1, "2026-02-17T09:01:00Z")
    clock.advance(microseconds=1)  # nothing in the window: the last trade's price
    fallback = get_price(traders)
    assert body(fallback) == price_body("148.00", 0, "2026-02-17T09:01:00Z")
    assert '"current_price":148.00' in fallback.text
    clock.set(at(3600))  # an hour later, still the last trade
    assert body(get_price(traders)) == price_body("148.00", 0, "2026-02-17T09:01:00Z")
    trade(traders, 151, 10)  # a new trade is alone in the window
    assert body(get_price(traders)) == price_body("151.00", 1, "2026-02-17T10:00:00Z")


def test_price_window_does_not_depend_on_reads(traders: AppClient, clock: ManualClock) -> None:
    """Trades that age out while nobody reads are still dropped at the next read."""
    trade(traders, 100, 1)
    clock.advance(seconds=10)
    trade(traders, 200, 1)
    clock.set(at(305))  # the first is out, the second in
    assert body(get_price(traders)) == price_body("200.00", 1, "2026-02-17T09:00:10Z")


def test_sweep_trades_share_executed_at_and_the_last_one_is_the_latest(
    traders: AppClient, clock: ManualClock
) -> None:
    for price, quantity in (
        (10, 100),
        (11, 200),
        (12, 50),
    ):  # the market-order ladder of the examples
        accepted(limit(traders, "S", "ask", price, quantity))
        clock.advance(seconds=60)
    order = accepted(market(traders, "B", "bid", 400))  # 09:03:00, three trades
    assert {t["executed_at"] for t in order["trades"]} == {"2026-02-17T09:03:00Z"}
    result = get_price(traders)
    assert body(result) == price_body("10.85", 3, "2026-02-17T09:03:00Z")  # 380000 / 350
    clock.advance(seconds=301)
    # the fallback is the last trade executed (12.00), not the first one of the sweep
    assert body(get_price(traders)) == price_body("12.00", 0, "2026-02-17T09:03:00Z")


def test_price_of_other_symbols_is_independent(traders: AppClient) -> None:
    trade(traders, 150, 100, "AAPL")
    trade(traders, 30, 10, "MSFT")
    assert body(get_price(traders, "MSFT")) == price_body("30.00", 1, START, "MSFT")
    assert body(get_price(traders, "AAPL")) == price_body("150.00", 1, START, "AAPL")


@contextmanager
def fresh_app(env: dict[str, str] | None = None) -> Iterator[tuple[AppClient, ManualClock]]:
    """A whole app with its own exchange and clock (for hypothesis examples and settings)."""
    app_settings = load_settings(env or {})
    clock = ManualClock.at(START)
    exchange = Exchange(
        clock,
        SequentialIds(),
        FakeDeliveries(),
        expiration_interval_s=None,
        vwap_window_us=app_settings.vwap_window_us,
    )
    client = AppClient(create_app(app_settings, clock=clock, engine=EmbeddedEngine(exchange)))
    try:
        yield client, clock
    finally:
        client.close()
        pykka.ActorRegistry.stop_all()


def test_configured_window_is_shown_and_applied() -> None:
    with fresh_app({"VWAP_WINDOW": "1m30s"}) as (client, clock):
        register(client, "S", 0, AAPL=100)
        register(client, "B", 10_000)
        trade(client, 10, 1)
        clock.set(at(90))
        assert body(get_price(client)) == {
            "symbol": "AAPL", "current_price": M("10.00"), "window": "1m30s",
            "trades_in_window": 1, "last_trade_at": START,
        }  # fmt: skip
        clock.advance(microseconds=1)
        assert body(get_price(client))["trades_in_window"] == 0


# -- due orders (expires_at <= now): left out of book and quote before any sweep -------


def test_due_orders_are_left_out_of_book_and_quote(traders: AppClient, clock: ManualClock) -> None:
    trade(traders, 150, 100)  # 09:00:00
    accepted(limit(traders, "B", "bid", 140, 10, expires_at="2026-02-17T09:02:00Z"))
    accepted(limit(traders, "B", "bid", 139, 5))
    accepted(limit(traders, "S", "ask", 160, 10, expires_at="2026-02-17T09:02:00.500Z"))
    accepted(limit(traders, "S", "ask", 161, 7))
    clock.set(at(119.999999))  # just before: everything shows
    before = body(get_book(traders))
    assert before["bids"] == [level("140.00", 10, 1), level("139.00", 5, 1)]
    assert before["asks"] == [level("160.00", 10, 1), level("161.00", 7, 1)]
    clock.set(at(120))  # expires_at <= now: the 140.00 bid is due (no sweep has run)
    assert body(get_quote(traders, "ask", 20)) == {
        "symbol": "AAPL", "side": "ask", "quantity_requested": 20, "quantity_available": 5,
        "fully_fillable": False, "estimated_average_price": M("139.00"),
        "estimated_total": M("695.00"), "price_levels": [{"price": M("139.00"), "quantity": 5}],
        "quoted_at": "2026-02-17T09:02:00Z",
    }  # fmt: skip
    clock.set(at(120.5))  # and now the 160.00 ask
    assert body(get_book(traders)) == {
        "symbol": "AAPL",
        "bids": [level("139.00", 5, 1)],
        "asks": [level("161.00", 7, 1)],
        "spread": M("22.00"),
        "snapshot_at": "2026-02-17T09:02:00Z",
    }
    assert body(get_price(traders)) == price_body("150.00", 1, START)
    clock.set(at(301))
    assert body(get_price(traders)) == price_body("150.00", 0, START)


def test_a_due_order_is_left_out_of_a_quote_read_first(
    traders: AppClient, clock: ManualClock
) -> None:
    accepted(limit(traders, "S", "ask", 10, 100, expires_at="2026-02-17T09:00:30Z"))
    accepted(limit(traders, "S", "ask", 11, 100))
    clock.set(at(30))
    quote = body(get_quote(traders, "bid", 150))
    assert quote["price_levels"] == [{"price": M("11.00"), "quantity": 100}]
    assert (quote["quantity_available"], quote["estimated_total"]) == (100, M("1100.00"))
    # the price needs no sweep, and a later sweep finds nothing left to do
    assert body(get_price(traders)) == price_body(None, 0, None)


def test_book_after_an_expiration_sweep(
    traders: AppClient, clock: ManualClock, exchange: Exchange
) -> None:
    order = accepted(limit(traders, "B", "bid", 50, 2, expires_at="2026-02-17T09:00:10Z"))
    clock.set(at(10))
    run_expiration(exchange)
    assert body(get_book(traders))["bids"] == []
    expired = body(traders.get(f"/orders/{order['order_id']}"))
    assert (expired["status"], expired["expired_at"]) == ("expired", "2026-02-17T09:00:10Z")


# -- book: L2 levels, best first, with remaining totals and order counts -------------


@pytest.fixture
def example_book(traders: AppClient, clock: ManualClock) -> AppClient:
    """The book of the documented example (bids 150.00/149.50, asks 151.00/152.00),
    submitted out of order."""
    orders = [
        ("S", "ask", 152, 500),
        ("B", "bid", 149.5, 1000),
        ("B", "bid", 150, 1000),
        ("S", "ask", 151, 1000),
        ("B", "bid", 150, 500),
        ("S", "ask", 151, 500),
        ("B", "bid", 149.5, 500),
        ("B", "bid", 150, 1000),
        ("S", "ask", 151, 500),
        ("B", "bid", 150, 500),
    ]
    for broker_id, side, price, quantity in orders:
        assert accepted(limit(traders, broker_id, side, price, quantity))["status"] == "pending"
    clock.set(ManualClock.at("2026-02-17T14:30:00Z").now())
    return traders


EXAMPLE_BIDS = [level("150.00", 3000, 4), level("149.50", 1500, 2)]
EXAMPLE_ASKS = [level("151.00", 2000, 3), level("152.00", 500, 1)]


def test_book_example(example_book: AppClient) -> None:
    result = get_book(example_book)
    assert result.status_code == 200
    assert body(result) == {
        "symbol": "AAPL",
        "bids": EXAMPLE_BIDS,
        "asks": EXAMPLE_ASKS,
        "spread": M("1.00"),
        "snapshot_at": "2026-02-17T14:30:00Z",
    }
    for literal in ('"spread":1.00', '"price":149.50', '"price":150.00', '"price":152.00'):
        assert literal in result.text


def test_book_levels_sum_remaining_not_original_quantity(example_book: AppClient) -> None:
    accepted(market(example_book, "S", "ask", 700))  # 700 of the first 1000 @ 150.00
    assert body(get_book(example_book))["bids"] == [
        level("150.00", 2300, 4),
        level("149.50", 1500, 2),
    ]
    accepted(market(example_book, "S", "ask", 1000))  # 300 + 500 + 200 of the 2nd 1000
    assert body(get_book(example_book))["bids"] == [
        level("150.00", 1300, 2),
        level("149.50", 1500, 2),
    ]
    sold = accepted(market(example_book, "S", "ask", 2000))  # the rest of 150.00, 700 more
    assert [(t["price"], t["quantity"]) for t in sold["trades"]] == [
        (M("150.00"), 800), (M("150.00"), 500), (M("149.50"), 700),
    ]  # fmt: skip
    assert body(get_book(example_book))["bids"] == [level("149.50", 800, 2)]


def test_book_levels_follow_cancellation(example_book: AppClient) -> None:
    order = accepted(limit(example_book, "S", "ask", 151, 250))
    assert body(get_book(example_book))["asks"][0] == level("151.00", 2250, 4)
    assert example_book.delete(f"/orders/{order['order_id']}").status_code == 200
    assert body(get_book(example_book))["asks"] == EXAMPLE_ASKS


@pytest.fixture
def deep_book(traders: AppClient) -> AppClient:
    """12 bid levels 100.00 … 100.11 and 12 ask levels 101.00 … 101.11, shuffled."""
    for step in (5, 11, 0, 7, 3, 9, 1, 10, 6, 2, 8, 4):
        accepted(limit(traders, "B", "bid", (10_000 + step) / 100, step + 1))
        accepted(limit(traders, "S", "ask", (10_100 + step) / 100, step + 1))
    return traders


def bid_levels(steps: range) -> list[dict[str, Any]]:
    return [level(f"100.{s:02d}", s + 1, 1) for s in steps]


def ask_levels(steps: range) -> list[dict[str, Any]]:
    return [level(f"101.{s:02d}", s + 1, 1) for s in steps]


@pytest.mark.parametrize(
    "query,shown",
    [
        (None, 10),
        ("depth=", 10),  # empty counts as absent
        ("depth=1", 1),
        ("depth=3", 3),
        ("depth=05", 5),
        ("depth=12", 12),
        ("depth=50", 12),
        ("depth=2&depth=99", 2),  # the first occurrence counts
        ("depth=&depth=4", 4),
        ("other=7", 10),
    ],
)
def test_book_depth(deep_book: AppClient, query: str | None, shown: int) -> None:
    result = get_book(deep_book, query=query)
    assert result.status_code == 200, result.text
    book = body(result)
    assert book["bids"] == bid_levels(range(11, 11 - shown, -1))  # descending
    assert book["asks"] == ask_levels(range(shown))  # ascending
    assert book["spread"] == M("0.89")  # 101.00 - 100.11


@pytest.mark.parametrize(
    "depth", ["0", "00", "51", "100", "-1", "%2B5", "+5", "1.5", "5.0", "1e1", "abc", "%EF%BC%95",
              "99999999999999999999999999"]
)  # fmt: skip
def test_book_depth_out_of_range(traders: AppClient, depth: str) -> None:
    message = "depth must be an integer between 1 and 50"
    error(get_book(traders, query=f"depth={depth}"), 400, "validation_error", message)
    # the depth is checked before the symbol
    error(get_book(traders, "XYZZ", query=f"depth={depth}"), 400, "validation_error", message)


def test_valid_depth_on_unknown_symbol_is_404(traders: AppClient) -> None:
    error(
        get_book(traders, "XYZZ", query="depth=5"),
        404,
        "symbol_not_found",
        "Symbol XYZZ is not listed on this exchange",
    )


@pytest.mark.parametrize("side", ["bid", "ask"])
def test_book_with_one_side_empty_has_null_spread(traders: AppClient, side: str) -> None:
    broker_id = "B" if side == "bid" else "S"
    accepted(limit(traders, broker_id, side, 99.9, 3))
    accepted(limit(traders, broker_id, side, 99.9, 4))
    result = get_book(traders)
    book = body(result)
    other = "asks" if side == "bid" else "bids"
    assert book[side + "s"] == [level("99.90", 7, 2)]
    assert (book[other], book["spread"]) == ([], None)
    assert '"spread":null' in result.text


def test_smallest_spread(traders: AppClient) -> None:
    accepted(limit(traders, "B", "bid", 100, 1))
    accepted(limit(traders, "S", "ask", 100.01, 1))
    result = get_book(traders)
    assert body(result)["spread"] == M("0.01")
    assert '"spread":0.01' in result.text


def test_filled_and_cancelled_orders_leave_the_book(traders: AppClient) -> None:
    accepted(limit(traders, "S", "ask", 10, 5))
    accepted(limit(traders, "B", "bid", 10, 5))  # fills it
    order = accepted(limit(traders, "B", "bid", 9, 5))
    assert traders.delete(f"/orders/{order['order_id']}").status_code == 200
    assert body(get_book(traders)) == {
        "symbol": "AAPL", "bids": [], "asks": [], "spread": None, "snapshot_at": START,
    }  # fmt: skip


def test_snapshot_at_is_the_clock(traders: AppClient, clock: ManualClock) -> None:
    accepted(limit(traders, "B", "bid", 1, 1))
    clock.advance(seconds=3599.999999)
    assert body(get_book(traders))["snapshot_at"] == "2026-02-17T09:59:59Z"


# -- quote: what a market order would take now, level by level ----------------------


def quote_case(client: AppClient, case: str) -> None:
    """The books behind the four quote variants (full, partial, no liquidity, walking the
    bids), each level made of several orders."""
    if case == "full":
        for price, quantity in ((150, 200), (148, 400), (150, 300), (148, 300)):
            accepted(limit(client, "S", "ask", price, quantity))
    elif case == "partial":
        accepted(limit(client, "S", "ask", 148, 250))
        accepted(limit(client, "S", "ask", 148, 150))
    elif case == "no_asks":
        accepted(limit(client, "B", "bid", 150, 100))  # liquidity on the other side only
    elif case == "walk_bids":
        for price, quantity in ((148, 100), (150, 300), (148, 400)):
            accepted(limit(client, "B", "bid", price, quantity))


@pytest.mark.parametrize(
    "case,side,quantity,expected",
    [
        (
            "full", "bid", 1000,
            (1000, True, M("148.60"), M("148600.00"), [("148.00", 700), ("150.00", 300)]),
        ),
        ("partial", "bid", 1000, (400, False, M("148.00"), M("59200.00"), [("148.00", 400)])),
        ("no_asks", "bid", 1000, (0, False, None, None, [])),
        (
            "walk_bids", "ask", 500,
            (500, True, M("149.20"), M("74600.00"), [("150.00", 300), ("148.00", 200)]),
        ),
    ],
)  # fmt: skip
def test_quote_variants(
    traders: AppClient,
    clock: ManualClock,
    case: str,
    side: str,
    quantity: int,
    expected: tuple[int, bool, Money | None, Money | None, list[tuple[str, int]]],
) -> None:
    quote_case(traders, case)
    clock.set(ManualClock.at("2026-02-17T14:05:00Z").now())
    result = get_quote(traders, side, quantity)
    assert result.status_code == 200
    available, fillable, average, total, levels = expected
    assert body(result) == {
        "symbol": "AAPL",
        "side": side,
        "quantity_requested": quantity,
        "quantity_available": available,
        "fully_fillable": fillable,
        "estimated_average_price": average,
        "estimated_total": total,
        "price_levels": [{"price": M(p), "quantity": q} for p, q in levels],
        "quoted_at": "2026-02-17T14:05:00Z",
    }


def test_quote_example_literals(traders: AppClient) -> None:
    quote_case(traders, "full")
    result = get_quote(traders, "bid", 1000)
    for literal in (
        '"estimated_average_price":148.60',
        '"estimated_total":148600.00',
        '"fully_fillable":true',
        '"price":148.00',
    ):
        assert literal in result.text
    empty = get_quote(traders, "ask", 1000)
    assert '"estimated_average_price":null' in empty.text
    assert '"estimated_total":null' in empty.text
    assert '"price_levels":[]' in empty.text


def test_quote_average_is_truncated(traders: AppClient) -> None:
    for price, quantity in ((10, 100), (11, 200), (12, 50)):
        accepted(limit(traders, "S", "ask", price, quantity))
    assert body(get_quote(traders, "bid", 400)) == {
        "symbol": "AAPL", "side": "bid", "quantity_requested": 400, "quantity_available": 350,
        "fully_fillable": False, "estimated_average_price": M("10.85"),
        "estimated_total": M("3800.00"),
        "price_levels": [
            {"price": M("10.00"), "quantity": 100}, {"price": M("11.00"), "quantity": 200},
            {"price": M("12.00"), "quantity": 50},
        ],
        "quoted_at": START,
    }  # fmt: skip
    # a quote that stops inside the first level
    quote = body(get_quote(traders, "bid", 1))
    assert quote["price_levels"] == [{"price": M("10.00"), "quantity": 1}]
    assert (quote["estimated_total"], quote["fully_fillable"]) == (M("10.00"), True)


def test_quote_exactly_the_whole_side(traders: AppClient) -> None:
    quote_case(traders, "walk_bids")
    quote = body(get_quote(traders, "ask", 800))
    assert quote["price_levels"] == [
        {"price": M("150.00"), "quantity": 300},
        {"price": M("148.00"), "quantity": 500},
    ]
    assert (quote["quantity_available"], quote["fully_fillable"]) == (800, True)
    assert quote["estimated_total"] == M("119000.00")
    assert quote["estimated_average_price"] == M("148.75")  # 11900000 / 800


def test_quote_checks_no_balance_and_changes_nothing(traders: AppClient) -> None:
    register(traders, "P", 0)  # no cash at all
    quote_case(traders, "full")
    error(
        market(traders, "P", "bid", 1000),
        409,
        "insufficient_balance",
        "Broker P has insufficient available cash for this order",
    )
    before = balance(traders, "S")
    quote = body(get_quote(traders, "bid", 1_000_000_000))
    assert (quote["quantity_requested"], quote["quantity_available"]) == (1_000_000_000, 1200)
    assert quote["estimated_total"] == M("178600.00")  # 700 * 148 + 800 * 150
    assert body(get_quote(traders, "bid", 1000))["estimated_total"] == M("148600.00")
    assert balance(traders, "S") == before
    assert body(listing(traders, "P"))["total"] == 0


QUOTE_ERRORS = [
    (None, "side query parameter is required"),
    ("side=", "side query parameter is required"),
    ("quantity=5", "side query parameter is required"),
    ("side=buy", "Invalid side: 'buy'. Must be one of: bid, ask"),
    ("side=BID&quantity=1", "Invalid side: 'BID'. Must be one of: bid, ask"),
    ("side=buy&quantity=0", "Invalid side: 'buy'. Must be one of: bid, ask"),
    ("side=bid", "quantity query parameter is required"),
    ("side=ask&quantity=", "quantity query parameter is required"),
    ("side=bid&quantity=0", "quantity must be a positive integer"),
    ("side=bid&quantity=000", "quantity must be a positive integer"),
    ("side=bid&quantity=-1", "quantity must be a positive integer"),
    ("side=bid&quantity=1.5", "quantity must be a positive integer"),
    ("side=bid&quantity=10.0", "quantity must be a positive integer"),
    ("side=bid&quantity=1e3", "quantity must be a positive integer"),
    ("side=bid&quantity=abc", "quantity must be a positive integer"),
    ("side=bid&quantity=%2B5", "quantity must be a positive integer"),
    ("side=bid&quantity=1000000001", "quantity must be <= 1000000000"),
    ("side=bid&quantity=99999999999999999999999", "quantity must be <= 1000000000"),
]


@pytest.mark.parametrize("query,message", QUOTE_ERRORS)
def test_quote_parameters_are_checked_in_order(
    traders: AppClient, query: str | None, message: str
) -> None:
    for symbol in ("AAPL", "XYZZ", "aapl"):  # the parameters are checked before the symbol
        result = traders.get(f"/stocks/{symbol}/quote", query=query)
        error(result, 400, "validation_error", message)


@pytest.mark.parametrize(
    "query,quantity",
    [
        ("side=bid&quantity=1000000000", 1_000_000_000),
        ("side=bid&quantity=0007", 7),
        ("side=bid&side=buy&quantity=3&quantity=x", 3),  # first occurrences count
        ("quantity=2&side=bid&extra=1", 2),
    ],
)
def test_quote_accepted_parameter_forms(traders: AppClient, query: str, quantity: int) -> None:
    result = traders.get("/stocks/AAPL/quote", query=query)
    assert result.status_code == 200, result.text
    assert body(result) == empty_quote("bid", quantity, START)


def test_quote_with_valid_parameters_on_unknown_symbol_is_404(traders: AppClient) -> None:
    error(
        get_quote(traders, "bid", 5, "XYZZ"),
        404,
        "symbol_not_found",
        "Symbol XYZZ is not listed on this exchange",
    )


# -- broker order listing: newest first, filtered by status, paginated -------------

SUMMARY_KEYS = {
    "order_id", "type", "document_number", "symbol", "side", "quantity", "filled_quantity",
    "remaining_quantity", "cancelled_quantity", "status", "average_price", "created_at",
}  # fmt: skip
LIMIT_SUMMARY_KEYS = SUMMARY_KEYS | {"price"}


@dataclass
class History:
    """B's orders of the `history` fixture, oldest first (o1 … o9)."""

    client: AppClient
    ids: list[str]

    def newest_first(self, *numbers: int) -> list[str]:
        return [self.ids[n - 1] for n in numbers]


@pytest.fixture
def history(client: AppClient, clock: ManualClock, exchange: Exchange) -> History:
    """Nine orders of broker B in every status, limit and market, on two symbols."""
    register(client, "B", 1_000_000, AAPL=1000)
    register(client, "C", 1_000_000, AAPL=1000, MSFT=1000)
    ids: list[str] = []

    def keep(result: testing.Result) -> dict[str, Any]:
        order = accepted(result)
        ids.append(order["order_id"])
        return order

    keep(limit(client, "B", "ask", 200, 100))  # o1 09:00:00, then partly filled
    clock.set(at(60))
    accepted(limit(client, "C", "bid", 200, 40))
    clock.set(at(120))
    keep(limit(client, "B", "bid", 100, 10))  # o2 pending
    clock.set(at(180))
    accepted(limit(client, "C", "ask", 10, 50, "MSFT"))
    keep(market(client, "B", "bid", 30, "MSFT"))  # o3 market, filled
    clock.set(at(240))
    o4 = keep(limit(client, "B", "bid", 90, 5))  # o4 cancelled at 09:04:30
    clock.set(at(270))
    assert client.delete(f"/orders/{o4['order_id']}").status_code == 200
    clock.set(at(300))
    keep(limit(client, "B", "bid", 80, 5, expires_at="2026-02-17T09:06:00Z"))  # o5 expires
    clock.set(at(360))
    assert run_expiration(exchange) == ["AAPL"]
    clock.set(at(420))
    keep(market(client, "B", "bid", 100, "MSFT"))  # o6: 20 filled, 80 IOC-cancelled
    clock.set(at(480))
    for price in (50, 51, 52):  # o7, o8, o9: same created_at
        keep(limit(client, "B", "bid", price, 1))
    return History(client, ids)


def test_listing_newest_first_with_ties_in_reverse_acceptance(history: History) -> None:
    result = listing(history.client, "B")
    assert result.status_code == 200
    page = body(result)
    assert [o["order_id"] for o in page["orders"]] == history.newest_first(
        9, 8, 7, 6, 5, 4, 3, 2, 1
    )
    assert (page["total"], page["page"], page["limit"]) == (9, 1, 20)
    assert [o["created_at"] for o in page["orders"]] == [
        "2026-02-17T09:08:00Z", "2026-02-17T09:08:00Z", "2026-02-17T09:08:00Z",
        "2026-02-17T09:07:00Z", "2026-02-17T09:05:00Z", "2026-02-17T09:04:00Z",
        "2026-02-17T09:03:00Z", "2026-02-17T09:02:00Z", "2026-02-17T09:00:00Z",
    ]  # fmt: skip
    other = body(listing(history.client, "C"))
    assert other["total"] == 2
    assert not set(history.ids) & {o["order_id"] for o in other["orders"]}


def test_listing_summaries(history: History) -> None:
    result = listing(history.client, "B")
    orders = {o["order_id"]: o for o in body(result)["orders"]}
    for number, order in enumerate(history.ids, start=1):
        keys = SUMMARY_KEYS if number in (3, 6) else LIMIT_SUMMARY_KEYS
        assert set(orders[order]) == keys
    o1, o3, o4, o5, o6, o9 = (orders[history.ids[n - 1]] for n in (1, 3, 4, 5, 6, 9))
    assert o1 == {
        "order_id": history.ids[0], "type": "limit", "document_number": "12345678900",
        "symbol": "AAPL", "side": "ask", "price": M("200.00"), "quantity": 100,
        "filled_quantity": 40, "remaining_quantity": 60, "cancelled_quantity": 0,
        "status": "partially_filled", "average_price": M("200.00"),
        "created_at": "2026-02-17T09:00:00Z",
    }  # fmt: skip
    assert o3 == {
        "order_id": history.ids[2], "type": "market", "document_number": "1",
        "symbol": "MSFT", "side": "bid", "quantity": 30, "filled_quantity": 30,
        "remaining_quantity": 0, "cancelled_quantity": 0, "status": "filled",
        "average_price": M("10.00"), "created_at": "2026-02-17T09:03:00Z",
    }  # fmt: skip
    assert o6 == {
        "order_id": history.ids[5], "type": "market", "document_number": "1", "symbol": "MSFT",
        "side": "bid", "quantity": 100, "filled_quantity": 20, "remaining_quantity": 0,
        "cancelled_quantity": 80, "status": "cancelled", "average_price": M("10.00"),
        "created_at": "2026-02-17T09:07:00Z",
    }  # fmt: skip
    assert (o4["status"], o4["cancelled_quantity"], o4["average_price"]) == ("cancelled", 5, None)
    assert (o5["status"], o5["cancelled_quantity"], o5["remaining_quantity"]) == (
        "expired", 5, 0,
    )  # fmt: skip
    assert (o9["status"], o9["price"], o9["average_price"]) == ("pending", M("52.00"), None)
    assert '"price":200.00' in result.text and '"average_price":null' in result.text


@pytest.mark.parametrize(
    "status,numbers",
    [
        ("pending", (9, 8, 7, 2)),
        ("partially_filled", (1,)),
        ("filled", (3,)),
        ("cancelled", (6, 4)),
        ("expired", (5,)),
    ],
)
def test_listing_status_filter(history: History, status: str, numbers: tuple[int, ...]) -> None:
    page = body(listing(history.client, "B", f"status={status}"))
    assert [o["order_id"] for o in page["orders"]] == history.newest_first(*numbers)
    assert {o["status"] for o in page["orders"]} == {status}
    assert (page["total"], page["page"], page["limit"]) == (len(numbers), 1, 20)


def test_listing_empty_status_counts_as_absent(history: History) -> None:
    assert body(listing(history.client, "B", "status="))["total"] == 9


@pytest.mark.parametrize(
    "query,numbers,page,limit_",
    [
        ("limit=4", (9, 8, 7, 6), 1, 4),
        ("limit=4&page=2", (5, 4, 3, 2), 2, 4),
        ("limit=4&page=3", (1,), 3, 4),  # the last page is partial
        ("limit=4&page=4", (), 4, 4),  # past the end: empty, true total
        ("page=2", (), 2, 20),
        ("page=1&limit=9", (9, 8, 7, 6, 5, 4, 3, 2, 1), 1, 9),
        ("limit=1&page=9", (1,), 9, 1),
        ("limit=1&page=10", (), 10, 1),
        ("limit=100", (9, 8, 7, 6, 5, 4, 3, 2, 1), 1, 100),
        ("page=001&limit=03", (9, 8, 7), 1, 3),
        ("limit=2&limit=500&page=2&page=x", (7, 6), 2, 2),  # first occurrences count
        ("page=&limit=", (9, 8, 7, 6, 5, 4, 3, 2, 1), 1, 20),
    ],
)
def test_listing_pagination(
    history: History, query: str, numbers: tuple[int, ...], page: int, limit_: int
) -> None:
    result = listing(history.client, "B", query)
    assert result.status_code == 200, result.text
    answer = body(result)
    assert (answer["total"], answer["page"], answer["limit"]) == (9, page, limit_)
    assert [o["order_id"] for o in answer["orders"]] == history.newest_first(*numbers)


def test_listing_pagination_with_a_filter(history: History) -> None:
    first = body(listing(history.client, "B", "status=pending&limit=3"))
    last = body(listing(history.client, "B", "status=pending&limit=3&page=2"))
    past = body(listing(history.client, "B", "status=pending&limit=3&page=3"))
    assert [o["order_id"] for o in first["orders"]] == history.newest_first(9, 8, 7)
    assert [o["order_id"] for o in last["orders"]] == history.newest_first(2)
    assert past == {"orders": [], "total": 4, "page": 3, "limit": 3}


def test_listing_last_page_allowed_is_an_empty_page(history: History) -> None:
    result = listing(history.client, "B", "page=1000000000&limit=100")
    assert result.status_code == 200
    assert body(result) == {"orders": [], "total": 9, "page": 1_000_000_000, "limit": 100}


def test_listing_without_orders(client: AppClient) -> None:
    register(client, "lonely", 10)
    empty = {"orders": [], "total": 0, "page": 1, "limit": 20}
    assert body(listing(client, "lonely")) == empty
    assert body(listing(client, "lonely", "status=filled")) == empty


def test_listing_filter_without_match(history: History) -> None:
    accepted(limit(history.client, "C", "ask", 300, 1))
    assert body(listing(history.client, "C", "status=expired")) == {
        "orders": [], "total": 0, "page": 1, "limit": 20,
    }  # fmt: skip


STATUS_MESSAGE = (
    "Invalid status filter: '{}'. Must be one of: "
    "pending, partially_filled, filled, cancelled, expired"
)
PAGE_MESSAGE = "page must be an integer >= 1"
LIMIT_MESSAGE = "limit must be an integer between 1 and 100"


@pytest.mark.parametrize(
    "query,message",
    [
        ("status=open", STATUS_MESSAGE.format("open")),
        ("status=PENDING", STATUS_MESSAGE.format("PENDING")),
        ("status=active&page=0&limit=0", STATUS_MESSAGE.format("active")),
        ("page=0", PAGE_MESSAGE),
        ("page=-1", PAGE_MESSAGE),
        ("page=1.5", PAGE_MESSAGE),
        ("page=abc", PAGE_MESSAGE),
        ("page=%2B1", PAGE_MESSAGE),
        ("page=1e2", PAGE_MESSAGE),
        ("page=0&limit=0", PAGE_MESSAGE),
        ("status=filled&page=0", PAGE_MESSAGE),
        ("limit=0", LIMIT_MESSAGE),
        ("limit=101", LIMIT_MESSAGE),
        ("limit=-5", LIMIT_MESSAGE),
        ("limit=2.0", LIMIT_MESSAGE),
        ("limit=ten", LIMIT_MESSAGE),
        ("limit=99999999999999999999999", LIMIT_MESSAGE),
        ("status=filled&page=2&limit=1000", LIMIT_MESSAGE),
    ],
)
def test_listing_parameters_are_checked_in_order(
    history: History, query: str, message: str
) -> None:
    for broker_id in ("B", "broker-999"):  # the parameters are checked before the broker
        error(listing(history.client, broker_id, query), 400, "validation_error", message)


@pytest.mark.parametrize(
    "path,broker_id", [("broker-999", "broker-999"), ("bad%20id", "bad id"), ("b", "b")]
)
def test_listing_of_unknown_broker_is_404(client: AppClient, path: str, broker_id: str) -> None:
    register(client, "B", 1)
    message = f"Broker {broker_id} does not exist"
    error(listing(client, path), 404, "broker_not_found", message)
    error(listing(client, path, "status=filled&page=3&limit=7"), 404, "broker_not_found", message)


# -- hypothesis: every answer against an independent reference matcher -------------

BROKERS = ("X", "Y", "Z")
PRICES = tuple(range(9_998, 10_003))  # 99.98 … 100.02: few levels, many orders share one
LIFETIMES = (None, None, 20, 45)  # None: far future; else seconds from now

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("limit"),
            st.sampled_from(BROKERS),
            st.sampled_from(("bid", "ask")),
            st.sampled_from(PRICES),
            st.integers(1, 30),
            st.sampled_from(LIFETIMES),
        ),
        st.tuples(
            st.just("market"),
            st.sampled_from(BROKERS),
            st.sampled_from(("bid", "ask")),
            st.integers(1, 60),
        ),
        st.tuples(st.just("cancel"), st.integers(0, 1000)),
        st.tuples(st.just("advance"), st.integers(1, 30)),
    ),
    min_size=4,
    max_size=24,
)


def order_view(order: dict[str, Any]) -> dict[str, Any]:
    """What the reference predicts of an order object."""
    average = order["average_price"]
    return {
        "status": order["status"],
        "quantities": (
            order["filled_quantity"], order["remaining_quantity"], order["cancelled_quantity"]
        ),
        "average_price": None if average is None else cents(average),
        "trades": [(cents(t["price"]), t["quantity"], t["executed_at"]) for t in order["trades"]],
        "closed": (order.get("cancelled_at"), order.get("expired_at")),
    }  # fmt: skip


def reference_view(order: RefOrder) -> dict[str, Any]:
    def when(us: int | None) -> str | None:
        return None if us is None else iso(us)

    return {
        "status": order.status,
        "quantities": (order.filled, order.remaining, order.cancelled),
        "average_price": order.average_price,
        "trades": [(t.price, t.quantity, iso(t.executed_at)) for t in order.trades],
        "closed": (when(order.cancelled_at), when(order.expired_at)),
    }


def run_operations(
    client: AppClient, clock: ManualClock, ops: list[tuple[Any, ...]], reference: ReferenceMarket
) -> list[str]:
    """Submit the operations to the app and to the reference, checking every answer
    against the reference's; returns the ids of the accepted orders."""
    ids: list[str] = []
    for op in ops:
        now = clock.now()
        if op[0] == "limit":
            _, broker_id, side, price, quantity, lifetime = op
            expires = FAR if lifetime is None else iso(now + lifetime * SECOND)
            result = limit(client, broker_id, side, price / 100, quantity, expires_at=expires)
            answer = accepted(result)
            ids.append(answer["order_id"])
            expected = reference.limit(
                answer["order_id"], broker_id, side, price, quantity, parse_iso(expires), now
            )
            assert order_view(answer) == reference_view(expected), op
        elif op[0] == "market":
            _, broker_id, side, quantity = op
            result = market(client, broker_id, side, quantity)
            if result.status_code == 201:
                answer = body(result)
                ids.append(answer["order_id"])
                expected_order = reference.market(
                    answer["order_id"], broker_id, side, quantity, now
                )
                assert expected_order is not None, f"{op}: the reference has no liquidity"
                assert order_view(answer) == reference_view(expected_order), op
            else:
                error(
                    result,
                    409,
                    "no_liquidity",
                    "No matching orders available for market order on AAPL",
                )
                assert reference.market("refused", broker_id, side, quantity, now) is None, op
        elif op[0] == "cancel" and ids:
            order_id = ids[op[1] % len(ids)]
            result = client.delete(f"/orders/{order_id}")
            assert result.status_code == (200 if reference.cancel(order_id, now) else 409), op
            if result.status_code == 200:
                assert order_view(body(result)) == reference_view(reference.orders[order_id])
        elif op[0] == "advance":
            clock.advance(seconds=op[1])
    return ids


def parse_iso(text: str) -> int:
    return ManualClock.at(text).now()


def expected_quote(
    reference: ReferenceMarket, side: str, quantity: int, now: int
) -> dict[str, Any]:
    taken = reference.quote(side, quantity, now)
    available = sum(take for _, take in taken)
    total_cost = sum(price * take for price, take in taken)
    return {
        "symbol": "AAPL",
        "side": side,
        "quantity_requested": quantity,
        "quantity_available": available,
        "fully_fillable": available == quantity,
        "estimated_average_price": money(total_cost // available) if available else None,
        "estimated_total": money(total_cost) if available else None,
        "price_levels": [{"price": money(p), "quantity": q} for p, q in taken],
        "quoted_at": iso(now),
    }


def expected_price(reference: ReferenceMarket, now: int) -> dict[str, Any]:
    price = reference.price(now)
    return price_body(
        None if price.current is None else money(price.current).literal,
        price.trades_in_window,
        None if price.last_trade_at is None else iso(price.last_trade_at),
    )


@settings(max_examples=40)
@given(ops=operations, quantities=st.lists(st.integers(1, 400), min_size=2, max_size=2))
def test_every_answer_matches_a_reference_matcher(
    ops: list[tuple[Any, ...]], quantities: list[int]
) -> None:
    """Order answers, book, quotes and price against `tests.reference`, which sees only
    the submitted orders and the clock: never the app's own answers."""
    reference = ReferenceMarket()
    with fresh_app() as (client, clock):
        for broker_id in BROKERS:
            register(client, broker_id, 100_000_000, AAPL=100_000)
        ids = run_operations(client, clock, ops, reference)
        now = clock.now()
        bids = reference.levels("bid", now)
        asks = reference.levels("ask", now)
        assert body(get_book(client, query="depth=50")) == {
            "symbol": "AAPL",
            "bids": [level(money(p).literal, total, count) for p, total, count in bids],
            "asks": [level(money(p).literal, total, count) for p, total, count in asks],
            "spread": money(asks[0][0] - bids[0][0]) if bids and asks else None,
            "snapshot_at": iso(now),
        }
        for side in ("bid", "ask"):
            for quantity in quantities:
                quote = body(get_quote(client, side, quantity))
                assert quote == expected_quote(reference, side, quantity, now)
        whole_side = sum(total for _, total, _ in bids)
        if whole_side:  # a quote for exactly everything on a side
            quote = body(get_quote(client, "ask", whole_side))
            assert quote == expected_quote(reference, "ask", whole_side, now)
        assert body(get_price(client)) == expected_price(reference, now)
        # the reads expired the due orders; every order's final state
        reference.expire(now)
        for order_id in ids:
            order = body(client.get(f"/orders/{order_id}"))
            assert order_view(order) == reference_view(reference.orders[order_id]), order_id
