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
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from miniexchange.actors.market_data import Summary
from miniexchange.clock import SystemClock
from miniexchange.cluster.batches import Write, decode_part
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
from miniexchange.cluster.shard_snapshots import AccountSnapshot, SymbolSnapshot
from miniexchange.cluster.shards import AccountShard, Answer, Placement, SymbolShard
from miniexchange.cluster.snapshot_file import (
    ClusterSnapshot,
    read_cluster_snapshot,
    snapshot_file,
    write_cluster_snapshot,
)
from miniexchange.cluster.snapshot_format import (
    decode_account_snapshot,
    decode_symbol_snapshot,
    encode_account_snapshot,
    encode_symbol_snapshot,
)
from miniexchange.cluster.stamped import Batch, Go
from miniexchange.ids import random_uuid4
from miniexchange.journal.store import MemoryJournal, SqliteJournal
from miniexchange.metrics import Family, Metrics, merged
from miniexchange.model.candles import Candle
from miniexchange.model.commands import SubmitOrder
from miniexchange.model.engine import BookView, QuoteView
from miniexchange.model.errors import (
    ExchangeError,
    broker_not_found,
    exchange_unavailable,
    journal_unavailable,
)
from miniexchange.model.idempotency import InFlight, KeyIndex, StoredAnswer
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
the process it rebuilt (a dead or restarted one would leave its writers waiting)."""
CHECK_S = 5.0
"""How often the sequencer asks it anyway (a shard may die while nothing is in flight)."""
RESTART_WAIT_S = 120.0
"""How long a rebuild waits for Ray to bring a shard's process back."""
SNAPSHOT_WAIT_S = 5.0
"""How long a snapshot holds the cuts for the batches in flight to settle before it
gives up (and the next one tries again)."""

log = logging.getLogger("miniexchange.cluster")


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


class _ShardHost:
    """What both kinds of shard host share: one lock around the door (a threaded actor
    runs calls at once), and the rebuild protocol. A host starts empty and closed: its
    reads answer `unavailable` until the sequencer has replayed the journal into it
    and opened it (`reset`, the batches, `open`), at the start of the cluster and again
    whenever a shard's process was restarted. `incarnation` tells the sequencer that a
    process is not the one it rebuilt."""

    def __init__(self) -> None:
        self.incarnation = random_uuid4()
        self.serving = False
        self._lock = threading.Lock()
        self._peers = Peers()
        self._captured: tuple[int, Any] | None = None

    def identity(self) -> str:
        return self.incarnation

    def capture(self, k: int) -> None:
        """The shard's state as it stands after batch `k` (the sequencer holds the cuts
        until every shard has answered): values, copied under the lock at once; their
        bytes are made by `captured`, while the phases go on."""
        with self._lock:
            self._captured = (k, self._capture())

    def captured(self, k: int) -> Any:
        """The bytes of what `capture(k)` took (`ValueError`: it took another batch)."""
        captured, self._captured = self._captured, None
        if captured is None or captured[0] != k:
            raise ValueError(f"no capture of batch {k} here")
        return self._encode(captured[1])

    def _capture(self) -> Any:
        raise NotImplementedError

    def _encode(self, captured: Any) -> Any:
        raise NotImplementedError

    def open(self) -> None:
        self.serving = True

    def _closed(self) -> ExchangeError | None:
        return None if self.serving else exchange_unavailable()

    def metric_samples(self) -> list[Family] | None:
        """This shard's figures, for a worker's scrape (`cluster.scrape`); None while it
        is closed: a shard being rebuilt counts its replay again from zero, so its
        figures would go back for a while."""
        if not self.serving:
            return None
        return self._figures()

    def _figures(self) -> list[Family]:
        return self._shard.metrics.families()  # type: ignore[attr-defined]  # both kinds have one


