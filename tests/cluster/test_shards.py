"""Account and symbol shards without Ray, two of each, driven phase by phase: what each
phase decides and sends, with exact values. The seller's ledger is in account shard 0,
the buyer's in 1; AAPL is matched in symbol shard 0, MSFT in 1."""

from __future__ import annotations

from collections.abc import Iterator

import pykka
import pytest

from miniexchange.actors.messages import Issued
from miniexchange.cluster.batches import (
    CancelOrder,
    IssueCredentials,
    SubscribeWebhooks,
    UnsubscribeWebhook,
)
from miniexchange.cluster.shards import AccountShard, PhaseOrderError, Placement, SymbolShard
from miniexchange.cluster.stamped import Tick
from miniexchange.ids import seeded_uuid4
from miniexchange.model.book import Level
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.events import TRADE_EXECUTED
from miniexchange.model.ledger import Accepted, Balance, Held, Holding, Released
from miniexchange.model.orders import (
    CANCELLED,
    EXPIRED,
    FILLED,
    PARTIALLY_FILLED,
    PENDING,
    Order,
    Trade,
)
from miniexchange.model.subscriptions import Upserted
from miniexchange.model.vwap import Price
from miniexchange.testing import FakeDeliveries, ManualClock
from tests.cluster.shard_support import SECOND, T0, WAIT_S, Shards, Stamper

DOC = "12345678900"
READ_AT = T0 + 60 * SECOND  # the shards' clock, reads only: after the stamps, before EXPIRES
EXPIRES = T0 + 600 * SECOND


@pytest.fixture
def shards() -> Iterator[Shards]:
    started = Shards(2, 2, ManualClock(READ_AT))
    assert [started.placement.account_shard(b) for b in ("seller", "buyer")] == [0, 1]
    assert [started.placement.symbol_shard(s) for s in ("AAPL", "MSFT")] == [0, 1]
    yield started
    started.stop()
    pykka.ActorRegistry.stop_all()


def limit(
    broker: str, side: str, price: int, quantity: int, symbol: str = "AAPL", expires: int = EXPIRES
) -> SubmitOrder:
    return SubmitOrder(LIMIT, broker, DOC, side, symbol, quantity, price, expires)


def market(broker: str, side: str, quantity: int, symbol: str = "AAPL") -> SubmitOrder:
    return SubmitOrder(MARKET, broker, DOC, side, symbol, quantity)


def refused(answer: object) -> tuple[str, str]:
    assert isinstance(answer, ExchangeError), answer
    return answer.code, answer.message


def order(answer: object) -> Order:
    assert isinstance(answer, Order), answer
    return answer


def registered(shards: Shards, stamper: Stamper, buyer_cash: int = 10_000) -> None:
    """The seller with 10 AAPL, the buyer with cash, in one batch."""
    answers = shards.run(
        stamper.batch(
            [
                stamper.stamp(RegisterBroker("seller", 0, (("AAPL", 10),))),
                stamper.stamp(RegisterBroker("buyer", buyer_cash, ())),
            ]
        )
    )
    assert all(isinstance(answer, Balance) for answer in answers.values())


def test_limit_orders_of_brokers_in_two_account_shards_trade_in_one_batch(
    shards: Shards,
) -> None:
    stamper = Stamper()
    stamped = [
        stamper.stamp(RegisterBroker("seller", 0, (("AAPL", 10),))),
        stamper.stamp(RegisterBroker("buyer", 10_000, ())),
        stamper.stamp(limit("seller", ASK, 1_000, 5)),
        stamper.stamp(limit("buyer", BID, 1_100, 3), request_id="req-4"),
    ]
    at = [s.at for s in stamped]
    answers = shards.run(stamper.batch(stamped))
    assert list(answers) == [1, 2, 3, 4]
    assert answers[1] == Balance("seller", 0, 0, (Holding("AAPL", 10, 0),), at[0], at[0])
    assert answers[2] == Balance("buyer", 10_000, 0, (), at[1], at[1])
    ask_id, bid_id = stamped[2].order_id, stamped[3].order_id
    trade = Trade(
        f"trd-{seeded_uuid4(4, 1)}", "AAPL", 1_000, 3, at[3], bid_id, ask_id, "buyer", "seller"
    )
    ask, bid = order(answers[3]), order(answers[4])
    assert (ask.order_id, ask.status, ask.remaining_quantity, ask.created_at) == (
        ask_id,
        PENDING,
        5,
        at[2],
    )
    assert (bid.order_id, bid.status, tuple(bid.trades)) == (bid_id, FILLED, (trade,))
    # R2: each ledger in its own shard, settled at the trade's price
    assert shards.account("buyer").balance("buyer") == Balance(
        "buyer", 7_000, 0, (Holding("AAPL", 3, 0),), at[1], at[3]
    )
    assert shards.account("seller").balance("seller") == Balance(
        "seller", 3_000, 0, (Holding("AAPL", 7, 2),), at[0], at[3]
    )
    # each order is read from the shard its id names, which is its broker's
    seller_shard, buyer_shard = shards.accounts
    resting = seller_shard.order(ask_id)
    assert resting is not None
    assert (resting.status, resting.remaining_quantity, tuple(resting.trades)) == (
        PARTIALLY_FILLED,
        2,
        (trade,),
    )
    assert buyer_shard.order(ask_id) is None
    assert buyer_shard.order(bid_id) == bid
    assert buyer_shard.broker_orders("buyer", None, 0, 10) == ([bid], 1)
    aapl = shards.symbol("AAPL")
    assert aapl.book("AAPL", 10).asks == [Level(1_000, 2, 1)]
    assert aapl.price("AAPL") == Price(1_000, 1, at[3])  # in the 5-minute window
    assert aapl.market_data.feed("AAPL").latest_trades(10) == [trade]
    assert not shards.symbol("MSFT").has_book("MSFT")


