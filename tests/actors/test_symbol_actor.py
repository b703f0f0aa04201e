"""SymbolActor alone: a fake account actor, a recording clock actor, a real ReadIndex, a
manual clock.

Each test asserts the exact holds asked of and changes told to every broker's (fake) account
actor, the reply, the published order states, the events handed over and the `NextExpiry`
announcements. A limit order arrives as R1 sends it, its funds already held (`Reserved`); a
market order arrives straight (`Submit`) and holds its own sweep cost (`Hold`).
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pykka
import pytest

from miniexchange.actors.listeners import EventsTo
from miniexchange.actors.messages import (
    Cancel,
    ExpireDue,
    ExpireThenCheck,
    NextExpiry,
    ReadBook,
    Recheck,
    Reserved,
    Submit,
)
from miniexchange.actors.read_index import ReadIndex
from miniexchange.actors.symbol import SymbolActor, SymbolContext
from miniexchange.journal import facts
from miniexchange.journal.store import Durable, Journal, MemoryJournal
from miniexchange.model.book import Level, OrderBook
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, SubmitOrder
from miniexchange.model.engine import BookView, SymbolState
from miniexchange.model.errors import ExchangeError
from miniexchange.model.events import Event, OrderClosed, TradeExecuted
from miniexchange.model.ledger import SettlementLeg
from miniexchange.model.orders import (
    CANCELLED,
    EXPIRED,
    FILLED,
    PARTIALLY_FILLED,
    PENDING,
    Order,
    Trade,
)
from miniexchange.testing import (
    Accept,
    FakeAccountActor,
    ManualClock,
    Release,
    Replies,
    ReserveCash,
    ReserveShares,
    SequentialIds,
    Settle,
)
from tests.actors.conftest import SECOND, T0, WAIT_S, RecordingActor, oid, recorded, tid

SYMBOL = "AAPL"
DOC = "12345678900"
HOUR = 3600 * SECOND
E1 = T0 + HOUR  # default expiry
E2 = T0 + 2 * HOUR


def limit(
    side: str, price: int, quantity: int, broker_id: str, expires_at: int = E1
) -> SubmitOrder:
    return SubmitOrder(LIMIT, broker_id, DOC, side, SYMBOL, quantity, price, expires_at)


def market(side: str, quantity: int, broker_id: str) -> SubmitOrder:
    return SubmitOrder(MARKET, broker_id, DOC, side, SYMBOL, quantity)


class OrderedFakeAccountActor(FakeAccountActor):
    """A `FakeAccountActor` that also notes, at each `Recheck`, every broker's records as
    they stood when it arrived: what was told to the account actor before it."""

    def __init__(self) -> None:
        super().__init__()
        self.before_recheck: list[dict[str, list[Any]]] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Recheck):
            self.before_recheck.append(
                {broker_id: list(records) for broker_id, records in self.changes.items()}
            )
        return super().on_receive(message)


@dataclass
class Venue:
    """One symbol actor and everything it talks to."""

    clock: ManualClock
    read_index: ReadIndex
    context: SymbolContext
    actor: pykka.ActorRef[Any]
    clock_actor: pykka.ActorRef[Any]
    accounts: pykka.ActorRef[OrderedFakeAccountActor]  # every broker's account actor
    batches: list[list[Event]] = field(default_factory=list)

    def add_broker(self, broker_id: str, *, reserve: bool = True) -> None:
        """A broker the fake account actor knows; `reserve=False`: its holds are refused."""
        self.accounts.proxy().add_broker(broker_id, reserve).get(timeout=WAIT_S)

    def answer(self, message: Submit | Reserved | Cancel, replies: Replies) -> Any:
        self.actor.tell(message)
        answer = replies.get(timeout=WAIT_S)
        self.settle_down()
        if isinstance(answer, Exception) and not isinstance(answer, ExchangeError):
            raise answer  # a bug in the actor: show it
        return answer

    def submit(self, command: SubmitOrder) -> Order:
        replies = Replies()
        answer = self.answer(arriving(command, replies), replies)
        assert isinstance(answer, Order), answer
        return answer

    def refuse(self, command: SubmitOrder) -> ExchangeError:
        replies = Replies()
        answer = self.answer(arriving(command, replies), replies)
        assert isinstance(answer, ExchangeError), answer
        return answer

    def cancel(self, order_id: str) -> Order:
        replies = Replies()
        answer = self.answer(Cancel(order_id, replies), replies)
        assert isinstance(answer, Order), answer
        return answer

    def refuse_cancel(self, order_id: str) -> ExchangeError:
        replies = Replies()
        answer = self.answer(Cancel(order_id, replies), replies)
        assert isinstance(answer, ExchangeError), answer
        return answer

    def settle_down(self) -> None:
        """Wait until the actor has finished its current message (a step's `Apply`,
        `Recheck` and events leave before its reply, once its facts are durable)."""
        self.actor.proxy().symbol.get(timeout=WAIT_S)

    def expire(self) -> None:
        """Deliver `ExpireDue` and wait until it has been handled."""
        self.actor.ask(ExpireDue(), timeout=WAIT_S)

    def sent_to(self, broker_id: str) -> list[Any]:
        """The holds asked of and changes told to the broker's account actor, in order.

        A step's `Apply` is told before its reply, so this ask, queued after it in the
        fake's mailbox, sees it."""
        return self.accounts.proxy().recorded(broker_id).get(timeout=WAIT_S)

    def rechecked(self) -> list[Recheck]:
        return self.accounts.proxy().rechecked.get(timeout=WAIT_S)

    def before_recheck(self) -> list[dict[str, list[Any]]]:
        return self.accounts.proxy().before_recheck.get(timeout=WAIT_S)

    def announcements(self) -> list[NextExpiry]:
        return recorded(self.clock_actor)

    def book(self) -> OrderBook:
        """The actor's book, read while the actor is idle (after it answered)."""
        return self.actor.proxy().book.get(timeout=WAIT_S)

    def levels(self) -> tuple[list[Level], list[Level]]:
        book = self.book()
        return book.levels(BID, 50), book.levels(ASK, 50)


def arriving(command: SubmitOrder, replies: Replies) -> Submit | Reserved:
    """An order as it reaches its symbol actor: a limit order from R1, which held its
    funds (`Reserved`); a market order straight from the HTTP layer (`Submit`)."""
    submit = Submit(command, replies)
    return Reserved(submit) if command.type == LIMIT else submit


