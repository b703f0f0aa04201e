"""The read side of orders: immutable order values published by their symbol actors.

Each order id has exactly one writer (its symbol actor), and an `Order` is immutable,
so `GET /orders/{id}` and the broker listing read without a message hop and always
see one consistent state. A symbol actor publishes before it replies, so a request
sees every effect of the requests answered before it was sent.

A listing page costs its own entries, never the broker's other orders: each broker's
orders are kept in listing order with, per status, a Fenwick tree of counts over that
order, so a page without a filter is a slice, and a page of one status finds each of
its entries in O(log n) tree steps (no other order is visited) and its `total` in
O(1). A status change updates the trees in O(log n).
"""

from __future__ import annotations

import bisect
import threading
from array import array

from miniexchange.model.orders import STATUSES, Order

_STATUS_INDEX = {status: index for index, status in enumerate(STATUSES)}


class _Listing:
    """One broker's orders, oldest first (`created_at`, then order of acceptance), and
    how many of each status every prefix holds.

    Per order: its id (one pointer), its `created_at` (8 bytes: finds an order's place
    by bisection, with no id -> position map) and one 4-byte count per status."""

    __slots__ = ("created", "ids", "totals", "trees")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.created = array("q")
        # trees[s][i] (1-based): orders of status s among positions (i - lowbit(i), i]
        self.trees = [array("i", (0,)) for _ in STATUSES]
        self.totals = [0] * len(STATUSES)

    def append(self, order_id: str, created_at: int, status: int) -> None:
        """List an order after every other one: O(1) amortised (a new tree node sums
        the nodes below it, log2 of its low bit of them: one on average)."""
        self.ids.append(order_id)
        self.created.append(created_at)
        self.totals[status] += 1
        self._grow(status)

    def insert(self, position: int, order_id: str, created_at: int, statuses: list[int]) -> None:
        """List an order at `position`; `statuses` are those of the orders after it,
        whose tree nodes are rebuilt (another symbol's actor read the clock earlier but
        published later: those are the few most recent orders)."""
        self.ids.insert(position, order_id)
        self.created.insert(position, created_at)
        self.totals[statuses[0]] += 1
        for tree in self.trees:  # nodes 1..position cover positions before it only
            del tree[position + 1 :]
        for status in statuses:
            self._grow(status)

    def _grow(self, status: int) -> None:
        """Add the tree nodes of the next position, whose order has `status`."""
        node = len(self.trees[0])
        low = node - (node & -node)
        below = []
        child = node - 1
        while child > low:
            below.append(child)
            child &= child - 1
        for index, tree in enumerate(self.trees):
            tree.append(sum(tree[child] for child in below) + (index == status))

    def position(self, order: Order) -> int | None:
        """Where `order` is listed (None: it is not): bisection on `created_at`, then
        the orders with that same `created_at`."""
        ids, created, order_id, created_at = (
            self.ids,
            self.created,
            order.order_id,
            order.created_at,
        )
        position, end = bisect.bisect_left(created, created_at), len(ids)
        while position < end and created[position] == created_at:
            if ids[position] == order_id:
                return position
            position += 1
        return None

    def moved(self, position: int, old: int, new: int) -> None:
        """The order at `position` went from status `old` to `new`."""
        self.totals[old] -= 1
        self.totals[new] += 1
        old_tree, new_tree = self.trees[old], self.trees[new]
        node, size = position + 1, len(self.ids)
        while node <= size:
            old_tree[node] -= 1
            new_tree[node] += 1
            node += node & -node

    def nth(self, status: int, rank: int) -> int:
        """The position of the `rank`-th (1-based, oldest first) order of `status`:
        one descent of its tree, O(log n)."""
        tree, size = self.trees[status], len(self.ids)
        position, step = 0, 1 << size.bit_length()
        while step:
            node = position + step
            if node <= size and tree[node] < rank:
                position = node
                rank -= tree[node]
            step >>= 1
        return position


class ReadIndex:
    __slots__ = ("_by_broker", "_lock", "orders")

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self._by_broker: dict[str, _Listing] = {}
        # Guards the listings, and every status change of a listed order with them: under
        # it, each listed order's status in `orders` is the one its listing counts.
        self._lock = threading.Lock()

    def get(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    def publish(self, order: Order) -> None:
        """Replace an order's published state (the single writer is its symbol actor)."""
        orders = self.orders
        previous = orders.get(order.order_id)
        if previous is None or previous.status == order.status:
            orders[order.order_id] = order
            return
        with self._lock:
            listing = self._by_broker.get(order.broker_id)
            position = None if listing is None else listing.position(order)
            if listing is not None and position is not None:
                listing.moved(position, _STATUS_INDEX[previous.status], _STATUS_INDEX[order.status])
            orders[order.order_id] = order

    def publish_new(self, order: Order) -> None:
        """Publish a newly accepted order and list it under its broker."""
        orders = self.orders
        order_id = order.order_id
        created_at = order.created_at
        status = _STATUS_INDEX[order.status]
        with self._lock:
            orders[order_id] = order
            listing = self._by_broker.get(order.broker_id)
            if listing is None:
                listing = self._by_broker[order.broker_id] = _Listing()
            created = listing.created
            if not created or created[-1] <= created_at:
                listing.append(order_id, created_at, status)
            else:  # another symbol's actor read the clock earlier but published later
                # after the equal created_at: those were accepted first
                position = bisect.bisect_right(created, created_at)
                later = [_STATUS_INDEX[orders[i].status] for i in listing.ids[position:]]
                listing.insert(position, order_id, created_at, [status, *later])

    def page(
        self, broker_id: str, status: str | None, start: int, limit: int
    ) -> tuple[list[Order], int]:
        """The broker's orders `start` to `start + limit` (0-based) of those with
        `status` (all if None), newest first (equal `created_at`: the later accepted
        first), and how many there are in all."""
        with self._lock:
            listing = self._by_broker.get(broker_id)
            if listing is None:
                return [], 0
            ids = listing.ids
            if status is None:
                total = len(ids)
                end = total - start  # positions end - limit .. end - 1, oldest first
                chosen = ids[max(end - limit, 0) : end] if end > 0 else []
                chosen.reverse()
            else:
                index = _STATUS_INDEX[status]
                total = listing.totals[index]
                rank = total - start  # the newest wanted, counted from the oldest
                stop = max(rank - limit, 0)
                chosen = [ids[listing.nth(index, r)] for r in range(rank, stop, -1)]
            orders = self.orders
            return [orders[order_id] for order_id in chosen], total

    def broker_order_ids(self, broker_id: str) -> list[str]:
        """All the broker's order ids, oldest first: `created_at`, then order of
        acceptance. A copy of the whole listing, for tests and tools (a page is `page`)."""
        with self._lock:
            listing = self._by_broker.get(broker_id)
            return [] if listing is None else list(listing.ids)
