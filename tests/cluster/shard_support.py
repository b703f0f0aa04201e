"""What the shard tests share: a stamper that numbers and stamps commands as the
sequencer will, a driver that runs batches through account and symbol shards phase by
phase, the same stamped commands through an embedded `Exchange`, and what both decided,
read without changing anything."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from miniexchange.actors.accounts import account_index
from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import (
    Cancel,
    ExpireDue,
    ReadBalance,
    ReadBook,
    ReadPrice,
    Register,
    Submit,
    Subscribe,
    Unsubscribe,
)
from miniexchange.actors.messages import Tick as Sweep
from miniexchange.cluster.batches import (
    CancelOrder,
    IssueCredentials,
    SubscribeWebhooks,
    UnsubscribeWebhook,
)
from miniexchange.cluster.shard_snapshots import AccountSnapshot, SymbolSnapshot
from miniexchange.cluster.shards import (
    AccountShard,
    Answer,
    MatchPart,
    Placement,
    SettlePart,
    SymbolShard,
)
from miniexchange.cluster.stamped import Batch, Command, Stamped, Tick
from miniexchange.ids import RandomIds, seeded_uuid4
from miniexchange.model.commands import ASK, BID, RegisterBroker, SubmitOrder
from miniexchange.model.errors import ExchangeError, not_cancellable, order_not_found
from miniexchange.testing import FakeDeliveries, ManualClock, Replies

SECOND = 1_000_000
T0 = ManualClock.at("2026-02-17T09:00:00Z").now()
STEP = SECOND // 2  # between two stamped commands
WAIT_S = 60.0
"""How long to wait for an answer that must come; never an upper bound on speed."""


class Stamper:
    """Stamps commands as the sequencer will: `seq` from 1, `at` `STEP` apart after
    `start`, a submission's trade seed its `seq`, and order and webhook ids drawn (from
    `seeded_uuid4`, so runs repeat) until they name the broker's account shard among
    `account_shards` (then among any divisor of it too)."""

    def __init__(self, account_shards: int = 2, start: int = T0) -> None:
        self.account_shards = account_shards
        self.start = start
        self.seq = 0
        self.k = 0

    def at(self, seq: int) -> int:
        return self.start + seq * STEP

    def stamp(self, command: Command, request_id: str | None = None) -> Stamped:
        self.seq += 1
        seq = self.seq
        at = self.at(seq)
        if isinstance(command, SubmitOrder):
            (order_id,) = self._draw("ord", seq, command.broker_id, 1)
            return Stamped(seq, at, command, request_id, order_id, seq)
        if isinstance(command, SubscribeWebhooks):
            ids = self._draw("wh", seq, command.broker_id, len(command.events))
            return Stamped(seq, at, command, request_id, webhook_ids=ids)
        if isinstance(command, IssueCredentials):
            secrets = (f"mx_stamped_{seq}", f"whsec_stamped_{seq}")
            return Stamped(seq, at, command, request_id, secrets=secrets)
        return Stamped(seq, at, command, request_id)

    def _draw(self, prefix: str, seed: int, broker_id: str, count: int) -> tuple[str, ...]:
        shard = account_index(broker_id, self.account_shards)
        drawn = (f"{prefix}-{seeded_uuid4(seed, number)}" for number in itertools.count(1))
        naming = (i for i in drawn if account_index(i, self.account_shards) == shard)
        return tuple(itertools.islice(naming, count))

    def batch(self, commands: Sequence[Stamped], after: int | None = None) -> Batch:
        """The next batch; `after` defaults to the batch before it (nothing in flight)."""
        self.k += 1
        return Batch(self.k, self.k - 1 if after is None else after, tuple(commands))


# -- shards, driven phase by phase ------------------------------------------------------


@dataclass
class Outboxes:
    """What the shards of a run sent, by batch (what each keeps for a peer's replay),
    and the answers."""

    match: dict[int, list[list[MatchPart]]] = field(default_factory=dict)  # [account][symbol]
    settle: dict[int, list[list[SettlePart]]] = field(default_factory=dict)  # [symbol][account]
    answers: dict[int, Any] = field(default_factory=dict)
    matched: list[int] = field(default_factory=list)  # ME done, R2 not yet


class Shards:
    """`accounts` account shards and `symbols` symbol shards in this process."""

    def __init__(
        self,
        accounts: int,
        symbols: int,
        clock: ManualClock,
        vwap_window_us: int = 300_000_000,
        account_actors: int = 1,
        snapshots: tuple[Sequence[AccountSnapshot], Sequence[SymbolSnapshot]] | None = None,
    ) -> None:
        """`snapshots`: each shard starts from its own (`from_snapshot`), not empty."""
        self.placement = Placement(accounts, symbols)
        self.deliveries = FakeDeliveries()
        if snapshots is not None:
            self.accounts = [
                AccountShard.from_snapshot(snapshot, self.deliveries.submit, account_actors)
                for snapshot in snapshots[0]
            ]
            self.symbols = [
                SymbolShard.from_snapshot(snapshot, clock, vwap_window_us)
                for snapshot in snapshots[1]
            ]
            return
        self.accounts = [
            AccountShard(i, self.placement, self.deliveries.submit, account_actors)
            for i in range(accounts)
        ]
        self.symbols = [
            SymbolShard(j, self.placement, clock, vwap_window_us) for j in range(symbols)
        ]

    def stop(self) -> None:
        for account in self.accounts:
            account.stop()
        for shard in self.symbols:
            shard.stop()

    def r1(self, batch: Batch) -> list[list[MatchPart]]:
        """R1 in every account shard: [account shard][symbol shard]."""
        return [account.r1(batch) for account in self.accounts]

    def me(self, k: int, parts: list[list[MatchPart]]) -> list[list[SettlePart]]:
        """ME in every symbol shard, each given its parts in reverse sender order (a
        shard must not depend on arrival): [symbol shard][account shard]."""
        return [
            shard.me(k, [mine[j] for mine in reversed(parts)])
            for j, shard in enumerate(self.symbols)
        ]

    def r2(self, k: int, parts: list[list[SettlePart]]) -> dict[int, Any]:
        """R2 in every account shard; the batch's answers by `seq`."""
        answers: list[Answer] = []
        for i, account in enumerate(self.accounts):
            if not account.may_settle(k):  # no batch behind `k`: the sequencer's word
                account.allow_r2(k)
            answers.extend(account.r2(k, [mine[i] for mine in reversed(parts)]))
        return dict(sorted(answers))

    def run(self, batch: Batch) -> dict[int, Any]:
        """One batch, its phases in order."""
        return self.r2(batch.k, self.me(batch.k, self.r1(batch)))

    def drive(
        self,
        batches: Sequence[Batch],
        each_phase: Callable[[], None] = lambda: None,
        sent: Outboxes | None = None,
        settle: bool = True,
    ) -> Outboxes:
        """The batches, each R1 right after the R2 its `after` names (two in flight when
        `after` is `k - 2`); `each_phase` runs after each phase of every shard. `sent`:
        a run to go on with (its batches in flight: `matched`); `settle=False` leaves
        the R2s no batch's `after` named yet in flight."""
        sent = Outboxes() if sent is None else sent
        for batch in batches:
            self.settle(batch.after, sent, each_phase)
            sent.match[batch.k] = self.r1(batch)
            sent.settle[batch.k] = self.me(batch.k, sent.match[batch.k])
            sent.matched.append(batch.k)
            each_phase()
        if settle and sent.matched:
            self.settle(sent.matched[-1], sent, each_phase)
        return sent

    def settle(
        self, upto: int, sent: Outboxes, each_phase: Callable[[], None] = lambda: None
    ) -> None:
        """R2 of the batches in flight up to `upto`, in order."""
        matched = sent.matched
        while matched and matched[0] <= upto:
            k = matched.pop(0)
            sent.answers.update(self.r2(k, sent.settle[k]))
            each_phase()

    def account(self, broker_id: str) -> AccountShard:
        return self.accounts[self.placement.account_shard(broker_id)]

    def symbol(self, symbol: str) -> SymbolShard:
        return self.symbols[self.placement.symbol_shard(symbol)]


# -- the embedded exchange, fed the same stamps ----------------------------------------------


def embedded(clock: ManualClock, vwap_window_us: int = 300_000_000) -> Exchange:
    """A started embedded exchange (random ids: a value the stamps did not give differs)."""
    exchange = Exchange(
        clock,
        RandomIds(),
        FakeDeliveries(),
        expiration_interval_s=None,
        vwap_window_us=vwap_window_us,
        account_actors=2,
    )
    exchange.start()
    return exchange


def answer(send: Any) -> Any:
    replies = Replies()
    send(replies)
    return replies.get(timeout=WAIT_S)


def run_embedded(exchange: Exchange, stamped: Stamped) -> Any:
    """One stamped command through the embedded exchange, as its HTTP layer sends it
    (a cancel of an unknown or ended order is answered without a hop), waited for; a
    tick's answer is None."""
    command, at = stamped.command, stamped.at
    if isinstance(command, SubmitOrder):
        message = Submit(
            command, None, None, stamped.request_id, at, stamped.order_id, stamped.trade_seed
        )
        return answer(lambda reply: exchange.submit(message._replace(reply=reply)))
    if isinstance(command, RegisterBroker):
        actor = exchange.account_actor(command.broker_id)
        return answer(lambda reply: actor.tell(Register(command, reply, at=at)))
    if isinstance(command, CancelOrder):
        order = exchange.read_index.get(command.order_id)
        if order is None:
            return order_not_found(command.order_id)
        if not order.is_active:
            return not_cancellable(order.order_id, order.status)
        actor = exchange.symbol_actor(order.symbol)
        return answer(
            lambda reply: actor.tell(Cancel(command.order_id, reply, stamped.request_id, at))
        )
    if isinstance(command, SubscribeWebhooks):
        return answer(
            lambda reply: exchange.dispatcher.tell(
                Subscribe(
                    command.broker_id,
                    command.url,
                    command.events,
                    reply,
                    at=at,
                    webhook_ids=stamped.webhook_ids,
                )
            )
        )
    if isinstance(command, UnsubscribeWebhook):
        return answer(
            lambda reply: exchange.dispatcher.tell(
                Unsubscribe(command.webhook_id, reply, command.owner)
            )
        )
    assert isinstance(command, Tick), command
    clock_actor = exchange.clock_actor
    assert clock_actor is not None
    for symbol in clock_actor.ask(Sweep(at), timeout=WAIT_S):
        actor = exchange.existing_symbol_actor(symbol)
        assert actor is not None
        actor.ask(ExpireDue(at), timeout=WAIT_S)  # waits for the sweep's ExpireDue
    return None


# -- what was decided -------------------------------------------------------------------


def comparable(value: Any) -> Any:
    """Answers as values: a refusal by its code and message (exceptions compare by id)."""
    if isinstance(value, ExchangeError):
        return ("refused", value.code, value.message)
    return value


def observe_embedded(
    exchange: Exchange, brokers: Sequence[str], symbols: Sequence[str]
) -> dict[str, Any]:
    """Balances, orders, listings, books, prices and tapes, changing nothing."""
    seen: dict[str, Any] = {
        "balances": {
            broker: comparable(
                answer(
                    lambda reply, broker=broker: exchange.account_actor(broker).tell(
                        ReadBalance(broker, reply)
                    )
                )
            )
            for broker in brokers
        },
        "orders": dict(sorted(exchange.read_index.orders.items())),
        "listings": {broker: exchange.read_index.broker_order_ids(broker) for broker in brokers},
    }
    for symbol in symbols:
        actor = exchange.existing_symbol_actor(symbol)
        if actor is None:
            seen[symbol] = None
            continue
        book = answer(lambda reply, actor=actor: actor.tell(ReadBook(100, reply, expire=False)))
        price = answer(lambda reply, actor=actor: actor.tell(ReadPrice(reply, expire=False)))
        feed = exchange.market_data.get(symbol)
        tape = [] if feed is None else feed.latest_trades(500)
        seen[symbol] = (book.bids, book.asks, book.snapshot_at, price, tape)
    return seen


def observe_shards(
    shards: Shards, brokers: Sequence[str], symbols: Sequence[str]
) -> dict[str, Any]:
    """The same as `observe_embedded`, each read from the shard that owns it."""

    def balance(broker: str) -> Any:
        try:
            return shards.account(broker).balance(broker)
        except ExchangeError as refusal:
            return comparable(refusal)

    orders = {}
    for account in shards.accounts:
        orders.update(account.read_index.orders)
    seen: dict[str, Any] = {
        "balances": {broker: balance(broker) for broker in brokers},
        "orders": dict(sorted(orders.items())),
        "listings": {
            broker: shards.account(broker).read_index.broker_order_ids(broker) for broker in brokers
        },
    }
    for symbol in symbols:
        shard = shards.symbol(symbol)
        if not shard.has_book(symbol):
            seen[symbol] = None
            continue
        book = shard.book(symbol, 100)
        feed = shard.market_data.get(symbol)
        tape = [] if feed is None else feed.latest_trades(500)
        seen[symbol] = (book.bids, book.asks, book.snapshot_at, shard.price(symbol), tape)
    return seen


def observe_webhooks_and_quotes(
    shards: Shards, brokers: Sequence[str], symbols: Sequence[str]
) -> dict[str, Any]:
    """What `observe_shards` leaves out: each broker's subscriptions, and each symbol's
    quotes for a small and a large market order of either side."""
    seen: dict[str, Any] = {
        "webhooks": {broker: shards.account(broker).webhooks(broker) for broker in brokers}
    }
    for symbol in symbols:
        shard = shards.symbol(symbol)
        seen[symbol] = [
            shard.quote(symbol, side, quantity) for side in (BID, ASK) for quantity in (2, 1_000)
        ]
    return seen


def delivered(shards: Shards) -> dict[str, list[tuple[Any, ...]]]:
    """The webhook deliveries handed over, per subscription in the order made, each
    without its random delivery id; after every `Notify` sent was handled."""
    for account in shards.accounts:
        account.webhooks("")  # behind every Notify R2 told its dispatcher
    made: dict[str, list[tuple[Any, ...]]] = {}
    for d in shards.deliveries.recorded():
        made.setdefault(d.webhook_id, []).append(
            (d.url, d.event_type, d.body, d.request_id, d.secret)
        )
    return made
