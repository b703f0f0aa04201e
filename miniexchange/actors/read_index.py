"""The read side of orders: immutable order values published by their symbol actors.

Each order id has exactly one writer (its symbol actor), and an `Order` is immutable,
so `GET /orders/{id}` and the broker listing read without a message hop and always
see one consistent state. A symbol actor publishes before it replies, so a request
sees every effect of the requests answered before it was sent.

A listing page costs its own entries, never the broker's other orders: each broker's
orders are kept in listing order with, per status, a Fenwick tree of counts over that
order, so a page without a filter is a slice, and a page of one status finds each of
its entries in O(log n) tree steps (no other order is visited) and its `total` in
O(1). A status change updates one or two trees in O(log n).
"""

from __future__ import annotations

import bisect
import threading
from array import array

from miniexchange.model.orders import PENDING, STATUSES, Order

_STATUS_INDEX = {status: index for index, status in enumerate(STATUSES)}
_PENDING = _STATUS_INDEX[PENDING]
assert _PENDING == 0  # the one status without a tree: the others are numbered from 1


class _Listing:
    """One broker's orders, oldest first (`created_at`, then order of acceptance), and
    how many of each status every prefix holds.

    One Fenwick tree per status but pending (the orders no tree counts): a new order
    and the usual first change (leaving pending) each touch one tree. Per order: its
    id (one pointer), its `created_at` (8 bytes: an order's place is found by
    bisection, with no id -> position map) and a node in each of the 4 trees (one
    pointer: a list, cheaper to update than an `array`; counts up to 256
    are shared int objects, and only the rare nodes spanning more can exceed it)."""

    __slots__ = ("created", "ids", "totals", "trees")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.created = array("q")
        # trees[s - 1][i] (1-based i): orders of status s among positions
        # (i - lowbit(i), i]; index 0 of each list is unused
        self.trees: list[list[int]] = [[0] for _ in STATUSES[1:]]
        self.totals = [0] * len(STATUSES)

    def append(self, order_id: str, created_at: int, status: int) -> None:
        """List an order after every other one: O(1) amortised (a new tree node sums
        the nodes below it, log2 of its low bit of them: one on average)."""
        self.ids.append(order_id)
        self.created.append(created_at)
        self.totals[status] += 1
        self._grow(status)

    def insert(self, position: int, order_id: str, created_at: int, statuses: list[int]) -> None:
        """List an order at `position`; `statuses` are those of the orders from there
        on, whose tree nodes are rebuilt (another symbol's actor read the clock earlier
        but published later: those are the few most recent orders)."""
        self.ids.insert(position, order_id)
        self.created.insert(position, created_at)
        self.totals[statuses[0]] += 1
        for tree in self.trees:  # nodes 1..position cover positions before it only
            del tree[position + 1 :]
        for status in statuses:
            self._grow(status)

    def _grow(self, status: int) -> None:
        """Add the tree nodes of the next position, whose order has `status`."""
        trees = self.trees
        node = len(trees[0])
        span = node & -node
        if span == 1:  # an odd node counts its own position only: half of all nodes
            for tree in trees:
                tree.append(0)
            if status:
                trees[status - 1][node] = 1
            return
        children = []  # the nodes that cover (node - span, node - 1]
        child, low = node - 1, node - span
        while child > low:
            children.append(child)
            child &= child - 1
        for tree in trees:
            total = 0
            for child in children:
                total += tree[child]
            tree.append(total)
        if status:
            trees[status - 1][node] += 1

    def moved(self, order: Order, old: int, new: int) -> None:
        """`order` went from status `old` to `new` (nothing if it is not listed here):
        its place by bisection on `created_at`, then O(log n) tree nodes."""
        ids, created, order_id = self.ids, self.created, order.order_id
        size = len(ids)
        position = bisect.bisect_left(created, order.created_at)
        while position < size and ids[position] != order_id:  # equal created_at first
            if created[position] != order.created_at:
                return
            position += 1
        if position == size:
            return
        totals = self.totals
        totals[old] -= 1
        totals[new] += 1
        node = position + 1
        if not old or not new:  # from pending (the usual first change), or back to it
            tree, step = (self.trees[new - 1], 1) if new else (self.trees[old - 1], -1)
            while node <= size:
                tree[node] += step
                node += node & -node
            return
        old_tree, new_tree = self.trees[old - 1], self.trees[new - 1]
        while node <= size:
            old_tree[node] -= 1
            new_tree[node] += 1
            node += node & -node

    def nth(self, status: int, rank: int) -> int:
        """The position of the `rank`-th (1-based, oldest first) order of `status`:
        one descent of the tree, O(log n) nodes (of all four trees for pending)."""
        size = len(self.ids)
        position, step = 0, 1 << size.bit_length()
        if status:
            tree = self.trees[status - 1]
            while step:
                node = position + step
                if node <= size and tree[node] < rank:
                    position = node
                    rank -= tree[node]
                step >>= 1
            return position
        a, b, c, d = self.trees
        while step:
            node = position + step
            if node <= size:
                # the node spans `step` positions (`position` is a multiple of 2 * step)
                pending = step - a[node] - b[node] - c[node] - d[node]
                if pending < rank:
                    position = node
                    rank -= pending
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
        lock = self._lock
        lock.acquire()  # not `with`: cheaper, and this is the matching path
        try:
            listing = self._by_broker.get(order.broker_id)
            if listing is not None:
                listing.moved(order, _STATUS_INDEX[previous.status], _STATUS_INDEX[order.status])
            orders[order.order_id] = order
        finally:
            lock.release()

    def publish_new(self, order: Order) -> None:
        """Publish a newly accepted order and list it under its broker."""
        orders = self.orders
        order_id = order.order_id
        created_at = order.created_at
        status = _STATUS_INDEX[order.status]
        lock = self._lock
        lock.acquire()
        try:
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
        finally:
            lock.release()

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
