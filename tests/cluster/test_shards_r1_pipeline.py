"""R1 sends a batch's orders to the account actors without waiting for each: every hold
must still be decided in `seq` order, a shortfall's hold of what is available before
the next order's reservation. One broker's orders in one batch, where later ones are
short only because of the earlier ones' holds, with exact parts, answers and balances,
on one and on two account actors per shard."""

from __future__ import annotations

from collections.abc import Iterator

import pykka
import pytest

from miniexchange.cluster.batches import SubscribeWebhooks
from miniexchange.cluster.shards import BUDGET, RESERVED, SHORTFALL, MatchPart
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.events import TRADE_EXECUTED
from miniexchange.model.ledger import Balance, Holding, Released
from miniexchange.model.orders import FILLED, PENDING, Order
from miniexchange.model.subscriptions import Upserted
from miniexchange.testing import ManualClock
from tests.cluster.shard_support import SECOND, T0, Shards, Stamper, observe_shards

DOC = "12345678900"
READ_AT = T0 + 60 * SECOND
EXPIRES = T0 + 600 * SECOND
NO_CASH = ("insufficient_balance", "Broker buyer has insufficient available cash for this order")
NO_SHARES = (
    "insufficient_holdings",
    "Broker seller has insufficient available quantity of AAPL for this order",
)


@pytest.fixture(params=[1, 2], ids=["one-actor", "two-actors"])
def shards(request: pytest.FixtureRequest) -> Iterator[Shards]:
    started = Shards(2, 2, ManualClock(READ_AT), account_actors=request.param)
    assert [started.placement.account_shard(b) for b in ("seller", "buyer")] == [0, 1]
    assert [started.placement.symbol_shard(s) for s in ("AAPL", "MSFT")] == [0, 1]
    yield started
    started.stop()
    pykka.ActorRegistry.stop_all()


def limit(broker: str, side: str, price: int, quantity: int, symbol: str = "AAPL") -> SubmitOrder:
    return SubmitOrder(LIMIT, broker, DOC, side, symbol, quantity, price, EXPIRES)


def refused(answer: object) -> tuple[str, str]:
    assert isinstance(answer, ExchangeError), answer
    return answer.code, answer.message


def status(answer: object) -> str:
    assert isinstance(answer, Order), answer
    return answer.status


def funds(part: MatchPart) -> list[tuple[int, str, str, int, int]]:
    """What R1 sent ME: (seq, funds, symbol, cash, shares) per command."""
    return [(c.stamped.seq, c.funds, c.symbol, c.cash, c.quantity) for c in part.commands]


def registered(shards: Shards, stamper: Stamper) -> None:
    """The seller with 10 AAPL and 10 MSFT, the buyer with 10,000 cents."""
    shards.run(
        stamper.batch(
            [
                stamper.stamp(RegisterBroker("seller", 0, (("AAPL", 10), ("MSFT", 10)))),
                stamper.stamp(RegisterBroker("buyer", 10_000, ())),
            ]
        )
    )


def test_each_hold_of_a_batch_follows_the_holds_before_it_in_seq_order(shards: Shards) -> None:
    """The buyer's bids of 3,000 each: three fit, the fourth is short only because of
    them and, holding on AAPL, holds the 1,000 left (its shortfall); the fifth finds
    nothing left. The MSFT bid of 1,000 would fit were the fourth's hold not taken
    before it: it is refused in R1. The seller's asks of 4 shares: two fit, the third
    holds the 2 left, the fourth none."""
    stamper = Stamper()
    registered(shards, stamper)
    bids = [stamper.stamp(limit("buyer", BID, 3_000, 1)) for _ in range(5)]
    msft = stamper.stamp(limit("buyer", BID, 1_000, 1, "MSFT"))
    asks = [stamper.stamp(limit("seller", ASK, 20_000, 4)) for _ in range(4)]
    batch = stamper.batch([*bids[:2], asks[0], *bids[2:], asks[1], msft, *asks[2:]])
    parts = shards.r1(batch)
    buyer, seller = shards.account("buyer"), shards.account("seller")
    # R1 alone: what each held, in seq order
    assert funds(parts[1][0]) == [
        (bids[0].seq, RESERVED, "AAPL", 3_000, 0),
        (bids[1].seq, RESERVED, "AAPL", 3_000, 0),
        (bids[2].seq, RESERVED, "AAPL", 3_000, 0),
        (bids[3].seq, SHORTFALL, "AAPL", 1_000, 0),
        (bids[4].seq, SHORTFALL, "AAPL", 0, 0),
    ]
    assert parts[1][1].commands == ()  # the MSFT bid is refused in R1
    assert funds(parts[0][0]) == [
        (asks[0].seq, RESERVED, "AAPL", 0, 4),
        (asks[1].seq, RESERVED, "AAPL", 0, 4),
        (asks[2].seq, SHORTFALL, "AAPL", 0, 2),
        (asks[3].seq, SHORTFALL, "AAPL", 0, 0),
    ]
    assert buyer.balance("buyer").reserved_cash == 10_000
    assert seller.balance("seller").holdings == (Holding("AAPL", 10, 10), Holding("MSFT", 10, 0))
    matched = shards.me(batch.k, parts)
    answers = shards.r2(batch.k, matched)
    assert [status(answers[b.seq]) for b in bids[:3]] == [PENDING] * 3
    assert [refused(answers[b.seq]) for b in bids[3:]] == [NO_CASH, NO_CASH]
    assert refused(answers[msft.seq]) == NO_CASH
    assert [status(answers[a.seq]) for a in asks[:2]] == [PENDING] * 2
    assert [refused(answers[a.seq]) for a in asks[2:]] == [NO_SHARES, NO_SHARES]
    # R2 gave back what the refused shortfalls held, nothing more
    assert buyer.balance("buyer") == Balance("buyer", 10_000, 9_000, (), T0 + SECOND, bids[2].at)
    assert seller.balance("seller") == Balance(
        "seller",
        0,
        0,
        (Holding("AAPL", 10, 8), Holding("MSFT", 10, 0)),
        T0 + SECOND // 2,
        asks[1].at,
    )