class AccountShardHost(_ShardHost):
    def __init__(
        self,
        index: int,
        placement: Placement,
        deliveries: Callable[[], Deliveries],
        account_actors: int = 1,
    ) -> None:
        """`deliveries` makes this process's webhook delivery pool (started here)."""
        super().__init__()
        self.index = index
        self._placement = placement
        self._account_actors = account_actors
        self._deliveries = deliveries()
        self._deliveries.start()
        self._shard, self._door = self._started(None)

    def _started(self, snapshot: bytes | None) -> tuple[AccountShard, AccountDoor]:
        """A shard empty or from its snapshot's document, and its door."""
        deliver = self._deliveries.submit
        shard = (
            AccountShard(self.index, self._placement, deliver, self._account_actors)
            if snapshot is None
            else AccountShard.from_snapshot(
                decode_account_snapshot(snapshot), deliver, self._account_actors
            )
        )
        return shard, AccountDoor(shard)

    def reset(self, replayed_through: int, snapshot: bytes | None = None) -> str:
        """Closed, empty or as `snapshot` (a document of `captured`), for a replay of
        the journal's batches after it, those up to `replayed_through` settled before
        (their webhooks are not delivered again)."""
        with self._lock:
            self.serving = False
            self._shard.stop()
            self._shard, self._door = self._started(snapshot)
            self._shard.replayed_through = replayed_through
        return self.incarnation

    def _capture(self) -> AccountSnapshot:
        return self._shard.snapshot()

    def _encode(self, captured: AccountSnapshot) -> bytes:
        return encode_account_snapshot(captured)

    def take_batch(self, document: bytes) -> None:
        batch = decode_batch(document)
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

    def order(self, order_id: str) -> Order | ExchangeError | None:
        return self._closed() or self._shard.order(order_id)

    def broker_orders(
        self, broker_id: str, status: str | None, start: int, limit: int
    ) -> tuple[list[Order], int] | ExchangeError:
        if (closed := self._closed()) is not None:
            return closed
        if broker_id not in self._shard.registered:
            return broker_not_found(broker_id)
        return self._shard.broker_orders(broker_id, status, start, limit)

    def balance(self, broker_id: str) -> Balance | ExchangeError:
        if (closed := self._closed()) is not None:
            return closed
        try:
            return self._shard.balance(broker_id)
        except ExchangeError as refusal:
            return refusal

    def broker_with_key(self, digest: str) -> str | ExchangeError | None:
        """The broker whose current API key has this digest, or None."""
        return self._closed() or self._shard.published.brokers_by_key.get(digest)

    def webhooks(self, broker_id: str) -> list[Subscription] | ExchangeError:
        if (closed := self._closed()) is not None:
            return closed
        if broker_id not in self._shard.registered:
            return broker_not_found(broker_id)
        return self._shard.webhooks(broker_id)

    def _figures(self) -> list[Family]:
        """The shard's (rebuilt with it) and this process's webhook deliveries (its pool
        outlives a rebuild, and a replay delivers nothing again)."""
        return merged(self._shard.metrics.families(), delivery_metrics().families())

    def stop(self) -> None:
        self._shard.stop()
        self._deliveries.stop()