def test_r1_holds_a_market_bids_budget_so_the_next_batch_in_flight_cannot_spend_it(
    shards: Shards,
) -> None:
    """The race of two batches in flight: R1 of batch 4 runs before R2 of batch 3, whose
    market bid will cost 5,200 of the buyer's 10,000. R1 of batch 3 held all 10,000 as
    its budget, so batch 4's limit bid of 8,000 is refused instead of being held on top
    of the market bid's cost; R2 of batch 3 gives back the 4,800 the sweep left."""
    stamper = Stamper()
    registered(shards, stamper)
    shards.run(
        stamper.batch(
            [
                stamper.stamp(limit("seller", ASK, 1_000, 3)),
                stamper.stamp(limit("seller", ASK, 1_100, 4)),
            ]
        )
    )
    buy = stamper.stamp(market("buyer", BID, 5))
    sweep = stamper.batch([buy])
    late = stamper.batch([stamper.stamp(limit("buyer", BID, 8_000, 1, "MSFT"))], after=2)
    buyer = shards.account("buyer")
    matched = shards.me(sweep.k, shards.r1(sweep))
    assert buyer.balance("buyer").reserved_cash == 10_000  # the budget, held in R1
    with pytest.raises(PhaseOrderError):  # as if cut after R2 of batch 3: not run yet
        buyer.r1(late._replace(after=3))
    late_r1 = shards.r1(late)
    # batch 3's R2 in the buyer's shard: the budget's rest released after the legs
    (effects,) = matched[0][1].effects
    assert effects.changes[-1] == Released("buyer", "AAPL", 4_800, 0, None)
    sweep_answers = shards.r2(sweep.k, matched)
    assert (order(sweep_answers[buy.seq]).status, order(sweep_answers[buy.seq]).filled_value) == (
        FILLED,
        5_200,
    )
    late_answers = shards.r2(late.k, shards.me(late.k, late_r1))
    assert refused(late_answers[late.commands[0].seq]) == (
        "insufficient_balance",
        "Broker buyer has insufficient available cash for this order",
    )
    balance = buyer.balance("buyer")
    assert (balance.cash_balance, balance.reserved_cash, balance.holdings) == (
        4_800,
        0,
        (Holding("AAPL", 5, 0),),
    )


def test_a_limit_order_short_of_funds_is_accepted_on_what_its_symbols_expiries_release(
    shards: Shards,
) -> None:
    """The buyer's only cash is held by a bid that is due: the next bid on AAPL finds
    nothing available in R1, and ME accepts it on the release of the due bid, its hold
    (`Held`) after that release; one more is refused, the release being used."""
    stamper = Stamper()
    registered(shards, stamper, buyer_cash=1_000)
    first = stamper.stamp(limit("buyer", BID, 1_000, 1, expires=stamper.at(4)))
    shards.run(stamper.batch([first]))
    again = stamper.stamp(limit("buyer", BID, 500, 2))  # at(4): the first is due
    more = stamper.stamp(limit("buyer", BID, 100, 1))
    batch = stamper.batch([again, more])
    matched = shards.me(batch.k, shards.r1(batch))
    (accepted,) = matched[0][1].effects  # the refused one changed nothing: R1 held nothing
    assert accepted.changes == (
        Released("buyer", "AAPL", 1_000, 0, again.at),
        Held("buyer", "AAPL", 1_000, 0),
        Accepted("buyer", again.at),
    )
    assert [state.order.status for state in accepted.orders] == [EXPIRED, PENDING]
    answers = shards.r2(batch.k, matched)
    assert order(answers[again.seq]).status == PENDING
    assert refused(answers[more.seq])[0] == "insufficient_balance"
    balance = shards.account("buyer").balance("buyer")
    assert (balance.cash_balance, balance.reserved_cash, balance.updated_at) == (
        1_000,
        1_000,
        again.at,
    )
    expired = shards.account("buyer").order(first.order_id or "")
    assert expired is not None and (expired.status, expired.expired_at) == (EXPIRED, stamper.at(4))


