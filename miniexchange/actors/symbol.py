"""SymbolActor: the only writer of one symbol's book (contract §3.7).

Each submission, cancellation and expiry is one message handled alone: the atomic
unit. Inside it the actor reserves with the broker's account (synchronously, under
that account's lock: see `actors.accounts`), runs the match loop and settles each
broker's legs of the pass. What the step decided goes to the journal as facts; once
they are durable (at once without persistence) the new order states are published,
the webhook events leave and the requester gets its answer. The actor itself does not
wait for the disk: it goes on with its next message, and group commit lets one disk
sync cover many steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pykka

from miniexchange.actors.accounts import Account
from miniexchange.actors.base import DEFERRED, ExchangeActor, Reply
from miniexchange.actors.market_data import MarketData
from miniexchange.actors.messages import (
    Cancel,
    ExpireDue,
    NextExpiry,
    ReadBook,
    ReadPrice,
    ReadQuote,
    Submit,
)
from miniexchange.actors.read_index import ReadIndex
from miniexchange.clock import Clock
from miniexchange.ids import IdFactory
from miniexchange.journal import facts
from miniexchange.journal.store import Journal, MemoryJournal
from miniexchange.metrics import Metrics
from miniexchange.model.book import Level, OrderBook
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, SubmitOrder
from miniexchange.model.errors import (
    ExchangeError,
    broker_not_found,
    insufficient_balance,
    insufficient_holdings,
    journal_unavailable,
    no_liquidity,
    not_cancellable,
    order_not_found,
    validation_error,
)
from miniexchange.model.events import Event, OrderClosed, TradeExecuted
from miniexchange.model.orders import Order, Trade, new_order
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


class Outcome:
    """What one write decided: facts to journal, order states to publish, events.

    A plain slots class: one is made per step, and a dataclass with five
    `default_factory` fields costs twice as much to build."""

    __slots__ = ("accepted", "changed", "events", "facts", "request_id", "trades")

    def __init__(self, request_id: str | None = None) -> None:
        self.facts: list[facts.Fact] = []
        self.changed: list[Order] = []
        self.accepted: Order | None = None
        self.events: list[Event] = []
        self.trades: list[Trade] = []  # for the public tape, in order
        self.request_id = request_id  # of the submission or cancel, for its events (§6.2)


def ignore_events(events: list[Event]) -> None:
    """The event sink used when no webhook dispatcher is attached."""


@dataclass(slots=True)
class SymbolContext:
    """What every symbol actor of one exchange shares."""

    clock: Clock
    ids: IdFactory
    read_index: ReadIndex
    brokers: Callable[[str], Account | None]
    vwap_window_us: int = 300_000_000
    journal: Journal = field(default_factory=MemoryJournal)
    clock_actor: pykka.ActorRef | None = None
    events: EventSink = ignore_events
    known_symbols: set[str] = field(default_factory=set)
    market_data: MarketData = field(default_factory=MarketData)
    metrics: Metrics = field(default_factory=Metrics)


class SymbolActor(ExchangeActor):
    def __init__(
        self,
        symbol: str,
        context: SymbolContext,
        orders: Iterable[Order] = (),
        trades: Iterable[Trade] = (),
    ) -> None:
        """`orders` and `trades` restore a recovered symbol (every order, every trade)."""
        super().__init__()
        self.symbol = symbol
        self.book = OrderBook(symbol)
        self.context = context
        self.trades = TradeWindow(context.vwap_window_us)
        self.orders: dict[str, Order] = {}  # the latest state of every order of the symbol
        for order in orders:
            self.orders[order.order_id] = order
            if order.is_active:
                self.book.restore(order)
        trades = list(trades)
        for trade in trades:
            self.trades.record(trade)
        self._announced_expiry: int | None = None
        # Without persistence nothing reads the facts: do not make them (hot path).
        self._keeps_facts = context.journal.keeps_facts
        self.feed = context.market_data.feed(symbol)
        if trades or len(self.book):  # a recovered symbol: its summary and tape
            self.feed.publish(
                trades,
                self.book.best_price(BID),
                self.book.best_price(ASK),
                self.book.next_expiry(),
            )

    def on_start(self) -> None:
        self._announce_expiry()
        book = self.book
        self.context.metrics.watch_resting(
            self.symbol, lambda: book.side_count(BID), lambda: book.side_count(ASK)
        )

    # -- writes ------------------------------------------------------------------

    def _submit(self, message: Submit) -> object:
        now = self.context.clock.now()
        outcome = Outcome(request_id=message.request_id)
        self._expire_due(now, outcome)
        command, keep = message.command, message.keep
        answer: Order | ExchangeError
        try:
            answer = self._accept_and_match(command, now, outcome)
        except ExchangeError as refusal:
            kept = keep.fact(refusal) if keep is not None and self._keeps_facts else None
            if kept is None:
                self._finish(outcome)  # what expired in this step
                self.context.metrics.count_order(command.type, command.side, refusal.code)
                raise
            outcome.facts.append(kept)  # a kept 404/409: answered once journaled
            answer = refusal
        except Exception:
            self._finish(outcome)
            raise
        else:
            if keep is not None and self._keeps_facts:
                kept = keep.fact(answer)
                if kept is not None:
                    outcome.facts.append(kept)
        self._finish(outcome, message.reply, answer, command)
        return DEFERRED

    def _accept_and_match(self, command: SubmitOrder, now: int, outcome: Outcome) -> Order:
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
            if not broker.reserve_cash(cash_to_reserve(book, command), now):
                raise insufficient_balance(command.broker_id)
        elif not broker.reserve_shares(self.symbol, command.quantity, now):
            raise insufficient_holdings(command.broker_id, self.symbol)
        order = new_order(command, context.ids.order_id(), now)
        context.known_symbols.add(self.symbol)
        if self._keeps_facts:
            outcome.facts.append(facts.order_accepted(order))
        result = book.submit(order, now, context.ids.trade_id)
        for broker_id, legs in settlement_legs(result).items():
            self._broker(broker_id).settle(self.symbol, tuple(legs), now)
        final = result.order
        if final.cancelled_quantity:  # a market order's IOC remainder
            self._release(final, now)
        orders = self.orders
        for fill in result.fills:
            trade = fill.trade
            self.trades.record(trade)
            if self._keeps_facts:
                outcome.facts.append(facts.trade_executed(trade))
            outcome.trades.append(trade)
            outcome.events.append(TradeExecuted(trade, fill.bid, outcome.request_id))
            outcome.events.append(TradeExecuted(trade, fill.ask, outcome.request_id))
            orders[fill.resting.order_id] = fill.resting
            outcome.changed.append(fill.resting)  # later fills of one order overwrite
        orders[final.order_id] = final
        outcome.accepted = final
        return final

    def _cancel(self, message: Cancel) -> object:
        now = self.context.clock.now()
        outcome = Outcome(request_id=message.request_id)
        self._expire_due(now, outcome)
        cancelled = self.book.cancel(message.order_id, now)
        if cancelled is None:
            self._finish(outcome)
            current = self.orders.get(message.order_id)
            if current is None:
                raise order_not_found(message.order_id)
            raise not_cancellable(current.order_id, current.status)
        self._close(cancelled, now, outcome)
        self._finish(outcome, message.reply, cancelled)
        return DEFERRED

    def _expire(self, message: ExpireDue) -> None:
        outcome = Outcome()
        self._expire_due(self.context.clock.now(), outcome)
        self._finish(outcome)

    # -- reads -------------------------------------------------------------------

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
        outcome = Outcome()
        self._expire_due(now, outcome)
        self._finish(outcome)
        return now

    def _expire_due(self, now: int, outcome: Outcome) -> None:
        for order in self.book.expire_due(now):
            self._close(order, now, outcome)

    def _close(self, order: Order, now: int, outcome: Outcome) -> None:
        """A cancelled or expired order: release its reservation, record it."""
        self._release(order, now)
        self.orders[order.order_id] = order
        if self._keeps_facts:
            outcome.facts.append(facts.order_closed(order, now))
        outcome.changed.append(order)
        # an expiry is caused by time, not by the request whose step it happened in
        caused_by = outcome.request_id if order.expired_at is None else None
        outcome.events.append(OrderClosed(order, caused_by))

    def _release(self, order: Order, now: int) -> None:
        cash, shares = released_by(order)
        if cash or shares:
            symbol = self.symbol if shares else ""
            self._broker(order.broker_id).release(cash, symbol, shares, now)

    def _broker(self, broker_id: str) -> Account:
        broker = self.context.brokers(broker_id)
        assert broker is not None, f"broker {broker_id} has orders but no account"
        return broker

    def _finish(
        self,
        outcome: Outcome,
        reply: Reply | None = None,
        answer: object = None,
        submitted: SubmitOrder | None = None,
    ) -> None:
        """End of the atomic step: journal the facts; once durable, publish the new
        states, hand the events over, and answer (in that order: whatever a client
        sends after the answer reaches the webhook dispatcher after these events, so
        a subscription change it makes never applies to them, §4.5).

        `submitted`: the answer is a submission's, counted in
        `miniexchange_orders_total` (§6.4) as it is given (the order, a kept refusal,
        or journal_unavailable)."""
        next_expiry = self._announce_expiry()
        context = self.context
        if not (outcome.facts or outcome.changed or outcome.accepted is not None):
            if reply is not None:
                if submitted is not None:
                    _count_answer(context.metrics, submitted, answer)
                reply(answer)
            return
        feed = self.feed
        book = self.book
        # The book as this step left it, for the published summary: O(1) reads, no L2.
        best_bid, best_ask = book.best_price(BID), book.best_price(ASK)

        def durable(error: BaseException | None) -> None:
            if error is not None:
                if reply is not None:
                    given = journal_unavailable()
                    if submitted is not None:
                        _count_answer(context.metrics, submitted, given)
                    reply(given)
                return
            index = context.read_index
            for order in outcome.changed:
                index.publish(order)
            if outcome.accepted is not None:
                index.publish_new(outcome.accepted)
            feed.publish(outcome.trades, best_bid, best_ask, next_expiry)
            if outcome.trades:
                context.metrics.count_trades(self.symbol, outcome.trades)
            if outcome.events:
                context.events(outcome.events)
            if reply is not None:
                if submitted is not None:
                    _count_answer(context.metrics, submitted, answer)
                reply(answer)

        context.journal.append(outcome.facts, durable)

    def _announce_expiry(self) -> int | None:
        """Tell the clock actor when the book's earliest expiry changed; return it."""
        next_expiry = self.book.next_expiry()
        if next_expiry != self._announced_expiry:
            self._announced_expiry = next_expiry
            if self.context.clock_actor is not None:
                # while the exchange stops, the clock actor stops first
                with contextlib.suppress(pykka.ActorDeadError):
                    self.context.clock_actor.tell(NextExpiry(self.symbol, next_expiry))
        return next_expiry


def _count_answer(metrics: Metrics, command: SubmitOrder, answer: object) -> None:
    """Count a submission's answer: the order (`accepted`) or a refusal's code."""
    outcome = answer.code if isinstance(answer, ExchangeError) else "accepted"
    metrics.count_order(command.type, command.side, outcome)