class SymbolShardHost(_ShardHost):
    def __init__(self, index: int, placement: Placement, vwap_window_us: int) -> None:
        super().__init__()
        self.index = index
        self._placement = placement
        self._vwap_window_us = vwap_window_us
        # the workers' polls outlive a rebuild: the replay counts the same steps again,
        # and a poll hears of a symbol's steps only past those it has seen
        self._news = News()
        self._shard, self._door = self._started(None)

    def _started(self, snapshot: bytes | None) -> tuple[SymbolShard, SymbolDoor]:
        """A shard empty or from its snapshot's document, and its door."""
        window, listeners = self._vwap_window_us, (self._news,)
        shard = (
            SymbolShard(self.index, self._placement, SystemClock(), window, listeners=listeners)
            if snapshot is None
            else SymbolShard.from_snapshot(
                decode_symbol_snapshot(snapshot), SystemClock(), window, listeners=listeners
            )
        )
        return shard, SymbolDoor(shard)

    def reset(
        self,
        replayed_through: int,
        snapshot: tuple[bytes, dict[str, int]] | None = None,
    ) -> str:
        """Closed, empty or as `snapshot` (what `captured` gave: the document and the
        steps counted), for a replay of the journal's batches after it."""
        with self._lock:
            self.serving = False
            self._shard.stop()
            self._news.forget_steps(None if snapshot is None else snapshot[1])
            self._shard, self._door = self._started(None if snapshot is None else snapshot[0])
        return self.incarnation

    def _capture(self) -> tuple[SymbolSnapshot, dict[str, int]]:
        return self._shard.snapshot(), self._news.steps()

    def _encode(
        self, captured: tuple[SymbolSnapshot, dict[str, int]]
    ) -> tuple[bytes, dict[str, int]]:
        snapshot, steps = captured
        return encode_symbol_snapshot(snapshot), steps

    def take_match_part(self, document: bytes) -> None:
        part = decode_match_part(document)
        with self._lock:
            self._door.take_match_part(part)
            for _, parts in self._door.run():
                for i, settle in enumerate(parts):
                    self._peers(ACCOUNTS, i).take_settle_part.remote(encode_settle_part(settle))

    def book(self, symbol: str, depth: int) -> BookView | ExchangeError:
        return self._closed() or self._shard.book(symbol, depth)

    def quote(self, symbol: str, side: str, quantity: int) -> QuoteView | ExchangeError:
        return self._closed() or self._shard.quote(symbol, side, quantity)

    def price(self, symbol: str) -> Price | ExchangeError:
        return self._closed() or self._shard.price(symbol)

    def summaries(self, symbols: list[str]) -> list[Summary] | ExchangeError:
        """Each symbol's summary as published, its best prices from the book (which
        leaves due orders out) where an order may be due: no read shows a due order."""
        if (closed := self._closed()) is not None:
            return closed
        shard, now = self._shard, self._shard.clock.now()
        summaries = [shard.market_data.summary(symbol) for symbol in symbols]
        return [
            summary.with_best_prices(shard.book(symbol, 1))
            if summary.may_show_a_due_order(now)
            else summary
            for symbol, summary in zip(symbols, summaries, strict=True)
        ]

    def trades(self, symbol: str, limit: int) -> list[Trade] | ExchangeError:
        if (closed := self._closed()) is not None:
            return closed
        feed = self._shard.market_data.get(symbol)
        return [] if feed is None else feed.latest_trades(limit)

    def candles(self, symbol: str, interval: str, limit: int) -> list[Candle] | ExchangeError:
        if (closed := self._closed()) is not None:
            return closed
        feed = self._shard.market_data.get(symbol)
        return [] if feed is None else feed.latest_candles(interval, limit)

    def news(self, seen: dict[str, tuple[int, int]], wait_s: float) -> dict[str, Update]:
        """A worker's long poll for its streams (`News.since`): it holds one of this
        actor's threads while it waits."""
        return self._news.since(seen, wait_s)

    def stop(self) -> None:
        self._shard.stop()


@functools.cache
def delivery_metrics() -> Metrics:
    """This process's webhook delivery figures: those of its account host's pool (a host
    is a process of its own)."""
    return Metrics()


def count_delivery(event_type: str, outcome: str, seconds: float | None) -> None:
    """A delivery pool's `on_outcome` in an account host (`make run-ray` gives it to the
    pools it makes: a plain function, which reaches the host's process by name)."""
    delivery_metrics().count_delivery(event_type, outcome, seconds)


