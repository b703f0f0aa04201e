"""SymbolActor: the only writer of one symbol's book (contract §3.7), the "ME" stage.

Each submission, cancellation and expiry is one message handled alone: the atomic
unit. A limit order arrives with its funds already held by the broker's account actor
(`Reserved`, see `actors.accounts`); a market order holds its exact sweep cost by the
one blocking ask allowed, since the book must not move between the check and the pass.
The step runs the match loop; what it decided goes to the journal as facts. Once they
are durable (at once without persistence) the account actors are told the step's
acceptances, settlements and releases (R2), the new order states are published, the
webhook events leave and the requester gets its answer, in that order. The actor
itself does not wait for the disk: it goes on with its next message, and group commit
lets one disk sync cover many steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pykka

from miniexchange.actors.base import DEFERRED, ExchangeActor, Reply
from miniexchange.actors.market_data import MarketData
from miniexchange.actors.messages import (
    Apply,
    Cancel,
    ExpireDue,
    ExpireThenCheck,
    Hold,
    NextExpiry,
    ReadBook,
    ReadPrice,
    ReadQuote,
    Recheck,
    Reserved,
    Submit,
)
from miniexchange.actors.read_index import ReadIndex
from miniexchange.clock import Clock
from miniexchange.ids import IdFactory
from miniexchange.journal import facts
from miniexchange.journal.store import Journal, MemoryJournal
from miniexchange.metrics import Metrics
from miniexchange.model.book import Level, OrderBook
from miniexchange.model.commands import ASK, BID, LIMIT, SubmitOrder
from miniexchange.model.errors import (
    ExchangeError,
    insufficient_funds,
    journal_unavailable,
    no_liquidity,
    not_cancellable,
    order_not_found,
    validation_error,
)
from miniexchange.model.events import Event, OrderClosed, TradeExecuted
from miniexchange.model.ledger import Accepted, LedgerChange, Released, Settled
from miniexchange.model.orders import Order, Trade, new_order
from miniexchange.model.settlement import (
    cash_to_reserve,
    limit_hold,
    released_by,
    settlement_legs,
)
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

    __slots__ = ("accepted", "changed", "events", "facts", "ledgers", "request_id", "trades")

    def __init__(self, request_id: str | None = None) -> None:
        self.facts: list[facts.Fact] = []
        self.ledgers: list[LedgerChange] = []  # told to the account actors (R2)
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
    accounts: Callable[[str], pykka.ActorRef]  # the broker's account actor
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
        """A market order, straight from the HTTP layer: it holds its own funds."""
        return self._step(message, held=False)

    def _reserved(self, message: Reserved) -> object:
        """A limit order whose funds R1 holds."""
        return self._step(message.submit, held=True)

    def _step(self, message: Submit, held: bool) -> object:
        now = self.context.clock.now()
        outcome = Outcome(request_id=message.request_id)
        self._expire_due(now, outcome)
        command, keep = message.command, message.keep
        answer: Order | ExchangeError
        try:
            answer = self._accept_and_match(command, now, outcome)
        except ExchangeError as refusal:
            if held:  # an order never created gives its hold back, at no time
                cash, quantity = limit_hold(command)
                outcome.ledgers.append(
                    Released(command.broker_id, self.symbol, cash, quantity, None)
                )
            answer = refusal
        except Exception:
            self._finish(outcome)
            raise
        if keep is not None and self._keeps_facts:
            kept = keep.fact(answer)
            if kept is not None:
                outcome.facts.append(kept)
        self._finish(outcome, message.reply, answer, command)
        return DEFERRED

    def _accept_and_match(self, command: SubmitOrder, now: int, outcome: Outcome) -> Order:
        book = self.book
        context = self.context
        if command.type == LIMIT:
            if command.expires_at <= now:  # type: ignore[operator]
                raise validation_error("expires_at must be a future timestamp")
        else:
            if not book.has_liquidity_for(command.side):
                raise no_liquidity(self.symbol)
            cash = cash_to_reserve(book, command) if command.side == BID else 0
            hold = Hold(command.broker_id, self.symbol, cash, command.quantity if not cash else 0)
            if not context.accounts(command.broker_id).ask(hold):
                raise insufficient_funds(command.broker_id, command.side, self.symbol)
        order = new_order(command, context.ids.order_id(), now)
        context.known_symbols.add(self.symbol)
        if self._keeps_facts:
            outcome.facts.append(facts.order_accepted(order))
        ledgers = outcome.ledgers
        ledgers.append(Accepted(command.broker_id, now))
        result = book.submit(order, now, context.ids.trade_id)
        for broker_id, legs in settlement_legs(result).items():
            ledgers.append(Settled(broker_id, self.symbol, tuple(legs), now))
        final = result.order
        if final.cancelled_quantity:  # a market order's IOC remainder
            self._release(final, now, outcome)
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

    def _expire_then_check(self, message: ExpireThenCheck) -> None:
        """R1 could not hold: expire what is due, then send the order back for the
        final check, after the releases (one mailbox, FIFO)."""
        outcome = Outcome()
        self._expire_due(self.context.clock.now(), outcome)
        submit = message.submit
        account = self.context.accounts(submit.command.broker_id)
        self._finish(outcome, then=lambda: account.tell(Recheck(submit)))

    def _cancel(self, message: Cancel) -> object:
        now = self.context.clock.now()
        outcome = Outcome(request_id=message.request_id)
        self._expire_due(now, outcome)
        cancelled = self.book.cancel(message.order_id, now)
        answer: Order | ExchangeError
        if cancelled is None:  # answered after what expired in this step, like an order
            current = self.orders.get(message.order_id)
            if current is None:
                answer = order_not_found(message.order_id)
            else:
                answer = not_cancellable(current.order_id, current.status)
        else:
            self._close(cancelled, now, outcome)
            answer = cancelled
        self._finish(outcome, message.reply, answer)
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
        Reserved: _reserved,
        ExpireThenCheck: _expire_then_check,
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
        self._release(order, now, outcome)
        self.orders[order.order_id] = order
        if self._keeps_facts:
            outcome.facts.append(facts.order_closed(order, now))
        outcome.changed.append(order)
        # an expiry is caused by time, not by the request whose step it happened in
        caused_by = outcome.request_id if order.expired_at is None else None
        outcome.events.append(OrderClosed(order, caused_by))

    def _release(self, order: Order, now: int, outcome: Outcome) -> None:
        cash, shares = released_by(order)
        if cash or shares:
            outcome.ledgers.append(Released(order.broker_id, self.symbol, cash, shares, now))

    def _finish(
        self,
        outcome: Outcome,
        reply: Reply | None = None,
        answer: object = None,
        submitted: SubmitOrder | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """End of the atomic step: journal the facts; once durable, tell the account
        actors (R2), run `then`, publish the new states, hand the events over, and
        answer. In that order: a request sent after the answer finds the ledgers
        settled and reaches the webhook dispatcher after these events, so a
        subscription change it makes never applies to them (§4.5). Nothing of the step
        is visible to another actor before its facts are durable, so nothing durable
        can rest on a fact the journal could still lose.

        `submitted`: the answer is a submission's, counted in
        `miniexchange_orders_total` (§6.4) as it is given (the order, a refusal, or
        journal_unavailable)."""
        next_expiry = self._announce_expiry()
        context = self.context
        if not (outcome.facts or outcome.changed or outcome.ledgers or outcome.accepted):
            if then is not None:
                then()
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
            if error is not None:  # fail-stop: the step's changes reach nobody, but
                # whoever waits is answered (an order sent back meets a 503 in turn)
                if then is not None:
                    then()
                if reply is not None:
                    given = journal_unavailable()
                    if submitted is not None:
                        _count_answer(context.metrics, submitted, given)
                    reply(given)
                return
            if outcome.ledgers:
                self._tell_accounts(outcome.ledgers)
            if then is not None:
                then()
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

    def _tell_accounts(self, changes: list[LedgerChange]) -> None:
        """One `Apply` per account actor involved, its changes in step order."""
        accounts = self.context.accounts
        first = accounts(changes[0].broker_id)
        if all(accounts(change.broker_id) is first for change in changes):
            first.tell(Apply(tuple(changes)))
            return
        by_actor: dict[pykka.ActorRef, list[LedgerChange]] = {}
        for change in changes:
            by_actor.setdefault(accounts(change.broker_id), []).append(change)
        for actor, mine in by_actor.items():
            actor.tell(Apply(tuple(mine)))

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
