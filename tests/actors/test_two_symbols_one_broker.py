"""Two symbols settling one broker at the same moment, with real actors (the registry,
its account actors, two symbol actors) and a manual clock.

Broker B sends a bid on AAPL and an ask on GOOG, each crossing a resting order of
another broker. Both symbol actors match at once, each on its own thread; a symbol
actor tells the account actors its settlement only once the journal says its facts
are durable. The journal here holds every commit until the test lets it through, so
the test knows that both steps were taken before either settled, and decides in
which order the two settlements reach B's account actor: each order is tried, and
B's cash, holdings and reservations are checked exactly after each settlement.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import orjson
import pytest

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import Submit
from miniexchange.journal import facts
from miniexchange.journal.store import Durable
from miniexchange.model.commands import ASK, BID, LIMIT, SubmitOrder
from miniexchange.model.ledger import Holding
from miniexchange.model.orders import PARTIALLY_FILLED
from miniexchange.testing import (
    FakeDeliveries,
    ManualClock,
    RecordingJournal,
    Replies,
    SequentialIds,
)
from tests.actors.conftest import SECOND, T0, WAIT_S, balance, register, submit

E1 = T0 + 3600 * SECOND
CASH = 10_000_00  # B's 10000.00
GOOG_SHARES = 20


class HeldJournal(RecordingJournal):
    """Records facts in memory; once `hold()` is called, each append waits (its facts
    and its `done`) until the test `commit`s it, in the test's thread."""

    def __init__(self) -> None:
        super().__init__()
        self._holding = False
        self._held: list[tuple[tuple[facts.Fact, ...], Durable]] = []
        self._changed = threading.Condition()

    def hold(self) -> None:
        with self._changed:
            self._holding = True

    def append(self, new: Sequence[facts.Fact], done: Durable) -> None:
        with self._changed:
            if self._holding:
                self._held.append((tuple(new), done))
                self._changed.notify_all()
                return
        super().append(new, done)

    def held(self, count: int) -> dict[str, tuple[tuple[facts.Fact, ...], Durable]]:
        """The first `count` held appends, once made, by the symbol their order is for."""
        with self._changed:
            assert self._changed.wait_for(lambda: len(self._held) >= count, WAIT_S)
            held = list(self._held)
        assert len(held) == count, held
        return {symbol_of(new): (new, done) for new, done in held}

    def commit(self, held: tuple[tuple[facts.Fact, ...], Durable]) -> None:
        new, done = held
        super().append(new, done)  # records, then runs `done` here: the symbol actor's R2

    def appended_while_holding(self) -> int:
        with self._changed:
            return len(self._held)


def symbol_of(step: Sequence[facts.Fact]) -> str:
    (symbol,) = {
        orjson.loads(body)["symbol"] for kind, body in step if kind == facts.ORDER_ACCEPTED
    }
    return symbol


@pytest.fixture
def journal() -> HeldJournal:
    return HeldJournal()


@pytest.fixture
def exchange(clock: ManualClock, ids: SequentialIds, journal: HeldJournal) -> Iterator[Exchange]:
    started = Exchange(
        clock, ids, expiration_interval_s=None, journal=journal, deliveries=FakeDeliveries()
    )
    started.start()
    yield started
    started.stop()


def limit(broker_id: str, symbol: str, side: str, price: int, quantity: int) -> SubmitOrder:
    return SubmitOrder(LIMIT, broker_id, "12345678900", side, symbol, quantity, price, E1)