def start_venue(
    clock: ManualClock,
    ids: SequentialIds,
    journal: Journal | None = None,
    orders: tuple[Order, ...] = (),
) -> Venue:
    read_index = ReadIndex()
    batches: list[list[Event]] = []
    clock_actor = RecordingActor.start()
    accounts = OrderedFakeAccountActor.start()
    context = SymbolContext(
        clock=clock,
        ids=ids,
        read_index=read_index,
        accounts=lambda broker_id: accounts,
        journal=journal if journal is not None else MemoryJournal(),
        clock_actor=clock_actor,
        listeners=(EventsTo(batches.append),),
    )
    actor = SymbolActor.start(SYMBOL, context, SymbolState(SYMBOL, context.vwap_window_us, orders))
    return Venue(clock, read_index, context, actor, clock_actor, accounts, batches)


@pytest.fixture
def venue(clock: ManualClock, ids: SequentialIds) -> Venue:
    return start_venue(clock, ids)


def order(
    n: int,
    broker_id: str,
    side: str,
    price: int | None,
    quantity: int,
    *,
    created_at: int = T0,
    expires_at: int | None = E1,
    trades: tuple[Trade, ...] = (),
    status: str | None = None,
    cancelled: int = 0,
    cancelled_at: int | None = None,
    expired_at: int | None = None,
    type: str = LIMIT,
) -> Order:
    """The expected state of order n, its quantities derived from its trades."""
    filled = sum(trade.quantity for trade in trades)
    remaining = quantity - filled - cancelled
    if status is None:
        status = FILLED if not remaining else PARTIALLY_FILLED if filled else PENDING
    return Order(
        oid(n),
        type,
        broker_id,
        DOC,
        side,
        SYMBOL,
        price,
        quantity,
        filled,
        remaining,
        cancelled,
        status,
        expires_at,
        created_at,
        cancelled_at,
        expired_at,
        trades,
        sum(trade.price * trade.quantity for trade in trades),
    )


def trade(
    n: int, price: int, quantity: int, bid: tuple[int, str], ask: tuple[int, str], at: int
) -> Trade:
    """Trade n between bid (order n, broker) and ask (order n, broker)."""
    return Trade(tid(n), SYMBOL, price, quantity, at, oid(bid[0]), oid(ask[0]), bid[1], ask[1])


# -- limit orders ---------------------------------------------------------------------


def test_a_limit_bid_that_rests_is_accepted_and_published(venue: Venue) -> None:
    venue.add_broker("buyer")
    placed = venue.submit(limit(BID, 150_00, 100, "buyer"))

    assert placed == order(1, "buyer", BID, 150_00, 100)
    assert placed.status == PENDING
    assert venue.sent_to("buyer") == [Accept()]  # its value was held by R1, not here
    assert venue.sent_to("buyer")[0].at == T0
    assert venue.read_index.get(oid(1)) == placed
    assert venue.read_index.broker_order_ids("buyer") == [oid(1)]
    assert venue.batches == []
    assert venue.announcements() == [NextExpiry(SYMBOL, E1)]
    assert venue.context.known_symbols == {SYMBOL}
    assert venue.levels() == ([Level(150_00, 100, 1)], [])


def test_a_limit_ask_that_rests_is_accepted(venue: Venue) -> None:
    venue.add_broker("seller")
    placed = venue.submit(limit(ASK, 148_00, 60, "seller"))

    assert placed == order(1, "seller", ASK, 148_00, 60)
    assert venue.sent_to("seller") == [Accept()]  # its shares were held by R1
    assert venue.levels() == ([], [Level(148_00, 60, 1)])


def test_a_crossing_limit_bid_reserves_at_its_price_and_settles_at_the_ask_price(
    venue: Venue, clock: ManualClock
) -> None:
    """A bid that crosses a cheaper ask: 100 @ 150.00 against 60 @ 148.00."""
    venue.add_broker("buyer")
    venue.add_broker("seller")
    venue.submit(limit(ASK, 148_00, 60, "seller"))
    t1 = clock.advance(seconds=1)
    placed = venue.submit(limit(BID, 150_00, 100, "buyer", expires_at=E2))

    executed = trade(3, 148_00, 60, (2, "buyer"), (1, "seller"), t1)
    bid_after = order(
        2, "buyer", BID, 150_00, 100, created_at=t1, expires_at=E2, trades=(executed,)
    )
    ask_after = order(1, "seller", ASK, 148_00, 60, trades=(executed,))
    assert placed == bid_after
    assert (placed.status, placed.filled_quantity, placed.remaining_quantity) == (
        PARTIALLY_FILLED,
        60,
        40,
    )
    assert placed.average_price == 148_00
    # R1 held 150.00 × 100, its own limit price: the fill frees 150.00 × 60 of it.
    assert venue.sent_to("buyer") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(BID, 60, value=888_000, release=900_000),)),
    ]
    assert venue.sent_to("seller") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(ASK, 60, value=888_000, release=0),)),
    ]
    assert venue.batches == [
        [TradeExecuted(executed, bid_after), TradeExecuted(executed, ask_after)]
    ]
    # Every broker message carries the time of the step that sent it (for `updated_at`).
    assert [message.at for message in venue.sent_to("buyer")] == [t1, t1]
    assert [message.at for message in venue.sent_to("seller")] == [T0, t1]
    assert venue.read_index.get(oid(1)) == ask_after
    assert ask_after.status == FILLED
    assert venue.read_index.get(oid(2)) == bid_after
    assert venue.levels() == ([Level(150_00, 40, 1)], [])
    assert venue.announcements() == [NextExpiry(SYMBOL, E1), NextExpiry(SYMBOL, E2)]


def test_a_limit_bid_sweeps_levels_with_events_in_match_order(
    venue: Venue, clock: ManualClock
) -> None:
    for broker_id in ("buyer", "s1", "s2", "s3"):
        venue.add_broker(broker_id)
    venue.submit(limit(ASK, 148_00, 30, "s1"))
    venue.submit(limit(ASK, 149_00, 50, "s2"))
    venue.submit(limit(ASK, 151_00, 10, "s3"))  # not price-compatible: stops the loop
    t1 = clock.advance(seconds=1)
    placed = venue.submit(limit(BID, 150_00, 60, "buyer"))

    first = trade(5, 148_00, 30, (4, "buyer"), (1, "s1"), t1)
    second = trade(6, 149_00, 30, (4, "buyer"), (2, "s2"), t1)
    assert placed == order(4, "buyer", BID, 150_00, 60, created_at=t1, trades=(first, second))
    assert placed.status == FILLED
    assert placed.average_price == 148_50
    assert venue.batches == [
        [
            TradeExecuted(
                first, order(4, "buyer", BID, 150_00, 60, created_at=t1, trades=(first,))
            ),
            TradeExecuted(first, order(1, "s1", ASK, 148_00, 30, trades=(first,))),
            TradeExecuted(second, placed),
            TradeExecuted(second, order(2, "s2", ASK, 149_00, 50, trades=(second,))),
        ]
    ]
    assert venue.batches[0][0].order.status == PARTIALLY_FILLED
    assert venue.sent_to("buyer") == [
        Accept(),
        Settle(
            SYMBOL,
            (SettlementLeg(BID, 30, 444_000, 450_000), SettlementLeg(BID, 30, 447_000, 450_000)),
        ),
    ]
    assert venue.sent_to("s1") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(ASK, 30, 444_000, 0),)),
    ]
    assert venue.sent_to("s2") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(ASK, 30, 447_000, 0),)),
    ]
    assert venue.sent_to("s3") == [Accept()]
    assert venue.levels() == ([], [Level(149_00, 20, 1), Level(151_00, 10, 1)])
    assert venue.read_index.get(oid(2)) == order(2, "s2", ASK, 149_00, 50, trades=(second,))


