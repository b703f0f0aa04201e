"""The matching engine's procedures as plain functions of a symbol's state: submit a
limit or market order, cancel, expire (see docs/design.md, "The order path").

Each call reads `now` and ids from its arguments and records what it decided in an
`Outcome`: the order states, the trades, the ledger changes for the account actors
(R2), the webhook events. It does no I/O, knows no actor and no clock, so the symbol
actor only runs it and hands the outcome on, and the property tests drive the very
same code.

The funds side stays outside: a limit order arrives with its funds held (by R1, the
account actor); a market order's sweep cost is computed here and held through the
caller's `hold` (the symbol actor's one blocking ask) before the pass, so the book
cannot move in between.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from miniexchange.model.book import Fill, Level, OrderBook
from miniexchange.model.commands import ASK, BID, LIMIT, SubmitOrder
from miniexchange.model.errors import (
    ExchangeError,
    insufficient_funds,
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
from miniexchange.model.vwap import TradeWindow

if TYPE_CHECKING:
    from miniexchange.ids import OrderIds


class SymbolState:
    """What one symbol's steps read and write: the book, the latest state of every
    order of the symbol, and the trades of the VWAP window."""

    __slots__ = ("book", "orders", "symbol", "trades")

    def __init__(
        self,
        symbol: str,
        vwap_window_us: int,
        orders: Iterable[Order] = (),
        trades: Iterable[Trade] = (),
    ) -> None:
        """`orders` and `trades` restore a recovered symbol (every order, every trade)."""
        self.symbol = symbol
        self.book = OrderBook(symbol)
        self.orders: dict[str, Order] = {}
        self.trades = TradeWindow(vwap_window_us)
        for order in orders:
            self.orders[order.order_id] = order
            if order.is_active:
                self.book.restore(order)
        for trade in trades:
            self.trades.record(trade)


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
    """What one step decided, in the order it happened.

    A plain slots class: one is made per step, and a dataclass with `default_factory`
    fields costs twice as much to build."""

    __slots__ = (
        "accepted",
        "at",
        "changed",
        "closed",
        "events",
        "fills",
        "ledgers",
        "request_id",
        "trades",
    )

    def __init__(self, at: int, request_id: str | None = None) -> None:
        self.at = at  # the step's one clock reading
        self.request_id = request_id  # of the submission or cancel, for its events' logs
        self.closed: list[Order] = []  # cancelled or expired, in order
        self.accepted: Order | None = None  # the submitted order as the step left it
        self.fills: tuple[Fill, ...] = ()  # the submission's pass, both orders per trade
        self.trades: list[Trade] = []  # in match order
        self.changed: list[Order] = []  # resting orders filled or closed (later ones win)
        self.events: list[Event] = []
        self.ledgers: list[LedgerChange] = []  # for the account actors (R2)

    @property
    def touches_anything(self) -> bool:
        """Whether the step changed anything at all (most expiry checks do not)."""
        return bool(self.changed or self.ledgers or self.accepted)


def expire_due(state: SymbolState, outcome: Outcome) -> None:
    """Expire every resting order due at `outcome.at`, in `expires_at` order, and
    let the VWAP window forget the trades that left it: every step starts here, the
    expiration sweeps included, so trades leave as time passes, not only when read."""
    for order in state.book.expire_due(outcome.at):
        _close(state, order, outcome)
    state.trades.advance(outcome.at)


HoldFunds = Callable[[str, int, int], bool]
"""(broker_id, cash, shares): holds a market order's funds for its pass; False: the
broker does not have them available."""


def submit(
    state: SymbolState, command: SubmitOrder, ids: OrderIds, outcome: Outcome, hold: HoldFunds
) -> Order | ExchangeError:
    """One submission: expire the due orders (none may trade at or after its expiry),
    check and hold a market order's funds with `hold` (a limit order's are held
    already), create the order and match it. Returns the order as the step leaves it,
    or the refusal; a refused limit order gives its hold back."""
    expire_due(state, outcome)
    try:
        if command.type != LIMIT:
            cash, quantity = market_hold(state, command)
            if not hold(command.broker_id, cash, quantity):
                raise insufficient_funds(command.broker_id, command.side, state.symbol)
        return accept_and_match(state, command, ids, outcome)
    except ExchangeError as refusal:
        if command.type == LIMIT:
            give_back_hold(state, command, outcome)
        return refusal


def read_book(state: SymbolState, depth: int, outcome: Outcome, expire: bool = True) -> BookView:
    """The L2 book without the orders due at `outcome.at`: they are expired first, or,
    with `expire=False`, left out of the view and on the book (a read outside the
    sequenced stream of commands, which must change nothing: docs/ray.md, "Reads")."""
    due_at = _leave_due_out(state, outcome, expire)
    book = state.book
    return BookView(book.levels(BID, depth, due_at), book.levels(ASK, depth, due_at), outcome.at)


def read_quote(
    state: SymbolState, side: str, quantity: int, outcome: Outcome, expire: bool = True
) -> QuoteView:
    """What a market order would take now, due orders expired first (or, with
    `expire=False`, left out and on the book, as for `read_book`)."""
    due_at = _leave_due_out(state, outcome, expire)
    return QuoteView(state.book.sweep(side, quantity, due_at), outcome.at)


def _leave_due_out(state: SymbolState, outcome: Outcome, expire: bool) -> int | None:
    """A read's way with due orders: expire them (None: none are left to leave out), or
    the time at which the view leaves them out."""
    if expire:
        expire_due(state, outcome)
        return None
    return outcome.at


def market_hold(state: SymbolState, command: SubmitOrder) -> tuple[int, int]:
    """(cash, shares) a market order must hold for its pass: a bid's exact sweep cost,
    an ask's quantity, held during the pass; no_liquidity on an empty opposite side."""
    if not state.book.has_liquidity_for(command.side):
        raise no_liquidity(state.symbol)
    if command.side == BID:
        return cash_to_reserve(state.book, command), 0
    return 0, command.quantity


