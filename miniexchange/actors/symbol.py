"""SymbolActor: the only writer of one symbol's book (contract §3.7).

Each submission, cancellation and expiry is one message handled alone: the atomic
unit. Inside it the actor asks the broker actor to reserve (a blocking ask on this
actor's thread; broker actors never ask back, so it cannot deadlock), runs the match
loop, tells the settlements to the brokers, publishes the new order states, and only
then replies. Webhook events are handed over after the atomic step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pykka

from miniexchange.actors.base import ExchangeActor
from miniexchange.actors.messages import (
    Cancel,
    ExpireDue,
    NextExpiry,
    ReadBook,
    ReadPrice,
    ReadQuote,
    Release,
    ReserveCash,
    ReserveShares,
    Settle,
    Submit,
)
from miniexchange.actors.read_index import ReadIndex
from miniexchange.clock import Clock
from miniexchange.ids import IdFactory
from miniexchange.model.book import Level, MatchResult, OrderBook
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, SubmitOrder
from miniexchange.model.errors import (
    broker_not_found,
    insufficient_balance,
    insufficient_holdings,
    no_liquidity,
    not_cancellable,
    order_not_found,
    validation_error,
)
from miniexchange.model.events import Event, OrderClosed, TradeExecuted
from miniexchange.model.orders import Order, new_order
from miniexchange.model.settlement import cash_to_reserve, released_by, settlement_legs
from miniexchange.model.vwap import Price, TradeWindow

EventSink = Callable[[list[Event]], None]


@dataclass(frozen=True, slots=True)
class BookView:
    """The L2 book between two writes: levels best first, read at `snapshot_at`."""

    bids: list[Level]
    asks: list[Level]
    snapshot_at: int


@dataclass(frozen=True, slots=True)
class QuoteView:
    levels: list[Level]  # what a market order would take, in walking order
    quoted_at: int


def ignore_events(events: list[Event]) -> None:
    """The event sink used when no webhook dispatcher is attached."""


@dataclass(slots=True)
class SymbolContext:
    """What every symbol actor of one exchange shares."""

    clock: Clock
    ids: IdFactory
    read_index: ReadIndex
    brokers: Callable[[str], pykka.ActorRef | None]
    vwap_window_us: int = 300_000_000
    clock_actor: pykka.ActorRef | None = None
    events: EventSink = ignore_events
    known_symbols: set[str] = field(default_factory=set)


class SymbolActor(ExchangeActor):
    def __init__(self, symbol: str, context: SymbolContext) -> None:
        super().__init__()
        self.symbol = symbol
        self.book = OrderBook(symbol)
        self.context = context
        self.trades = TradeWindow(context.vwap_window_us)
        self._announced_expiry: int | None = None

    # -- handlers ----------------------------------------------------------------

    def _submit(self, message: Submit) -> Order:
        command = message.command
        context = self.context
        now = context.clock.now()
        events: list[Event] = []
        try:
            self._expire_due(now, events)
            result = self._accept_and_match(command, now)
            for fill in result.fills:
                events.append(TradeExecuted(fill.trade, fill.bid))
                events.append(TradeExecuted(fill.trade, fill.ask))
        finally:
            self._after_write(events)
        return result.order

    def _accept_and_match(self, command: SubmitOrder, now: int) -> MatchResult:
        book = self.book
        context = self.context
        if command.type == LIMIT and command.expires_at <= now:  # type: ignore[operator]
            raise validation_error("expires_at must be a future timestamp")
        broker = context.brokers(command.broker_id)
        if broker is None:  # registration is permanent; the HTTP layer checked it
            raise broker_not_found(command.broker_id)
        if command.type == MARKET and not book.has_liquidity_for(command.side):
            raise no_liquidity(self.symbol)
        if command.side == BID:
            if not broker.ask(ReserveCash(cash_to_reserve(book, command))):
                raise insufficient_balance(command.broker_id)
        elif not broker.ask(ReserveShares(self.symbol, command.quantity)):
            raise insufficient_holdings(command.broker_id, self.symbol)
        order = new_order(command, context.ids.order_id(), now)
        context.known_symbols.add(self.symbol)
        result = book.submit(order, now, context.ids.trade_id)
        for broker_id, legs in settlement_legs(result).items():
            self._broker(broker_id).tell(Settle(self.symbol, tuple(legs)))
        final = result.order
        if final.cancelled_quantity:  # a market order's IOC remainder
            self._release(final)
        index = context.read_index
        for fill in result.fills:
            self.trades.record(fill.trade)
            index.publish(fill.resting)  # later fills of one resting order overwrite
        index.publish_new(final)
        return result

    def _cancel(self, message: Cancel) -> Order:
        now = self.context.clock.now()
        events: list[Event] = []
        try:
            self._expire_due(now, events)
            cancelled = self.book.cancel(message.order_id, now)
            if cancelled is None:
                current = self.context.read_index.get(message.order_id)
                if current is None:
                    raise order_not_found(message.order_id)
                raise not_cancellable(current.order_id, current.status)
            self._close(cancelled, events)
        finally:
            self._after_write(events)
        return cancelled

    def _expire(self, message: ExpireDue) -> None:
        events: list[Event] = []
        self._expire_due(self.context.clock.now(), events)
        self._after_write(events)

    def _read_book(self, message: ReadBook) -> BookView:
        now = self._expire_for_read()
        book = self.book
        return BookView(book.levels(BID, message.depth), book.levels(ASK, message.depth), now)

    def _read_quote(self, message: ReadQuote) -> QuoteView:
        now = self._expire_for_read()
        return QuoteView(self.book.sweep(message.side, message.quantity), now)

    def _read_price(self, message: ReadPrice) -> Price:
        return self.trades.price(self.context.clock.now())

    handlers = {  # noqa: RUF012
        Submit: _submit,
        Cancel: _cancel,
        ExpireDue: _expire,
        ReadBook: _read_book,
        ReadQuote: _read_quote,
        ReadPrice: _read_price,
    }

    # -- steps -------------------------------------------------------------------

    def _expire_for_read(self) -> int:
        """Book and quote reads leave out due orders (§2.6): expire them first."""
        now = self.context.clock.now()
        events: list[Event] = []
        self._expire_due(now, events)
        self._after_write(events)
        return now

    def _expire_due(self, now: int, events: list[Event]) -> None:
        for order in self.book.expire_due(now):
            self._close(order, events)

    def _close(self, order: Order, events: list[Event]) -> None:
        """Release a cancelled or expired order's reservation and publish it."""
        self._release(order)
        self.context.read_index.publish(order)
        events.append(OrderClosed(order))

    def _release(self, order: Order) -> None:
        cash, shares = released_by(order)
        if cash or shares:
            release = Release(cash=cash, symbol=self.symbol if shares else "", quantity=shares)
            self._broker(order.broker_id).tell(release)

    def _broker(self, broker_id: str) -> pykka.ActorRef:
        broker = self.context.brokers(broker_id)
        assert broker is not None, f"broker {broker_id} has orders but no actor"
        return broker

    def _after_write(self, events: list[Event]) -> None:
        """After the atomic step: hand over the events, announce the next expiry."""
        if events:
            self.context.events(events)
        next_expiry = self.book.next_expiry()
        if next_expiry != self._announced_expiry:
            self._announced_expiry = next_expiry
            if self.context.clock_actor is not None:
                self.context.clock_actor.tell(NextExpiry(self.symbol, next_expiry))
