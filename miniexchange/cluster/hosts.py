"""The Ray actors of `ENGINE=ray`: the sequencer and the shards, each a doorway around
the plain classes of this package (docs/ray.md, "Processes").

- `SequencerHost` (an async actor): the workers' `submit` calls queue their writes and
  wait for their answers; a pump cuts batches (`Sequencer.cut`), journals each one and,
  once it is durable, sends it to every account shard; the account shards' answers of a
  batch (`settled`) release the answers of its writes.
- `AccountShardHost` and `SymbolShardHost` (threaded actors): each call deposits one
  message in the shard's door (`cluster.doors`) and runs whatever phase it completes,
  sending the phase's parts on, one call per destination. Ray may run two calls of one
  caller in either order on a threaded actor; the door does not mind.

Every message between them is an orjson document (`cluster.parts`, `cluster.batches`),
and every host finds the others by name (`NAMESPACE`, `host_name`), looked up on first
use. The classes are plain Python; `start_hosts` makes them Ray actors, so this module
imports Ray only there, through `import_ray`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from miniexchange.actors.market_data import Summary
from miniexchange.clock import SystemClock
from miniexchange.cluster.batches import decode_part
from miniexchange.cluster.doors import AccountDoor, Matched, SymbolDoor
from miniexchange.cluster.head import NAMESPACE, import_ray
from miniexchange.cluster.news import News, Update
from miniexchange.cluster.parts import (
    decode_answers,
    decode_batch,
    decode_match_part,
    decode_settle_part,
    encode_answers,
    encode_batch,
    encode_match_part,
    encode_settle_part,
)
from miniexchange.cluster.sequencer import IN_FLIGHT, Sequencer, Ticket, journaled
from miniexchange.cluster.shards import AccountShard, Answer, Placement, SymbolShard
from miniexchange.cluster.stamped import Batch, Go
from miniexchange.journal.store import MemoryJournal, SqliteJournal
from miniexchange.model.candles import Candle
from miniexchange.model.engine import BookView, QuoteView
from miniexchange.model.errors import (
    ExchangeError,
    broker_not_found,
    exchange_unavailable,
    journal_unavailable,
)
from miniexchange.model.ledger import Balance
from miniexchange.model.orders import Order, Trade
from miniexchange.model.subscriptions import Subscription
from miniexchange.model.vwap import Price
from miniexchange.webhooks.delivery import Deliveries

SEQUENCER = "sequencer"
ACCOUNTS = "accounts"
SYMBOLS = "symbols"

WATCH_S = 2.0
"""How long a batch may go unsettled before the sequencer asks whether every shard is
alive (a dead one would leave its writers waiting for ever)."""


def host_name(kind: str, index: int = 0) -> str:
    """A host's Ray actor name: `miniexchange/sequencer`, `miniexchange/accounts-0`..."""
    return f"miniexchange/{kind}" if kind == SEQUENCER else f"miniexchange/{kind}-{index}"


class Peers:
    """The other hosts, by name, each looked up once (a restarted actor keeps its name,
    and Ray routes a handle's calls to the restarted instance)."""

    def __init__(self) -> None:
        self._handles: dict[str, Any] = {}

    def __call__(self, kind: str, index: int = 0) -> Any:
        name = host_name(kind, index)
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = import_ray().get_actor(name, namespace=NAMESPACE)
        return handle


