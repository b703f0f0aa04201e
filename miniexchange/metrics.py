"""Every Prometheus family the exchange exposes at `GET /metrics`, in one registry per exchange.

Why one `Metrics` object (with its own `CollectorRegistry`) per exchange rather than
prometheus-client's module-level default registry: the test suite builds many apps in
one process, and each must start from zero and count exactly what its own requests
did; a module registry would mix them (and refuse a family registered twice). The
served app has exactly one exchange, so in production this is the one registry.

Each layer updates the families of the facts it owns, where they happen; none reads
another's counters:

- the HTTP middleware: `observe_request` (requests counter and duration histogram);
- the symbol actors and R1 in the account actors: `count_order`; the step listener
  (`actors.listeners.CountTrades`): `count_trades`; the symbol actors: `watch_resting` (their books'
  sizes, read at scrape time rather than set after every step);
- the journal writer: `observe_journal_commit` (its `on_commit` hook);
- the delivery pool: `count_delivery` (its `on_outcome` hook, on every outcome), so
  the pool needs no knowledge of Prometheus and this module none of the pool.

Every family is exposed with its `# HELP` and `# TYPE` from the start, before it has a
series; the journal's histogram exists only when the journal is on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from miniexchange.model.commands import SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.orders import Trade

__all__ = [
    "CONTENT_TYPE",
    "DELIVERY_BUCKETS_S",
    "HTTP_BUCKETS_S",
    "JOURNAL_BUCKETS_S",
    "Metrics",
]

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""`text/plain; version=0.0.4; charset=utf-8`: the text exposition format 0.0.4."""

HTTP_BUCKETS_S: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Most requests take well under a millisecond in the worker: the default buckets
(5 ms and up) would put nearly all of them in the first one."""

JOURNAL_BUCKETS_S: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
"""A group commit is an fsync: tens of microseconds on a fast disk, milliseconds on most."""

DELIVERY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""A webhook delivery is a network round trip: Prometheus' default buckets."""

# prometheus-client adds a `<family>_created` gauge beside every counter and histogram
# series by default: a second family per family that the contract does not ask for and
# that doubles the scrape. It is a process-wide switch; nothing else here uses the library.
disable_created_metrics()


class Metrics:
    """The exchange's families; thread-safe (prometheus-client locks each value)."""

    def __init__(self, journal: bool = False) -> None:
        """`journal`: expose `miniexchange_journal_commit_duration_seconds` (journal on)."""
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self._http_requests = Counter(
            "miniexchange_http_requests_total",
            "HTTP requests answered, by method, route template (or not_found) and status. "
            "GET /metrics and GET /healthz are not counted; an event stream counts when it ends.",
            ("method", "route", "status"),
            registry=registry,
        )
        self._http_duration = Histogram(
            "miniexchange_http_request_duration_seconds",
            "Time from the request reaching the app to its response (an event stream: to "
            "its end), by method and route template.",
            ("method", "route"),
            buckets=HTTP_BUCKETS_S,
            registry=registry,
        )
        self._orders = Counter(
            "miniexchange_orders_total",
            "Order submissions that passed validation and are not replays, by type, side and "
            "outcome (accepted or the error code).",
            ("type", "side", "outcome"),
            registry=registry,
        )
        self._trades = Counter(
            "miniexchange_trades_total",
            "Trades executed, by symbol.",
            ("symbol",),
            registry=registry,
        )
        self._traded_quantity = Counter(
            "miniexchange_traded_quantity_total",
            "Shares traded, by symbol.",
            ("symbol",),
            registry=registry,
        )
        self._resting = Gauge(
            "miniexchange_resting_orders",
            "Orders resting in the book, by symbol and side.",
            ("symbol", "side"),
            registry=registry,
        )
        self._deliveries = Counter(
            "miniexchange_webhook_deliveries",
            "Webhook deliveries by event type and outcome (delivered, failed, refused, dropped).",
            ("event", "outcome"),
            registry=registry,
        )
        self._delivery_duration = Histogram(
            "miniexchange_webhook_delivery_duration_seconds",
            "Time of each delivery attempt made (delivered or failed), by event type.",
            ("event",),
            buckets=DELIVERY_BUCKETS_S,
            registry=registry,
        )
        self._journal_commits: Histogram | None = None
        if journal:
            self._journal_commits = Histogram(
                "miniexchange_journal_commit_duration_seconds",
                "Time to write and commit one group of journal facts (one disk sync).",
                buckets=JOURNAL_BUCKETS_S,
                registry=registry,
            )
        # label values -> child: saves prometheus-client's locked lookup on hot paths
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._order_children: dict[tuple[str, str, str], Any] = {}
        self._symbol_children: dict[str, tuple[Any, Any, Any, Any]] = {}

    # -- HTTP ------------------------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children[key] = (
                self._http_requests.labels(method, route, str(status)),
                self._http_duration.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    # -- orders, trades, books -------------------------------------------------------

    def count_order(self, order_type: str, side: str, outcome: str) -> None:
        """One submission that passed validation: `outcome` is `accepted` or its error code."""
        key = (order_type, side, outcome)
        child = self._order_children.get(key)
        if child is None:
            child = self._order_children[key] = self._orders.labels(order_type, side, outcome)
        child.inc()

    def count_answer(self, command: SubmitOrder, answer: object) -> None:
        """A submission's answer: the order (`accepted`) or its refusal's code."""
        outcome = answer.code if isinstance(answer, ExchangeError) else "accepted"
        self.count_order(command.type, command.side, outcome)

    def _symbol(self, symbol: str) -> tuple[Any, Any, Any, Any]:
        children = self._symbol_children.get(symbol)
        if children is None:
            children = self._symbol_children[symbol] = (
                self._trades.labels(symbol),
                self._traded_quantity.labels(symbol),
                self._resting.labels(symbol, "bid"),
                self._resting.labels(symbol, "ask"),
            )
        return children

    def count_trades(self, symbol: str, trades: Iterable[Trade]) -> None:
        trades_child, quantity_child, _, _ = self._symbol(symbol)
        count = quantity = 0
        for trade in trades:
            count += 1
            quantity += trade.quantity
        if count:
            trades_child.inc(count)
            quantity_child.inc(quantity)

    def watch_resting(self, symbol: str, bids: Callable[[], int], asks: Callable[[], int]) -> None:
        """The book's order count per side, read when scraped: a step then pays nothing
        for the gauge (each read is one `len` of a side, safe from another thread)."""
        _, _, bid_child, ask_child = self._symbol(symbol)
        bid_child.set_function(bids)
        ask_child.set_function(asks)

    # -- webhooks, journal -----------------------------------------------------------

    def count_delivery(self, event_type: str, outcome: str, seconds: float | None) -> None:
        """The delivery pool's `on_outcome` hook (on its threads): one delivery's outcome
        and, when an attempt was made (delivered or failed), its duration."""
        self._deliveries.labels(event_type, outcome).inc()
        if seconds is not None:
            self._delivery_duration.labels(event_type).observe(seconds)

    def observe_journal_commit(self, seconds: float, fact_count: int) -> None:
        """The journal's `on_commit` hook (called on the writer thread)."""
        if self._journal_commits is not None:
            self._journal_commits.observe(seconds)

    # -- exposition ------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format, version 0.0.4 (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
