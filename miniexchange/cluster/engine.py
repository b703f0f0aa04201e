"""The ingress side of `ENGINE=ray`: what a gunicorn worker's HTTP layer calls instead of
the embedded exchange (the engine seam, `actors.seam.Engine`), answered by the hosts
(`cluster.hosts`) of a running cluster.

- **Writes** (registrations, credentials, orders, cancels, subscriptions) go to the
  sequencer through one `Outbox`: every write of one event-loop pass leaves in one call,
  numbered by this worker (`Write.number`, never reused), and each request awaits its own
  answer. A refusal comes back as a value and is raised here, as the embedded engine's
  awaitables raise theirs.
- **Reads** go straight to the shard that owns the data: an order to the account shard
  its id names, a broker's balance, orders and webhooks to the broker's, a book, quote
  or price to the symbol's. An answer leaves the sequencer only after every account
  shard settled its batch, so a read sent after it sees its effects, on any worker.

The checks the HTTP layer makes before it sends anything (`is_registered`, `is_listed`,
`has_place_for`, `has_book`) cannot be answered here without a hop: the registry and
the listing live in the shards and the sequencer. This engine answers them "maybe"
(True), and the command or read refuses where the data is: `broker_not_found` by the
account shard, `symbol_limit_reached` by the sequencer's cut, `symbol_not_found` by
the listing the sequencer keeps (asked once per symbol a worker has not seen listed).

`GET /metrics` sums every process's figures (`cluster.scrape`): every gunicorn's
workers' through prometheus-client's multiprocess mode, and one call to each host. An
order's outcome is counted where it is decided (`miniexchange_orders_total`): the
refusals above by the account shard, the symbol shard or the sequencer, never by the
HTTP layer, whose checks answer "maybe" here.

The event streams read a replica of each streamed symbol's feed, kept by one long poll
per symbol shard (`cluster.news`).

`Idempotency-Key` answers are the sequencer's, for every worker (`keys`): it journals
each kept answer when the worker finishes its key, before the answer is sent, and its
cluster snapshots carry them, so a retry after a restart of the cluster is replayed.
Hence `recovered_answers` is empty here and `journal_answer` journals nothing (the
refusals it would journal are finished through `keys` too).

With a journal, Ray restarts a sequencer whose process died: a call that failed with it
is sent again (`at_sequencer`), the same writes under the same numbers, and the
restarted sequencer answers those it had journaled as its replay decides them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from miniexchange.actors.market_data import Summary, SymbolFeed
from miniexchange.actors.messages import Issued
from miniexchange.clock import SystemClock
from miniexchange.cluster.batches import (
    CancelOrder,
    IssueCredentials,
    Outbox,
    Part,
    SubscribeWebhooks,
    UnsubscribeWebhook,
    Write,
    WriteCommand,
    encode_part,
)
from miniexchange.cluster.head import connect, import_ray
from miniexchange.cluster.hosts import ACCOUNTS, SEQUENCER, SYMBOLS, Peers
from miniexchange.cluster.news import JOINING, Update
from miniexchange.cluster.parts import decode_answers
from miniexchange.cluster.scrape import ClusterMetrics
from miniexchange.cluster.shards import Placement
from miniexchange.ids import random_uuid4
from miniexchange.journal.facts import Fact, KeepAnswer
from miniexchange.model.candles import Candle
from miniexchange.model.commands import RegisterBroker, SubmitOrder
from miniexchange.model.credentials import api_key_digest
from miniexchange.model.engine import BookView, QuoteView
from miniexchange.model.errors import ExchangeError, exchange_unavailable, symbol_not_found
from miniexchange.model.idempotency import Decided, InFlight, KeptAnswers, Key, StoredAnswer
from miniexchange.model.ledger import Balance
from miniexchange.model.orders import Order, Trade
from miniexchange.model.subscriptions import Subscription, Upserted
from miniexchange.model.vwap import Price
from miniexchange.settings import Settings

log = logging.getLogger("miniexchange.cluster")

RESEND_S = 30.0
"""How long a worker sends a write again while the sequencer's process is down (Ray
restarts it, and it rebuilds the shards, in seconds); then `unavailable`."""
RESENDS = 3
"""Failures in a row after which the sequencer is taken for dead for good (Ray holds a
call made while it restarts, so a second failure means no restart is coming)."""
RESEND_PAUSE_S = 0.2

POLL_S = 0.5
"""How long a stream poll waits at most: a symbol a worker starts streaming joins the
next poll of its shard."""


class RayEngine:
    def __init__(
        self,
        placement: Placement,
        max_symbols: int,
        worker: str | None = None,
        address: str | None = None,
        journal: bool = False,
    ) -> None:
        """`worker`: this process's name in the sequencer, under which its writes are
        numbered from 1 (default: host, pid and a random part, so that a process that
        reuses a pid is never taken for the one before it and answered its answers).
        `address`: the head `start` joins (None: the process has joined one already).
        `journal`: the cluster journals (its page has the journal's family; Ray restarts
        a sequencer that dies, and a call it failed is sent again)."""
        self.placement = placement
        self._resend_s = RESEND_S if journal else 0.0
        self.max_symbols = max_symbols
        self.metrics = ClusterMetrics(self._hosts, journal)
        self.recovered_answers = KeptAnswers(1, 1)  # none: the sequencer keeps them
        self.keys = SequencerKeys(self)
        self._address = address
        self.worker = worker or f"{socket.gethostname()}-{os.getpid()}-{random_uuid4()[:8]}"
        self._numbers = itertools.count(1)
        self._peers = Peers()
        self._outbox: Outbox[Write] = Outbox(self._send)
        self._listed: set[str] = set()  # symbols seen listed (a listing only grows)
        self._clock = SystemClock()  # when a stream joined: its trades are stamped after
        self._feeds: dict[str, SymbolFeed] = {}
        self._seen: dict[str, tuple[int, int]] = {}  # symbol -> (steps seen, joined at)
        self._polls: dict[int, asyncio.Task[None]] = {}  # symbol shard -> its poll

    # -- lifespan ----------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Settings) -> RayEngine:
        """A gunicorn worker's engine: the head of `RAY_ADDRESS`, the shard counts."""
        placement = Placement(settings.account_shards, settings.symbol_shards)
        return cls(
            placement,
            settings.max_symbols,
            address=settings.ray_address,
            journal=settings.journal_enabled,
        )

    def start(self) -> None:
        """Join the cluster and find the hosts."""
        if self._address is not None:
            connect(self._address)
        self.sequencer()
        for i in range(self.placement.account_shards):
            self._peers(ACCOUNTS, i)
        for j in range(self.placement.symbol_shards):
            self._peers(SYMBOLS, j)
        self.metrics.start()

    def stop(self) -> None:
        """Nothing of the exchange lives in a worker: the hosts go on without it; the
        streams' polls end."""
        for poll in self._polls.values():
            poll.cancel()
        self._polls.clear()

    # -- no hop: "maybe", refused where the data is -----------------------------------------

    def is_registered(self, broker_id: str) -> bool:
        return True

    def is_listed(self, symbol: str) -> bool:
        return True

    def has_place_for(self, symbol: str) -> bool:
        return True

    def has_book(self, symbol: str) -> bool:
        return True

    async def broker_with_key(self, api_key: str) -> str | None:
        """Asked of the one account shard the key names (the sequencer draws a broker's
        keys until they name its shard), by the key's digest: a hop per authenticated
        request, never a cache, so a key replaced stops working at once on every worker."""
        shard = self._peers(ACCOUNTS, self.placement.account_shard(api_key))
        return await reached(shard.broker_with_key, api_key_digest(api_key))  # type: ignore[no-any-return]

    # -- commands ----------------------------------------------------------------------------

    async def register(self, command: RegisterBroker, keep: KeepAnswer | None) -> Balance:
        return await self._write(command, key=keyed(keep))

    async def issue(self, broker_id: str, api_key: bool, webhook_secret: bool) -> Issued:
        return await self._write(IssueCredentials(broker_id, api_key, webhook_secret))

    async def submit(
        self, command: SubmitOrder, keep: KeepAnswer | None, request_id: str | None
    ) -> Order:
        return await self._write(command, request_id, keyed(keep))

    async def cancel(self, symbol: str, order_id: str, request_id: str | None) -> Order:
        return await self._write(CancelOrder(order_id), request_id)

    async def subscribe(
        self, broker_id: str, url: str, events: tuple[str, ...], keep: KeepAnswer | None
    ) -> Upserted:
        return await self._write(SubscribeWebhooks(broker_id, url, events), key=keyed(keep))

    async def unsubscribe(self, webhook_id: str, owner: str | None) -> None:
        await self._write(UnsubscribeWebhook(webhook_id, owner))

    async def journal_answer(self, fact: Fact) -> None:
        """Nothing: the sequencer journals a kept answer when its key is finished
        (`keys.finish`), which the HTTP layer does for these refusals too."""

    async def _write(
        self, command: WriteCommand, request_id: str | None = None, key: Key | None = None
    ) -> Any:
        return await self._outbox.request(Write(next(self._numbers), command, request_id, key))

    async def _send(self, writes: Sequence[Write]) -> list[Any]:
        """One call to the sequencer with a pass's writes; their answers, in order. A
        call that failed with the sequencer's process is sent again, the same writes
        under the same numbers, while Ray restarts it (with a journal): the restarted
        sequencer recognises those it journaled and answers them once replayed."""
        document = encode_part(Part(self.worker, tuple(writes)))
        try:
            _, _, answers = decode_answers(await self.at_sequencer("submit", document))
        except ExchangeError as down:  # the sequencer's process is gone: decided here
            for write in writes:
                if type(write.command) is SubmitOrder:
                    self.metrics.count_order(write.command.type, write.command.side, down.code)
            raise
        return [answer for _, answer in answers]

    # -- reads -------------------------------------------------------------------------

    async def order(self, order_id: str) -> Order | None:
        return await reached(self._account(order_id).order, order_id)

    async def broker_orders(
        self, broker_id: str, status: str | None, start: int, limit: int
    ) -> tuple[list[Order], int]:
        return await reached(
            self._account(broker_id).broker_orders, broker_id, status, start, limit
        )

    async def balance(self, broker_id: str) -> Balance:
        return await reached(self._account(broker_id).balance, broker_id)

    async def webhooks(self, broker_id: str) -> list[Subscription]:
        return await reached(self._account(broker_id).webhooks, broker_id)

    async def book(self, symbol: str, depth: int) -> BookView:
        return await reached((await self._symbol(symbol)).book, symbol, depth)

    async def quote(self, symbol: str, side: str, quantity: int) -> QuoteView:
        return await reached((await self._symbol(symbol)).quote, symbol, side, quantity)

    async def price(self, symbol: str) -> Price:
        return await reached((await self._symbol(symbol)).price, symbol)

    async def stocks(self) -> list[tuple[str, Summary]]:
        """Every listed symbol's summary, by symbol: the listing from the sequencer,
        then one call per symbol shard."""
        listed = await self._refresh_listed()
        placement = self.placement
        by_shard: dict[int, list[str]] = {}
        for symbol in listed:
            by_shard.setdefault(placement.symbol_shard(symbol), []).append(symbol)
        shards = list(by_shard.items())
        answers = await asyncio.gather(
            *(reached(self._peers(SYMBOLS, j).summaries, symbols) for j, symbols in shards)
        )
        summaries = {
            symbol: summary
            for (_, symbols), shard_summaries in zip(shards, answers, strict=True)
            for symbol, summary in zip(symbols, shard_summaries, strict=True)
        }
        return [(symbol, summaries[symbol]) for symbol in listed]

    async def trades(self, symbol: str, limit: int) -> list[Trade]:
        return await reached((await self._symbol(symbol)).trades, symbol, limit)

    async def candles(self, symbol: str, interval: str, limit: int) -> list[Candle]:
        return await reached((await self._symbol(symbol)).candles, symbol, interval, limit)

    # -- the event streams' feeds: this worker's replicas ---------------------------------

    def feed(self, symbol: str) -> SymbolFeed:
        """This worker's replica of the symbol's feed, for its streams: a stream hears the
        trades executed after it joined (the first poll asks for those), then each
        step's trades once; every step moves the replica's book version, so the fan-out
        reads the book again. One poll per symbol shard runs while any replica does."""
        feed = self._feeds.get(symbol)
        if feed is None:
            feed = self._feeds[symbol] = SymbolFeed(symbol)
            self._seen[symbol] = (JOINING, self._clock.now())
            shard = self.placement.symbol_shard(symbol)
            if shard not in self._polls:
                poll = asyncio.get_running_loop().create_task(self._poll(shard))
                self._polls[shard] = poll
        return feed

    async def _poll(self, shard: int) -> None:
        host = self._peers(SYMBOLS, shard)
        placement = self.placement
        while True:
            seen = {s: n for s, n in self._seen.items() if placement.symbol_shard(s) == shard}
            try:
                updates: dict[str, Update] = await host.news.remote(seen, POLL_S)
            except Exception:  # the shard is restarting: its streams wait, then go on
                log.exception("stream poll of symbol shard %d failed", shard)
                await asyncio.sleep(POLL_S)
                continue
            for symbol, update in updates.items():
                self._seen[symbol] = (update.steps, self._seen[symbol][1])
                if update.trades or seen[symbol][0] != JOINING:
                    # the replica's summary is never read: market data comes from the shard
                    self._feeds[symbol].publish(update.trades, None, None, None)

    async def _refresh_listed(self) -> list[str]:
        """The listing as the sequencer has it now, sorted, remembered."""
        listed: list[str] = await self.at_sequencer("listed")
        self._listed.update(listed)
        return listed

    def sequencer(self) -> Any:
        return self._peers(SEQUENCER)

    async def at_sequencer(self, method: str, *args: Any) -> Any:
        """The sequencer's answer to one call (`reached`), asked again when its process
        died under it and Ray restarts it (with a journal): Ray holds a call made while
        an actor restarts, so the call sent again waits for the new process. One that
        fails again `RESENDS` times, or past `RESEND_S`, finds it dead for good."""
        deadline = time.monotonic() + self._resend_s
        failures = 0
        while True:
            try:
                return await reached(getattr(self.sequencer(), method), *args)
            except ExchangeError as down:
                failures += 1
                if down.code != "unavailable" or failures > RESENDS or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(RESEND_PAUSE_S)

    def _hosts(self) -> list[Any]:
        """Every host: the sequencer, the account shards, the symbol shards."""
        placement, peers = self.placement, self._peers
        return [
            self.sequencer(),
            *(peers(ACCOUNTS, i) for i in range(placement.account_shards)),
            *(peers(SYMBOLS, j) for j in range(placement.symbol_shards)),
        ]

    def _account(self, name: str) -> Any:
        """The account host of a broker, or of the order or webhook whose id names it."""
        return self._peers(ACCOUNTS, self.placement.account_shard(name))

    async def _symbol(self, symbol: str) -> Any:
        """The symbol's host, once the symbol is known to be listed (else
        `symbol_not_found`). A listed symbol stays listed, so the worker remembers the
        ones it has seen and asks the sequencer only about the others."""
        if symbol not in self._listed and symbol not in await self._refresh_listed():
            raise symbol_not_found(symbol)
        return self._peers(SYMBOLS, self.placement.symbol_shard(symbol))


