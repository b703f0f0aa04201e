"""One way out of a matching step: `StepListener`, the shape of Mopidy's `CoreListener`.

A symbol actor hands every durable step to its listeners, in order: the market-data
feed (summary, tape, streams), the metrics (trades), the webhook side (events to the
dispatcher) and whatever a test adds. Each listener overrides what it hears; all are
called on the thread that completes the step (the journal's, or the actor's without
persistence), before the requester is answered, so a listener must never block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from miniexchange.metrics import Metrics
from miniexchange.model.engine import Outcome
from miniexchange.model.events import Event


class Step(NamedTuple):
    """A symbol's step once durable: what it decided and the book as it left it."""

    symbol: str
    outcome: Outcome
    best_bid: int | None
    best_ask: int | None
    next_expiry: int | None


class StepListener:
    """Subclass and override `on_step`; the default hears nothing."""

    def on_step(self, step: Step) -> None:
        pass


class EventsTo(StepListener):
    """Hands each step's webhook events, if any, to a plain callable (tests, tools)."""

    def __init__(self, sink: Callable[[list[Event]], None]) -> None:
        self.sink = sink

    def on_step(self, step: Step) -> None:
        if step.outcome.events:
            self.sink(step.outcome.events)


class CountTrades(StepListener):
    """The trade families of the metrics: `miniexchange_trades_total` and
    `miniexchange_traded_quantity_total`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_step(self, step: Step) -> None:
        if step.outcome.trades:
            self.metrics.count_trades(step.symbol, step.outcome.trades)


def tell_all(listeners: Sequence[StepListener], step: Step) -> None:
    for listener in listeners:
        listener.on_step(step)
