"""BrokerActor alone: reservations on available amounts, releases, settlements, reads."""

from __future__ import annotations

from typing import Any

import pykka
import pytest

from miniexchange.actors.broker import BrokerActor
from miniexchange.actors.messages import ReadBalance, Release, ReserveCash, ReserveShares, Settle
from miniexchange.model.commands import ASK, BID
from miniexchange.model.ledger import Balance, Holding, Ledger, SettlementLeg
from miniexchange.testing import ManualClock, Replies
from tests.actors.conftest import SECOND, T0, WAIT_S

CASH = 10_000_000  # 100000.00, the contract's worked example (§3.5)


@pytest.fixture
def broker(clock: ManualClock) -> pykka.ActorRef[Any]:
    ledger = Ledger("broker-1", CASH, {"AAPL": 100, "GOOG": 20}, clock.now())
    return BrokerActor.start(ledger, clock)


def balance(broker: pykka.ActorRef[Any]) -> Balance:
    replies = Replies()
    broker.tell(ReadBalance(replies))
    answer = replies.get(timeout=WAIT_S)
    assert isinstance(answer, Balance)
    return answer


def test_a_fresh_broker_reads_its_registration(broker: pykka.ActorRef[Any]) -> None:
    assert balance(broker) == Balance(
        "broker-1",
        CASH,
        0,
        (Holding("AAPL", 100, 0), Holding("GOOG", 20, 0)),
        created_at=T0,
        updated_at=T0,
    )


def test_read_balance_answers_an_ask_too(broker: pykka.ActorRef[Any]) -> None:
    replies = Replies()
    answer = broker.ask(ReadBalance(replies), timeout=WAIT_S)
    assert answer == replies.get(timeout=WAIT_S)
    assert answer.cash_balance == CASH


def test_reserve_cash_is_checked_against_available_cash(broker: pykka.ActorRef[Any]) -> None:
    assert broker.ask(ReserveCash(6_000_000), timeout=WAIT_S) is True
    # 4_000_001 is less than the total cash but more than what is available.
    assert broker.ask(ReserveCash(4_000_001), timeout=WAIT_S) is False
    assert broker.ask(ReserveCash(4_000_000), timeout=WAIT_S) is True
    assert broker.ask(ReserveCash(1), timeout=WAIT_S) is False
    read = balance(broker)
    assert (read.cash_balance, read.reserved_cash, read.available_cash) == (CASH, CASH, 0)


def test_reserve_shares_is_checked_against_available_quantity(
    broker: pykka.ActorRef[Any],
) -> None:
    assert broker.ask(ReserveShares("AAPL", 70), timeout=WAIT_S) is True
    assert broker.ask(ReserveShares("AAPL", 31), timeout=WAIT_S) is False
    assert broker.ask(ReserveShares("AAPL", 30), timeout=WAIT_S) is True
    assert broker.ask(ReserveShares("AAPL", 1), timeout=WAIT_S) is False
    assert broker.ask(ReserveShares("GOOG", 21), timeout=WAIT_S) is False
    assert broker.ask(ReserveShares("MSFT", 1), timeout=WAIT_S) is False  # never held
    assert balance(broker).holdings == (Holding("AAPL", 100, 100), Holding("GOOG", 20, 0))


def test_release_gives_back_cash_and_shares(broker: pykka.ActorRef[Any]) -> None:
    broker.ask(ReserveCash(1_500_000), timeout=WAIT_S)
    broker.ask(ReserveShares("AAPL", 40), timeout=WAIT_S)
    broker.tell(Release(cash=900_000))
    broker.tell(Release(symbol="AAPL", quantity=15))
    read = balance(broker)
    assert (read.cash_balance, read.reserved_cash, read.available_cash) == (
        CASH,
        600_000,
        CASH - 600_000,
    )
    assert read.holdings == (Holding("AAPL", 100, 25), Holding("GOOG", 20, 0))
    broker.tell(Release(cash=600_000, symbol="AAPL", quantity=25))
    read = balance(broker)
    assert read.reserved_cash == 0
    assert read.holdings == (Holding("AAPL", 100, 0), Holding("GOOG", 20, 0))


def test_a_buy_settles_as_in_the_worked_example(broker: pykka.ActorRef[Any]) -> None:
    """§3.5: 100 @ 150.00 reserved, 60 filled @ 148.00."""
    broker.ask(ReserveCash(1_500_000), timeout=WAIT_S)
    broker.tell(Settle("MSFT", (SettlementLeg(BID, 60, 888_000, 900_000),)))
    read = balance(broker)
    assert read.cash_balance == 9_112_000
    assert read.reserved_cash == 600_000
    assert read.available_cash == 8_512_000
    # A bought symbol appears, in symbol order.
    assert read.holdings == (
        Holding("AAPL", 100, 0),
        Holding("GOOG", 20, 0),
        Holding("MSFT", 60, 0),
    )