def test_a_crossing_limit_ask_trades_at_its_own_price(venue: Venue, clock: ManualClock) -> None:
    venue.add_broker("buyer")
    venue.add_broker("seller")
    venue.submit(limit(BID, 150_00, 100, "buyer"))
    t1 = clock.advance(seconds=1)
    placed = venue.submit(limit(ASK, 148_00, 60, "seller"))

    executed = trade(3, 148_00, 60, (1, "buyer"), (2, "seller"), t1)
    assert placed == order(2, "seller", ASK, 148_00, 60, created_at=t1, trades=(executed,))
    assert venue.sent_to("buyer") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(BID, 60, value=888_000, release=900_000),)),
    ]
    assert venue.sent_to("seller") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(ASK, 60, value=888_000, release=0),)),
    ]
    resting_after = order(1, "buyer", BID, 150_00, 100, trades=(executed,))
    # Bid side first, then ask side, whichever was incoming.
    assert venue.batches == [
        [TradeExecuted(executed, resting_after), TradeExecuted(executed, placed)]
    ]
    assert venue.levels() == ([Level(150_00, 40, 1)], [])


def test_a_self_trade_settles_both_legs_to_the_one_broker(venue: Venue) -> None:
    venue.add_broker("solo")
    venue.submit(limit(ASK, 100_00, 10, "solo"))
    placed = venue.submit(limit(BID, 100_00, 10, "solo"))

    assert placed.status == FILLED
    assert venue.sent_to("solo") == [
        Accept(),  # the ask
        Accept(),  # the bid
        Settle(
            SYMBOL,
            (SettlementLeg(BID, 10, 100_000, 100_000), SettlementLeg(ASK, 10, 100_000, 0)),
        ),
    ]
    [events] = venue.batches
    assert [(event.order.order_id, event.order.broker_id) for event in events] == [
        (oid(2), "solo"),
        (oid(1), "solo"),
    ]


# -- market orders --------------------------------------------------------------------


def test_a_market_bid_reserves_the_exact_sweep_cost(venue: Venue, clock: ManualClock) -> None:
    for broker_id in ("buyer", "s1", "s2"):
        venue.add_broker(broker_id)
    venue.submit(limit(ASK, 148_00, 70, "s1"))
    venue.submit(limit(ASK, 150_00, 50, "s2"))
    t1 = clock.advance(seconds=1)
    placed = venue.submit(market(BID, 100, "buyer"))

    first = trade(4, 148_00, 70, (3, "buyer"), (1, "s1"), t1)
    second = trade(5, 150_00, 30, (3, "buyer"), (2, "s2"), t1)
    assert placed == order(
        3,
        "buyer",
        BID,
        None,
        100,
        created_at=t1,
        expires_at=None,
        trades=(first, second),
        type=MARKET,
    )
    assert placed.status == FILLED
    assert placed.average_price == 148_60
    assert venue.sent_to("buyer") == [
        ReserveCash(1_486_000),  # 148.00 × 70 + 150.00 × 30, held by its own `Hold` ask
        Accept(),
        Settle(
            SYMBOL,
            (
                SettlementLeg(BID, 70, 1_036_000, 1_036_000),
                SettlementLeg(BID, 30, 450_000, 450_000),
            ),
        ),
    ]
    # The hold is asked (no time); the acceptance and settlement carry the step's time.
    assert [message.at for message in venue.sent_to("buyer")] == [None, t1, t1]
    assert venue.sent_to("s2") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(ASK, 30, 450_000, 0),)),
    ]
    assert venue.levels() == ([], [Level(150_00, 20, 1)])
    assert venue.read_index.get(oid(3)) == placed
    assert venue.read_index.broker_order_ids("buyer") == [oid(3)]


def test_a_market_bid_with_an_ioc_remainder_releases_nothing(
    venue: Venue, clock: ManualClock
) -> None:
    for broker_id in ("buyer", "s1", "s2"):
        venue.add_broker(broker_id)
    venue.submit(limit(ASK, 148_00, 70, "s1"))
    venue.submit(limit(ASK, 150_00, 50, "s2"))
    t1 = clock.advance(seconds=1)
    placed = venue.submit(market(BID, 150, "buyer"))

    first = trade(4, 148_00, 70, (3, "buyer"), (1, "s1"), t1)
    second = trade(5, 150_00, 50, (3, "buyer"), (2, "s2"), t1)
    assert placed == order(
        3,
        "buyer",
        BID,
        None,
        150,
        created_at=t1,
        expires_at=None,
        trades=(first, second),
        cancelled=30,
        status=CANCELLED,
        type=MARKET,
    )
    # The sweep cost is of what the book holds (120 shares); fills spend all of it.
    assert venue.sent_to("buyer") == [
        ReserveCash(1_786_000),
        Accept(),
        Settle(
            SYMBOL,
            (
                SettlementLeg(BID, 70, 1_036_000, 1_036_000),
                SettlementLeg(BID, 50, 750_000, 750_000),
            ),
        ),
    ]
    [events] = venue.batches
    assert [type(event) for event in events] == [TradeExecuted] * 4  # no OrderClosed
    assert venue.levels() == ([], [])
    assert venue.announcements() == [NextExpiry(SYMBOL, E1), NextExpiry(SYMBOL, None)]


