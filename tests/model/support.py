"""Builders and a pure driver shared by the model tests.

Times are integer microseconds since the epoch, amounts integer cents, as in the model.
`Trading` wires the real engine step and ledgers as the actors do, without messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from miniexchange.model import engine
from miniexchange.model.book import MatchResult, OrderBook
from miniexchange.model.commands import LIMIT, MARKET, SubmitOrder
from miniexchange.model.engine import Outcome, SymbolState
from miniexchange.model.errors import ExchangeError, insufficient_funds
from miniexchange.model.ledger import Ledger
from miniexchange.model.orders import Order, new_order
from miniexchange.model.settlement import EXPIRE_FIRST, HELD, reserve_limit
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


FAR = ts("2026-02-20T18:00:00Z")  # days after every clock time of the tests
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


class Trading:
    """The real engine step (`model.engine`) and real ledgers, wired as the actors wire
    them: R1's hold of a limit order, the step (a market order holding its sweep through
    `hold`), the R2 changes applied. No messages, so a test sees each step's effect at
    once; nothing of the step's logic is repeated here."""

    def __init__(self, ids: SequentialIds, vwap_window_us: int = 300_000_000) -> None:
        self.ids = ids
        self.vwap_window_us = vwap_window_us
        self.states: dict[str, SymbolState] = {}
        self.ledgers: dict[str, Ledger] = {}

    def register(self, broker_id: str, cash: int, holdings: dict[str, int], now: int) -> Ledger:
        ledger = Ledger(broker_id, cash, holdings, now)
        self.ledgers[broker_id] = ledger
        return ledger

    def state(self, symbol: str) -> SymbolState:
        if symbol not in self.states:
            self.states[symbol] = SymbolState(symbol, self.vwap_window_us)
        return self.states[symbol]

    @property
    def books(self) -> dict[str, OrderBook]:
        return {symbol: state.book for symbol, state in self.states.items()}

    def expire(self, symbol: str, now: int) -> list[Order]:
        outcome = Outcome(now)
        engine.expire_due(self.state(symbol), outcome)
        self._apply(outcome)
        return outcome.closed

    def submit(self, command: SubmitOrder, now: int) -> MatchResult:
        """Submit as the HTTP layer would (a limit order to R1 first); raises the refusal."""
        state = self.state(command.symbol)
        if command.type == LIMIT:
            ledger = self.ledgers[command.broker_id]
            decision = reserve_limit(ledger, command, final=False)
            if decision == EXPIRE_FIRST:
                self.expire(command.symbol, now)
                decision = reserve_limit(ledger, command, final=True)
            if decision != HELD:
                raise insufficient_funds(command.broker_id, command.side, command.symbol)
        outcome = Outcome(now)

        def hold(broker_id: str, cash: int, quantity: int) -> bool:
            return self.ledgers[broker_id].hold(command.symbol, cash, quantity)

        answer = engine.submit(state, command, self.ids, outcome, hold)
        self._apply(outcome)
        if isinstance(answer, ExchangeError):
            raise answer
        return MatchResult(answer, outcome.fills)

    def cancel(self, symbol: str, order_id: str, now: int) -> Order | None:
        """The cancelled order, or None for an unknown or terminal one."""
        outcome = Outcome(now)
        answer = engine.cancel(self.state(symbol), order_id, outcome)
        self._apply(outcome)
        return None if isinstance(answer, ExchangeError) else answer

    def _apply(self, outcome: Outcome) -> None:
        for change in outcome.ledgers:
            self.ledgers[change.broker_id].apply(change)