class AccountShardHost:
    def __init__(
        self,
        index: int,
        placement: Placement,
        deliveries: Callable[[], Deliveries],
        account_actors: int = 1,
    ) -> None:
        """`deliveries` makes this process's webhook delivery pool (started here)."""
        self.index = index
        self._deliveries = deliveries()
        self._deliveries.start()
        self._shard = AccountShard(index, placement, self._deliveries.submit, account_actors)
        self._door = AccountDoor(self._shard)
        self._lock = threading.Lock()
        self._peers = Peers()

    def take_batch(self, document: bytes, replayed: bool = False) -> None:
        """`replayed`: a batch of the journal sent again at a start (`SequencerHost.replay`)."""
        batch = decode_batch(document)
        if replayed:
            self._shard.replayed_through = max(self._shard.replayed_through, batch.k)
        self._run(lambda door: door.take_batch(batch))

    def take_go(self, k: int) -> None:
        self._run(lambda door: door.take_go(Go(k)))

    def take_settle_part(self, document: bytes) -> None:
        part = decode_settle_part(document)
        self._run(lambda door: door.take_settle_part(part))

    def _run(self, take: Callable[[AccountDoor], None]) -> None:
        with self._lock:  # one phase at a time; sends leave in phase order
            take(self._door)
            for sent in self._door.run():
                if isinstance(sent, Matched):
                    for j, part in enumerate(sent.parts):
                        self._peers(SYMBOLS, j).take_match_part.remote(encode_match_part(part))
                else:
                    document = encode_answers(sent.k, self.index, sent.answers)
                    self._peers(SEQUENCER).settled.remote(document)

    # -- reads: straight from a worker, beside the phases; a refusal is returned, not
    # raised (Ray would wrap it), and pickled as Ray returns values ----------------------

    def order(self, order_id: str) -> Order | None:
        return self._shard.order(order_id)

    def broker_orders(
        self, broker_id: str, status: str | None, start: int, limit: int
    ) -> tuple[list[Order], int] | ExchangeError:
        if broker_id not in self._shard.registered:
            return broker_not_found(broker_id)
        return self._shard.broker_orders(broker_id, status, start, limit)

    def balance(self, broker_id: str) -> Balance | ExchangeError:
        try:
            return self._shard.balance(broker_id)
        except ExchangeError as refusal:
            return refusal

    def webhooks(self, broker_id: str) -> list[Subscription] | ExchangeError:
        if broker_id not in self._shard.registered:
            return broker_not_found(broker_id)
        return self._shard.webhooks(broker_id)

    def stop(self) -> None:
        self._shard.stop()
        self._deliveries.stop()


class SymbolShardHost:
    def __init__(self, index: int, placement: Placement, vwap_window_us: int) -> None:
        self.index = index
        self._news = News()
        self._shard = SymbolShard(
            index, placement, SystemClock(), vwap_window_us, listeners=(self._news,)
        )
        self._door = SymbolDoor(self._shard)
        self._lock = threading.Lock()
        self._peers = Peers()

    def take_match_part(self, document: bytes) -> None:
        part = decode_match_part(document)
        with self._lock:
            self._door.take_match_part(part)
            for _, parts in self._door.run():
                for i, settle in enumerate(parts):
                    self._peers(ACCOUNTS, i).take_settle_part.remote(encode_settle_part(settle))

    def book(self, symbol: str, depth: int) -> BookView:
        return self._shard.book(symbol, depth)

    def quote(self, symbol: str, side: str, quantity: int) -> QuoteView:
        return self._shard.quote(symbol, side, quantity)

    def price(self, symbol: str) -> Price:
        return self._shard.price(symbol)

    def summaries(self, symbols: list[str]) -> list[Summary]:
        """Each symbol's summary as published, its best prices from the book (which
        leaves due orders out) where an order may be due: no read shows a due order."""
        shard, now = self._shard, self._shard.clock.now()
        summaries = [shard.market_data.summary(symbol) for symbol in symbols]
        return [
            summary.with_best_prices(shard.book(symbol, 1))
            if summary.may_show_a_due_order(now)
            else summary
            for symbol, summary in zip(symbols, summaries, strict=True)
        ]

    def trades(self, symbol: str, limit: int) -> list[Trade]:
        feed = self._shard.market_data.get(symbol)
        return [] if feed is None else feed.latest_trades(limit)

    def candles(self, symbol: str, interval: str, limit: int) -> list[Candle]:
        feed = self._shard.market_data.get(symbol)
        return [] if feed is None else feed.latest_candles(interval, limit)

    def news(self, seen: dict[str, tuple[int, int]], wait_s: float) -> dict[str, Update]:
        """A worker's long poll for its streams (`News.since`): it holds one of this
        actor's threads while it waits."""
        return self._news.since(seen, wait_s)

    def stop(self) -> None:
        self._shard.stop()