def test_a_market_ask_with_an_ioc_remainder_releases_the_unsold_shares(
    venue: Venue, clock: ManualClock
) -> None:
    for broker_id in ("seller", "b1", "b2"):
        venue.add_broker(broker_id)
    venue.submit(limit(BID, 150_00, 30, "b1"))
    venue.submit(limit(BID, 149_00, 20, "b2", expires_at=E2))
    t1 = clock.advance(seconds=1)
    placed = venue.submit(market(ASK, 80, "seller"))

    first = trade(4, 150_00, 30, (1, "b1"), (3, "seller"), t1)
    second = trade(5, 149_00, 20, (2, "b2"), (3, "seller"), t1)
    assert placed == order(
        3,
        "seller",
        ASK,
        None,
        80,
        created_at=t1,
        expires_at=None,
        trades=(first, second),
        cancelled=30,
        status=CANCELLED,
        type=MARKET,
    )
    assert (placed.filled_quantity, placed.cancelled_quantity, placed.average_price) == (
        50,
        30,
        149_60,
    )
    assert venue.sent_to("seller") == [
        ReserveShares(SYMBOL, 80),
        Accept(),
        Settle(SYMBOL, (SettlementLeg(ASK, 30, 450_000, 0), SettlementLeg(ASK, 20, 298_000, 0))),
        Release(symbol=SYMBOL, quantity=30),
    ]
    assert [message.at for message in venue.sent_to("seller")] == [None, t1, t1, t1]
    assert venue.sent_to("b1") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(BID, 30, 450_000, 450_000),)),
    ]
    assert venue.sent_to("b2") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(BID, 20, 298_000, 298_000),)),
    ]
    seller_mid = order(
        3, "seller", ASK, None, 80, created_at=t1, expires_at=None, trades=(first,), type=MARKET
    )
    seller_last = order(
        3,
        "seller",
        ASK,
        None,
        80,
        created_at=t1,
        expires_at=None,
        trades=(first, second),
        type=MARKET,
    )
    assert venue.batches == [
        [
            TradeExecuted(first, order(1, "b1", BID, 150_00, 30, trades=(first,))),
            TradeExecuted(first, seller_mid),
            TradeExecuted(second, order(2, "b2", BID, 149_00, 20, expires_at=E2, trades=(second,))),
            TradeExecuted(second, seller_last),
        ]
    ]
    assert seller_last.status == PARTIALLY_FILLED  # the state right after that trade
    assert venue.announcements() == [NextExpiry(SYMBOL, E1), NextExpiry(SYMBOL, None)]
    assert venue.levels() == ([], [])


def test_a_market_order_on_an_empty_side_has_no_liquidity(venue: Venue) -> None:
    venue.add_broker("buyer")
    venue.add_broker("broke", reserve=False)
    venue.submit(limit(BID, 150_00, 10, "buyer"))  # the bid side does not serve a bid

    refusal = venue.refuse(market(BID, 10, "buyer"))
    assert (refusal.code, refusal.message) == (
        "no_liquidity",
        "No matching orders available for market order on AAPL",
    )
    # Liquidity is checked before funds: no hold is even asked for.
    refusal = venue.refuse(market(BID, 10, "broke"))
    assert refusal.code == "no_liquidity"
    assert venue.sent_to("broke") == []
    assert venue.sent_to("buyer") == [Accept()]
    assert list(venue.read_index.orders) == [oid(1)]


def test_a_market_ask_on_an_empty_book_creates_nothing(venue: Venue) -> None:
    venue.add_broker("seller")
    refusal = venue.refuse(market(ASK, 10, "seller"))
    assert (refusal.code, refusal.message) == (
        "no_liquidity",
        "No matching orders available for market order on AAPL",
    )
    assert venue.sent_to("seller") == []
    assert venue.read_index.orders == {}
    assert venue.context.known_symbols == set()
    assert venue.batches == []
    assert venue.announcements() == []


# -- refusals -------------------------------------------------------------------------


def test_a_market_bid_without_cash_for_the_sweep_is_refused(venue: Venue) -> None:
    for broker_id in ("s1", "s2"):
        venue.add_broker(broker_id)
    venue.add_broker("poor", reserve=False)
    venue.submit(limit(ASK, 148_00, 70, "s1"))
    venue.submit(limit(ASK, 150_00, 50, "s2"))

    refusal = venue.refuse(market(BID, 100, "poor"))
    assert (refusal.code, refusal.message) == (
        "insufficient_balance",
        "Broker poor has insufficient available cash for this order",
    )
    assert venue.sent_to("poor") == [ReserveCash(1_486_000)]  # asked, refused: no more
    assert venue.sent_to("s1") == [Accept()]
    assert venue.sent_to("s2") == [Accept()]
    assert venue.levels() == ([], [Level(148_00, 70, 1), Level(150_00, 50, 1)])
    assert venue.batches == []


def test_a_market_ask_without_shares_is_refused(venue: Venue) -> None:
    venue.add_broker("b1")
    venue.add_broker("poor", reserve=False)
    venue.submit(limit(BID, 150_00, 30, "b1"))

    refusal = venue.refuse(market(ASK, 80, "poor"))
    assert (refusal.code, refusal.message) == (
        "insufficient_holdings",
        "Broker poor has insufficient available quantity of AAPL for this order",
    )
    assert venue.sent_to("poor") == [ReserveShares(SYMBOL, 80)]
    assert venue.sent_to("b1") == [Accept()]
    assert venue.levels() == ([Level(150_00, 30, 1)], [])
    assert venue.batches == []


@pytest.mark.parametrize("offset_us", [0, -1, -HOUR])
def test_expires_at_not_after_acceptance_is_refused_and_gives_the_hold_back(
    venue: Venue, clock: ManualClock, offset_us: int
) -> None:
    venue.add_broker("buyer")
    now = clock.advance(seconds=10)
    refusal = venue.refuse(limit(BID, 150_00, 10, "buyer", expires_at=now + offset_us))
    assert (refusal.code, refusal.message) == (
        "validation_error",
        "expires_at must be a future timestamp",
    )
    # R1 held 150.00 × 10 before it forwarded the order: the order was never created, so
    # its hold comes back at no time (the broker's `updated_at` stays), and nothing else.
    assert venue.sent_to("buyer") == [Release(cash=150_000)]
    assert venue.sent_to("buyer")[0].at is None
    assert venue.read_index.orders == {}
    assert venue.read_index.broker_order_ids("buyer") == []
    assert venue.context.known_symbols == set()
    assert venue.batches == []
    assert venue.announcements() == []
    assert venue.levels() == ([], [])
    # No id was used up by the refused order.
    assert venue.submit(limit(BID, 140_00, 1, "buyer")).order_id == oid(1)


