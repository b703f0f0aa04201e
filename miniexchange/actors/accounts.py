"""AccountActor: the only owner of its brokers' ledgers (cash, holdings, reservations).

The order path is exchange-core's pipeline, each stage a message, no lock shared:

- R1 (`Submit`, a limit order from the HTTP layer): check the funds and hold them, then
  forward the order to its symbol actor (`Reserved`). R1 never releases anything: only
  the symbol actor decides that an order is due. When the hold fails while the broker
  holds something on that symbol, some of it may be due, so the order goes to the
  symbol actor to expire its due orders first (`ExpireThenCheck`); their releases are
  told before the order comes back (`Recheck`), and that check is final. So "expire
  the due orders, then check the funds" stays exact with tells only.
- A market order's sweep cost is held by the one blocking ask allowed (`Hold`, from the
  symbol actor, whose book must not move between the check and the pass). An account
  actor never asks anyone, so that ask cannot deadlock.
- R2 (`Apply`): what a matching step decided (acceptances, settlements, releases), told
  once its facts are durable, so no other actor ever sees a change the journal could
  still lose (a funded order can never be committed before the trade that funded it).
  In the shard mode a market order's hold arrives here too, recorded (`Held`, ahead of
  its legs) instead of asked.
- R1 in the shard mode (`ReserveLimit`, `HoldAvailable`): the shard sends a batch's
  orders without waiting for each (`InOrder`) and builds its parts from the answers;
  what R1 holds, a shortfall's hold of what is available included, is decided here in
  `seq` order, so no order's reservation depends on when its answer was read.

Registration, balance reads and the brokers' credentials (`Issue`: an API key kept as
its digest, a webhook secret) are messages here too; the published credentials
(`Published`) change once an issue is durable. A broker belongs to one account actor
by a stable hash of its id (`account_index`), so brokers cost no thread.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import pykka

from miniexchange.actors.base import DEFERRED, ExchangeActor, Reply
from miniexchange.actors.listing import SymbolListing
from miniexchange.actors.messages import (
    Apply,
    ExpireThenCheck,
    Hold,
    HoldAvailable,
    InOrder,
    Issue,
    Issued,
    ReadBalance,
    Recheck,
    Register,
    Reservation,
    Reserved,
    ReserveLimit,
    Submit,
)
from miniexchange.clock import Clock
from miniexchange.ids import new_api_key, new_webhook_secret
from miniexchange.journal import facts
from miniexchange.journal.facts import KeepAnswer
from miniexchange.journal.store import Journal
from miniexchange.metrics import Metrics
from miniexchange.model.commands import BID, SubmitOrder
from miniexchange.model.credentials import Credentials, api_key_digest
from miniexchange.model.errors import (
    ExchangeError,
    broker_not_found,
    insufficient_funds,
    journal_unavailable,
    symbol_limit_reached,
)
from miniexchange.model.ledger import Balance, Ledger, LedgerChange
from miniexchange.model.settlement import HELD, LACKING, limit_hold, reserve_limit

SymbolActors = Callable[[str], pykka.ActorRef]
"""The symbol's actor, started on first use (the registry's `symbol_actor`)."""


class Secrets:
    """Makes new credentials from OS randomness (`ids.secret_token`)."""

    def api_key(self) -> str:
        return new_api_key()

    def webhook_secret(self) -> str:
        return new_webhook_secret()


class Published:
    """The brokers' credentials as the rest of the exchange reads them without a hop:
    API key digest -> broker, broker -> webhook secret. Account actors change them
    once an issue is durable (whole dict operations, atomic under the GIL)."""

    __slots__ = ("brokers_by_key", "webhook_secrets")

    def __init__(self) -> None:
        self.brokers_by_key: dict[str, str] = {}
        self.webhook_secrets: dict[str, str] = {}

    def replace(self, broker_id: str, old: Credentials, new: Credentials) -> None:
        if new.api_key_digest != old.api_key_digest:
            if old.api_key_digest is not None:
                self.brokers_by_key.pop(old.api_key_digest, None)
            if new.api_key_digest is not None:
                self.brokers_by_key[new.api_key_digest] = broker_id
        if new.webhook_secret is not None:
            self.webhook_secrets[broker_id] = new.webhook_secret

    def broker_with_key(self, api_key: str) -> str | None:
        """The broker whose current API key this is (found by digest), or None."""
        return self.brokers_by_key.get(api_key_digest(api_key))


class Registered(NamedTuple):
    """To itself, from the journal: whether a registration became durable. Only then
    does its ledger become the broker's; if not, nothing of it ever took effect."""

    broker_id: str
    durable: bool


