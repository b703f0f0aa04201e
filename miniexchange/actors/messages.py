"""The messages actors exchange: small immutable values, one per request kind.

A message that expects an answer carries a `reply` callback (see `actors.base.Reply`);
the handler's return value (or the `ExchangeError` it raises) is passed to it.

A write may carry its stamped inputs (docs/ray.md, "Batches"): `at`, the time its step
runs at, and for a submission its order id and trade seed (`ids.StampedIds`), so that a
replay of the same commands makes the same state. The embedded mode stamps nothing: a
missing `at` is the actor's clock reading, missing ids are drawn from its id factory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from miniexchange.actors.base import Reply
from miniexchange.journal.facts import KeepAnswer
from miniexchange.model.commands import RegisterBroker, SubmitOrder
from miniexchange.model.events import Event
from miniexchange.model.ledger import LedgerChange

# -- symbol actor -------------------------------------------------------------------


class Submit(NamedTuple):
    command: SubmitOrder
    reply: Reply
    keep: KeepAnswer | None = None  # journal the answer with the facts (Idempotency-Key)
    request_id: str | None = None  # the request's X-Request-Id, carried to the webhook logs
    at: int | None = None  # stamped: the step's time (None: the clock's)
    order_id: str | None = None  # stamped with `trade_seed` (None: drawn from the factory)
    trade_seed: int | None = None  # the trades' ids derive from it (`ids.StampedIds`)


class Reserved(NamedTuple):
    """From the broker's account actor (R1): the limit order's funds are held; match it."""

    submit: Submit


class ExpireThenCheck(NamedTuple):
    """From R1, whose hold failed: expire the symbol's due orders, then send the order
    back (`Recheck`) after their releases."""

    submit: Submit


class Cancel(NamedTuple):
    order_id: str
    reply: Reply
    request_id: str | None = None  # the request's X-Request-Id
    at: int | None = None  # stamped: the step's time (None: the clock's)


@dataclass(frozen=True, slots=True)
class ExpireDue:
    """From the clock actor: expire what is due at `at` (None: now, by the clock)."""

    at: int | None = None


# A read expires the due orders first (the embedded mode's default); `expire=False` leaves
# them out of the answer and on the book instead, and the price read forgets no trade:
# a read outside the sequenced commands must change nothing (docs/ray.md, "Reads").


@dataclass(frozen=True, slots=True)
class ReadBook:
    depth: int
    reply: Reply
    expire: bool = True


@dataclass(frozen=True, slots=True)
class ReadQuote:
    side: str
    quantity: int
    reply: Reply
    expire: bool = True


@dataclass(frozen=True, slots=True)
class ReadPrice:
    reply: Reply
    expire: bool = True


# -- account actors ------------------------------------------------------------------


class Register(NamedTuple):
    """Answers the first `Balance` once durable, or refuses `broker_already_exists`."""

    command: RegisterBroker
    reply: Reply
    keep: KeepAnswer | None = None
    at: int | None = None  # stamped: the ledger's `created_at` (None: the clock's)


class Issue(NamedTuple):
    """Issue a broker new credentials, revoking what they replace once durable;
    answers `Issued` with the new plaintext values (shown once), or broker_not_found."""

    broker_id: str
    api_key: bool
    webhook_secret: bool
    reply: Reply
    secrets: tuple[str, str] | None = None
    """Stamped (the shard mode): the new API key and webhook secret, drawn by the
    sequencer so that a replay issues the same; each used if its flag is set. None:
    drawn here (`Secrets`)."""


class Issued(NamedTuple):
    broker_id: str
    api_key: str | None
    webhook_secret: str | None


class ReadBalance(NamedTuple):
    broker_id: str
    reply: Reply


class Recheck(NamedTuple):
    """From a symbol actor, after `ExpireThenCheck`: the final funds check."""

    submit: Submit


class Hold(NamedTuple):
    """Asked by a symbol actor for a market order: hold `cash` (a bid's sweep cost) or
    `quantity` shares (an ask) for the pass; answers whether it could."""

    broker_id: str
    symbol: str
    cash: int
    quantity: int


class ReserveLimit(NamedTuple):
    """The shard mode's R1 of a stamped limit order (docs/ray.md, "Flows"): hold its
    reservation; when that fails while the broker holds something on its symbol (some
    of it may be due), hold what is available instead and leave the rest to ME, which
    expires the symbol's due orders first. Answers a `Reservation`, or refuses
    broker_not_found or insufficient_funds. Decided here, in the actor's FIFO, so that
    a batch's orders sent without waiting for each still reserve in `seq` order, each
    shortfall's hold before the next order's reservation."""

    command: SubmitOrder
    reply: Reply


class HoldAvailable(NamedTuple):
    """The shard mode's R1 of a market order: hold what the broker has available for it
    (cash for a bid, shares of its symbol for an ask), at most `most` (None: all), as
    its budget. Answers the (cash, shares) held, or refuses broker_not_found."""

    command: SubmitOrder
    most: int | None
    reply: Reply


class Reservation(NamedTuple):
    """What `ReserveLimit` held: the whole reservation, or (`short`) only what was
    available."""

    short: bool
    cash: int
    quantity: int


class InOrder(NamedTuple):
    """Several messages in one hand-off, each handled as if it had been sent alone, in
    this order: the shard mode's R1 sends a batch's messages to an account actor so,
    instead of one queue hand-off (and thread switch) per order."""

    messages: tuple[object, ...]


class Apply(NamedTuple):
    """From a symbol actor once a step's facts are durable (R2): its changes to this
    account actor's ledgers, in the order they happened."""

    changes: tuple[LedgerChange, ...]


# -- clock actor --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NextExpiry:
    """From a symbol actor: its earliest resting `expires_at` is now `at` (None: none)."""

    symbol: str
    at: int | None


@dataclass(frozen=True, slots=True)
class Tick:
    """Run one expiration sweep (sent by the ticker thread, or by a test) for the time
    `at`, which the `ExpireDue`s carry on (None: now, by each actor's clock)."""

    at: int | None = None


# -- webhook dispatcher -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Upsert one subscription per event; answers an `Upserted` once durable."""

    broker_id: str
    url: str
    events: tuple[str, ...]
    reply: Reply
    keep: KeepAnswer | None = None
    at: int | None = None  # stamped: the change's time (None: the clock's)
    webhook_ids: tuple[str, ...] | None = None  # stamped: a new subscription takes the next


@dataclass(frozen=True, slots=True)
class ListWebhooks:
    broker_id: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Answers None once durable, or refuses with `webhook_not_found`."""

    webhook_id: str
    reply: Reply
    owner: str | None = None  # only this broker's subscription may go (API keys)


@dataclass(frozen=True, slots=True)
class Notify:
    """From a symbol actor, after an atomic step: what happened, in order."""

    events: tuple[Event, ...]
