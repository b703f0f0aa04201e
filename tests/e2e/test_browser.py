"""The market page (`GET /`: the listed symbols, and the chosen one's candles, book and
trades, kept live by its event stream) in a real browser: headless Chromium from
Debian's `chromium` package, driven by Playwright for Python through `executable_path`
(nothing here downloads a browser; `make test` installs the package when it can, see
scripts/test-deps).

Orders go in through the API; the page must show the book rows, the spread, the trade
and its candle, then change live, without a reload, when more orders cross, also after
the server stopped and started again under the open page. Screenshots
of a phone and a wide screen are saved to test-artifacts/; with
UPDATE_MARKET_PAGE_PICTURE=1 the wide one replaces the README's docs/market-page.png.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, Server, require
from tests.e2e.test_stream import Api

ARTIFACTS = ROOT / "test-artifacts"
README_PICTURE = ROOT / "docs" / "market-page.png"
WAIT_MS = 30_000  # how long a live change may take before the test gives up (a hang guard)
REFUSED = "Failed to load resource: net::ERR_CONNECTION_REFUSED"


@pytest.fixture
def market(server: Server) -> Api:
    """AAPL: asks 151.00 × 100, 151.50 × 250, 152.00 × 50; bids 150.00 × 200, 149.50 × 80;
    then one trade (30 at 151.00). MSFT: one trade at 300.00 and a resting bid."""
    api = Api(server.url)
    api.register("S", 0, AAPL=100_000, MSFT=100_000)
    api.register("B", 100_000_000)
    for price, quantity in ((151.0, 100), (151.5, 250), (152.0, 50)):
        api.order("S", "ask", quantity, price)
    for price, quantity in ((150.0, 200), (149.5, 80)):
        api.order("B", "bid", quantity, price)
    assert api.order("B", "bid", 30, 151.0)["status"] == "filled"
    api.order("S", "ask", 5, 300.0, symbol="MSFT")
    api.order("B", "bid", 5, 300.0, symbol="MSFT")
    api.order("B", "bid", 10, 299.0, symbol="MSFT")
    return api


class Page:
    """One browser page on the market page, failing the test on any script error or
    any request that leaves the exchange."""

    def __init__(self, browser: Any, server: Server, **context: Any) -> None:
        from playwright.sync_api import expect

        expect.set_options(timeout=WAIT_MS)
        self.expect = expect
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.errors: list[str] = []
        self.down_from: int | None = None  # errors from here on may be refused requests
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)
        self.page.on(
            "request",
            lambda request: (
                None
                if request.url.startswith(server.url)
                else self.errors.append(f"request outside the exchange: {request.url}")
            ),
        )

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        self.errors.append(f"console: {message.text} ({message.location.get('url', '')})")

    def chart(self) -> list[dict[str, Any]]:
        """The candles the chart's series holds, oldest first, with their volumes (loaded
        from `GET /stocks/{symbol}/candles`, then moved by the stream's trades)."""
        assert self.page.evaluate("window.marketChart.loaded()")
        candles = self.page.evaluate("window.marketChart.candles()")
        volumes = self.page.evaluate("window.marketChart.volumes()")
        return [
            {**candle, "volume": volume} for candle, volume in zip(candles, volumes, strict=True)
        ]

    def wait_for_chart(self, volume: int) -> list[dict[str, Any]]:
        """Once the chart holds `volume` shares in all (its canvas drawn), its candles."""
        self.expect(self.page.locator("#chart canvas").first).to_be_visible()
        self.page.wait_for_function(
            "volume => window.marketChart.volumes().reduce((a, b) => a + b, 0) === volume",
            arg=volume,
        )
        return self.chart()

    def texts(self, selector: str) -> list[str]:
        return [text.strip() for text in self.page.locator(selector).all_inner_texts()]

    def server_going_down(self) -> None:
        """From now on the browser may log refused requests (the stream's reconnects, the
        page's polls) while nothing listens: expected then, and nothing else."""
        self.down_from = len(self.errors)

    def close(self) -> None:
        self.context.close()  # the browser may report a refused request this late
        if self.down_from is not None:
            self.errors[self.down_from :] = [
                error for error in self.errors[self.down_from :] if REFUSED not in error
            ]
        assert self.errors == []


def level_texts(page: Page, side: str) -> list[list[str]]:
    rows = page.page.locator(f"#{side} .level")
    return [
        [cell.strip() for cell in rows.nth(i).locator("span").all_inner_texts()]
        for i in range(rows.count())
    ]