class SequencerHost:
    def __init__(
        self,
        placement: Placement,
        database_path: str,
        max_symbols: int,
        expiration_interval_us: int | None,
        idempotency_max_keys: int = 1_000_000,
        idempotency_ttl_us: int = 86_400_000_000,
        snapshot_interval_s: float | None = None,
    ) -> None:
        """`database_path`: the command journal (`:memory:`: none); a journal that
        exists is resumed, from its cluster snapshot if it has one. `snapshot_interval_s`:
        how often a cluster snapshot is taken while batches come (None: never; with no
        journal there is none to take)."""
        self.placement = placement
        self._sequencer = Sequencer(
            placement,
            SystemClock(),
            max_symbols,
            expiration_interval_us,
            keys=KeyIndex(idempotency_max_keys, idempotency_ttl_us),
        )
        self.metrics = Metrics(journal=database_path != ":memory:")
        self._snapshot_path = snapshot_file(database_path)
        snapshot = None
        if database_path == ":memory:":
            self._journal: MemoryJournal | SqliteJournal = MemoryJournal()
            self._sequencer.resume(self._journal.facts())
        else:
            snapshot = read_cluster_snapshot(self._snapshot_path, placement)
            covered = 0 if snapshot is None else snapshot.seq
            self._journal = SqliteJournal(
                database_path,
                engine="ray",
                covered_seq=covered,
                on_commit=self.metrics.observe_journal_commit,
            )
            self._sequencer.resume(
                self._journal.facts(after=covered), None if snapshot is None else snapshot.sequencer
            )
        self._recovers = isinstance(self._journal, SqliteJournal)
        self._snapshot_k = 0 if snapshot is None else snapshot.k  # the latest one's batch
        self._snapshot_interval_s = snapshot_interval_s if self._recovers else None
        self._snapshotter: asyncio.Task[None] | None = None
        self._replayed: int | None = None  # batches replayed at the cluster's start
        self._launch: asyncio.Task[int] | None = None
        self._replay: dict[int, set[int]] = {}  # a replayed batch -> the shards that settled it
        self._replay_done: dict[int, asyncio.Future[None]] = {}
        self._rebuilding = False
        self._incarnations: list[str] = []  # the shards' processes, as last rebuilt
        self._words: set[int] = set()  # the recent `Go` words given, for a rebuild
        self._interval_s = None if expiration_interval_us is None else expiration_interval_us / 1e6
        self._waiting: dict[Ticket, asyncio.Future[Any]] = {}
        self._answers: dict[int, list[Answer]] = {}  # k -> the answers come so far
        self._reported: dict[int, set[int]] = {}  # k -> the account shards that answered
        self._failure: ExchangeError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        context = import_ray().get_runtime_context()
        if context.was_current_actor_reconstructed:  # Ray restarted this process: rebuild
            context.current_actor.replay.remote()  # now, not at the first call to come
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
            self._count_failed(part.writes, [self._failure] * len(part.writes))
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
        self._count_failed(part.writes, answers)
        return encode_answers(
            0, 0, [(w.number, a) for w, a in zip(part.writes, answers, strict=True)]
        )

    def _count_failed(self, writes: Sequence[Write], answers: Sequence[Any]) -> None:
        """The orders answered with the sequencer's failure (`unavailable`, or
        `journal_unavailable`) are counted here, where that was decided: no shard saw them."""
        failure = self._failure
        if failure is None:
            return
        for write, answer in zip(writes, answers, strict=True):
            command = write.command
            if answer is failure and type(command) is SubmitOrder:
                self.metrics.count_order(command.type, command.side, failure.code)

    async def replay(self) -> int:
        """The cluster's start: rebuild the shards from the journal and open them
        (`_rebuild`); how many batches were replayed. It starts with the first call of
        any kind (`_started`): so a sequencer Ray restarted rebuilds the shards at once,
        and the writes its workers send again wait for it. Once: a second call answers
        the same number."""
        self._started()
        assert self._launch is not None
        return await asyncio.shield(self._launch)

    async def _launched(self) -> int:
        replayed = self._replayed = await self._rebuild()
        loop = self._started()
        # the ticks only now: a tick's batch sent while the shards were being reset
        # could reach an old shard and be wiped with it (no journal replays it then)
        if self._interval_s is not None:  # held: the loop keeps only weak references
            self._ticker = loop.create_task(self._tick())
        if self._snapshot_interval_s is not None:
            self._snapshotter = loop.create_task(self._snapshots())
        return replayed

    async def _rebuild(self) -> int:
        """Make every shard what the journal says: each is reset closed, empty or from
        the latest cluster snapshot, the journaled batches after it are sent to them
        again as they were cut (each with its recorded `after`, and every `Go` word
        given), then they open. The shards are deterministic, so they end where they
        were; the batches whose answers were given before deliver no webhook again, and
        those still in flight are answered as they settle (new writes go on meanwhile,
        ordered by the doors). Returns how many batches were replayed."""
        loop = self._started()
        self._rebuilding = True
        quiet = self._sequencer.settled_through  # answered, delivered: not again
        snapshot = (
            await loop.run_in_executor(
                None, read_cluster_snapshot, self._snapshot_path, self.placement
            )
            if self._recovers
            else None
        )
        accounts, symbols = self._shards(ACCOUNTS), self._shards(SYMBOLS)
        resets = [
            *(
                self._answered(shard.reset, quiet, snapshot and snapshot.accounts[i])
                for i, shard in enumerate(accounts)
            ),
            *(
                self._answered(shard.reset, quiet, snapshot and snapshot.symbols[j])
                for j, shard in enumerate(symbols)
            ),
        ]
        shards = [*accounts, *symbols]
        self._incarnations = await asyncio.gather(*resets)
        words = set(self._words)
        if self._sequencer.allowed == self._sequencer.last_cut:
            words.add(self._sequencer.last_cut)
        replayed = 0
        for batch in self._journaled_batches(snapshot):
            if batch.after == batch.k - 1 and batch.after > 0:
                words.add(batch.after)
            if batch.k <= quiet:
                if batch.k > IN_FLIGHT:  # two batches in the shards at most, as when cut
                    await self._replay_settled(batch.k - IN_FLIGHT)
                self._replay_done[batch.k] = loop.create_future()
            for k in sorted(words):
                self._send_go(k)
            words.clear()
            self._send_batch(batch)
            replayed += 1
        for k in sorted(words):
            self._send_go(k)
        for k in list(self._replay_done):
            await self._replay_settled(k)
        await asyncio.gather(*(self._answered(shard.open) for shard in shards))
        self._rebuilding = False
        return replayed

    def _journaled_batches(self, snapshot: ClusterSnapshot | None) -> Iterator[Batch]:
        """The durable batches after `snapshot`, read through a connection of their own
        (the writer goes on with its own)."""
        if not isinstance(self._journal, SqliteJournal):
            return
        covered, k = (0, 0) if snapshot is None else (snapshot.seq, snapshot.k)
        reader = SqliteJournal(self._journal.path, engine="ray", covered_seq=covered)
        try:
            for entry in journaled(reader.facts(after=covered)):
                if entry.batch.k > k:
                    yield entry.batch
        finally:
            reader.close()

    async def _snapshots(self) -> None:
        """A cluster snapshot every interval while batches come; one that fails (a shard
        lost meanwhile) is logged and the next one tries again."""
        assert self._snapshot_interval_s is not None
        while self._failure is None:
            await asyncio.sleep(self._snapshot_interval_s)
            if self._sequencer.last_cut == self._snapshot_k or self._rebuilding:
                continue
            try:
                await self.snapshot()
            except Exception as error:
                log.warning("cluster snapshot failed: %r", error)

    async def snapshot(self) -> int:
        """Take a cluster snapshot now: hold the cuts, let the last batch settle, have
        every shard capture its state there, release the cuts, then write the shards'
        bytes to the snapshot file and forget the journal's facts it covers. Returns
        the batch it stands after (0: none was taken, the shards did not come to rest)."""
        loop, sequencer = self._started(), self._sequencer
        accounts, symbols = self._shards(ACCOUNTS), self._shards(SYMBOLS)
        sequencer.hold()
        try:
            self._word()  # the last batch may settle without a next one
            deadline = time.monotonic() + SNAPSHOT_WAIT_S
            while sequencer.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            if sequencer.in_flight or self._rebuilding or self._failure is not None:
                return 0
            state = sequencer.state()
            covered = self._journal.committed_seq
            await asyncio.gather(
                *(shard.capture.remote(state.k) for shard in (*accounts, *symbols))
            )
        finally:
            sequencer.release()
            self._schedule_pump()
        documents = await asyncio.gather(
            *(shard.captured.remote(state.k) for shard in (*accounts, *symbols))
        )
        split = len(accounts)
        taken = ClusterSnapshot(
            state.k, covered, state, tuple(documents[:split]), tuple(documents[split:])
        )
        await loop.run_in_executor(None, write_cluster_snapshot, self._snapshot_path, taken)
        self._snapshot_k = state.k
        self._journal.forget_through(covered)
        return state.k

    async def _answered(self, method: Any, *args: Any) -> Any:
        """A shard's answer to one call, asked again while Ray restarts its process;
        `unavailable` for every write if it does not come back."""
        ray = import_ray()
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                return await method.remote(*args)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                if time.monotonic() > deadline:
                    self._fail(exchange_unavailable())
                    raise
                await asyncio.sleep(0.2)

    async def _replay_settled(self, k: int) -> None:
        future = self._replay_done.get(k)
        if future is not None:
            await future
            del self._replay_done[k]

    async def settled(self, document: bytes) -> None:
        """An account shard ran R2 of a batch: its answers; with every shard's, the
        batch's effects are all in place, and its answers go."""
        self._started()
        k, sender, answers = decode_answers(document)
        if k <= self._sequencer.settled_through:  # replayed, or sent again after a failure
            # writes journaled before a restart, sent again by their workers
            self._give(self._sequencer.replayed(answers))
            future = self._replay_done.get(k)
            if future is not None:
                reported = self._replay.setdefault(k, set())
                reported.add(sender)
                if len(reported) == self.placement.account_shards and not future.done():
                    del self._replay[k]
                    future.set_result(None)
            return
        reported = self._reported.setdefault(k, set())
        if sender in reported:
            return
        reported.add(sender)
        self._answers.setdefault(k, []).extend(answers)
        while len(self._reported.get(self._settled_next(), ())) == self.placement.account_shards:
            k = self._settled_next()
            del self._reported[k]
            self._give(self._sequencer.settled(k, self._answers.pop(k)))
        self._words = {word for word in self._words if word > k - IN_FLIGHT}
        self._schedule_pump()

    # -- the `Idempotency-Key`s of every worker ---------------------------------------

    async def begin_key(
        self, endpoint: str, key: str, digest: bytes
    ) -> StoredAnswer | InFlight | ExchangeError:
        """`KeyIndex.begin`, its refusal returned (Ray would wrap it if raised)."""
        try:
            return self._sequencer.begin_key((endpoint, key), digest)
        except ExchangeError as refusal:
            return refusal

    async def finish_key(
        self, endpoint: str, key: str, status: int, body: bytes
    ) -> ExchangeError | None:
        """The first use answered; a kept answer is journaled, and durable, before the
        worker sends it (`journal_unavailable` if it cannot be: fail-stop, as a batch)."""
        loop = self._started()
        fact = self._sequencer.finish_key((endpoint, key), status, body)
        if fact is None:
            return None
        durable: asyncio.Future[BaseException | None] = loop.create_future()
        self._journal.append(
            [fact], lambda error: loop.call_soon_threadsafe(durable.set_result, error)
        )
        if await durable is not None:
            self._fail(journal_unavailable())
            return journal_unavailable()
        return None

    async def metric_samples(self) -> list[Family]:
        """The sequencer's figures, for a worker's scrape (`cluster.scrape`): the
        journal's commits, the orders refused at the cut."""
        return self.metrics.families()

    async def listed(self) -> list[str]:
        """The listed symbols, sorted: a symbol is listed once the request that listed
        it was answered, and stays listed."""
        return sorted(self._sequencer.listing.listed)

    def _settled_next(self) -> int:
        return self._sequencer.settled_through + 1

    def _started(self) -> asyncio.AbstractEventLoop:
        """The loop; on the first call, the journal, the watch and the rebuild of the
        shards start (the ticks once they are built: `_launched`)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._journal.start()
            # held: the loop keeps only weak references to its tasks
            self._watcher = self._loop.create_task(self._watch())
            self._launch = self._loop.create_task(self._launched())
        return self._loop

    def _shards(self, kind: str) -> list[Any]:
        count = self.placement.account_shards if kind == ACCOUNTS else self.placement.symbol_shards
        return [self._peers(kind, i) for i in range(count)]

    async def _tick(self) -> None:
        """The expiration tick enters the stream every interval, also when idle."""
        while True:
            await asyncio.sleep(self._interval_s or 1.0)
            self._pump()

    async def _watch(self) -> None:
        """Whether every shard is the process the sequencer rebuilt: asked when a batch
        has gone unsettled for `WATCH_S`, and every `CHECK_S` anyway. A shard Ray
        restarted (it starts empty) has every shard rebuilt from the journal; without a
        journal (`:memory:`) nothing can rebuild it, so a dead shard stops the
        exchange: every write waiting and every later one is answered `unavailable`."""
        sequencer = self._sequencer
        settled, since, checked = sequencer.settled_through, time.monotonic(), time.monotonic()
        while self._failure is None:
            await asyncio.sleep(WATCH_S / 4)
            now = time.monotonic()
            if sequencer.in_flight == 0 or sequencer.settled_through != settled:
                settled, since = sequencer.settled_through, now
            stalled = now - since >= WATCH_S
            if (
                self._rebuilding
                or self._replayed is None
                or not (stalled or now - checked >= CHECK_S)
            ):
                continue
            checked = since = now
            if await self._incarnations_now() == self._incarnations:
                continue
            if self._recovers:
                log.warning("a shard's process was restarted: rebuilding every shard")
                with contextlib.suppress(Exception):  # failed: answered unavailable
                    await self._rebuild()
            else:
                self._fail(exchange_unavailable())

    async def _incarnations_now(self) -> list[str | None]:
        """Each shard's incarnation, None for one that does not answer now."""
        shards = [*self._shards(ACCOUNTS), *self._shards(SYMBOLS)]
        answers = await asyncio.gather(
            *(shard.identity.remote() for shard in shards), return_exceptions=True
        )
        return [answer if isinstance(answer, str) else None for answer in answers]

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
            for order, refusal in cut.refused_orders:
                self.metrics.count_order(order.type, order.side, refusal.code)
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
        self._send_batch(batch)

    def _word(self) -> None:
        """Nothing came since the last cut: the account shards may settle it at once."""
        go = self._sequencer.go()
        if go is not None:
            self._words.add(go.k)
            self._send_go(go.k)

    def _send_batch(self, batch: Batch) -> None:
        document = encode_batch(batch)
        for shard in self._shards(ACCOUNTS):
            shard.take_batch.remote(document)

    def _send_go(self, k: int) -> None:
        for shard in self._shards(ACCOUNTS):
            shard.take_go.remote(k)

    def _give(self, answers: list[tuple[Ticket, Any]] | tuple[tuple[Ticket, Any], ...]) -> None:
        for ticket, answer in answers:
            future = self._waiting.pop(ticket, None)
            if future is not None and not future.done():
                future.set_result(answer)


