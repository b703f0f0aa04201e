"""A broker's cash, holdings and reservations (contract §2.2, §3.5, §4.3).

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


class Ledger:
    __slots__ = (
        "broker_id",
        "cash",
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
        self.holdings = {symbol: q for symbol, q in holdings.items() if q}
        self.reserved_shares: dict[str, int] = {}
        self.created_at = created_at
        self.updated_at = created_at

    @property
    def available_cash(self) -> int:
        return self.cash - self.reserved_cash

    def available_shares(self, symbol: str) -> int:
        return self.holdings.get(symbol, 0) - self.reserved_shares.get(symbol, 0)

    def reserve_cash(self, amount: int, now: int) -> bool:
        if amount > self.cash - self.reserved_cash:
            return False
        self.reserved_cash += amount
        self.touch(now)
        return True

    def reserve_shares(self, symbol: str, quantity: int, now: int) -> bool:
        if quantity > self.available_shares(symbol):
            return False
        self.reserved_shares[symbol] = self.reserved_shares.get(symbol, 0) + quantity
        self.touch(now)
        return True

    def release_cash(self, amount: int, now: int) -> None:
        self.reserved_cash -= amount
        self.touch(now)

    def release_shares(self, symbol: str, quantity: int, now: int) -> None:
        reserved = self.reserved_shares[symbol] - quantity
        if reserved:
            self.reserved_shares[symbol] = reserved
        else:
            del self.reserved_shares[symbol]
        self.touch(now)

    def settle(self, symbol: str, legs: tuple[SettlementLeg, ...], now: int) -> None:
        """Apply this broker's legs of the trades of one matching pass (§3.5)."""
        holdings = self.holdings
        for leg in legs:
            if leg.side == BID:
                self.cash -= leg.value
                self.reserved_cash -= leg.release
                holdings[symbol] = holdings.get(symbol, 0) + leg.quantity
            else:
                self.cash += leg.value
                held = holdings[symbol] - leg.quantity
                if held:
                    holdings[symbol] = held
                else:
                    del holdings[symbol]
                reserved = self.reserved_shares[symbol] - leg.quantity
                if reserved:
                    self.reserved_shares[symbol] = reserved
                else:
                    del self.reserved_shares[symbol]
        self.touch(now)

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

        The clock never goes backwards, but settlements from several symbol actors may
        arrive out of their clock-reading order, so `updated_at` only moves forward.
        """
        if now > self.updated_at:
            self.updated_at = now