def test_a_market_budget_and_a_registration_in_the_batch_keep_their_places(
    shards: Shards,
) -> None:
    """A market bid's budget is all the cash its R1 finds: the limit bid before it is
    held first, the one after finds nothing. A broker registered in the batch has its
    ledger for its own orders after it, and its subscription sees it registered."""
    stamper = Stamper()
    registered(shards, stamper)
    shards.run(stamper.batch([stamper.stamp(limit("seller", ASK, 1_000, 3, "MSFT"))]))
    before = stamper.stamp(limit("buyer", BID, 2_000, 1))
    sweep = stamper.stamp(SubmitOrder(MARKET, "buyer", DOC, BID, "MSFT", 2))
    after = stamper.stamp(limit("buyer", BID, 100, 1))
    early = stamper.stamp(limit("late", BID, 100, 1))
    register = stamper.stamp(RegisterBroker("late", 500, ()))
    fits = stamper.stamp(limit("late", BID, 100, 3))
    short = stamper.stamp(limit("late", BID, 300, 1))
    subscribe = stamper.stamp(
        SubscribeWebhooks("late", "https://hooks.example/l", (TRADE_EXECUTED,))
    )
    batch = stamper.batch([before, sweep, after, early, register, fits, short, subscribe])
    parts = shards.r1(batch)
    assert funds(parts[1][0])[:2] == [
        (before.seq, RESERVED, "AAPL", 2_000, 0),
        (after.seq, SHORTFALL, "AAPL", 0, 0),  # it holds on AAPL: ME expires, then refuses
    ]
    assert funds(parts[1][1]) == [(sweep.seq, BUDGET, "MSFT", 8_000, 0)]
    late = shards.placement.account_shard("late")
    assert funds(parts[late][0])[-2:] == [
        (fits.seq, RESERVED, "AAPL", 300, 0),
        (short.seq, SHORTFALL, "AAPL", 200, 0),
    ]
    answers = shards.r2(batch.k, shards.me(batch.k, parts))
    assert status(answers[before.seq]) == PENDING
    assert status(answers[sweep.seq]) == FILLED
    assert refused(answers[after.seq]) == NO_CASH  # nothing on AAPL was due
    assert refused(answers[early.seq]) == ("broker_not_found", "Broker late does not exist")
    assert isinstance(answers[register.seq], Balance)
    assert status(answers[fits.seq]) == PENDING
    assert refused(answers[short.seq])[0] == "insufficient_balance"
    subscribed = answers[subscribe.seq]
    assert isinstance(subscribed, Upserted) and subscribed.created
    assert shards.account("buyer").balance("buyer") == Balance(
        "buyer", 8_000, 2_000, (Holding("MSFT", 2, 0),), T0 + SECOND, sweep.at
    )
    late_balance = shards.account("late").balance("late")
    assert (late_balance.cash_balance, late_balance.reserved_cash) == (500, 300)


def test_the_budgets_rest_is_released_in_r2_after_the_sweep() -> None:
    """The market bid's budget: 8,000 held in R1, 2,000 spent, 6,000 released in R2."""
    shards = Shards(2, 2, ManualClock(READ_AT))
    try:
        stamper = Stamper()
        registered(shards, stamper)
        shards.run(stamper.batch([stamper.stamp(limit("seller", ASK, 1_000, 2, "MSFT"))]))
        hold = stamper.stamp(limit("buyer", BID, 2_000, 1))
        sweep = stamper.stamp(SubmitOrder(MARKET, "buyer", DOC, BID, "MSFT", 2))
        batch = stamper.batch([hold, sweep])
        matched = shards.me(batch.k, shards.r1(batch))
        (effects,) = matched[1][1].effects
        assert effects.changes[-1] == Released("buyer", "MSFT", 6_000, 0, None)
        shards.r2(batch.k, matched)
        balance = shards.account("buyer").balance("buyer")
        assert (balance.cash_balance, balance.reserved_cash) == (8_000, 2_000)
    finally:
        shards.stop()
        pykka.ActorRegistry.stop_all()


def test_a_batch_decides_the_same_on_one_or_two_account_actors() -> None:
    """The actors of a shard answer R1 concurrently; the state built must not depend on
    which finished first, nor on how the brokers are spread over them."""
    seen = []
    for actors in (1, 2, 1):
        shards = Shards(2, 2, ManualClock(READ_AT), account_actors=actors)
        try:
            stamper = Stamper()
            registered(shards, stamper)
            commands = [
                stamper.stamp(
                    limit(
                        ("buyer", "seller")[n % 2],
                        (BID, ASK)[n % 2],
                        (900, 1_000, 1_100)[n % 3],
                        1 + n % 4,
                        ("AAPL", "MSFT")[n % 5 == 0],
                    )
                )
                for n in range(60)
            ]
            for first in range(0, 60, 20):
                shards.run(stamper.batch(commands[first : first + 20]))
            seen.append(observe_shards(shards, ["buyer", "seller"], ["AAPL", "MSFT"]))
        finally:
            shards.stop()
            pykka.ActorRegistry.stop_all()
    assert seen[0] == seen[1] == seen[2]