def test_a_limit_ask_refused_by_its_expiry_gives_its_shares_back_and_matches_nothing(
    venue: Venue, clock: ManualClock
) -> None:
    venue.add_broker("buyer")
    venue.add_broker("seller")
    venue.submit(limit(BID, 150_00, 10, "buyer"))
    now = clock.advance(seconds=10)
    refusal = venue.refuse(limit(ASK, 148_00, 10, "seller", expires_at=now))
    assert (refusal.code, refusal.message) == (
        "validation_error",
        "expires_at must be a future timestamp",
    )
    assert venue.sent_to("seller") == [Release(symbol=SYMBOL, quantity=10)]
    assert venue.sent_to("seller")[0].at is None
    assert venue.sent_to("buyer") == [Accept()]  # no trade
    assert list(venue.read_index.orders) == [oid(1)]
    assert venue.read_index.broker_order_ids("seller") == []
    assert venue.batches == []
    assert venue.announcements() == [NextExpiry(SYMBOL, E1)]
    assert venue.levels() == ([Level(150_00, 10, 1)], [])


def test_expires_at_one_microsecond_after_acceptance_is_accepted(
    venue: Venue, clock: ManualClock
) -> None:
    venue.add_broker("buyer")
    now = clock.advance(seconds=10)
    placed = venue.submit(limit(BID, 150_00, 10, "buyer", expires_at=now + 1))
    assert (placed.status, placed.created_at, placed.expires_at) == (PENDING, now, now + 1)
    assert venue.sent_to("buyer") == [Accept()]
    assert venue.sent_to("buyer")[0].at == now


def test_a_market_order_from_an_unknown_broker_is_refused(venue: Venue) -> None:
    """Its account actor refuses the `Hold` ask: the broker does not exist. (A limit
    order's broker is R1's to check.)"""
    venue.add_broker("seller")
    venue.submit(limit(ASK, 148_00, 10, "seller"))

    refusal = venue.refuse(market(BID, 10, "ghost"))
    assert (refusal.code, refusal.message) == ("broker_not_found", "Broker ghost does not exist")
    assert venue.sent_to("ghost") == []
    assert venue.sent_to("seller") == [Accept()]
    assert list(venue.read_index.orders) == [oid(1)]
    assert venue.read_index.broker_order_ids("ghost") == []
    assert venue.batches == []
    assert venue.levels() == ([], [Level(148_00, 10, 1)])
    # The actor goes on serving, and no id was used up.
    venue.add_broker("buyer")
    assert venue.submit(market(BID, 10, "buyer")).order_id == oid(2)


# -- cancel ---------------------------------------------------------------------------


def test_cancelling_a_partly_filled_bid_releases_its_unfilled_value(
    venue: Venue, clock: ManualClock
) -> None:
    venue.add_broker("buyer")
    venue.add_broker("seller")
    venue.submit(limit(BID, 150_00, 100, "buyer"))
    venue.submit(limit(ASK, 150_00, 40, "seller"))
    t5 = clock.advance(seconds=5)
    cancelled = venue.cancel(oid(1))

    executed = trade(3, 150_00, 40, (1, "buyer"), (2, "seller"), T0)
    assert cancelled == order(
        1,
        "buyer",
        BID,
        150_00,
        100,
        trades=(executed,),
        cancelled=60,
        status=CANCELLED,
        cancelled_at=t5,
    )
    assert (cancelled.filled_quantity, cancelled.remaining_quantity) == (40, 0)
    assert cancelled.expired_at is None
    assert venue.sent_to("buyer") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(BID, 40, 600_000, 600_000),)),
        Release(cash=900_000),  # 150.00 × 60 cancelled
    ]
    assert venue.sent_to("buyer")[-1].at == t5
    assert venue.batches[-1] == [OrderClosed(cancelled)]
    assert venue.batches[-1][0].event == "order.cancelled"
    assert venue.read_index.get(oid(1)) == cancelled
    assert venue.levels() == ([], [])
    assert venue.announcements() == [NextExpiry(SYMBOL, E1), NextExpiry(SYMBOL, None)]


def test_cancelling_an_ask_releases_its_shares(venue: Venue, clock: ManualClock) -> None:
    venue.add_broker("seller")
    venue.submit(limit(ASK, 148_00, 25, "seller"))
    t1 = clock.advance(seconds=1)
    cancelled = venue.cancel(oid(1))

    assert cancelled == order(
        1, "seller", ASK, 148_00, 25, cancelled=25, status=CANCELLED, cancelled_at=t1
    )
    assert venue.sent_to("seller") == [
        Accept(),
        Release(symbol=SYMBOL, quantity=25),
    ]
    assert venue.sent_to("seller")[-1].at == t1
    assert venue.batches == [[OrderClosed(cancelled)]]


def test_cancelling_an_unknown_order_is_not_found(venue: Venue) -> None:
    refusal = venue.refuse_cancel("ord-nonexistent")
    assert (refusal.code, refusal.message) == (
        "order_not_found",
        "Order ord-nonexistent does not exist",
    )
    assert venue.batches == []


def test_cancelling_a_filled_limit_order_is_refused(venue: Venue) -> None:
    venue.add_broker("buyer")
    venue.add_broker("seller")
    venue.submit(limit(ASK, 148_00, 60, "seller"))
    venue.submit(limit(BID, 150_00, 60, "buyer"))

    for n in (1, 2):
        refusal = venue.refuse_cancel(oid(n))
        assert (refusal.code, refusal.message) == (
            "order_not_cancellable",
            f"Order {oid(n)} is already filled and cannot be cancelled",
        )
    assert venue.sent_to("buyer") == [  # no release
        Accept(),
        Settle(SYMBOL, (SettlementLeg(BID, 60, 888_000, 900_000),)),
    ]
    assert venue.sent_to("seller") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(ASK, 60, 888_000, 0),)),
    ]
    assert len(venue.batches) == 1  # the trade's events only


def test_cancelling_twice_is_refused_and_releases_once(venue: Venue) -> None:
    venue.add_broker("buyer")
    venue.submit(limit(BID, 150_00, 10, "buyer"))
    venue.cancel(oid(1))

    refusal = venue.refuse_cancel(oid(1))
    assert (refusal.code, refusal.message) == (
        "order_not_cancellable",
        f"Order {oid(1)} is already cancelled",
    )
    assert venue.sent_to("buyer") == [Accept(), Release(cash=150_000)]
    assert len(venue.batches) == 1


