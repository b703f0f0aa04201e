"""SymbolActor: the only writer of one symbol's book (one matching step at a time per
symbol), the "ME" stage.

A thin shell over the pure engine step (`model.engine`): mailbox -> step -> journal ->
tell the account actors -> publish -> reply. Each submission, cancellation and expiry
is one message handled alone: the atomic unit. A limit order arrives with its funds
held by the broker's account actor (`Reserved`, see `actors.accounts`); a market order
holds its exact sweep cost by the one blocking ask allowed, since the book must not
move between the check and the pass. What a step decided goes to the journal as facts;
once they are durable (at once without persistence) the account actors are told its
acceptances, settlements and releases (R2), the new order states are published, the
events leave and the requester gets its answer, in that order. The actor does not wait
for the disk: it goes on with its next message, and group commit lets one disk sync
cover many steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pykka

from miniexchange.actors.accounts import tell_changes
from miniexchange.actors.base import DEFERRED, ExchangeActor, Reply
from miniexchange.actors.listeners import Step, StepListener, tell_all
from miniexchange.actors.listing import SymbolListing
from miniexchange.actors.messages import (
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
from miniexchange.ids import IdFactory, OrderIds, StampedIds
from miniexchange.journal import facts
from miniexchange.journal.facts import KeepAnswer
from miniexchange.journal.store import Journal, MemoryJournal
from miniexchange.metrics import Metrics
from miniexchange.model import engine
from miniexchange.model.commands import ASK, BID, LIMIT, SubmitOrder
from miniexchange.model.engine import BookView, Outcome, QuoteView, SymbolState
from miniexchange.model.errors import ExchangeError, journal_unavailable
from miniexchange.model.vwap import Price


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
    listeners: Sequence[StepListener] = ()  # hear every durable step, in this order
    listing: SymbolListing = field(default_factory=SymbolListing)  # the listed symbols
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def known_symbols(self) -> set[str]:
        return self.listing.listed


class SymbolActor(ExchangeActor):
    def __init__(
        self,
        symbol: str,
        context: SymbolContext,
        state: SymbolState | None = None,
    ) -> None:
        """`state`: a recovered symbol's (every order, every trade); None: a new one."""
        super().__init__()
        self.symbol = symbol
        self.context = context
        self.state = state if state is not None else SymbolState(symbol, context.vwap_window_us)
        self.book = self.state.book
        self._announced_expiry: int | None = None
        # Without persistence nothing reads the facts: do not make them (hot path).
        self._keeps_facts = context.journal.keeps_facts

    def on_start(self) -> None:
        self._announce_expiry()
        book = self.book
        self.context.metrics.watch_resting(
            self.symbol, lambda: book.side_count(BID), lambda: book.side_count(ASK)
        )

    # -- writes ------------------------------------------------------------------

    def _submit(self, message: Submit) -> object:
        """A market order, straight from the HTTP layer: it holds its own funds."""
        return self._step(message)

    def _reserved(self, message: Reserved) -> object:
        """A limit order whose funds R1 holds."""
        return self._step(message.submit)

    def _step(self, message: Submit) -> object:
        command = message.command
        at = message.at
        outcome = Outcome(self.context.clock.now() if at is None else at, message.request_id)
        order_id = message.order_id
        ids: OrderIds = self.context.ids
        if order_id is not None:  # stamped with its trade seed
            ids = StampedIds(order_id, message.trade_seed)  # type: ignore[arg-type]
        answer = engine.submit(self.state, command, ids, outcome, self._hold)
        if command.type == LIMIT and isinstance(answer, ExchangeError):
            self.context.listing.release((self.symbol,))  # the place R1 claimed, if any
        self._finish(outcome, message.reply, answer, command, message.keep)
        return DEFERRED

    def _hold(self, broker_id: str, cash: int, quantity: int) -> bool:
        """The one blocking ask: the book must not move between the check and the pass."""
        return self.context.accounts(broker_id).ask(Hold(broker_id, self.symbol, cash, quantity))

    def _expire_then_check(self, message: ExpireThenCheck) -> None:
        """R1 could not hold: expire what is due, then send the order back for the
        final check, after the releases (one mailbox, FIFO)."""
        submit = message.submit
        outcome = Outcome(self._at(submit.at))
        engine.expire_due(self.state, outcome)
        account = self.context.accounts(submit.command.broker_id)
        self._finish(outcome, then=lambda: account.tell(Recheck(submit)))

    def _cancel(self, message: Cancel) -> object:
        outcome = Outcome(self._at(message.at), message.request_id)
        answer = engine.cancel(self.state, message.order_id, outcome)
        self._finish(outcome, message.reply, answer)  # a refusal too: after what expired
        return DEFERRED

    def _expire(self, message: ExpireDue) -> None:
        outcome = Outcome(self._at(message.at))
        engine.expire_due(self.state, outcome)
        self._finish(outcome)

    def _at(self, stamped: int | None) -> int:
        """A step's time: the stamped one, or (embedded mode) the clock's reading now."""
        return self.context.clock.now() if stamped is None else stamped

    # -- reads -------------------------------------------------------------------

    def _read_book(self, message: ReadBook) -> BookView:
        outcome = Outcome(self.context.clock.now())
        view = engine.read_book(self.state, message.depth, outcome, message.expire)
        self._finish(outcome)  # what expired, if the read expires anything
        return view

    def _read_quote(self, message: ReadQuote) -> QuoteView:
        outcome = Outcome(self.context.clock.now())
        view = engine.read_quote(
            self.state, message.side, message.quantity, outcome, message.expire
        )
        self._finish(outcome)
        return view

    def _read_price(self, message: ReadPrice) -> Price:
        return self.state.trades.price(self.context.clock.now(), message.expire)

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

    # -- the end of every step ------------------------------------------------------

    def _finish(
        self,
        outcome: Outcome,
        reply: Reply | None = None,
        answer: object = None,
        submitted: SubmitOrder | None = None,
        keep: KeepAnswer | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """End of the atomic step: journal the facts; once durable, tell the account
        actors (R2), run `then`, publish the new states, hand the events over, and
        answer. In that order: a request sent after the answer finds the ledgers
        settled and reaches the webhook dispatcher after these events, so a
        subscription change it makes never applies to them. Nothing of the step
        is visible to another actor before its facts are durable, so nothing durable
        can rest on a fact the journal could still lose.

        `submitted`: the answer is a submission's, counted in
        `miniexchange_orders_total` as it is given (the order, a refusal, or
        journal_unavailable). `keep`: its `Idempotency-Key` answer is journaled with
        the step's facts."""
        next_expiry = self._announce_expiry()
        context = self.context
        recorded: list[facts.Fact] = []
        if self._keeps_facts:
            recorded = facts.step_facts(outcome)
            kept = keep.fact(answer) if keep is not None else None
            if kept is not None:
                recorded.append(kept)
        if outcome.accepted is not None and self.symbol not in context.listing.listed:
            context.listing.list((self.symbol,))

        def give(value: object) -> None:
            if reply is not None:
                if submitted is not None:
                    context.metrics.count_answer(submitted, value)
                reply(value)

        if not (recorded or outcome.touches_anything):
            if then is not None:
                then()
            give(answer)
            return
        book = self.book
        # The book as this step left it, for the published summary: O(1) reads, no L2.
        step = Step(self.symbol, outcome, book.best_price(BID), book.best_price(ASK), next_expiry)

        def durable(error: BaseException | None) -> None:
            if error is None and outcome.ledgers:
                tell_changes(context.accounts, outcome.ledgers)
            if then is not None:  # on a failure too: whoever waits is answered, and an
                then()  # order sent back meets the 503 in turn (the process stops)
            if error is not None:
                give(journal_unavailable())
                return
            index = context.read_index
            for order in outcome.changed:
                index.publish(order)
            if outcome.accepted is not None:
                index.publish_new(outcome.accepted)
            tell_all(context.listeners, step)
            give(answer)

        context.journal.append(recorded, durable)

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