def test_a_sale_settles_and_a_sold_out_symbol_disappears(broker: pykka.ActorRef[Any]) -> None:
    broker.ask(ReserveShares("GOOG", 20), timeout=WAIT_S)
    broker.ask(ReserveShares("AAPL", 50), timeout=WAIT_S)
    broker.tell(
        Settle("GOOG", (SettlementLeg(ASK, 5, 50_000, 0), SettlementLeg(ASK, 15, 147_000, 0)))
    )
    broker.tell(Settle("AAPL", (SettlementLeg(ASK, 30, 444_000, 0),)))
    read = balance(broker)
    assert read.cash_balance == CASH + 50_000 + 147_000 + 444_000
    assert read.reserved_cash == 0
    assert read.holdings == (Holding("AAPL", 70, 20),)


def test_a_self_trade_nets_cash_to_zero(broker: pykka.ActorRef[Any]) -> None:
    broker.ask(ReserveShares("AAPL", 10), timeout=WAIT_S)
    broker.ask(ReserveCash(100_000), timeout=WAIT_S)
    legs = (SettlementLeg(BID, 10, 100_000, 100_000), SettlementLeg(ASK, 10, 100_000, 0))
    broker.tell(Settle("AAPL", legs))
    read = balance(broker)
    assert (read.cash_balance, read.reserved_cash) == (CASH, 0)
    assert read.holdings == (Holding("AAPL", 100, 0), Holding("GOOG", 20, 0))


def test_updated_at_moves_with_the_clock_on_every_change_only(
    broker: pykka.ActorRef[Any], clock: ManualClock
) -> None:
    t1 = clock.advance(seconds=1)
    assert broker.ask(ReserveCash(1_500_000), timeout=WAIT_S) is True
    assert balance(broker).updated_at == t1

    clock.advance(seconds=1)
    assert broker.ask(ReserveCash(CASH), timeout=WAIT_S) is False  # refused: no change
    assert broker.ask(ReserveShares("AAPL", 101), timeout=WAIT_S) is False
    assert balance(broker).updated_at == t1

    t3 = clock.advance(seconds=1)
    assert broker.ask(ReserveShares("AAPL", 10), timeout=WAIT_S) is True
    assert balance(broker).updated_at == t3

    t4 = clock.advance(seconds=1)
    broker.tell(Settle("AAPL", (SettlementLeg(BID, 60, 888_000, 900_000),)))
    assert balance(broker).updated_at == t4

    t5 = clock.advance(seconds=1)
    broker.tell(Release(cash=600_000))
    assert balance(broker).updated_at == t5

    t6 = clock.advance(seconds=1)
    broker.tell(Release(symbol="AAPL", quantity=10))
    read = balance(broker)
    assert read.updated_at == t6 == T0 + 6 * SECOND
    assert read.created_at == T0

    clock.advance(seconds=1)
    assert balance(broker).updated_at == t6  # reading changes nothing


def test_updated_at_is_the_time_of_the_step_that_sent_the_message(
    broker: pykka.ActorRef[Any], clock: ManualClock
) -> None:
    """A symbol actor stamps its messages with its step's clock reading (`at`)."""
    clock.advance(seconds=10)
    assert broker.ask(ReserveCash(1_500_000, at=T0 + 3 * SECOND), timeout=WAIT_S) is True
    assert balance(broker).updated_at == T0 + 3 * SECOND

    broker.tell(Settle("AAPL", (SettlementLeg(BID, 60, 888_000, 900_000),), at=T0 + 5 * SECOND))
    assert balance(broker).updated_at == T0 + 5 * SECOND

    # A message from another symbol's earlier step arrives late: updated_at never goes back.
    broker.tell(Release(cash=600_000, at=T0 + 4 * SECOND))
    read = balance(broker)
    assert (read.reserved_cash, read.updated_at) == (0, T0 + 5 * SECOND)

    assert broker.ask(ReserveShares("AAPL", 1, at=T0 + 6 * SECOND), timeout=WAIT_S) is True
    assert balance(broker).updated_at == T0 + 6 * SECOND


def test_a_failing_message_is_logged_and_the_actor_keeps_serving(
    broker: pykka.ActorRef[Any],
) -> None:
    # Releasing shares that were never reserved is a caller bug (KeyError in the ledger):
    # ExchangeActor logs it and carries on instead of dying.
    broker.tell(Release(symbol="MSFT", quantity=1))
    assert broker.is_alive()
    assert broker.ask(ReserveCash(1), timeout=WAIT_S) is True
    assert balance(broker).reserved_cash == 1