def test_the_page_shows_the_book_and_trades_and_follows_them_live(
    chromium: Any, server: Server, market: Api
) -> None:
    browser = require(chromium)
    ARTIFACTS.mkdir(exist_ok=True)
    wide = Page(browser, server, viewport={"width": 1440, "height": 900})
    page, expect = wide.page, wide.expect
    page.goto(f"{server.url}/")  # no symbol in the URL: the first one, AAPL

    expect(page).to_have_url(re.compile(r"/\?symbol=AAPL&interval=1m$"))
    expect(page.locator("#symbol-name")).to_have_text("AAPL")
    expect(page.locator("#asks .level")).to_have_count(3)
    expect(page.locator("#bids .level")).to_have_count(2)
    expect(page.locator("#book-spread")).to_have_text("1.00")
    expect(page.locator("#trades li")).to_have_count(1)
    assert level_texts(wide, "asks") == [  # best ask next to the spread, at the bottom
        ["152.00", "50", "1"],
        ["151.50", "250", "1"],
        ["151.00", "70", "1"],
    ]
    assert level_texts(wide, "bids") == [["150.00", "200", "1"], ["149.50", "80", "1"]]
    assert wide.texts("#trades li .price") == ["151.00"]
    assert wide.texts("#trades li .quantity") == ["30"]
    expect(page.locator("#symbols a")).to_have_count(2)
    expect(page.locator("#symbols a[aria-current=page] .ticker")).to_have_text("AAPL")
    expect(page.locator('#symbols a[data-symbol="MSFT"] .price')).to_have_text("300.00")
    expect(page.locator("#vwap")).to_have_text("151.00")
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    [candle] = wide.wait_for_chart(30)  # the seeded trade: one candle
    assert {k: candle[k] for k in ("open", "high", "low", "close", "volume")} == {
        "open": 151.0, "high": 151.0, "low": 151.0, "close": 151.0, "volume": 30
    }  # fmt: skip
    assert candle["time"] % 60 == 0  # a minute's candle, aligned to the epoch

    # More orders cross; the page follows from its stream without a reload.
    page.evaluate("window.stillTheSamePage = true")
    sweep = market.order("B", "bid", 300, 151.5)
    assert [t["quantity"] for t in sweep["trades"]] == [70, 230]
    expect(page.locator("#trades li")).to_have_count(3)
    # the current candle moved: 70 at 151.00 then 230 at 151.50 (a minute may have begun
    # between the seeded trade and these: then they opened a new candle)
    candles = wide.wait_for_chart(330)
    assert candles[-1]["close"] == 151.5 and candles[-1]["high"] == 151.5
    assert len(candles) in (1, 2)
    assert min(c["low"] for c in candles) == 151.0
    expect(page.locator("#trades li[data-tick=up] .price")).to_have_text(["151.50"])
    expect(page.locator("#book-spread")).to_have_text("1.50")  # 151.50 − 150.00
    expect(page.locator("#asks .level")).to_have_count(2)
    assert level_texts(wide, "asks") == [["152.00", "50", "1"], ["151.50", "20", "1"]]
    assert wide.texts("#trades li .price") == ["151.50", "151.00", "151.00"]
    assert wide.texts("#trades li .quantity") == ["230", "70", "30"]
    market.order("B", "bid", 40, 150.5)  # a new best bid, no trade
    expect(page.locator("#book-spread")).to_have_text("1.00")
    assert level_texts(wide, "bids")[0] == ["150.50", "40", "1"]
    expect(page.locator("#last-price")).to_have_text("151.50")
    assert page.evaluate("window.stillTheSamePage") is True

    # A fuller market for the screenshot: five more levels a side, three more trades.
    for i, quantity in enumerate((120, 60, 300, 90, 45)):
        market.order("S", "ask", quantity, 152.5 + 0.5 * i)
        market.order("B", "bid", quantity + 25, 149.0 - 0.5 * i)
    market.order("S", "ask", 10, 150.5)
    market.order("S", "ask", 15, 150.5)
    market.order("B", "bid", 12, 151.5)
    expect(page.locator("#trades li")).to_have_count(6)
    expect(page.locator("#asks .level")).to_have_count(7)
    expect(page.locator("#bids .level")).to_have_count(8)
    expect(page.locator("#volume")).to_have_text("367")
    wide.wait_for_chart(367)
    # each price against the trade before it (newest first): ▲ up, ▼ down, nothing if equal
    assert wide.texts("#trades li .price") == [
        "151.50", "150.50", "150.50", "151.50", "151.00", "151.00"
    ]  # fmt: skip
    ticks = page.evaluate(
        """() => [...document.querySelectorAll('#trades li .price')].map((cell) =>
            [cell.parentElement.dataset.tick || '', getComputedStyle(cell, '::before').content])"""
    )
    assert ticks == [
        ["up", '"▲"'], ["", "none"], ["down", '"▼"'], ["up", '"▲"'], ["", "none"], ["", "none"]
    ]  # fmt: skip
    assert_bars_clear_of_counts(wide)
    page.screenshot(path=str(ARTIFACTS / "market-wide.png"), animations="disabled")
    if os.environ.get("UPDATE_MARKET_PAGE_PICTURE") == "1":  # never a side effect of make test
        README_PICTURE.write_bytes((ARTIFACTS / "market-wide.png").read_bytes())

    # Another interval, chosen on the page: in the URL, the candles of 1 s.
    page.locator('#intervals button[data-interval="1s"]').click()
    expect(page).to_have_url(re.compile(r"/\?symbol=AAPL&interval=1s$"))
    before = wide.wait_for_chart(367)
    assert all(candle["time"] % 1 == 0 for candle in before)
    # a trade in a later second than the last candle's opens a new candle
    page.wait_for_function("t => Date.now() / 1000 >= t + 1.05", arg=before[-1]["time"])
    market.order("B", "bid", 7, 151.5)
    after = wide.wait_for_chart(374)
    assert len(after) == len(before) + 1
    assert after[:-1] == before
    assert (after[-1]["open"], after[-1]["close"], after[-1]["volume"]) == (151.5, 151.5, 7)

    # Another symbol, chosen from the list: its own book and trades, in the URL.
    page.locator('#symbols a[data-symbol="MSFT"]').click()
    expect(page).to_have_url(re.compile(r"/\?symbol=MSFT&interval=1s$"))
    expect(page.locator("#bids .level")).to_have_count(1)
    expect(page.locator("#asks .level")).to_have_count(0)
    expect(page.locator("#book-spread")).to_have_text("—")
    expect(page.locator("#trades li")).to_have_count(1)
    [candle] = wide.wait_for_chart(5)
    assert candle["close"] == 300.0
    assert page.evaluate("window.stillTheSamePage") is True
    wide.close()