def test_cancels_are_decided_by_the_shard_their_order_id_names(shards: Shards) -> None:
    stamper = Stamper()
    registered(shards, stamper)
    rest = stamper.stamp(limit("buyer", BID, 900, 2))
    filled = stamper.stamp(limit("buyer", BID, 1_000, 1))
    ask = stamper.stamp(limit("seller", ASK, 1_000, 1))
    shards.run(stamper.batch([rest, filled, ask]))
    cancels = [
        stamper.stamp(CancelOrder("ord-00000000-0000-4000-8000-000000000000")),
        stamper.stamp(CancelOrder(filled.order_id or "")),
        stamper.stamp(CancelOrder(rest.order_id or ""), request_id="req-c"),
    ]
    answers = shards.run(stamper.batch(cancels))
    assert refused(answers[cancels[0].seq])[0] == "order_not_found"
    assert refused(answers[cancels[1].seq])[0] == "order_not_cancellable"
    cancelled = order(answers[cancels[2].seq])
    assert (cancelled.status, cancelled.cancelled_at, cancelled.cancelled_quantity) == (
        CANCELLED,
        cancels[2].at,
        2,
    )
    balance = shards.account("buyer").balance("buyer")
    assert (balance.cash_balance, balance.reserved_cash, balance.updated_at) == (
        9_000,
        0,
        cancels[2].at,
    )


def test_a_tick_expires_what_is_due_in_every_symbol_shard_at_its_stamped_time(
    shards: Shards,
) -> None:
    stamper = Stamper()
    registered(shards, stamper)
    due = stamper.at(6)  # after the bids' own steps
    bids = [
        stamper.stamp(limit("buyer", BID, 100, 1, "AAPL", expires=due)),
        stamper.stamp(limit("buyer", BID, 200, 1, "MSFT", expires=due)),
        stamper.stamp(limit("buyer", BID, 300, 1, "MSFT")),
    ]
    shards.run(stamper.batch(bids))
    tick = stamper.stamp(Tick())  # at(6): both symbols' due bids expire
    assert tick.at == due
    answers = shards.run(stamper.batch([tick]))
    assert answers == {}  # nobody waits for a tick
    buyer = shards.account("buyer")
    states = [buyer.order(b.order_id or "") for b in bids]
    assert [(s.status, s.expired_at) for s in states if s] == [
        (EXPIRED, due),
        (EXPIRED, due),
        (PENDING, None),
    ]
    balance = buyer.balance("buyer")
    assert (balance.reserved_cash, balance.updated_at) == (300, tick.at)
    assert shards.symbol("MSFT").book("MSFT", 5).bids == [Level(300, 1, 1)]


def test_webhooks_are_kept_and_told_by_the_brokers_account_shard(shards: Shards) -> None:
    stamper = Stamper()
    registered(shards, stamper)
    subscribe = stamper.stamp(
        SubscribeWebhooks("buyer", "https://hooks.example/b", (TRADE_EXECUTED,))
    )
    (webhook_id,) = subscribe.webhook_ids
    subscribed = shards.run(stamper.batch([subscribe]))[subscribe.seq]
    assert isinstance(subscribed, Upserted) and subscribed.created
    assert [s.webhook_id for s in shards.account("buyer").webhooks("buyer")] == [webhook_id]
    trade = [
        stamper.stamp(limit("seller", ASK, 1_000, 1)),
        stamper.stamp(limit("buyer", BID, 1_000, 1), request_id="req-t"),
    ]
    shards.run(stamper.batch(trade))
    delivery = shards.deliveries.get(timeout=WAIT_S)
    assert (delivery.webhook_id, delivery.event_type, delivery.request_id) == (
        webhook_id,
        TRADE_EXECUTED,
        "req-t",
    )
    others = stamper.stamp(UnsubscribeWebhook(webhook_id, owner="seller"))
    mine = stamper.stamp(UnsubscribeWebhook(webhook_id, owner="buyer"))
    answers = shards.run(stamper.batch([others, mine]))
    assert refused(answers[others.seq])[0] == "webhook_not_found"
    assert answers[mine.seq] is None
    assert shards.account("buyer").webhooks("buyer") == []


