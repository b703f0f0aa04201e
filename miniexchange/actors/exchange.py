"""The registry: starts, finds and stops every actor of one exchange.

A plain object used by the HTTP layer. It routes each request to the actor that decides
it: a registration, a balance read and a limit order to the broker's account actor (a
fixed share of the brokers each, `accounts.account_index`), a market order and a
cancellation to the symbol's actor. Symbol actors are started on a symbol's first
order, not when a registration merely names it. The listed symbols, and their limit
(`MAX_SYMBOLS`), have one owner (`SymbolListing`): a request that would list a symbol
takes a place there first, so a symbol's actor, a thread, exists only for a symbol that
holds a place.

On start it replays the journal (facts only, no matching), hands each account actor its
brokers' ledgers, starts an actor for every symbol that has orders, and expires at once
the orders whose `expires_at` passed while the exchange was down.

It also owns the webhook side: the delivery pool and the dispatcher actor, which hears
every symbol actor's events (`Notify`) and holds the recovered subscriptions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import pykka

from miniexchange.actors.accounts import AccountActor, Published, account_index
from miniexchange.actors.base import Reply, start_actor_threads_small
from miniexchange.actors.clock import ClockActor, Ticker
from miniexchange.actors.listeners import CountTrades, EventsTo, StepListener
from miniexchange.actors.listing import SymbolListing
from miniexchange.actors.market_data import TAPE_LENGTH, MarketData
from miniexchange.actors.messages import (
    ExpireDue,
    Issue,
    ReadBalance,
    Register,
    Submit,
)
from miniexchange.actors.read_index import ReadIndex
from miniexchange.actors.symbol import SymbolActor, SymbolContext
from miniexchange.actors.webhooks import Listening, WebhookDispatcherActor, WebhookEvents
from miniexchange.clock import Clock
from miniexchange.ids import IdFactory
from miniexchange.journal.facts import KeepAnswer
from miniexchange.journal.recovery import (
    DEFAULT_RETENTION,
    Recovered,
    Retention,
    UnreadableFact,
    recover,
)
from miniexchange.journal.store import Journal, MemoryJournal, unreadable
from miniexchange.metrics import Metrics
from miniexchange.model.commands import ASK, BID, LIMIT, RegisterBroker, SubmitOrder
from miniexchange.model.credentials import Credentials
from miniexchange.model.engine import SymbolState
from miniexchange.model.errors import symbol_limit_reached, symbol_unavailable
from miniexchange.model.events import Event
from miniexchange.model.idempotency import KeptAnswers
from miniexchange.model.ledger import Ledger
from miniexchange.model.orders import Order
from miniexchange.model.subscriptions import Subscription
from miniexchange.webhooks.delivery import Deliveries

log = logging.getLogger("miniexchange.actors")


def history_retention(
    vwap_window_us: int, idempotency_max_keys: int, idempotency_ttl_us: int
) -> Retention:
    """What recovery and snapshots keep beyond the state: of a symbol's trades, the tape
    and the VWAP window; of the stored answers, what the live store keeps."""
    return Retention(TAPE_LENGTH, vwap_window_us, idempotency_max_keys, idempotency_ttl_us)


class Exchange:
    def __init__(
        self,
        clock: Clock,
        ids: IdFactory,
        deliveries: Deliveries,
        expiration_interval_s: float | None = 1.0,
        vwap_window_us: int = 300_000_000,
        events: Callable[[list[Event]], None] | None = None,
        journal: Journal | None = None,
        metrics: Metrics | None = None,
        account_actors: int = 2,
        max_symbols: int = 10_000,
        idempotency_max_keys: int | None = None,
        idempotency_ttl_us: int | None = None,
    ) -> None:
        """`expiration_interval_s=None` starts no ticker: a test sends `Tick` itself.

        `events` also hears every event (the webhook dispatcher always does).
        `deliveries` sends the webhooks: the composition root's pool (`http.app`), or
        a `testing.FakeDeliveries`.
        `metrics`: this exchange's Prometheus families; None: a fresh set.
        `account_actors`: how many account actors share the brokers (`ACCOUNT_ACTORS`).
        `max_symbols`: how many symbols may be listed (`MAX_SYMBOLS`).
        `idempotency_max_keys`, `idempotency_ttl_us`: what recovery keeps of the stored
        `Idempotency-Key` answers (`IDEMPOTENCY_MAX_KEYS`, `IDEMPOTENCY_TTL`); None: the
        default setting.
        """
        self.clock = clock
        self.ids = ids
        self.read_index = ReadIndex()
        self.journal: Journal = journal if journal is not None else MemoryJournal()
        self.deliveries = deliveries
        self.metrics = metrics if metrics is not None else Metrics()
        self._dispatcher: pykka.ActorRef | None = None
        self._listening = Listening()
        self._market_data = MarketData()
        listeners: list[StepListener] = [
            self._market_data,
            CountTrades(self.metrics),
            WebhookEvents(lambda: self._dispatcher, self._listening),
        ]
        if events is not None:
            listeners.append(EventsTo(events))
        self._account_count = account_actors
        self._accounts: list[pykka.ActorRef] = []
        self.registered: set[str] = set()  # published by the account actors, see there
        self.credentials = Published()  # the brokers' keys and secrets, read without a hop
        self._symbols: dict[str, pykka.ActorRef] = {}
        self._listing = SymbolListing(max_symbols)
        self._lock = threading.Lock()
        self._expiration_interval_s = expiration_interval_s
        self._context = SymbolContext(
            clock=clock,
            ids=ids,
            read_index=self.read_index,
            accounts=self.account_actor,
            vwap_window_us=vwap_window_us,
            listeners=tuple(listeners),
            journal=self.journal,
            listing=self._listing,
            metrics=self.metrics,
        )
        self.clock_actor: pykka.ActorRef | None = None
        self._ticker: Ticker | None = None
        self._stopped = False
        self._retention = history_retention(
            vwap_window_us,
            idempotency_max_keys or DEFAULT_RETENTION.idempotency_max_keys,
            idempotency_ttl_us or DEFAULT_RETENTION.idempotency_ttl_us,
        )
        self.recovered_answers = KeptAnswers(  # the HTTP store drains it
            self._retention.idempotency_max_keys, self._retention.idempotency_ttl_us
        )

    @property
    def known_symbols(self) -> set[str]:
        return self._listing.listed

    @property
    def listing(self) -> SymbolListing:
        """The listed symbols' one owner, and their limit (`MAX_SYMBOLS`)."""
        return self._listing

    @property
    def market_data(self) -> MarketData:
        """What the symbol actors publish for `/stocks`, the tape and the streams."""
        return self._market_data

    def start(self) -> None:
        snapshot, facts = self.journal.history()
        try:
            recovered = recover(facts, snapshot, self._retention, now=self.clock.now())
        except UnreadableFact as error:
            raise unreadable(self.journal.path, error) from None
        self.recovered_answers = recovered.answers  # for the Idempotency-Key store
        self.clock.not_before(recovered.last_at)  # a wall clock behind must not go back
        start_actor_threads_small()
        self.deliveries.start()
        self._dispatcher = WebhookDispatcherActor.start(
            self.clock,
            self.ids,
            self.deliveries.submit,
            self.journal,
            [Subscription(**fact) for fact in recovered.webhooks.values()],
            self._listening,
            self.credentials.webhook_secrets,
        )
        self.clock_actor = ClockActor.start(self.clock, self._symbols.get)
        self._context.clock_actor = self.clock_actor
        self._start_accounts(recovered.ledgers.values(), recovered.credentials)
        self._restore(recovered)
        self.journal.start()
        # What fell due while the exchange was down expires before the first request:
        # wait until every symbol has handled it and its facts are durable (published).
        pykka.get_all([actor.ask(ExpireDue(), block=False) for actor in self._symbols.values()])
        durable = threading.Event()
        self.journal.append((), lambda error: durable.set())  # commits after those facts
        durable.wait()
        if self._expiration_interval_s is not None:
            self._ticker = Ticker(self.clock_actor, self._expiration_interval_s)
            self._ticker.start()

    def _start_accounts(
        self, ledgers: Iterable[Ledger], credentials: dict[str, Credentials]
    ) -> None:
        count = self._account_count
        shares: list[list[Ledger]] = [[] for _ in range(count)]
        for ledger in ledgers:
            shares[account_index(ledger.broker_id, count)].append(ledger)
            self.registered.add(ledger.broker_id)
        for broker_id, held in credentials.items():
            self.credentials.replace(broker_id, Credentials(), held)
        self._accounts = [
            AccountActor.start(
                self.clock,
                self.journal,
                self.symbol_actor,
                self.registered,
                self._listing,
                self.metrics,
                share,
                self.credentials,
                {
                    ledger.broker_id: credentials[ledger.broker_id]
                    for ledger in share
                    if ledger.broker_id in credentials
                },
            )
            for share in shares
        ]

    def _restore(self, recovered: Recovered) -> None:
        self.known_symbols.update(recovered.known_symbols)
        by_symbol: dict[str, list[Order]] = {}
        for order in recovered.orders.values():
            self.read_index.publish_new(order)
            by_symbol.setdefault(order.symbol, []).append(order)
        for symbol, orders in by_symbol.items():
            trades = recovered.trades.get(symbol, ())
            state = SymbolState(symbol, self._context.vwap_window_us, orders, trades)
            book = state.book  # its summary and tape, as recovered
            self._market_data.feed(symbol).restore(
                trades,
                recovered.volumes.get(symbol, 0),
                recovered.candles.get(symbol),
                book.best_price(BID),
                book.best_price(ASK),
                book.next_expiry(),
            )
            self._symbols[symbol] = SymbolActor.start(symbol, self._context, state)

    def stop(self) -> None:
        """Stop the clock (a running sweep completes first), then every actor, then the
        delivery pool (queued deliveries are abandoned: a shutdown sends no more), then
        the journal (after committing what the actors appended; events it releases then
        are dropped)."""
        with self._lock:
            self._stopped = True
        if self._ticker is not None:
            self._ticker.stop()
        if self.clock_actor is not None:
            self.clock_actor.stop()
        for ref in list(self._symbols.values()):
            ref.stop()
        for ref in self._accounts:  # after the symbol actors: they tell accounts last
            ref.stop()
        if self._dispatcher is not None:
            self._dispatcher.stop()
        self.deliveries.stop()
        self.journal.close()

    # -- webhooks ----------------------------------------------------------------

    @property
    def dispatcher(self) -> pykka.ActorRef:
        """The webhook dispatcher actor (started with the exchange)."""
        if self._dispatcher is None:
            raise pykka.ActorDeadError("the exchange is not running")
        return self._dispatcher

    # -- brokers ---------------------------------------------------------------

    def account_actor(self, broker_id: str) -> pykka.ActorRef:
        """The account actor that owns `broker_id`'s ledger (registered or not)."""
        return self._accounts[account_index(broker_id, self._account_count)]

    def is_registered(self, broker_id: str) -> bool:
        """Whether the broker's registration is durable (and so answered or about to be)."""
        return broker_id in self.registered

    def register_broker(
        self, command: RegisterBroker, reply: Reply, keep: KeepAnswer | None = None
    ) -> None:
        """`reply` gets the broker's first balance once durable, or the 409. With `keep`
        (an `Idempotency-Key`) the answer is journaled in the same commit."""
        self._running().account_actor(command.broker_id).tell(Register(command, reply, keep))

    def issue(self, broker_id: str, api_key: bool, webhook_secret: bool, reply: Reply) -> None:
        """New credentials for a registered broker: `reply` gets `Issued` once durable,
        when what they replace stops working."""
        self._running().account_actor(broker_id).tell(
            Issue(broker_id, api_key, webhook_secret, reply)
        )

    def read_balance(self, broker_id: str, reply: Reply) -> None:
        self._running().account_actor(broker_id).tell(ReadBalance(broker_id, reply))

    def submit(self, message: Submit) -> None:
        """A limit order goes to its broker's account actor (R1), which holds its funds
        and forwards it; a market order to its symbol's actor, which holds its sweep."""
        command: SubmitOrder = message.command
        if command.type == LIMIT:
            self._running().account_actor(command.broker_id).tell(message)
        else:
            self.symbol_actor(command.symbol).tell(message)

    def _running(self) -> Exchange:
        if self._stopped or not self._accounts:
            raise pykka.ActorDeadError("the exchange is not running")
        return self

    # -- symbols -----------------------------------------------------------------

    def symbol_actor(self, symbol: str) -> pykka.ActorRef:
        """The symbol's actor, started on first use, for a symbol that holds a place
        (listed, or claimed by the order that starts it): else symbol_limit_reached.
        If the system refuses its thread (a pids limit), symbol_unavailable (503) and
        nothing changed."""
        actor = self._symbols.get(symbol)
        if actor is not None:
            return actor
        with self._lock:
            actor = self._symbols.get(symbol)
            if actor is None:
                if self._stopped:
                    raise pykka.ActorDeadError("the exchange is stopping")
                listing = self._listing
                if not listing.occupy(symbol):
                    raise symbol_limit_reached(listing.limit)
                try:
                    actor = SymbolActor.start(symbol, self._context)
                except RuntimeError as refused:  # "can't start new thread"
                    listing.release((symbol,))
                    log.error(
                        "symbol actor not started",
                        extra={
                            "event": "symbol_actor_not_started",
                            "symbol": symbol,
                            "reason": repr(refused),
                        },
                    )
                    raise symbol_unavailable(symbol) from refused
                self._symbols[symbol] = actor
            return actor

    def existing_symbol_actor(self, symbol: str) -> pykka.ActorRef | None:
        return self._symbols.get(symbol)
