"""A reference matcher for the property tests, written from the matching rules alone.

One symbol: price-time priority (price, then `created_at`, then `order_id` as a
string), limit and market orders, partial fills, the seller's price between two limit
orders and the resting price for a market order, IOC market remainders, cancels,
expiry at `expires_at <= now`, and the VWAP price over a window of trades.

It imports nothing from `miniexchange`: every order lives in one dict and each side is
re-sorted on every read, so it is slow and obviously right, and it can disagree with
the engine. Times are integer microseconds, prices integer cents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BID = "bid"
ASK = "ask"
ACTIVE = ("pending", "partially_filled")


@dataclass(frozen=True, slots=True)
class RefTrade:
    price: int
    quantity: int
    executed_at: int
    bid_id: str
    ask_id: str


@dataclass(slots=True)
class RefOrder:
    order_id: str
    broker_id: str
    side: str
    type: str  # "limit" or "market"
    quantity: int
    created_at: int
    price: int | None = None  # None for a market order
    expires_at: int | None = None  # None for a market order
    filled: int = 0
    cancelled: int = 0
    status: str = "pending"
    cancelled_at: int | None = None
    expired_at: int | None = None
    trades: list[RefTrade] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled - self.cancelled

    @property
    def average_price(self) -> int | None:
        """Cents, truncated; None before the first fill."""
        if not self.filled:
            return None
        return sum(t.price * t.quantity for t in self.trades) // self.filled


@dataclass(frozen=True, slots=True)
class RefPrice:
    current: int | None  # cents
    trades_in_window: int
    last_trade_at: int | None


class ReferenceMarket:
    """Every order of one symbol and its trades, in the order they happened."""

    def __init__(self, window_us: int = 300_000_000) -> None:
        self.window_us = window_us
        self.orders: dict[str, RefOrder] = {}
        self.trades: list[RefTrade] = []

    # -- reads (pure: due orders are left out, not expired) ----------------------

    def resting(self, side: str, now: int) -> list[RefOrder]:
        """The active, not yet due limit orders of a side, in priority order."""
        sign = -1 if side == BID else 1
        live = [
            order
            for order in self.orders.values()
            if order.side == side
            and order.type == "limit"
            and order.status in ACTIVE
            and order.expires_at is not None
            and order.expires_at > now
        ]
        return sorted(live, key=lambda o: (sign * (o.price or 0), o.created_at, o.order_id))

    def levels(self, side: str, now: int) -> list[tuple[int, int, int]]:
        """(price, total remaining, order count), best first."""
        out: list[tuple[int, int, int]] = []
        for order in self.resting(side, now):
            if out and out[-1][0] == order.price:
                price, total, count = out[-1]
                out[-1] = (price, total + order.remaining, count + 1)
            else:
                out.append((order.price, order.remaining, 1))  # type: ignore[arg-type]
        return out

    def quote(self, side: str, quantity: int, now: int) -> list[tuple[int, int]]:
        """(price, quantity taken) of what a market order of `side` would take now."""
        taken: list[tuple[int, int]] = []
        left = quantity
        for price, total, _ in self.levels(ASK if side == BID else BID, now):
            if not left:
                break
            take = min(left, total)
            taken.append((price, take))
            left -= take
        return taken

    def price(self, now: int) -> RefPrice:
        if not self.trades:
            return RefPrice(None, 0, None)
        last = self.trades[-1]
        inside = [t for t in self.trades if now - self.window_us <= t.executed_at <= now]
        if not inside:
            return RefPrice(last.price, 0, last.executed_at)
        value = sum(t.price * t.quantity for t in inside)
        quantity = sum(t.quantity for t in inside)
        return RefPrice(value // quantity, len(inside), last.executed_at)

    # -- writes ------------------------------------------------------------------

    def expire(self, now: int) -> None:
        for order in self.orders.values():
            if order.status in ACTIVE and order.expires_at is not None and order.expires_at <= now:
                order.cancelled += order.remaining
                order.status = "expired"
                order.expired_at = order.expires_at

    def limit(
        self,
        order_id: str,
        broker_id: str,
        side: str,
        price: int,
        quantity: int,
        expires_at: int,
        now: int,
    ) -> RefOrder:
        self.expire(now)
        order = RefOrder(order_id, broker_id, side, "limit", quantity, now, price, expires_at)
        self.orders[order_id] = order
        self._match(order, now)
        return order

    def market(
        self, order_id: str, broker_id: str, side: str, quantity: int, now: int
    ) -> RefOrder | None:
        """None: the opposite side is empty (no_liquidity), no order is created."""
        self.expire(now)
        if not self.resting(ASK if side == BID else BID, now):
            return None
        order = RefOrder(order_id, broker_id, side, "market", quantity, now)
        self.orders[order_id] = order
        self._match(order, now)
        if order.remaining:  # immediate or cancel
            order.cancelled = order.remaining
        order.status = "filled" if order.filled == quantity else "cancelled"
        return order

    def cancel(self, order_id: str, now: int) -> bool:
        """True: cancelled; False: it was terminal already."""
        self.expire(now)
        order = self.orders[order_id]
        if order.status not in ACTIVE:
            return False
        order.cancelled += order.remaining
        order.status = "cancelled"
        order.cancelled_at = now
        return True

    def _match(self, incoming: RefOrder, now: int) -> None:
        for resting in self.resting(ASK if incoming.side == BID else BID, now):
            if not incoming.remaining:
                break
            bid, ask = (incoming, resting) if incoming.side == BID else (resting, incoming)
            if incoming.type == "limit" and bid.price < ask.price:  # type: ignore[operator]
                break
            # two limit orders trade at the seller's price, a market order at the resting one
            price = ask.price if incoming.type == "limit" else resting.price
            trade = RefTrade(
                price, min(incoming.remaining, resting.remaining), now, bid.order_id, ask.order_id
            )  # type: ignore[arg-type]
            self.trades.append(trade)
            for order in (incoming, resting):
                order.filled += trade.quantity
                order.trades.append(trade)
                order.status = "filled" if order.remaining == 0 else "partially_filled"
