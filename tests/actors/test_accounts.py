"""AccountActor alone: registration, balance reads, R1 (hold and forward), the market
hold asked by a symbol actor, and R2 (the changes a step tells). The symbol actors it
forwards to are recording actors; the journal records in memory."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pykka
import pytest

from miniexchange.actors.accounts import AccountActor, Published, Secrets, account_index
from miniexchange.actors.listing import SymbolListing
from miniexchange.actors.messages import (
    Apply,
    ExpireThenCheck,
    Hold,
    Issue,
    Issued,
    ReadBalance,
    Recheck,
    Register,
    Reserved,
    Submit,
)
from miniexchange.http.idempotency import IdempotentAnswer
from miniexchange.journal import facts
from miniexchange.metrics import Metrics
from miniexchange.model.commands import ASK, BID, LIMIT, RegisterBroker, SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.ledger import (
    Accepted,
    Balance,
    Holding,
    Released,
    Settled,
    SettlementLeg,
)
from miniexchange.testing import ManualClock, RecordingJournal, Replies
from tests.actors.conftest import SECOND, T0, WAIT_S, RecordingActor, recorded

CASH = 10_000_000  # 100000.00, as in the settlement example below
E1 = T0 + 3600 * SECOND


@dataclass
class Desk:
    """One account actor and what it talks to."""

    actor: pykka.ActorRef[Any]
    journal: RecordingJournal
    symbols: dict[str, pykka.ActorRef[Any]]
    registered: set[str]
    known: set[str]
    metrics: Metrics
    published: Published

    def ask(self, message_for: Any) -> Any:
        replies = Replies()
        self.actor.tell(message_for(replies))
        return replies.get(timeout=WAIT_S)

    def register(self, broker_id: str, cash: int = CASH, **holdings: int) -> Any:
        command = RegisterBroker(broker_id, cash, tuple(sorted(holdings.items())))
        return self.ask(lambda reply: Register(command, reply))

    def balance(self, broker_id: str) -> Any:
        return self.ask(lambda reply: ReadBalance(broker_id, reply))

    def forwarded(self, symbol: str) -> list[Any]:
        """What reached the symbol's (recording) actor; every tell before a reply that
        came after it is there (a mailbox is FIFO, and each forward precedes it)."""
        self.balance("nobody")  # wait until the account actor handled what came before
        return recorded(self.symbols[symbol]) if symbol in self.symbols else []


@pytest.fixture
def desk(clock: ManualClock) -> Iterator[Desk]:
    symbols: dict[str, pykka.ActorRef[Any]] = {}

    def symbol_actor(symbol: str) -> pykka.ActorRef[Any]:
        if symbol not in symbols:
            symbols[symbol] = RecordingActor.start()
        return symbols[symbol]

    journal = RecordingJournal()
    registered: set[str] = set()
    listing = SymbolListing()
    metrics = Metrics()
    published = Published()
    actor = AccountActor.start(
        clock, journal, symbol_actor, registered, listing, metrics, (), published, None, Counted()
    )
    yield Desk(actor, journal, symbols, registered, listing.listed, metrics, published)


class Counted(Secrets):
    """Predictable credentials in the production shapes: `mx_` / `whsec_` and 43
    URL-safe characters whose last digits count the issues."""

    def __init__(self) -> None:
        self.count = 0

    def _next(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count:043d}"

    def api_key(self) -> str:
        return self._next("mx_")

    def webhook_secret(self) -> str:
        return self._next("whsec_")


def limit(side: str, price: int, quantity: int, broker_id: str = "B") -> SubmitOrder:
    return SubmitOrder(LIMIT, broker_id, "12345678900", side, "AAPL", quantity, price, E1)


def refused(answer: Any) -> tuple[str, str]:
    assert isinstance(answer, ExchangeError), answer
    return answer.code, answer.message


# -- registration and reads ---------------------------------------------------------


def test_registration_answers_the_first_balance_once_journaled(desk: Desk) -> None:
    answer = desk.register("B", CASH, GOOG=20, AAPL=100)

    assert answer == Balance(
        "B", CASH, 0, (Holding("AAPL", 100, 0), Holding("GOOG", 20, 0)), T0, T0
    )
    command = RegisterBroker("B", CASH, (("AAPL", 100), ("GOOG", 20)))
    assert desk.journal.recorded == [facts.broker_registered(command, T0)]
    # published before the answer: the HTTP layer checks existence without a hop
    assert desk.registered == {"B"}
    assert desk.known == {"AAPL", "GOOG"}
    assert desk.balance("B") == answer


def test_registering_twice_is_refused_and_changes_nothing(desk: Desk, clock: ManualClock) -> None:
    first = desk.register("B", CASH, AAPL=5)
    clock.advance(seconds=1)
    assert refused(desk.register("B", 1, MSFT=1)) == (
        "broker_already_exists",
        "Broker B is already registered",
    )
    assert desk.balance("B") == first
    assert desk.known == {"AAPL"}
    assert len(desk.journal.recorded) == 1


def test_a_kept_refusal_is_journaled_before_it_is_answered(desk: Desk) -> None:
    desk.register("B")
    keep = IdempotentAnswer("/brokers", "key-1", b"fp", T0, lambda outcome: (409, b"{}"))
    command = RegisterBroker("B", 1, ())
    assert refused(desk.ask(lambda reply: Register(command, reply, keep)))[0] == (
        "broker_already_exists"
    )
    assert [kind for kind, _ in desk.journal.recorded] == [
        facts.BROKER_REGISTERED,
        facts.IDEMPOTENT_ANSWER,
    ]


def test_an_unknown_broker_has_no_balance(desk: Desk) -> None:
    assert refused(desk.balance("ghost")) == ("broker_not_found", "Broker ghost does not exist")


# -- credentials ---------------------------------------------------------------------


def test_issued_credentials_are_published_once_journaled_and_the_key_only_as_a_digest(
    desk: Desk,
) -> None:
    desk.register("B")
    issued = desk.ask(lambda reply: Issue("B", True, True, reply))

    key, secret = "mx_" + "1".zfill(43), "whsec_" + "2".zfill(43)
    assert issued == Issued("B", key, secret)
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert desk.journal.recorded[1:] == [
        facts.api_key_issued("B", digest, T0),
        facts.webhook_secret_issued("B", secret, T0),
    ]
    assert not any(key.encode() in body for _, body in desk.journal.recorded)
    assert desk.published.broker_with_key(key) == "B"
    assert desk.published.brokers_by_key == {digest: "B"}  # no plaintext kept
    assert desk.published.webhook_secrets == {"B": secret}


def test_a_new_key_revokes_the_old_one_and_the_secret_stays(desk: Desk) -> None:
    desk.register("B")
    first = desk.ask(lambda reply: Issue("B", True, True, reply))
    second = desk.ask(lambda reply: Issue("B", True, False, reply))

    assert (second.api_key, second.webhook_secret) == ("mx_" + "3".zfill(43), None)
    assert desk.published.broker_with_key(first.api_key) is None
    assert desk.published.broker_with_key(second.api_key) == "B"
    assert desk.published.webhook_secrets == {"B": first.webhook_secret}
    third = desk.ask(lambda reply: Issue("B", False, True, reply))
    assert desk.published.webhook_secrets == {"B": third.webhook_secret}
    assert desk.published.broker_with_key(second.api_key) == "B"


def test_an_unknown_broker_gets_no_credentials(desk: Desk) -> None:
    assert refused(desk.ask(lambda reply: Issue("ghost", True, True, reply))) == (
        "broker_not_found",
        "Broker ghost does not exist",
    )
    assert desk.journal.recorded == []
    assert desk.published.brokers_by_key == {}


def test_production_credentials_have_the_contract_shape() -> None:
    """`mx_` and `whsec_`, then 43 characters of the URL-safe base64 alphabet."""
    made = Secrets()
    keys = {made.api_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(re.fullmatch(r"mx_[A-Za-z0-9_-]{43}", key) for key in keys)
    assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}", made.webhook_secret())


# -- R1: hold, then forward -----------------------------------------------------------


def test_a_limit_bid_holds_its_value_and_goes_on_to_its_symbol(
    desk: Desk, clock: ManualClock
) -> None:
    desk.register("B")
    clock.advance(seconds=5)
    submit = Submit(limit(BID, 150_00, 100), Replies())
    desk.actor.tell(submit)

    assert desk.forwarded("AAPL") == [Reserved(submit)]
    balance = desk.balance("B")
    assert (balance.reserved_cash, balance.available_cash) == (1_500_000, CASH - 1_500_000)
    assert balance.updated_at == T0  # a hold is no change of record: the acceptance is


def test_a_limit_ask_holds_its_shares(desk: Desk) -> None:
    desk.register("S", 0, AAPL=60)
    submit = Submit(limit(ASK, 148_00, 60, "S"), Replies())
    desk.actor.tell(submit)

    assert desk.forwarded("AAPL") == [Reserved(submit)]
    assert desk.balance("S").holdings == (Holding("AAPL", 60, 60),)


def test_without_funds_and_nothing_held_on_the_symbol_r1_refuses(desk: Desk) -> None:
    desk.register("B", 1_000, GOOG=5)
    assert refused(desk.ask(lambda reply: Submit(limit(BID, 10_01, 1), reply))) == (
        "insufficient_balance",
        "Broker B has insufficient available cash for this order",
    )
    assert refused(desk.ask(lambda reply: Submit(limit(ASK, 1_00, 1), reply))) == (
        "insufficient_holdings",
        "Broker B has insufficient available quantity of AAPL for this order",
    )
    assert desk.forwarded("AAPL") == []
    assert desk.balance("B").reserved_cash == 0


def test_a_failed_hold_with_holds_on_the_symbol_expires_first_then_checks_once(
    desk: Desk,
) -> None:
    """Some of what the broker holds on AAPL may be due: the symbol actor expires its
    due orders, tells their releases, and sends the order back for the final check."""
    desk.register("B", 1_000_000)
    first = Submit(limit(BID, 100_00, 100), Replies())  # holds all the cash
    desk.actor.tell(first)
    second = Submit(limit(BID, 50_00, 100), Replies())
    desk.actor.tell(second)
    assert desk.forwarded("AAPL") == [Reserved(first), ExpireThenCheck(second)]

    # The symbol actor expired the first order: its release, then the order, come back.
    desk.actor.tell(Apply((Released("B", "AAPL", 1_000_000, 0, E1),)))
    desk.actor.tell(Recheck(second))
    assert desk.forwarded("AAPL") == [Reserved(first), ExpireThenCheck(second), Reserved(second)]
    balance = desk.balance("B")
    assert (balance.reserved_cash, balance.updated_at) == (500_000, E1)

    # A recheck that still fails is final: refused, never sent round again.
    third = Replies()
    desk.actor.tell(Recheck(Submit(limit(BID, 50_01, 100), third)))
    assert refused(third.get(timeout=WAIT_S))[0] == "insufficient_balance"
    assert len(desk.forwarded("AAPL")) == 3


def test_r1_refusals_are_counted(desk: Desk) -> None:
    desk.register("B", 0)
    desk.ask(lambda reply: Submit(limit(BID, 1_00, 1), reply))
    assert (
        desk.metrics.registry.get_sample_value(
            "miniexchange_orders_total",
            {"type": "limit", "side": "bid", "outcome": "insufficient_balance"},
        )
        == 1
    )


# -- the market hold a symbol actor asks ----------------------------------------------


def test_a_market_hold_answers_whether_it_could(desk: Desk) -> None:
    desk.register("B", 1_486_000, AAPL=10)
    assert desk.actor.ask(Hold("B", "AAPL", 1_486_001, 0), timeout=WAIT_S) is False
    assert desk.actor.ask(Hold("B", "AAPL", 1_486_000, 0), timeout=WAIT_S) is True
    assert desk.actor.ask(Hold("B", "AAPL", 0, 11), timeout=WAIT_S) is False
    assert desk.actor.ask(Hold("B", "AAPL", 0, 10), timeout=WAIT_S) is True
    balance = desk.balance("B")
    assert (balance.reserved_cash, balance.holdings) == (1_486_000, (Holding("AAPL", 10, 10),))
    with pytest.raises(ExchangeError, match="Broker ghost does not exist"):
        desk.actor.ask(Hold("ghost", "AAPL", 1, 0), timeout=WAIT_S)


# -- R2: what a step tells --------------------------------------------------------------


def test_the_worked_example_settles_as_told(desk: Desk) -> None:
    """Settlement: B bids 100 @ 150.00 (held by R1), 60 fill @ 148.00 against S."""
    desk.register("B", CASH)
    desk.register("S", 0, AAPL=60)
    desk.actor.tell(Submit(limit(ASK, 148_00, 60, "S"), Replies()))
    desk.actor.tell(Submit(limit(BID, 150_00, 100), Replies()))
    t1 = T0 + SECOND
    desk.actor.tell(
        Apply(
            (
                Accepted("S", T0),
                Accepted("B", t1),
                Settled("B", "AAPL", (SettlementLeg(BID, 60, 888_000, 900_000),), t1),
                Settled("S", "AAPL", (SettlementLeg(ASK, 60, 888_000, 0),), t1),
            )
        )
    )
    assert desk.balance("B") == Balance("B", 9_112_000, 600_000, (Holding("AAPL", 60, 0),), T0, t1)
    assert desk.balance("S") == Balance("S", 888_000, 0, (), T0, t1)


def test_updated_at_follows_the_told_times_and_never_goes_back(desk: Desk) -> None:
    desk.register("B", CASH, AAPL=10)
    desk.actor.ask(Hold("B", "AAPL", 0, 10), timeout=WAIT_S)
    desk.actor.tell(Apply((Accepted("B", T0 + 5 * SECOND),)))
    # another symbol's earlier step arrives late: no step back
    desk.actor.tell(Apply((Released("B", "AAPL", 0, 4, T0 + 3 * SECOND),)))
    balance = desk.balance("B")
    assert (balance.holdings, balance.updated_at) == (
        (Holding("AAPL", 10, 6),),
        T0 + 5 * SECOND,
    )
    # a hold given back for an order never created carries no time
    desk.actor.tell(Apply((Released("B", "AAPL", 0, 6, None),)))
    balance = desk.balance("B")
    assert (balance.holdings, balance.updated_at) == ((Holding("AAPL", 10, 0),), T0 + 5 * SECOND)


# -- sharding --------------------------------------------------------------------------


def test_account_index_is_a_stable_hash_of_the_broker_id() -> None:
    """The same broker goes to the same actor in every process (not Python's salted
    hash): CRC-32 of the UTF-8 id, modulo the count."""
    # CRC-32: alice 0x278ebc47, bob 0xf5cbb140, carol 0x6a3e8cc3, dave 0x98a855f8
    assert [account_index(broker, 4) for broker in ("alice", "bob", "carol", "dave")] == [
        3,
        0,
        3,
        0,
    ]
    assert {account_index(f"b{n}", 3) for n in range(100)} == {0, 1, 2}


def test_ten_thousand_brokers_cost_no_thread(desk: Desk) -> None:
    threads_before = threading.active_count()
    for n in range(10_000):
        desk.actor.tell(Register(RegisterBroker(f"b{n}", n, ()), lambda answer: None))
    assert desk.balance("b9999").cash_balance == 9_999
    assert len(desk.registered) == 10_000
    assert threading.active_count() == threads_before