class SequencerHost:
    def __init__(
        self,
        placement: Placement,
        database_path: str,
        max_symbols: int,
        expiration_interval_us: int | None,
    ) -> None:
        """`database_path`: the command journal (`:memory:`: none); a journal that
        exists is resumed."""
        self.placement = placement
        self._sequencer = Sequencer(placement, SystemClock(), max_symbols, expiration_interval_us)
        self._journal: MemoryJournal | SqliteJournal = (
            MemoryJournal()
            if database_path == ":memory:"
            else SqliteJournal(database_path, engine="ray")
        )
        self._resumed_through = self._sequencer.resume(self._journal.facts())
        self._replay: dict[int, set[int]] = {}  # a replayed batch -> the shards that settled it
        self._replay_done: dict[int, asyncio.Future[None]] = {}
        self._replaying = False
        self._interval_s = None if expiration_interval_us is None else expiration_interval_us / 1e6
        self._waiting: dict[Ticket, asyncio.Future[Any]] = {}
        self._answers: dict[int, list[Answer]] = {}  # k -> the answers come so far
        self._reported: dict[int, set[int]] = {}  # k -> the account shards that answered
        self._failure: ExchangeError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_scheduled = False
        self._ticker: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._peers = Peers()

    async def submit(self, document: bytes) -> bytes:
        """A worker's part: its writes' answers, by the worker's numbers, once each
        write's batch is settled everywhere (or it was refused at the cut)."""
        loop = self._started()
        part = decode_part(document)
        if self._failure is not None:
            return encode_answers(0, 0, [(w.number, self._failure) for w in part.writes])
        futures = []
        for write in part.writes:
            ticket = Ticket(part.worker, write.number)
            future = self._waiting.get(ticket)
            if future is None:
                future = self._waiting[ticket] = loop.create_future()
            futures.append(future)
        self._give(self._sequencer.accept(part))
        self._schedule_pump()
        answers = await asyncio.gather(*futures)
        return encode_answers(
            0, 0, [(w.number, a) for w, a in zip(part.writes, answers, strict=True)]
        )

    async def replay(self) -> int:
        """At a start over a journal: send its batches to the shards again, as they were
        cut (each with the `after` the journal recorded, and the `Go` words that let it
        follow), so that the shards, which start empty and are deterministic, rebuild the
        state it describes; answers are dropped and webhooks not delivered again. Then
        the journal takes new batches and the ticks start. Returns how many batches
        were replayed. Called once, before any worker writes."""
        loop = self._started(replaying=True)
        last = self._resumed_through
        accounts = [self._peers(ACCOUNTS, i) for i in range(self.placement.account_shards)]
        for entry in journaled(self._journal.facts()) if last else ():
            batch = entry.batch
            if batch.k > last:
                break
            if batch.k > IN_FLIGHT:  # at most two batches in flight, as when they were cut
                await self._replayed(batch.k - IN_FLIGHT)
            if batch.after == batch.k - 1 and batch.after > 0:
                for shard in accounts:
                    shard.take_go.remote(batch.after)
            self._replay_done[batch.k] = loop.create_future()
            document = encode_batch(batch)
            for shard in accounts:
                shard.take_batch.remote(document, True)
        if last:
            for shard in accounts:
                shard.take_go.remote(last)
            for k in range(max(1, last - IN_FLIGHT + 1), last + 1):
                await self._replayed(k)
        self._replaying = False
        self._started()
        return last

    async def _replayed(self, k: int) -> None:
        future = self._replay_done.get(k)
        if future is not None:
            await future
            del self._replay_done[k]

    async def settled(self, document: bytes) -> None:
        """An account shard ran R2 of a batch: its answers; with every shard's, the
        batch's effects are all in place, and its answers go."""
        self._started()
        k, sender, answers = decode_answers(document)
        if k <= self._resumed_through:  # a replayed batch: nobody waits for its answers
            reported = self._replay.setdefault(k, set())
            reported.add(sender)
            future = self._replay_done.get(k)
            if len(reported) == self.placement.account_shards and future is not None:
                del self._replay[k]
                future.set_result(None)
            return
        if k <= self._sequencer.settled_through:
            return  # sent again after a failure
        reported = self._reported.setdefault(k, set())
        if sender in reported:
            return
        reported.add(sender)
        self._answers.setdefault(k, []).extend(answers)
        while len(self._reported.get(self._settled_next(), ())) == self.placement.account_shards:
            k = self._settled_next()
            del self._reported[k]
            self._give(self._sequencer.settled(k, self._answers.pop(k)))
        self._schedule_pump()

    async def listed(self) -> list[str]:
        """The listed symbols, sorted: a symbol is listed once the request that listed
        it was answered, and stays listed."""
        return sorted(self._sequencer.listing.listed)

    def _settled_next(self) -> int:
        return self._sequencer.settled_through + 1

    def _started(self, replaying: bool = False) -> asyncio.AbstractEventLoop:
        """The loop; on the first call (not a replay's), the journal, ticks and watch start."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._replaying = replaying
        if self._watcher is None and not self._replaying:
            self._journal.start()
            # held: the loop keeps only weak references to its tasks
            if self._interval_s is not None:
                self._ticker = self._loop.create_task(self._tick())
            self._watcher = self._loop.create_task(self._watch())
        return self._loop

    async def _tick(self) -> None:
        """The expiration tick enters the stream every interval, also when idle."""
        while True:
            await asyncio.sleep(self._interval_s or 1.0)
            self._pump()

    async def _watch(self) -> None:
        """Fail-stop once a shard is found dead: until shards rebuild themselves (docs/
        ray.md, landing step 8) a batch it holds never settles, so every write waiting,
        and every write after, is answered `unavailable` instead of waiting for ever."""
        sequencer = self._sequencer
        settled, since = sequencer.settled_through, time.monotonic()
        while self._failure is None:
            await asyncio.sleep(WATCH_S / 4)
            if sequencer.in_flight == 0 or sequencer.settled_through != settled:
                settled, since = sequencer.settled_through, time.monotonic()
            elif time.monotonic() - since >= WATCH_S:
                if not await self._shards_alive():
                    self._fail(exchange_unavailable())
                since = time.monotonic()

    async def _shards_alive(self) -> bool:
        ray = import_ray()
        shards = [
            *(self._peers(ACCOUNTS, i) for i in range(self.placement.account_shards)),
            *(self._peers(SYMBOLS, j) for j in range(self.placement.symbol_shards)),
        ]
        try:
            await asyncio.gather(*(shard.__ray_ready__.remote() for shard in shards))
        except ray.exceptions.RayActorError:
            return False
        return True

    def _fail(self, failure: ExchangeError) -> None:
        """Answer every waiting write, and every later one, with `failure`."""
        self._failure = failure
        for future in self._waiting.values():
            if not future.done():
                future.set_result(failure)

    def _schedule_pump(self) -> None:
        """One pump per pass of the loop: the writes of every call that arrived in it
        go into one batch."""
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        sequencer, loop = self._sequencer, self._loop
        assert loop is not None
        while (cut := sequencer.cut()) is not None:
            self._give(cut.refused)
            if cut.batch is not None:
                batch = cut.batch

                def durable(error: BaseException | None, batch: Batch = batch) -> None:
                    loop.call_soon_threadsafe(self._durable, batch, error)

                self._journal.append([cut.fact], durable)
        loop.call_soon(self._word)

    def _durable(self, batch: Batch, error: BaseException | None) -> None:
        if error is not None:  # fail-stop: nothing of this batch reaches a shard
            self._fail(journal_unavailable())
            return
        document = encode_batch(batch)
        for i in range(self.placement.account_shards):
            self._peers(ACCOUNTS, i).take_batch.remote(document)

    def _word(self) -> None:
        """Nothing came since the last cut: the account shards may settle it at once."""
        go = self._sequencer.go()
        if go is not None:
            for i in range(self.placement.account_shards):
                self._peers(ACCOUNTS, i).take_go.remote(go.k)

    def _give(self, answers: list[tuple[Ticket, Any]] | tuple[tuple[Ticket, Any], ...]) -> None:
        for ticket, answer in answers:
            future = self._waiting.pop(ticket, None)
            if future is not None and not future.done():
                future.set_result(answer)


class Hosts(NamedTuple):
    sequencer: Any
    accounts: list[Any]
    symbols: list[Any]


def start_hosts(
    placement: Placement,
    deliveries: Callable[[], Deliveries],
    database_path: str = ":memory:",
    max_symbols: int = 10_000,
    expiration_interval_us: int | None = 1_000_000,
    vwap_window_us: int = 300_000_000,
    detached: bool = False,
) -> Hosts:
    """Start the sequencer and the shards as named Ray actors of the connected cluster
    (`detached`: they outlive this process). A host whose process dies stays dead, and
    calls to it fail, until recovery is built (docs/ray.md, landing step 8)."""
    ray = import_ray()
    # no CPU reserved: a host is a long-lived process, placed wherever Ray has room
    # Not restarted yet: a host restarted empty would answer from no state at all. Ray
    # restarts them once a host rebuilds itself from its snapshot and the journal.
    options: dict[str, Any] = {"namespace": NAMESPACE, "max_restarts": 0, "num_cpus": 0}
    if detached:
        options["lifetime"] = "detached"
    threaded = {**options, "max_concurrency": 8}
    # a symbol host also holds one thread per worker's long poll for its streams
    polled = {**options, "max_concurrency": 64}
    accounts = [
        ray.remote(AccountShardHost)
        .options(name=host_name(ACCOUNTS, i), **threaded)
        .remote(i, placement, deliveries)
        for i in range(placement.account_shards)
    ]
    symbols = [
        ray.remote(SymbolShardHost)
        .options(name=host_name(SYMBOLS, j), **polled)
        .remote(j, placement, vwap_window_us)
        for j in range(placement.symbol_shards)
    ]
    sequencer = (
        ray.remote(SequencerHost)
        .options(name=host_name(SEQUENCER), **options)
        .remote(placement, database_path, max_symbols, expiration_interval_us)
    )
    return Hosts(sequencer, accounts, symbols)
