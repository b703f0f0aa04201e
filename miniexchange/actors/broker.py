"""BrokerActor: the only writer of one broker's ledger (contract §3.7).

Every change to a broker's balances, from whatever symbol, is one message handled
alone, so check-and-reserve, settlement and release are each atomic and a funds check
always sees the latest state. A broker actor never asks anyone (no deadlock).
"""

from __future__ import annotations

from miniexchange.actors.base import ExchangeActor
from miniexchange.actors.messages import (
    ReadBalance,
    Release,
    ReserveCash,
    ReserveShares,
    Settle,
)
from miniexchange.clock import Clock
from miniexchange.model.ledger import Balance, Ledger


class BrokerActor(ExchangeActor):
    def __init__(self, ledger: Ledger, clock: Clock) -> None:
        super().__init__()
        self.ledger = ledger
        self.clock = clock

    def _at(self, at: int | None) -> int:
        """The time of the step that sent the message (see `actors.messages`)."""
        return self.clock.now() if at is None else at

    def _reserve_cash(self, message: ReserveCash) -> bool:
        return self.ledger.reserve_cash(message.amount, self._at(message.at))

    def _reserve_shares(self, message: ReserveShares) -> bool:
        return self.ledger.reserve_shares(message.symbol, message.quantity, self._at(message.at))

    def _release(self, message: Release) -> None:
        now = self._at(message.at)
        if message.cash:
            self.ledger.release_cash(message.cash, now)
        if message.quantity:
            self.ledger.release_shares(message.symbol, message.quantity, now)

    def _settle(self, message: Settle) -> None:
        self.ledger.settle(message.symbol, message.legs, self._at(message.at))

    def _read_balance(self, message: ReadBalance) -> Balance:
        return self.ledger.balance()

    handlers = {  # noqa: RUF012
        ReserveCash: _reserve_cash,
        ReserveShares: _reserve_shares,
        Release: _release,
        Settle: _settle,
        ReadBalance: _read_balance,
    }