def assert_bars_clear_of_counts(page: Page) -> None:
    """Each depth bar ends before the order-count column begins."""
    gaps = page.page.evaluate(
        """() => [...document.querySelectorAll('.level')].map((row) => {
            const bar = getComputedStyle(row, '::before');
            const right = row.getBoundingClientRect().right - parseFloat(bar.right);
            return row.querySelector('.orders').getBoundingClientRect().left - right;
        })"""
    )
    assert gaps and min(gaps) >= 0, gaps


def test_the_page_on_a_phone(chromium: Any, server: Server, market: Api) -> None:
    browser = require(chromium)
    ARTIFACTS.mkdir(exist_ok=True)
    phone = Page(
        browser,
        server,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page, expect = phone.page, phone.expect
    page.goto(f"{server.url}/?symbol=AAPL&interval=5m")
    expect(page.locator('#intervals button[aria-pressed="true"]')).to_have_text("5m")
    expect(page.locator("#asks .level")).to_have_count(3)
    expect(page.locator("#trades li")).to_have_count(1)
    expect(page.locator("#vwap")).to_have_text("151.00")
    market.order("B", "bid", 20, 151.0)
    expect(page.locator("#trades li")).to_have_count(2)
    expect(page.locator("#volume")).to_have_text("50")  # refreshed after the trade
    candles = phone.wait_for_chart(50)
    assert candles[-1]["close"] == 151.0 and candles[-1]["time"] % 300 == 0
    box = page.locator("#chart").bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] >= 200
    assert_bars_clear_of_counts(phone)
    # Nothing wider than the screen: no sideways scrolling of the page.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "market-phone.png"), full_page=True, animations="disabled")
    phone.close()


def test_an_unknown_symbol_in_the_url_says_so(chromium: Any, server: Server, market: Api) -> None:
    visit = Page(require(chromium), server, viewport={"width": 1024, "height": 768})
    visit.page.goto(f"{server.url}/?symbol=XYZZ")
    visit.expect(visit.page.locator("#notice")).to_have_text(
        "Symbol XYZZ is not listed on this exchange."
    )
    visit.expect(visit.page.locator("#symbols a")).to_have_count(2)
    visit.close()


def test_the_page_follows_the_market_again_after_a_server_restart(
    chromium: Any, tmp_path: Path
) -> None:
    """The server stops and starts again on the same port and journal; the open page's
    event stream reconnects by itself and shows the next trade, without a reload."""
    env = {"DATABASE_PATH": str(tmp_path / "exchange.db")}
    server = Server(env, tmp_path / "first.log")
    api = Api(server.url)
    api.register("S", 0, AAPL=1_000)
    api.register("B", 1_000_000)
    api.order("S", "ask", 100, 151.0)
    assert api.order("B", "bid", 30, 151.0)["status"] == "filled"
    visit = Page(require(chromium), server, viewport={"width": 1024, "height": 768})
    page, expect = visit.page, visit.expect
    try:
        page.goto(f"{server.url}/?symbol=AAPL")
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        expect(page.locator("#trades li")).to_have_count(1)
        page.evaluate("window.stillTheSamePage = true")

        visit.server_going_down()
        assert server.stop() == 0
        expect(page.locator("#status")).not_to_have_attribute("data-state", "live")
        server = Server(env, tmp_path / "second.log", port=server.port)
        expect(page.locator("#status")).to_have_attribute("data-state", "live")  # reopened
        api = Api(server.url)
        assert api.order("B", "bid", 20, 151.0)["status"] == "filled"  # the recovered book

        expect(page.locator("#trades li")).to_have_count(2)  # from the reopened stream
        assert visit.texts("#trades li .quantity") == ["20", "30"]
        expect(page.locator("#asks .level .quantity")).to_have_text(["50"])  # its book
        assert level_texts(visit, "asks") == [["151.00", "50", "1"]]
        assert page.evaluate("window.stillTheSamePage") is True
    finally:
        server.stop()
    visit.close()
