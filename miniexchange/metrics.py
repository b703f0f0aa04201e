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

With `ENGINE=ray` these facts happen in several processes: each exposes its families as
plain data (`Metrics.families`, `Family`), and the page a worker serves is their sum
(`merged`, `exposition`): `cluster.scrape`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from miniexchange.model.commands import SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.orders import Trade

__all__ = [
    "CONTENT_TYPE",
    "DELIVERY_BUCKETS_S",
    "HTTP_BUCKETS_S",
    "JOURNAL_BUCKETS_S",
    "MULTIPROC_DIR",
    "Family",
    "Metrics",
    "exposition",
    "families_of",
    "merged",
    "multiprocess_directory",
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

    async def page(self) -> bytes:
        """What `GET /metrics` serves: this registry's page (`render`). The Ray mode's
        worker gathers the other processes' figures here (`cluster.scrape`)."""
        return self.render()

    def families(self) -> list[Family]:
        """This registry's families as plain data, each with its samples (none yet: the
        family still, with its help and type)."""
        return families_of(self.registry.collect())

    def workers_families(self, directory: str) -> list[Family]:
        """Every family of this registry, with the samples of every process whose values
        live in `directory` (prometheus-client's multiprocess mode: the gunicorn workers
        of one node) instead of this process's alone."""
        described = [(name, kind, text, []) for name, kind, text, _ in self.families()]
        return merged(described, families_of(MultiProcessCollector(None, directory).collect()))


# -- one page of several processes' families -------------------------------------------

MULTIPROC_DIR: Final = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's variable: set when it is first imported, the values of every
metric live in files of that directory, one per process, which a collector sums."""

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels, float]
"""A sample's name (a counter's ends in `_total`, a histogram's in `_bucket`, `_sum`,
`_count`), its labels in their order, its value."""
Family = tuple[str, str, str, list[Sample]]
"""A family as a process exposes it to another (plain data, which Ray pickles cheaply):
its name (a counter's without `_total`, as prometheus-client collects it), its type,
its help text and its samples."""

_SUFFIX_ORDER: Final = {"_bucket": 0, "_count": 1, "_sum": 2}


def multiprocess_directory() -> str | None:
    """The directory this process's values live in, or None (the usual case: in memory).
    prometheus-client chose where when it was imported: a variable set later changes
    nothing, and is not taken for it."""
    directory = os.environ.get(MULTIPROC_DIR)
    if not directory or values.ValueClass is values.MutexValue:
        return None
    return directory


def families_of(collected: Iterable[Metric]) -> list[Family]:
    """Collected prometheus-client families as plain data (no timestamps, no exemplars)."""
    return [
        (
            metric.name,
            metric.type,
            metric.documentation,
            [(s.name, tuple(s.labels.items()), float(s.value)) for s in metric.samples],
        )
        for metric in collected
    ]


def merged(*sources: Iterable[Family]) -> list[Family]:
    """Several processes' families as one set: each family once, with the help and type
    it first came with (a family of another type under the same name is left out: the
    page stays valid), and every sample summed across the sources by name and labels,
    whatever their order. Summing is right for every family here: counters and
    histograms add up, and the one gauge (orders resting per symbol) has each symbol in
    one process only. Families come in the order first seen; within one, a series'
    samples in prometheus-client's order (buckets by bound, `_count`, `_sum`)."""
    described: dict[str, tuple[str, str]] = {}
    sums: dict[str, dict[tuple[str, Labels], tuple[Labels, float]]] = {}
    for families in sources:
        for name, kind, text, samples in families:
            if name not in described:
                described[name] = (kind, text)
                sums[name] = {}
            elif described[name][0] != kind:
                continue
            series = sums[name]
            for sample_name, labels, value in samples:
                key = (sample_name, tuple(sorted(labels)))
                first = series.get(key)
                series[key] = (labels, value) if first is None else (first[0], first[1] + value)
    return [
        (
            name,
            kind,
            text,
            _in_order(name, [(s, labels, v) for (s, _), (labels, v) in sums[name].items()]),
        )
        for name, (kind, text) in described.items()
    ]


def _in_order(family: str, samples: list[Sample]) -> list[Sample]:
    """A histogram's samples grouped by series, each series' buckets by bound, then its
    count and sum (Prometheus reads a histogram's series together); series in the order
    first seen."""
    series: dict[Labels, int] = {}

    def key(sample: Sample) -> tuple[int, int, float]:
        name, labels, _ = sample
        bound = 0.0
        rest = []
        for label, value in labels:
            if label == "le":
                bound = float(value)
            else:
                rest.append((label, value))
        place = series.setdefault(tuple(sorted(rest)), len(series))
        return place, _SUFFIX_ORDER.get(name[len(family) :], 3), bound

    return sorted(samples, key=key)


class _Families:
    """Plain families as prometheus-client's exposition reads a registry."""

    def __init__(self, families: Iterable[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for name, kind, text, samples in self._families:
            metric = Metric(name, text, kind)
            for sample_name, labels, value in samples:
                metric.add_sample(sample_name, dict(labels), value)
            yield metric


def exposition(families: Iterable[Family]) -> bytes:
    """Plain families in the text exposition format, version 0.0.4 (`CONTENT_TYPE`)."""
    return generate_latest(_Families(families))  # type: ignore[arg-type]
