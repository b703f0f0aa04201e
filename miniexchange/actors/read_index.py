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
        # broker id -> [(created_at, acceptance sequence, order id)], kept sorted
        self._by_broker: dict[str, list[tuple[int, int, str]]] = {}
        self._lock = threading.Lock()

    def get(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    def publish(self, order: Order) -> None:
        """Replace an order's published state (the single writer is its symbol actor)."""
        self.orders[order.order_id] = order

    def publish_new(self, order: Order) -> None:
        """Publish a newly accepted order and list it under its broker."""
        self.orders[order.order_id] = order
        with self._lock:
            entries = self._by_broker.setdefault(order.broker_id, [])
            entry = (order.created_at, len(entries), order.order_id)
            if not entries or entries[-1] < entry:
                entries.append(entry)
            else:  # another symbol's actor read the clock earlier but published later
                bisect.insort(entries, entry)

    def broker_order_ids(self, broker_id: str) -> list[str]:
        """The broker's order ids, oldest first: `created_at`, then order of acceptance."""
        with self._lock:
            return [order_id for _, _, order_id in self._by_broker.get(broker_id, ())]
