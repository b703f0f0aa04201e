"""The engine seam: the one interface through which the HTTP layer reaches an exchange.

The HTTP layer parses, checks and renders; everything it needs from the exchange is an
`Engine` method, never an actor ref or the `Exchange` registry. So a second engine (the
planned `miniexchange/cluster`, on Ray: docs/ray.md) can stand behind the same
resources without importing `http`. A method whose answer comes from an actor (or,
across processes, from a shard) returns an awaitable; the reads the HTTP layer's checks
make before sending anything (registered, listed, a place, a book) are plain calls.

`EmbeddedEngine` is today's engine: one process, the `Exchange` and its pykka actors,
answered through the bridge (`actors.bridge.answer`). Each method returns the bridge's
coroutine itself where it can, so the seam adds no await layer to a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

import pykka

from miniexchange.actors.bridge import answer, call
from miniexchange.actors.exchange import Exchange, history_retention
from miniexchange.actors.market_data import Summary, SymbolFeed
from miniexchange.actors.messages import (
    Cancel,
    Issued,
    ListWebhooks,
    ReadBook,
    ReadPrice,
    ReadQuote,
    Submit,
    Subscribe,
    Unsubscribe,
)
from miniexchange.clock import Clock
from miniexchange.ids import IdFactory
from miniexchange.journal.facts import Fact, KeepAnswer
from miniexchange.journal.store import open_journal
from miniexchange.metrics import Metrics
from miniexchange.model.candles import Candle
from miniexchange.model.commands import RegisterBroker, SubmitOrder
from miniexchange.model.engine import BookView, QuoteView
from miniexchange.model.errors import journal_unavailable
from miniexchange.model.idempotency import Decided, InFlight, KeptAnswers, StoredAnswer
from miniexchange.model.ledger import Balance
from miniexchange.model.orders import Order, Trade
from miniexchange.model.subscriptions import Subscription, Upserted
from miniexchange.model.vwap import Price
from miniexchange.settings import Settings, to_seconds
from miniexchange.webhooks.delivery import DeliveryPool

# With the engines, the values of their answers that the HTTP layer names: every engine
# answers with these, so the HTTP layer imports nothing else of the actors layer.
__all__ = [
    "EmbeddedEngine",
    "Engine",
    "EngineStopped",
    "Issued",
    "Keys",
    "Summary",
    "SymbolFeed",
]

EngineStopped = pykka.ActorDeadError
"""What an engine raises when it is not running (stopping, or not started): the HTTP
layer answers 503 `unavailable`. The embedded engine's actors raise pykka's own."""


class Keys(Protocol):
    """The `Idempotency-Key`s of an exchange whose requests several processes take
    (`model.idempotency.KeyIndex`, held where they all reach it)."""

    def begin(
        self, endpoint: str, key: str, digest: bytes
    ) -> Awaitable[StoredAnswer | InFlight | Decided]:
        """The answer to replay, the first use now in flight, or the outcome of a first
        use whose process died before keeping its answer (to render and keep); raises
        the 422 of another request under the key, the 409 of a first use in flight."""
        ...

    def finish(self, endpoint: str, key: str, status: int, body: bytes) -> Awaitable[None]: ...


class Engine(Protocol):
    """What the HTTP layer asks of an exchange. Refusals are raised as `ExchangeError`
    (awaitables raise them when awaited); `keep` is a request's `Idempotency-Key`
    answer, journaled with the command's own facts."""

    # -- lifespan (the ASGI lifespan's startup and shutdown) --------------------------

    def start(self) -> None: ...

    def stop(self) -> None: ...

    @property
    def recovered_answers(self) -> KeptAnswers:
        """After `start`: the `Idempotency-Key` answers recovered from the journal."""
        ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def keys(self) -> Keys | None:
        """The `Idempotency-Key`s every process shares; None: the HTTP layer keeps them
        (one process takes every request)."""
        ...

    # -- no hop: what a request's own checks read before it sends anything ------------

    def is_registered(self, broker_id: str) -> bool: ...

    def is_listed(self, symbol: str) -> bool: ...

    def has_place_for(self, symbol: str) -> bool:
        """Whether `symbol` is listed or could be now (`MAX_SYMBOLS`), nothing claimed."""
        ...

    @property
    def max_symbols(self) -> int: ...

    def has_book(self, symbol: str) -> bool:
        """Whether the symbol ever had an order (a market order needs one to trade)."""
        ...

    def broker_with_key(self, api_key: str) -> Awaitable[str | None]:
        """The broker whose current API key this is, or None (`AUTH=api_key`): read in
        the process by the embedded engine, a hop to the shard that keeps it in Ray
        mode, so awaitable."""
        ...

    # -- commands ----------------------------------------------------------------------

    def register(self, command: RegisterBroker, keep: KeepAnswer | None) -> Awaitable[Balance]:
        """The broker's first balance once durable, or `broker_already_exists`."""
        ...

    def issue(self, broker_id: str, api_key: bool, webhook_secret: bool) -> Awaitable[Issued]:
        """New credentials once durable, when what they replace stops working."""
        ...

    def submit(
        self, command: SubmitOrder, keep: KeepAnswer | None, request_id: str | None
    ) -> Awaitable[Order]: ...

    def cancel(self, symbol: str, order_id: str, request_id: str | None) -> Awaitable[Order]: ...

    def journal_answer(self, fact: Fact) -> Awaitable[None]:
        """Journal an `Idempotency-Key` answer the HTTP layer decided itself (a refusal
        before any command); done once durable, else `journal_unavailable`."""
        ...

    # -- webhooks ----------------------------------------------------------------------

    def subscribe(
        self, broker_id: str, url: str, events: tuple[str, ...], keep: KeepAnswer | None
    ) -> Awaitable[Upserted]: ...

    def webhooks(self, broker_id: str) -> Awaitable[list[Subscription]]: ...

    def unsubscribe(self, webhook_id: str, owner: str | None) -> Awaitable[None]:
        """`owner`: only this broker's subscription may go (else `webhook_not_found`)."""
        ...

    # -- reads -------------------------------------------------------------------------

    def order(self, order_id: str) -> Awaitable[Order | None]: ...

    def broker_orders(
        self, broker_id: str, status: str | None, start: int, limit: int
    ) -> Awaitable[tuple[list[Order], int]]:
        """One page of the broker's orders, newest first, and how many there are."""
        ...

    def balance(self, broker_id: str) -> Awaitable[Balance]:
        """After every settlement of the orders answered before it."""
        ...

    def book(self, symbol: str, depth: int) -> Awaitable[BookView]:
        """The L2 book of a listed symbol, due orders left out."""
        ...

    def quote(self, symbol: str, side: str, quantity: int) -> Awaitable[QuoteView]: ...

    def price(self, symbol: str) -> Awaitable[Price]: ...

    def stocks(self) -> Awaitable[list[tuple[str, Summary]]]:
        """Every listed symbol's summary, by symbol, due orders left out."""
        ...

    def trades(self, symbol: str, limit: int) -> Awaitable[list[Trade]]: ...

    def candles(self, symbol: str, interval: str, limit: int) -> Awaitable[list[Candle]]: ...

    def feed(self, symbol: str) -> SymbolFeed:
        """The symbol's news for its event streams (created if none yet)."""
        ...


