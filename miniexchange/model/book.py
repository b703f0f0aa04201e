"""One symbol's central limit order book and its match loop (contract §3).

Each side is a `SortedList` of unique keys `(price key, created_at, order_id)`, so the
order of a side is total and independent of insertion order (§3.1, invariant 7), and
insert, arbitrary removal and best-order reads are O(log n). Beside it each side keeps
price levels (`SortedDict`: price key -> [total remaining, order count]) so that L2
reads and sweeps cost in proportion to the levels they touch, and an expiry index
`(expires_at, order_id)` makes expiring cost in proportion to the due orders.

Bids are keyed by the negated price, so both sides iterate best-first ascending.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from sortedcontainers import SortedDict, SortedList

from miniexchange.model.commands import ASK, BID, LIMIT, MARKET
from miniexchange.model.orders import CANCELLED, EXPIRED, FILLED, Order, Trade


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


@dataclass(frozen=True, slots=True)
class Level:
    price: int  # cents
    quantity: int  # sum of remaining quantities (or what a sweep takes, for quotes)
    order_count: int


class _Side:
    """One side of the book: ordered keys, price levels, and the sign of its price key."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign  # +1 for asks (lowest first), -1 for bids (highest first)
        self.keys: SortedList = SortedList()
        self.levels: SortedDict = SortedDict()

    def add(self, order: Order) -> None:
        price_key = self.sign * order.price  # type: ignore[operator]
        self.keys.add((price_key, order.created_at, order.order_id))
        level = self.levels.get(price_key)
        if level is None:
            self.levels[price_key] = [order.remaining_quantity, 1]
        else:
            level[0] += order.remaining_quantity
            level[1] += 1

    def remove(self, order: Order) -> None:
        price_key = self.sign * order.price  # type: ignore[operator]
        self.keys.remove((price_key, order.created_at, order.order_id))
        level = self.levels[price_key]
        if level[1] == 1:
            del self.levels[price_key]
        else:
            level[0] -= order.remaining_quantity
            level[1] -= 1

    def reduce(self, order: Order, quantity: int) -> None:
        self.levels[self.sign * order.price][0] -= quantity  # type: ignore[operator]


class OrderBook:
    """The resting orders of one symbol, both sides, and the match loop."""

    __slots__ = ("_asks", "_bids", "_expiry", "_orders", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._bids = _Side(-1)
        self._asks = _Side(1)
        self._orders: dict[str, Order] = {}
        self._expiry: SortedList = SortedList()

    # -- reads -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._orders)

    def get(self, order_id: str) -> Order | None:
        """The resting order with this id, or None if it is not on the book."""
        return self._orders.get(order_id)

    def resting_orders(self) -> list[Order]:
        return list(self._orders.values())

    def side_count(self, side: str) -> int:
        return len((self._bids if side == BID else self._asks).keys)

    def best_price(self, side: str) -> int | None:
        book_side = self._bids if side == BID else self._asks
        if not book_side.levels:
            return None
        return book_side.sign * book_side.levels.peekitem(0)[0]

    def has_liquidity_for(self, incoming_side: str) -> bool:
        return bool(self._opposite(incoming_side).keys)

    def next_expiry(self) -> int | None:
        """The earliest `expires_at` among resting orders, if any."""
        return self._expiry[0][0] if self._expiry else None

    def levels(self, side: str, depth: int) -> list[Level]:
        """The best `depth` L2 levels of a side, best first (contract §4.2)."""
        book_side = self._bids if side == BID else self._asks
        sign = book_side.sign
        out = []
        for price_key, (quantity, count) in book_side.levels.items()[:depth]:
            out.append(Level(sign * price_key, quantity, count))
        return out

    def sweep(self, incoming_side: str, quantity: int) -> list[Level]:
        """What a market order of `quantity` would take, level by level (§4.6, §4.7).

        Each returned level's `quantity` is what the sweep takes from it.
        """
        book_side = self._opposite(incoming_side)
        sign = book_side.sign
        out = []
        left = quantity
        for price_key, (level_quantity, count) in book_side.levels.items():
            if not left:
                break
            take = min(left, level_quantity)
            out.append(Level(sign * price_key, take, count))
            left -= take
        return out

    # -- writes ------------------------------------------------------------------

    def expire_due(self, now: int) -> list[Order]:
        """Expire every resting order with `expires_at <= now`, in `expires_at` order (§2.6)."""
        expired = []
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            expires_at, order_id = expiry.pop(0)
            order = self._orders.pop(order_id)
            self._side(order.side).remove(order)
            expired.append(order.closed(EXPIRED, None, expires_at))
        return expired

    def cancel(self, order_id: str, now: int) -> Order | None:
        """Cancel a resting order (§2.5); None if it is not on the book."""
        order = self._orders.pop(order_id, None)
        if order is None:
            return None
        self._side(order.side).remove(order)
        self._expiry.remove((order.expires_at, order_id))
        return order.closed(CANCELLED, now, None)

    def submit(self, order: Order, now: int, new_trade_id: Callable[[], str]) -> MatchResult:
        """Match an accepted order, then rest (limit) or IOC-cancel (market) what is left.

        The caller has expired the due orders and reserved the funds; `now` is the
        single clock reading of this pass, used for every trade's `executed_at`.
        """
        opposite = self._opposite(order.side)
        keys = opposite.keys
        orders = self._orders
        is_bid = order.side == BID
        is_limit = order.type == LIMIT
        limit_price = order.price
        fills: list[Fill] = []
        while order.remaining_quantity and keys:
            _, _, resting_id = keys[0]
            resting = orders[resting_id]
            resting_price: int = resting.price  # type: ignore[assignment]
            if is_limit and (
                limit_price < resting_price  # type: ignore[operator]
                if is_bid
                else limit_price > resting_price  # type: ignore[operator]
            ):
                break
            quantity = min(order.remaining_quantity, resting.remaining_quantity)
            # Two limit orders trade at the seller's price; a market order at the resting one.
            price = limit_price if is_limit and not is_bid else resting_price
            bid, ask = (order, resting) if is_bid else (resting, order)
            trade = Trade(
                new_trade_id(),
                self.symbol,
                price,  # type: ignore[arg-type]
                quantity,
                now,
                bid.order_id,
                ask.order_id,
                bid.broker_id,
                ask.broker_id,
            )
            order = order.filled(trade)
            filled_resting = resting.filled(trade)
            if filled_resting.status == FILLED:
                opposite.remove(resting)
                del orders[resting_id]
                self._expiry.remove((resting.expires_at, resting_id))
            else:
                opposite.reduce(resting, quantity)
                orders[resting_id] = filled_resting
            fills.append(Fill(trade, order, filled_resting))
        if order.remaining_quantity:
            if order.type == MARKET:
                order = order.closed(CANCELLED, None, None)
            else:
                self._side(order.side).add(order)
                orders[order.order_id] = order
                self._expiry.add((order.expires_at, order.order_id))
        return MatchResult(order, tuple(fills))

    def restore(self, order: Order) -> None:
        """Put a resting order back as it was (recovery): no matching happens."""
        self._side(order.side).add(order)
        self._orders[order.order_id] = order
        self._expiry.add((order.expires_at, order.order_id))

    # -- helpers -----------------------------------------------------------------

    def _side(self, side: str) -> _Side:
        return self._bids if side == BID else self._asks

    def _opposite(self, side: str) -> _Side:
        return self._asks if side == BID else self._bids
