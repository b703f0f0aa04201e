"""The sequencer of `ENGINE=ray`: one stream of numbered, stamped commands, cut into
batches (docs/ray.md, "The sequencer cuts batches").

The workers' writes queue here (`accept`); a cut (`cut`) takes what is queued and:

- numbers each command (`seq`) and stamps it with `at`, the sequencer's clock made
  strictly increasing, so that time priority follows the sequence; with a submission's
  order id and trade seed, a subscription's webhook ids and an issue's credentials. An
  order or webhook id is drawn until it names its broker's account shard, so that a read
  by id goes straight to the shard that has it;
- decides what only it can: the places of `MAX_SYMBOLS` (claimed at the cut, refused at
  once with `symbol_limit_reached`, listed or given back when the batch's answers come),
  and the one rule of a market bid (below);
- fixes the order in which the account shards run this batch's R1 and the previous
  batch's R2 (`after`), and puts the expiration tick into the stream every
  `EXPIRATION_INTERVAL`, so that a replay of the journal runs the same steps in the same
  order at the same times.

**Two batches in flight, and `after`.** A batch may be cut while the one before it is
being matched (its R1 then overlaps the other's ME), never while two are. An account
shard settles (R2) batch `k` only after the sequencer's word: the R1 of a batch cut
behind `k` with `after = k - 1`, or `allow_r2(k)` (`Go`) when nothing was cut behind
it, after which the next cut says `after = k`. The order of every shard's phases is so
decided here, once, and journaled with the batch.

**A market bid's budget** is all the broker's available cash, held in R1 and spent by
the sweeps in ME (`cluster.shards`). Cash is shared across symbols, which are matched in
different shards, so within one batch a broker's market bids are all on one symbol; one
on another symbol waits for the next batch.

**The journal** holds one fact per batch (`Cut.fact`, kind `commands`): the batch as the
shards receive it, the symbols listed since the one before, and who sent each command
(`Sent`: the worker's ticket, the request's `Idempotency-Key`). The commands, not their
results: a shard rebuilds its state by replaying them, and a restarted sequencer goes on
from them (`resume`), recognising the writes a worker sends again. Beside them, the
kept `Idempotency-Key` answers (kind `idempotent_answer`, as the embedded journal's):
the sequencer holds the index of every worker's keys (`begin_key`, `finish_key`).

Plain, single-threaded state: the Ray actor around it (landing step 7) calls it from one
thread, journals each cut before sending it, and sends the answers back to the workers.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import orjson

from miniexchange.actors.accounts import Secrets
from miniexchange.actors.listing import SymbolListing
from miniexchange.clock import Clock
from miniexchange.cluster.batches import (
    BatchFormatError,
    IssueCredentials,
    Part,
    SubscribeWebhooks,
    Write,
)
from miniexchange.cluster.parts import decode_batch, encode_batch
from miniexchange.cluster.shards import Answer, Placement
from miniexchange.cluster.stamped import Batch, Command, Go, Stamped, Tick
from miniexchange.ids import random_uuid4
from miniexchange.journal.facts import IDEMPOTENT_ANSWER, Fact, answer_fact, stored_answer
from miniexchange.journal.store import JournalFormatError
from miniexchange.model.commands import BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from miniexchange.model.errors import ExchangeError, symbol_limit_reached
from miniexchange.model.idempotency import (
    STORED_STATUSES,
    Decided,
    InFlight,
    Key,
    KeyIndex,
    StoredAnswer,
)

IN_FLIGHT = 2  # batches in the shards at once: one matched while the next one's R1 runs
KEPT_ANSWERS = 65_536  # answers kept for a worker that sends a write again
KEY_LEASE_US = 15_000_000
"""A key's first use in flight whose write never reached the sequencer (its worker
died first, or refused it itself and died before finishing the key) is taken for
abandoned after this long, and a retry becomes the first use: a write is sent within
milliseconds of its key's begin, so none can still arrive."""


class Ticket(NamedTuple):
    """Who waits for a command's answer: a worker and its write's number."""

    worker: str
    number: int