class Hosts(NamedTuple):
    sequencer: Any
    accounts: list[Any]
    symbols: list[Any]
    replayed: int
    """The journaled batches the shards were rebuilt from at the start."""


def start_hosts(
    placement: Placement,
    deliveries: Callable[[], Deliveries],
    database_path: str = ":memory:",
    max_symbols: int = 10_000,
    expiration_interval_us: int | None = 1_000_000,
    vwap_window_us: int = 300_000_000,
    detached: bool = False,
    idempotency_max_keys: int = 1_000_000,
    idempotency_ttl_us: int = 86_400_000_000,
    snapshot_interval_us: int | None = None,
) -> Hosts:
    """Start the sequencer and the shards as named Ray actors of the connected cluster
    (`detached`: they outlive this process), and return once the shards are rebuilt
    from the journal at `database_path` and open. With a journal Ray restarts a shard
    whose process died, and the sequencer rebuilds every shard from the journal; it
    restarts the sequencer too, which resumes its journal and rebuilds every shard. With
    none (`:memory:`) nothing could rebuild them, so a dead one stays dead and the
    exchange answers `unavailable`."""
    ray = import_ray()
    restarts = 0 if database_path == ":memory:" else -1
    # no CPU reserved: a host is a long-lived process, placed wherever Ray has room
    options: dict[str, Any] = {"namespace": NAMESPACE, "max_restarts": restarts, "num_cpus": 0}
    if detached:
        options["lifetime"] = "detached"
    threaded = {**options, "max_concurrency": 8}
    # a symbol host also holds one thread per worker's long poll for its streams
    polled = {**threaded, "max_concurrency": 64}
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
        .remote(
            placement,
            database_path,
            max_symbols,
            expiration_interval_us,
            idempotency_max_keys,
            idempotency_ttl_us,
            None if snapshot_interval_us is None else snapshot_interval_us / 1e6,
        )
    )
    replayed = ray.get(sequencer.replay.remote())
    return Hosts(sequencer, accounts, symbols, replayed)