class SequencerKeys:
    """The `Idempotency-Key`s of every worker, kept by the sequencer (`Engine.keys`)."""

    __slots__ = ("_engine",)

    def __init__(self, engine: RayEngine) -> None:
        self._engine = engine

    async def begin(
        self, endpoint: str, key: str, digest: bytes
    ) -> StoredAnswer | InFlight | Decided:
        return await self._engine.at_sequencer("begin_key", endpoint, key, digest)  # type: ignore[no-any-return]

    async def finish(self, endpoint: str, key: str, status: int, body: bytes) -> None:
        await self._engine.at_sequencer("finish_key", endpoint, key, status, body)


def keyed(keep: KeepAnswer | None) -> Key | None:
    """The `Idempotency-Key` a write travels with (the sequencer's `Decided`)."""
    return None if keep is None else keep.idempotency_key


async def reached(method: Any, *args: Any) -> Any:
    """A host's answer to one call, a refusal raised (a host returns refusals as values,
    which Ray would wrap if raised); a host that is down (its process died) refuses the
    request with 503 `unavailable`, as the sequencer answers a write it cannot settle."""
    ray = import_ray()
    try:
        answer = await method.remote(*args)
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
        raise exchange_unavailable() from None
    if isinstance(answer, ExchangeError):
        raise answer
    return answer
