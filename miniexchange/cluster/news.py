"""What a symbol shard's steps published, kept for the workers' event streams.

A worker streams a symbol from its own replica of the symbol's feed (the HTTP layer's
fan-out reads a `SymbolFeed`); the replica is fed by polling the symbol's shard:
"what happened since step n". `News` hears every step of the shard's symbols and keeps,
per symbol, the steps counted and the latest trades with the step that made each, so a
poll gets each trade once, in order. A worker that has just started streaming a symbol
knows no step count yet: it asks for the trades executed since it joined (their `at`
is the sequencer's stamp), and learns the count from the answer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import NamedTuple

from miniexchange.actors.listeners import Step, StepListener
from miniexchange.actors.market_data import STREAM_BACKLOG
from miniexchange.model.orders import Trade

JOINING = -1
"""The steps a worker has seen of a symbol it has just started streaming."""


class Update(NamedTuple):
    """A symbol's news for one worker: the steps counted so far, the trades it has not
    seen, and whether some it had not seen fell out of the backlog first."""

    steps: int
    trades: list[Trade]
    lost: bool


class _SymbolNews:
    __slots__ = ("dropped_through", "steps", "trades")

    def __init__(self, backlog: int) -> None:
        self.steps = 0
        self.trades: deque[tuple[int, Trade]] = deque(maxlen=backlog)
        self.dropped_through = 0  # the last step some of whose trades fell out


class News(StepListener):
    def __init__(self, backlog: int = STREAM_BACKLOG) -> None:
        self._backlog = backlog
        self._symbols: dict[str, _SymbolNews] = {}
        self._changed = threading.Condition()

    def on_step(self, step: Step) -> None:
        """On the symbol's actor thread, once the step is durable."""
        with self._changed:
            news = self._symbols.get(step.symbol)
            if news is None:
                news = self._symbols[step.symbol] = _SymbolNews(self._backlog)
            news.steps += 1
            kept = news.trades
            for trade in step.outcome.trades:
                if len(kept) == kept.maxlen:
                    news.dropped_through = kept[0][0]
                kept.append((news.steps, trade))
            self._changed.notify_all()

    def forget_steps(self, counted: dict[str, int] | None = None) -> None:
        """Before the shard is rebuilt by a replay of the journal: its steps are counted,
        and their trades kept, again as they run again, so a worker's poll hears only
        the steps past those it had seen. `counted`: the steps of the snapshot the shard
        starts from (none of whose trades are kept: a poll behind them hears `lost`)."""
        with self._changed:
            self._symbols.clear()
            for symbol, steps in (counted or {}).items():
                news = self._symbols[symbol] = _SymbolNews(self._backlog)
                news.steps = news.dropped_through = steps

    def steps(self) -> dict[str, int]:
        """Each symbol's steps counted (for a snapshot of the shard)."""
        with self._changed:
            return {symbol: news.steps for symbol, news in self._symbols.items()}

    def since(self, seen: dict[str, tuple[int, int]], wait_s: float) -> dict[str, Update]:
        """What changed of each symbol since the worker's `(steps seen, joined at)`,
        waiting up to `wait_s` for something to change (a long poll); {} if nothing did."""
        deadline = time.monotonic() + wait_s
        with self._changed:
            while True:
                updates = {
                    symbol: update
                    for symbol, (steps, joined_at) in seen.items()
                    if (update := self._update(symbol, steps, joined_at)) is not None
                }
                remaining = deadline - time.monotonic()
                if updates or remaining <= 0:
                    return updates
                self._changed.wait(remaining)

    def _update(self, symbol: str, seen: int, joined_at: int) -> Update | None:
        news = self._symbols.get(symbol)
        steps = 0 if news is None else news.steps
        if seen != JOINING and steps <= seen:  # fewer: a rebuilt shard counting them again
            return None
        if news is None:
            return Update(0, [], False)
        if seen == JOINING:
            trades = [trade for _, trade in news.trades if trade.executed_at >= joined_at]
            return Update(steps, trades, False)
        trades = [trade for step, trade in news.trades if step > seen]
        return Update(steps, trades, news.dropped_through > seen)