def test_cancelling_market_orders_gives_the_message_of_their_status(venue: Venue) -> None:
    venue.add_broker("buyer")
    venue.add_broker("seller")
    venue.submit(limit(ASK, 148_00, 15, "seller"))
    filled = venue.submit(market(BID, 10, "buyer"))
    ioc = venue.submit(market(BID, 10, "buyer"))
    assert (filled.status, ioc.status) == (FILLED, CANCELLED)

    refusal = venue.refuse_cancel(filled.order_id)
    assert (refusal.code, refusal.message) == (
        "order_not_cancellable",
        f"Order {filled.order_id} is already filled and cannot be cancelled",
    )
    refusal = venue.refuse_cancel(ioc.order_id)
    assert (refusal.code, refusal.message) == (
        "order_not_cancellable",
        f"Order {ioc.order_id} is already cancelled",
    )


def test_cancelling_an_expired_order_is_refused(venue: Venue, clock: ManualClock) -> None:
    venue.add_broker("buyer")
    venue.submit(limit(BID, 150_00, 10, "buyer"))
    clock.set(E1)
    venue.expire()

    refusal = venue.refuse_cancel(oid(1))
    assert (refusal.code, refusal.message) == (
        "order_not_cancellable",
        f"Order {oid(1)} is already expired and cannot be cancelled",
    )


def test_cancelling_a_due_order_before_the_sweep_expires_it_first(
    venue: Venue, clock: ManualClock
) -> None:
    venue.add_broker("buyer")
    venue.submit(limit(BID, 150_00, 10, "buyer"))
    clock.set(E1 + 3 * SECOND)

    refusal = venue.refuse_cancel(oid(1))
    assert refusal.message == f"Order {oid(1)} is already expired and cannot be cancelled"
    expired = order(1, "buyer", BID, 150_00, 10, cancelled=10, status=EXPIRED, expired_at=E1)
    assert venue.read_index.get(oid(1)) == expired
    assert venue.batches == [[OrderClosed(expired)]]
    assert venue.sent_to("buyer") == [Accept(), Release(cash=150_000)]
    assert venue.sent_to("buyer")[-1].at == E1 + 3 * SECOND  # the cancel's step


# -- expiry ---------------------------------------------------------------------------


def test_expire_due_expires_at_expires_at_and_releases(venue: Venue, clock: ManualClock) -> None:
    venue.add_broker("buyer")
    venue.submit(limit(BID, 150_00, 100, "buyer"))

    clock.set(E1 - 1)
    venue.expire()
    assert venue.batches == []
    assert venue.read_index.get(oid(1)).status == PENDING  # type: ignore[union-attr]
    assert venue.sent_to("buyer") == [Accept()]

    clock.advance(microseconds=1)  # now == expires_at: due
    venue.expire()
    expired = order(1, "buyer", BID, 150_00, 100, cancelled=100, status=EXPIRED, expired_at=E1)
    assert venue.read_index.get(oid(1)) == expired
    assert (expired.remaining_quantity, expired.cancelled_at) == (0, None)
    assert venue.sent_to("buyer") == [Accept(), Release(cash=1_500_000)]
    assert venue.batches == [[OrderClosed(expired)]]
    assert venue.batches[0][0].event == "order.expired"
    assert venue.sent_to("buyer")[-1].at == E1  # the time of the sweep step
    assert venue.levels() == ([], [])
    assert venue.announcements() == [NextExpiry(SYMBOL, E1), NextExpiry(SYMBOL, None)]


def test_a_late_sweep_still_records_expires_at(venue: Venue, clock: ManualClock) -> None:
    venue.add_broker("seller")
    venue.add_broker("buyer")
    venue.submit(limit(ASK, 148_00, 60, "seller"))
    venue.submit(limit(BID, 148_00, 20, "buyer"))  # fills 20 of the ask
    clock.set(E1 + 30 * SECOND)
    venue.expire()

    expired = venue.read_index.get(oid(1))
    assert expired is not None
    assert (expired.status, expired.expired_at, expired.filled_quantity) == (EXPIRED, E1, 20)
    assert expired.cancelled_quantity == 40
    assert venue.sent_to("seller") == [
        Accept(),
        Settle(SYMBOL, (SettlementLeg(ASK, 20, 296_000, 0),)),
        Release(symbol=SYMBOL, quantity=40),  # only the unfilled part
    ]
    assert venue.sent_to("seller")[-1].at == E1 + 30 * SECOND  # the sweep, not expires_at


def test_due_orders_expire_in_expires_at_order(venue: Venue, clock: ManualClock) -> None:
    venue.add_broker("buyer")
    venue.submit(limit(BID, 150_00, 1, "buyer", expires_at=E1 + 2 * SECOND))
    venue.submit(limit(BID, 149_00, 1, "buyer", expires_at=E1 + 1 * SECOND))
    venue.submit(limit(BID, 148_00, 1, "buyer", expires_at=E1 + 10 * SECOND))
    clock.set(E1 + 5 * SECOND)
    venue.expire()

    [events] = venue.batches
    assert [(event.order.order_id, event.order.expired_at) for event in events] == [
        (oid(2), E1 + 1 * SECOND),
        (oid(1), E1 + 2 * SECOND),
    ]
    assert venue.sent_to("buyer") == [
        Accept(),
        Accept(),
        Accept(),
        Release(cash=149_00),
        Release(cash=150_00),
    ]
    assert venue.levels() == ([Level(148_00, 1, 1)], [])
    assert venue.announcements() == [
        NextExpiry(SYMBOL, E1 + 2 * SECOND),
        NextExpiry(SYMBOL, E1 + 1 * SECOND),
        NextExpiry(SYMBOL, E1 + 10 * SECOND),
    ]


def test_a_due_order_is_expired_before_a_submission_matches(
    venue: Venue, clock: ManualClock
) -> None:
    venue.add_broker("seller")
    venue.add_broker("buyer")
    venue.submit(limit(ASK, 148_00, 60, "seller"))
    clock.set(E1)  # the ask is due, no sweep has run yet
    placed = venue.submit(limit(BID, 150_00, 100, "buyer", expires_at=E2))

    assert placed == order(2, "buyer", BID, 150_00, 100, created_at=E1, expires_at=E2)
    expired = order(1, "seller", ASK, 148_00, 60, cancelled=60, status=EXPIRED, expired_at=E1)
    assert venue.batches == [[OrderClosed(expired)]]  # and no TradeExecuted
    assert venue.sent_to("seller") == [
        Accept(),
        Release(symbol=SYMBOL, quantity=60),
    ]
    assert venue.sent_to("buyer") == [Accept()]
    assert venue.sent_to("buyer")[0].at == E1
    assert venue.levels() == ([Level(150_00, 100, 1)], [])
    assert venue.announcements() == [NextExpiry(SYMBOL, E1), NextExpiry(SYMBOL, E2)]


