"""BrokerAccount alone: reservations on available amounts, releases, settlements, reads,
and atomic check-and-reserve when many symbol actors' threads reserve at once."""

from __future__ import annotations

import threading

import pytest

from miniexchange.actors.accounts import BrokerAccount
from miniexchange.model.commands import ASK, BID
from miniexchange.model.ledger import Balance, Holding, Ledger, SettlementLeg
from miniexchange.testing import ManualClock
from tests.actors.conftest import SECOND, T0

CASH = 10_000_000  # 100000.00, the contract's worked example (§3.5)


@pytest.fixture
def broker(clock: ManualClock) -> BrokerAccount:
    return BrokerAccount(Ledger("broker-1", CASH, {"AAPL": 100, "GOOG": 20}, clock.now()))


def balance(broker: BrokerAccount) -> Balance:
    return broker.balance()


def test_a_fresh_broker_reads_its_registration(broker: BrokerAccount) -> None:
    assert balance(broker) == Balance(
        "broker-1",
        CASH,
        0,
        (Holding("AAPL", 100, 0), Holding("GOOG", 20, 0)),
        created_at=T0,
        updated_at=T0,
    )


def test_reserve_cash_is_checked_against_available_cash(
    broker: BrokerAccount, clock: ManualClock
) -> None:
    assert broker.reserve_cash(6_000_000, clock.now()) is True
    # 4_000_001 is less than the total cash but more than what is available.
    assert broker.reserve_cash(4_000_001, clock.now()) is False
    assert broker.reserve_cash(4_000_000, clock.now()) is True
    assert broker.reserve_cash(1, clock.now()) is False
    read = balance(broker)
    assert (read.cash_balance, read.reserved_cash, read.available_cash) == (CASH, CASH, 0)


def test_reserve_shares_is_checked_against_available_quantity(
    broker: BrokerAccount, clock: ManualClock
) -> None:
    assert broker.reserve_shares("AAPL", 70, clock.now()) is True
    assert broker.reserve_shares("AAPL", 31, clock.now()) is False
    assert broker.reserve_shares("AAPL", 30, clock.now()) is True
    assert broker.reserve_shares("AAPL", 1, clock.now()) is False
    assert broker.reserve_shares("GOOG", 21, clock.now()) is False
    assert broker.reserve_shares("MSFT", 1, clock.now()) is False  # never held
    assert balance(broker).holdings == (Holding("AAPL", 100, 100), Holding("GOOG", 20, 0))


def test_release_gives_back_cash_and_shares(broker: BrokerAccount, clock: ManualClock) -> None:
    broker.reserve_cash(1_500_000, clock.now())
    broker.reserve_shares("AAPL", 40, clock.now())
    broker.release(900_000, "", 0, clock.now())
    broker.release(0, "AAPL", 15, clock.now())
    read = balance(broker)
    assert (read.cash_balance, read.reserved_cash, read.available_cash) == (
        CASH,
        600_000,
        CASH - 600_000,
    )
    assert read.holdings == (Holding("AAPL", 100, 25), Holding("GOOG", 20, 0))
    broker.release(600_000, "AAPL", 25, clock.now())
    read = balance(broker)
    assert read.reserved_cash == 0
    assert read.holdings == (Holding("AAPL", 100, 0), Holding("GOOG", 20, 0))


def test_a_buy_settles_as_in_the_worked_example(broker: BrokerAccount, clock: ManualClock) -> None:
    """§3.5: 100 @ 150.00 reserved, 60 filled @ 148.00."""
    broker.reserve_cash(1_500_000, clock.now())
    broker.settle("MSFT", (SettlementLeg(BID, 60, 888_000, 900_000),), clock.now())
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


def test_a_sale_settles_and_a_sold_out_symbol_disappears(
    broker: BrokerAccount, clock: ManualClock
) -> None:
    broker.reserve_shares("GOOG", 20, clock.now())
    broker.reserve_shares("AAPL", 50, clock.now())
    legs = (SettlementLeg(ASK, 5, 50_000, 0), SettlementLeg(ASK, 15, 147_000, 0))
    broker.settle("GOOG", legs, clock.now())
    broker.settle("AAPL", (SettlementLeg(ASK, 30, 444_000, 0),), clock.now())
    read = balance(broker)
    assert read.cash_balance == CASH + 50_000 + 147_000 + 444_000
    assert read.reserved_cash == 0
    assert read.holdings == (Holding("AAPL", 70, 20),)


