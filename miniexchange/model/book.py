"""One symbol's central limit order book and its match loop: price-time priority.

Each side keeps its price levels best first: a `SortedList` of price keys (bids keyed
by the negated price, so both sides iterate best-first ascending) and, per price, a
`_Level` holding the resting orders' ids in time priority with the level's total
quantity and order count. The key (price, created_at, order_id) orders each side
totally and independently of insertion order (no two entries share a key): within a level,
entries are kept sorted by (created_at, order_id); in practice every new order is the
latest and is appended, and only a same-microsecond tie with a smaller id or a restore
out of order is inserted before the tail (a bisect, and a C-level move of the
pointers behind it).

Costs, with n resting orders: the best order, a fill and an insert are O(1) (plus
O(log n) when a price level appears or empties); a cancel is O(1) (the entry left in
its level is skipped when it reaches the front, and a level with more such entries
than orders is compacted, O(1) amortised); L2 reads and sweeps cost the levels they
touch. An expiry heap `(expires_at, order_id)` makes expiring cost O(log n) per due
order; orders that leave the book otherwise are dropped from it lazily the same way.

Why not one `SortedList` of every order's key: it was a third of the model's time per
order (tuple comparisons and Python-level sublist bookkeeping on every insert, fill and
cancel); a level's list is touched with C-level appends and an index.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections.abc import Callable, Iterator
from typing import NamedTuple

from sortedcontainers import SortedList

from miniexchange.model.commands import ASK, BID, LIMIT, MARKET
from miniexchange.model.orders import CANCELLED, EXPIRED, Order, Trade

_COMPACT_AFTER = 32
"""Entries gone from a level's front (or left dead inside it) before it is compacted."""

_NOTHING_LEFT_OUT: dict[int, list[int]] = {}
"""What an ordinary read leaves out of the levels (never written to)."""


class Fill(NamedTuple):
    """One trade of a matching pass, with both orders as they stood right after it."""

    trade: Trade
    incoming: Order
    resting: Order

    @property
    def bid(self) -> Order:
        return self.incoming if self.incoming.side == BID else self.resting

    @property
    def ask(self) -> Order:
        return self.incoming if self.incoming.side == ASK else self.resting


class MatchResult(NamedTuple):
    order: Order  # the incoming order's final state
    fills: tuple[Fill, ...]


class Level(NamedTuple):
    price: int  # cents
    quantity: int  # sum of remaining quantities (or what a sweep takes, for quotes)
    order_count: int


def _time_key(order: Order) -> tuple[int, str]:
    """Time priority within a price level: earlier `created_at` first, then `order_id`."""
    return order.created_at, order.order_id


class _Level:
    """The resting orders at one price, in time priority.

    `queue` holds order ids sorted by (created_at, order_id); entries before `head`
    have left (filled); an entry after it may belong to an order cancelled or expired
    meanwhile (`dead` counts them), skipped when it reaches the front. Ids only: the
    entry of a resting order costs one pointer.
    """

    __slots__ = ("count", "dead", "head", "quantity", "queue")

    def __init__(self) -> None:
        self.queue: list[str] = []
        self.head = 0
        self.quantity = 0  # sum of the remaining quantities of its orders
        self.count = 0  # its orders on the book
        self.dead = 0

    def add(self, order: Order, orders: dict[str, Order]) -> None:
        """Queue `order`, already in `orders`, behind the orders with priority over it."""
        queue = self.queue
        while len(queue) > self.head and queue[-1] not in orders:  # dead tail entries
            queue.pop()
            self.dead -= 1
        if len(queue) > self.head and _time_key(orders[queue[-1]]) > _time_key(order):
            # a same-microsecond tie with a smaller id, or a restore out of order
            self._compact(orders)
            insort(self.queue, order.order_id, key=lambda listed: _time_key(orders[listed]))
        else:
            queue.append(order.order_id)
        self.quantity += order.remaining_quantity
        self.count += 1

    def first(self, orders: dict[str, Order]) -> Order:
        """The order with time priority (the level is not empty)."""
        queue = self.queue
        head = self.head
        while True:
            resting = orders.get(queue[head])
            if resting is not None:
                self.head = head
                return resting
            head += 1  # a cancelled or expired order's entry
            self.dead -= 1

    def pop_first(self, quantity: int) -> None:
        """The first order filled completely with its last `quantity`."""
        self.head += 1
        self.count -= 1
        self.quantity -= quantity
        head = self.head
        if head > _COMPACT_AFTER and 2 * head > len(self.queue):
            del self.queue[:head]
            self.head = 0

    def left(self, order: Order, orders: dict[str, Order]) -> None:
        """`order` (no longer in `orders`) left from anywhere in the level."""
        self.count -= 1
        self.quantity -= order.remaining_quantity
        self.dead += 1
        if self.dead > _COMPACT_AFTER and self.dead > self.count:
            self._compact(orders)

    def _compact(self, orders: dict[str, Order]) -> None:
        """Keep only the entries of orders still on the book."""
        self.queue = [order_id for order_id in self.queue[self.head :] if order_id in orders]
        self.head = 0
        self.dead = 0


