"""The registry: starts, finds and stops every actor of one exchange.

A plain object used by the HTTP layer. Broker registration needs no actor hop: the
registry checks and inserts under its lock and builds the broker's account (its ledger
behind a lock, see `actors.accounts`). Symbol actors are
started on a symbol's first order, not when a registration merely names it.

On start it replays the journal (facts only, no matching), starts an actor for every
broker and every symbol that has orders, and expires at once the orders whose
`expires_at` passed while the exchange was down.

It also owns the webhook side: the delivery pool and the dispatcher actor, which hears
every symbol actor's events (`Notify`) and holds the recovered subscriptions.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pykka

from miniexchange.actors.accounts import BrokerAccount
from miniexchange.actors.base import Reply, start_actor_threads_small
from miniexchange.actors.clock import ClockActor, Ticker
from miniexchange.actors.market_data import MarketData
from miniexchange.actors.messages import ExpireDue, Notify
from miniexchange.actors.read_index import ReadIndex
from miniexchange.actors.symbol import EventSink, SymbolActor, SymbolContext, ignore_events
from miniexchange.actors.webhooks import Listening, WebhookDispatcherActor
from miniexchange.clock import Clock
from miniexchange.ids import IdFactory
from miniexchange.journal import facts
from miniexchange.journal.facts import KeepAnswer
from miniexchange.journal.recovery import Recovered, recover
from miniexchange.journal.store import Journal, MemoryJournal
from miniexchange.metrics import Metrics
from miniexchange.model.commands import RegisterBroker
from miniexchange.model.errors import ExchangeError, journal_unavailable
from miniexchange.model.events import Event
from miniexchange.model.ledger import Ledger
from miniexchange.model.orders import Order
from miniexchange.model.subscriptions import Subscription
from miniexchange.settings import Settings
from miniexchange.webhooks.delivery import Deliveries, DeliveryPool


class Exchange:
    def __init__(
        self,
        clock: Clock,
        ids: IdFactory,
        expiration_interval_s: float | None = 1.0,
        vwap_window_us: int = 300_000_000,
        events: EventSink = ignore_events,
        journal: Journal | None = None,
        deliveries: Deliveries | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """`expiration_interval_s=None` starts no ticker: a test sends `Tick` itself.

        `events` also hears every event (the webhook dispatcher always does).
        `deliveries` sends the webhooks; None: a pool with the default settings.
        `metrics`: this exchange's Prometheus families (§6.4); None: a fresh set.
        """
        self.clock = clock
        self.ids = ids
        self.read_index = ReadIndex()
        self.journal: Journal = journal if journal is not None else MemoryJournal()
        self.deliveries: Deliveries = (
            deliveries if deliveries is not None else DeliveryPool(Settings())
        )
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics.watch_deliveries(getattr(self.deliveries, "stats", None))  # a fake: none
        self._dispatcher: pykka.ActorRef | None = None
        self._listening = Listening()
        self._also_hear = events
        self._brokers: dict[str, BrokerAccount] = {}
        self._symbols: dict[str, pykka.ActorRef] = {}
        self._lock = threading.Lock()
        self._expiration_interval_s = expiration_interval_s
        self._context = SymbolContext(
            clock=clock,
            ids=ids,
            read_index=self.read_index,
            brokers=self.broker,
            vwap_window_us=vwap_window_us,
            events=self._publish,
            journal=self.journal,
            metrics=self.metrics,
        )
        self.clock_actor: pykka.ActorRef | None = None
        self._ticker: Ticker | None = None
        self._stopped = False
        self.recovered_answers: list[dict[str, Any]] = []

    @property
    def known_symbols(self) -> set[str]:
        return self._context.known_symbols

    @property
    def market_data(self) -> MarketData:
        """What the symbol actors publish for `/stocks`, the tape and the streams."""
        return self._context.market_data

    def start(self) -> None:
        recovered = recover(self.journal.facts())
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
        )
        self.clock_actor = ClockActor.start(self.clock, self._symbols.get)
        self._context.clock_actor = self.clock_actor
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

    def _restore(self, recovered: Recovered) -> None:
        for broker_id, ledger in recovered.ledgers.items():
            self._brokers[broker_id] = BrokerAccount(ledger)
        self.known_symbols.update(recovered.known_symbols)
        by_symbol: dict[str, list[Order]] = {}
        for order in recovered.orders.values():
            self.read_index.publish_new(order)
            by_symbol.setdefault(order.symbol, []).append(order)
        for symbol, orders in by_symbol.items():
            trades = recovered.trades.get(symbol, ())
            self._symbols[symbol] = SymbolActor.start(symbol, self._context, orders, trades)

    def stop(self) -> None:
        """Stop the clock (a running sweep completes first), then every actor, then the
        delivery pool (queued deliveries are abandoned, §5.3), then the journal (after
        committing what the actors appended; events it releases then are dropped)."""
        with self._lock:
            self._stopped = True
        if self._ticker is not None:
            self._ticker.stop()
        if self.clock_actor is not None:
            self.clock_actor.stop()
        for ref in list(self._symbols.values()):
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

    def _publish(self, events: list[Event]) -> None:
        """A symbol actor's events, after its atomic step: to the dispatcher, in order
        (unless none of them concerns a broker with a subscription)."""
        dispatcher = self._dispatcher
        if dispatcher is not None and self._listening.any_of(events):
            # Once stopping, deliveries not yet made are abandoned (§5.3).
            with contextlib.suppress(pykka.ActorDeadError):
                dispatcher.tell(Notify(tuple(events)))
        self._also_hear(events)

    # -- brokers -----------------------------------------------------------------

    def broker(self, broker_id: str) -> BrokerAccount | None:
        return self._brokers.get(broker_id)

    def register_broker(
        self, command: RegisterBroker, reply: Reply, keep: KeepAnswer | None = None
    ) -> None:
        """Register a broker atomically; `reply` gets its first balance once durable.

        With `keep` (an `Idempotency-Key`), the answer — the balance or the 409 — is
        journaled in the same commit as the registration.
        """
        with self._lock:
            if self._stopped:
                raise pykka.ActorDeadError("the exchange is stopping")
            if command.broker_id in self._brokers:
                refusal = ExchangeError(
                    "broker_already_exists", f"Broker {command.broker_id} is already registered"
                )
                answer = keep.fact(refusal) if keep is not None else None
                if answer is None:
                    raise refusal

                def refused(error: BaseException | None) -> None:
                    reply(refusal if error is None else journal_unavailable())

                self.journal.append((answer,), refused)
                return
            ledger = Ledger(
                command.broker_id, command.initial_cash, dict(command.holdings), self.clock.now()
            )
            balance = ledger.balance()
            self._brokers[command.broker_id] = BrokerAccount(ledger)
            self.known_symbols.update(symbol for symbol, _ in command.holdings)
        recorded = [facts.broker_registered(command, balance.created_at)]
        answer = keep.fact(balance) if keep is not None else None
        if answer is not None:
            recorded.append(answer)

        def durable(error: BaseException | None) -> None:
            reply(balance if error is None else journal_unavailable())

        self.journal.append(recorded, durable)

    # -- symbols -----------------------------------------------------------------

    def symbol_actor(self, symbol: str) -> pykka.ActorRef:
        """The symbol's actor, started on first use."""
        actor = self._symbols.get(symbol)
        if actor is not None:
            return actor
        with self._lock:
            actor = self._symbols.get(symbol)
            if actor is None:
                if self._stopped:
                    raise pykka.ActorDeadError("the exchange is stopping")
                actor = SymbolActor.start(symbol, self._context)
                self._symbols[symbol] = actor
            return actor

    def existing_symbol_actor(self, symbol: str) -> pykka.ActorRef | None:
        return self._symbols.get(symbol)
