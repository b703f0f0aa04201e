"""The read side of orders: immutable order values published by their symbol actors.

Each order id has exactly one writer (its symbol actor), and an `Order` is immutable,
so `GET /orders/{id}` and the broker listing read without a message hop and always
see one consistent state. A symbol actor publishes before it replies, so a request
sees every effect of the requests answered before it was sent.
"""

from __future__ import annotations

import bisect
import threading

from miniexchange.model.orders import Order


class ReadIndex:
    __slots__ = ("_by_broker", "_lock", "orders")

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        # broker id -> its order ids by created_at, then order of acceptance; ids only
        # (the entry of a resting order costs one pointer: see `bench --memory`)
        self._by_broker: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def get(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    def publish(self, order: Order) -> None:
        """Replace an order's published state (the single writer is its symbol actor)."""
        self.orders[order.order_id] = order

    def publish_new(self, order: Order) -> None:
        """Publish a newly accepted order and list it under its broker."""
        orders = self.orders
        order_id = order.order_id
        orders[order_id] = order
        created_at = order.created_at
        with self._lock:
            entries = self._by_broker.setdefault(order.broker_id, [])
            if not entries or orders[entries[-1]].created_at <= created_at:
                entries.append(order_id)
            else:  # another symbol's actor read the clock earlier but published later
                # after the equal created_at: those were accepted first
                bisect.insort_right(entries, order_id, key=lambda listed: orders[listed].created_at)

    def broker_order_ids(self, broker_id: str) -> list[str]:
        """The broker's order ids, oldest first: `created_at`, then order of acceptance."""
        with self._lock:
            return list(self._by_broker.get(broker_id, ()))