def give_back_hold(state: SymbolState, command: SubmitOrder, outcome: Outcome) -> None:
    """A limit order refused after R1 held its funds: the hold goes back, at no time
    (no order was created, so no `updated_at` moves)."""
    cash, quantity = limit_hold(command)
    outcome.ledgers.append(Released(command.broker_id, state.symbol, cash, quantity, None))


def accept_and_match(
    state: SymbolState, command: SubmitOrder, ids: OrderIds, outcome: Outcome
) -> Order:
    """Create the order at `outcome.at` and run the match loop (a market remainder is cancelled);
    its funds are held. Returns the order as the step leaves it."""
    now = outcome.at
    if command.type == LIMIT and command.expires_at <= now:  # type: ignore[operator]
        raise validation_error("expires_at must be a future timestamp")
    order = new_order(command, ids.order_id(), now)
    ledgers = outcome.ledgers
    ledgers.append(Accepted(command.broker_id, now))
    result = state.book.submit(order, now, ids.trade_id)
    symbol = state.symbol
    for broker_id, legs in settlement_legs(result).items():
        ledgers.append(Settled(broker_id, symbol, tuple(legs), now))
    final = result.order
    outcome.fills = result.fills
    if final.cancelled_quantity:  # a market order's IOC remainder
        _release(state, final, outcome)
    orders, trades, events = state.orders, outcome.trades, outcome.events
    request_id = outcome.request_id
    for fill in result.fills:
        trade = fill.trade
        state.trades.record(trade)
        trades.append(trade)
        events.append(TradeExecuted(trade, fill.bid, request_id))
        events.append(TradeExecuted(trade, fill.ask, request_id))
        orders[fill.resting.order_id] = fill.resting
        outcome.changed.append(fill.resting)
    orders[final.order_id] = final
    outcome.accepted = final
    return final


def cancel(state: SymbolState, order_id: str, outcome: Outcome) -> Order | ExchangeError:
    """Expire the due orders, then cancel a resting order: the cancelled order,
    or order_not_found, or not_cancellable with the message of its terminal status."""
    expire_due(state, outcome)
    cancelled = state.book.cancel(order_id, outcome.at)
    if cancelled is None:
        current = state.orders.get(order_id)
        if current is None:
            return order_not_found(order_id)
        return not_cancellable(current.order_id, current.status)
    _close(state, cancelled, outcome)
    return cancelled


def _close(state: SymbolState, order: Order, outcome: Outcome) -> None:
    """A cancelled or expired order: release its reservation, record it."""
    _release(state, order, outcome)
    state.orders[order.order_id] = order
    outcome.closed.append(order)
    outcome.changed.append(order)
    # an expiry is caused by time, not by the request whose step it happened in
    caused_by = outcome.request_id if order.expired_at is None else None
    outcome.events.append(OrderClosed(order, caused_by))


def _release(state: SymbolState, order: Order, outcome: Outcome) -> None:
    cash, shares = released_by(order)
    if cash or shares:
        outcome.ledgers.append(Released(order.broker_id, state.symbol, cash, shares, outcome.at))