def account_index(broker_id: str, count: int) -> int:
    """Which of `count` account actors owns `broker_id`: stable across processes and
    restarts (CRC-32, not Python's salted `hash`)."""
    return zlib.crc32(broker_id.encode()) % count


class AccountActor(ExchangeActor):
    def __init__(
        self,
        clock: Clock,
        journal: Journal,
        symbols: SymbolActors,
        registered: set[str],
        listing: SymbolListing,
        metrics: Metrics,
        ledgers: Iterable[Ledger] = (),
        published: Published | None = None,
        credentials: dict[str, Credentials] | None = None,
        secrets: Secrets | None = None,
    ) -> None:
        """`registered` is the registry's published set: a broker is added once its
        registration is durable, before it is answered, so the HTTP layer checks
        existence without a hop. `listing` owns the listed symbols and their limit: a
        registration or a limit order that would list a symbol claims a place there
        (`symbol_limit_reached` when none is left). `ledgers` and `credentials` restore
        recovered brokers; `published` is where credentials are looked up from outside;
        `secrets` makes new ones (tests pass predictable ones)."""
        super().__init__()
        self.clock = clock
        self.journal = journal
        self.symbols = symbols
        self.registered = registered
        self.listing = listing
        self.metrics = metrics
        self.ledgers: dict[str, Ledger] = {ledger.broker_id: ledger for ledger in ledgers}
        # registrations not durable yet: their ledgers are nobody's until they are
        self.registering: dict[str, Ledger] = {}
        self.published = published if published is not None else Published()
        self.credentials: dict[str, Credentials] = dict(credentials or {})
        self.secrets = secrets if secrets is not None else Secrets()

    # -- registration and reads ------------------------------------------------------

    def _register(self, message: Register) -> object:
        """All or nothing: the ledger becomes the broker's, and its holdings' symbols
        listed, only once the registration is durable (`Registered`); a registration
        still in flight makes a second one of the same id `broker_already_exists`."""
        command = message.command
        broker_id = command.broker_id
        if broker_id in self.ledgers or broker_id in self.registering:
            refusal = ExchangeError(
                "broker_already_exists", f"Broker {broker_id} is already registered"
            )
            self._refuse(message.reply, refusal, message.keep)
            return DEFERRED
        symbols = [symbol for symbol, _ in command.holdings]
        listing = self.listing
        claimed = listing.claim(symbols)
        if claimed is None:
            self._refuse(message.reply, symbol_limit_reached(listing.limit), message.keep)
            return DEFERRED
        at = self.clock.now() if message.at is None else message.at
        ledger = Ledger(broker_id, command.initial_cash, dict(command.holdings), at)
        self.registering[broker_id] = ledger
        balance = ledger.balance()
        recorded = [facts.broker_registered(command, balance.created_at)]
        kept = message.keep.fact(balance) if message.keep is not None else None
        if kept is not None:
            recorded.append(kept)
        reply, registered, me = message.reply, self.registered, self.actor_ref
        here = threading.current_thread()

        def durable(error: BaseException | None) -> None:
            settled = Registered(broker_id, error is None)
            if threading.current_thread() is here:  # durable at once (no persistence)
                self._registered(settled)
            else:  # told before the answer: whatever the client sends next finds it
                with contextlib.suppress(pykka.ActorDeadError):  # the exchange stopped
                    me.tell(settled)
            if error is not None:
                listing.release(claimed)
                reply(journal_unavailable())
                return
            listing.list(symbols)
            registered.add(broker_id)
            reply(balance)

        self.journal.append(recorded, durable)
        return DEFERRED

    def _registered(self, message: Registered) -> None:
        ledger = self.registering.pop(message.broker_id)
        if message.durable:
            self.ledgers[message.broker_id] = ledger

    def _read_balance(self, message: ReadBalance) -> Balance:
        ledger = self.ledgers.get(message.broker_id)
        if ledger is None:
            raise broker_not_found(message.broker_id)
        return ledger.balance()

    def _issue(self, message: Issue) -> object:
        broker_id = message.broker_id
        if broker_id not in self.ledgers:
            raise broker_not_found(broker_id)
        now = self.clock.now()
        held = self.credentials.get(broker_id, Credentials())
        recorded: list[facts.Fact] = []
        api_key = secret = None
        issued = held
        stamped = message.secrets
        if message.api_key:
            api_key = self.secrets.api_key() if stamped is None else stamped[0]
            issued = issued._replace(api_key_digest=api_key_digest(api_key))
            recorded.append(facts.api_key_issued(broker_id, issued.api_key_digest, now))
        if message.webhook_secret:
            secret = self.secrets.webhook_secret() if stamped is None else stamped[1]
            issued = issued._replace(webhook_secret=secret)
            recorded.append(facts.webhook_secret_issued(broker_id, secret, now))
        self.credentials[broker_id] = issued
        reply, published = message.reply, self.published

        def durable(error: BaseException | None) -> None:
            if error is not None:
                reply(journal_unavailable())
                return
            published.replace(broker_id, held, issued)  # the old key fails from now on
            reply(Issued(broker_id, api_key, secret))

        self.journal.append(recorded, durable)
        return DEFERRED

    # -- R1: hold, then forward -----------------------------------------------------

    def _submit(self, message: Submit) -> object:
        self._reserve(message, final=False)
        return DEFERRED

    def _recheck(self, message: Recheck) -> object:
        self._reserve(message.submit, final=True)
        return DEFERRED

    def _reserve(self, submit: Submit, final: bool) -> None:
        command = submit.command
        ledger = self.ledgers.get(command.broker_id)
        if ledger is None:  # the HTTP layer checked, but registration is the ledger
            self._refuse_order(submit, broker_not_found(command.broker_id))
            return
        symbol = command.symbol
        listing = self.listing
        # The first pass takes a place if the order would list its symbol; whoever
        # refuses the order gives it back (`SymbolListing.release`).
        if not final and listing.claim((symbol,)) is None:
            self._refuse_order(submit, symbol_limit_reached(listing.limit))
            return
        decision = reserve_limit(ledger, command, final)
        if decision == LACKING:
            listing.release((symbol,))
            self._refuse_order(submit, insufficient_funds(command.broker_id, command.side, symbol))
            return
        try:
            actor = self.symbols(symbol)  # started on the symbol's first order
        except ExchangeError as refusal:  # its thread could not start: symbol_unavailable
            if decision == HELD:
                ledger.release(symbol, *limit_hold(command))
            listing.release((symbol,))
            self._refuse_order(submit, refusal)
            return
        actor.tell(Reserved(submit) if decision == HELD else ExpireThenCheck(submit))

    def _hold(self, message: Hold) -> bool:
        """A market order's pass-long hold (asked by its symbol actor)."""
        ledger = self.ledgers.get(message.broker_id)
        if ledger is None:
            raise broker_not_found(message.broker_id)
        return ledger.hold(message.symbol, message.cash, message.quantity)

    # -- R1 in the shard mode: decided here, answered to the shard ----------------------

    def _reserve_limit(self, message: ReserveLimit) -> Reservation:
        """`_reserve`'s first pass without a symbol actor to forward to: the listing's
        place was claimed at the cut, and a shortfall's hold of what is available is
        taken here, right after the failed reservation, before the next message."""
        command = message.command
        ledger = self.ledgers.get(command.broker_id)
        if ledger is None:
            raise self._counted(command, broker_not_found(command.broker_id))
        decision = reserve_limit(ledger, command, final=False)
        if decision == LACKING:
            raise self._counted(
                command, insufficient_funds(command.broker_id, command.side, command.symbol)
            )
        if decision == HELD:
            return Reservation(False, *limit_hold(command))
        return Reservation(True, *_hold_available(ledger, command, None))

    def _hold_available(self, message: HoldAvailable) -> tuple[int, int]:
        """A market order's budget; no ledger refuses the order here, as `_reserve_limit`
        refuses a limit order, counted where it is decided."""
        command = message.command
        ledger = self.ledgers.get(command.broker_id)
        if ledger is None:
            raise self._counted(command, broker_not_found(command.broker_id))
        return _hold_available(ledger, command, message.most)

    def _in_order(self, message: InOrder) -> None:
        for each in message.messages:
            self.on_receive(each)

    def _counted(self, command: SubmitOrder, refusal: ExchangeError) -> ExchangeError:
        self.metrics.count_order(command.type, command.side, refusal.code)
        return refusal

    # -- R2: what the symbol actors decided -------------------------------------------

    def _apply(self, message: Apply) -> None:
        ledgers = self.ledgers
        for change in message.changes:
            ledgers[change.broker_id].apply(change)

    handlers = {  # noqa: RUF012
        Submit: _submit,
        Recheck: _recheck,
        Hold: _hold,
        ReserveLimit: _reserve_limit,
        HoldAvailable: _hold_available,
        InOrder: _in_order,
        Apply: _apply,
        Register: _register,
        Registered: _registered,
        ReadBalance: _read_balance,
        Issue: _issue,
    }

    # -- refusals ----------------------------------------------------------------------

    def _refuse_order(self, submit: Submit, refusal: ExchangeError) -> None:
        command = submit.command
        self.metrics.count_order(command.type, command.side, refusal.code)
        self._refuse(submit.reply, refusal, submit.keep)

    def _refuse(self, reply: Reply, refusal: ExchangeError, keep: KeepAnswer | None) -> None:
        """Answer a refusal; with an `Idempotency-Key` its answer is journaled first."""
        kept = keep.fact(refusal) if keep is not None else None
        if kept is None:
            reply(refusal)
            return
        self.journal.append(
            (kept,), lambda error: reply(refusal if error is None else journal_unavailable())
        )