class Cut(NamedTuple):
    """What one cut decided: the batch for the shards (to journal first: `fact`), the
    writes refused at the cut with their answers, and the symbols listed since the
    previous batch (journaled with this one: the listing is the sequencer's, rebuilt
    from the journal)."""

    batch: Batch | None
    refused: tuple[tuple[Ticket, ExchangeError], ...]
    listed: tuple[str, ...]
    settled: int = 0
    """The last batch settled at the cut: `listed` covers the answers up to it."""
    refused_orders: tuple[tuple[SubmitOrder, ExchangeError], ...] = ()
    """The submissions among `refused`, with their refusals: an order's outcome is
    counted where it is decided (`miniexchange_orders_total`), here by the sequencer."""
    tickets: tuple[Sent, ...] = ()
    """Who sent each command of the batch (journaled with it)."""

    @property
    def fact(self) -> Fact:
        """The batch as the command journal records it: one fact, appended (and durable)
        before any shard sees the batch; with who sent each command, so that a
        sequencer restarted over it recognises a write sent again."""
        assert self.batch is not None, "a cut that refused everything journals nothing"
        return COMMANDS, orjson.dumps(
            {
                "batch": orjson.Fragment(encode_batch(self.batch)),
                "listed": self.listed,
                "settled": self.settled,
                "tickets": [_encode_sent(sent) for sent in self.tickets],
            }
        )


class Sent(NamedTuple):
    """A journaled command's sender: its `seq`, the worker's ticket, and its request's
    `Idempotency-Key` with the request's digest (None without one)."""

    seq: int
    ticket: Ticket
    key: Key | None = None
    digest: bytes | None = None


def _encode_sent(sent: Sent) -> list[Any]:
    key, digest = sent.key, sent.digest
    return [
        sent.seq,
        *sent.ticket,
        None if key is None else list(key),
        None if digest is None else base64.b64encode(digest).decode(),
    ]


def _decode_sent(value: Any) -> Sent:
    seq, worker, number, key, digest = value
    if type(seq) is not int or type(worker) is not str or type(number) is not int:
        raise TypeError(f"a journaled sender: {value!r}")
    if key is not None and not (
        isinstance(key, list) and len(key) == 2 and all(type(part) is str for part in key)
    ):
        raise TypeError(f"a journaled sender's key: {key!r}")
    return Sent(
        seq,
        Ticket(worker, number),
        None if key is None else (key[0], key[1]),
        None if digest is None else base64.b64decode(digest),
    )


COMMANDS = "commands"
"""The one kind of fact of a Ray journal: a batch of stamped commands."""


class SequencerState(NamedTuple):
    """What a cluster snapshot keeps of the sequencer, taken with nothing in flight: the
    last batch cut (and settled), the last command's number and stamp, the listing, and
    the `Idempotency-Key` answers kept (oldest first use first)."""

    k: int
    seq: int
    at: int
    listed: tuple[str, ...]
    answers: tuple[tuple[Key, StoredAnswer], ...] = ()


class Journaled(NamedTuple):
    """One fact of a command journal."""

    batch: Batch
    listed: tuple[str, ...]
    settled: int
    tickets: tuple[Sent, ...] = ()


def journaled(
    facts: Iterable[Fact], answers: Callable[[Key, StoredAnswer], None] | None = None
) -> Iterator[Journaled]:
    """The batches a command journal holds, in order, with what each recorded of the
    listing; its kept `Idempotency-Key` answers go to `answers` (None: skipped), in
    order too; anything else is a `JournalFormatError` (one line, naming what it found)."""
    for kind, body in facts:
        if kind == IDEMPOTENT_ANSWER:
            if answers is not None:
                try:
                    answers(*stored_answer(orjson.loads(body)))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                    raise JournalFormatError(
                        f"a damaged answer in a command journal: {error}"
                    ) from None
            continue
        if kind != COMMANDS:
            raise JournalFormatError(f"a fact of kind {kind!r} in a command journal")
        try:
            value = orjson.loads(body)
            entry = Journaled(
                decode_batch(orjson.dumps(value["batch"])),
                tuple(value["listed"]),
                value["settled"],
                tuple(_decode_sent(sent) for sent in value.get("tickets", ())),
            )
        except (
            orjson.JSONDecodeError,
            BatchFormatError,
            KeyError,
            TypeError,
            ValueError,
        ) as error:
            raise JournalFormatError(f"a damaged batch in a command journal: {error}") from None
        if (
            not all(type(symbol) is str for symbol in entry.listed)
            or type(entry.settled) is not int
        ):
            raise JournalFormatError("a damaged batch in a command journal: its listing")
        yield entry


