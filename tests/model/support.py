"""Builders and a pure driver shared by the model tests.

Times are integer microseconds since the epoch, amounts integer cents, as in the model.
`PureExchange` drives `OrderBook`s and `Ledger`s exactly as `SymbolActor` does
(expire due → refusals → reserve → `new_order` → `submit` → settle → IOC release), but
synchronously and without actors, so a test sees every step's effect at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from miniexchange.model.book import MatchResult, OrderBook
from miniexchange.model.commands import BID, LIMIT, MARKET, SubmitOrder
from miniexchange.model.errors import (
    insufficient_balance,
    insufficient_holdings,
    no_liquidity,
    validation_error,
)
from miniexchange.model.ledger import Ledger
from miniexchange.model.orders import Order, new_order
from miniexchange.model.settlement import cash_to_reserve, released_by, settlement_legs
from miniexchange.testing import SequentialIds

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts(iso: str) -> int:
    """Microseconds since the epoch of an ISO 8601 instant with an offset."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def at(clock_time: str) -> int:
    """`09:05:00` (or `09:05:00.000001`) on the trading day of the examples, 2026-02-17."""
    return ts(f"2026-02-17T{clock_time}Z")


def cents(amount: str) -> int:
    """`148.50` → 14850, exactly (no binary floating point)."""
    value = Decimal(amount) * 100
    assert value == value.to_integral_value(), amount
    return int(value)


FAR = ts("2026-02-20T18:00:00Z")  # the contract's `expires_at` example
SYMBOL = "AAPL"


def limit(
    side: str,
    price: str,
    quantity: int,
    *,
    broker: str = "b1",
    symbol: str = SYMBOL,
    expires_at: int = FAR,
) -> SubmitOrder:
    return SubmitOrder(
        LIMIT, broker, "12345678900", side, symbol, quantity, cents(price), expires_at
    )


def market(side: str, quantity: int, *, broker: str = "b1", symbol: str = SYMBOL) -> SubmitOrder:
    return SubmitOrder(MARKET, broker, "12345678900", side, symbol, quantity)


@dataclass(frozen=True, slots=True)
class Resting:
    """A limit order to place on a book before the case runs (it must not cross)."""

    name: str
    side: str
    price: str
    quantity: int
    time: str  # clock time of `created_at` on 2026-02-17
    broker: str = "b1"
    order_id: str | None = None  # None: the next sequential id
    expires_at: int = FAR


def place(book: OrderBook, ids: SequentialIds, specs: tuple[Resting, ...]) -> dict[str, Order]:
    """Submit each spec in the given order; returns the resting orders by name."""
    placed = {}
    for spec in specs:
        command = limit(
            spec.side,
            spec.price,
            spec.quantity,
            broker=spec.broker,
            symbol=book.symbol,
            expires_at=spec.expires_at,
        )
        now = at(spec.time)
        order = new_order(command, spec.order_id or ids.order_id(), now)
        result = book.submit(order, now, ids.trade_id)
        assert not result.fills, f"setup order {spec.name} crossed the book"
        placed[spec.name] = result.order
    return placed


def submit(book: OrderBook, ids: SequentialIds, command: SubmitOrder, now: int) -> MatchResult:
    """Create the order record at `now` and run one matching pass at `now`."""
    return book.submit(new_order(command, ids.order_id(), now), now, ids.trade_id)


class PureExchange:
    """Books and ledgers wired as the symbol actor wires them, minus the actors."""

    def __init__(self, ids: SequentialIds) -> None:
        self.ids = ids
        self.books: dict[str, OrderBook] = {}
        self.ledgers: dict[str, Ledger] = {}

    def register(self, broker_id: str, cash: int, holdings: dict[str, int], now: int) -> Ledger:
        ledger = Ledger(broker_id, cash, holdings, now)
        self.ledgers[broker_id] = ledger
        return ledger

    def book(self, symbol: str) -> OrderBook:
        if symbol not in self.books:
            self.books[symbol] = OrderBook(symbol)
        return self.books[symbol]

    def expire(self, symbol: str, now: int) -> list[Order]:
        """`SymbolActor._expire_due`: expire what is due and release its reservations."""
        expired = self.book(symbol).expire_due(now)
        for order in expired:
            self._release(symbol, order, now)
        return expired

    def accept_and_match(self, command: SubmitOrder, now: int) -> MatchResult:
        """`SymbolActor._accept_and_match`, step for step (due orders already expired)."""
        symbol = command.symbol
        book = self.book(symbol)
        if command.type == LIMIT and command.expires_at <= now:  # type: ignore[operator]
            raise validation_error("expires_at must be a future timestamp")
        ledger = self.ledgers[command.broker_id]
        if command.type == MARKET and not book.has_liquidity_for(command.side):
            raise no_liquidity(symbol)
        if command.side == BID:
            if not ledger.hold_cash(symbol, cash_to_reserve(book, command)):
                raise insufficient_balance(command.broker_id)
        elif not ledger.hold_shares(symbol, command.quantity):
            raise insufficient_holdings(command.broker_id, symbol)
        ledger.touch(now)  # the acceptance
        order = new_order(command, self.ids.order_id(), now)
        result = book.submit(order, now, self.ids.trade_id)
        for broker_id, legs in settlement_legs(result).items():
            self.ledgers[broker_id].settle(symbol, tuple(legs), now)
        if result.order.cancelled_quantity:  # a market order's IOC remainder
            self._release(symbol, result.order, now)
        return result

    def submit(self, command: SubmitOrder, now: int) -> MatchResult:
        self.expire(command.symbol, now)
        return self.accept_and_match(command, now)

    def cancel(self, symbol: str, order_id: str, now: int) -> Order | None:
        """`SymbolActor._cancel` after its expiry step: cancel and release, or None."""
        cancelled = self.book(symbol).cancel(order_id, now)
        if cancelled is not None:
            self._release(symbol, cancelled, now)
        return cancelled

    def _release(self, symbol: str, order: Order, now: int) -> None:
        cash, shares = released_by(order)
        ledger = self.ledgers[order.broker_id]
        ledger.release(symbol, cash, shares)
        ledger.touch(now)