# B's balance after each settlement alone and after both (cents, shares). The AAPL bid
# holds 10 × 151.00 and buys 6 at 148.00: 888.00 paid, 906.00 of its hold gone (the
# 18.00 improvement given back), 4 × 151.00 still held. The GOOG ask holds 8 shares and
# sells 5 at its own 199.00 (two limit orders trade at the seller's price): 995.00
# received, 3 shares still held.
HELD_BOTH = (CASH, 10 * 151_00, (Holding("GOOG", GOOG_SHARES, 8),))
AFTER = {
    "AAPL": (
        CASH - 6 * 148_00,
        4 * 151_00,
        (Holding("AAPL", 6, 0), Holding("GOOG", GOOG_SHARES, 8)),
    ),
    "GOOG": (CASH + 5 * 199_00, 10 * 151_00, (Holding("GOOG", GOOG_SHARES - 5, 3),)),
}
BOTH = (
    CASH - 6 * 148_00 + 5 * 199_00,
    4 * 151_00,
    (Holding("AAPL", 6, 0), Holding("GOOG", GOOG_SHARES - 5, 3)),
)


@pytest.mark.parametrize("first", ["AAPL", "GOOG"])
def test_two_symbols_settle_one_broker_in_either_order_exactly(
    exchange: Exchange, journal: HeldJournal, first: str
) -> None:
    register(exchange, "B", CASH, GOOG=GOOG_SHARES)
    register(exchange, "S", 0, AAPL=6)
    register(exchange, "T", 1_000_00)
    submit(exchange, limit("S", "AAPL", ASK, 148_00, 6))
    submit(exchange, limit("T", "GOOG", BID, 200_00, 5))

    journal.hold()
    answers = {"AAPL": Replies(), "GOOG": Replies()}
    exchange.submit(Submit(limit("B", "AAPL", BID, 151_00, 10), answers["AAPL"]))
    exchange.submit(Submit(limit("B", "GOOG", ASK, 199_00, 8), answers["GOOG"]))
    steps = journal.held(2)  # both symbol actors have matched; nothing has settled
    assert sorted(steps) == ["AAPL", "GOOG"]
    kinds = {symbol: [kind for kind, _ in new] for symbol, (new, _) in steps.items()}
    assert kinds == {symbol: [facts.ORDER_ACCEPTED, facts.TRADE_EXECUTED] for symbol in steps}
    held = balance(exchange, "B")
    assert (held.cash_balance, held.reserved_cash, held.holdings) == HELD_BOTH

    second = "GOOG" if first == "AAPL" else "AAPL"
    journal.commit(steps[first])
    after_first = balance(exchange, "B")
    assert (after_first.cash_balance, after_first.reserved_cash, after_first.holdings) == (
        AFTER[first]
    )
    journal.commit(steps[second])
    after_both = balance(exchange, "B")
    assert (after_both.cash_balance, after_both.reserved_cash, after_both.holdings) == BOTH
    assert journal.appended_while_holding() == 2  # nothing else was journaled meanwhile

    bid, ask = (answers[symbol].get(timeout=WAIT_S) for symbol in ("AAPL", "GOOG"))
    assert (bid.status, bid.filled_quantity, bid.remaining_quantity) == (PARTIALLY_FILLED, 6, 4)
    assert (ask.status, ask.filled_quantity, ask.remaining_quantity) == (PARTIALLY_FILLED, 5, 3)
    assert [(t.price, t.quantity) for t in bid.trades] == [(148_00, 6)]
    assert [(t.price, t.quantity) for t in ask.trades] == [(199_00, 5)]
    # the counterparties, settled by the same steps
    seller, buyer = balance(exchange, "S"), balance(exchange, "T")
    assert (seller.cash_balance, seller.reserved_cash, seller.holdings) == (6 * 148_00, 0, ())
    assert (buyer.cash_balance, buyer.reserved_cash, buyer.holdings) == (
        1_000_00 - 5 * 199_00,
        0,
        (Holding("GOOG", 5, 0),),
    )
    # conservation across the three brokers
    everyone = [after_both, seller, buyer]
    assert sum(b.cash_balance for b in everyone) == CASH + 1_000_00
    shares = [(h.symbol, h.quantity) for b in everyone for h in b.holdings]
    assert sorted(shares) == [("AAPL", 6), ("GOOG", 5), ("GOOG", GOOG_SHARES - 5)]