class _Side:
    """One side of the book: its levels by price key, and their keys best first.

    `best` caches `prices[0]`: the match loop and every step's summary read it, and a
    `SortedList` index is a Python-level call (7% of a symbol actor's step, py-spy).
    """

    __slots__ = ("best", "count", "levels", "prices", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign  # +1 for asks (lowest first), -1 for bids (highest first)
        self.prices: SortedList = SortedList()  # price keys of the non-empty levels
        self.best: int | None = None  # the best price key: prices[0], or None if empty
        self.levels: dict[int, _Level] = {}
        self.count = 0  # orders on this side

    def add(self, order: Order, orders: dict[str, Order]) -> None:
        price_key = self.sign * order.price  # type: ignore[operator]
        level = self.levels.get(price_key)
        if level is None:
            level = self.levels[price_key] = _Level()
            self.prices.add(price_key)
            best = self.best
            if best is None or price_key < best:
                self.best = price_key
        level.add(order, orders)
        self.count += 1

    def drop_best_level(self) -> None:
        """The best level emptied (by fills)."""
        prices = self.prices
        del self.levels[prices.pop(0)]
        self.best = prices[0] if prices else None

    def left(self, order: Order, orders: dict[str, Order]) -> None:
        """`order` left the book from anywhere in its level (cancel, expiry)."""
        price_key = self.sign * order.price  # type: ignore[operator]
        level = self.levels[price_key]
        level.left(order, orders)
        self.count -= 1
        if not level.count:
            del self.levels[price_key]
            prices = self.prices
            prices.remove(price_key)
            if price_key == self.best:
                self.best = prices[0] if prices else None

    def best_levels(
        self, left_out: dict[int, list[int]] = _NOTHING_LEFT_OUT
    ) -> Iterator[tuple[int, int, int]]:
        """(price, quantity, orders) of each level, best first, less what `left_out`
        holds for its price key ([quantity, orders]); a level left empty is skipped."""
        levels, sign = self.levels, self.sign
        for price_key in self.prices:
            level = levels[price_key]
            out = left_out.get(price_key)
            if out is None:
                yield sign * price_key, level.quantity, level.count
            elif out[1] < level.count:
                yield sign * price_key, level.quantity - out[0], level.count - out[1]


class OrderBook:
    """The resting orders of one symbol, both sides, and the match loop."""

    __slots__ = ("_asks", "_bids", "_expiry", "_expiry_gone", "_orders", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._bids = _Side(-1)
        self._asks = _Side(1)
        self._orders: dict[str, Order] = {}
        # a heap of (expires_at, order id); `_expiry_gone` of its entries belong to
        # orders that left the book otherwise (filled, cancelled), dropped lazily
        self._expiry: list[tuple[int, str]] = []
        self._expiry_gone = 0

    # -- reads -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._orders)

    def get(self, order_id: str) -> Order | None:
        """The resting order with this id, or None if it is not on the book."""
        return self._orders.get(order_id)

    def resting_orders(self) -> list[Order]:
        return list(self._orders.values())

    def side_count(self, side: str) -> int:
        return (self._bids if side == BID else self._asks).count

    def best_price(self, side: str) -> int | None:
        book_side = self._bids if side == BID else self._asks
        best = book_side.best
        return None if best is None else book_side.sign * best

    def has_liquidity_for(self, incoming_side: str) -> bool:
        return self._opposite(incoming_side).best is not None

    def next_expiry(self) -> int | None:
        """The earliest `expires_at` among resting orders, if any."""
        expiry, orders = self._expiry, self._orders
        while expiry and expiry[0][1] not in orders:  # a filled or cancelled order's
            heapq.heappop(expiry)
            self._expiry_gone -= 1
        return expiry[0][0] if expiry else None

    def levels(self, side: str, depth: int, due_at: int | None = None) -> list[Level]:
        """The best `depth` L2 levels of a side, best first (`GET /stocks/{symbol}/book`).

        `due_at`: leave out the orders due then (`expires_at <= due_at`) without
        expiring them: they stay on the book (a read that must change nothing)."""
        out = []
        book_side = self._bids if side == BID else self._asks
        left_out = _NOTHING_LEFT_OUT if due_at is None else self._due_by_price_key(due_at)
        for price, quantity, count in book_side.best_levels(left_out):
            if len(out) == depth:
                break
            out.append(Level(price, quantity, count))
        return out

    def sweep(self, incoming_side: str, quantity: int, due_at: int | None = None) -> list[Level]:
        """What a market order of `quantity` would take, level by level (its hold, the quote).

        Each returned level's `quantity` is what the sweep takes from it. `due_at`: as
        for `levels`, the orders due then are left out, and on the book.
        """
        out = []
        left = quantity
        left_out = _NOTHING_LEFT_OUT if due_at is None else self._due_by_price_key(due_at)
        for price, offered, count in self._opposite(incoming_side).best_levels(left_out):
            if not left:
                break
            take = min(left, offered)
            out.append(Level(price, take, count))
            left -= take
        return out

    def _due_by_price_key(self, now: int) -> dict[int, list[int]]:
        """Price key -> [quantity, orders] of the resting orders due at `now`, found in
        the part of the expiry heap at or before `now` (its stale entries skipped), so
        it costs what is due, never the whole book."""
        due: dict[int, list[int]] = {}
        heap, orders = self._expiry, self._orders
        size = len(heap)
        pending = [0] if size else []
        while pending:
            index = pending.pop()
            expires_at, order_id = heap[index]
            if expires_at > now:  # and so is every entry below it
                continue
            order = orders.get(order_id)
            if order is not None:
                price_key = self._side(order.side).sign * order.price  # type: ignore[operator]
                counted = due.get(price_key)
                if counted is None:
                    due[price_key] = [order.remaining_quantity, 1]
                else:
                    counted[0] += order.remaining_quantity
                    counted[1] += 1
            child = 2 * index + 1
            if child < size:
                pending.append(child)
                if child + 1 < size:
                    pending.append(child + 1)
        return due

    # -- writes ------------------------------------------------------------------

    def expire_due(self, now: int) -> list[Order]:
        """Expire every resting order with `expires_at <= now`, in `expires_at` order."""
        expired = []
        expiry, orders = self._expiry, self._orders
        while expiry and expiry[0][0] <= now:
            expires_at, order_id = heapq.heappop(expiry)
            order = orders.pop(order_id, None)
            if order is None:  # it had left the book otherwise
                self._expiry_gone -= 1
                continue
            self._side(order.side).left(order, orders)
            expired.append(order.closed(EXPIRED, None, expires_at))
        return expired

    def cancel(self, order_id: str, now: int) -> Order | None:
        """Cancel a resting order (it leaves the book); None if it is not on the book."""
        orders = self._orders
        order = orders.pop(order_id, None)
        if order is None:
            return None
        self._side(order.side).left(order, orders)
        self._left_expiry()
        return order.closed(CANCELLED, now, None)

    def submit(self, order: Order, now: int, new_trade_id: Callable[[], str]) -> MatchResult:
        """Match an accepted order, then rest (limit) or IOC-cancel (market) what is left.

        The caller has expired the due orders and reserved the funds; `now` is the
        single clock reading of this pass, used for every trade's `executed_at`.
        """
        is_bid = order.side == BID
        opposite = self._asks if is_bid else self._bids
        levels, sign = opposite.levels, opposite.sign
        orders = self._orders
        is_limit = order.type == LIMIT
        limit_price: int = order.price  # type: ignore[assignment]
        symbol = self.symbol
        fills: list[Fill] = []
        while order.remaining_quantity and opposite.best is not None:
            price_key = opposite.best
            resting_price = sign * price_key
            if is_limit and (
                limit_price < resting_price if is_bid else limit_price > resting_price
            ):
                break
            level = levels[price_key]
            resting = level.first(orders)
            quantity = min(order.remaining_quantity, resting.remaining_quantity)
            # Two limit orders trade at the seller's price; a market order at the resting one.
            price = limit_price if is_limit and not is_bid else resting_price
            if is_bid:
                trade = Trade(
                    new_trade_id(), symbol, price, quantity, now,
                    order.order_id, resting.order_id, order.broker_id, resting.broker_id,
                )  # fmt: skip
            else:
                trade = Trade(
                    new_trade_id(), symbol, price, quantity, now,
                    resting.order_id, order.order_id, resting.broker_id, order.broker_id,
                )  # fmt: skip
            order = order.filled(trade)
            filled_resting = resting.filled(trade)
            if filled_resting.remaining_quantity:
                level.quantity -= quantity
                orders[resting.order_id] = filled_resting
            else:
                level.pop_first(quantity)
                opposite.count -= 1
                if not level.count:
                    opposite.drop_best_level()
                del orders[resting.order_id]
                self._left_expiry()
            fills.append(Fill(trade, order, filled_resting))
        if order.remaining_quantity:
            if order.type == MARKET:
                order = order.closed(CANCELLED, None, None)
            else:
                self.restore(order)
        return MatchResult(order, tuple(fills))

    def restore(self, order: Order) -> None:
        """Put a resting order on the book as it is: no matching (also recovery)."""
        self._orders[order.order_id] = order
        self._side(order.side).add(order, self._orders)
        heapq.heappush(self._expiry, (order.expires_at, order.order_id))  # type: ignore[arg-type]

    # -- helpers -----------------------------------------------------------------

    def _left_expiry(self) -> None:
        """An order left the book other than by expiring: its heap entry is now stale.
        Once stale entries outnumber live ones, rebuild the heap (O(1) amortised)."""
        self._expiry_gone += 1
        gone = self._expiry_gone
        if gone > _COMPACT_AFTER and gone > len(self._orders):
            self._expiry = [
                (order.expires_at, order_id) for order_id, order in self._orders.items()
            ]  # type: ignore[misc]
            heapq.heapify(self._expiry)
            self._expiry_gone = 0

    def _side(self, side: str) -> _Side:
        return self._bids if side == BID else self._asks

    def _opposite(self, side: str) -> _Side:
        return self._asks if side == BID else self._bids
