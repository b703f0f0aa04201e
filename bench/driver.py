"""Drives a running `Exchange`'s actors the way the HTTP layer does (engine and journal
benchmarks).

One thread sends the flow with at most `window` requests in flight, as one event loop
serves 32 connections. Each reply is timed on the actor thread that gives it, then put
on a `SimpleQueue` that the driver drains in batches, the way the event loop runs a
batch of `call_soon_threadsafe` callbacks per wake-up: the driver costs one wake-up per
batch of replies, not one per order, so what is measured is the exchange.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.flow import BROKERS, INITIAL_CASH_DOLLARS, INITIAL_SHARES, OP_CANCEL, SYMBOLS, Op
from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import Cancel, Submit
from miniexchange.actors.read_index import ReadIndex
from miniexchange.clock import SystemClock
from miniexchange.ids import IdFactory
from miniexchange.journal.store import Journal
from miniexchange.model.commands import RegisterBroker
from miniexchange.model.orders import Order
from miniexchange.testing import FakeDeliveries, Replies

REPLY_TIMEOUT_S = 60  # an actor that never answers must fail the run, not hang it

Answer = tuple[int, int, int, Any]  # (op kind, sent ns, answered ns, answer)


def start_exchange(journal: Journal, ids: IdFactory) -> Exchange:
    """A started exchange with the flow's brokers registered (unless recovered) and an
    actor for each of the flow's symbols."""
    exchange = Exchange(
        SystemClock(), ids, FakeDeliveries(), expiration_interval_s=None, journal=journal
    )
    exchange.start()
    holdings = tuple((symbol, INITIAL_SHARES) for symbol in sorted(SYMBOLS))
    for broker in BROKERS:
        if not exchange.is_registered(broker):
            replies = Replies()
            command = RegisterBroker(broker, INITIAL_CASH_DOLLARS * 100, holdings)
            exchange.register_broker(command, replies)
            answer = replies.get(timeout=30)
            if isinstance(answer, BaseException):
                raise answer
    for symbol in SYMBOLS:
        exchange.symbol_actor(symbol)
    return exchange


class Stalled(RuntimeError):
    """A reply never came: the measurement is void."""


class Driver:
    def __init__(
        self, exchange: Exchange, window: int, read_index: ReadIndex | None = None
    ) -> None:
        """`read_index`: cancels skip orders it shows as no longer active (what
        `DELETE /orders/{id}` checks before its hop); None: cancel whatever rested.
        Orders go where the HTTP layer sends them (`Exchange.submit`)."""
        self.exchange = exchange
        self.window = window
        self.read_index = read_index
        self.latencies_ns: list[int] = []
        self.outcomes: list[tuple[int, Any]] = []
        self.resting: list[tuple[str, str]] = []  # (order id, symbol): cancel candidates
        self.skipped = 0  # cancels with nothing to cancel
        self._answers: queue.SimpleQueue[Answer] = queue.SimpleQueue()
        self._in_flight = 0

    def _reply(self, kind: int, sent_ns: int) -> Callable[[Any], None]:
        put = self._answers.put

        def reply(value: Any) -> None:
            put((kind, sent_ns, time.perf_counter_ns(), value))

        return reply

    def _take(self, answer: Answer) -> None:
        kind, sent_ns, answered_ns, value = answer
        self._in_flight -= 1
        self.latencies_ns.append(answered_ns - sent_ns)
        self.outcomes.append((kind, value))
        if kind != OP_CANCEL and isinstance(value, Order) and value.is_active:
            self.resting.append((value.order_id, value.symbol))

    def _drain(self, until_in_flight: int) -> None:
        """Wait for answers until at most `until_in_flight` are outstanding, then take
        every answer already there without waiting."""
        answers = self._answers
        while self._in_flight > until_in_flight:
            try:
                self._take(answers.get(timeout=REPLY_TIMEOUT_S))
            except queue.Empty:
                raise Stalled(f"an order got no reply within {REPLY_TIMEOUT_S} s") from None
        while True:
            try:
                self._take(answers.get_nowait())
            except queue.Empty:
                return

    def _cancel_target(self, pick: float) -> tuple[str, str] | None:
        resting, index_get = self.resting, self.read_index.get if self.read_index else None
        while resting:
            index = int(pick * len(resting))
            resting[index], resting[-1] = resting[-1], resting[index]
            order_id, symbol = resting.pop()
            if index_get is None:
                return order_id, symbol
            order = index_get(order_id)
            if order is not None and order.is_active:
                return order_id, symbol
        return None

    def run(self, ops: Sequence[Op]) -> None:
        exchange, window = self.exchange, self.window
        for op in ops:
            if self._in_flight >= window:
                self._drain(window - 1)
            if op.kind == OP_CANCEL:
                target = self._cancel_target(op.pick)
                if target is None:
                    self.skipped += 1
                    continue
                order_id, symbol = target
                reply = self._reply(op.kind, time.perf_counter_ns())
                exchange.symbol_actor(symbol).tell(Cancel(order_id, reply))
            else:
                reply = self._reply(op.kind, time.perf_counter_ns())
                exchange.submit(Submit(op.command, reply))  # type: ignore[arg-type]
            self._in_flight += 1
        self._drain(0)
