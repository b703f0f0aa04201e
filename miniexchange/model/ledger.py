"""A broker's cash, holdings and reservations: what its balance shows.

All amounts are integer cents and integer shares. A reservation is made only if the
available amount covers it, so available cash and shares never go negative; each
release or settlement gives back exactly what the reservation it belongs to took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from miniexchange.model.commands import BID


@dataclass(frozen=True, slots=True)
class Holding:
    symbol: str
    quantity: int
    reserved_quantity: int

    @property
    def available_quantity(self) -> int:
        return self.quantity - self.reserved_quantity


@dataclass(frozen=True, slots=True)
class Balance:
    """A consistent picture of one ledger at one moment."""

    broker_id: str
    cash_balance: int
    reserved_cash: int
    holdings: tuple[Holding, ...]  # sorted by symbol, quantity > 0 only
    created_at: int
    updated_at: int

    @property
    def available_cash(self) -> int:
        return self.cash_balance - self.reserved_cash


class SettlementLeg(NamedTuple):
    """One broker's side of one trade.

    For the buyer `release` is the reserved cash the fill frees: the bid's own price
    times the quantity for a limit bid, the execution cost for a market bid.
    """

    side: str  # BID (bought) or ASK (sold)
    quantity: int
    value: int  # execution price * quantity, in cents
    release: int


class Accepted(NamedTuple):
    """R2: the broker's order was accepted at `at` (its hold, made before, stays)."""

    broker_id: str
    at: int


class Settled(NamedTuple):
    """R2: the broker's legs of one matching pass on `symbol`."""

    broker_id: str
    symbol: str
    legs: tuple[SettlementLeg, ...]
    at: int


class Released(NamedTuple):
    """R2: a hold given back. `at` is when an order ended (cancelled, expired, or a
    market order's IOC remainder); None for a hold refused after it was made (an order
    that was never created), which leaves `updated_at` alone."""

    broker_id: str
    symbol: str
    cash: int
    quantity: int
    at: int | None


class Held(NamedTuple):
    """R2: a market order's hold, `cash` (a bid's sweep cost) or `quantity` shares (an
    ask), made when its symbol's step ran. Ahead of that order's `Accepted`, `Settled`
    and `Released`, it does to the ledger what the blocking `Hold` ask does in the
    embedded mode, where the step asks instead (docs/ray.md, "A market order, and its
    Hold"). Decided already: applied as is, and, like any hold, at no time."""

    broker_id: str
    symbol: str
    cash: int
    quantity: int


LedgerChange = Accepted | Settled | Released | Held
"""What a matching step tells the account actors, in the order it happened."""


class Ledger:
    """One broker's ledger, owned by one account actor.

    A hold (`hold_cash`, `hold_shares`) is made before an order exists and changes no
    `updated_at`: the order's acceptance does (`Accepted`), as recovery rebuilds it.
    Cash held is also counted per symbol, so the account actor can tell whether a
    refused hold might succeed once that symbol's due orders are expired.
    """

    __slots__ = (
        "broker_id",
        "cash",
        "cash_held_on",
        "created_at",
        "holdings",
        "reserved_cash",
        "reserved_shares",
        "updated_at",
    )

    def __init__(
        self, broker_id: str, cash: int, holdings: dict[str, int], created_at: int
    ) -> None:
        self.broker_id = broker_id
        self.cash = cash
        self.reserved_cash = 0
        self.cash_held_on: dict[str, int] = {}  # symbol -> the part of reserved_cash
        self.holdings = {symbol: q for symbol, q in holdings.items() if q}
        self.reserved_shares: dict[str, int] = {}
        self.created_at = created_at
        self.updated_at = created_at

    @property
    def available_cash(self) -> int:
        return self.cash - self.reserved_cash

    def available_shares(self, symbol: str) -> int:
        return self.holdings.get(symbol, 0) - self.reserved_shares.get(symbol, 0)

    def holds_on(self, symbol: str) -> bool:
        """Whether anything is held for orders on `symbol` (some may be due)."""
        return symbol in self.cash_held_on or symbol in self.reserved_shares

    def hold(self, symbol: str, cash: int, quantity: int) -> bool:
        """Hold `cash` (a bid) or `quantity` shares (an ask) for an order on `symbol`."""
        return self.hold_cash(symbol, cash) if cash else self.hold_shares(symbol, quantity)

    def hold_cash(self, symbol: str, amount: int) -> bool:
        """Hold `amount` for an order on `symbol` if it is available; False: no change."""
        if amount > self.cash - self.reserved_cash:
            return False
        self.reserved_cash += amount
        _add(self.cash_held_on, symbol, amount)
        return True

    def hold_shares(self, symbol: str, quantity: int) -> bool:
        if quantity > self.available_shares(symbol):
            return False
        _add(self.reserved_shares, symbol, quantity)
        return True

    def restore_hold(self, symbol: str, cash: int, quantity: int) -> None:
        """Recovery: an active order's reservation, as the journal says it was."""
        self._shift_held(symbol, cash, quantity)

    def release(self, symbol: str, cash: int, quantity: int) -> None:
        """Give back what an order held and no longer needs."""
        self._shift_held(symbol, -cash, -quantity)

    def _shift_held(self, symbol: str, cash: int, quantity: int) -> None:
        if cash:
            self.reserved_cash += cash
            _add(self.cash_held_on, symbol, cash)
        if quantity:
            _add(self.reserved_shares, symbol, quantity)

    def settle(self, symbol: str, legs: tuple[SettlementLeg, ...], now: int) -> None:
        """Apply this broker's legs of one matching pass (each at its trade's price)."""
        holdings = self.holdings
        for leg in legs:
            if leg.side == BID:
                self.cash -= leg.value
                self.reserved_cash -= leg.release
                _add(self.cash_held_on, symbol, -leg.release)
                holdings[symbol] = holdings.get(symbol, 0) + leg.quantity
            else:
                self.cash += leg.value
                _add(holdings, symbol, -leg.quantity)
                _add(self.reserved_shares, symbol, -leg.quantity)
        self.touch(now)

    def apply(self, change: LedgerChange) -> None:
        """One change a matching step told (R2)."""
        if type(change) is Settled:
            self.settle(change.symbol, change.legs, change.at)
        elif type(change) is Released:
            self.release(change.symbol, change.cash, change.quantity)
            if change.at is not None:
                self.touch(change.at)
        elif type(change) is Held:
            self._shift_held(change.symbol, change.cash, change.quantity)
        else:
            self.touch(change.at)

    def balance(self) -> Balance:
        reserved = self.reserved_shares
        return Balance(
            self.broker_id,
            self.cash,
            self.reserved_cash,
            tuple(
                Holding(symbol, quantity, reserved.get(symbol, 0))
                for symbol, quantity in sorted(self.holdings.items())
            ),
            self.created_at,
            self.updated_at,
        )

    def touch(self, now: int) -> None:
        """Record a change at `now`; also used by recovery to replay a fact's time.

        The clock never goes backwards, but changes told by several symbol actors may
        arrive out of their clock-reading order, so `updated_at` only moves forward.
        """
        if now > self.updated_at:
            self.updated_at = now


def _add(counts: dict[str, int], symbol: str, delta: int) -> None:
    """Add `delta` to a per-symbol count, dropping the symbol when it reaches zero."""
    total = counts.get(symbol, 0) + delta
    if total:
        counts[symbol] = total
    else:
        counts.pop(symbol, None)