def listed_by(command: Command) -> tuple[str, ...]:
    """The symbols a command lists if it succeeds: a limit order's, a registration's
    holdings'."""
    if type(command) is SubmitOrder:
        return (command.symbol,) if command.type == LIMIT else ()
    if type(command) is RegisterBroker:
        return tuple(symbol for symbol, _ in command.holdings)
    return ()


def random_seed() -> int:
    """A trade seed: 63 bits of OS randomness (any 64-bit integer travels exactly)."""
    return int.from_bytes(os.urandom(8), "big") >> 1


class Sequencer:
    def __init__(
        self,
        placement: Placement,
        clock: Clock,
        max_symbols: int,
        expiration_interval_us: int | None,
        draw_uuid: Callable[[], str] = random_uuid4,
        draw_seed: Callable[[], int] = random_seed,
        secrets: Secrets | None = None,
        keys: KeyIndex | None = None,
    ) -> None:
        """`expiration_interval_us`: how often a tick enters the stream (None: never).
        The draws are the sources of ids and seeds (tests give seeded ones). `keys`: the
        `Idempotency-Key`s of every worker (default: the contract's bounds)."""
        self.placement = placement
        self.clock = clock
        self.keys = keys if keys is not None else KeyIndex(1_000_000, 86_400_000_000)
        self.listing = SymbolListing(max_symbols)
        self._expiration_interval_us = expiration_interval_us
        self._draw_uuid = draw_uuid
        self._draw_seed = draw_seed
        self._secrets = secrets if secrets is not None else Secrets()
        self._queued: list[tuple[Ticket, Write]] = []
        self._waiting: set[Ticket] = set()  # queued or in the shards
        self._answered: OrderedDict[Ticket, Any] = OrderedDict()
        self._keyed: OrderedDict[Key, Ticket] = OrderedDict()  # a key's write, until finished
        self._k = 0  # the last batch cut
        self._settled = 0  # the last batch whose answers every account shard returned
        self._allowed = 0  # the last batch whose R2 the account shards may run
        self._seq = 0
        self._at = 0
        self._next_tick = (
            None if expiration_interval_us is None else clock.now() + expiration_interval_us
        )
        self._tickets: dict[int, dict[int, Ticket]] = {}  # batch -> seq -> ticket
        self._claims: dict[int, tuple[str, ...]] = {}  # seq -> places it claimed
        self._listed: list[str] = []  # listed since the last cut
        self._held = False
        # the journaled writes a restart replays, until their answers come: seq -> ticket
        self._recovered: dict[int, Ticket] = {}
        self._recovering: set[Ticket] = set()

    def resume(self, facts: Iterable[Fact], snapshot: SequencerState | None = None) -> int:
        """Continue the stream a journal holds (a restart), from its snapshot if any
        (the journaled batches it covers are skipped): the batch and command numbers,
        the clock floor and the listing go on from it. Every journaled batch is taken as
        settled, since the shards replay them all before the next one: the next cut says
        `after` = the last. Returns that last batch's number.

        The places claimed by the last batches, whose answers no later batch recorded
        (at most two), are kept as listed: their symbols may have been refused, but a
        place is never given twice.

        The writes of the journaled batches are recognised if a worker sends them again
        (its call failed with the sequencer before it): they wait for the answers the
        replay gives them (`replayed`), and a key's first use among them is in flight
        again, so that a retry under it gets that answer (`Decided`)."""
        kept = self.keys.answers
        if snapshot is not None:
            self._k, self._seq, self._at = snapshot.k, snapshot.seq, snapshot.at
            self.listing.list(snapshot.listed)
            for key, answer in snapshot.answers:
                kept.put(key, answer, self._at)

        def keep(key: Key, answer: StoredAnswer) -> None:
            kept.put(key, answer, self._at)

        last: deque[Journaled] = deque(maxlen=IN_FLIGHT)
        for entry in journaled(facts, keep):
            if entry.batch.k <= self._k:
                continue
            self.listing.list(entry.listed)
            last.append(entry)
            for sent in entry.tickets:
                self._recovered[sent.seq] = sent.ticket
                self._recovering.add(sent.ticket)
                if sent.key is not None and sent.digest is not None:
                    self._keyed[sent.key] = sent.ticket
                    with contextlib.suppress(ExchangeError):  # kept already, or in flight
                        self.keys.begin(sent.key, sent.digest, entry.batch.commands[0].at)
        if last:
            batch = last[-1].batch
            self._k, self._seq, self._at = batch.k, batch.commands[-1].seq, batch.commands[-1].at
            for entry in last:
                if entry.batch.k > last[-1].settled:
                    for stamped in entry.batch.commands:
                        self.listing.list(listed_by(stamped.command))
        self._settled = self._allowed = self._k
        self.clock.not_before(self._at)
        return self._k

    # -- the workers' writes ------------------------------------------------------------

    def accept(self, part: Part) -> list[tuple[Ticket, Any]]:
        """Queue a worker's writes for the next cut. A write sent again (the worker's
        call failed) is queued once: its answer, if already given, comes back now."""
        again: list[tuple[Ticket, Any]] = []
        for write in part.writes:
            ticket = Ticket(part.worker, write.number)
            if ticket in self._waiting or ticket in self._recovering:
                continue  # its answer comes when its batch settles (or is replayed)
            if ticket in self._answered:
                again.append((ticket, self._answered[ticket]))
                continue
            self._waiting.add(ticket)
            self._queued.append((ticket, write))
            if write.key is not None:
                keyed = self._keyed
                keyed[write.key] = ticket
                if len(keyed) > KEPT_ANSWERS:
                    keyed.popitem(last=False)
        return again

    @property
    def settled_through(self) -> int:
        """The last batch whose answers `settled` took: the next one to settle follows."""
        return self._settled

    @property
    def last_cut(self) -> int:
        return self._k

    @property
    def allowed(self) -> int:
        """The last batch whose R2 the account shards may run (a `Go`, or the cut after)."""
        return self._allowed

    @property
    def in_flight(self) -> int:
        return self._k - self._settled

    def state(self) -> SequencerState:
        """What a cluster snapshot keeps of this sequencer: taken only when every batch
        cut is settled (`hold`, then the last one settles)."""
        if self.in_flight:
            raise ValueError(f"a snapshot with batches in flight: {self._settled} of {self._k}")
        return SequencerState(
            self._k,
            self._seq,
            self._at,
            tuple(sorted(self.listing.listed)),
            tuple(self.keys.answers.items()),
        )

    def hold(self) -> None:
        """No cut until `release`, and the last batch cut may settle at once (`go`):
        the shards come to rest at one batch, for a snapshot. Writes queue meanwhile."""
        self._held = True

    def release(self) -> None:
        self._held = False

    def tick_due(self) -> bool:
        return self._next_tick is not None and self.clock.now() >= self._next_tick

    # -- the `Idempotency-Key`s of every worker ------------------------------------------

    def begin_key(self, key: Key, digest: bytes) -> StoredAnswer | InFlight | Decided:
        """`KeyIndex.begin` (its refusals raised) at the sequencer's time; and for a
        retry of a first use whose write was answered but whose key was never finished
        (its worker died), that write's outcome, `Decided`, to render and keep."""
        keys, now = self.keys, self.clock.now()
        ticket = self._keyed.get(key)
        answered = self._answered
        if ticket is not None and (
            ticket in answered or ticket in self._waiting or ticket in self._recovering
        ):
            flying = keys.in_flight(key)
            if flying is not None and flying.digest == digest and ticket in answered:
                return Decided(answered[ticket])
            return keys.begin(key, digest, now)  # in progress until answered, or reused
        # no write of it came (or its answer is long forgotten): abandoned after a lease
        return keys.begin(key, digest, now, stale_after_us=KEY_LEASE_US)

    def finish_key(self, key: Key, status: int, body: bytes) -> Fact | None:
        """The first use answered (`KeyIndex.finish`); the answer as a journal fact if
        it is kept, to be durable before it is sent (a retry after a restart replays it)."""
        keys = self.keys
        keys.finish(key, status, body, self.clock.now())
        self._keyed.pop(key, None)
        if status not in STORED_STATUSES:
            return None
        kept = keys.answers.get(key, self.clock.now())
        return None if kept is None else answer_fact(key, kept)

    # -- the cut ------------------------------------------------------------------------

    def cut(self) -> Cut | None:
        """The next batch of everything queued (a tick too when one is due), or None
        when two batches are in the shards or there is nothing to cut. Refusals at the
        cut come back in the `Cut` even when nothing else is left for a batch."""
        if self._held or self.in_flight >= IN_FLIGHT:
            return None
        tick = self.tick_due()
        if not self._queued and not tick:
            return None
        taken, deferred = self._take()
        stamped: list[Stamped] = []
        refused: list[tuple[Ticket, ExchangeError]] = []
        refused_orders: list[tuple[SubmitOrder, ExchangeError]] = []
        tickets: dict[int, Ticket] = {}
        sent: list[Sent] = []
        for ticket, write in taken:
            claimed = self._claim(write.command)
            if isinstance(claimed, ExchangeError):
                self._waiting.discard(ticket)
                self._remember(ticket, claimed)
                refused.append((ticket, claimed))
                if type(write.command) is SubmitOrder:
                    refused_orders.append((write.command, claimed))
                continue
            command = self._stamp(write.command, write.request_id)
            if claimed:
                self._claims[command.seq] = claimed
            tickets[command.seq] = ticket
            flying = None if write.key is None else self.keys.in_flight(write.key)
            sent.append(
                Sent(command.seq, ticket, write.key, None if flying is None else flying.digest)
            )
            stamped.append(command)
        if tick:
            self._next_tick = self.clock.now() + (self._expiration_interval_us or 0)
            stamped.append(self._stamp(Tick(), None))
        self._queued = deferred
        if not stamped:
            return Cut(None, tuple(refused), (), refused_orders=tuple(refused_orders))
        listed, self._listed = tuple(self._listed), []
        self._k += 1
        batch = Batch(self._k, self._allowed, tuple(stamped))
        self._allowed = self._k - 1  # R2 of the batch before may follow this R1
        self._tickets[self._k] = tickets
        return Cut(batch, tuple(refused), listed, self._settled, tuple(refused_orders), tuple(sent))

    def go(self) -> Go | None:
        """When nothing is queued (or the cuts are held): let the account shards settle
        the last batch cut without waiting for a next one (whose `after` then names it)."""
        if (self._queued and not self._held) or self._allowed == self._k:
            return None
        self._allowed = self._k
        return Go(self._k)

    def _take(self) -> tuple[list[tuple[Ticket, Write]], list[tuple[Ticket, Write]]]:
        """What this cut takes, in arrival order, and what waits: a broker's market bid
        on a symbol other than that of its first market bid in the batch."""
        taken: list[tuple[Ticket, Write]] = []
        deferred: list[tuple[Ticket, Write]] = []
        bids: dict[str, str] = {}  # broker -> the symbol of its market bids in this batch
        for entry in self._queued:
            command = entry[1].command
            if (
                type(command) is SubmitOrder
                and command.type == MARKET
                and command.side == BID
                and bids.setdefault(command.broker_id, command.symbol) != command.symbol
            ):
                deferred.append(entry)
                continue
            taken.append(entry)
        return taken, deferred

    def _claim(self, command: Command) -> tuple[str, ...] | ExchangeError:
        """The places a command would list, claimed for it, or its refusal when they
        are not all free (`MAX_SYMBOLS`). A market order lists nothing, but needs a
        symbol that is listed or could be."""
        listing = self.listing
        if type(command) is SubmitOrder and command.type == MARKET:
            if listing.has_place_for(command.symbol):
                return ()
            return symbol_limit_reached(listing.limit)
        claimed = listing.claim(listed_by(command))
        return symbol_limit_reached(listing.limit) if claimed is None else claimed

    def _stamp(self, command: Command, request_id: str | None) -> Stamped:
        self._seq += 1
        self._at = at = max(self.clock.now(), self._at + 1)
        seq = self._seq
        kind = type(command)
        if kind is SubmitOrder:
            order_id = self._draw_id("ord-", command.broker_id)  # type: ignore[union-attr]
            return Stamped(seq, at, command, request_id, order_id, self._draw_seed())
        if kind is SubscribeWebhooks:
            broker_id = command.broker_id  # type: ignore[union-attr]
            ids = tuple(self._draw_id("wh-", broker_id) for _ in command.events)  # type: ignore[union-attr]
            return Stamped(seq, at, command, request_id, webhook_ids=ids)
        if kind is IssueCredentials:
            broker_id = command.broker_id  # type: ignore[union-attr]
            secrets = (self._draw_api_key(broker_id), self._secrets.webhook_secret())
            return Stamped(seq, at, command, request_id, secrets=secrets)
        return Stamped(seq, at, command, request_id)

    def _draw_api_key(self, broker_id: str) -> str:
        """An API key that names its broker's account shard, as ids do: a worker asks
        that one shard whose key it is (`Placement.account_shard` of the key)."""
        placement = self.placement
        shard = placement.account_shard(broker_id)
        while True:
            drawn = self._secrets.api_key()
            if placement.account_shard(drawn) == shard:
                return drawn

    def _draw_id(self, prefix: str, broker_id: str) -> str:
        """A random id that names the broker's account shard (about as many draws as
        there are account shards)."""
        placement = self.placement
        shard = placement.account_shard(broker_id)
        while True:
            drawn = prefix + self._draw_uuid()
            if placement.account_shard(drawn) == shard:
                return drawn

    # -- the answers --------------------------------------------------------------------

    def settled(self, k: int, answers: Iterable[Answer]) -> list[tuple[Ticket, Any]]:
        """Batch `k`'s answers, once every account shard has returned its R2 of `k`
        (together: every effect of `k` is then in place everywhere), by ticket."""
        if k != self._settled + 1 or k > self._k:
            raise ValueError(f"batch {k} settled: {self._settled} was, {self._k} is cut")
        self._settled = k
        tickets = self._tickets.pop(k)
        listing = self.listing
        given: list[tuple[Ticket, Any]] = []
        for seq, answer in sorted(answers, key=lambda answer: answer[0]):
            claimed = self._claims.pop(seq, ())
            if claimed:
                if isinstance(answer, ExchangeError):
                    listing.release(claimed)
                else:
                    self._listed.extend(s for s in claimed if s not in listing.listed)
                    listing.list(claimed)
            ticket = tickets.pop(seq, None)
            if ticket is not None:
                self._waiting.discard(ticket)
                self._remember(ticket, answer)
                given.append((ticket, answer))
        if tickets:
            raise ValueError(f"batch {k} settled without answers for seq {sorted(tickets)}")
        return given

    def replayed(self, answers: Iterable[Answer]) -> list[tuple[Ticket, Any]]:
        """Answers a replay of journaled batches gave (after a restart): those of the
        writes it recognises, by ticket, kept for the workers that send them again."""
        given: list[tuple[Ticket, Any]] = []
        for seq, answer in answers:
            ticket = self._recovered.pop(seq, None)
            if ticket is not None:
                self._recovering.discard(ticket)
                self._remember(ticket, answer)
                given.append((ticket, answer))
        return given

    def _remember(self, ticket: Ticket, answer: Any) -> None:
        answered = self._answered
        answered[ticket] = answer
        if len(answered) > KEPT_ANSWERS:
            answered.popitem(last=False)