def test_a_self_trade_nets_cash_to_zero(broker: BrokerAccount, clock: ManualClock) -> None:
    broker.reserve_shares("AAPL", 10, clock.now())
    broker.reserve_cash(100_000, clock.now())
    legs = (SettlementLeg(BID, 10, 100_000, 100_000), SettlementLeg(ASK, 10, 100_000, 0))
    broker.settle("AAPL", legs, clock.now())
    read = balance(broker)
    assert (read.cash_balance, read.reserved_cash) == (CASH, 0)
    assert read.holdings == (Holding("AAPL", 100, 0), Holding("GOOG", 20, 0))


def test_updated_at_moves_with_the_clock_on_every_change_only(
    broker: BrokerAccount, clock: ManualClock
) -> None:
    t1 = clock.advance(seconds=1)
    assert broker.reserve_cash(1_500_000, clock.now()) is True
    assert balance(broker).updated_at == t1

    clock.advance(seconds=1)
    assert broker.reserve_cash(CASH, clock.now()) is False  # refused: no change
    assert broker.reserve_shares("AAPL", 101, clock.now()) is False
    assert balance(broker).updated_at == t1

    t3 = clock.advance(seconds=1)
    assert broker.reserve_shares("AAPL", 10, clock.now()) is True
    assert balance(broker).updated_at == t3

    t4 = clock.advance(seconds=1)
    broker.settle("AAPL", (SettlementLeg(BID, 60, 888_000, 900_000),), clock.now())
    assert balance(broker).updated_at == t4

    t5 = clock.advance(seconds=1)
    broker.release(600_000, "", 0, clock.now())
    assert balance(broker).updated_at == t5

    t6 = clock.advance(seconds=1)
    broker.release(0, "AAPL", 10, clock.now())
    read = balance(broker)
    assert read.updated_at == t6 == T0 + 6 * SECOND
    assert read.created_at == T0

    clock.advance(seconds=1)
    assert balance(broker).updated_at == t6  # reading changes nothing


def test_updated_at_is_the_time_of_the_step_that_made_the_change(
    broker: BrokerAccount, clock: ManualClock
) -> None:
    """A symbol actor stamps each change with its step's clock reading (`at`)."""
    clock.advance(seconds=10)
    assert broker.reserve_cash(1_500_000, T0 + 3 * SECOND) is True
    assert balance(broker).updated_at == T0 + 3 * SECOND

    broker.settle("AAPL", (SettlementLeg(BID, 60, 888_000, 900_000),), T0 + 5 * SECOND)
    assert balance(broker).updated_at == T0 + 5 * SECOND

    # A change from another symbol's earlier step comes late: updated_at never goes back.
    broker.release(600_000, "", 0, T0 + 4 * SECOND)
    read = balance(broker)
    assert (read.reserved_cash, read.updated_at) == (0, T0 + 5 * SECOND)

    assert broker.reserve_shares("AAPL", 1, T0 + 6 * SECOND) is True
    assert balance(broker).updated_at == T0 + 6 * SECOND


def test_concurrent_reservations_never_hold_more_than_is_available(
    broker: BrokerAccount, clock: ManualClock
) -> None:
    """Check-and-reserve is atomic: 8 threads race 16,000 reservations of 10.00 for the
    100000.00 of cash: exactly the 10,000 that fit succeed."""
    now = clock.now()
    granted: list[bool] = []
    start = threading.Barrier(8)

    def reserve() -> None:
        start.wait()
        mine = [broker.reserve_cash(1_000, now) for _ in range(2_000)]
        granted.extend(mine)

    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == CASH // 1_000 == 10_000
    read = balance(broker)
    assert (read.reserved_cash, read.available_cash) == (CASH, 0)
