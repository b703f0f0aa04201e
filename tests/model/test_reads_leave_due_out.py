"""Book, quote and price reads that must change nothing (the shard mode's reads): the
orders due at the read's time are left out of the view and stay on the book, and the
price read forgets no trade. The default reads expire first, as before."""

from __future__ import annotations

from miniexchange.model import engine
from miniexchange.model.book import Level, OrderBook
from miniexchange.model.commands import ASK, BID
from miniexchange.model.engine import BookView, Outcome, QuoteView, SymbolState
from miniexchange.model.orders import EXPIRED, Trade
from miniexchange.model.vwap import Price, TradeWindow
from miniexchange.testing import SequentialIds
from tests.model.support import Resting, at, limit, place, submit

DUE_1 = at("10:00:01")
DUE_2 = at("10:00:02")


def _book() -> tuple[OrderBook, dict[str, str]]:
    """Asks 10.00 (60 left of 100, due at 10:00:01, then 50 kept), 11.00 (200, due at
    10:00:02), 12.00 (50 kept); bids 9.00 (30, due at 10:00:01), 8.00 (20 kept); and a
    cancelled ask that was due first, whose expiry entry is stale."""
    book = OrderBook("AAPL")
    ids = SequentialIds()
    placed = place(
        book,
        ids,
        (
            Resting("gone", ASK, "10.00", 5, "09:00:00", expires_at=at("09:59:00")),
            Resting("a10", ASK, "10.00", 100, "09:00:01", expires_at=DUE_1),
            Resting("a10b", ASK, "10.00", 50, "09:00:02"),
            Resting("a11", ASK, "11.00", 200, "09:00:03", expires_at=DUE_2),
            Resting("a12", ASK, "12.00", 50, "09:00:04"),
            Resting("b9", BID, "9.00", 30, "09:00:05", expires_at=DUE_1),
            Resting("b8", BID, "8.00", 20, "09:00:06"),
        ),
    )
    assert book.cancel(placed["gone"].order_id, at("09:01:00")) is not None
    filled = submit(book, ids, limit(BID, "10.00", 40, broker="b2"), at("09:02:00"))
    assert [fill.resting.order_id for fill in filled.fills] == [placed["a10"].order_id]
    return book, {name: order.order_id for name, order in placed.items()}


def test_levels_leave_the_due_orders_out_and_on_the_book() -> None:
    book, _ = _book()
    assert book.levels(ASK, 5) == [Level(1_000, 110, 2), Level(1_100, 200, 1), Level(1_200, 50, 1)]
    assert book.levels(ASK, 5, DUE_1 - 1) == book.levels(ASK, 5)
    assert book.levels(ASK, 5, DUE_1) == [
        Level(1_000, 50, 1),  # the partly filled due order's 60 left out, not its 100
        Level(1_100, 200, 1),
        Level(1_200, 50, 1),
    ]
    # A level wholly due is skipped: the depth fills from the levels behind it.
    assert book.levels(ASK, 2, DUE_2) == [Level(1_000, 50, 1), Level(1_200, 50, 1)]
    assert book.levels(BID, 5, DUE_2) == [Level(800, 20, 1)]
    assert len(book) == 6
    assert book.next_expiry() == DUE_1


def test_a_sweep_leaves_the_due_orders_out_and_on_the_book() -> None:
    book, _ = _book()
    assert book.sweep(BID, 80, DUE_2) == [Level(1_000, 50, 1), Level(1_200, 30, 1)]
    assert book.sweep(BID, 80) == [Level(1_000, 80, 2)]
    assert book.sweep(ASK, 100, DUE_1) == [Level(800, 20, 1)]
    assert len(book) == 6


def test_the_orders_left_out_are_still_there_to_expire() -> None:
    book, ids = _book()
    book.levels(ASK, 5, DUE_2)
    book.sweep(BID, 500, DUE_2)
    expired = book.expire_due(DUE_2)
    assert [(order.order_id, order.status, order.cancelled_quantity) for order in expired] == [
        (ids["a10"], EXPIRED, 60),
        (ids["b9"], EXPIRED, 30),
        (ids["a11"], EXPIRED, 200),
    ]
    assert (
        book.levels(ASK, 5)
        == book.levels(ASK, 5, DUE_2)
        == [
            Level(1_000, 50, 1),
            Level(1_200, 50, 1),
        ]
    )


def test_engine_reads_without_expiring_decide_nothing() -> None:
    book, _ = _book()
    state = SymbolState("AAPL", 300_000_000)
    state.book = book
    outcome = Outcome(DUE_2)
    view = engine.read_book(state, 5, outcome, expire=False)
    quote = engine.read_quote(state, BID, 60, outcome, expire=False)
    assert view == BookView([Level(800, 20, 1)], [Level(1_000, 50, 1), Level(1_200, 50, 1)], DUE_2)
    assert quote == QuoteView([Level(1_000, 50, 1), Level(1_200, 10, 1)], DUE_2)
    assert (outcome.closed, outcome.ledgers, outcome.events, outcome.changed) == ([], [], [], [])
    assert len(book) == 6
    # The default read expires first, and says so in its outcome.
    expiring = Outcome(DUE_2)
    assert engine.read_book(state, 5, expiring) == view
    assert len(expiring.closed) == 3
    assert len(book) == 3


def _trade(n: int, executed_at: int, price: int, quantity: int) -> Trade:
    return Trade(f"t{n}", "AAPL", price, quantity, executed_at, "b", "a", "B", "S")


def test_a_price_read_that_forgets_nothing() -> None:
    window = TradeWindow(60_000_000)  # one minute
    window.record(_trade(1, at("09:00:00"), 1_000, 10))
    window.record(_trade(2, at("09:00:30"), 1_100, 10))
    window.record(_trade(3, at("09:00:50"), 1_300, 30))
    # At 09:01:20 the window starts at 09:00:20: trades 2 and 3, (11000 + 39000) / 40.
    assert window.price(at("09:01:20"), forget=False) == Price(1_250, 2, at("09:00:50"))
    assert len(window) == 3  # trade 1 is still held
    assert window.price(at("09:01:40"), forget=False) == Price(1_300, 1, at("09:00:50"))
    assert window.price(at("09:02:00"), forget=False) == Price(1_300, 0, at("09:00:50"))
    assert len(window) == 3
    assert window.price(at("09:01:20")) == Price(1_250, 2, at("09:00:50"))
    assert len(window) == 2