def test_a_refused_market_order_still_expires_the_due_orders(
    venue: Venue, clock: ManualClock
) -> None:
    venue.add_broker("seller")
    venue.add_broker("buyer")
    venue.submit(limit(ASK, 148_00, 60, "seller"))
    clock.set(E1)
    refusal = venue.refuse(market(BID, 10, "buyer"))

    assert refusal.code == "no_liquidity"
    expired = order(1, "seller", ASK, 148_00, 60, cancelled=60, status=EXPIRED, expired_at=E1)
    assert venue.batches == [[OrderClosed(expired)]]
    assert venue.sent_to("seller") == [
        Accept(),
        Release(symbol=SYMBOL, quantity=60),
    ]
    assert venue.sent_to("buyer") == []
    assert venue.announcements() == [NextExpiry(SYMBOL, E1), NextExpiry(SYMBOL, None)]


def test_next_expiry_is_announced_only_when_the_earliest_changes(venue: Venue) -> None:
    venue.add_broker("buyer")
    venue.submit(limit(BID, 150_00, 1, "buyer", expires_at=E2))  # oid 1
    venue.submit(limit(BID, 150_00, 1, "buyer", expires_at=E1))  # oid 2: earlier
    venue.submit(limit(BID, 150_00, 1, "buyer", expires_at=E2 + HOUR))  # oid 3: later
    venue.submit(limit(BID, 150_00, 1, "buyer", expires_at=E1))  # oid 4: same earliest
    venue.cancel(oid(2))  # E1 still held by oid 4
    venue.cancel(oid(4))
    venue.cancel(oid(1))
    venue.cancel(oid(3))

    assert venue.announcements() == [
        NextExpiry(SYMBOL, E2),
        NextExpiry(SYMBOL, E1),
        NextExpiry(SYMBOL, E2),
        NextExpiry(SYMBOL, E2 + HOUR),
        NextExpiry(SYMBOL, None),
    ]


def test_an_expire_due_with_nothing_due_changes_nothing(venue: Venue) -> None:
    venue.add_broker("buyer")
    venue.submit(limit(BID, 150_00, 1, "buyer"))
    venue.expire()
    assert venue.batches == []
    assert venue.announcements() == [NextExpiry(SYMBOL, E1)]
    assert venue.sent_to("buyer") == [Accept()]


def test_expire_then_check_expires_the_due_orders_then_sends_the_order_back(
    venue: Venue, clock: ManualClock
) -> None:
    """R1 could not hold a limit order's funds while the broker holds some on the symbol:
    the symbol actor expires its due orders, then sends the order back (`Recheck`) after
    their releases, for R1's final check. It neither accepts nor answers the order."""
    venue.add_broker("buyer")
    venue.add_broker("seller")
    venue.submit(limit(BID, 140_00, 100, "buyer"))  # oid 1, due at E1
    venue.submit(limit(ASK, 150_00, 30, "seller"))  # oid 2, due at E1
    venue.submit(limit(BID, 139_00, 5, "buyer", expires_at=E2))  # oid 3, not due
    clock.set(E1)
    replies = Replies()
    submit = Submit(limit(BID, 145_00, 50, "buyer", expires_at=E2), replies)
    venue.actor.tell(ExpireThenCheck(submit))
    venue.settle_down()

    released = {
        "buyer": [Accept(), Accept(), Release(cash=1_400_000)],  # 140.00 × 100
        "seller": [Accept(), Release(symbol=SYMBOL, quantity=30)],
    }
    assert venue.sent_to("buyer") == released["buyer"]
    assert venue.sent_to("seller") == released["seller"]
    assert venue.sent_to("buyer")[-1].at == E1  # the time of the step
    assert venue.sent_to("seller")[-1].at == E1
    assert venue.rechecked() == [Recheck(submit)]
    assert venue.rechecked()[0].submit is submit
    # The releases were told before the order came back.
    assert venue.before_recheck() == [released]
    expired_bid = order(1, "buyer", BID, 140_00, 100, cancelled=100, status=EXPIRED, expired_at=E1)
    expired_ask = order(2, "seller", ASK, 150_00, 30, cancelled=30, status=EXPIRED, expired_at=E1)
    assert venue.batches == [[OrderClosed(expired_bid), OrderClosed(expired_ask)]]
    assert venue.read_index.get(oid(1)) == expired_bid
    assert venue.read_index.get(oid(2)) == expired_ask
    assert venue.read_index.broker_order_ids("buyer") == [oid(1), oid(3)]
    assert venue.levels() == ([Level(139_00, 5, 1)], [])
    assert venue.announcements() == [NextExpiry(SYMBOL, E1), NextExpiry(SYMBOL, E2)]
    with pytest.raises(queue.Empty):  # R1 answers it, after its final check
        replies.get(timeout=0)
    # No order was created for it: no id used up.
    assert venue.submit(limit(BID, 145_00, 1, "buyer", expires_at=E2)).order_id == oid(4)


def test_expire_then_check_with_nothing_due_sends_the_order_straight_back(
    clock: ManualClock, ids: SequentialIds
) -> None:
    journal = RecordingJournal()
    venue = start_venue(clock, ids, journal)
    venue.add_broker("buyer")
    venue.submit(limit(BID, 140_00, 100, "buyer"))
    clock.set(E1 - 1)
    replies = Replies()
    submit = Submit(limit(BID, 145_00, 50, "buyer", expires_at=E2), replies)
    venue.actor.tell(ExpireThenCheck(submit))
    venue.settle_down()

    assert venue.rechecked() == [Recheck(submit)]
    assert venue.before_recheck() == [{"buyer": [Accept()]}]
    assert venue.sent_to("buyer") == [Accept()]
    assert journal.appends == [[facts.ORDER_ACCEPTED]]  # the step had nothing to record
    assert venue.batches == []
    assert venue.levels() == ([Level(140_00, 100, 1)], [])
    assert venue.announcements() == [NextExpiry(SYMBOL, E1)]
    with pytest.raises(queue.Empty):
        replies.get(timeout=0)


# -- journal, reads, restore -----------------------------------------------------------


class RecordingJournal(MemoryJournal):
    """Durable at once, like `MemoryJournal`, and keeps the kinds of each append."""

    keeps_facts = True

    def __init__(self, error: BaseException | None = None) -> None:
        self.appends: list[list[str]] = []
        self.error = error

    def append(self, appended: Sequence[facts.Fact], done: Durable) -> None:
        self.appends.append([kind for kind, _ in appended])
        done(self.error)