def test_a_subscription_of_a_broker_not_registered_is_refused(shards: Shards) -> None:
    """The HTTP layer's pre-check cannot know (in Ray mode it answers "maybe"): the
    broker's account shard refuses, and keeps nothing."""
    stamper = Stamper()
    early = stamper.stamp(SubscribeWebhooks("late", "https://hooks.example/l", (TRADE_EXECUTED,)))
    register = stamper.stamp(RegisterBroker("late", 0, ()))
    answers = shards.run(stamper.batch([early, register]))
    assert refused(answers[early.seq]) == ("broker_not_found", "Broker late does not exist")
    assert shards.account("late").webhooks("late") == []


def test_phases_run_once_each_in_batch_order_with_a_part_from_every_sender(
    shards: Shards,
) -> None:
    stamper = Stamper()
    first = stamper.batch([stamper.stamp(RegisterBroker("buyer", 1, ()))])
    parts = shards.r1(first)
    with pytest.raises(PhaseOrderError):  # R1 of batch 1 again
        shards.accounts[0].r1(first)
    with pytest.raises(PhaseOrderError):  # ME of batch 1 without account shard 1's part
        shards.symbols[0].me(1, [parts[0][0]])
    matched = shards.me(1, parts)
    with pytest.raises(PhaseOrderError):  # R2 of batch 2 before R2 of batch 1
        shards.accounts[0].r2(2, [m[0] for m in matched])
    at = first.commands[0].at
    assert shards.r2(1, matched) == {1: Balance("buyer", 1, 0, (), at, at)}


def test_an_account_shard_settles_a_batch_only_when_the_sequencer_orders_it(
    shards: Shards,
) -> None:
    """Batch 1's parts all reached the account shard, but the sequencer, which has not
    seen batch 1 settled everywhere, may still cut batch 2 with `after = 0`, whose R1
    must then come first: R2 of 1 waits for that R1 or for the sequencer's word."""
    stamper = Stamper()
    first = stamper.batch([stamper.stamp(RegisterBroker("buyer", 1, ()))])
    account = shards.account("buyer")
    matched = shards.me(1, shards.r1(first))
    mine = [parts[shards.accounts.index(account)] for parts in matched]
    assert not account.may_settle(1)
    with pytest.raises(PhaseOrderError):  # settled on its own: an order not journaled
        account.r2(1, mine)
    with pytest.raises(PhaseOrderError):  # a word for a batch whose R1 has not run
        account.allow_r2(2)
    second = stamper.batch([stamper.stamp(RegisterBroker("seller", 1, ()))], after=0)
    shards.r1(second)  # R1 of 2 first, as the cut recorded: then R2 of 1 may run
    assert account.may_settle(1) and not account.may_settle(2)
    at = first.commands[0].at
    assert account.r2(1, mine) == [(1, Balance("buyer", 1, 0, (), at, at))]
    account.allow_r2(2)  # no batch behind 2: the next one will say `after = 2`
    assert account.may_settle(2)


def test_credentials_are_issued_in_r1_by_the_brokers_account_shard() -> None:
    placement = Placement(2, 1)
    deliveries = FakeDeliveries()
    account = AccountShard(1, placement, deliveries.submit)  # draws no credentials
    symbol = SymbolShard(0, placement, ManualClock(READ_AT))
    other = AccountShard(0, placement, deliveries.submit)
    stamper = Stamper()
    batch = stamper.batch(
        [
            stamper.stamp(RegisterBroker("buyer", 0, ())),
            stamper.stamp(IssueCredentials("buyer", True, True)),
            stamper.stamp(IssueCredentials("alice", True, False)),  # not registered
        ]
    )
    try:
        parts = [other.r1(batch), account.r1(batch)]
        matched = symbol.me(1, [parts[0][0], parts[1][0]])
        other.allow_r2(1)
        account.allow_r2(1)
        assert other.r2(1, [matched[0]]) == []
        answers = dict(account.r2(1, [matched[1]]))
    finally:
        for shard in (account, symbol, other):
            shard.stop()
    assert answers[2] == Issued("buyer", "mx_stamped_2", "whsec_stamped_2")  # as stamped
    assert refused(answers[3])[0] == "broker_not_found"
    assert account.published.broker_with_key("mx_stamped_2") == "buyer"
    assert account.published.webhook_secrets == {"buyer": "whsec_stamped_2"}