def _hold_available(ledger: Ledger, command: SubmitOrder, most: int | None) -> tuple[int, int]:
    """Hold what the broker has available for `command`, at most `most` (cash for a
    bid, shares of its symbol for an ask; None: all): the (cash, shares) held."""
    symbol = command.symbol
    if command.side == BID:
        available = ledger.available_cash
    else:
        available = ledger.available_shares(symbol) if symbol in ledger.holdings else 0
    amount = available if most is None else min(available, most)
    held = (amount, 0) if command.side == BID else (0, amount)
    if amount and not ledger.hold(symbol, *held):
        raise AssertionError(f"{ledger.broker_id} could not hold what it had available")
    return held


def tell_changes(
    accounts: Callable[[str], pykka.ActorRef], changes: Sequence[LedgerChange]
) -> None:
    """R2: one `Apply` per account actor involved, its changes in step order."""
    first = accounts(changes[0].broker_id)
    if all(accounts(change.broker_id) is first for change in changes):
        first.tell(Apply(tuple(changes)))
        return
    by_actor: dict[pykka.ActorRef, list[LedgerChange]] = {}
    for change in changes:
        by_actor.setdefault(accounts(change.broker_id), []).append(change)
    for actor, mine in by_actor.items():
        actor.tell(Apply(tuple(mine)))