class EmbeddedEngine:
    """`ENGINE=embedded`: the `Exchange` of this process and its actors."""

    __slots__ = ("_exchange",)

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        clock: Clock,
        ids: IdFactory,
        on_journal_failure: Callable[[BaseException], None],
    ) -> EmbeddedEngine:
        """The served exchange: its journal, delivery pool and metrics, from the settings.
        `on_journal_failure`: the fail-stop (the process decides how it stops)."""
        metrics = Metrics(journal=settings.journal_enabled)
        journal = open_journal(
            settings.database_path,
            settings.database_sync,
            on_failure=on_journal_failure,
            on_commit=metrics.observe_journal_commit,
            snapshot_interval_s=to_seconds(settings.snapshot_interval_us),
            retention=history_retention(
                settings.vwap_window_us,
                settings.idempotency_max_keys,
                settings.idempotency_ttl_us,
            ),
        )
        exchange = Exchange(
            clock,
            ids,
            DeliveryPool(settings, on_outcome=metrics.count_delivery),
            expiration_interval_s=settings.expiration_interval_us / 1_000_000,
            vwap_window_us=settings.vwap_window_us,
            journal=journal,
            metrics=metrics,
            account_actors=settings.account_actors,
            max_symbols=settings.max_symbols,
            idempotency_max_keys=settings.idempotency_max_keys,
            idempotency_ttl_us=settings.idempotency_ttl_us,
        )
        return cls(exchange)

    # -- lifespan --------------------------------------------------------------------

    def start(self) -> None:
        self._exchange.start()

    def stop(self) -> None:
        self._exchange.stop()

    @property
    def recovered_answers(self) -> KeptAnswers:
        return self._exchange.recovered_answers

    @property
    def metrics(self) -> Metrics:
        return self._exchange.metrics

    @property
    def keys(self) -> None:
        return None

    # -- no hop ----------------------------------------------------------------------

    def is_registered(self, broker_id: str) -> bool:
        return broker_id in self._exchange.registered

    def is_listed(self, symbol: str) -> bool:
        return symbol in self._exchange.known_symbols

    def has_place_for(self, symbol: str) -> bool:
        return self._exchange.listing.has_place_for(symbol)

    @property
    def max_symbols(self) -> int:
        return self._exchange.listing.limit

    def has_book(self, symbol: str) -> bool:
        return self._exchange.existing_symbol_actor(symbol) is not None

    async def broker_with_key(self, api_key: str) -> str | None:
        return self._exchange.credentials.broker_with_key(api_key)

    # -- commands ----------------------------------------------------------------------

    def register(self, command: RegisterBroker, keep: KeepAnswer | None) -> Awaitable[Balance]:
        exchange = self._exchange
        return answer(lambda reply: exchange.register_broker(command, reply, keep))

    def issue(self, broker_id: str, api_key: bool, webhook_secret: bool) -> Awaitable[Issued]:
        exchange = self._exchange
        return answer(lambda reply: exchange.issue(broker_id, api_key, webhook_secret, reply))

    def submit(
        self, command: SubmitOrder, keep: KeepAnswer | None, request_id: str | None
    ) -> Awaitable[Order]:
        exchange = self._exchange
        return answer(lambda reply: exchange.submit(Submit(command, reply, keep, request_id)))

    def cancel(self, symbol: str, order_id: str, request_id: str | None) -> Awaitable[Order]:
        actor = self._exchange.symbol_actor(symbol)
        return call(actor, lambda reply: Cancel(order_id, reply, request_id))

    def journal_answer(self, fact: Fact) -> Awaitable[None]:
        journal = self._exchange.journal

        def send(reply: Callable[[object], None]) -> None:
            journal.append(
                (fact,), lambda error: reply(None if error is None else journal_unavailable())
            )

        return answer(send)

    # -- webhooks ----------------------------------------------------------------------

    def subscribe(
        self, broker_id: str, url: str, events: tuple[str, ...], keep: KeepAnswer | None
    ) -> Awaitable[Upserted]:
        return call(
            self._exchange.dispatcher, lambda reply: Subscribe(broker_id, url, events, reply, keep)
        )

    def webhooks(self, broker_id: str) -> Awaitable[list[Subscription]]:
        return call(self._exchange.dispatcher, lambda reply: ListWebhooks(broker_id, reply))

    def unsubscribe(self, webhook_id: str, owner: str | None) -> Awaitable[None]:
        return call(self._exchange.dispatcher, lambda reply: Unsubscribe(webhook_id, reply, owner))

    # -- reads -------------------------------------------------------------------------
    # Orders and the listing are read from the published order values (`ReadIndex`) and
    # market data from the symbols' feeds, with no hop; book, quote and price from the
    # symbol's actor, which answers between two writes after expiring what is due. A
    # listed symbol that never had an order has no actor: it is answered here, empty.

    async def order(self, order_id: str) -> Order | None:
        return self._exchange.read_index.get(order_id)

    async def broker_orders(
        self, broker_id: str, status: str | None, start: int, limit: int
    ) -> tuple[list[Order], int]:
        return self._exchange.read_index.page(broker_id, status, start, limit)

    def balance(self, broker_id: str) -> Awaitable[Balance]:
        exchange = self._exchange
        return answer(lambda reply: exchange.read_balance(broker_id, reply))

    async def book(self, symbol: str, depth: int) -> BookView:
        actor = self._exchange.existing_symbol_actor(symbol)
        if actor is None:
            return BookView([], [], self._exchange.clock.now())
        return await call(actor, partial(ReadBook, depth))

    async def quote(self, symbol: str, side: str, quantity: int) -> QuoteView:
        actor = self._exchange.existing_symbol_actor(symbol)
        if actor is None:
            return QuoteView([], self._exchange.clock.now())
        return await call(actor, lambda reply: ReadQuote(side, quantity, reply))

    async def price(self, symbol: str) -> Price:
        actor = self._exchange.existing_symbol_actor(symbol)
        if actor is None:
            return Price(None, 0, None)
        return await call(actor, ReadPrice)

    async def stocks(self) -> list[tuple[str, Summary]]:
        """Each summary as published, but where its book holds an order due by now (its
        `next_expiry` has passed and no sweep has run yet) the best prices are asked of
        the actor, which expires the due orders first: no read shows a due order."""
        exchange = self._exchange
        market_data = exchange.market_data
        # Actor threads add to the set as orders are accepted: copy it (atomically)
        # before iterating.
        symbols = sorted(exchange.known_symbols.copy())
        entries = [(symbol, market_data.summary(symbol)) for symbol in symbols]
        now = exchange.clock.now()
        stale = [
            position
            for position, (_, summary) in enumerate(entries)
            if summary.may_show_a_due_order(now)
        ]
        if stale:
            views = await asyncio.gather(*(self.book(entries[i][0], 1) for i in stale))
            for position, view in zip(stale, views, strict=True):
                symbol, summary = entries[position]
                entries[position] = (symbol, summary.with_best_prices(view))
        return entries

    async def trades(self, symbol: str, limit: int) -> list[Trade]:
        feed = self._exchange.market_data.get(symbol)
        return [] if feed is None else feed.latest_trades(limit)

    async def candles(self, symbol: str, interval: str, limit: int) -> list[Candle]:
        feed = self._exchange.market_data.get(symbol)
        return [] if feed is None else feed.latest_candles(interval, limit)

    def feed(self, symbol: str) -> SymbolFeed:
        return self._exchange.market_data.feed(symbol)