def test_each_write_journals_its_facts_in_one_append(
    clock: ManualClock, ids: SequentialIds
) -> None:
    journal = RecordingJournal()
    venue = start_venue(clock, ids, journal)
    venue.add_broker("buyer")
    venue.add_broker("seller")
    venue.submit(limit(ASK, 148_00, 60, "seller"))
    venue.submit(limit(BID, 150_00, 100, "buyer"))
    venue.cancel(oid(2))
    venue.refuse(market(BID, 10, "buyer"))  # no_liquidity: nothing to record

    assert journal.appends == [
        [facts.ORDER_ACCEPTED],
        [facts.ORDER_ACCEPTED, facts.TRADE_EXECUTED],
        [facts.ORDER_CANCELLED],
    ]


class FactlessJournal(RecordingJournal):
    """Like `MemoryJournal`: nothing reads the facts, so none should be made."""

    keeps_facts = False


def test_without_persistence_steps_append_no_facts_and_still_publish(
    clock: ManualClock, ids: SequentialIds
) -> None:
    journal = FactlessJournal()
    venue = start_venue(clock, ids, journal)
    venue.add_broker("buyer")
    venue.add_broker("seller")
    venue.submit(limit(ASK, 148_00, 60, "seller"))
    placed = venue.submit(limit(BID, 150_00, 100, "buyer"))
    cancelled = venue.cancel(oid(2))

    assert journal.appends == [[], [], []]  # each step still waits its turn, factless
    assert venue.read_index.get(oid(1)).status == FILLED  # type: ignore[union-attr]
    assert placed.status == PARTIALLY_FILLED
    assert venue.read_index.get(oid(2)) == cancelled
    assert len(venue.batches) == 2  # the trade's events, then the cancel's


def test_an_unwritable_journal_refuses_and_publishes_nothing(
    clock: ManualClock, ids: SequentialIds
) -> None:
    venue = start_venue(clock, ids, RecordingJournal(OSError("disk full")))
    venue.add_broker("buyer")
    venue.add_broker("seller")
    refusal = venue.refuse(limit(ASK, 148_00, 60, "seller"))
    assert (refusal.code, refusal.message) == (
        "journal_unavailable",
        "The exchange cannot record this request; retry later",
    )
    assert venue.sent_to("seller") == []  # fail-stop: no account actor is told anything
    assert venue.read_index.orders == {}
    assert venue.read_index.broker_order_ids("seller") == []
    assert venue.batches == []


class DeferredJournal(RecordingJournal):
    """Durable only when the test calls the waiting callback."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Durable] = []

    def append(self, appended: Sequence[facts.Fact], done: Durable) -> None:
        self.appends.append([kind for kind, _ in appended])
        self.waiting.append(done)


def test_a_submission_is_answered_once_durable_and_after_its_changes_are_told(
    clock: ManualClock, ids: SequentialIds
) -> None:
    """An order and a refusal alike: nothing is told or answered before the step's
    append is durable; then the `Apply` goes before the answer, so whoever the answer
    reaches finds the account actor already told."""
    journal = DeferredJournal()
    venue = start_venue(clock, ids, journal)
    venue.add_broker("buyer")
    answered: list[tuple[Any, list[Any]]] = []

    def reply(answer: Any) -> None:  # reads the account actor as it answers
        answered.append((answer, venue.sent_to("buyer")))

    venue.actor.tell(Reserved(Submit(limit(BID, 150_00, 10, "buyer"), reply)))
    venue.actor.tell(Reserved(Submit(limit(BID, 150_00, 20, "buyer", expires_at=T0), reply)))
    venue.settle_down()
    assert journal.appends == [[facts.ORDER_ACCEPTED], []]  # the refusal waits its turn
    assert answered == []
    assert venue.sent_to("buyer") == []
    assert venue.read_index.orders == {}

    accepted, refused = journal.waiting
    accepted(None)
    [(placed, told)] = answered
    assert placed == order(1, "buyer", BID, 150_00, 10)
    assert told == [Accept()]
    refused(None)
    refusal, told = answered[1]
    assert isinstance(refusal, ExchangeError)
    assert refusal.code == "validation_error"
    assert told == [Accept(), Release(cash=300_000)]


def test_a_cancel_refused_for_an_order_it_expired_waits_for_that_expiry(
    clock: ManualClock, ids: SequentialIds
) -> None:
    """Cancelling a due order expires it first; the 409 that says so leaves only once
    the expiry is durable and its release told (before the fix it left at once)."""
    journal = DeferredJournal()
    venue = start_venue(clock, ids, journal)
    venue.add_broker("buyer")
    answered: list[tuple[Any, list[Any]]] = []

    def reply(answer: Any) -> None:
        answered.append((answer, venue.sent_to("buyer")))

    venue.actor.tell(Reserved(Submit(limit(BID, 150_00, 10, "buyer"), reply)))
    venue.settle_down()
    journal.waiting.pop()(None)
    clock.set(E1)
    venue.actor.tell(Cancel(oid(1), reply))
    venue.settle_down()
    assert journal.appends[-1] == [facts.ORDER_EXPIRED]
    assert len(answered) == 1  # only the order's

    journal.waiting.pop()(None)
    refusal, told = answered[1]
    assert isinstance(refusal, ExchangeError)
    assert refusal.message == f"Order {oid(1)} is already expired and cannot be cancelled"
    assert told == [Accept(), Release(cash=150_000)]


def test_a_book_read_expires_the_due_orders_first(venue: Venue, clock: ManualClock) -> None:
    venue.add_broker("seller")
    venue.submit(limit(ASK, 148_00, 60, "seller"))
    clock.set(E1)
    replies = Replies()
    venue.actor.tell(ReadBook(10, replies))
    assert replies.get(timeout=WAIT_S) == BookView([], [], E1)
    venue.settle_down()

    expired = order(1, "seller", ASK, 148_00, 60, cancelled=60, status=EXPIRED, expired_at=E1)
    assert venue.batches == [[OrderClosed(expired)]]
    assert venue.read_index.get(oid(1)) == expired
    assert venue.sent_to("seller") == [
        Accept(),
        Release(symbol=SYMBOL, quantity=60),
    ]


def test_a_restored_symbol_announces_its_next_expiry_and_serves_its_orders(
    clock: ManualClock, ids: SequentialIds
) -> None:
    resting = order(7, "buyer", BID, 150_00, 10, expires_at=E2)
    venue = start_venue(clock, ids, orders=(resting,))
    venue.add_broker("buyer")

    assert venue.announcements() == [NextExpiry(SYMBOL, E2)]
    assert venue.levels() == ([Level(150_00, 10, 1)], [])
    cancelled = venue.cancel(oid(7))
    assert (cancelled.status, cancelled.cancelled_quantity) == (CANCELLED, 10)
    assert venue.sent_to("buyer") == [Release(cash=150_000)]
